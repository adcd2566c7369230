"""The reference interpreter: replays a :class:`~blockcert.ir.BlockIR` on a residual stream.

Pure functions, no hidden control flow, one code path for every array library: the namespace ``xp``
comes from the input (``array_api_compat.array_namespace``), so a torch float32 input gives the fast
replay and a numpy float64 input gives the independent reference, which never imports torch.
The IR's numpy tensors are converted to the input's library and dtype on the way in.

Shapes: ``B`` batch, ``T`` sequence, ``d`` d_model, ``H`` query heads, ``K`` KV heads, ``G = H/K``
query heads per KV head, ``hd`` head_dim, ``r`` rotary_dim, ``f`` MLP width.
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace, is_numpy_namespace

from .ir import MLP, Attention, BlockIR, Linear, Norm, Rope

Array = Any  # a numpy array or a torch tensor; the interpreter never mixes the two


class Replay(NamedTuple):
    """A replay's output and the discrete decisions it took (compared for path coverage)."""

    output: Array  # [B, T, d]   x^(l+1) as the IR computes it
    mask: Array  # [B, T, T]    bool: query i attended to key j
    head_active: Array  # [H]   bool: the head's output is non-zero (a gated-off or dead head is not)


def _param(xp: Any, like: Array, a: np.ndarray) -> Array:
    """An IR tensor in the input's array library and floating dtype."""
    return xp.asarray(a, dtype=like.dtype, device=_device(like))


def _device(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


def linear(xp: Any, x: Array, lin: Linear) -> Array:
    y = xp.matmul(x, _param(xp, x, lin.weight))  # [..., d_in] @ [d_in, d_out] -> [..., d_out]
    if lin.bias is not None:
        y = y + _param(xp, x, lin.bias)  # [..., d_out] + [d_out]
    return y


def norm(xp: Any, x: Array, n: Norm | None) -> Array:
    if n is None:  # an absent norm is the identity (OLMo2 has no pre-norms)
        return x
    if n.kind == "layernorm":
        mean = xp.mean(x, axis=-1, keepdims=True)  # [..., d] -> [..., 1]
        var = xp.mean((x - mean) ** 2, axis=-1, keepdims=True)  # [..., 1], biased variance
        x = (x - mean) / xp.sqrt(var + n.eps)  # [..., d]
    else:
        ms = xp.mean(x * x, axis=-1, keepdims=True)  # [..., d] -> [..., 1]
        x = x / xp.sqrt(ms + n.eps)  # [..., d]
    y = x * _param(xp, x, n.weight)  # [..., d] * [d]
    if n.bias is not None:
        y = y + _param(xp, x, n.bias)  # [..., d] + [d]
    return y


def _erf(xp: Any, x: Array) -> Array:
    if is_numpy_namespace(xp):
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype)  # exact libm erf, elementwise
    # a torch input: torch is loaded already (the numpy path never names it, tests/test_import_graph.py)
    return sys.modules["torch"].special.erf(x)


def activation(xp: Any, x: Array, kind: str) -> Array:
    if kind == "gelu_tanh":  # GPT-2's gelu_new
        return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if kind == "gelu":
        return 0.5 * x * (1.0 + _erf(xp, x / math.sqrt(2.0)))
    if kind == "relu":
        return xp.where(x > 0, x, xp.zeros_like(x))
    if kind == "silu":
        return x / (1.0 + xp.exp(-x))
    raise ValueError(f"unknown activation {kind!r}")


def rope(xp: Any, x: Array, cos: Array, sin: Array, r: Rope) -> Array:
    """Rotate the first ``rotary_dim`` features. x: [B, H, T, hd]; cos, sin: [B, 1, T, r]."""
    rot, rest = x[..., : r.rotary_dim], x[..., r.rotary_dim :]  # [B,H,T,r], [B,H,T,hd-r]
    if r.style == "half":
        half = r.rotary_dim // 2
        turned = xp.concat((-rot[..., half:], rot[..., :half]), axis=-1)  # rotate_half: [B,H,T,r]
    else:
        even, odd = rot[..., 0::2], rot[..., 1::2]  # [B,H,T,r/2] each
        turned = xp.reshape(xp.stack((-odd, even), axis=-1), rot.shape)  # (-x1, x0) pairs: [B,H,T,r]
    rot = rot * cos + turned * sin  # [B,H,T,r]
    return xp.concat((rot, rest), axis=-1)  # [B,H,T,hd]


def softmax(xp: Any, s: Array) -> Array:
    s = s - xp.max(s, axis=-1, keepdims=True)  # stable; masked entries are -inf and become 0
    e = xp.exp(s)
    return e / xp.sum(e, axis=-1, keepdims=True)


