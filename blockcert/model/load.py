"""Loading models: a local HF directory, a GGUF file, or a registered name. Never a hub download.

GGUF checkpoints are dequantized by transformers once (~15 s for SmolLM2) and the float weights are
cached as an HF safetensors directory keyed by the GGUF file's SHA-256, so later loads take under a second.
The cache lives in ``$BLOCKCERT_CACHE`` (default ``~/.cache/blockcert``); entries are written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts.digest import file_sha256, update_tensor
from blockcert.errors import UserError
from blockcert.model.paths import TOKENIZER_FILES, cache_root, gguf_cache_path, resolve
from blockcert.plugins import get_plugins

__all__ = ["DTYPES", "TOKENIZER_FILES", "LoadedModel", "cache_root", "gguf_cache_dir", "load_model", "resolve", "torch_state_sha256", "wrap_model"]

# No code path may contact a model hub: set before transformers is first imported, and pass
# local_files_only=True everywhere as well.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

DTYPES = ("float32", "bfloat16", "float16")


@attrs.define
class LoadedModel:
    """A model ready to trace: the HF model, its tokenizer, its architecture and its native adapter."""

    name: str
    path: Path
    arch: str
    model: Any
    tokenizer: Any
    native: Any
    dtype: str
    source_sha256: str | None = None  # SHA-256 of the GGUF file the weights came from, if any
    streamed: Any = None  # a blockcert.model.stream.StreamedModel when loaded with stream=True (weights stay on disk)
    spec: str | None = None  # what load_model was given (resolved), so a worker process can load it again
    device: str = "cpu"  # where the model runs (--device); traces and artifacts are always on the CPU
    _weights_sha256: str | None = attrs.field(default=None, init=False, repr=False)

    def weights_sha256(self) -> str:
        """Digest of every weight as loaded (name, dtype, shape, bytes): the certified model's identity.

        A streamed model reads its weights tensor by tensor for this, never all at once; the digest is
        the same as the in-memory model's.
        """
        if self._weights_sha256 is None:
            state = self.model.state_dict() if self.streamed is None else self.streamed.state_dict()
            self._weights_sha256 = torch_state_sha256(state)
        return self._weights_sha256


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise UserError(f"unknown --dtype {dtype!r}", f"choose one of: {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_hf_dir(path: Path, dtype: str) -> tuple[Any, Any]:
    quiet_transformers()
    from transformers import AutoModelForCausalLM

    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face model directory (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=_torch_dtype(dtype))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model in {path}: {exc}") from exc
    return model, _load_tokenizer(path)


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        return None  # a weights-only directory is usable with token ids, not with text prompts
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer in {path}: {exc}") from exc


@contextlib.contextmanager
def _no_tqdm() -> Iterator[None]:
    """transformers' GGUF reader draws a raw tqdm bar; we show our own status instead."""
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def gguf_cache_dir(gguf: Path, sha256: str | None = None) -> Path:
    """Where the dequantized weights of ``gguf`` are (or will be) cached, converting on first use."""
    target = gguf_cache_path(gguf, sha256)
    if (target / "config.json").is_file():
        return target
    quiet_transformers()
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True)
    with console.status(f"Dequantizing {gguf.name} (first load only; cached in {target.parent})"), _no_tqdm():
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        except ImportError as exc:
            raise UserError(f"reading {gguf.name} needs the GGUF loader: {exc}", "pip install gguf accelerate") from exc
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read GGUF file {gguf}: {exc}") from exc
        # The weights are plain floats now; drop the GGUF quantizer so they save as ordinary safetensors.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.is_quantized = False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            try:
                os.replace(tmp, target)  # atomic: a half-written cache entry is never visible
            except OSError:
                if not (target / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _announce(message: str) -> None:
    """A note for the user on stderr (not an error): e.g. ``--device auto`` falling back to the CPU."""
    print(message, file=sys.stderr)


def load_model(
    spec: str | os.PathLike[str] | None = None, *, arch: str | None = None, dtype: str = "float32", stream: bool = False,
    device: str = "cpu",
) -> LoadedModel:
    """Load a model for tracing. ``arch`` overrides architecture detection; ``dtype`` is the native precision;
    ``device`` (cpu, cuda, mps or auto: :func:`blockcert.model.device.resolve_device`) is where it runs.

    ``stream=True`` never materialises the model: the weights stay in the safetensors shards and one
    block at a time is read in when used (:mod:`blockcert.model.stream`). Every number computed with it, the
    weights digest included, equals the in-memory model's.
    """
    from blockcert.model.device import resolve_device

    device = resolve_device(device, announce=_announce)
    if stream and device != "cpu":
        raise UserError(f"--stream installs each block's weights on the CPU as it is used; it cannot run on --device {device}",
                        "drop --stream (the model then has to fit on the device), or use --device cpu")
    name, path = resolve(spec)
    torch_dtype = _torch_dtype(dtype)
    source_sha256 = None
    directory = path
    if path.is_file():  # a GGUF checkpoint
        source_sha256 = file_sha256(path)
        directory = gguf_cache_dir(path, source_sha256)
    streamed = None
    if stream:
        from blockcert.model.stream import open_streamed

        quiet_transformers()
        if not (directory / "config.json").is_file():
            raise UserError(f"{directory} is not a Hugging Face model directory (no config.json)")
        streamed = open_streamed(directory, torch_dtype)
        model, tokenizer = streamed.model, _load_tokenizer(directory)
    else:
        model, tokenizer = _load_hf_dir(directory, dtype)
        model = model.to(device=device, dtype=torch_dtype).eval()
    plugins = get_plugins()
    arch = arch or plugins.detect_architecture(model)
    if arch not in plugins.architectures():
        raise UserError(f"unknown --arch {arch!r}", f"known: {', '.join(sorted(plugins.architectures()))}")
    native = plugins.trace(model, arch)
    plugins.check_fits(native, model, arch)
    if streamed is not None:
        streamed.attach(native.blocks, getattr(native, "checkpoint_aliases", None), arch)
    return LoadedModel(
        name=name, path=path, arch=arch, model=model, tokenizer=tokenizer, native=native, dtype=dtype, source_sha256=source_sha256,
        streamed=streamed, spec=str(path), device=device,
    )


def wrap_model(model: Any, *, arch: str | None = None, tokenizer: Any = None, name: str = "in-memory") -> LoadedModel:
    """Wrap an HF model object already in memory (e.g. a random-init config in a test or notebook)."""
    plugins = get_plugins()
    model = model.eval()
    arch = arch or plugins.detect_architecture(model)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return LoadedModel(
        name=name, path=Path("."), arch=arch, model=model, tokenizer=tokenizer, native=plugins.trace(model, arch), dtype=dtype
    )


def torch_state_sha256(state: Mapping[str, Any]) -> str:
    """:func:`blockcert.artifacts.digest.tensors_sha256` for a torch state dict (any dtype, bfloat16 included), without a float copy."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        if sys.byteorder == "big" and t.element_size() > 1 and t.numel():  # hash little-endian bytes everywhere
            raw = raw.reshape(-1, t.element_size())[:, ::-1].reshape(-1)
        update_tensor(h, name, str(t.dtype).removeprefix("torch."), t.shape, raw)
    return h.hexdigest()
