"""Verifying an edit certificate (``blockcert edit``): see :mod:`blockcert.edit.certify` for the directory layout.

* ``hashes``: canonical bytes, statement type, every subject's digest, no unreferenced file, the predicate
  equals ``edit.json``, the classifier is this verifier's own, the corpus digest, every stored judgement and
  both accuracies re-derived by re-classifying the stored completions, human-label metrics re-aggregated
  from the annotators' files.
* ``replay`` / ``full``: also load the model (``--model``, default: the name in ``edit.json``), check its
  weights digest, regenerate both sets of completions with the recorded decoding policy (they must be
  identical), and re-measure ε_edit and the final-state deviation. With ``reference="numpy"`` the
  deviations are re-measured by the float64 numpy model (:mod:`blockcert.verifier.reference.full`), which does not
  regenerate the completions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts import records as R
from blockcert.artifacts.layout import (
    CERTIFICATE,
    COMPLETIONS,
    DIRECTION_DIR,
    DIRECTION_FILES,
    DIRECTION_META,
    DIRECTION_TENSOR,
    EDIT_MANIFEST,
    EDIT_METRICS,
    ENVELOPE,
    HUMAN,
    LABELS,
)

EDIT_FILES = {EDIT_MANIFEST, COMPLETIONS, EDIT_METRICS, HUMAN, CERTIFICATE, LABELS, ENVELOPE, DIRECTION_DIR}  # the envelope: .signatures
MANIFEST_FIELDS = tuple(a.name for a in attrs.fields(R.EditManifest))
EDIT_V1 = "https://blockcert.dev/predicate/edit-certificate/v1"
EDIT_V2 = "https://blockcert.dev/predicate/edit-certificate/v2"
#: the prompt sets of the locality metrics (schema v3), fixed: a certificate cannot choose its own
NEUTRAL_PROMPTS, STRESS_PROMPTS = "builtin:default", "builtin:stress"
#: a stored direction's float32 norm may differ from 1 by float32 rounding only
DIRECTION_NORM_TOL = 1e-5
ROW_FIELDS = {"id", "label", "category", "prompt", "keywords", "base", "edited", "base_judgement", "edited_judgement"}
METRICS_FIELDS = R.keys(R.EditMetrics)


def is_edit_dir(path: Path) -> bool:
    return path.is_dir() and (path / EDIT_MANIFEST).is_file() and (path / CERTIFICATE).is_file()


def verify_edit(root: Path, *, level: str, model: str | None, reference: str = "torch", tol: Any = None, device: str = "cpu") -> Any:
    from blockcert.artifacts.safeio import MAX_JSON_BYTES, read_artifact, strict_json
    from blockcert.edit import refusal as E
    from blockcert.verifier.checks import Checker, exact_keys, guard, short
    from blockcert.verifier.subjects import CertReport, check_subjects

    c = Checker()
    rel = CERTIFICATE
    block = None
    with guard(c, rel):
        raw = read_artifact(root, rel, MAX_JSON_BYTES)
        cert = strict_json(raw, rel)
        import rfc8785

        c.require("canonical JSON (RFC 8785)", rfc8785.dumps(cert) == raw, "canonical", "not canonical")
        exact_keys(c, "statement", cert, {"_type", "subject", "predicateType", "predicate"})
        old = cert["predicateType"] == EDIT_V1  # schema v1: no device (every v1 edit ran on the CPU)
        if old and isinstance(cert.get("predicate"), dict) and cert["predicate"].get("schema_version") == 1 \
                and "device" not in cert["predicate"]:
            cert = {**cert, "predicateType": EDIT_V2, "predicate": {**cert["predicate"], "schema_version": 2, "device": "cpu"}}
        legacy = cert["predicateType"] == EDIT_V2  # schemas v1-v2: no locality metrics
        if legacy and isinstance(cert.get("predicate"), dict) and cert["predicate"].get("schema_version") == 2 \
                and isinstance(cert["predicate"].get("metrics"), dict) and "locality" not in cert["predicate"]["metrics"]:
            cert = {**cert, "predicateType": E.EDIT_PREDICATE,
                    "predicate": {**cert["predicate"], "schema_version": 3, "metrics": {**cert["predicate"]["metrics"], "locality": None}}}
        c.require("predicateType", cert["predicateType"] == E.EDIT_PREDICATE, E.EDIT_PREDICATE, cert["predicateType"])
        pred = cert["predicate"]
        block = (pred.get("edit") or {}).get("block") if isinstance(pred, dict) else None
        exact_keys(c, "predicate", pred, R.keys(R.EditPredicate))
        c.require("device", pred["device"] in ("cpu", "cuda", "mps"), "cpu|cuda|mps", short(pred["device"]))
        contents = check_subjects(root, cert, c)
        extra = sorted(p.name for p in root.iterdir() if p.name not in EDIT_FILES and not p.name.startswith("."))
        for sub in (LABELS, DIRECTION_DIR):
            if (root / sub).is_dir():
                extra += sorted(f"{sub}/{p.name}" for p in (root / sub).iterdir() if f"{sub}/{p.name}" not in contents)
        c.record("no unexpected files", not extra, "", ", ".join(extra))
        for name in (EDIT_MANIFEST, COMPLETIONS, EDIT_METRICS):
            c.require(f"{name} referenced", name in contents, name, "")
        manifest = strict_json(contents[EDIT_MANIFEST], "edit.json")
        if old and isinstance(manifest, dict) and "device" not in manifest:
            manifest = {**manifest, "device": "cpu"}
        exact_keys(c, "edit.json", manifest, set(MANIFEST_FIELDS))
        for key in MANIFEST_FIELDS:
            c.require(f"{key} = edit.json", pred[key] == manifest.get(key), short(pred[key]), short(manifest.get(key)))
        c.require("classifier is this verifier's", pred["classifier"] == E.classifier_record(), pred["classifier"]["sha256"][:16],
                  E.classifier_record()["sha256"][:16], "the markers or rule differ from this version's classifier")
        rows = [strict_json(line, f"completions.jsonl line {n}") for n, line in enumerate(contents[COMPLETIONS].split(b"\n")[:-1], 1)]
        for n, r in enumerate(rows, 1):
            exact_keys(c, f"completions.jsonl line {n}", r, ROW_FIELDS)
        c.require("completions.jsonl canonical", E.completions_bytes(rows) == contents[COMPLETIONS], "canonical lines", "")
        c.require("corpus count", len(rows) == pred["corpus"]["count"], pred["corpus"]["count"], len(rows))
        items = [E.CorpusItem(r["id"], r["label"], r["category"], r["prompt"], tuple(r["keywords"])) for r in rows]
        c.require("corpus digest", E.corpus_sha256(items) == pred["corpus"]["sha256"], pred["corpus"]["sha256"][:16],
                  E.corpus_sha256(items)[:16], "the stored prompts are not the certified corpus")
        for r, item in zip(rows, items):
            for side in ("base", "edited"):
                mine = E.judgement_dict(E.classify(r[side], item))
                c.record(f"judgement {r['id']} {side}", r[f"{side}_judgement"] == mine, short(r[f"{side}_judgement"]), short(mine))
        metrics = strict_json(contents[EDIT_METRICS], "metrics.json")
        if legacy and isinstance(metrics, dict) and "locality" not in metrics:
            metrics = {**metrics, "locality": None}
        exact_keys(c, "metrics.json", metrics, METRICS_FIELDS)
        _check_deviation_arithmetic(c, metrics, rows)
        c.require("locality metrics (schema v3)", legacy or metrics["locality"] is not None, "present", "null",
                  "an edit certificate of schema v3 carries the locality metrics")
        if metrics["locality"] is not None:
            _check_locality_arithmetic(c, metrics["locality"], rows)
        c.record("metrics.json locality = certificate", metrics["locality"] == pred["metrics"].get("locality"), "", "")
        if "direction" in pred["edit"] or any(name.startswith(f"{DIRECTION_DIR}/") for name in contents) \
                or str(pred["edit"].get("spec", "")).startswith("direction-"):  # the built-in directional kinds
            _check_direction(c, pred, contents)
        for side, key in (("base", "before"), ("edited", "after")):
            acc = attrs.asdict(E.score(items, [E.classify(r[side], i) for r, i in zip(rows, items)]))
            c.record(f"{key} accuracy", metrics[key] == acc == pred["metrics"][key], short(pred["metrics"][key]), short(acc))
        for key in ("epsilon_edit", "max_final_deviation", "amplification"):
            c.record(f"metrics.json {key} = certificate", metrics[key] == pred["metrics"][key], pred["metrics"][key], metrics[key])
        if HUMAN in contents or pred["human_labels"] is not None:
            _check_human(c, root, pred, contents, rows, items)
        if level in ("replay", "full"):  # the reference's own model: regenerate (torch) and re-measure
            from blockcert.verifier.backends import backend
            from blockcert.verifier.metrics import Tolerances

            backend(reference).remeasure_edit(c, pred, rows, metrics, model, tol or Tolerances.for_reference(reference), device,
                                              root=root, level=level)
    return CertReport(rel, "edit", block, None, None, tuple(c.checks))


def _check_human(c: Any, root: Path, pred: dict[str, Any], contents: dict[str, bytes], rows: list[dict[str, Any]], items: list[Any]) -> None:
    from blockcert.artifacts.safeio import strict_json
    from blockcert.edit.human import aggregate, read_labels

    c.require("human.json referenced", HUMAN in contents and pred["human_labels"] is not None, "human.json + predicate", "")
    human = strict_json(contents[HUMAN], "human.json")
    files = human["files"]
    c.require("label files referenced", all(f in contents for f in files), ", ".join(files), "")
    sheets = [read_labels(contents[f].decode("utf-8"), f, rows) for f in files]
    mine = aggregate(items, rows, sheets, files)
    c.record("human labels re-aggregated", mine == human, "human.json", "recomputed from the label files")
    c.record("human_labels = human.json", pred["human_labels"] == {k: human[k] for k in ("annotators", "base", "edited", "agreement")},
             "certificate", "human.json")


def _check_deviation_arithmetic(c: Any, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Every level: one finite, non-negative per-prompt entry per completion, in order; ε_edit and the final
    deviation are their maxima and the amplification is their quotient, exactly as the producer computes them."""
    from blockcert.verifier.checks import exact_keys, real, short, typed

    per = typed(c, "metrics.json per_prompt", metrics["per_prompt"], list)
    c.require("per_prompt entries", len(per) == len(rows), len(rows), len(per))
    for entry, r in zip(per, rows):
        exact_keys(c, "metrics.json per_prompt entry", entry, {"id", "epsilon_edit", "final_deviation"})
        c.require("per_prompt id", entry["id"] == r["id"], r["id"], short(entry["id"]))
        for key in ("epsilon_edit", "final_deviation"):
            c.require(f"per_prompt {r['id']} {key} >= 0", real(c, f"per_prompt {key}", entry[key]) >= 0, ">= 0", entry[key])
    eps = max(float(e["epsilon_edit"]) for e in per) if per else 0.0
    fin = max(float(e["final_deviation"]) for e in per) if per else 0.0
    c.record("epsilon_edit = max per prompt", metrics["epsilon_edit"] == eps, metrics["epsilon_edit"], eps)
    c.record("max_final_deviation = max per prompt", metrics["max_final_deviation"] == fin, metrics["max_final_deviation"], fin)
    amp = fin / eps if eps > 0 else None
    c.record("amplification = final deviation / epsilon_edit", metrics["amplification"] == amp, short(metrics["amplification"]), short(amp))


