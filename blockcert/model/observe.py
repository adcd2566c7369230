"""Observe the discrete decisions a native block actually took: m_l for path coverage.

A HF attention module hands its query, key, value and mask to an attention function (``sdpa``, ``eager``,
``flex`` or one a user registered). While a block runs inside :func:`observe_attention`, that function is
wrapped: the wrapper calls it unchanged (the numbers are bit-identical) and records

* ``allowed`` [B, T, S] bool: which keys each query could attend to, from what the function received: a
  boolean mask, an additive bias (a key is blocked where the bias is -inf or below half the dtype's most
  negative value), or no mask with the causal flag (SDPA's ``is_causal`` kernel); where the function
  returns attention probabilities (``eager``), their zero pattern is intersected in;
* ``rows`` [B, T, H] bool: whether head h's output at query t is non-zero (a pruned or gated-off head
  contributes exactly zero).

Nothing here assumes an architecture: a block whose attention does not go through such a function records
nothing, and the caller falls back to the adapter's declared pattern (:meth:`NativeModel.attention_allowed`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import torch


@attrs.frozen(eq=False)
class Observation:
    allowed: torch.Tensor  # [B, T(query), S(key)] bool
    rows: torch.Tensor  # [B, T, H] bool: head h's output at query t is non-zero


def _allowed(query: torch.Tensor, key: torch.Tensor, mask: Any, kwargs: dict[str, Any], module: Any,
             weights: Any) -> torch.Tensor | None:
    """[B, T, S] bool, or None when the mask is of a kind this cannot read (e.g. flex attention's BlockMask)."""
    B, T, S = query.shape[0], query.shape[2], key.shape[2]
    if mask is not None and not isinstance(mask, torch.Tensor):
        return None
    if isinstance(mask, torch.Tensor):
        m = mask if mask.dim() == 4 else mask[:, None]
        if m.dtype == torch.bool:
            allowed = m
        else:  # additive bias: blocked entries are -inf or the dtype's most negative value
            allowed = m > torch.finfo(m.dtype).min / 2
        allowed = allowed[..., :T, :S].any(dim=1) if allowed.shape[1] > 1 else allowed[:, 0, :T, :S]
        allowed = allowed.expand(B, T, S)
    elif kwargs.get("is_causal", getattr(module, "is_causal", True)) and T > 1:
        allowed = torch.ones(T, S, dtype=torch.bool, device=query.device).tril(S - T)[None].expand(B, T, S)
    else:
        allowed = torch.ones(B, T, S, dtype=torch.bool, device=query.device)
    if isinstance(weights, torch.Tensor):  # the probabilities themselves: a key with p = 0 was not attended
        allowed = allowed & (weights != 0).any(dim=1)
    return allowed.clone()


def _wrap(original: Callable[..., Any], records: list[Observation]) -> Callable[..., Any]:
    def observed(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any, *args: Any,
                 **kwargs: Any) -> Any:
        out = original(module, query, key, value, attention_mask, *args, **kwargs)
        output, weights = (out[0], out[1]) if isinstance(out, tuple) else (out, None)
        # output: [B, T, H, hd] (every HF attention function returns heads in the third axis)
        rows = (output != 0).any(dim=-1) if output.dim() == 4 else torch.ones(output.shape[:2] + (query.shape[1],), dtype=torch.bool,
                                                                               device=output.device)
        allowed = _allowed(query, key, attention_mask, kwargs, module, weights)
        if allowed is not None:  # otherwise nothing is recorded and the caller falls back to the declared pattern
            records.append(Observation(allowed, rows.detach().clone()))
        return out

    return observed


@contextlib.contextmanager
def observe_attention(model: torch.nn.Module) -> Iterator[list[Observation]]:
    """Within the block, every attention call of ``model`` appends one :class:`Observation` to the list."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    records: list[Observation] = []
    name = getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"
    restore: list[Callable[[], None]] = []
    try:
        if name == "eager":  # modules call their own module's eager_attention_forward by name
            for module in {sys.modules[type(m).__module__] for m in model.modules()}:
                fn = getattr(module, "eager_attention_forward", None)
                if callable(fn):
                    setattr(module, "eager_attention_forward", _wrap(fn, records))
                    restore.append(lambda module=module, fn=fn: setattr(module, "eager_attention_forward", fn))
        else:
            for mapping in (ALL_ATTENTION_FUNCTIONS._local_mapping, AttentionInterface._global_mapping):
                if name in mapping:
                    fn = mapping[name]
                    mapping[name] = _wrap(fn, records)
                    restore.append(lambda mapping=mapping, fn=fn: mapping.__setitem__(name, fn))
        yield records
    finally:
        for undo in reversed(restore):
            undo()
