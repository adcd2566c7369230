"""Verifier checks of the Lipschitz bounds a block certificate logs (``predicate.lipschitz``, ``bounds.json``).

* ``hashes``: the record's shape, its headline numbers equal the certificate's, the compositions
  ``(1 + K_attn)(1 + K_mlp)`` (or ``1 + K_attn + K_mlp``) re-done in exact rationals and rounded up,
  ``hybrid_input_radius`` re-derived, every spectral ``lower <= upper``, the empirical lower bound not
  above an upper bound, and ``epsilon_seq`` recomputed from the stored per-token errors.
* ``replay`` (either reference): :func:`recheck_lipschitz`, every certified number checked against the
  independent, simpler implementation of :mod:`blockcert.verifier.reference.bounds` (exact SVDs, plain float64):
  not below it (soundness) and not more than a stated ratio above it (tightness). Never imports torch or
  the producer's bound code. With ``--reference torch`` the verifier also re-runs the producer's own code
  (:mod:`blockcert.verifier.bounds_exact`), and at level ``full`` the empirical lower bound with autograd.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from blockcert.artifacts import records as R
from blockcert.artifacts.bounds_record import (
    LABELS,
    LIPSCHITZ_FORMAT,
    LOWER_LABEL,
    NORM,
    SPECTRAL_MATRICES,
    SUMMARY_FIELDS,
    UPPER_FIELDS,
    BoundSettings,
)
from blockcert.artifacts.safeio import read_safetensors, strict_json

RECORD_FIELDS = R.keys(R.BoundsRecord)
CERTIFIED_FIELDS = R.keys(R.CertifiedBounds)
LOWER_FIELDS = R.keys(R.EmpiricalLowerBound)


def _num(x: Any) -> Fraction | None:
    """Exact value of a JSON number; None for null (no finite bound)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"not a finite number: {x!r}")
    return Fraction(x)


def _fup(q: Fraction | float | int) -> float:
    """The smallest float >= q, exactly (inf beyond the float range)."""
    q = Fraction(q)
    try:
        f = float(q)  # int / int true division: correctly rounded to nearest
    except OverflowError:
        return math.inf if q > 0 else -sys.float_info.max
    return math.nextafter(f, math.inf) if Fraction(f) < q else f


def _fdown(q: Fraction | float | int) -> float:
    """The largest float <= q, exactly (-inf beyond the float range)."""
    q = Fraction(q)
    try:
        f = float(q)
    except OverflowError:
        return sys.float_info.max if q > 0 else -math.inf
    return math.nextafter(f, -math.inf) if Fraction(f) > q else f


def _sqrt_up(x: Fraction) -> float:
    """The smallest float s with s*s >= x (x >= 0), exactly."""
    if x <= 0:
        return 0.0
    try:
        s = math.sqrt(float(x))
    except OverflowError:
        return math.inf
    while s > 0 and Fraction(math.nextafter(s, 0.0)) ** 2 >= x:
        s = math.nextafter(s, 0.0)
    while Fraction(s) ** 2 < x:
        s = math.nextafter(s, math.inf)
    return s


def epsilon_seq(errors: list[np.ndarray]) -> float:
    """max over prompts of sqrt(sum_t e(p,t)^2), in exact rationals from the stored float64 errors, rounded up."""
    best = Fraction(0)
    for e in errors:
        best = max(best, sum((Fraction(float(v)) ** 2 for v in np.asarray(e, np.float64).ravel()), Fraction(0)))
    return _sqrt_up(best)


def check_lipschitz(c: Any, pred: dict[str, Any], contents: dict[str, bytes], block_dirname: str, *, exact_keys: Any) -> dict[str, Any] | None:
    """Level-hashes checks; returns the parsed bounds.json record (None when the certificate logs no bounds)."""
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




