"""Certified Lipschitz bounds for BlockIR blocks, and the exact-rational global bound (paper §5, §6.7).

Everything here is a pure numpy function (``import blockcert.bounds`` never imports torch; only
:func:`empirical_lower_bound` imports it, lazily). Conventions used throughout:

* **Norms.** A token is a vector in ``R^d`` with the Euclidean norm. A sequence ``X`` is a ``[T, d]``
  array with the Frobenius norm (the Euclidean norm of the flattened sequence). Every Lipschitz constant
  below is with respect to these norms: ``||f(X) - f(Y)||_F <= L ||X - Y||_F``.
* **Upper bounds are certified.** Every quantity called an *upper bound* is rounded outward: it is an
  upper bound on the exact real-number quantity, including the rounding error of the float64
  computation that produced it. Scalars are combined in exact rational arithmetic
  (:class:`fractions.Fraction`) and converted to the next float up; array quantities are rounded up
  with :func:`numpy.nextafter`; activations are evaluated with cancellation-free formulas (exp,
  erfc) and get a slack of ``1e-12`` times the magnitude of their terms (far above the few-ulp error). Matrix products rely on the standard error bound of
  *conventional* (non-Strassen) matrix multiplication in IEEE binary64 with round-to-nearest,
  ``|fl(AB) - AB| <= gamma_k |A| |B|`` elementwise, ``gamma_k = k u / (1 - k u)``, ``u = 2^-53``
  (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.5), which every BLAS satisfies.
* **Regions.** Softmax attention, gated MLPs and normalisation layers are not globally Lipschitz, so
  each bound states the region on which it holds (``region`` field). A bound is only meaningful on
  its region; the certificate must carry the region with the number.
* **Lower bounds** (:func:`power_iteration_lower_bound`, :func:`empirical_lower_bound`) are values
  actually attained (``||J v|| / ||v||`` for a concrete ``v``), so ``lower <= true <= upper``.

Public API: :func:`spectral_upper_bound`, :func:`power_iteration_lower_bound`, :func:`norm_bound`,
:func:`attention_bound`, :func:`mlp_bound`, :func:`mlp_local_bound`, :func:`block_bounds`,
:func:`empirical_lower_bound`, :func:`global_bound`. The derivations are in ``docs/bounds.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from decimal import ROUND_CEILING, Decimal, localcontext
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from .ir import MLP, Attention, BlockIR, Norm

__all__ = [
    "SpectralBound",
    "LipschitzBound",
    "LocalMLPBound",
    "BlockBounds",
    "GlobalBound",
    "spectral_upper_bound",
    "power_iteration_lower_bound",
    "norm_bound",
    "attention_bound",
    "mlp_bound",
    "mlp_local_bound",
    "block_bounds",
    "empirical_lower_bound",
    "global_bound",
]

# ---------------------------------------------------------------------------------------------------
# Outward rounding helpers
# ---------------------------------------------------------------------------------------------------

_U = Fraction(1, 2**53)  # unit roundoff of binary64 (round to nearest)
_UNDERFLOW = Fraction(1, 2**1074)  # smallest subnormal: bounds the absolute error of one op near 0
_REL_SLACK = 1e-12  # slack relative to the terms' magnitude for exp/erfc evaluations: >> their ulp error
_SVD_AUTO_MAX_MIN_DIM = 128  # "auto": exact SVD when min(m, n) is at most this, else Gram + Cholesky


def _gamma(n: int) -> Fraction:
    """gamma_n = n u / (1 - n u), exact (Higham's constant for n roundings)."""
    nu = n * _U
    if nu >= 1:
        raise ValueError(f"dimension {n} too large for a float64 error bound")
    return nu / (1 - nu)


def _fup(q: Fraction | float | int) -> float:
    """The smallest float >= q (inf if q is beyond the float range)."""
    q = Fraction(q)
    try:
        f = float(q)  # int / int true division: correctly rounded to nearest
    except OverflowError:
        return math.inf if q > 0 else -math.inf
    if Fraction(f) < q:
        f = math.nextafter(f, math.inf)
    return f


def _fdown(q: Fraction | float | int) -> float:
    """The largest float <= q."""
    return -_fup(-Fraction(q))


def _sqrt_up(x: float | Fraction) -> float:
    """A float >= sqrt(x), x >= 0 (exactly checked in rationals)."""
    x = Fraction(x)
    if x <= 0:
        return 0.0
    xf = _fup(x)
    if math.isinf(xf):
        return math.inf
    s = math.sqrt(xf)
    while Fraction(s) ** 2 < x:
        s = math.nextafter(s, math.inf)
    return s


def _sqrt_down(x: float | Fraction) -> float:
    """A float <= sqrt(x), x >= 0."""
    x = Fraction(x)
    if x <= 0:
        return 0.0
    xf = _fdown(x)
    if math.isinf(xf):
        return math.inf
    s = math.sqrt(xf)
    while s > 0 and Fraction(s) ** 2 > x:
        s = math.nextafter(s, -math.inf)
    return s


def _F(x: float) -> Fraction:
    """Exact rational value of a finite float (inf raises: callers check first)."""
    return Fraction(float(x))


def _arr_up(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, np.inf)


def _arr_down(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, -np.inf)


def _f64(a: Any) -> np.ndarray:
    """float64 copy/view of an IR tensor (exact for float16/32/64)."""
    return np.asarray(a, dtype=np.float64)


def _fro2_up(a: np.ndarray) -> float:
    """Upper bound on ||a||_F^2 for a float64 array.

    ``fl(sum a_i^2)`` with any summation order satisfies ``|s_hat - s| <= gamma_N s`` (all terms are
    non-negative), so ``s <= s_hat / (1 - gamma_N)``; plus ``N`` underflow quanta.
    """
    v = np.asarray(a, dtype=np.float64).ravel(order="K")  # a view for C- or F-contiguous arrays
    if v.size == 0:
        return 0.0
    s = float(np.dot(v, v))
    if not math.isfinite(s):
        return math.inf
    return _fup(_F(s) / (1 - _gamma(v.size)) + v.size * _UNDERFLOW)


def _norm_up(a: np.ndarray) -> float:
    return _sqrt_up(_fro2_up(a))


def _check_matrix(W: Any) -> np.ndarray:
    W64 = np.asarray(W)
    if W64.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {W64.shape}")
    if W64.dtype.kind not in "fiu":
        raise ValueError(f"expected a real matrix, got dtype {W64.dtype}")
    W64 = W64.astype(np.float64, copy=False)  # exact for float16/32/64 and small ints
    if W64.size and not (math.isfinite(float(np.max(W64))) and math.isfinite(float(np.min(W64)))):
        raise ValueError("matrix has non-finite entries")  # max/min propagate NaN and show +-inf
    return W64


# ---------------------------------------------------------------------------------------------------
# 1. Spectral norm: certified upper bound and attained lower bound
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class SpectralBound:
    """A certified upper bound ``value >= sigma_max(W)`` (never below the exact real spectral norm).

    ``method``: ``"svd"`` (float64 SVD plus a rounding margin; ``exact`` is True: the value is
    sigma_max up to that margin), ``"gram"`` (Gram iteration, Delattre et al. 2023) or
    ``"gram-cholesky"`` (one Gram step, then a Cholesky certificate of ``mu I - W W^T >= 0``).
    ``lower`` is an attained lower bound (``||W^T y|| / ||y||`` for a concrete ``y``, rounded down),
    so ``lower <= sigma_max <= value``; ``iterations`` counts Gram steps.
    """

    value: float
    method: str
    exact: bool
    lower: float = 0.0
    iterations: int = 0

    @property
    def ratio(self) -> float:
        """value / lower (an upper bound on value / sigma_max); inf when lower is 0."""
        return self.value / self.lower if self.lower > 0 else math.inf


def _scaled(W64: np.ndarray) -> tuple[np.ndarray, int, Fraction]:
    """M = W * 2^-e (exact power-of-two scaling), e, and an absolute slack for scaling underflow."""
    amax = max(float(np.max(W64)), -float(np.min(W64))) if W64.size else 0.0  # no |W| temporary
    if amax == 0.0 or 2.0**-200 <= amax <= 2.0**200:
        return W64, 0, Fraction(0)
    e = math.frexp(amax)[1]
    M = np.ldexp(W64, -e)  # exact unless an entry drops below the normal range
    return M, e, (W64.size + 1) * _UNDERFLOW  # ||M_exact - M||_2 <= ||.||_F <= sqrt(mn) 2^-1075


def _lower_from_vector(M: np.ndarray, y: np.ndarray, fro2_M: float) -> float:
    """Rounded-down ``||M^T y|| / ||y||``, a lower bound on sigma_max(M) (M is s x n, y in R^s).

    ``fl(M^T y) = M^T y + e`` with ``||e|| <= gamma_s ||M||_F ||y||``; the two norms are bracketed by
    the dot-product error bound.
    """
    y = np.asarray(y, dtype=np.float64)
    yy = float(y @ y)
    if not (yy > 0 and math.isfinite(yy)):
        return 0.0
    z = M.T @ y
    zz = float(z @ z)
    if not math.isfinite(zz):
        return 0.0
    s, n = M.shape
    z_norm_down = _sqrt_down(_F(zz) / (1 + _gamma(n)))
    y_norm_up = _sqrt_up(_F(yy) / (1 - _gamma(s)) + s * _UNDERFLOW)
    err_up = _gamma(s) * _F(_sqrt_up(fro2_M)) * _F(y_norm_up) + n * s * _UNDERFLOW
    num = _F(z_norm_down) - err_up
    if num <= 0:
        return 0.0
    return max(0.0, _fdown(num / _F(y_norm_up)))


def _lanczos_top(P: np.ndarray, steps: int, seed: int) -> tuple[float, np.ndarray]:
    """Estimate (not a bound) of the top eigenpair of a symmetric PSD matrix: Lanczos, full reorth."""
    n = P.shape[0]
    k = max(1, min(steps, n))
    A = P.astype(np.float32) if n > 512 else P  # an estimate only: halve the memory traffic
    rng = np.random.default_rng(seed)
    Q = np.zeros((k, n), dtype=A.dtype)
    q = rng.standard_normal(n).astype(A.dtype)
    q /= np.linalg.norm(q)
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(k):
        Q[j] = q
        w = A @ q
        a = float(q @ w)
        alphas.append(a)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(np.linalg.norm(w))
        if j == k - 1 or not b > 1e-7 * max(abs(a), 1e-300):
            break
        betas.append(b)
        q = w / b
    m = len(alphas)
    T = np.diag(np.asarray(alphas)) + np.diag(np.asarray(betas[: m - 1]), 1) + np.diag(np.asarray(betas[: m - 1]), -1)
    evals, evecs = np.linalg.eigh(T)
    y = Q[:m].T.astype(np.float64) @ evecs[:, -1]
    return float(evals[-1]), y


def _worst_case_gram_steps(rank: int, ratio: float) -> int:
    """Gram steps t with rank^(1/2^(t+1)) <= ratio: then the Frobenius bound is <= ratio * sigma_max."""
    if rank <= 1:
        return 1
    t = 1
    while math.log(rank) / 2 ** (t + 1) > math.log(ratio):
        t += 1
    return t


def _gram_unwind(fro2_last: float, scales: list[int], deltas: list[Fraction], slack: Fraction) -> Fraction:
    """Upper bound on sigma_max(M_0) from the Gram chain (see :func:`spectral_upper_bound`)."""
    b = Fraction(_sqrt_up(fro2_last))
    for e, delta in zip(reversed(scales), reversed(deltas)):
        # sigma(M_{t-1})^2 <= sigma(P_t) + delta_t = 2^e_t sigma(M_t) + delta_t
        b = Fraction(_sqrt_up(_fup(Fraction(2) ** e * (b + slack) + delta)))
    return b


def spectral_upper_bound(
    W: Any,
    method: str = "auto",
    *,
    iterations: int | None = None,
    rtol: float = 0.005,
    seed: int = 0,
) -> SpectralBound:
    """A certified upper bound on ``sigma_max(W)``: never below the exact spectral norm of ``W``.

    ``W`` is any real 2-D array (float16/32/64 are widened to float64 exactly). Methods:

    ``"svd"``: ``sigma_hat`` = largest singular value from LAPACK (``np.linalg.svd(compute_uv=False)``)
    in float64, plus the margin ``64 m n u ||W||_F``. Householder bidiagonalisation is normwise
    backward stable, ``|sigma_hat - sigma| <= ||E||_2 <= gamma~_{mn} ||W||_F`` (Weyl; Higham §19.3,
    LAPACK Users' Guide §4.9), and the constant 64 is a generous stand-in for the small constant
    hidden in ``gamma~``. The bidiagonal singular values themselves are computed to high relative
    accuracy (dqds). ``exact=True``.

    ``"gram"``: Gram iteration (Delattre et al. 2023). With ``M_0 = W`` (reduced to its smaller Gram
    side, ``W W^T`` if rows <= cols else ``W^T W``) and ``P_t = fl(M_{t-1} M_{t-1}^T)`` (float64 SYRK),
    ``M_t = P_t 2^-e_t`` (exact power-of-two rescaling, ``e_t`` tracked as an integer: the log-space
    scale), each step satisfies ``sigma(M_{t-1})^2 = sigma(M_{t-1} M_{t-1}^T) <= sigma(P_t) + delta_t``,
    ``delta_t = gamma_k ||M_{t-1}||_F^2`` (k the inner dimension) and finally ``sigma(M_T) <= ||M_T||_F``.
    Unwinding gives a guaranteed bound; without rounding it is ``||G_T||_F^(1/2^T)`` with
    ``G_T = (W^T W)^(2^(T-1))``, i.e. ``(sum_i sigma_i^(2^(T+1)))^(1/2^(T+1)) <= rank^(1/2^(T+1)) sigma_max``.
    With ``iterations=None`` it stops as soon as ``value <= (1 + rtol) * lower`` (``lower`` an attained
    lower bound from Lanczos on the first Gram matrix, refined by the Gram powers) and never runs past
    the step count at which ``rank^(1/2^(T+1)) <= 1 + 2 rtol``; so the default result is always
    ``<= (1 + 2 rtol) sigma_max`` (1.01x at the default rtol), up to ~1e-9 of rounding slack.

    ``"gram-cholesky"``: one Gram step ``P = fl(M M^T)`` (``delta_1`` as above), a Lanczos estimate
    ``theta`` of ``lambda_max(P)``, then floating-point Cholesky of ``A = mu I - P`` for
    ``mu = theta (1 + rtol / 2)`` with the diagonal rounded down. If it runs to completion, the
    computed factor satisfies ``R^T R = A + dA``, ``|dA| <= gamma_{n+1} |R^T| |R|`` for any evaluation
    order (Demmel 1989; Higham Thm 10.3; this is the basis of Rump's verified positive-definiteness
    test), hence ``lambda_min(A) >= -gamma_{n+1} ||R||_F^2`` and
    ``lambda_max(P) <= mu + gamma ||R||_F^2`` (we use ``gamma_{2n+4}``, twice the constant, for blocked
    implementations that multiply by reciprocals). If the factorisation fails, ``mu`` grows and after
    three failures the method falls back to Gram iteration from ``P``. Result ``<= (1 + 2 rtol)
    sigma_max`` as for ``"gram"``.

    ``"auto"``: ``"svd"`` when ``min(m, n) <= 128`` (fast and exact there), else ``"gram-cholesky"``
    (on 2 cores a 512 x 11008 SVD already takes seconds; one SYRK plus one Cholesky is far cheaper).

    Overflow/underflow: inputs are rescaled by exact powers of two and every step is normalised, so
    nothing overflows; underflow is covered by an absolute slack of a few ``2^-1074`` per operation.
    """
    W64 = _check_matrix(W)
    m, n = W64.shape
    if method not in ("auto", "svd", "gram", "gram-cholesky"):
        raise ValueError(f"unknown method {method!r} (auto, svd, gram, gram-cholesky)")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if method == "auto":
        method = "svd" if min(m, n) <= _SVD_AUTO_MAX_MIN_DIM else "gram-cholesky"
    if W64.size == 0 or not np.any(W64):
        return SpectralBound(0.0, method, True, 0.0, 0)
    if method == "svd":
        return _svd_bound(W64)
    return _gram_bound(W64, method, iterations, rtol, seed)


def _svd_bound(W64: np.ndarray) -> SpectralBound:
    m, n = W64.shape
    M, e0, slack = _scaled(W64)
    sigma = _F(float(np.linalg.svd(M, compute_uv=False)[0]))
    margin = 64 * m * n * _U * _F(_sqrt_up(_fro2_up(M))) + _UNDERFLOW
    scale = Fraction(2) ** e0
    value = _fup(scale * (sigma + margin + slack))
    lower = max(0.0, _fdown(scale * (sigma - margin - slack)))
    return SpectralBound(value, "svd", True, lower, 0)


def _gram_bound(W64: np.ndarray, method: str, iterations: int | None, rtol: float, seed: int) -> SpectralBound:
    M, e0, scale_slack = _scaled(W64)
    if M.shape[0] > M.shape[1]:
        M = M.T  # smaller Gram side: P = M M^T is min(m,n) x min(m,n)
    s, k = M.shape
    fro2_M = _fro2_up(M)
    # SYRK (numpy detects A @ A.T). Symmetry of the computed P is not needed: the Gram steps use
    # sigma(A)^2 = sigma(A A^T) for any A, and the Cholesky certificate reads P's lower triangle, whose
    # symmetric completion obeys the same elementwise error bound.
    P = M @ M.T
    delta1 = _gamma(k) * _F(fro2_M) + k * s * _UNDERFLOW
    theta, y = _lanczos_top(P, 48 if s > 64 else s, seed)
    lower_M = _lower_from_vector(M, y, fro2_M)

    def finish(bound_M: Fraction, name: str, steps: int) -> SpectralBound:
        value = _fup(Fraction(2) ** e0 * (bound_M + scale_slack))
        lower = _fdown(Fraction(2) ** e0 * _F(lower_M))
        return SpectralBound(value, name, False, lower, steps)

    if method == "gram-cholesky":
        mu = theta * (1 + rtol / 2)
        for _ in range(3):
            lam = _cholesky_certificate(P, mu)
            if lam is not None:
                bound_M = Fraction(_sqrt_up(lam + delta1))
                if bound_M <= (1 + 2 * Fraction(rtol)) * _F(lower_M) or lower_M == 0:
                    return finish(bound_M, "gram-cholesky", 1)
                break  # certified but loose (poor estimate): tighten with Gram iteration instead
            mu *= 1 + 2 * rtol
    # Gram iteration from P (the first step is already done).
    max_steps = iterations if iterations is not None else _worst_case_gram_steps(s, 1 + 2 * rtol)
    scales: list[int] = []
    deltas: list[Fraction] = [delta1]
    cur, steps = P, 1
    while True:
        fro2_cur = _fro2_up(cur)
        if fro2_cur == 0.0:  # P underflowed to zero: sigma(M)^2 <= delta1 only
            return finish(Fraction(_sqrt_up(delta1)), "gram", steps)
        e = math.frexp(math.sqrt(fro2_cur))[1]
        Mt = np.ldexp(cur, -e)  # exact up to subnormal underflow (slack below)
        scales.append(e)
        fro2_t = _fro2_up(Mt)
        bound_M = _gram_unwind(fro2_t, scales, deltas, s * _UNDERFLOW)
        if steps > 1:  # refine the attained lower bound: y <- G_t y is 2^(t-1) power steps at once
            y = Mt @ y
            nrm = float(np.linalg.norm(y))
            if nrm > 0 and math.isfinite(nrm):
                y = y / nrm
                lower_M = max(lower_M, _lower_from_vector(M, y, fro2_M))
        done = steps >= max_steps
        if iterations is None and bound_M <= (1 + Fraction(rtol)) * _F(lower_M):
            done = True
        if done:
            return finish(bound_M, "gram", steps)
        cur = Mt @ Mt.T  # SYRK; sigma(Mt)^2 = sigma(Mt Mt^T)
        deltas.append(_gamma(s) * _F(fro2_t) + s * s * _UNDERFLOW)
        steps += 1


def _cholesky_certificate(P: np.ndarray, mu: float) -> Fraction | None:
    """Upper bound on lambda_max(P_L) if the Cholesky factorisation of mu I - P succeeds, else None.

    LAPACK reads one triangle only, so the matrix certified is P_L, the symmetric completion of that
    triangle (equal to P when P is symmetric); it obeys the same elementwise error bound as P.
    """
    n = P.shape[0]
    A = -P  # exact
    diag = _arr_down(mu - np.diagonal(P))  # <= mu - p_ii: A = mu I - P - D with D >= 0 diagonal
    A[np.diag_indices(n)] = diag
    try:
        R = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None
    fro2_R = _fro2_up(R)
    if not math.isfinite(fro2_R):
        return None
    # mu I - P >= A >= -gamma ||R||_F^2 I  =>  lambda_max(P) <= mu + gamma ||R||_F^2
    return _F(mu) + _gamma(2 * n + 4) * _F(fro2_R) + n * n * _UNDERFLOW


def power_iteration_lower_bound(W: Any, iterations: int = 100, seed: int = 0) -> float:
    """An attained LOWER bound on ``sigma_max(W)``: ``||W v|| / ||v||`` for the final power-iteration vector.

    Power iteration on ``W^T W`` (``v <- W^T W v / ||.||``) from a seeded Gaussian start; the returned
    ratio is rounded down including the matrix-vector rounding error, so it never exceeds the exact
    ``sigma_max``. It converges from below; how fast depends on the spectral gap.
    """
    W64 = _check_matrix(W)
    if W64.size == 0 or not np.any(W64):
        return 0.0
    M, e0, _ = _scaled(W64)
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(M.shape[1])
    for _ in range(max(1, iterations)):
        u = M @ v
        v = M.T @ u
        nrm = float(np.linalg.norm(v))
        if not (nrm > 0 and math.isfinite(nrm)):
            break
        v = v / nrm
    # ||M v|| / ||v|| = ||(M^T)^T v|| / ||v||: reuse the helper with M^T (rows = cols of M)
    MT = np.ascontiguousarray(M.T)
    lower = _lower_from_vector(MT, v, _fro2_up(M))
    return max(0.0, _fdown(Fraction(2) ** e0 * _F(lower)))


# ---------------------------------------------------------------------------------------------------
# 2. Normalisation layers
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class LipschitzBound:
    """A certified Lipschitz upper bound ``value`` that holds on ``region`` (and only there).

    ``parts`` records the ingredients (spectral norms, radii, ...), all themselves upper bounds.
    """

    value: float
    region: str
    parts: dict[str, float] = attrs.field(factory=dict)


def _eps_eff(norm: Norm) -> Fraction:
    """The norm's eps, taken as min(eps, float32(eps)) so a float32 replay's eps is covered too."""
    return min(_F(norm.eps), _F(float(np.float32(norm.eps))))


def _scale_word(norm: Norm) -> str:
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
    wmax = float(np.max(np.abs(_f64(norm.weight))))
    den2 = _F(min_scale) ** 2 + _eps_eff(norm)
    if den2 == 0:
        value = math.inf if wmax > 0 else 0.0
    else:
        value = _fup(_F(wmax) / _F(_sqrt_down(den2)))
    region = f"{_scale_word(norm)} >= {min_scale!r} for every token"
    return LipschitzBound(value, region, {"max_abs_weight": wmax, "min_scale": float(min_scale), "eps": float(_eps_eff(norm))})


def _norm_output_radius(norm: Norm) -> float:
    """Upper bound on ||norm(x)|| over ALL x: ||w * u|| <= max|w| ||u|| <= max|w| sqrt(d), plus ||b||."""
    d = norm.weight.shape[0]
    wmax = float(np.max(np.abs(_f64(norm.weight))))
    r = _F(wmax) * _F(_sqrt_up(d))
    if norm.bias is not None:
        r += _F(_norm_up(_f64(norm.bias)))
    return _fup(r)


# ---------------------------------------------------------------------------------------------------
# 3. Attention
# ---------------------------------------------------------------------------------------------------


def _rope_factor(attn: Attention) -> float:
    """Upper bound on the operator norm of every per-position RoPE map (1 for an exact rotation)."""
    if attn.rope is None:
        return 1.0
    r = attn.rope
    cos, sin = _f64(r.cos), _f64(r.sin)
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
    return _fup(_F(rho) * (1 + Fraction(1, 10**9)))  # slack for the 2x2 formula's cancellation


def _max_column_count(mask: np.ndarray, seq_len: int) -> int:
    """c = max number of queries that may attend to one key: min(T, max column sum of the mask table)."""
    colsum = int(np.max(np.sum(np.asarray(mask, dtype=bool), axis=0))) if mask.size else 0
    return max(1, min(seq_len, colsum))


def _spec(W: np.ndarray) -> float:
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
    R_global = _norm_output_radius(ir.norm1)
    R = R_global if z_radius is None else min(R_global, float(z_radius))
    if not (math.isfinite(R) and R >= 0):
        raise ValueError(f"z_radius must be finite and >= 0, got {z_radius}")
    c = _max_column_count(a.mask, T)
    sqrt_c = _F(_sqrt_up(c))
    rho = _F(_rope_factor(a))
    scale = abs(_F(a.scale))
    G = a.n_heads // a.n_kv_heads
    hd = a.head_dim
    Wq, Wk, Wv, Wo = _f64(a.q.weight), _f64(a.k.weight), _f64(a.v.weight), _f64(a.o.weight)
    kv_norms = {}
    for kv in range(a.n_kv_heads):
        sl = slice(kv * hd, (kv + 1) * hd)
        nk, nv = _F(_spec(Wk[:, sl])), _F(_spec(Wv[:, sl]))
        bk = _F(_norm_up(_f64(a.k.bias)[sl])) if a.k.bias is not None else Fraction(0)
        kv_norms[kv] = (nk, nv, bk)
    R_F = _F(R)
    per_head = []  # L_h without W_O
    per_head_with_o = []
    for h in range(a.n_heads):
        sl = slice(h * hd, (h + 1) * hd)
        nq = _F(_spec(Wq[:, sl]))
        bq = _F(_norm_up(_f64(a.q.bias)[sl])) if a.q.bias is not None else Fraction(0)
        nk, nv, bk = kv_norms[h // G]
        Rq = rho * (nq * R_F + bq)
        Rk = rho * (nk * R_F + bk) if a.rope is not None else nk * R_F
        value_path = sqrt_c * nv
        softmax_path = scale * nv * R_F * (Rk * rho * nq + sqrt_c * Rq * rho * nk)
        gate = abs(_F(float(a.head_gate[h])))
        Lh = gate * (value_path + softmax_path)
        per_head.append(Lh)
        per_head_with_o.append(_F(_spec(Wo[sl, :])) * Lh)
    by_head_sum = sum(per_head_with_o, Fraction(0))
    joint = _F(_spec(Wo)) * _F(_sqrt_up(sum((L * L for L in per_head), Fraction(0))))
    K_z = min(by_head_sum, joint)
    value = _fup(K_z * _F(norm1.value)) if math.isfinite(norm1.value) else (0.0 if K_z == 0 else math.inf)
    region = (
        f"sequences of T <= {T} tokens at distinct positions; {norm1.region}; "
        f"||norm1(x_t)|| <= {R!r} ({'given' if z_radius is not None and float(z_radius) < R_global else 'holds for all x'})"
    )
    parts = {
        "norm1": norm1.value,
        "attention_on_normed": _fup(K_z),
        "z_radius": R,
        "max_column_count": float(c),
        "rope_factor": float(rho),
    }
    return LipschitzBound(value, region, parts)


# ---------------------------------------------------------------------------------------------------
# 4. MLP: interval bounds of activation derivatives, analytic and local bounds
# ---------------------------------------------------------------------------------------------------

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


def _act(kind: str, t: np.ndarray) -> np.ndarray:
    """Activation value in float64 (accurate formulas)."""
    return _act_terms(kind, t)[0]


def _dact(kind: str, t: np.ndarray) -> np.ndarray:
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
    dmax = float(_dact(kind, np.array([t_star]))[0])
    t_min = _bisect(lambda t: float(_dact(kind, np.array([t]))[0]), -5.0, -0.1)
    amin = abs(float(_act(kind, np.array([t_min]))[0]))
    slack = 1e-9  # a' is flat at t_star and a at t_min: a location error of 1e-8 moves the value by ~1e-16
    return _ActConstants(t_star, dmax + slack, dmax - 1.0 + slack, t_min, amin + slack)


_ACT_CONSTANTS = {kind: _constants(kind) for kind in ("silu", "gelu", "gelu_tanh")}
_CRIT_WIDTH = 1e-6  # critical points are located to ~1e-15; widen the "contains" test generously


def _abs_up(value: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """|exact value| <= |computed value| + 1e-12 * magnitude (see _act_terms)."""
    return _arr_up(np.abs(value) + _REL_SLACK * magnitude + 1e-300)


def _contains(lo: np.ndarray, hi: np.ndarray, t: float) -> np.ndarray:
    return (lo <= t + _CRIT_WIDTH) & (hi >= t - _CRIT_WIDTH)


def _dact_absmax(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Upper bound on sup |a'(t)| over each interval [lo, hi] (elementwise)."""
    if kind == "relu":
        return (hi > 0).astype(np.float64)  # a' in {0, 1}; 0 on (lo, hi) when hi <= 0
    k = _ACT_CONSTANTS[kind]
    v = np.maximum(_abs_up(*_dact_terms(kind, lo)), _abs_up(*_dact_terms(kind, hi)))
    v = np.where(_contains(lo, hi, k.t_star), np.maximum(v, k.dmax), v)
    v = np.where(_contains(lo, hi, -k.t_star), np.maximum(v, k.dmin_abs), v)
    return v


def _act_absmax(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Upper bound on sup |a(t)| over each interval [lo, hi] (elementwise)."""
    if kind == "relu":
        return _arr_up(np.maximum(hi, 0.0))
    k = _ACT_CONSTANTS[kind]
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
    g = float(_fup(1 / (1 - _gamma(d))))
    return _arr_up(np.sqrt(_arr_up(_arr_up(ss * g) + d * 5e-324)))


def _mlp_norms(m: MLP) -> _MLPNorms:
    Wu, Wd = _f64(m.up.weight), _f64(m.down.weight)
    if m.gate is None:
        return _MLPNorms(_spec(Wd), _spec(Wu), 0.0, math.inf, _col_norms_up(Wu), None)
    Wg = _f64(m.gate.weight)
    return _MLPNorms(_spec(Wd), _spec(Wu), _spec(Wg), _spec(np.concatenate([Wg, Wu], axis=1)), _col_norms_up(Wu), _col_norms_up(Wg))


def _preact_intervals(lin_w: np.ndarray, lin_b: np.ndarray | None, z: np.ndarray, z_norm: np.ndarray, r_z: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intervals containing (z' W + b)_i for all ||z' - z|| <= r_z: centre +- (r_z ||col_i|| + rounding)."""
    d = lin_w.shape[0]
    u = z @ lin_w  # [N, f]
    babs = np.zeros(lin_w.shape[1]) if lin_b is None else np.abs(_f64(lin_b))
    if lin_b is not None:
        u = u + _f64(lin_b)
    g = float(_fup(_gamma(d + 1)))
    # |fl(zW + b) - (zW + b)| <= gamma_{d+1} (|z||W| + |b|) <= gamma_{d+1} (||z|| ||col_i|| + |b_i|)
    width = _arr_up(r_z[:, None] * cols[None, :])
    width = _arr_up(width + _arr_up(g * _arr_up(_arr_up(z_norm[:, None] * cols[None, :]) + babs[None, :])))
    return _arr_down(u - width), _arr_up(u + width)


def _mlp_jacobian_bounds(m: MLP, norms: _MLPNorms, z: np.ndarray, r_z: np.ndarray) -> np.ndarray:
    """Per centre: upper bound on sup ||J_MLP(z')|| over ||z' - z_k|| <= r_z[k] (MLP only, no norm)."""
    z_norm = _arr_up(np.sqrt(_arr_up(np.einsum("ij,ij->i", z, z) * (1 + 4 * z.shape[1] * 2.0**-53))))
    ulo, uhi = _preact_intervals(_f64(m.up.weight), m.up.bias, z, z_norm, r_z, norms.up_cols)
    if m.gate is None:
        dmax = np.max(_dact_absmax(m.activation, ulo, uhi), axis=1)  # [N]
        return _arr_up(_arr_up(dmax * norms.down) * norms.up)
    assert norms.gate_cols is not None
    glo, ghi = _preact_intervals(_f64(m.gate.weight), m.gate.bias, z, z_norm, r_z, norms.gate_cols)
    umax = np.maximum(np.abs(ulo), np.abs(uhi))
    D1 = _arr_up(_dact_absmax(m.activation, glo, ghi) * umax)  # |a'(g_i) u_i|
    D2 = _act_absmax(m.activation, glo, ghi)  # |a(g_i)|
    # J = W_down^T [diag(D1) W_gate^T + diag(D2) W_up^T]  (per point, |.| bounded by the intervals)
    sep = _arr_up(_arr_up(np.max(D1, axis=1) * norms.gate) + _arr_up(np.max(D2, axis=1) * norms.up))
    joint = _arr_up(np.max(_arr_up(np.sqrt(_arr_up(_arr_up(D1 * D1) + _arr_up(D2 * D2)))), axis=1) * norms.gate_up)
    return _arr_up(np.minimum(sep, joint) * norms.down)


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
    return _mlp_bound(ir, min_scale, z_radius, _mlp_norms(ir.mlp))


def _mlp_bound(ir: BlockIR, min_scale: float, z_radius: float | None, norms: _MLPNorms) -> LipschitzBound:
    n2 = norm_bound(ir.norm2, min_scale)
    R_global = _norm_output_radius(ir.norm2)
    R = R_global if z_radius is None else min(R_global, float(z_radius))
    K = float(_mlp_jacobian_bounds(ir.mlp, norms, np.zeros((1, ir.d_model)), np.array([R]))[0])
    value = _fup(_F(K) * _F(n2.value)) if math.isfinite(n2.value) and math.isfinite(K) else math.inf
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
    y = xc / np.sqrt(ms + eps)[:, None] * _f64(norm.weight)
    if norm.bias is not None:
        y = y + _f64(norm.bias)
    # float64 evaluation error of the scale: relative gamma_{d+4}, plus centring error for layernorm
    kappa = 4 * float(_fup(_gamma(d + 8)))
    rms_x = np.sqrt(np.einsum("ij,ij->i", x, x) / d)
    scale_down = _arr_down(np.sqrt(ms) - kappa * (np.sqrt(ms) + rms_x))
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
    return _mlp_local_bound(ir, centers, radius, chunk, None)


def _mlp_local_bound(ir: BlockIR, centers: Any, radius: float, chunk: int, norms: _MLPNorms | None) -> LocalMLPBound:
    if not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be finite and >= 0, got {radius}")
    C = _f64(centers).reshape(-1, ir.d_model)
    if C.shape[0] == 0:
        raise ValueError("no centres given")
    if not np.all(np.isfinite(C)):
        raise ValueError("centres have non-finite entries")
    if norms is None:
        norms = _mlp_norms(ir.mlp)
    d = ir.d_model
    norm = ir.norm2
    wmax = float(np.max(np.abs(_f64(norm.weight))))
    eps = float(_eps_eff(norm))
    r_shift = float(_fup(_F(radius) / _F(_sqrt_down(d))))
    kappa = 4 * float(_fup(_gamma(d + 8)))
    bnorm = _norm_up(_f64(norm.bias)) if norm.bias is not None else 0.0
    out = np.empty(C.shape[0])
    Ln_all = np.empty(C.shape[0])
    for start in range(0, C.shape[0], chunk):
        x = C[start : start + chunk]
        z, scale_c = _norm_forward(norm, x)
        s_min = np.maximum(_arr_down(scale_c - r_shift), 0.0)
        den2 = _arr_down(_arr_down(s_min * s_min) + eps)
        with np.errstate(divide="ignore"):
            Ln = np.where(den2 > 0, _arr_up(wmax / _arr_down(np.sqrt(den2))), math.inf if wmax > 0 else 0.0)
        z_norm = np.sqrt(np.einsum("ij,ij->i", z, z))
        r_z = _arr_up(_arr_up(Ln * radius) + kappa * (z_norm + bnorm) + 1e-300)
        finite = np.isfinite(r_z)
        K = np.full(x.shape[0], math.inf)
        if np.any(finite):
            K_mlp = _mlp_jacobian_bounds(ir.mlp, norms, z[finite], r_z[finite])
            K[finite] = _arr_up(K_mlp * Ln[finite])
        out[start : start + chunk] = K
        Ln_all[start : start + chunk] = Ln
    value = float(np.max(out))
    region = f"any two points of one l2 ball B(c_k, {radius!r}) around the {C.shape[0]} given norm2 inputs"
    parts = {"radius": float(radius), "centers": float(C.shape[0]), "max_norm2_local": float(np.max(Ln_all)),
             "down": norms.down, "up": norms.up, "gate": norms.gate}
    return LocalMLPBound(value, out, float(radius), region, parts)


# ---------------------------------------------------------------------------------------------------
# 5. Whole blocks
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class BlockBounds:
    """Per-block Lipschitz quantities (paper §6.7), each with the region it holds on (``regions``).

    ``K_attn``: :func:`attention_bound`; ``K_mlp``: :func:`mlp_bound` (analytic, norm2 region);
    ``K_mlp_local``: :func:`mlp_local_bound` on balls of ``radius`` around the traced norm2 inputs.
    ``analytic_upper_bound``: ``(1 + K_attn)(1 + K_mlp)`` (sequential) or ``1 + K_attn + K_mlp``
    (parallel). ``hybrid_upper_bound``: the same with ``K_mlp_local``; sound for sequences within
    ``hybrid_input_radius`` of a traced input (the paper's ``(1 + K_attn) K_MLP`` drops the MLP's
    residual identity and is not an upper bound in general).
    """

    index: int
    residual: str
    K_norm1: float
    K_attn: float
    K_mlp: float
    K_mlp_local: float
    analytic_upper_bound: float
    hybrid_upper_bound: float
    hybrid_input_radius: float
    min_scale1: float
    min_scale2: float
    radius: float
    seq_len: int
    tokens: int
    regions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for a certificate (floats may be inf: serialise with care)."""
        return attrs.asdict(self)


def _as_sequences(traces_inputs: Any, d: int) -> list[np.ndarray]:
    if isinstance(traces_inputs, (list, tuple)):
        seqs = [_f64(_to_numpy(s)).reshape(-1, d) for s in traces_inputs]
    else:
        arr = _f64(_to_numpy(traces_inputs))
        if arr.ndim == 2:
            seqs = [arr]
        elif arr.ndim == 3:
            seqs = list(arr)
        else:
            raise ValueError(f"traces_inputs must be [T, d], [B, T, d] or a list of [T, d], got shape {arr.shape}")
    if not seqs or any(s.shape[0] == 0 or s.shape[1] != d for s in seqs):
        raise ValueError(f"traces_inputs must be non-empty sequences of d={d} tokens")
    return seqs


def _to_numpy(a: Any) -> Any:
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().cpu().numpy()
    return a


def _scales(norm: Norm, X: np.ndarray) -> np.ndarray:
    if norm.kind == "layernorm":
        X = X - X.mean(axis=1, keepdims=True)
    return np.sqrt(np.einsum("ij,ij->i", X, X) / X.shape[1])


def _norm2_inputs(ir: BlockIR, seqs: list[np.ndarray]) -> list[np.ndarray]:
    """h = x + Attn(norm1(x)) (sequential) or x (parallel), replayed in float64 numpy."""
    if ir.residual == "parallel":
        return seqs
    from array_api_compat import array_namespace

    from . import interpreter as itp

    out = []
    for x in seqs:
        x3 = x[None]
        xp = array_namespace(x3)
        T = x.shape[0]
        positions = np.broadcast_to(np.arange(T)[None, :], (1, T))
        a, _, _ = itp.attention(xp, itp.norm(xp, x3, ir.norm1), ir.attn, positions, None)
        out.append((x3 + a)[0])
    return out


def block_bounds(
    ir: BlockIR,
    traces_inputs: Any,
    *,
    margin: float = 0.5,
    radius: float = 1.0,
    seq_len: int | None = None,
) -> BlockBounds:
    """Analytic and hybrid Lipschitz upper bounds for one block, each with its region.

    ``traces_inputs``: the block inputs ``x^(l)`` of the traced prompts (``[T, d]``, ``[B, T, d]`` or a
    list of ``[T_p, d]``; positions ``0..T_p-1``). ``min_scale1 = margin * min_t scale(x_t)`` and
    ``min_scale2 = margin * min_t scale(h_t)`` define the norm regions (the smallest traced RMS/std,
    shrunk by ``margin``); ``seq_len`` defaults to the longest traced sequence.

    Sequential block ``B(x) = h + M(h)``, ``h = x + A(x)``: ``Lip(B) <= (1 + Lip(M)) (1 + Lip(A))``;
    parallel ``B(x) = x + A(x) + M(x)``: ``Lip(B) <= 1 + Lip(A) + Lip(M)``.

    * ``analytic_upper_bound`` holds on {sequences of ``T <= seq_len`` tokens with every
      ``scale(x_t) >= min_scale1`` and every ``scale(h_t) >= min_scale2``}.
    * ``hybrid_upper_bound`` uses ``K_mlp_local`` (balls of ``radius`` around the traced ``h_t``); it holds
      for ``X'`` within ``hybrid_input_radius = radius / (1 + K_attn)`` (Frobenius) of a traced input
      sequence ``X`` and in the attention region: then every ``h'_t`` is within ``radius`` of ``h_t``.
      For parallel blocks ``hybrid_input_radius = radius``.
    """
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    seqs = _as_sequences(traces_inputs, ir.d_model)
    T = max(s.shape[0] for s in seqs) if seq_len is None else int(seq_len)
    X = np.concatenate(seqs)
    hs = _norm2_inputs(ir, seqs)
    H = np.concatenate(hs)
    s1 = _fdown(_F(margin) * _F(float(np.min(_scales(ir.norm1, X)))) * (1 - Fraction(1, 10**6)))
    s2 = _fdown(_F(margin) * _F(float(np.min(_scales(ir.norm2, H)))) * (1 - Fraction(1, 10**6)))
    attn = attention_bound(ir, min_scale=s1, seq_len=T)
    norms = _mlp_norms(ir.mlp)  # spectral norms shared by the analytic and the local MLP bound
    mlp_a = _mlp_bound(ir, s2, None, norms)
    mlp_l = _mlp_local_bound(ir, H, radius, 256, norms)
    one = Fraction(1)

    def combine(ka: float, km: float) -> float:
        if not (math.isfinite(ka) and math.isfinite(km)):
            return math.inf
        if ir.residual == "sequential":
            return _fup((one + _F(ka)) * (one + _F(km)))
        return _fup(one + _F(ka) + _F(km))

    analytic = combine(attn.value, mlp_a.value)
    hybrid = combine(attn.value, mlp_l.value)
    if ir.residual == "sequential":
        r_in = _fdown(_F(radius) / (one + _F(attn.value))) if math.isfinite(attn.value) else 0.0
    else:
        r_in = float(radius)
    regions = {
        "K_norm1": norm_bound(ir.norm1, s1).region,
        "K_attn": attn.region,
        "K_mlp": mlp_a.region,
        "K_mlp_local": mlp_l.region,
        "analytic_upper_bound": f"sequences of T <= {T} tokens with every {_scale_word(ir.norm1)} >= {s1!r} (norm1) "
        f"and every norm2 input with {_scale_word(ir.norm2)} >= {s2!r}",
        "hybrid_upper_bound": f"sequences X' with ||X' - X||_F <= {r_in!r} for a traced input X, inside the K_attn region",
    }
    return BlockBounds(
        index=ir.index,
        residual=ir.residual,
        K_norm1=attn.parts["norm1"],
        K_attn=attn.value,
        K_mlp=mlp_a.value,
        K_mlp_local=mlp_l.value,
        analytic_upper_bound=analytic,
        hybrid_upper_bound=hybrid,
        hybrid_input_radius=r_in,
        min_scale1=s1,
        min_scale2=s2,
        radius=float(radius),
        seq_len=T,
        tokens=int(X.shape[0]),
        regions=regions,
    )


def empirical_lower_bound(replay_fn: Callable[[Any], Any], x: Any, *, iterations: int = 30, seed: int = 0) -> float:
    """A LOWER bound on the block's local Lipschitz constant at ``x``: ``||J v|| / ||v||`` for a power-iteration ``v``.

    ``replay_fn`` maps a torch tensor ``[B, T, d]`` to the block output (a tensor, or anything with an
    ``.output`` attribute such as :class:`blockcert.interpreter.Replay`); ``x`` is a numpy array or torch
    tensor of that shape, evaluated in float64. Power iteration on ``J^T J`` with ``torch.func.jvp`` /
    ``vjp`` (never forming ``J``); the returned value is attained, so it is ``<= ||J(x)||_2`` which is
    ``<=`` the Lipschitz constant on any neighbourhood of ``x`` (batch elements are independent, so the
    value bounds the largest per-sequence Jacobian norm from below).
    """
    import torch
    from torch.func import jvp, vjp

    xt = torch.as_tensor(_to_numpy(x), dtype=torch.float64)

    def f(inp: Any) -> Any:
        out = replay_fn(inp)
        return getattr(out, "output", out)

    with warnings.catch_warnings():  # torch's forward-AD decompositions still use torch.jit.script on first use
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(xt.shape, generator=gen, dtype=torch.float64)
        v = v / torch.linalg.vector_norm(v)
        _, pullback = vjp(f, xt)
        best = 0.0
        for _ in range(max(1, iterations)):
            _, jv = jvp(f, (xt,), (v,))
            best = max(best, float(torch.linalg.vector_norm(jv)))  # ||J v||, ||v|| = 1
            (w,) = pullback(jv)
            nrm = float(torch.linalg.vector_norm(w))
            if not (nrm > 0 and math.isfinite(nrm)):
                break
            v = w / nrm
        _, jv = jvp(f, (xt,), (v,))
        best = max(best, float(torch.linalg.vector_norm(jv)))
    return best * (1 - 1e-12)  # float64 rounding of J v, well below this margin at these sizes


# ---------------------------------------------------------------------------------------------------
# 6. Theorem 1 in exact rational arithmetic
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class GlobalBound:
    """Theorem 1: ``||F_hat(x) - F(x)|| <= sum_i eps_i prod_{j>i} L_j`` (paper eq. 14).

    ``exact``: the bound as an exact rational (the inputs are binary floats, hence exact rationals);
    ``upper``: the smallest float ``>= exact``; ``decimal``: a decimal string rounded up (ceiling) to
    ``digits`` significant digits; ``sum_eps_*``: ``sum_i eps_i``, which is the bound when every
    ``L_j = 1`` and an upper bound on it when every ``L_j <= 1`` (``lips_le_one``).
    """

    exact: Fraction
    upper: float
    decimal: str
    sum_eps_exact: Fraction
    sum_eps_upper: float
    sum_eps_decimal: str
    lips_le_one: bool


def _decimal_up(q: Fraction, digits: int) -> str:
    if q == 0:
        return "0"
    with localcontext() as ctx:
        ctx.prec = digits
        ctx.rounding = ROUND_CEILING
        return str(Decimal(q.numerator) / Decimal(q.denominator))  # one correctly (ceiling-)rounded division


def _exact_nonneg(x: Any, what: str) -> Fraction:
    if isinstance(x, Fraction):
        q = x
    elif isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        q = Fraction(int(x))
    else:
        f = float(x)  # exact for float16/32/64
        if not math.isfinite(f):
            raise ValueError(f"{what} must be finite, got {x!r}")
        q = Fraction(f)
    if q < 0:
        raise ValueError(f"{what} must be >= 0, got {x!r}")
    return q


def global_bound(eps: Sequence[Any], lips: Sequence[Any], *, digits: int = 17) -> GlobalBound:
    """Theorem 1 with exact rational arithmetic, rounded outward only at the end.

    ``eps[i]``: block ``i``'s local soundness bound ``sup_x ||B_hat_i(x) - B_i(x)||``; ``lips[i]``: a
    Lipschitz constant valid for both ``B_i`` and ``B_hat_i`` (on the region the trajectories stay in).
    Computed by Horner's rule ``acc <- acc * L_i + eps_i`` over ``i = 0..n-1``, which equals
    ``sum_i eps_i prod_{j>i} L_j`` exactly (note ``L_0`` does not appear).
    """
    if len(eps) != len(lips):
        raise ValueError(f"eps has {len(eps)} entries, lips has {len(lips)}")
    E = [_exact_nonneg(e, f"eps[{i}]") for i, e in enumerate(eps)]
    L = [_exact_nonneg(v, f"lips[{i}]") for i, v in enumerate(lips)]
    acc = Fraction(0)
    for e, lip in zip(E, L):
        acc = acc * lip + e
    total = sum(E, Fraction(0))
    return GlobalBound(
        exact=acc,
        upper=_fup(acc),
        decimal=_decimal_up(acc, digits),
        sum_eps_exact=total,
        sum_eps_upper=_fup(total),
        sum_eps_decimal=_decimal_up(total, digits),
        lips_le_one=all(lip <= 1 for lip in L),
    )