def attention(xp: Any, x: Array, a: Attention, positions: Array, key_mask: Array | None) -> tuple[Array, Array, Array]:
    """x: [B, T, d] (already normed); positions: [B, T] int; key_mask: [B, T] bool or None."""
    B, T, _ = x.shape
    H, K, hd = a.n_heads, a.n_kv_heads, a.head_dim
    G = H // K
    q = qk_norm(xp, linear(xp, x, a.q), a.q_norm, H, hd)  # [B,T,H*hd], normalised when the IR says
    k = qk_norm(xp, linear(xp, x, a.k), a.k_norm, K, hd)  # [B,T,K*hd]
    q = xp.permute_dims(xp.reshape(q, (B, T, H, hd)), (0, 2, 1, 3))  # [B,H,T,hd]
    k = xp.permute_dims(xp.reshape(k, (B, T, K, hd)), (0, 2, 1, 3))  # [B,K,T,hd]
    v = xp.permute_dims(xp.reshape(linear(xp, x, a.v), (B, T, K, hd)), (0, 2, 1, 3))  # [B,K,T,hd]
    if a.rope is not None:
        cos = xp.take(_param(xp, x, a.rope.cos), xp.reshape(positions, (-1,)), axis=0)  # [B*T, r]
        sin = xp.take(_param(xp, x, a.rope.sin), xp.reshape(positions, (-1,)), axis=0)  # [B*T, r]
        cos = xp.reshape(cos, (B, 1, T, a.rope.rotary_dim))  # [B,1,T,r], broadcast over heads
        sin = xp.reshape(sin, (B, 1, T, a.rope.rotary_dim))  # [B,1,T,r]
        q, k = rope(xp, q, cos, sin, a.rope), rope(xp, k, cos, sin, a.rope)
    mask_table = xp.asarray(a.mask, device=_device(x))  # [n_ctx, n_ctx] bool
    allowed = mask_table[positions[:, :, None], positions[:, None, :]]  # [B, T(query), T(key)] bool
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :]  # padding keys are never attended: [B,T,T]
    q = xp.reshape(q, (B, K, G, T, hd))  # query head h = kv*G + g reads KV head kv
    scores = xp.matmul(q, xp.permute_dims(k, (0, 1, 3, 2))[:, :, None]) * a.scale  # [B,K,G,T,T]
    if a.softcap is not None:  # Gemma 2: logits squashed into (-cap, cap) before the mask
        scores = xp.tanh(scores / a.softcap) * a.softcap  # [B,K,G,T,T]
    neg_inf = xp.asarray(-math.inf, dtype=x.dtype, device=_device(x))
    scores = xp.where(allowed[:, None, None], scores, neg_inf)  # [B,K,G,T,T]
    # a query that may attend to no key (a padding query): HF's additive mask gives every key the same score
    # (dtype-min), so the row is a uniform average of all values, not NaN; do the same
    empty = xp.logical_not(xp.any(allowed, axis=-1))  # [B,T]
    scores = xp.where(empty[:, None, None, :, None], xp.zeros_like(scores), scores)  # [B,K,G,T,T]
    probs = softmax(xp, scores)  # [B,K,G,T,T]
    heads = xp.matmul(probs, v[:, :, None])  # [B,K,G,T,hd]
    heads = xp.reshape(heads, (B, H, T, hd)) * xp.reshape(_param(xp, x, a.head_gate), (1, H, 1, 1))  # gate
    active = xp.any(heads != 0, axis=(0, 2, 3))  # [H]: the head's output is non-zero somewhere
    merged = xp.reshape(xp.permute_dims(heads, (0, 2, 1, 3)), (B, T, H * hd))  # [B,T,H*hd]
    return linear(xp, merged, a.o), allowed, active  # [B,T,d], [B,T,T], [H]


def qk_norm(xp: Any, y: Array, n: Norm | None, heads: int, hd: int) -> Array:
    """QK-norm of projected queries or keys y [B, T, heads*hd]: per head when the norm has ``hd`` weights
    (Qwen3, Gemma 3, Phi), over the whole projection when it has ``heads*hd`` (OLMo2); None: unchanged."""
    if n is None:
        return y
    if n.weight.shape[0] == hd:
        B, T = y.shape[0], y.shape[1]
        return xp.reshape(norm(xp, xp.reshape(y, (B, T, heads, hd)), n), (B, T, heads * hd))  # [B,T,heads,hd] normed
    return norm(xp, y, n)  # [B,T,heads*hd]


def mlp(xp: Any, x: Array, m: MLP) -> Array:
    up = linear(xp, x, m.up)  # [B,T,d] -> [B,T,f]
    if m.gate is not None:
        hidden = activation(xp, linear(xp, x, m.gate), m.activation) * up  # SwiGLU etc.: [B,T,f]
    else:
        hidden = activation(xp, up, m.activation)  # [B,T,f]
    return linear(xp, hidden, m.down)  # [B,T,f] -> [B,T,d]


def replay(ir: BlockIR, x: Array, positions: Array | None = None, key_mask: Array | None = None) -> Replay:
    """x^(l) [B, T, d] -> x^(l+1) as the IR computes it, plus the discrete decisions taken.

    ``positions`` [B, T] are absolute position ids (default ``0..T-1``; they index the RoPE tables and
    the mask); ``key_mask`` [B, T] marks real (non-padding) tokens.
    """
    xp = array_namespace(x)
    B, T, d = x.shape
    if d != ir.d_model:
        raise ValueError(f"block {ir.index}: input has d={d}, the IR expects d_model={ir.d_model}")
    if positions is None:
        positions = xp.broadcast_to(xp.arange(T, device=_device(x))[None, :], (B, T))  # [B, T]
    if int(xp.max(positions)) >= ir.n_ctx:
        raise ValueError(f"block {ir.index}: position {int(xp.max(positions))} is beyond the IR's n_ctx={ir.n_ctx}")
    a, allowed, head_active = attention(xp, norm(xp, x, ir.norm1), ir.attn, positions, key_mask)  # [B,T,d], [B,T,T], [H]
    if ir.residual == "sequential":
        h = x + norm(xp, a, ir.post_attn_norm)  # [B,T,d] (post_attn_norm None: the identity)
        y = h + norm(xp, mlp(xp, norm(xp, h, ir.norm2), ir.mlp), ir.post_mlp_norm)  # [B,T,d]
    else:
        y = x + a + mlp(xp, norm(xp, x, ir.norm2), ir.mlp)  # [B,T,d]
    return Replay(output=y, mask=allowed, head_active=head_active)
