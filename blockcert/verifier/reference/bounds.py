"""A second, deliberately simple implementation of the certified part of ``bounds.json`` (docs/bounds.md).

Written from the formulas of docs/bounds.md §2-§5, not from :mod:`blockcert.bounds`: plain float64 numpy,
exact spectral norms from ``np.linalg.norm(W, 2)`` (an SVD), no directed rounding, no Gram iteration, no
rational arithmetic. The verifier checks every certified number against it in both directions
(:func:`blockcert.verifier.bounds.recheck_lipschitz`): a claimed bound must not be below the value computed
here (up to float64 rounding: it would not bound what the formula bounds) and must not be more than a
stated ratio above it (a bound 1000x looser, or a formula that gained a factor, fails).

The values here are *not* certified (no outward rounding): they are the real-number formulas evaluated in
float64, so they sit within a few ulps of the exact quantity the optimized implementation bounds from above.

Imports: numpy, the standard library, the IR records and the record format only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from blockcert.artifacts.bounds_record import SPECTRAL_MATRICES, UPPER_FIELDS, BoundSettings
from blockcert.ir import MLP, Attention, BlockIR, Norm

#: the norm regions are shrunk by this relative amount below ``margin x`` the smallest traced scale, so that
#: the float64 evaluation of the traced scales never puts a traced token outside its own region (docs/bounds.md §5)
MIN_SCALE_SHRINK = 1e-6


# ---------------------------------------------------------------------------------------------------
# Small pieces
# ---------------------------------------------------------------------------------------------------


def spectral_norm(W: Any) -> float:
    """σ_max(W), float64 LAPACK SVD (exact up to float64 rounding)."""
    W = np.asarray(W, np.float64)
    if W.size == 0:
        return 0.0
    return float(np.linalg.norm(W, 2))


def eps_eff(norm: Norm) -> float:
    """The eps the bounds use: ``min(eps, float32(eps))`` (a float32 replay's eps is covered too)."""
    return min(float(norm.eps), float(np.float32(norm.eps)))


def centred(norm: Norm, X: np.ndarray) -> np.ndarray:
    """``C x`` for LayerNorm (mean removed), ``x`` for RMSNorm; rows are tokens."""
    X = np.asarray(X, np.float64)
    return X - X.mean(axis=-1, keepdims=True) if norm.kind == "layernorm" else X


def scales(norm: Norm, X: np.ndarray) -> np.ndarray:
    """``rms(x)`` (RMSNorm) or the biased ``std(x)`` (LayerNorm) of every row, without eps."""
    Xc = centred(norm, X)
    return np.sqrt(np.mean(Xc * Xc, axis=-1))


def norm_forward(norm: Norm, X: np.ndarray) -> np.ndarray:
    """The norm layer itself, float64 (with the IR's own eps)."""
    Xc = centred(norm, X)
    Y = Xc / np.sqrt(np.mean(Xc * Xc, axis=-1, keepdims=True) + float(norm.eps)) * np.asarray(norm.weight, np.float64)
    if norm.bias is not None:
        Y = Y + np.asarray(norm.bias, np.float64)
    return Y


def norm_bound(norm: Norm, min_scale: float) -> float:
    """§2: ``max|w| / sqrt(min_scale² + eps)`` on ``{scale(x) >= min_scale}``; inf when the denominator is 0."""
    wmax = float(np.max(np.abs(np.asarray(norm.weight, np.float64))))
    den = math.sqrt(float(min_scale) ** 2 + eps_eff(norm))
    if den == 0:
        return math.inf if wmax > 0 else 0.0
    return wmax / den


def norm_output_radius(norm: Norm) -> float:
    """``R = max|w|·√d + ‖b‖``: every output of the norm layer has ``‖norm(x)‖ <= R``."""
    w = np.asarray(norm.weight, np.float64)
    R = float(np.max(np.abs(w))) * math.sqrt(w.shape[0])
    if norm.bias is not None:
        R += float(np.linalg.norm(np.asarray(norm.bias, np.float64)))
    return R


# ---------------------------------------------------------------------------------------------------
# §3 Attention
# ---------------------------------------------------------------------------------------------------


def rope_pair_matrices(attn: Attention) -> np.ndarray:
    """The 2x2 maps RoPE applies to each rotated feature pair at each position of the tables: ``[n, r/2, 2, 2]``."""
    r = attn.rope
    assert r is not None
    cos, sin = np.asarray(r.cos, np.float64), np.asarray(r.sin, np.float64)
    half = r.rotary_dim // 2
    if r.style == "half":  # features (i, i + half): out_i = x_i cos_i - x_{i+h} sin_i, out_{i+h} = x_{i+h} cos_{i+h} + x_i sin_{i+h}
        first, second = np.arange(half), np.arange(half) + half
    else:  # features (2i, 2i + 1)
        first, second = np.arange(0, r.rotary_dim, 2), np.arange(1, r.rotary_dim, 2)
    M = np.empty(cos.shape[:1] + (half, 2, 2))
    M[..., 0, 0], M[..., 0, 1] = cos[:, first], -sin[:, first]
    M[..., 1, 0], M[..., 1, 1] = sin[:, second], cos[:, second]
    return M


def rope_factor(attn: Attention) -> float:
    """ρ: the largest operator norm of a per-position RoPE map (1 for exact rotations; features beyond
    ``rotary_dim`` pass through, which has norm 1)."""
    if attn.rope is None:
        return 1.0
    M = rope_pair_matrices(attn)
    rho = float(np.max(np.linalg.norm(M, 2, axis=(-2, -1)))) if M.size else 0.0
    return max(rho, 1.0) if attn.rope.rotary_dim < attn.head_dim else rho


def column_count(mask: np.ndarray, seq_len: int) -> int:
    """``c = min(T, max column sum of the mask)`` (at least 1): the most queries that may attend to one key."""
    m = np.asarray(mask, bool)
    colsum = int(m.sum(axis=0).max()) if m.size else 0
    return max(1, min(int(seq_len), colsum))


def attention_on_normed(ir: BlockIR, seq_len: int) -> float:
    """§3 without the norm: the Lipschitz bound of ``Z -> Attn(Z)`` on ``T <= seq_len``, ``‖z_t‖ <= R``."""
    a = ir.attn
    R = norm_output_radius(ir.norm1)
    c = column_count(a.mask, seq_len)
    rho = rope_factor(a)
    hd, G = a.head_dim, a.n_heads // a.n_kv_heads
    Wq, Wk, Wv, Wo = (np.asarray(lin.weight, np.float64) for lin in (a.q, a.k, a.v, a.o))
    bq = np.zeros(Wq.shape[1]) if a.q.bias is None else np.asarray(a.q.bias, np.float64)
    bk = np.zeros(Wk.shape[1]) if a.k.bias is None else np.asarray(a.k.bias, np.float64)
    kv_norms = [(spectral_norm(Wk[:, kv * hd : (kv + 1) * hd]), spectral_norm(Wv[:, kv * hd : (kv + 1) * hd])) for kv in range(a.n_kv_heads)]
    L, L_with_o = [], []
    for h in range(a.n_heads):
        qs = slice(h * hd, (h + 1) * hd)
        kvs = slice((h // G) * hd, (h // G + 1) * hd)
        nq, (nk, nv) = spectral_norm(Wq[:, qs]), kv_norms[h // G]
        R_q = rho * (nq * R + float(np.linalg.norm(bq[qs])))
        # the shift k_j - b_k is free only when the logit is linear in k_j: not under RoPE or a soft-cap
        R_k = rho * (nk * R + float(np.linalg.norm(bk[kvs]))) if a.rope is not None or a.softcap is not None else nk * R
        value_path = math.sqrt(c) * nv
        softmax_path = abs(a.scale) * nv * R * (R_k * rho * nq + math.sqrt(c) * R_q * rho * nk)
        L_h = abs(float(a.head_gate[h])) * (value_path + softmax_path)
        L.append(L_h)
        L_with_o.append(spectral_norm(Wo[qs, :]) * L_h)
    return min(sum(L_with_o), spectral_norm(Wo) * math.sqrt(sum(x * x for x in L)))


def attention_bound(ir: BlockIR, min_scale: float, seq_len: int) -> float:
    """§3: ``K_attn`` = the attention on normed tokens times the norm1 bound."""
    K_z = attention_on_normed(ir, seq_len)
    K_n = norm_bound(ir.norm1, min_scale)
    if math.isinf(K_n):
        return 0.0 if K_z == 0 else math.inf
    return K_z * K_n


# ---------------------------------------------------------------------------------------------------
# §4 MLP: activations, their critical points, interval suprema
# ---------------------------------------------------------------------------------------------------

_K = math.sqrt(2.0 / math.pi)
_C = 0.044715


def _sigmoid(t: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-t))


def _Phi(t: np.ndarray) -> np.ndarray:
    return 0.5 * np.asarray(np.frompyfunc(math.erfc, 1, 1)(-np.asarray(t, np.float64) / math.sqrt(2.0)), np.float64)


def _phi(t: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)


def act(kind: str, t: Any) -> np.ndarray:
    """The activation ``a(t)``."""
    t = np.asarray(t, np.float64)
    if kind == "silu":
        return t * _sigmoid(t)
    if kind == "gelu":
        return t * _Phi(t)
    if kind == "gelu_tanh":
        return 0.5 * t * (1.0 + np.tanh(_K * (t + _C * t**3)))
    if kind == "relu":
        return np.maximum(t, 0.0)
    raise ValueError(f"unknown activation {kind!r}")


def dact(kind: str, t: Any) -> np.ndarray:
    """The derivative ``a'(t)`` (relu: 1 for t > 0, else 0)."""
    t = np.asarray(t, np.float64)
    if kind == "silu":
        s = _sigmoid(t)
        return s * (1.0 + t * (1.0 - s))
    if kind == "gelu":
        return _Phi(t) + t * _phi(t)
    if kind == "gelu_tanh":
        th = np.tanh(_K * (t + _C * t**3))
        return 0.5 * (1.0 + th) + 0.5 * t * (1.0 - th * th) * _K * (1.0 + 3.0 * _C * t * t)
    if kind == "relu":
        return (t > 0).astype(np.float64)
    raise ValueError(f"unknown activation {kind!r}")


def _ddact_sign(kind: str, t: float) -> float:
    """A function with the sign of ``a''(t)`` (the positive factors dropped)."""
    if kind == "silu":  # a'' = σ(1-σ)(2 + t(1-2σ))
        return 2.0 + t * (1.0 - 2.0 / (1.0 + math.exp(-t)))
    if kind == "gelu":  # a'' = φ(t)(2 - t²)
        return 2.0 - t * t
    if kind == "gelu_tanh":  # a'' = sech²(u)(u' - t tanh(u) u'² + t u''/2), u = k(t + c t³)
        up = _K * (1.0 + 3.0 * _C * t * t)
        return up - t * math.tanh(_K * (t + _C * t**3)) * up * up + 3.0 * _K * _C * t * t
    raise ValueError(kind)


def _root(f: Any, lo: float, hi: float) -> float:
    """Bisection for a sign change of ``f`` on ``[lo, hi]``."""
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (f(mid) > 0) == (flo > 0):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def critical_points(kind: str) -> tuple[float, float]:
    """``(t*, t_min)``: ``a'`` has its extrema at ``±t*`` (a'' changes sign there), ``a`` its minimum at ``t_min < 0``."""
    t_star = _root(lambda t: _ddact_sign(kind, t), 0.0, 10.0)
    t_min = _root(lambda t: float(dact(kind, t)), -10.0, 0.0)
    return t_star, t_min


_CRITICAL = {kind: critical_points(kind) for kind in ("silu", "gelu", "gelu_tanh")}


def dact_sup(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``sup |a'(t)|`` over ``[lo, hi]``: at an endpoint or at a critical point ``±t*`` inside."""
    if kind == "relu":
        return (hi > 0).astype(np.float64)
    t_star, _ = _CRITICAL[kind]
    best = np.maximum(np.abs(dact(kind, lo)), np.abs(dact(kind, hi)))
    for t in (t_star, -t_star):
        best = np.where((lo <= t) & (t <= hi), np.maximum(best, abs(float(dact(kind, t)))), best)
    return best


def act_sup(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``sup |a(t)|`` over ``[lo, hi]``: at an endpoint or at the minimum ``t_min`` inside."""
    best = np.maximum(np.abs(act(kind, lo)), np.abs(act(kind, hi)))
    if kind == "relu":
        return best
    _, t_min = _CRITICAL[kind]
    return np.where((lo <= t_min) & (t_min <= hi), np.maximum(best, abs(float(act(kind, t_min)))), best)


def _intervals(W: np.ndarray, b: np.ndarray | None, Z: np.ndarray, r_z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The range of each pre-activation ``z W[:, i] + b_i`` over the ball ``‖z - Z_k‖ <= r_z[k]``."""
    u = Z @ W + (0.0 if b is None else np.asarray(b, np.float64))
    width = r_z[:, None] * np.linalg.norm(W, axis=0)[None, :]
    return u - width, u + width


def mlp_spectral_norms(m: MLP) -> dict[str, float]:
    """``‖W_down‖``, ``‖W_up‖`` and, gated, ``‖W_gate‖`` and ``‖[W_gate W_up]‖``."""
    out = {"down": spectral_norm(m.down.weight), "up": spectral_norm(m.up.weight)}
    if m.gate is not None:
        out["gate"] = spectral_norm(m.gate.weight)
        out["gate_up"] = spectral_norm(np.concatenate([np.asarray(m.gate.weight, np.float64), np.asarray(m.up.weight, np.float64)], axis=1))
    return out


def mlp_jacobian_sup(m: MLP, Z: np.ndarray, r_z: np.ndarray, norms: dict[str, float] | None = None) -> np.ndarray:
    """§4, per ball ``B(Z_k, r_z[k])`` of normed tokens: the bound on ``sup ‖J_MLP‖`` over the ball."""
    n = mlp_spectral_norms(m) if norms is None else norms
    ulo, uhi = _intervals(np.asarray(m.up.weight, np.float64), m.up.bias, Z, r_z)
    if m.gate is None:  # plain: ‖W_down‖ · max_i sup|a'(u_i)| · ‖W_up‖
        return n["down"] * np.max(dact_sup(m.activation, ulo, uhi), axis=1) * n["up"]
    glo, ghi = _intervals(np.asarray(m.gate.weight, np.float64), m.gate.bias, Z, r_z)
    D1 = dact_sup(m.activation, glo, ghi) * np.maximum(np.abs(ulo), np.abs(uhi))  # sup|a'(g_i)| sup|u_i|
    D2 = act_sup(m.activation, glo, ghi)  # sup|a(g_i)|
    separate = np.max(D1, axis=1) * n["gate"] + np.max(D2, axis=1) * n["up"]
    joint = np.max(np.sqrt(D1 * D1 + D2 * D2), axis=1) * n["gate_up"]
    return n["down"] * np.minimum(separate, joint)


def mlp_bound(ir: BlockIR, min_scale: float, norms: dict[str, float] | None = None) -> float:
    """§4 analytic: the ball ``‖z‖ <= R`` (every output of norm2), times the norm2 bound on ``scale >= min_scale``."""
    K_z = float(mlp_jacobian_sup(ir.mlp, np.zeros((1, ir.d_model)), np.array([norm_output_radius(ir.norm2)]), norms)[0])
    K_n = norm_bound(ir.norm2, min_scale)
    return K_z * K_n if math.isfinite(K_z) and math.isfinite(K_n) else math.inf


def mlp_local_bounds(ir: BlockIR, centers: np.ndarray, radius: float, norms: dict[str, float] | None = None) -> np.ndarray:
    """§4 local, per centre ``c`` (a norm2 input): on ``B(c, radius)`` the norm2 bound ``L_n`` at
    ``scale(c) - radius/√d``, the normed ball ``B(norm2(c), L_n radius)``, the MLP Jacobian bound on it, times ``L_n``."""
    C = np.asarray(centers, np.float64).reshape(-1, ir.d_model)
    norm = ir.norm2
    wmax = float(np.max(np.abs(np.asarray(norm.weight, np.float64))))
    s_min = np.maximum(scales(norm, C) - radius / math.sqrt(ir.d_model), 0.0)
    den = np.sqrt(s_min * s_min + eps_eff(norm))
    with np.errstate(divide="ignore"):
        L_n = np.where(den > 0, wmax / den, math.inf if wmax > 0 else 0.0)
    out = np.full(C.shape[0], math.inf)
    finite = np.isfinite(L_n)
    if np.any(finite):
        Z = norm_forward(norm, C[finite])
        out[finite] = mlp_jacobian_sup(ir.mlp, Z, L_n[finite] * radius, norms) * L_n[finite]
    return out


# ---------------------------------------------------------------------------------------------------
# §5 Whole blocks
# ---------------------------------------------------------------------------------------------------


def _rope(X: np.ndarray, attn: Attention) -> np.ndarray:
    """RoPE on one head's ``[T, hd]`` queries or keys at positions ``0..T-1``."""
    if attn.rope is None:
        return X
    M = rope_pair_matrices(attn)[: X.shape[0]]  # [T, r/2, 2, 2]
    r = attn.rope
    half = r.rotary_dim // 2
    if r.style == "half":
        first, second = np.arange(half), np.arange(half) + half
    else:
        first, second = np.arange(0, r.rotary_dim, 2), np.arange(1, r.rotary_dim, 2)
    out = X.copy()
    out[:, first] = M[..., 0, 0] * X[:, first] + M[..., 0, 1] * X[:, second]
    out[:, second] = M[..., 1, 0] * X[:, first] + M[..., 1, 1] * X[:, second]
    return out


def attention_forward(ir: BlockIR, X: np.ndarray) -> np.ndarray:
    """``Attn(norm1(X))`` for one sequence ``[T, d]`` at positions ``0..T-1``, float64, head by head."""
    a = ir.attn
    T = X.shape[0]
    Z = norm_forward(ir.norm1, X)
    hd, G = a.head_dim, a.n_heads // a.n_kv_heads

    def proj(lin: Any) -> np.ndarray:
        y = Z @ np.asarray(lin.weight, np.float64)
        return y if lin.bias is None else y + np.asarray(lin.bias, np.float64)

    Q, K, V = proj(a.q), proj(a.k), proj(a.v)
    allowed = np.asarray(a.mask, bool)[:T, :T]
    heads = []
    for h in range(a.n_heads):
        kv = h // G
        q = _rope(Q[:, h * hd : (h + 1) * hd], a)
        k = _rope(K[:, kv * hd : (kv + 1) * hd], a)
        s = np.where(allowed, a.scale * (q @ k.T), -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        heads.append(float(a.head_gate[h]) * (p @ V[:, kv * hd : (kv + 1) * hd]))
    out = np.concatenate(heads, axis=1) @ np.asarray(a.o.weight, np.float64)
    return out if a.o.bias is None else out + np.asarray(a.o.bias, np.float64)


def norm2_inputs(ir: BlockIR, seqs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``h = x + Attn(norm1(x))`` (sequential) or ``x`` (parallel), per traced sequence."""
    if ir.residual == "parallel":
        return list(seqs)
    return [x + attention_forward(ir, x) for x in seqs]


def _combine(residual: str, k_attn: float, k_mlp: float) -> float:
    """``(1 + K_attn)(1 + K_mlp)`` (sequential) or ``1 + K_attn + K_mlp`` (parallel)."""
    if residual == "sequential":
        return (1.0 + k_attn) * (1.0 + k_mlp)
    return 1.0 + k_attn + k_mlp


def certified_part(ir: BlockIR, inputs: Sequence[Any], settings: BoundSettings) -> dict[str, Any]:
    """The reference values of every certified number of a bounds.json record (``inf`` = no finite bound).

    ``{"upper": {field: value}, "hybrid_input_radius", "min_scale1", "min_scale2", "seq_len", "tokens",
    "residual", "spectral": {matrix: σ_max}}``.
    """
    seqs = [np.asarray(x, np.float64).reshape(-1, ir.d_model) for x in inputs]
    if not seqs or any(s.shape[0] == 0 for s in seqs):
        raise ValueError("no traced tokens")
    T = max(s.shape[0] for s in seqs)
    X = np.concatenate(seqs)
    if uncovered(ir):  # no finite bound is derived for these operators: every upper bound is infinite
        upper = dict.fromkeys(UPPER_FIELDS, math.inf)
        r_in = 0.0 if ir.residual == "sequential" else float(settings.radius)
        return {"upper": upper, "hybrid_input_radius": r_in, "min_scale1": 0.0, "min_scale2": 0.0, "seq_len": T,
                "tokens": int(X.shape[0]), "residual": ir.residual, "spectral": _spectral(ir, mlp_spectral_norms(ir.mlp))}
    H = np.concatenate(norm2_inputs(ir, seqs))
    shrink = settings.margin * (1.0 - MIN_SCALE_SHRINK)
    s1 = shrink * float(np.min(scales(ir.norm1, X)))
    s2 = shrink * float(np.min(scales(ir.norm2, H)))
    k_attn = attention_bound(ir, s1, T)
    mlp_norms = mlp_spectral_norms(ir.mlp)
    k_mlp = mlp_bound(ir, s2, mlp_norms)
    k_local = float(np.max(mlp_local_bounds(ir, H, settings.radius, mlp_norms)))
    upper = {
        "K_norm1": norm_bound(ir.norm1, s1),
        "K_attn": k_attn,
        "K_mlp": k_mlp,
        "K_mlp_local": k_local,
        "analytic_upper_bound": _combine(ir.residual, k_attn, k_mlp),
        "hybrid_upper_bound": _combine(ir.residual, k_attn, k_local),
    }
    assert set(upper) == set(UPPER_FIELDS)
    if ir.residual == "sequential":
        r_in = settings.radius / (1.0 + k_attn) if math.isfinite(k_attn) else 0.0
    else:
        r_in = float(settings.radius)
    return {"upper": upper, "hybrid_input_radius": r_in, "min_scale1": s1, "min_scale2": s2, "seq_len": T,
            "tokens": int(X.shape[0]), "residual": ir.residual, "spectral": _spectral(ir, mlp_norms)}


def uncovered(ir: BlockIR) -> list[str]:
    """The operators of ``ir`` the bounds above do not cover (a missing pre-norm, post-norms, QK-norm): for such a
    block the only sound claim is no finite bound. A logit soft-cap is covered: ``c tanh(s / c)`` is 1-Lipschitz
    and shrinks every logit, so the softmax path's bound holds with the unshifted ``R_k``."""
    a = ir.attn
    fields = {"norm1": ir.norm1 is None, "norm2": ir.norm2 is None, "post_attn_norm": ir.post_attn_norm is not None,
              "post_mlp_norm": ir.post_mlp_norm is not None, "q_norm": a.q_norm is not None, "k_norm": a.k_norm is not None}
    return [name for name, hit in fields.items() if hit]


def _spectral(ir: BlockIR, mlp_norms: dict[str, float]) -> dict[str, Any]:
    known = {"mlp." + k: v for k, v in mlp_norms.items()}
    spectral = {}
    for name in SPECTRAL_MATRICES:
        part, field = name.split(".")
        lin = getattr(getattr(ir, part), field, None)
        if lin is not None:
            sigma = known[name] if name in known else spectral_norm(lin.weight)
            spectral[name] = {"shape": list(np.shape(lin.weight)), "sigma": sigma}
    return spectral
