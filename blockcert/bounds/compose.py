"""``blockcert bound``: Theorem 1 instantiated from a run's certificates, beside what the stitched model did.

Theorem 1 (paper §5, eq. 14): if block ``i``'s surrogate satisfies ``||B̂_i(x^(i)) − B_i(x^(i))|| ≤ ε_i`` on
the baseline trajectory and ``B̂_i`` is ``L_i``-Lipschitz on a region holding both trajectories, then the
stitched model's deviation after block ``k`` is at most ``δ_k = Σ_{i<k} ε_i Π_{i<j<k} L_j``. We evaluate it
in exact rationals (Horner: ``δ_{i+1} = L_i δ_i + ε_i``) from the numbers in the block certificates and
round outward only when printing. Norms are over the whole sequence (Frobenius), so ε_i is the certified
``epsilon_seq`` (max over prompts of the sequence-norm replay error), not the per-token ε of eq. (4).

Variants reported (each labelled): the sound analytic bound; a sound mixed bound that uses a block's
hybrid constant only where the accumulated bound stays inside that block's hybrid radius; the paper's
all-hybrid bound with the blocks where its hypothesis fails; the per-token-ε version with its norm
mismatch; and the Σ ε_i special case. See docs/bounds.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts import records as R
from blockcert.artifacts.layout import FULL_EVAL, MANIFEST
from blockcert.bounds.rounding import fup
from blockcert.bounds.theorem import GlobalBound, decimal_up, global_bound
from blockcert.errors import UserError

DIGITS = 17


@attrs.frozen
class Hypothesis:
    name: str
    status: str  # "certified" | "measured" | "checked" | "empirical" | "violated"
    detail: str


@attrs.frozen
class Variant:
    """One instantiation of Theorem 1: the bound after the last block, and after every block."""

    name: str
    sound: bool  # a valid upper bound under the listed hypotheses
    label: str
    bound: GlobalBound
    per_layer: tuple[Fraction, ...]  # δ_1..δ_L (exact)
    lips: tuple[str, ...] = ()  # which constant each block used ("analytic" / "hybrid"), where it varies

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "sound": self.sound, "label": self.label,
            "bound": {"decimal": self.bound.decimal, "upper": _json_float(self.bound.upper), "log10": log10(self.bound.exact)},
            "per_layer": [{"layer": k + 1, "decimal": decimal_up(d, DIGITS), "upper": _json_float(fup(d))}
                          for k, d in enumerate(self.per_layer)],
            **({"lips": list(self.lips)} if self.lips else {}),
        }


@attrs.frozen
class BlockInputs:
    """What Theorem 1 takes from one block certificate."""

    index: int
    stitched: bool
    epsilon_token: float
    epsilon_seq: float
    analytic: float | None  # None: no finite certified bound
    hybrid: float | None
    hybrid_input_radius: float
    empirical_lower: float
    min_scale1: float
    min_scale2: float
    K_attn: float | None
    margin: float
    seq_len: int


@attrs.frozen
class BoundReport:
    root: Path
    n_blocks: int
    d_model: int
    stitched_blocks: tuple[int, ...]
    blocks: tuple[BlockInputs, ...]
    variants: tuple[Variant, ...]
    sum_eps: GlobalBound
    observed_max: float | None  # max over layers and tokens of ||x̂^(l) − x^(l)|| (full/eval.json)
    observed_layer_max: tuple[float, ...] | None
    hypotheses: tuple[Hypothesis, ...]

    @property
    def sound(self) -> Variant:
        return next(v for v in self.variants if v.name == "mixed")

    @property
    def holds(self) -> bool | None:
        """Whether every sound variant is ≥ the observed deviation at every layer (None: nothing observed)."""
        if self.observed_layer_max is None:
            return None
        return all(d >= Fraction(o) for v in self.variants if v.sound for d, o in zip(v.per_layer, self.observed_layer_max))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.root), "n_blocks": self.n_blocks, "d_model": self.d_model,
            "stitched_blocks": list(self.stitched_blocks),
            "blocks": [{k: _json_float(v) if isinstance(v, float) else v for k, v in attrs.asdict(b).items()} for b in self.blocks],
            "variants": [v.to_dict() for v in self.variants],
            "sum_eps": {"decimal": self.sum_eps.sum_eps_decimal, "upper": _json_float(self.sum_eps.sum_eps_upper),
                        "lips_le_one": self.sum_eps.lips_le_one},
            "observed": None if self.observed_max is None else {
                "max_residual_error": self.observed_max, "layer_max": list(self.observed_layer_max or ()),
                "bound_over_observed_log10": _ratio_log10(self.sound.bound.exact, self.observed_max)},
            "holds": self.holds,
            "hypotheses": [attrs.asdict(h) for h in self.hypotheses],
        }


def _json_float(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def sci_up(q: Fraction, digits: int = 4) -> str:
    """``q`` rounded up to ``digits`` significant digits, in scientific notation (any magnitude)."""
    if q == 0:
        return "0"
    from decimal import Decimal

    return f"{Decimal(decimal_up(q, digits)):.{digits - 1}E}"


def log10(q: Fraction) -> float | None:
    """log10 of a positive rational, even far beyond the float range (None for 0)."""
    if q <= 0:
        return None
    return math.log10(q.numerator) - math.log10(q.denominator)


def _ratio_log10(q: Fraction, observed: float) -> float | None:
    a = log10(q)
    return None if a is None or observed <= 0 else a - math.log10(observed)


def _horner(eps: Sequence[Fraction], lips: Sequence[Fraction]) -> list[Fraction]:
    """δ_1..δ_L with δ_0 = 0 and δ_{i+1} = L_i δ_i + ε_i (exact)."""
    out, acc = [], Fraction(0)
    for e, lip in zip(eps, lips):
        acc = acc * lip + e
        out.append(acc)
    return out


def _load_blocks(root: Path) -> tuple[list[R.BlockPredicate], R.RunManifest]:
    from blockcert.verifier.core import find_certificates, recorded_rule, verify

    root, certs = find_certificates(root)
    report = verify(root, level="hashes", policy=recorded_rule(root))
    if not report.ok:
        bad = next(c for c in report.certificates if not c.ok)
        first = next(ch for ch in bad.checks if not ch.ok)
        raise UserError(f"{root}: {bad.path} does not verify ({first.name}{': ' + first.detail if first.detail else ''})",
                        f"run `blockcert verify {root}` for every failed check; `blockcert bound` only reads verified certificates")
    preds = [R.read(R.BlockPredicate, json.loads((root / rel).read_text(encoding="utf-8"))["predicate"], str(root / rel)) for rel in certs]
    manifest = R.read(R.RunManifest, json.loads((root / MANIFEST).read_text(encoding="utf-8")), str(root / MANIFEST))
    return preds, manifest


def bound(out: str | Path, *, blocks: str | Sequence[int] | None = None) -> BoundReport:
    """Theorem 1 for the run in ``out`` (every block certified with ``run --bounds``).

    ``blocks``: which blocks are replaced by their IR (ε_i = 0 for the others). Default: the blocks the
    stitched evaluation in ``full/eval.json`` replaced, or every block if the run was not stitched.
    """
    from blockcert.spec import parse_blocks

    root = Path(out)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory", "pass the --out directory of a `blockcert run --bounds`")
    preds, manifest = _load_blocks(root)
    L, d = manifest.model.n_blocks, manifest.model.d_model
    by_index = {p.block.index: p for p in preds}
    missing = [i for i in range(L) if i not in by_index]
    if missing:
        raise UserError(f"{root} has no certificate for blocks {ranges(missing)} of {L}; Theorem 1 needs every block",
                        f"blockcert run --bounds --resume --blocks all --out {root} (with the run's --model/--prompts)")
    no_bounds = [i for i in range(L) if by_index[i].lipschitz is None]
    if no_bounds:
        raise UserError(f"the certificates of blocks {ranges(no_bounds)} in {root} log no Lipschitz bounds",
                        f"blockcert run --bounds --resume --out {root} (with the run's --model/--prompts) adds them")
    evaluation = _evaluation(root)
    if blocks is not None:
        chosen = tuple(parse_blocks(blocks, L))
    elif evaluation is not None:
        chosen = tuple(evaluation["stitched_blocks"])
    else:
        chosen = tuple(range(L))
    observed = evaluation if evaluation is not None and tuple(evaluation["stitched_blocks"]) == chosen else None
    inputs = tuple(_block_inputs(root, by_index[i], i in chosen) for i in range(L))
    return _report(root, L, d, chosen, inputs, observed)


def ranges(ids: Sequence[int]) -> str:
    ids = sorted(ids)
    parts, start = [], None
    for k, i in enumerate(ids):
        if start is None:
            start = i
        if k + 1 == len(ids) or ids[k + 1] != i + 1:
            parts.append(str(start) if start == i else f"{start}-{i}")
            start = None
    return ",".join(parts)


def _evaluation(root: Path) -> dict[str, Any] | None:
    path = root / FULL_EVAL
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _block_inputs(root: Path, pred: R.BlockPredicate, stitched: bool) -> BlockInputs:
    lip = pred.lipschitz
    assert lip is not None  # bound() refuses blocks without bounds before this
    path = root / lip.bounds
    rec = R.read(R.BoundsRecord, json.loads(path.read_text(encoding="utf-8")), str(path))
    cert = rec.certified
    return BlockInputs(
        index=pred.block.index, stitched=stitched,
        epsilon_token=float(pred.metrics.epsilon), epsilon_seq=float(lip.epsilon_seq),
        analytic=lip.analytic_upper_bound, hybrid=lip.hybrid_upper_bound,
        hybrid_input_radius=float(lip.hybrid_input_radius), empirical_lower=float(lip.empirical_lower_bound),
        min_scale1=float(cert.min_scale1), min_scale2=float(cert.min_scale2), K_attn=cert.upper["K_attn"],
        margin=float(rec.settings.margin), seq_len=int(cert.seq_len),
    )


def _report(root: Path, L: int, d: int, chosen: tuple[int, ...], blocks: tuple[BlockInputs, ...],
            evaluation: dict[str, Any] | None) -> BoundReport:
    eps = [Fraction(b.epsilon_seq) if b.stitched else Fraction(0) for b in blocks]
    unbounded = [b.index for b in blocks if b.analytic is None]
    if unbounded:
        raise UserError(f"blocks {ranges(unbounded)} have no finite certified Lipschitz bound, so Theorem 1 gives no finite bound",
                        "see docs/bounds.md (regions) — a larger --bound-margin shrinks the norm region and may help")
    analytic = [Fraction(b.analytic) for b in blocks]  # type: ignore[arg-type]
    variants = []
    # 1. sound: analytic constants everywhere
    per = _horner(eps, analytic)
    variants.append(Variant("analytic", True, "Theorem 1 with every block's certified analytic Lipschitz bound",
                            global_bound(eps, analytic, digits=DIGITS), tuple(per)))
    # 2. sound: hybrid where the accumulated bound stays inside the block's hybrid radius
    acc, chosen_lips, used = Fraction(0), [], []
    for e, b, a in zip(eps, blocks, analytic):
        ok = b.hybrid is not None and acc <= Fraction(b.hybrid_input_radius) and Fraction(b.hybrid) < a
        lip = Fraction(b.hybrid) if ok else a  # type: ignore[arg-type]  # both are valid here: take the smaller
        chosen_lips.append(lip)
        used.append("hybrid" if ok else "analytic")
        acc = acc * lip + e
    variants.append(Variant("mixed", True, "Theorem 1 with the hybrid bound wherever it is smaller and the accumulated deviation bound "
                            "stays inside that block's hybrid_input_radius, the analytic bound elsewhere",
                            global_bound(eps, chosen_lips, digits=DIGITS), tuple(_horner(eps, chosen_lips)), tuple(used)))
    # 3. the paper's all-hybrid bound, with where its hypothesis fails
    hybrid = [Fraction(b.hybrid) if b.hybrid is not None else a for b, a in zip(blocks, analytic)]
    per_h = _horner(eps, hybrid)
    outside = [b.index for b, before in zip(blocks, [Fraction(0), *per_h[:-1]]) if before > Fraction(b.hybrid_input_radius)]
    variants.append(Variant("hybrid", not outside,
                            "the paper's choice: every block's hybrid bound (local MLP bound); "
                            + ("sound: the accumulated bound stays inside every hybrid radius" if not outside else
                               f"NOT a valid bound here: the accumulated deviation bound leaves the hybrid radius before blocks {ranges(outside)}"),
                            global_bound(eps, hybrid, digits=DIGITS), tuple(per_h)))
    # 4. per-token ε (the paper's ε of eq. 4) next to sequence-norm constants
    eps_tok = [Fraction(b.epsilon_token) if b.stitched else Fraction(0) for b in blocks]
    variants.append(Variant("per-token-eps", False,
                            "per-token ε (eq. 4) with sequence-norm Lipschitz constants: mixes norms, not a bound in general "
                            "(ε_seq ≤ √T·ε_token; shown for comparison with the paper)",
                            global_bound(eps_tok, analytic, digits=DIGITS), tuple(_horner(eps_tok, analytic))))
    layer_max = tuple(float(v) for v in evaluation["metrics"]["layer_max"]) if evaluation is not None else None
    observed = float(evaluation["metrics"]["max_residual_error"]) if evaluation is not None else None
    hyps = _hypotheses(blocks, d, per, chosen_lips, used, layer_max, outside)
    return BoundReport(root, L, d, chosen, blocks, tuple(variants), global_bound(eps, analytic, digits=DIGITS), observed, layer_max,
                       tuple(hyps))


def _hypotheses(blocks: Sequence[BlockInputs], d: int, per: Sequence[Fraction], lips: Sequence[Fraction], used: Sequence[str],
                layer_max: tuple[float, ...] | None, outside: Sequence[int]) -> list[Hypothesis]:
    sqrt_d = Fraction(math.sqrt(d)) * (1 - Fraction(1, 10**12))  # rounded down
    hyps = [
        Hypothesis("ε_i on the baseline trajectory", "measured",
                   "The recursion needs ||B̂_i(x^(i)) − B_i(x^(i))|| at the traced x^(i) only; epsilon_seq is that, measured on "
                   "these prompts with the float32 replay and native block (exact for this prompt set; for other prompts it is "
                   "an empirical assumption)."),
        Hypothesis("L_i is a Lipschitz constant of B̂_i on its region", "certified",
                   "Outward-rounded upper bounds (certified spectral norms, norm-layer, attention and MLP bounds) on the IR "
                   "block, each valid on the region recorded in bounds.json."),
    ]
    # Do x̂^(i) stay in block i's norm regions? |scale(x̂_t) − scale(x_t)| ≤ ||x̂_t − x_t|| / √d, and the traced
    # scales are ≥ min_scale / margin, so a deviation below √d·min_scale·(1/margin − 1) keeps x̂_t in the region.
    prev = [Fraction(0), *per[:-1]]
    cert_ok = []
    for b, dev in zip(blocks, prev):
        room1 = sqrt_d * Fraction(b.min_scale1) * (1 / Fraction(b.margin) - 1)
        room2 = sqrt_d * Fraction(b.min_scale2) * (1 / Fraction(b.margin) - 1)
        grow = 1 + Fraction(b.K_attn) if b.K_attn is not None else None
        cert_ok.append(dev <= room1 and grow is not None and grow * dev <= room2)
    if all(cert_ok):
        hyps.append(Hypothesis("stitched trajectory inside every norm region", "certified",
                               "The analytic deviation bound itself is smaller than each block's region margin."))
    elif layer_max is not None:
        observed_in = [Fraction(0), *(Fraction(v) for v in layer_max[:-1])]
        fails = [b.index for b, o in zip(blocks, observed_in)
                 if o > sqrt_d * Fraction(b.min_scale1) * (1 / Fraction(b.margin) - 1)]
        hyps.append(Hypothesis(
            "stitched trajectory inside every norm region", "violated" if fails else "checked",
            ("the observed stitched deviation leaves the norm1 region before blocks " + ranges(fails)) if fails else
            "Checked for the norm1 regions on the stitched replay of these prompts (observed per-token deviation below "
            "√d·min_scale1·(1/margin − 1) at every block input); the norm2 regions are assumed (empirical): the bound "
            "itself is too large to guarantee them."))
    else:
        hyps.append(Hypothesis("stitched trajectory inside every norm region", "empirical",
                               "Not checked: run `blockcert stitch` to compare with the observed deviations."))
    hyps.append(Hypothesis(
        "hybrid constants only inside their radius", "checked",
        f"The mixed bound uses the hybrid constant for blocks {ranges([b.index for b, u in zip(blocks, used) if u == 'hybrid']) or 'none'} "
        "(accumulated bound ≤ hybrid_input_radius, checked exactly)"
        + (f"; the paper-style all-hybrid bound violates it before blocks {ranges(outside)}" if outside else "")))
    hyps.append(Hypothesis("exact arithmetic", "empirical",
                           "Theorem 1 is about the real-valued maps; the float32 rounding of the stitched replay away from the "
                           "traced inputs is assumed to be of the size already measured in ε_i."))
    return hyps
