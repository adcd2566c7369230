"""Trace capture and the trace store.

For every prompt the native model is run block by block and the residual stream x^(0..L) is kept
(L+1 snapshots: x^(l+1) is block l's output and block l+1's input), together with m_l, the discrete
decisions each native block took (its boolean attention pattern and head gates), the token ids and
the baseline per-token loss l_base(p, t) = -log p(token_{t+1} | prefix).

Prompts are batched, right-padded: with a causal mask a real token never attends to a later padding
token, so real rows are exactly those of an unpadded run. Snapshots are stored in float32 (a bfloat16
or float16 native value widens exactly).

On disk (``traces/``): ``prompt_<k>.safetensors`` per prompt and ``index.json``, written last, so a
trace store without ``index.json`` is incomplete and is recaptured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from blockcert.artifacts.digest import json_sha256
from blockcert.artifacts.fsutil import atomic_write_bytes, atomic_write_text
from blockcert.artifacts.layout import TRACES, prompt_file
from blockcert.errors import UserError
from blockcert.model.load import LoadedModel
from blockcert.model.observe import observe_attention

INDEX = "index.json"
NLL_ROWS = 256  # rows per head + cross-entropy call in prompt_nll


@attrs.frozen(eq=False)
class PromptTrace:
    """One prompt's trace. Shapes: T tokens, L blocks, d model width, H heads."""

    index: int
    text: str
    input_ids: np.ndarray  # [T] int64
    residual: np.ndarray  # [L+1, T, d] float32
    masks: np.ndarray  # [L, T, T] bool: m_l attention pattern, query x key
    head_gates: np.ndarray  # [L, H] bool: m_l head activity (head h's output was non-zero on some token)
    loss: np.ndarray  # [T-1] float32: baseline NLL of token t+1 given tokens 0..t

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    def tensors(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "residual": self.residual, "masks": self.masks,
                "head_gates": self.head_gates, "loss": self.loss}


def tokenize_prompts(loaded: LoadedModel, prompts: Sequence[str]) -> list[np.ndarray]:
    if loaded.tokenizer is None:
        raise UserError(f"model {loaded.name} has no tokenizer, so text prompts cannot be traced",
                        "use a model directory that includes tokenizer files, or add a byte-level one: "
                        "blockcert synth --tokenizer-only --out MODEL_DIR (the vocabulary needs >= 259 rows)")
    max_len = context_length(loaded)
    out = []
    for k, text in enumerate(prompts):
        ids = np.asarray(loaded.tokenizer(text)["input_ids"], dtype=np.int64)
        if ids.size < 2:
            raise UserError(f"prompt {k} has {ids.size} token(s); loss coverage needs at least 2", "use longer prompts")
        if max_len is not None and ids.size > max_len:
            raise UserError(f"prompt {k} has {ids.size} tokens, more than the model's context of {max_len}",
                            "shorten or split the prompt")
        out.append(ids)
    return out


def context_length(loaded: LoadedModel) -> int | None:
    config = loaded.model.config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def n_heads(loaded: LoadedModel) -> int:
    return int(loaded.model.config.num_attention_heads)


def batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def padded_batches(ids: Sequence[np.ndarray], size: int, device: Any) -> Iterator[tuple[Sequence[np.ndarray], torch.Tensor, torch.Tensor]]:
    """(the prompts' ids, the right-padded batch [B, T] and its positions [B, T]) for each ``size`` prompts in order,
    on ``device``; under causal attention a real token never sees a later pad."""
    for start in range(0, len(ids), size):
        part = ids[start : start + size]
        batch = pad_batch(part).to(device)
        yield part, batch, torch.arange(batch.shape[1], device=batch.device)[None].expand_as(batch)


def pad_batch(ids: Sequence[np.ndarray]) -> torch.Tensor:
    """Right-pad token ids to one [B, T_max] tensor (the pad value never influences a real token)."""
    t_max = max(a.size for a in ids)
    out = torch.zeros((len(ids), t_max), dtype=torch.long)
    for b, a in enumerate(ids):
        out[b, : a.size] = torch.from_numpy(a)
    return out


def token_nll(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, T, V], [B, T] -> [B, T-1]: -log p(input_ids[t+1] | ...) in float32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, input_ids[:, 1:, None])[..., 0]


def prompt_nll(native: Any, x: torch.Tensor, input_ids: torch.Tensor, lengths: Sequence[int]) -> list[np.ndarray]:
    """Token losses of each prompt of a right-padded batch: final stream ``x`` [B, T, d] -> [T_b - 1] each.

    The head (final norm + unembedding, the most expensive matrix of a small model) runs only on the
    rows that predict a real token, Σ(T_b − 1) of them, never on padding or on a prompt's last position.
    Every token loss of BlockCert (baseline, stitched, re-verified) goes through this one function.
    """
    B, T = input_ids.shape
    sel = torch.arange(T - 1, device=x.device)[None, :] < (torch.as_tensor(list(lengths), device=x.device)[:, None] - 1)  # [B, T-1]
    rows = x[:, :-1][sel]  # [N, d]
    targets = input_ids[:, 1:][sel]  # [N]
    # In chunks of NLL_ROWS rows: never an [N, V] logits matrix (2040 x 32000 float32 is 261 MB for ten
    # 256-token prompts, more than a streamed block). A chunk's logits are [NLL_ROWS, V].
    nll = torch.cat([torch.nn.functional.cross_entropy(native.head(rows[i : i + NLL_ROWS]).float(), targets[i : i + NLL_ROWS],
                                                       reduction="none")
                     for i in range(0, rows.shape[0], NLL_ROWS)])
    return [part.cpu().numpy() for part in torch.split(nll, [n - 1 for n in lengths])]


