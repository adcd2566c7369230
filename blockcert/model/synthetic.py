"""Synthetic checkpoints: seeded random weights in real Hugging Face layouts, to measure scale offline.

``synthesize(out, shape="tinyllama")`` writes what ``save_pretrained`` would write for a model of that
shape — ``config.json``, sharded ``model-0000k-of-0000n.safetensors`` and ``model.safetensors.index.json``
— plus a byte-level tokenizer and a prompt file, without ever holding more than one shard in memory
(a Llama-2-7B-shaped bfloat16 checkpoint is 13.5 GB on disk).

* Shapes are :class:`~blockcert.catalog.SyntheticShape` records that architecture plugins register
  (``blockcert_register_synthetic_shapes``): the Llama plugin registers ``tinyllama`` (TinyLlama-1.1B),
  ``llama2-7b`` (Llama-2-7B) and ``tiny`` (4 layers, d=256, for tests). This module knows no architecture.
  ``layers`` overrides the depth.
* Weights: tensor ``name`` is drawn from a generator seeded with SHA-256(seed, name), so a tensor does not
  depend on the sharding or on the other tensors. Gaussian, variance-preserving (std 1/sqrt(fan_in));
  the projections back into the residual stream (the shape's ``residual_writers``) are scaled by
  1/sqrt(2L) so the stream stays O(1) over depth; embeddings N(0, 1); norm weights 1 + 0.1 N(0, 1).
  Not a trained model: its losses are those of a random network, and its numbers only measure cost.
* Tokenizer: byte-level, token id = UTF-8 byte (256 tokens, plus ``<s>``, ``</s>``, ``<unk>``), built with
  the ``tokenizers`` library (nothing is downloaded). The config keeps the shape's vocabulary size;
  ids above 258 are never produced, but their embedding and LM-head rows are stored, read and multiplied
  like the others. ``prompts.txt``: ``n_prompts`` lines of exactly ``prompt_tokens`` ASCII characters,
  so exactly ``prompt_tokens`` tokens each.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blockcert.catalog import SyntheticShape
from blockcert.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")
INDEX_FILE = "model.safetensors.index.json"
PROMPTS_FILE = "prompts.txt"
SYNTH_FILE = "blockcert-synthetic.json"


def shapes() -> dict[str, SyntheticShape]:
    """Every registered synthetic shape, by name."""
    from blockcert.plugins import get_plugins

    return get_plugins().synthetic_shapes()


def resolve_shape(shape: str | SyntheticShape) -> SyntheticShape:
    """The registered shape called ``shape`` (a usage error naming the known ones if there is none)."""
    if isinstance(shape, SyntheticShape):
        return shape
    known = shapes()
    if shape not in known:
        raise UserError(f"unknown --shape {shape!r}", f"choose one of: {', '.join(known)}")
    return known[shape]


def tensor_layout(config: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor ``save_pretrained`` would write, in its order (from the HF model built on meta)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [(name, tuple(t.shape)) for name, t in model.state_dict().items()]


def _generator(seed: int, name: str) -> Any:
    import torch

    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def make_tensor(name: str, shape: tuple[int, ...], kind: SyntheticShape, layers: int, seed: int, dtype: str) -> Any:
    """The synthetic value of checkpoint tensor ``name`` (see the module doc for the distribution)."""
    import torch

    gen = _generator(seed, name)
    if name.endswith(kind.norms):
        t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
    elif name.endswith(kind.embeddings):
        t = torch.randn(shape, generator=gen)
    else:
        std = 1.0 / math.sqrt(shape[-1])  # torch Linear weights are [out, in]: fan_in is the last dim
        if name.endswith(kind.residual_writers):
            std /= math.sqrt(2 * layers)
        t = torch.randn(shape, generator=gen).mul_(std)
    return t.to(getattr(torch, dtype))


def plan_shards(layout: list[tuple[str, tuple[int, ...]]], element: int, shard_bytes: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Consecutive tensors into shards of at most ``shard_bytes`` (a larger tensor gets a shard of its own)."""
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in layout:
        n = math.prod(shape) * element
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += n
    return shards