def _check_locality_arithmetic(c: Any, loc: Any, rows: list[dict[str, Any]]) -> None:
    """Every level: the locality summary follows from its per-prompt entries (token-weighted mean KL, max KL,
    perplexities from the summed losses) and the benign share is recounted from the stored completions."""
    import math

    from blockcert.artifacts.digest import json_sha256
    from blockcert.prompts import builtin
    from blockcert.verifier.checks import exact_keys, real, short, typed

    exact_keys(c, "metrics.json locality", loc, {"neutral", "benign", "stress"})
    neutral, benign, stress = loc["neutral"], loc["benign"], loc["stress"]
    exact_keys(c, "locality.neutral", neutral, {"prompts", "sha256", "tokens", "kl_mean", "kl_max", "per_prompt", "definition"})
    exact_keys(c, "locality.benign", benign, {"unchanged", "total", "share", "definition"})
    exact_keys(c, "locality.stress", stress, {"prompts", "sha256", "tokens", "ppl_base", "ppl_edited", "delta_ppl", "per_prompt"})
    texts = {}
    for what, entry, name in (("neutral", neutral, NEUTRAL_PROMPTS), ("stress", stress, STRESS_PROMPTS)):
        c.require(f"locality {what} prompts", entry["prompts"] == name, name, short(entry["prompts"]))
        texts[what] = builtin(name.removeprefix("builtin:"))
        mine = json_sha256(texts[what])
        c.require(f"locality {what} prompts digest", entry["sha256"] == mine, mine[:16], short(entry["sha256"]))
    per_n = typed(c, "locality.neutral.per_prompt", neutral["per_prompt"], list)
    per_s = typed(c, "locality.stress.per_prompt", stress["per_prompt"], list)
    c.require("locality per-prompt entries", len(per_n) == len(texts["neutral"]) and len(per_s) == len(texts["stress"]),
              "one per prompt", f"{len(per_n)}, {len(per_s)}")
    for e in per_n:
        exact_keys(c, "locality.neutral entry", e, {"tokens", "kl_mean", "kl_max"})
        c.require("neutral entry tokens", isinstance(e["tokens"], int) and e["tokens"] > 0, "> 0", short(e["tokens"]))
        for key in ("kl_mean", "kl_max"):
            c.require(f"neutral {key} finite", math.isfinite(real(c, key, e[key])), "finite", e[key])
    for e in per_s:
        exact_keys(c, "locality.stress entry", e, {"tokens", "nll_base", "nll_edited"})
        c.require("stress entry tokens", isinstance(e["tokens"], int) and e["tokens"] > 0, "> 0", short(e["tokens"]))
        for key in ("nll_base", "nll_edited"):
            c.require(f"stress {key} finite", math.isfinite(real(c, key, e[key])), "finite", e[key])
    n_kl = sum(e["tokens"] for e in per_n)
    c.record("locality KL tokens", neutral["tokens"] == n_kl, neutral["tokens"], n_kl)
    kl_mean = sum(e["tokens"] * e["kl_mean"] for e in per_n) / n_kl
    c.record("locality kl_mean = token-weighted mean", neutral["kl_mean"] == kl_mean, neutral["kl_mean"], kl_mean)
    kl_max = max(e["kl_max"] for e in per_n)
    c.record("locality kl_max = max per prompt", neutral["kl_max"] == kl_max, neutral["kl_max"], kl_max)
    n_ppl = sum(e["tokens"] for e in per_s)
    c.record("locality stress tokens", stress["tokens"] == n_ppl, stress["tokens"], n_ppl)
    ppl_base = math.exp(sum(e["nll_base"] for e in per_s) / n_ppl)
    ppl_edited = math.exp(sum(e["nll_edited"] for e in per_s) / n_ppl)
    for key, mine in (("ppl_base", ppl_base), ("ppl_edited", ppl_edited), ("delta_ppl", ppl_edited - ppl_base)):
        c.record(f"locality {key} from the summed losses", stress[key] == mine, stress[key], mine)
    answers = [r for r in rows if r["label"] == "answer"]
    unchanged = sum(r["edited"] == r["base"] for r in answers)
    c.record("locality benign unchanged (recounted)", (benign["unchanged"], benign["total"]) == (unchanged, len(answers)),
             f"{benign['unchanged']}/{benign['total']}", f"{unchanged}/{len(answers)}")
    share = unchanged / len(answers) if answers else None
    c.record("locality benign share", benign["share"] == share, short(benign["share"]), short(share))