@torch.no_grad()
def capture(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[PromptTrace]:
    """Run the native model block by block on every prompt and record its trace.

    Block-major: every batch goes through block l before any goes through block l+1, so a streamed
    model reads each block once (the batches and every number are those of a batch-by-batch run).
    ``progress`` is called with 1 after each block.
    """
    native = loaded.native
    ids = tokenize_prompts(loaded, prompts)
    L, H = native.n_blocks, n_heads(loaded)
    residual = [np.empty((L + 1, a.size, native.d_model), np.float32) for a in ids]  # filled as the blocks run
    masks = [np.empty((L, a.size, a.size), bool) for a in ids]
    gates = [np.ones((L, H), bool) for _ in ids]
    groups = batches(len(ids), batch_size)
    input_ids = [pad_batch([ids[k] for k in group]).to(native.device) for group in groups]
    positions = [torch.arange(b.shape[1], device=native.device)[None].expand(b.shape) for b in input_ids]
    xs = [native.embed(b, pos) for b, pos in zip(input_ids, positions)]

    def keep(layer: int, g: int, x: torch.Tensor) -> None:
        x = x.float()
        for b, k in enumerate(groups[g]):
            residual[k][layer] = x[b, : ids[k].size].cpu().numpy()  # traces are stored on the CPU

    for g, x in enumerate(xs):
        keep(0, g, x)
    for index in range(L):
        for g, group in enumerate(groups):
            with observe_attention(loaded.model) as seen:  # m_l as the native block applied it
                xs[g] = native.call_block(index, xs[g], positions[g])
            T = xs[g].shape[1]
            if len(seen) == 1 and tuple(seen[0].allowed.shape) == (len(group), T, T) and seen[0].rows.shape[-1] == H:
                allowed, rows = seen[0].allowed, seen[0].rows  # [B, T, T], [B, T, H]
            else:  # attention not routed through an HF attention function: the adapter's declared pattern
                allowed, rows = native.attention_allowed(index, positions[g]), None
            for b, k in enumerate(group):
                n = ids[k].size
                masks[k][index] = allowed[b, :n, :n].cpu().numpy()
                if rows is not None:
                    gates[k][index] = rows[b, :n].any(dim=0).cpu().numpy()
            keep(index + 1, g, xs[g])
        if progress is not None:
            progress(1)
    losses = [loss for g, group in enumerate(groups) for loss in prompt_nll(native, xs[g], input_ids[g], [ids[k].size for k in group])]
    traces: list[PromptTrace] = []
    for k, res in enumerate(residual):
        bad = ~np.isfinite(res).all(axis=(1, 2))
        if bad.any():
            where = int(np.argmax(bad))
            raise UserError(f"non-finite activations in prompt {k} at the input of block {where}"
                            f" (x^({where}), dtype {loaded.dtype})", "try --dtype float32")
        traces.append(PromptTrace(index=k, text=prompts[k], input_ids=ids[k], residual=res, masks=masks[k],
                                  head_gates=gates[k], loss=losses[k]))
    return traces


# ---------------------------------------------------------------------------------------------------
# The trace store
# ---------------------------------------------------------------------------------------------------


def prompts_sha256(prompts: Sequence[str]) -> str:
    return json_sha256(list(prompts))


def save_traces(root: Path, traces: Sequence[PromptTrace], description: str) -> None:
    from safetensors.numpy import save

    for t in traces:
        atomic_write_bytes(root / prompt_file(t.index), save(t.tensors(), metadata={"format": "blockcert-trace"}))
    index = {
        "prompts": description,
        "prompts_sha256": prompts_sha256([t.text for t in traces]),
        "entries": [{"index": t.index, "text": t.text, "tokens": t.n_tokens, "file": prompt_file(t.index)} for t in traces],
    }
    atomic_write_text(root / TRACES / INDEX, json.dumps(index, indent=2, ensure_ascii=False) + "\n")


def load_traces(root: Path) -> list[PromptTrace] | None:
    """The stored traces, or None if the store is absent or incomplete."""
    from safetensors.numpy import load_file

    index_path = root / TRACES / INDEX
    if not index_path.is_file():
        return None
    index = json.loads(index_path.read_text(encoding="utf-8"))
    out = []
    for entry in index["entries"]:
        t = load_file(root / entry["file"])
        out.append(PromptTrace(index=entry["index"], text=entry["text"], input_ids=t["input_ids"], residual=t["residual"],
                               masks=t["masks"], head_gates=t["head_gates"], loss=t["loss"]))
    return out
