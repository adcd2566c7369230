"""The native block's own precision noise: the floor of the ``noise-floor`` policy.

For block l and prompt p the activation floor is, per token,

    f(p,t) = || block_l(x)_t in the model's dtype  -  block_l(x)_t in the reference precision ||

from the same recorded input x = x^(l) (unpadded, one prompt at a time), where the reference precision is
float32 for a bfloat16 or float16 model and float64 for a float32 one. The block is the model's own module
(a copy cast to the reference precision, swapped in for the call): whatever the adapter does around it
(RoPE, masks) is done in that precision too.

The loss floor of a target token is the larger of two loss noises, each measured against the trace's loss:
the block's (the loss when block l's output is its reference-precision one, the suffix run as always in
the model's dtype) and the suffix's own (the suffix, blocks l+1.. and the head, run in the reference
precision from the trace's x^(l+1): :func:`reference_suffix_losses`, with the whole model held in the
reference precision for that pass); and never less than :data:`LOSS_ULPS` float32 ulps of the loss. A
surrogate's loss change is judged against the noise of the computation it sits in.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from blockcert.metrics import token_errors

#: the precision a block of each model dtype is compared with
REFERENCE = {"float32": torch.float64, "bfloat16": torch.float32, "float16": torch.float32}


@contextmanager
def block_in(native: Any, index: int, dtype: torch.dtype) -> Iterator[None]:
    """Block ``index`` of ``native`` replaced, for the duration, by a copy of itself cast to ``dtype``."""
    blocks = native.blocks
    original = blocks[index]
    blocks[index] = copy.deepcopy(original).to(dtype)
    try:
        yield
    finally:
        blocks[index] = original


@contextmanager
def model_in(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Every floating-point parameter and buffer of ``model`` cast to ``dtype`` for the duration; the original
    tensors are put back afterwards (not cast back: a float32 RoPE table in a bfloat16 model stays exact)."""
    kept: list[tuple[Any, torch.Tensor]] = []
    seen: set[int] = set()
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None and p.is_floating_point() and id(p) not in seen:  # tied weights: once
                seen.add(id(p))
                kept.append((p, p.data))
                p.data = p.data.to(dtype)
        for name, b in list(module._buffers.items()):
            if b is not None and b.is_floating_point():
                kept.append(((module, name), b))
                module._buffers[name] = b.to(dtype)
    try:
        yield
    finally:
        for owner, tensor in reversed(kept):
            if isinstance(owner, tuple):
                owner[0]._buffers[owner[1]] = tensor
            else:
                owner.data = tensor


@torch.no_grad()
def act_floors(loaded: Any, traces: Sequence[Any], index: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per prompt: the activation floor f(p,t) [T_p] (float64) of block ``index``, and the block's reference-
    precision output [T_p, d] (float32: the start of the block-noise suffix of the loss floor)."""
    native = loaded.native
    ref = REFERENCE[loaded.dtype]
    inputs = [torch.from_numpy(np.ascontiguousarray(t.residual[index]))[None].to(native.device) for t in traces]
    positions = [torch.arange(x.shape[1], device=native.device)[None] for x in inputs]
    low = [native.call_block(index, x.to(native.dtype), pos)[0].to(torch.float64).cpu().numpy() for x, pos in zip(inputs, positions)]
    with block_in(native, index, ref):  # float64 on an MPS device does not exist: there, floors need --device cpu
        high = [native.call_block(index, x.to(ref), pos)[0].to(torch.float64).cpu().numpy() for x, pos in zip(inputs, positions)]
    return [token_errors(a, b) for a, b in zip(low, high)], [h.astype(np.float32) for h in high]


@torch.no_grad()
def reference_suffix_losses(loaded: Any, traces: Sequence[Any], blocks: Sequence[int], batch_size: int,
                            step: Any = None) -> dict[int, list[np.ndarray]]:
    """For every block l in ``blocks``: the token losses of the suffix (blocks l+1.., the head) run in the
    reference precision from the trace's own x^(l+1): {l: per prompt [T_p - 1]}."""
    from blockcert.pipeline.staircase import suffix_losses

    if loaded.streamed is not None:
        from blockcert.errors import UserError

        raise UserError("--policy noise-floor measures the suffix's loss noise with the whole model in the reference precision, "
                        "which a --stream run does not hold", "run without --stream, or with --policy paper or relative")
    with model_in(loaded.model, REFERENCE[loaded.dtype]):
        return suffix_losses(loaded, traces, blocks, lambda j: [np.asarray(t.residual[j + 1], np.float32) for t in traces],
                             batch_size, step=step)


def loss_floor_passes(loaded: Any, traces: Sequence[Any], blocks: Sequence[int], references: dict[int, list[np.ndarray]],
                      batch_size: int, step: Any = None) -> dict[int, list[np.ndarray]]:
    """The loss floors of ``blocks`` ({l: per prompt [T_p - 1]}) in two passes over the model: the block's noise
    through the suffix (from ``references[l]``, its reference-precision outputs from :func:`act_floors`, each
    popped when the pass reaches it) and the suffix's own noise, combined by :func:`loss_floors`."""
    from blockcert.pipeline.staircase import suffix_losses

    block_noise = suffix_losses(loaded, traces, blocks, references.pop, batch_size, step=step)
    suffix_noise = reference_suffix_losses(loaded, traces, blocks, batch_size, step=step)
    return {i: loss_floors([t.loss for t in traces], block_noise[i], suffix_noise[i]) for i in block_noise}


#: a token loss is a float32 number: two computations of the same loss differ by a few of its units in the last
#: place (up to 6 between the identity extraction's and the trace's, float32 random-init Llama), while in
#: float32 the reference output often rounds back to the trace's own, leaving |Δℓ| = 0. The loss floor is
#: never below this many float32 ulps of the token's loss (in bfloat16 and float16 the measured floors are
#: ~10^4 times larger, so this minimum never binds there).
LOSS_ULPS = 16
U32 = 2.0**-24


def loss_floors(base: Sequence[np.ndarray], block_noise: Sequence[np.ndarray], suffix_noise: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per prompt [T_p - 1]: the largest of |ℓ from the block's reference output - ℓ|, |ℓ of the reference-precision
    suffix - ℓ| (ℓ the trace's) and LOSS_ULPS float32 ulps of ℓ."""
    out = []
    for b, r, q in zip(base, block_noise, suffix_noise):
        b64 = np.asarray(b, np.float64)
        moved = np.maximum(np.abs(np.asarray(r, np.float64) - b64), np.abs(np.asarray(q, np.float64) - b64))
        out.append(np.maximum(moved, LOSS_ULPS * U32 * np.abs(b64)))
    return out
