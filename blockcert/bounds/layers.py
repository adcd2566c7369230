"""Lipschitz bounds of the norm layers and of attention, each on its stated region (docs/bounds.md §2-§3)."""

from __future__ import annotations

import math
from fractions import Fraction

import attrs
import numpy as np

from blockcert.bounds.rounding import F, f64, fup, norm_up, sqrt_down, sqrt_up
from blockcert.bounds.spectral import spectral_upper_bound
from blockcert.ir import Attention, BlockIR, Norm


@attrs.frozen
class LipschitzBound:
    """A certified Lipschitz upper bound ``value`` that holds on ``region`` (and only there).

    ``parts`` records the ingredients (spectral norms, radii, ...), all themselves upper bounds.
    """

    value: float
    region: str
    parts: dict[str, float] = attrs.field(factory=dict)


def eps_eff(norm: Norm) -> Fraction:
    """The norm's eps, taken as min(eps, float32(eps)) so a float32 replay's eps is covered too."""
    return min(F(norm.eps), F(float(np.float32(norm.eps))))


def scale_word(norm: Norm) -> str:
    return "rms(x)" if norm.kind == "rmsnorm" else "std(x) (biased, centred)"


def norm_bound(norm: Norm, min_scale: float) -> LipschitzBound:
    """Lipschitz bound of a norm layer on the region ``{x : scale(x) >= min_scale}``.

    RMSNorm ``y = w * x / s(x)``, ``s(x) = sqrt(mean(x^2) + eps)``; LayerNorm applies the same map to the
    centred ``C x`` (``C = I - 11^T/d``, an orthogonal projection) and adds a bias; ``scale`` is
    ``rms(x) = ||x|| / sqrt(d)`` resp. ``std(x) = ||C x|| / sqrt(d)``.

    Bound: ``max|w| / sqrt(min_scale^2 + eps)``. The Jacobian is
    ``J = diag(w) / s * (I - x x^T / (d s^2))`` and ``0 <= x x^T/(d s^2) <= I`` (``d s^2 >= ||x||^2``), so
    ``||J|| <= max|w| / s``. The region is not convex, so we argue on the map itself: lift
    ``x -> (x, sqrt(d eps))`` (an isometry), normalise (``v -> v/||v||`` is ``1/r``-Lipschitz outside the
    ball of radius ``r``: the radial projection onto that ball is 1-Lipschitz), drop the last coordinate,
    multiply by ``sqrt(d)`` and by ``diag(w)``. With ``||(x, sqrt(d eps))|| >= sqrt(d) sqrt(min_scale^2 + eps)``
    this gives the bound for *any two points* of the region, not only along segments. LayerNorm: ``C`` is
    1-Lipschitz and maps the region into the RMSNorm region. ``eps`` is taken as
    ``min(eps, float32(eps))``. With ``eps > 0`` and ``min_scale = 0`` the bound is global.
    """
    if not (math.isfinite(min_scale) and min_scale >= 0):
        raise ValueError(f"min_scale must be finite and >= 0, got {min_scale}")
    wmax = float(np.max(np.abs(f64(norm.weight))))
    den2 = F(min_scale) ** 2 + eps_eff(norm)
    if den2 == 0:
        value = math.inf if wmax > 0 else 0.0
    else:
        value = fup(F(wmax) / F(sqrt_down(den2)))
    region = f"{scale_word(norm)} >= {min_scale!r} for every token"
    return LipschitzBound(value, region, {"max_abs_weight": wmax, "min_scale": float(min_scale), "eps": float(eps_eff(norm))})


def norm_output_radius(norm: Norm) -> float:
    """Upper bound on ||norm(x)|| over ALL x: ||w * u|| <= max|w| ||u|| <= max|w| sqrt(d), plus ||b||."""
    d = norm.weight.shape[0]
    wmax = float(np.max(np.abs(f64(norm.weight))))
    r = F(wmax) * F(sqrt_up(d))
    if norm.bias is not None:
        r += F(norm_up(f64(norm.bias)))
    return fup(r)


# ---------------------------------------------------------------------------------------------------
# 3. Attention
# ---------------------------------------------------------------------------------------------------


