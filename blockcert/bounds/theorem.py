"""Theorem 1 (paper eq. 14) evaluated in exact rationals and rounded outward: the global bound from per-block errors and Lipschitz constants."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, Decimal, localcontext
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from blockcert.bounds.rounding import fup


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


def decimal_up(q: Fraction, digits: int) -> str:
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
        upper=fup(acc),
        decimal=decimal_up(acc, digits),
        sum_eps_exact=total,
        sum_eps_upper=fup(total),
        sum_eps_decimal=decimal_up(total, digits),
        lips_le_one=all(lip <= 1 for lip in L),
    )