_PRINTABLE = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (the byte-level pre-tokenizer's alphabet)."""
    chars, extra = {}, 0
    for b in range(256):
        if b in _PRINTABLE:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tokenizer(out: Path) -> None:
    """A byte-level tokenizer: token id = UTF-8 byte; ``<s>`` 256, ``</s>`` 257, ``<unk>`` 258."""
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(_byte_alphabet())}, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(out)


_WORDS = ("the block residual stream attention mask head weight token layer norm query key value model "
          "certificate replay trace loss rope cache shard memory stream scale prompt pass suffix bound").split()


def synthetic_prompts(n: int, tokens: int, seed: int = 0) -> list[str]:
    """``n`` lines of ASCII words, each exactly ``tokens`` characters (= tokens with the byte tokenizer)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = ""
        while len(text) < tokens:
            text += rng.choice(_WORDS) + " "
        out.append(text[: tokens - 1] + ".")
    return out


def cached_checkpoint(cache: str | os.PathLike[str], shape: str = "tinyllama", dtype: str = "float32",
                      announce: Callable[[str], None] | None = None) -> Path:
    """``cache/<shape>-<dtype>``, synthesized there on first use (a finished checkpoint has its
    ``blockcert-synthetic.json``, which :func:`synthesize` writes into the directory before it is renamed
    into place): what the benchmarks measure when they are not given a checkpoint. ``announce`` is told
    when one is written."""
    path = Path(cache) / f"{shape}-{dtype}"
    if not (path / SYNTH_FILE).is_file():
        if announce is not None:
            announce(f"writing a synthetic {shape} checkpoint ({dtype}) to {path} ...")
        synthesize(path, shape, dtype=dtype)
    return path


def synthesize(
    out: str | os.PathLike[str],
    shape: str | SyntheticShape = "tinyllama",
    *,
    dtype: str = "float32",
    layers: int | None = None,
    seed: int = 0,
    shard_bytes: int = 2 << 30,
    n_prompts: int = 10,
    prompt_tokens: int = 256,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write a synthetic checkpoint directory to ``out`` (see the module doc); returns its path.

    Built in a temporary directory beside ``out`` and renamed into place, so a half-written checkpoint is
    never visible. ``progress(k, n)`` is called after shard k of n is written.
    """
    from safetensors.torch import save_file

    shape = resolve_shape(shape)
    if layers is None:
        layers = shape.layers
    elif layers < 1:
        raise UserError(f"--layers must be >= 1, got {layers}")
    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}", f"choose one of: {', '.join(DTYPES)}")
    for flag, value in (("--prompts", n_prompts), ("--prompt-tokens", prompt_tokens), ("--shard-size", shard_bytes)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if prompt_tokens > shape.max_positions:
        raise UserError(f"--prompt-tokens {prompt_tokens} exceeds the context ({shape.max_positions})")
    target = Path(out)
    occupied = target.is_file() or (target.is_dir() and any(target.iterdir()))
    if occupied and not (force and (target / SYNTH_FILE).is_file()):
        raise UserError(f"{target} exists and is not empty",
                        "choose another --out (--force replaces only an earlier synthetic checkpoint)")
    config = shape.config(layers, dtype)
    layout = tensor_layout(config)
    element = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    shards = plan_shards(layout, element, shard_bytes)
    n = len(shards)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        weight_map, total = {}, 0
        for k, shard in enumerate(shards, start=1):
            name = f"model-{k:05d}-of-{n:05d}.safetensors"
            tensors = {t: make_tensor(t, s, shape, layers, seed, dtype) for t, s in shard}
            save_file(tensors, tmp / name, metadata={"format": "pt"})
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            weight_map.update({t: name for t in tensors})
            del tensors
            if progress is not None:
                progress(k, n)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        config.save_pretrained(tmp)
        write_tokenizer(tmp)
        (tmp / PROMPTS_FILE).write_text("\n".join(synthetic_prompts(n_prompts, prompt_tokens, seed)) + "\n", encoding="utf-8")
        record = {"generator": "blockcert.model.synthetic", "shape": shape.name, "layers": layers, "dtype": dtype, "seed": seed,
                  "shards": n, "total_size": total}
        (tmp / SYNTH_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        mask = os.umask(0)
        os.umask(mask)
        for f in tmp.iterdir():  # mkdtemp and safetensors create private files: give them open()'s modes
            f.chmod(0o666 & ~mask)
        tmp.chmod(0o777 & ~mask)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
