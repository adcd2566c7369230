"""Loss coverage for many blocks in one pass over the model: the staircase.

Loss coverage of block l (eq. 7-8) replaces block l by its replay and re-runs blocks l+1..L-1 and the
head on the result; the prefix is the trace. Done block by block, block j is run once for every variant
l < j, and a streamed model would read block j's weights once per variant. The staircase turns the loops
around: one pass visits blocks l_min..L-1 in order, and at block j it advances every variant l < j that
is in flight through block j, then lets variant j join (its start, the replayed output of block j, is
asked for only now, while block j's weights are in memory, so the extraction reads them too).

Each native call sees exactly the batch of a block-by-block run (the same prompts, the same padding,
one variant at a time), so every loss equals the block-by-block one bit for bit and a certificate does
not depend on which blocks shared a pass. Only the order of the calls changes.

Memory: the variants in flight, ``len(blocks) × Σ_batches B × T_max × d`` elements of the native dtype
(bound it by giving fewer blocks per pass; see ``blockcert.pipeline.certify.plan_groups``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from blockcert.pipeline.trace import batches, pad_batch, prompt_nll


def pad_rows(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """[T_b, d] arrays -> right-padded float32 [B, T_max, d]."""
    t_max = max(a.shape[0] for a in arrays)
    out = torch.zeros((len(arrays), t_max, arrays[0].shape[-1]), dtype=torch.float32)
    for b, a in enumerate(arrays):
        out[b, : a.shape[0]] = torch.from_numpy(a)
    return out


def variant_bytes(lengths: Sequence[int], batch_size: int, d_model: int, dtype: torch.dtype) -> int:
    """Bytes one variant in flight holds: its padded batches in the native dtype."""
    element = torch.empty((), dtype=dtype).element_size()
    return sum(len(g) * max(lengths[k] for k in g) for g in batches(len(lengths), batch_size)) * d_model * element


@torch.no_grad()
def suffix_losses(
    loaded: Any,
    traces: Sequence[Any],
    blocks: Sequence[int],
    start: Callable[[int], Sequence[np.ndarray]],
    batch_size: int,
    step: Callable[[int], None] | None = None,
) -> dict[int, list[np.ndarray]]:
    """Token losses with block l replaced, for every l in ``blocks``: {l: per prompt [T_p - 1] float32}.

    ``start(l)`` returns the replacement's output for every prompt (``[T_p, d]`` float32, unpadded); it
    is called once, when the pass reaches block l. ``step(j)`` is called after the pass has run block j.
    """
    native = loaded.native
    groups = batches(len(traces), batch_size)
    lengths = [[traces[k].n_tokens for k in group] for group in groups]
    positions = [torch.arange(max(n), device=native.device)[None].expand(len(n), max(n)) for n in lengths]  # one per batch, shared
    chosen = set(blocks)
    inflight: dict[int, list[torch.Tensor]] = {}  # variant l -> its batches, [B, T, d] native dtype
    for j in range(min(chosen), native.n_blocks):
        for g in range(len(groups)):
            for xs in inflight.values():
                xs[g] = native.call_block(j, xs[g], positions[g])
        if j in chosen:
            outputs = start(j)
            inflight[j] = [pad_rows([outputs[k] for k in group]).to(device=native.device, dtype=native.dtype) for group in groups]
        if step is not None:
            step(j)
    losses: dict[int, list[np.ndarray]] = {}
    ids = [pad_batch([traces[k].input_ids for k in group]).to(native.device) for group in groups]
    for ell in sorted(inflight):
        xs = inflight.pop(ell)
        losses[ell] = [nll for g in range(len(groups)) for nll in prompt_nll(native, xs[g], ids[g], lengths[g])]
    return losses