def _rope_factor(attn: Attention) -> float:
    """Upper bound on the operator norm of every per-position RoPE map (1 for an exact rotation)."""
    if attn.rope is None:
        return 1.0
    r = attn.rope
    cos, sin = f64(r.cos), f64(r.sin)
    half = r.rotary_dim // 2
    if r.style == "half":  # pairs (i, i+half): [[cos_i, -sin_i], [sin_{i+h}, cos_{i+h}]]
        a, b, c, d = cos[:, :half], -sin[:, :half], sin[:, half:], cos[:, half:]
    else:  # pairs (2i, 2i+1): [[cos_2i, -sin_2i], [sin_2i+1, cos_2i+1]]
        a, b, c, d = cos[:, 0::2], -sin[:, 0::2], sin[:, 1::2], cos[:, 1::2]
    f2 = a * a + b * b + c * c + d * d
    det = a * d - b * c
    disc = np.sqrt(np.maximum(f2 * f2 - 4 * det * det, 0.0))
    smax = np.sqrt((f2 + disc) / 2)  # exact 2x2 spectral norm formula, evaluated in float64
    rho = float(np.max(smax)) * (1 + 1e-12) + 1e-300 if smax.size else 0.0
    if r.rotary_dim < attn.head_dim:
        rho = max(rho, 1.0)  # the unrotated features pass through
    return fup(F(rho) * (1 + Fraction(1, 10**9)))  # slack for the 2x2 formula's cancellation


def _max_column_count(mask: np.ndarray, seq_len: int) -> int:
    """c = max number of queries that may attend to one key: min(T, max column sum of the mask table)."""
    colsum = int(np.max(np.sum(np.asarray(mask, dtype=bool), axis=0))) if mask.size else 0
    return max(1, min(seq_len, colsum))


def spec(W: np.ndarray) -> float:
    return spectral_upper_bound(W).value


