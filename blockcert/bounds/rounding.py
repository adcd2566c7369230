"""Outward rounding: exact rationals to the next float up or down, arrays rounded up, float64 error terms (γ_k)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

U = Fraction(1, 2**53)  # unit roundoff of binary64 (round to nearest)
UNDERFLOW = Fraction(1, 2**1074)  # smallest subnormal: bounds the absolute error of one op near 0
REL_SLACK = 1e-12  # slack relative to the terms' magnitude for exp/erfc evaluations: >> their ulp error


def gamma(n: int) -> Fraction:
    """gamma_n = n u / (1 - n u), exact (Higham's constant for n roundings)."""
    nu = n * U
    if nu >= 1:
        raise ValueError(f"dimension {n} too large for a float64 error bound")
    return nu / (1 - nu)


def fup(q: Fraction | float | int) -> float:
    """The smallest float >= q (inf if q is beyond the float range)."""
    q = Fraction(q)
    try:
        f = float(q)  # int / int true division: correctly rounded to nearest
    except OverflowError:
        return math.inf if q > 0 else -math.inf
    if Fraction(f) < q:
        f = math.nextafter(f, math.inf)
    return f


def fdown(q: Fraction | float | int) -> float:
    """The largest float <= q."""
    return -fup(-Fraction(q))


def sqrt_up(x: float | Fraction) -> float:
    """The smallest float s with s*s >= x, x >= 0 (exactly checked in rationals).

    The smallest, not merely one above: the verifier recomputes such values (epsilon_seq) with its own
    code and compares exactly, and sqrt of the rounded-up x can sit one ulp above it.
    """
    x = Fraction(x)
    if x <= 0:
        return 0.0
    xf = fup(x)
    if math.isinf(xf):
        return math.inf
    s = math.sqrt(xf)
    while s > 0 and Fraction(math.nextafter(s, 0.0)) ** 2 >= x:
        s = math.nextafter(s, 0.0)
    while Fraction(s) ** 2 < x:
        s = math.nextafter(s, math.inf)
    return s


def sqrt_down(x: float | Fraction) -> float:
    """A float <= sqrt(x), x >= 0."""
    x = Fraction(x)
    if x <= 0:
        return 0.0
    xf = fdown(x)
    if math.isinf(xf):
        return math.inf
    s = math.sqrt(xf)
    while s > 0 and Fraction(s) ** 2 > x:
        s = math.nextafter(s, -math.inf)
    return s


def F(x: float) -> Fraction:
    """Exact rational value of a finite float (inf raises: callers check first)."""
    return Fraction(float(x))


def arr_up(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, np.inf)


def arr_down(a: np.ndarray) -> np.ndarray:
    return np.nextafter(a, -np.inf)


def f64(a: Any) -> np.ndarray:
    """float64 copy/view of an IR tensor (exact for float16/32/64)."""
    return np.asarray(a, dtype=np.float64)


def fro2_up(a: np.ndarray) -> float:
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
    return fup(F(s) / (1 - gamma(v.size)) + v.size * UNDERFLOW)


def norm_up(a: np.ndarray) -> float:
    return sqrt_up(fro2_up(a))


def check_matrix(W: Any) -> np.ndarray:
    W64 = np.asarray(W)
    if W64.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {W64.shape}")
    if W64.dtype.kind not in "fiu":
        raise ValueError(f"expected a real matrix, got dtype {W64.dtype}")
    W64 = W64.astype(np.float64, copy=False)  # exact for float16/32/64 and small ints
    if W64.size and not (math.isfinite(float(np.max(W64))) and math.isfinite(float(np.min(W64)))):
        raise ValueError("matrix has non-finite entries")  # max/min propagate NaN and show +-inf
    return W64
