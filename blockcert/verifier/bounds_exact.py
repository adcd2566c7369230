"""``verify --reference torch``: the certified part of ``bounds.json`` re-run with the producer's own code.

The exact re-run of :func:`blockcert.bounds.record.certified_part` (same code, so the same numbers up to another
BLAS's rounding, compared within a relative ``BOUND_RTOL``), and at level ``full`` the empirical lower bound
re-derived with torch autograd. It shares the producer's code, so it cannot catch a wrong bound formula: the
independent check is :func:`blockcert.verifier.bounds.recheck_lipschitz` (:mod:`blockcert.verifier.reference.bounds`),
which runs with either reference. Used only with ``--reference torch``; the numpy path never imports this module.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from blockcert.artifacts.bounds_record import UPPER_FIELDS, BoundSettings, lower_bound_input

BOUND_RTOL = 1e-6


def _near(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= BOUND_RTOL * max(abs(float(a)), abs(float(b)))


def recheck_exact(c: Any, rec: dict[str, Any], ir: Any, inputs: list[np.ndarray], *, with_lower: bool) -> None:
    """Level replay (and full): recompute the certified part (and the empirical lower bound) and compare."""
    from blockcert.bounds.record import certified_part, empirical_lower

    settings = BoundSettings(**rec["settings"])
    mine = certified_part(ir, inputs, settings)
    claimed = rec["certified"]
    for key in UPPER_FIELDS:
        c.record(f"recomputed {key}", _near(claimed["upper"][key], mine["upper"][key]), claimed["upper"][key], mine["upper"][key])
    for key in ("hybrid_input_radius", "min_scale1", "min_scale2"):
        c.record(f"recomputed {key}", _near(claimed[key], mine[key]), claimed[key], mine[key])
    for key in ("seq_len", "tokens", "residual", "regions"):
        c.record(f"recomputed {key}", claimed[key] == mine[key] or key == "regions" and _regions_near(claimed[key], mine[key]),
                 str(claimed[key])[:40], str(mine[key])[:40])
    c.record("recomputed spectral matrices", sorted(claimed["spectral"]) == sorted(mine["spectral"]), ",".join(sorted(claimed["spectral"])),
             ",".join(sorted(mine["spectral"])))
    for name, s in mine["spectral"].items():
        theirs = claimed["spectral"].get(name, {})
        same = (_near(theirs.get("upper"), s["upper"]) and _near(theirs.get("lower"), s["lower"])
                and all(theirs.get(k) == s[k] for k in ("shape", "method", "exact")))
        c.record(f"recomputed spectral {name}", same, theirs.get("upper"), s["upper"])
    if with_lower:
        low = empirical_lower(ir, inputs, settings.lower_iterations)
        theirs = rec["empirical_lower_bound"]
        same_input = theirs["prompt"] == low["prompt"] == lower_bound_input(inputs) and theirs["tokens"] == low["tokens"]
        c.record("recomputed empirical lower bound", same_input and abs(theirs["value"] - low["value"]) <= 1e-6 * max(1.0, low["value"]),
                 theirs["value"], low["value"])


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|inf")


def _regions_near(a: dict[str, str], b: dict[str, str]) -> bool:
    """Region strings embed floats (min scales, radii) that another BLAS may round differently: the same text
    around the numbers, and each number within BOUND_RTOL."""
    if not (isinstance(a, dict) and sorted(a) == sorted(b)):
        return False
    for key in a:
        if not isinstance(a[key], str) or _NUMBER.split(a[key]) != _NUMBER.split(b[key]):
            return False
        na, nb = _NUMBER.findall(a[key]), _NUMBER.findall(b[key])
        if len(na) != len(nb) or not all(x == y or _near(float(x), float(y)) for x, y in zip(na, nb)):
            return False
    return True
