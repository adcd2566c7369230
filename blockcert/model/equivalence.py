"""IR equivalence check: convert blocks to IR, replay them on the native residual stream, measure.

For every prompt (batch of one, no padding) the native model is run block by block, recording
x^(0..L). Block l's IR is replayed on x^(l) and compared with the native x^(l+1):
``max_abs = max |x_hat - x|`` and ``rel = max_abs / max |x|`` over all prompts and tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
import numpy as np
import torch

from blockcert.model.load import LoadedModel
from blockcert.plugins import get_plugins


@attrs.frozen
class BlockCheck:
    index: int
    tokens: int
    max_abs: float  # max |x_hat - x| over prompts, tokens, features (torch float32 replay)
    rel: float  # max_abs / max |x^(l+1)|
    max_abs_numpy: float | None  # the same for the numpy float64 reference replay, if run
    rel_numpy: float | None


def tokenize(loaded: LoadedModel, prompts: Sequence[str]) -> list[torch.Tensor]:
    if loaded.tokenizer is None:
        from blockcert.errors import UserError

        raise UserError(f"model {loaded.name} has no tokenizer, so text prompts cannot be used")
    return [loaded.tokenizer(p, return_tensors="pt")["input_ids"] for p in prompts]


@torch.no_grad()
def check_blocks(
    loaded: LoadedModel,
    prompts: Sequence[str],
    blocks: Sequence[int] | None = None,
    *,
    numpy_reference: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[BlockCheck]:
    """Replay error of each block's IR against the native block, over ``prompts``."""
    plugins = get_plugins()
    native = loaded.native
    blocks = list(range(native.n_blocks)) if blocks is None else list(blocks)
    ids = tokenize(loaded, prompts)
    streams = [[x.float() for x in native.residual_stream(i)] for i in ids]  # per prompt: L+1 × [1,T,d]
    n_ctx = max(i.shape[1] for i in ids)
    results = []
    for index in blocks:
        ir = plugins.to_ir(native, index, n_ctx)
        err = err_np = 0.0
        peak = 0.0
        for xs in streams:
            x_in, x_out = xs[index], xs[index + 1]
            y = plugins.replay(ir, x_in).output
            err = max(err, float((y - x_out).abs().max()))
            peak = max(peak, float(x_out.abs().max()))
            if numpy_reference:
                y64 = plugins.replay(ir, x_in.double().cpu().numpy()).output
                err_np = max(err_np, float(np.abs(y64 - x_out.double().cpu().numpy()).max()))
        results.append(
            BlockCheck(
                index=index,
                tokens=sum(i.shape[1] for i in ids),
                max_abs=err,
                rel=err / peak if peak else err,
                max_abs_numpy=err_np if numpy_reference else None,
                rel_numpy=(err_np / peak if peak else err_np) if numpy_reference else None,
            )
        )
        if progress is not None:
            progress(index)
    return results
