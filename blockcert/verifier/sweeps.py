"""A ``blockcert edit direction-sweep`` directory: every edit certificate under ``edits/`` is verified as an
ordinary edit certificate, and the sweep's summary (``results.json``) is checked against them: each row names a
certificate that is there, and states that certificate's spec, accuracies, paired changes' counts, locality
numbers and ε_edit. So a table quoted from results.json is the certified one, or verification fails.

This module reads the directory itself; it imports nothing from the sweep code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from blockcert.artifacts.layout import CERTIFICATE, COMPLETIONS, EDIT_MANIFEST, EDIT_METRICS
from blockcert.artifacts.safeio import MAX_JSON_BYTES, read_artifact, strict_json
from blockcert.verifier.checks import Checker, guard
from blockcert.verifier.subjects import CertReport

SWEEP_MANIFEST = "sweep.json"
RESULTS = "results.json"
DIRECTION_SWEEP_KIND = "blockcert/direction-sweep/v1"


def is_direction_sweep(path: Path) -> bool:
    return path.is_dir() and (path / SWEEP_MANIFEST).is_file() and (path / "edits").is_dir()


def edit_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "edits").iterdir() if p.is_dir() and (p / CERTIFICATE).is_file())


def _name(row: dict[str, Any]) -> str:
    """The configuration's directory: L<ℓ>-ablate or L<ℓ>-add-x<s> (docs/edits.md)."""
    layer = int(row["layer"])
    return f"L{layer:02d}-ablate" if row["edit"] == "ablate" else f"L{layer:02d}-add-x{float(row['scale']):g}"


