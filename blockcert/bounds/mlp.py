"""Lipschitz bounds of the MLP: activations evaluated without cancellation, the global bound on a region and the local bound on balls around traced inputs (docs/bounds.md §4)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from blockcert.bounds.layers import LipschitzBound, eps_eff, norm_bound, norm_output_radius, spec
from blockcert.bounds.rounding import REL_SLACK, F, arr_down, arr_up, f64, fup, gamma, norm_up, sqrt_down
from blockcert.ir import MLP, BlockIR, Norm

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715
_erfc_ufunc = np.frompyfunc(math.erfc, 1, 1)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-t))


def _std_normal_cdf(t: np.ndarray) -> np.ndarray:
    """Phi(t) = erfc(-t/sqrt 2)/2: no cancellation in the left tail (unlike (1 + erf)/2)."""
    return 0.5 * _erfc_ufunc(-t / math.sqrt(2.0)).astype(np.float64)


# The activations below are evaluated with cancellation-free formulas (sigma(-t) for 1 - sigma(t),
# erfc for the normal CDF, 2 sigma(2u) for 1 + tanh(u), 4 sigma(2u) sigma(-2u) for sech^2(u)). Each
# returns (value, magnitude): value is a sum of at most two terms, each computed with a relative error
# of a few ulps, and magnitude is the sum of the terms' absolute values, so |error| <= 1e-12 magnitude.


def _act_terms(kind: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if kind == "silu":
            v = t * _sigmoid(t)
        elif kind == "gelu":
            v = t * _std_normal_cdf(t)
        elif kind == "gelu_tanh":
            v = t * _sigmoid(2.0 * _SQRT_2_OVER_PI * (t + _GELU_C * t**3))  # 0.5 t (1 + tanh u)
        elif kind == "relu":
            v = np.maximum(t, 0.0)
        else:
            raise ValueError(f"unknown activation {kind!r}")
    return v, np.abs(v)


def _dact_terms(kind: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if kind == "silu":  # a' = s(t) + t s(t) s(-t)
            first = _sigmoid(t)
            second = t * first * _sigmoid(-t)
        elif kind == "gelu":  # a' = Phi(t) + t phi(t)
            first = _std_normal_cdf(t)
            second = t * np.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        elif kind == "gelu_tanh":  # a' = (1 + tanh u)/2 + t sech^2(u) u' / 2
            u = _SQRT_2_OVER_PI * (t + _GELU_C * t**3)
            first = _sigmoid(2.0 * u)
            sech2 = 4.0 * first * _sigmoid(-2.0 * u)
            du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * t * t)
            second = np.where(sech2 == 0.0, 0.0, 0.5 * t * sech2 * du)
        elif kind == "relu":
            v = (t > 0).astype(np.float64)
            return v, v
        else:
            raise ValueError(f"unknown activation {kind!r}")
    return first + second, np.abs(first) + np.abs(second)


def act(kind: str, t: np.ndarray) -> np.ndarray:
    """Activation value in float64 (accurate formulas)."""
    return _act_terms(kind, t)[0]


def dact(kind: str, t: np.ndarray) -> np.ndarray:
    """Activation derivative in float64 (accurate formulas)."""
    return _dact_terms(kind, t)[0]


def _ddact_sign_fn(kind: str) -> Callable[[float], float]:
    """A function with the sign of the activation's second derivative on t > 0."""
    if kind == "silu":
        return lambda t: 2.0 - t * math.tanh(t / 2.0)  # a'' = s(1-s)(2 - t tanh(t/2))
    if kind == "gelu":
        return lambda t: 2.0 - t * t  # a'' = phi(t)(2 - t^2)
    if kind == "gelu_tanh":
        k, c = _SQRT_2_OVER_PI, _GELU_C

        def h(t: float) -> float:  # a'' = sech^2(u) [u' + t u''/2 - t tanh(u) u'^2]
            u = k * (t + c * t**3)
            du = k * (1 + 3 * c * t * t)
            return du + 0.5 * t * (6 * k * c * t) - t * math.tanh(u) * du * du

        return h
    raise ValueError(kind)


def _bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    flo = f(lo)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if (f(mid) > 0) == (flo > 0):
            lo, flo = mid, f(mid)
        else:
            hi = mid
    return 0.5 * (lo + hi)


@attrs.frozen
class _ActConstants:
    """Shape of a smooth activation a (silu, gelu, gelu_tanh), all with a'(-t) = 1 - a'(t):

    a' is decreasing on (-inf, -t_star], increasing on [-t_star, t_star], decreasing on [t_star, inf),
    so sup |a'| over an interval is attained at an endpoint or at +-t_star; a has a single minimum at
    t_min < 0 (a decreasing before, increasing after), so sup |a| is at an endpoint or at t_min.
    """

    t_star: float
    dmax: float  # >= a'(t_star) = max a'
    dmin_abs: float  # >= |a'(-t_star)| = max a' - 1
    t_min: float
    amin_abs: float  # >= |a(t_min)|


