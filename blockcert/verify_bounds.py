"""Verifier checks of the Lipschitz bounds a block certificate logs (``predicate.lipschitz``, ``bounds.json``).

* ``hashes``: the record's shape, its headline numbers equal the certificate's, the compositions
  ``(1 + K_attn)(1 + K_mlp)`` (or ``1 + K_attn + K_mlp``) re-done in exact rationals and rounded up,
  ``hybrid_input_radius`` re-derived, every spectral ``lower <= upper``, the empirical lower bound not
  above an upper bound, and ``epsilon_seq`` recomputed from the stored per-token errors.
* ``replay``: the certified part recomputed from the IR and the traces (numpy float64; never torch) and
  compared within a relative ``BOUND_RTOL`` (another BLAS may round the spectral estimates differently).
* ``full``: also the empirical lower bound, recomputed with torch.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from .lipschitz import (
    LABELS, LIPSCHITZ_FORMAT, LOWER_LABEL, NORM, SPECTRAL_MATRICES, SUMMARY_FIELDS, UPPER_FIELDS, BoundSettings, epsilon_seq,
    lower_bound_input,
)
from .safeio import read_safetensors, strict_json

BOUND_RTOL = 1e-6
RECORD_FIELDS = {"format", "block", "norm", "settings", "certified", "epsilon_seq", "empirical_lower_bound", "labels"}
CERTIFIED_FIELDS = {"upper", "hybrid_input_radius", "min_scale1", "min_scale2", "seq_len", "tokens", "residual", "regions", "spectral"}
LOWER_FIELDS = {"value", "prompt", "tokens", "iterations", "dtype", "label"}


def _num(x: Any) -> Fraction | None:
    """Exact value of a JSON number; None for null (no finite bound)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"not a finite number: {x!r}")
    return Fraction(x)


def _near(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) <= BOUND_RTOL * max(abs(float(a)), abs(float(b)))


def check_lipschitz(c: Any, pred: dict[str, Any], contents: dict[str, bytes], block_dirname: str, *, exact_keys: Any) -> dict[str, Any] | None:
    """Level-hashes checks; returns the parsed bounds.json record (None when the certificate logs no bounds)."""
    from .bounds import _fdown, _fup

    summary = pred["lipschitz"]
    if summary is None:
        c.require("no bounds.json without predicate.lipschitz", f"{block_dirname}/bounds.json" not in contents, "absent", "present")
        return None
    exact_keys(c, "predicate.lipschitz", summary, set(SUMMARY_FIELDS))
    path = f"{block_dirname}/bounds.json"
    c.require("lipschitz.bounds path", summary["bounds"] == path, path, summary["bounds"])
    c.require("bounds.json referenced", path in contents, path, "", "the certificate must cover the bounds it logs")
    rec = strict_json(contents[path], path)
    exact_keys(c, path, rec, RECORD_FIELDS)
    c.require(f"{path} format", rec["format"] == LIPSCHITZ_FORMAT, LIPSCHITZ_FORMAT, rec["format"])
    c.require(f"{path} block", rec["block"] == pred["block"]["index"], pred["block"]["index"], rec["block"])
    c.require(f"{path} norm", rec["norm"] == NORM, NORM, rec["norm"])
    exact_keys(c, f"{path} settings", rec["settings"], {a.name for a in attrs.fields(BoundSettings)})
    settings = BoundSettings(**rec["settings"])
    c.require(f"{path} labels", rec["labels"] == LABELS, "the standard labels", str(rec["labels"])[:40])
    cert = rec["certified"]
    exact_keys(c, f"{path} certified", cert, CERTIFIED_FIELDS)
    exact_keys(c, f"{path} certified.upper", cert["upper"], set(UPPER_FIELDS))
    low_rec = rec["empirical_lower_bound"]
    exact_keys(c, f"{path} empirical_lower_bound", low_rec, LOWER_FIELDS)
    c.require(f"{path} empirical_lower_bound settings", low_rec["iterations"] == settings.lower_iterations and low_rec["dtype"] == "float64"
              and low_rec["label"] == LOWER_LABEL, f"{settings.lower_iterations} iterations, float64, standard label",
              f"{low_rec['iterations']}, {low_rec['dtype']}")
    up = {k: _num(cert["upper"][k]) for k in UPPER_FIELDS}
    for key, value in (("analytic_upper_bound", cert["upper"]["analytic_upper_bound"]), ("hybrid_upper_bound", cert["upper"]["hybrid_upper_bound"]),
                       ("hybrid_input_radius", cert["hybrid_input_radius"]), ("empirical_lower_bound", rec["empirical_lower_bound"]["value"]),
                       ("epsilon_seq", rec["epsilon_seq"])):
        c.require(f"lipschitz.{key} = bounds.json", summary[key] == value, summary[key], value)
    # the compositions, in exact rationals, rounded up as the producer must have
    one = Fraction(1)
    sequential = cert["residual"] == "sequential"
    c.require(f"{path} residual", cert["residual"] in ("sequential", "parallel"), "sequential|parallel", cert["residual"])
    for total, part in (("analytic_upper_bound", "K_mlp"), ("hybrid_upper_bound", "K_mlp_local")):
        ka, km = up["K_attn"], up[part]
        want = None if ka is None or km is None else _fup((one + ka) * (one + km) if sequential else one + ka + km)
        c.record(f"{total} = composition of K_attn, {part}", cert["upper"][total] == want, cert["upper"][total], want)
    if sequential:
        r_in = 0.0 if up["K_attn"] is None else _fdown(Fraction(settings.radius) / (one + up["K_attn"]))
    else:
        r_in = settings.radius
    c.record("hybrid_input_radius = radius / (1 + K_attn)", cert["hybrid_input_radius"] == r_in, cert["hybrid_input_radius"], r_in)
    for name, s in cert["spectral"].items():
        exact_keys(c, f"{path} spectral {name}", s, {"shape", "upper", "lower", "method", "exact"})
        c.require(f"spectral {name}", name in SPECTRAL_MATRICES and 0 <= s["lower"] and (s["upper"] is None or s["lower"] <= s["upper"]),
                  "lower <= upper", f"{s.get('lower')} / {s.get('upper')}")
    lower = _num(rec["empirical_lower_bound"]["value"])
    finite_uppers = [u for u in (up["analytic_upper_bound"], up["hybrid_upper_bound"]) if u is not None]
    c.record("empirical lower <= certified upper", lower is not None and lower >= 0 and all(lower <= u for u in finite_uppers),
             rec["empirical_lower_bound"]["value"], float(min(finite_uppers)) if finite_uppers else None)
    per_token = read_safetensors(contents[f"{block_dirname}/errors.safetensors"], f"{block_dirname}/errors.safetensors")
    errors = [np.asarray(v) for k, v in sorted(per_token.items()) if k.endswith(".error")]
    eps = epsilon_seq(errors)
    c.record("epsilon_seq from errors.safetensors", rec["epsilon_seq"] == eps, rec["epsilon_seq"], eps)
    return rec


def recheck_lipschitz(c: Any, rec: dict[str, Any], ir: Any, inputs: list[np.ndarray], *, with_lower: bool) -> None:
    """Level replay (and full): recompute the certified part (and the empirical lower bound) and compare."""
    from .lipschitz import certified_part, empirical_lower

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