def attention_bound(
    ir: BlockIR,
    *,
    min_scale: float,
    seq_len: int | None = None,
    z_radius: float | None = None,
) -> LipschitzBound:
    """Lipschitz bound of the attention sublayer ``X -> Attn(norm1(X))`` (sequences, Frobenius norm).

    Region: sequences of ``T <= seq_len`` tokens (default ``ir.n_ctx``) at distinct positions, every
    token with ``scale(x_t) >= min_scale`` (the norm1 region of :func:`norm_bound`), and, if
    ``z_radius`` is given, every normed token with ``||norm1(x_t)|| <= z_radius`` (otherwise
    ``R = max|w1| sqrt(d) + ||b1||`` is used, which holds for every input).

    Derivation, per query head ``h`` reading KV head ``kv`` (``W_Q^h``, ``W_K``, ``W_V`` the ``d x hd``
    column blocks, ``W_O^h`` the ``hd x d`` row block; ``q_i = Rot_i (W_Q^T z_i + b_q)`` etc. with RoPE
    maps of norm ``<= rho``; ``P = softmax(scale * Q K^T + mask)`` row-stochastic; ``O = P V``):

    ``dO = P dV + dP V``. *Value path*: ``||P dV||_F <= ||P||_2 ||dV||_F`` and
    ``||P||_2 <= sqrt(||P||_1 ||P||_inf) = sqrt(c)``, ``c`` = the most queries that may attend to one
    key (``<= T``; attention sinks make this tight), so ``<= sqrt(c) ||W_V|| ||dZ||``. *Softmax path*:
    row ``i`` is ``sum_j p_ij (v_j - vbar_i) t_ij`` with ``t_ij = scale (dq_i^T (k_j - a) + q_i^T dk_j)``
    (shifting by a constant is free because ``sum_j p_ij (v_j - vbar_i) = 0``); Cauchy-Schwarz with
    weights ``p_ij`` and ``sum_j p_ij ||v_j - vbar_i||^2 <= max_j ||v_j - b_v||^2 <= (||W_V|| R)^2``, then
    Minkowski over ``(i, j)`` with ``sum_i p_ij <= c`` give
    ``||dP V||_F <= |scale| ||W_V|| R (R_k rho ||W_Q|| + sqrt(c) R_q rho ||W_K||) ||dZ||_F`` with
    ``R_q = rho (||W_Q|| R + ||b_q||)``, ``R_k = ||W_K|| R`` (no RoPE: take ``a = b_k``) or
    ``rho (||W_K|| R + ||b_k||)`` (RoPE). So head ``h`` is ``L_h = |gate_h| (value + softmax)``-Lipschitz
    into ``R^{T x hd}``; the heads combine as ``min(sum_h ||W_O^h|| L_h, ||W_O|| sqrt(sum_h L_h^2))``;
    the region in ``Z`` (each ``||z_t|| <= R``) is convex, so the Jacobian bound is a Lipschitz bound
    there; finally multiply by the norm1 bound. Note: the common per-head bound
    ``||W_V|| ||W_O|| + 2 scale ||W_Q|| ||W_K|| ||W_V|| ||W_O|| R^2`` is *not* sound in the Frobenius
    norm over sequences: it misses the ``sqrt(c)`` factors (see tests).
    """
    a = ir.attn
    T = ir.n_ctx if seq_len is None else int(seq_len)
    if T < 1:
        raise ValueError(f"seq_len must be >= 1, got {T}")
    norm1 = norm_bound(ir.norm1, min_scale)
    R_global = norm_output_radius(ir.norm1)
    R = R_global if z_radius is None else min(R_global, float(z_radius))
    if not (math.isfinite(R) and R >= 0):
        raise ValueError(f"z_radius must be finite and >= 0, got {z_radius}")
    c = _max_column_count(a.mask, T)
    sqrt_c = F(sqrt_up(c))
    rho = F(_rope_factor(a))
    scale = abs(F(a.scale))
    G = a.n_heads // a.n_kv_heads
    hd = a.head_dim
    Wq, Wk, Wv, Wo = f64(a.q.weight), f64(a.k.weight), f64(a.v.weight), f64(a.o.weight)
    kv_norms = {}
    for kv in range(a.n_kv_heads):
        sl = slice(kv * hd, (kv + 1) * hd)
        nk, nv = F(spec(Wk[:, sl])), F(spec(Wv[:, sl]))
        bk = F(norm_up(f64(a.k.bias)[sl])) if a.k.bias is not None else Fraction(0)
        kv_norms[kv] = (nk, nv, bk)
    R_F = F(R)
    per_head = []  # L_h without W_O
    per_head_with_o = []
    for h in range(a.n_heads):
        sl = slice(h * hd, (h + 1) * hd)
        nq = F(spec(Wq[:, sl]))
        bq = F(norm_up(f64(a.q.bias)[sl])) if a.q.bias is not None else Fraction(0)
        nk, nv, bk = kv_norms[h // G]
        Rq = rho * (nq * R_F + bq)
        # shifting k_j by b_k is free only when the logit is linear in k_j: not under RoPE or a soft-cap, whose
        # derivative c tanh'(s / c) in (0, 1] depends on j (it only shrinks each t_ij, so the rest holds)
        Rk = rho * (nk * R_F + bk) if a.rope is not None or a.softcap is not None else nk * R_F
        value_path = sqrt_c * nv
        softmax_path = scale * nv * R_F * (Rk * rho * nq + sqrt_c * Rq * rho * nk)
        gate = abs(F(float(a.head_gate[h])))
        Lh = gate * (value_path + softmax_path)
        per_head.append(Lh)
        per_head_with_o.append(F(spec(Wo[sl, :])) * Lh)
    by_head_sum = sum(per_head_with_o, Fraction(0))
    joint = F(spec(Wo)) * F(sqrt_up(sum((L * L for L in per_head), Fraction(0))))
    K_z = min(by_head_sum, joint)
    value = fup(K_z * F(norm1.value)) if math.isfinite(norm1.value) else (0.0 if K_z == 0 else math.inf)
    region = (
        f"sequences of T <= {T} tokens at distinct positions; {norm1.region}; "
        f"||norm1(x_t)|| <= {R!r} ({'given' if z_radius is not None and float(z_radius) < R_global else 'holds for all x'})"
    )
    parts = {
        "norm1": norm1.value,
        "attention_on_normed": fup(K_z),
        "z_radius": R,
        "max_column_count": float(c),
        "rope_factor": float(rho),
    }
    return LipschitzBound(value, region, parts)
