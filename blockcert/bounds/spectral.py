"""Certified spectral norms: exact SVD for small matrices, Gram iteration and a Cholesky certificate for large ones, and an attained lower bound (docs/bounds.md §1)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from blockcert.bounds.rounding import UNDERFLOW, F, U, arr_down, check_matrix, fdown, fro2_up, fup, gamma, sqrt_down, sqrt_up

_SVD_AUTO_MAX_MIN_DIM = 128  # "auto": exact SVD when min(m, n) is at most this, else Gram + Cholesky


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
    return M, e, (W64.size + 1) * UNDERFLOW  # ||M_exact - M||_2 <= ||.||_F <= sqrt(mn) 2^-1075


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
    z_norm_down = sqrt_down(F(zz) / (1 + gamma(n)))
    y_norm_up = sqrt_up(F(yy) / (1 - gamma(s)) + s * UNDERFLOW)
    err_up = gamma(s) * F(sqrt_up(fro2_M)) * F(y_norm_up) + n * s * UNDERFLOW
    num = F(z_norm_down) - err_up
    if num <= 0:
        return 0.0
    return max(0.0, fdown(num / F(y_norm_up)))


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
    b = Fraction(sqrt_up(fro2_last))
    for e, delta in zip(reversed(scales), reversed(deltas)):
        # sigma(M_{t-1})^2 <= sigma(P_t) + delta_t = 2^e_t sigma(M_t) + delta_t
        b = Fraction(sqrt_up(fup(Fraction(2) ** e * (b + slack) + delta)))
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
    W64 = check_matrix(W)
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
    sigma = F(float(np.linalg.svd(M, compute_uv=False)[0]))
    margin = 64 * m * n * U * F(sqrt_up(fro2_up(M))) + UNDERFLOW
    scale = Fraction(2) ** e0
    value = fup(scale * (sigma + margin + slack))
    lower = max(0.0, fdown(scale * (sigma - margin - slack)))
    return SpectralBound(value, "svd", True, lower, 0)


def _gram_bound(W64: np.ndarray, method: str, iterations: int | None, rtol: float, seed: int) -> SpectralBound:
    M, e0, scale_slack = _scaled(W64)
    if M.shape[0] > M.shape[1]:
        M = M.T  # smaller Gram side: P = M M^T is min(m,n) x min(m,n)
    s, k = M.shape
    fro2_M = fro2_up(M)
    # SYRK (numpy detects A @ A.T). Symmetry of the computed P is not needed: the Gram steps use
    # sigma(A)^2 = sigma(A A^T) for any A, and the Cholesky certificate reads P's lower triangle, whose
    # symmetric completion obeys the same elementwise error bound.
    P = M @ M.T
    delta1 = gamma(k) * F(fro2_M) + k * s * UNDERFLOW
    theta, y = _lanczos_top(P, 48 if s > 64 else s, seed)
    lower_M = _lower_from_vector(M, y, fro2_M)

    def finish(bound_M: Fraction, name: str, steps: int) -> SpectralBound:
        value = fup(Fraction(2) ** e0 * (bound_M + scale_slack))
        lower = fdown(Fraction(2) ** e0 * F(lower_M))
        return SpectralBound(value, name, False, lower, steps)

    if method == "gram-cholesky":
        mu = theta * (1 + rtol / 2)
        for _ in range(3):
            lam = _cholesky_certificate(P, mu)
            if lam is not None:
                bound_M = Fraction(sqrt_up(lam + delta1))
                if bound_M <= (1 + 2 * Fraction(rtol)) * F(lower_M) or lower_M == 0:
                    return finish(bound_M, "gram-cholesky", 1)
                break  # certified but loose (poor estimate): tighten with Gram iteration instead
            mu *= 1 + 2 * rtol
    # Gram iteration from P (the first step is already done).
    max_steps = iterations if iterations is not None else _worst_case_gram_steps(s, 1 + 2 * rtol)
    scales: list[int] = []
    deltas: list[Fraction] = [delta1]
    cur, steps = P, 1
    while True:
        fro2_cur = fro2_up(cur)
        if fro2_cur == 0.0:  # P underflowed to zero: sigma(M)^2 <= delta1 only
            return finish(Fraction(sqrt_up(delta1)), "gram", steps)
        e = math.frexp(math.sqrt(fro2_cur))[1]
        Mt = np.ldexp(cur, -e)  # exact up to subnormal underflow (slack below)
        scales.append(e)
        fro2_t = fro2_up(Mt)
        bound_M = _gram_unwind(fro2_t, scales, deltas, s * UNDERFLOW)
        if steps > 1:  # refine the attained lower bound: y <- G_t y is 2^(t-1) power steps at once
            y = Mt @ y
            nrm = float(np.linalg.norm(y))
            if nrm > 0 and math.isfinite(nrm):
                y = y / nrm
                lower_M = max(lower_M, _lower_from_vector(M, y, fro2_M))
        done = steps >= max_steps
        if iterations is None and bound_M <= (1 + Fraction(rtol)) * F(lower_M):
            done = True
        if done:
            return finish(bound_M, "gram", steps)
        cur = Mt @ Mt.T  # SYRK; sigma(Mt)^2 = sigma(Mt Mt^T)
        deltas.append(gamma(s) * F(fro2_t) + s * s * UNDERFLOW)
        steps += 1


def _cholesky_certificate(P: np.ndarray, mu: float) -> Fraction | None:
    """Upper bound on lambda_max(P_L) if the Cholesky factorisation of mu I - P succeeds, else None.

    LAPACK reads one triangle only, so the matrix certified is P_L, the symmetric completion of that
    triangle (equal to P when P is symmetric); it obeys the same elementwise error bound as P.
    """
    n = P.shape[0]
    A = -P  # exact
    diag = arr_down(mu - np.diagonal(P))  # <= mu - p_ii: A = mu I - P - D with D >= 0 diagonal
    A[np.diag_indices(n)] = diag
    try:
        R = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None
    fro2_R = fro2_up(R)
    if not math.isfinite(fro2_R):
        return None
    # mu I - P >= A >= -gamma ||R||_F^2 I  =>  lambda_max(P) <= mu + gamma ||R||_F^2
    return F(mu) + gamma(2 * n + 4) * F(fro2_R) + n * n * UNDERFLOW


def power_iteration_lower_bound(W: Any, iterations: int = 100, seed: int = 0) -> float:
    """An attained LOWER bound on ``sigma_max(W)``: ``||W v|| / ||v||`` for the final power-iteration vector.

    Power iteration on ``W^T W`` (``v <- W^T W v / ||.||``) from a seeded Gaussian start; the returned
    ratio is rounded down including the matrix-vector rounding error, so it never exceeds the exact
    ``sigma_max``. It converges from below; how fast depends on the spectral gap.
    """
    W64 = check_matrix(W)
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
    lower = _lower_from_vector(MT, v, fro2_up(M))
    return max(0.0, fdown(Fraction(2) ** e0 * F(lower)))