def _exact_mcnemar(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value, computed here in exact rationals (not with the sweep's code)."""
    from fractions import Fraction
    from math import comb

    if not (isinstance(gained, int) and isinstance(lost, int) and gained >= 0 and lost >= 0):
        return float("nan")
    n = gained + lost
    if n == 0:
        return 1.0
    return float(min(Fraction(1), 2 * Fraction(sum(comb(n, k) for k in range(min(gained, lost) + 1)), 2 ** n)))


def _wilson_95(correct: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval, written out from its definition (closed at 0 and 1 where it must be)."""
    if not (isinstance(correct, int) and isinstance(n, int) and 0 <= correct <= n):
        return (float("nan"), float("nan"))  # no interval: a count out of range agrees with nothing
    if n == 0:
        return (0.0, 1.0)
    z2 = 1.959963984540054 ** 2
    p = correct / n
    mid = (2 * n * p + z2) / (2 * (n + z2))
    half = (z2 ** 0.5) * (n * p * (1 - p) + z2 / 4) ** 0.5 / (n + z2)
    return (0.0 if correct == 0 else max(0.0, mid - half), 1.0 if correct == n else min(1.0, mid + half))


# A quoted statistic may differ from this module's by float rounding only: a fixed bound, not one scaled by the data.
STAT_TOL = 1e-9


def _stats_agree(stated: Any, mine: Any) -> bool:
    try:
        return all(abs(float(a) - float(b)) <= STAT_TOL for a, b in zip(stated, mine, strict=True))
    except (TypeError, ValueError):
        return False


def _json(root: Path, rel: str) -> Any:
    return strict_json(read_artifact(root, rel, MAX_JSON_BYTES), rel)


def verify_results(root: Path) -> CertReport:
    """results.json against the edit certificates it summarises (every level; the certificates themselves are
    verified separately, at the requested level)."""
    c = Checker()
    with guard(c, RESULTS):
        manifest = _json(root, SWEEP_MANIFEST)
        c.require("sweep kind", manifest.get("kind") == DIRECTION_SWEEP_KIND, DIRECTION_SWEEP_KIND, str(manifest.get("kind"))[:40])
        results = _json(root, RESULTS)
        c.require("the sweep is complete", results.get("complete") is True, True, results.get("complete"),
                  "an interrupted sweep: rerun the same command to finish it")
        rows = results["rows"]
        names = [_name(r) for r in rows]
        on_disk = [p.name for p in edit_dirs(root)]
        c.require("one row per edit certificate", sorted(names) == on_disk, len(on_disk), len(names))
        base = results["base"]
        for label in ("answer", "refuse"):
            k, n = base[f"{label}_correct"], base[f"n_{label}"]
            c.record(f"unedited {label}: Wilson interval", _stats_agree(base[f"{label}_interval"], _wilson_95(k, n)),
                     _wilson_95(k, n), base[f"{label}_interval"])
        for row, name in zip(rows, names):
            edit = f"edits/{name}"
            if not (root / edit / CERTIFICATE).is_file():
                continue
            m = _json(root, f"{edit}/{EDIT_MANIFEST}")
            metrics = _json(root, f"{edit}/{EDIT_METRICS}")
            cert_id = hashlib.sha256(read_artifact(root, f"{edit}/{CERTIFICATE}", MAX_JSON_BYTES)).hexdigest()
            for key, mine in (("model", m["model"]["name"]), ("dtype", m["model"]["dtype"]), ("corpus", m["corpus"]["description"])):
                c.record(f"{name}: {key}", results[key] == mine, mine, str(results[key])[:40])
            c.record(f"{name}: weights = the sweep's", m["model"]["weights_sha256"] == manifest["weights_sha256"],
                      manifest["weights_sha256"][:16], m["model"]["weights_sha256"][:16])
            c.record(f"{name}: decoding = the sweep's", m["decoding"] == manifest["decoding"])
            loc = metrics["locality"]
            stated = {"spec": row["spec"], "certificate_id": row["certificate_id"], "direction_sha256": row["direction_sha256"],
                      "answer_correct": row["answer_correct"], "refuse_correct": row["refuse_correct"], "n_answer": row["n_answer"],
                      "n_refuse": row["n_refuse"], "kl_mean": row["kl_mean"], "kl_max": row["kl_max"],
                      "benign_unchanged": row["benign_unchanged"], "ppl_base": row["ppl_base"], "ppl_edited": row["ppl_edited"],
                      "epsilon_edit": row["epsilon_edit"]}
            certified = {"spec": m["edit"]["spec"], "certificate_id": cert_id, "direction_sha256": m["edit"]["direction"]["sha256"],
                         "answer_correct": metrics["after"]["answer_correct"], "refuse_correct": metrics["after"]["refuse_correct"],
                         "n_answer": metrics["after"]["n_answer"], "n_refuse": metrics["after"]["n_refuse"],
                         "kl_mean": loc["neutral"]["kl_mean"], "kl_max": loc["neutral"]["kl_max"],
                         "benign_unchanged": loc["benign"]["unchanged"], "ppl_base": loc["stress"]["ppl_base"],
                         "ppl_edited": loc["stress"]["ppl_edited"], "epsilon_edit": metrics["epsilon_edit"]}
            before = metrics["before"]
            for label in ("answer", "refuse"):
                unedited = (before[f"{label}_correct"], before[f"n_{label}"])
                c.record(f"{name}: unedited {label} = the sweep's", unedited == (base[f"{label}_correct"], base[f"n_{label}"]),
                         unedited, (base[f"{label}_correct"], base[f"n_{label}"]))
                k, n = row[f"{label}_correct"], row[f"n_{label}"]
                c.record(f"{name}: {label} Wilson interval", _stats_agree(row[f"{label}_interval"], _wilson_95(k, n)),
                         _wilson_95(k, n), row[f"{label}_interval"])
                change = row[f"{label}_change"]
                p = _exact_mcnemar(change["gained"], change["lost"])
                c.record(f"{name}: {label} McNemar p", _stats_agree([change["p_value"]], [p]), p, change["p_value"])
            wrong = sorted(k for k in stated if stated[k] != certified[k])
            c.record(f"{name}: results.json row = its certificate", not wrong, "equal", ", ".join(wrong)[:60])
            # the paired changes, recounted from the certified completions
            comp = [strict_json(line, f"{edit}/{COMPLETIONS}") for line in read_artifact(root, f"{edit}/{COMPLETIONS}", 1 << 28).splitlines()]
            for label in ("answer", "refuse"):
                pairs = [(r["base_judgement"]["correct"], r["edited_judgement"]["correct"]) for r in comp if r["label"] == label]
                mine = (sum(1 for b, a in pairs if a and not b), sum(1 for b, a in pairs if b and not a))
                got = (row[f"{label}_change"]["gained"], row[f"{label}_change"]["lost"])
                c.record(f"{name}: {label} gained/lost = the completions'", got == mine, mine, got)
    return CertReport(RESULTS, "direction-sweep", None, None, None, tuple(c.checks))