def _constants(kind: str) -> _ActConstants:
    t_star = _bisect(_ddact_sign_fn(kind), 0.5, 10.0)
    dmax = float(dact(kind, np.array([t_star]))[0])
    t_min = _bisect(lambda t: float(dact(kind, np.array([t]))[0]), -5.0, -0.1)
    amin = abs(float(act(kind, np.array([t_min]))[0]))
    slack = 1e-9  # a' is flat at t_star and a at t_min: a location error of 1e-8 moves the value by ~1e-16
    return _ActConstants(t_star, dmax + slack, dmax - 1.0 + slack, t_min, amin + slack)


ACT_CONSTANTS = {kind: _constants(kind) for kind in ("silu", "gelu", "gelu_tanh")}
_CRIT_WIDTH = 1e-6  # critical points are located to ~1e-15; widen the "contains" test generously


def _abs_up(value: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """|exact value| <= |computed value| + 1e-12 * magnitude (see _act_terms)."""
    return arr_up(np.abs(value) + REL_SLACK * magnitude + 1e-300)


def _contains(lo: np.ndarray, hi: np.ndarray, t: float) -> np.ndarray:
    return (lo <= t + _CRIT_WIDTH) & (hi >= t - _CRIT_WIDTH)


def dact_absmax(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Upper bound on sup |a'(t)| over each interval [lo, hi] (elementwise)."""
    if kind == "relu":
        return (hi > 0).astype(np.float64)  # a' in {0, 1}; 0 on (lo, hi) when hi <= 0
    k = ACT_CONSTANTS[kind]
    v = np.maximum(_abs_up(*_dact_terms(kind, lo)), _abs_up(*_dact_terms(kind, hi)))
    v = np.where(_contains(lo, hi, k.t_star), np.maximum(v, k.dmax), v)
    v = np.where(_contains(lo, hi, -k.t_star), np.maximum(v, k.dmin_abs), v)
    return v


def act_absmax(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Upper bound on sup |a(t)| over each interval [lo, hi] (elementwise)."""
    if kind == "relu":
        return arr_up(np.maximum(hi, 0.0))
    k = ACT_CONSTANTS[kind]
    v = np.maximum(_abs_up(*_act_terms(kind, lo)), _abs_up(*_act_terms(kind, hi)))
    return np.where(_contains(lo, hi, k.t_min), np.maximum(v, k.amin_abs), v)


@attrs.frozen
class _MLPNorms:
    down: float
    up: float
    gate: float  # 0 for a plain MLP
    gate_up: float  # ||[W_gate W_up]||, inf for a plain MLP
    up_cols: np.ndarray  # ||W_up[:, i]||, rounded up
    gate_cols: np.ndarray | None


def _col_norms_up(W: np.ndarray) -> np.ndarray:
    d = W.shape[0]
    ss = np.einsum("ij,ij->j", W, W)
    g = float(fup(1 / (1 - gamma(d))))
    return arr_up(np.sqrt(arr_up(arr_up(ss * g) + d * 5e-324)))


def mlp_norms(m: MLP) -> _MLPNorms:
    Wu, Wd = f64(m.up.weight), f64(m.down.weight)
    if m.gate is None:
        return _MLPNorms(spec(Wd), spec(Wu), 0.0, math.inf, _col_norms_up(Wu), None)
    Wg = f64(m.gate.weight)
    return _MLPNorms(spec(Wd), spec(Wu), spec(Wg), spec(np.concatenate([Wg, Wu], axis=1)), _col_norms_up(Wu), _col_norms_up(Wg))


def _preact_intervals(lin_w: np.ndarray, lin_b: np.ndarray | None, z: np.ndarray, z_norm: np.ndarray, r_z: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intervals containing (z' W + b)_i for all ||z' - z|| <= r_z: centre +- (r_z ||col_i|| + rounding)."""
    d = lin_w.shape[0]
    u = z @ lin_w  # [N, f]
    babs = np.zeros(lin_w.shape[1]) if lin_b is None else np.abs(f64(lin_b))
    if lin_b is not None:
        u = u + f64(lin_b)
    g = float(fup(gamma(d + 1)))
    # |fl(zW + b) - (zW + b)| <= gamma_{d+1} (|z||W| + |b|) <= gamma_{d+1} (||z|| ||col_i|| + |b_i|)
    width = arr_up(r_z[:, None] * cols[None, :])
    width = arr_up(width + arr_up(g * arr_up(arr_up(z_norm[:, None] * cols[None, :]) + babs[None, :])))
    return arr_down(u - width), arr_up(u + width)


def _mlp_jacobian_bounds(m: MLP, norms: _MLPNorms, z: np.ndarray, r_z: np.ndarray) -> np.ndarray:
    """Per centre: upper bound on sup ||J_MLP(z')|| over ||z' - z_k|| <= r_z[k] (MLP only, no norm)."""
    z_norm = arr_up(np.sqrt(arr_up(np.einsum("ij,ij->i", z, z) * (1 + 4 * z.shape[1] * 2.0**-53))))
    ulo, uhi = _preact_intervals(f64(m.up.weight), m.up.bias, z, z_norm, r_z, norms.up_cols)
    if m.gate is None:
        dmax = np.max(dact_absmax(m.activation, ulo, uhi), axis=1)  # [N]
        return arr_up(arr_up(dmax * norms.down) * norms.up)
    assert norms.gate_cols is not None
    glo, ghi = _preact_intervals(f64(m.gate.weight), m.gate.bias, z, z_norm, r_z, norms.gate_cols)
    umax = np.maximum(np.abs(ulo), np.abs(uhi))
    D1 = arr_up(dact_absmax(m.activation, glo, ghi) * umax)  # |a'(g_i) u_i|
    D2 = act_absmax(m.activation, glo, ghi)  # |a(g_i)|
    # J = W_down^T [diag(D1) W_gate^T + diag(D2) W_up^T]  (per point, |.| bounded by the intervals)
    sep = arr_up(arr_up(np.max(D1, axis=1) * norms.gate) + arr_up(np.max(D2, axis=1) * norms.up))
    joint = arr_up(np.max(arr_up(np.sqrt(arr_up(arr_up(D1 * D1) + arr_up(D2 * D2)))), axis=1) * norms.gate_up)
    return arr_up(np.minimum(sep, joint) * norms.down)


def mlp_bound(ir: BlockIR, *, min_scale: float, z_radius: float | None = None) -> LipschitzBound:
    """Analytic Lipschitz bound of ``x -> MLP(norm2(x))`` (per token, hence per sequence) on a region.

    Region: every token with ``scale(x) >= min_scale`` (norm2 region), and ``||norm2(x)|| <= R``
    (``R = max|w2| sqrt(d) + ||b2||`` holds for all x; a smaller ``z_radius`` restricts the region).
    Over the ball ``||z|| <= R`` each pre-activation lies in ``b_i +- R ||W[:, i]||``; the Jacobian is
    ``W_down^T diag(a'(u)) W_up^T`` (plain) or ``W_down^T [diag(a'(g) u) W_gate^T + diag(a(g)) W_up^T]``
    (gated), bounded by ``||W_down|| max_i |D_i| ||W_up||`` resp.
    ``||W_down|| min(max|D1| ||W_gate|| + max|D2| ||W_up||, max_i sqrt(D1_i^2 + D2_i^2) ||[W_gate W_up]||)``
    with ``D1 = sup|a'(g_i)| sup|u_i|``, ``D2 = sup|a(g_i)|`` over the intervals; times the norm2 bound.
    """
    return mlp_bound_with_norms(ir, min_scale, z_radius, mlp_norms(ir.mlp))


def mlp_bound_with_norms(ir: BlockIR, min_scale: float, z_radius: float | None, norms: _MLPNorms) -> LipschitzBound:
    n2 = norm_bound(ir.norm2, min_scale)
    R_global = norm_output_radius(ir.norm2)
    R = R_global if z_radius is None else min(R_global, float(z_radius))
    K = float(_mlp_jacobian_bounds(ir.mlp, norms, np.zeros((1, ir.d_model)), np.array([R]))[0])
    value = fup(F(K) * F(n2.value)) if math.isfinite(n2.value) and math.isfinite(K) else math.inf
    region = f"{n2.region} (norm2 input); ||norm2(x)|| <= {R!r}"
    return LipschitzBound(value, region, {"norm2": n2.value, "mlp_on_normed": K, "z_radius": R, "down": norms.down, "up": norms.up, "gate": norms.gate})


@attrs.frozen
class LocalMLPBound:
    """Local Lipschitz bound of ``x -> MLP(norm2(x))`` on each ball ``B(c_k, radius)``.

    ``per_center[k]`` holds for any two points of ``B(c_k, radius)``; ``value = max_k per_center[k]``.
    """

    value: float
    per_center: np.ndarray
    radius: float
    region: str
    parts: dict[str, float] = attrs.field(factory=dict)


def _norm_forward(norm: Norm, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(norm(x) in float64, scale(x) rounded down) for rows of x."""
    d = x.shape[1]
    if norm.kind == "layernorm":
        xc = x - x.mean(axis=1, keepdims=True)
    else:
        xc = x
    ms = np.einsum("ij,ij->i", xc, xc) / d
    eps = float(norm.eps)
    y = xc / np.sqrt(ms + eps)[:, None] * f64(norm.weight)
    if norm.bias is not None:
        y = y + f64(norm.bias)
    # float64 evaluation error of the scale: relative gamma_{d+4}, plus centring error for layernorm
    kappa = 4 * float(fup(gamma(d + 8)))
    rms_x = np.sqrt(np.einsum("ij,ij->i", x, x) / d)
    scale_down = arr_down(np.sqrt(ms) - kappa * (np.sqrt(ms) + rms_x))
    return y, np.maximum(scale_down, 0.0)


def mlp_local_bound(ir: BlockIR, centers: Any, radius: float, *, chunk: int = 256) -> LocalMLPBound:
    """Sound local Lipschitz bound of ``x -> MLP(norm2(x))`` on the balls ``B(c_k, radius)`` (l2, per token).

    ``centers``: ``[N, d]`` (or ``[..., d]``) norm2 *inputs* (``h = x + attn`` for sequential blocks,
    ``x`` for parallel ones). For each centre:

    1. norm2 on the ball: ``scale(x) >= scale(c) - radius / sqrt(d)`` there, so :func:`norm_bound` with
       that ``min_scale`` is its Lipschitz constant ``L_n`` (inf if the ball reaches scale 0 and eps = 0);
       hence ``norm2(x) in B(norm2(c), L_n radius)`` (plus a float64 evaluation slack).
    2. Pre-activations ``u_i = z W[:, i] + b_i`` over that ball lie in ``u_i(c) +- r_z ||W[:, i]||``
       (exact range of a linear functional over a ball, widened by the matmul rounding bound).
    3. ``sup |a'|`` and ``sup |a|`` over each interval, exactly from the activation's shape (endpoints
       and the two critical points, see ``_ActConstants``) with outward slack.
    4. Jacobian combination as in :func:`mlp_bound`, times ``L_n``.

    Each ball is convex, so the Jacobian bound is a Lipschitz bound for pairs within one ball; it says
    nothing about pairs in different balls. Stand-in for the paper's auto-LiRPA numbers (§6.7).
    """
    return mlp_local_bound_with_norms(ir, centers, radius, chunk, None)


def mlp_local_bound_with_norms(ir: BlockIR, centers: Any, radius: float, chunk: int, norms: _MLPNorms | None) -> LocalMLPBound:
    if not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be finite and >= 0, got {radius}")
    C = f64(centers).reshape(-1, ir.d_model)
    if C.shape[0] == 0:
        raise ValueError("no centres given")
    if not np.all(np.isfinite(C)):
        raise ValueError("centres have non-finite entries")
    if norms is None:
        norms = mlp_norms(ir.mlp)
    d = ir.d_model
    norm = ir.norm2
    wmax = float(np.max(np.abs(f64(norm.weight))))
    eps = float(eps_eff(norm))
    r_shift = float(fup(F(radius) / F(sqrt_down(d))))
    kappa = 4 * float(fup(gamma(d + 8)))
    bnorm = norm_up(f64(norm.bias)) if norm.bias is not None else 0.0
    out = np.empty(C.shape[0])
    Ln_all = np.empty(C.shape[0])
    for start in range(0, C.shape[0], chunk):
        x = C[start : start + chunk]
        z, scale_c = _norm_forward(norm, x)
        s_min = np.maximum(arr_down(scale_c - r_shift), 0.0)
        den2 = arr_down(arr_down(s_min * s_min) + eps)
        with np.errstate(divide="ignore"):
            Ln = np.where(den2 > 0, arr_up(wmax / arr_down(np.sqrt(den2))), math.inf if wmax > 0 else 0.0)
        z_norm = np.sqrt(np.einsum("ij,ij->i", z, z))
        r_z = arr_up(arr_up(Ln * radius) + kappa * (z_norm + bnorm) + 1e-300)
        finite = np.isfinite(r_z)
        K = np.full(x.shape[0], math.inf)
        if np.any(finite):
            K_mlp = _mlp_jacobian_bounds(ir.mlp, norms, z[finite], r_z[finite])
            K[finite] = arr_up(K_mlp * Ln[finite])
        out[start : start + chunk] = K
        Ln_all[start : start + chunk] = Ln
    value = float(np.max(out))
    region = f"any two points of one l2 ball B(c_k, {radius!r}) around the {C.shape[0]} given norm2 inputs"
    parts = {"radius": float(radius), "centers": float(C.shape[0]), "max_norm2_local": float(np.max(Ln_all)),
             "down": norms.down, "up": norms.up, "gate": norms.gate}
    return LocalMLPBound(value, out, float(radius), region, parts)
