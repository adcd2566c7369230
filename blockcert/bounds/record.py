"""Per-block Lipschitz bounds as a certificate artifact (``block_<idx>/bounds.json``).

``blockcert run --bounds`` computes, for every block it certifies, the quantities of
:mod:`blockcert.bounds` on the extracted IR and its traced inputs and writes them, each labelled as a
certified upper bound (with the region it holds on), an exact measured quantity, or an attained lower
bound. The certificate hashes the file and repeats its headline numbers under ``predicate.lipschitz``.
Values that have no finite bound are written as ``null`` (JSON has no infinity). See docs/bounds.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from blockcert.artifacts.bounds_record import (  # noqa: F401  (re-exported: ``from .lipschitz import X`` keeps working)
    LABELS,
    LIPSCHITZ_FORMAT,
    LOWER_LABEL,
    NORM,
    SPECTRAL_MATRICES,
    SUMMARY_FIELDS,
    UPPER_FIELDS,
    BoundSettings,
    lower_bound_input,
)


def finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def epsilon_seq(errors: Sequence[np.ndarray]) -> float:
    """max over prompts of sqrt(Σ_t e(p,t)²): the block's error in the sequence norm, rounded up.

    This is the ε that Theorem 1 needs next to sequence-norm Lipschitz constants; it is at most
    sqrt(T_p)·ε_token. Computed in exact rationals from the stored (float64) per-token errors.
    """
    from blockcert.bounds.rounding import sqrt_up

    best = Fraction(0)
    for e in errors:
        best = max(best, sum((Fraction(float(v)) ** 2 for v in np.asarray(e, np.float64)), Fraction(0)))
    return sqrt_up(best)


def spectral_table(ir: Any) -> dict[str, dict[str, Any]]:
    """Certified spectral-norm bounds of every weight matrix of the block (``lower <= σ_max <= upper``)."""
    from blockcert.bounds import spectral_upper_bound

    out: dict[str, dict[str, Any]] = {}
    for name in SPECTRAL_MATRICES:
        part, field = name.split(".")
        lin = getattr(getattr(ir, part), field, None)
        if lin is None:
            continue
        sb = spectral_upper_bound(np.asarray(lin.weight))
        out[name] = {"shape": list(np.shape(lin.weight)), "upper": finite_or_none(sb.value), "lower": sb.lower,
                     "method": sb.method, "exact": sb.exact}
    return out


def empirical_lower(ir: Any, inputs: Sequence[np.ndarray], iterations: int) -> dict[str, Any]:
    """Jacobian spectral norm of the IR replay at one traced input (float64 torch, JVP/VJP power iteration)."""
    from blockcert.bounds import empirical_lower_bound
    from blockcert.interpreter import replay

    k = lower_bound_input(inputs)
    x = np.asarray(inputs[k], np.float64)[None]
    value = empirical_lower_bound(lambda t: replay(ir, t), x, iterations=iterations, seed=0)
    return {"value": value, "prompt": k, "tokens": int(x.shape[1]), "iterations": iterations, "dtype": "float64",
            "label": LOWER_LABEL}


def certified_part(ir: Any, inputs: Sequence[np.ndarray], settings: BoundSettings) -> dict[str, Any]:
    """The deterministic, numpy-only part of the record (what ``verify --level replay`` recomputes)."""
    from blockcert.bounds import block_bounds

    bb = block_bounds(ir, list(inputs), margin=settings.margin, radius=settings.radius)
    return {
        "upper": {k: finite_or_none(getattr(bb, k)) for k in UPPER_FIELDS},
        "hybrid_input_radius": bb.hybrid_input_radius,
        "min_scale1": bb.min_scale1,
        "min_scale2": bb.min_scale2,
        "seq_len": bb.seq_len,
        "tokens": bb.tokens,
        "residual": bb.residual,
        "regions": dict(bb.regions),
        "spectral": spectral_table(ir),
    }


def block_record(ir: Any, inputs: Sequence[np.ndarray], errors: Sequence[np.ndarray], settings: BoundSettings) -> dict[str, Any]:
    """The whole ``bounds.json`` record of one block."""
    from blockcert.artifacts import records as R

    return R.dump(R.BoundsRecord(
        format=LIPSCHITZ_FORMAT, block=ir.index, norm=NORM, settings=settings,
        certified=R.load(R.CertifiedBounds, certified_part(ir, inputs, settings)),
        epsilon_seq=epsilon_seq(errors),
        empirical_lower_bound=R.load(R.EmpiricalLowerBound, empirical_lower(ir, inputs, settings.lower_iterations)),
        labels=dict(LABELS),
    ))


def predicate_summary(record: dict[str, Any], path: str) -> dict[str, Any]:
    """The headline numbers a block certificate repeats under ``predicate.lipschitz``."""
    up = record["certified"]["upper"]
    return {
        "bounds": path,
        "analytic_upper_bound": up["analytic_upper_bound"],
        "hybrid_upper_bound": up["hybrid_upper_bound"],
        "hybrid_input_radius": record["certified"]["hybrid_input_radius"],
        "empirical_lower_bound": record["empirical_lower_bound"]["value"],
        "epsilon_seq": record["epsilon_seq"],
    }