#: soundness allowance: a claimed upper bound may sit this far (relative) below the reference, which is
#: evaluated in plain float64 without directed rounding (its own error is a few ulps, far below this)
SOUND_DELTA = 1e-9
#: tightness of a certified spectral norm: the producer's ``auto`` method guarantees ``upper <= (1 + 2 rtol) σ_max``
#: with rtol = 0.005 (Gram / Gram-Cholesky; the SVD method is within 1e-9), plus outward rounding
SPECTRAL_RATIO = 1.0101
#: tightness of each certified field, claimed <= RATIO x reference. Each is SPECTRAL_RATIO to the number of
#: certified spectral norms multiplied together in the field's formula (docs/bounds.md §3-§5): K_attn has
#: ‖W_Q‖‖W_K‖‖W_V‖‖W_O‖, the MLP bounds ‖W_down‖ and ‖W_up‖ or ‖W_gate‖ or ‖[W_gate W_up]‖, the compositions
#: both; K_norm1 none (outward rounding only). Measured on random-init GPT-2 / Llama blocks, a 256-wide Llama
#: block whose large matrices take the Gram-Cholesky path, and the golden runs (tests/test_reference_bounds.py):
#: at most 1.0013 (K_attn), 1.0025 (K_mlp, K_mlp_local), 1.0038 (compositions), 1.0013 (spectral), 1 + 3e-9 where
#: every matrix is small enough for the SVD method; the ratios below are the documented guarantee, well above that.
RATIOS = {
    "K_norm1": 1 + 1e-6,
    "K_attn": SPECTRAL_RATIO**4,
    "K_mlp": SPECTRAL_RATIO**2,
    "K_mlp_local": SPECTRAL_RATIO**2,
    "analytic_upper_bound": SPECTRAL_RATIO**6,
    "hybrid_upper_bound": SPECTRAL_RATIO**6,
}
#: min_scale1/min_scale2 are re-derived from the traces with the same definition (float64 scales)
SCALE_RTOL = 1e-9


def _bracket(c: Any, what: str, claimed: Any, ref: float, ratio: float) -> None:
    """``claimed`` (null = no finite bound) against the reference value: sound and within ``ratio``."""
    if not math.isfinite(ref):
        c.record(f"independent {what}: no finite bound", claimed is None, claimed, "none (reference is not finite)")
        return
    if claimed is None:
        c.record(f"independent {what}: a finite bound", False, "null", ref, "the reference bound is finite")
        return
    claimed = float(claimed)
    c.record(f"independent {what} >= reference (sound)", claimed >= ref * (1 - SOUND_DELTA), claimed, ref,
             "below the simple reference: not an upper bound of what the formula bounds")
    c.record(f"independent {what} <= {ratio:.6g} x reference (tight)", claimed <= ref * ratio, claimed, ref * ratio,
             f"more than {ratio:.6g} x the simple reference {ref:.6g}")


def recheck_lipschitz(c: Any, rec: dict[str, Any], ir: Any, inputs: list[np.ndarray]) -> None:
    """Level replay: every certified number of ``bounds.json`` against :mod:`blockcert.verifier.reference.bounds`."""
    from blockcert.verifier.reference.bounds import certified_part

    settings = BoundSettings(**rec["settings"])
    ref = certified_part(ir, inputs, settings)
    claimed = rec["certified"]
    for key in UPPER_FIELDS:
        _bracket(c, key, claimed["upper"][key], ref["upper"][key], RATIOS[key])
    for key in ("seq_len", "tokens", "residual"):
        c.record(f"independent {key}", claimed[key] == ref[key], claimed[key], ref[key])
    for key in ("min_scale1", "min_scale2"):
        value = claimed[key]
        ok = isinstance(value, (int, float)) and abs(float(value) - ref[key]) <= SCALE_RTOL * abs(ref[key])
        c.record(f"independent {key}", ok, value, ref[key], f"margin x the smallest traced scale, within rtol {SCALE_RTOL}")
    r_ref, r = ref["hybrid_input_radius"], float(claimed["hybrid_input_radius"])
    if ir.residual == "sequential":  # radius / (1 + K_attn): K_attn within its ratio gives this bracket
        ok = r_ref / RATIOS["K_attn"] <= r <= r_ref * (1 + SOUND_DELTA)
    else:
        ok = r == r_ref
    c.record("independent hybrid_input_radius", ok, r, r_ref, "radius / (1 + K_attn) (sequential), radius (parallel)")
    c.record("independent spectral matrices", sorted(claimed["spectral"]) == sorted(ref["spectral"]),
             ",".join(sorted(claimed["spectral"])), ",".join(sorted(ref["spectral"])))
    for name, mine in ref["spectral"].items():
        theirs = claimed["spectral"].get(name)
        if theirs is None:
            continue
        sigma, upper, lower = mine["sigma"], theirs["upper"], theirs["lower"]
        c.record(f"independent spectral {name} shape", theirs["shape"] == mine["shape"], theirs["shape"], mine["shape"])
        c.record(f"independent spectral {name} lower <= sigma_max", float(lower) <= sigma * (1 + SOUND_DELTA), lower, sigma)
        c.record(f"independent spectral {name} upper >= sigma_max (sound)", upper is not None and float(upper) >= sigma * (1 - SOUND_DELTA),
                 upper, sigma)
        c.record(f"independent spectral {name} upper <= {SPECTRAL_RATIO} x sigma_max (tight)",
                 upper is not None and float(upper) <= sigma * SPECTRAL_RATIO + 1e-300, upper, sigma * SPECTRAL_RATIO)