def _check_direction(c: Any, pred: dict[str, Any], contents: dict[str, bytes]) -> None:
    """A directional edit (every level): its direction's two files are subjects of the certificate, direction.json
    is the provenance the certificate states, the tensor is the one direction.json names (SHA-256), a float32
    unit vector of the model's width, and the spec reads the edit directory's own copy."""
    import hashlib

    import numpy as np

    from blockcert.artifacts.safeio import read_safetensors, strict_json
    from blockcert.verifier.checks import short

    names = [f"{DIRECTION_DIR}/{n}" for n in DIRECTION_FILES]
    c.require("direction files referenced", all(n in contents for n in names) and "direction" in pred["edit"], ", ".join(names), "",
              "a directional edit certifies its direction as part of the edit")
    meta = strict_json(contents[f"{DIRECTION_DIR}/{DIRECTION_META}"], f"{DIRECTION_DIR}/{DIRECTION_META}")
    c.require("direction.json = certificate's edit.direction", meta == pred["edit"]["direction"], short(pred["edit"]["direction"]), short(meta))
    data = contents[f"{DIRECTION_DIR}/{DIRECTION_TENSOR}"]
    digest = hashlib.sha256(data).hexdigest()
    c.require("direction tensor digest = direction.json", isinstance(meta, dict) and meta.get("sha256") == digest,
              short(meta.get("sha256") if isinstance(meta, dict) else meta), digest[:16])
    tensors = read_safetensors(data, f"{DIRECTION_DIR}/{DIRECTION_TENSOR}")
    vec = tensors.get("direction")
    c.require("direction is one float32 vector", set(tensors) == {"direction"} and vec is not None and vec.ndim == 1 and vec.dtype == np.float32,
              "direction: float32 [d_model]", ", ".join(sorted(tensors)))
    d_model = pred["model"]["d_model"]
    c.require("direction width = d_model", vec.size == d_model == meta.get("d_model"), d_model, vec.size)
    norm = float(np.linalg.norm(vec.astype(np.float64)))
    c.require("direction has unit norm", np.isfinite(norm) and abs(norm - 1.0) <= DIRECTION_NORM_TOL, "1", f"{norm:.9g}")
    spec = str(pred["edit"]["spec"])
    c.require("edit reads its own direction copy", f",direction={DIRECTION_DIR}," in spec + ",", f"direction={DIRECTION_DIR}", short(spec))
    made_on = (meta.get("model") or {}).get("weights_sha256") if isinstance(meta, dict) else None
    if made_on is not None:
        c.record("direction computed on the certified model", made_on == pred["model"]["weights_sha256"],
                 pred["model"]["weights_sha256"][:16], str(made_on)[:16], "the direction's provenance names other weights")
