"""A full-model certificate (``full/certificate.json``): its references to block certificates, its evaluation,
the IR chain at level replay when every block is stitched, and the whole stitched evaluation at level full."""


from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from blockcert.artifacts import records as R
from blockcert.artifacts.layout import MANIFEST, TRACE_INDEX, BlockPaths, envelope_name
from blockcert.artifacts.safeio import (
    MAX_JSON_BYTES,
    MAX_TENSOR_FILE_BYTES,
    read_hashed,
    read_safetensors,
    strict_json,
)
from blockcert.ir import BlockIR, from_dict
from blockcert.verifier.backends import backend
from blockcert.verifier.checks import Checker, exact_keys, guard, real, short, typed
from blockcert.verifier.metrics import (
    Tolerances,
    distances,
    norms,
    within,
)
from blockcert.verifier.subjects import CertReport, check_subjects, load_certificate

FULL_FIELDS = R.keys(R.FullPredicate)
FULL_METRICS = R.keys(R.FullMetrics)


def _agree(items: list[dict[str, Any]], a: str, b: str) -> float:
    same = [str(i[a]).strip().lower() == str(i[b]).strip().lower() for i in items]
    return float(np.mean(same)) if same else 1.0


class _Covered:
    """What the referenced block certificates cover (traces, IRs), read through their digests.

    The full-model certificate covers the block certificates by id, the trace index and its own files, but
    not the trace files or the IRs; the block certificates do. Every such artifact the full-model checks
    read is read here, streamed and compared with the digest a block certificate gives it, so verifying
    ``full/certificate.json`` alone never reads an uncovered byte."""

    def __init__(self, root: Path, contents: dict[str, bytes], refs: list[dict[str, Any]], c: Checker) -> None:
        self.root, self.c = root, c
        self.digests: dict[str, str] = {}
        c.require("a referenced block certificate", bool(refs), "at least one", 0)
        for ref in refs:
            for s in strict_json(contents[ref["certificate"]], ref["certificate"])["subject"]:
                name, digest = s["name"], s["digest"]["sha256"]
                c.require(f"one digest for {name}", self.digests.setdefault(name, digest) == digest, self.digests[name][:16], digest[:16],
                          f"the block certificates disagree about {name}")
        index_digest = hashlib.sha256(contents[TRACE_INDEX]).hexdigest()
        c.require("trace index = the block certificates'", self.digests.get(TRACE_INDEX) == index_digest,
                  "same traces/index.json", "", "the block certificates cover another trace index")

    def read(self, name: str) -> bytes:
        self.c.require(f"{name} covered", name in self.digests, name, "", "no referenced block certificate covers it")
        limit = MAX_TENSOR_FILE_BYTES if name.endswith(".safetensors") else MAX_JSON_BYTES
        data, actual = read_hashed(self.root, name, limit, self.digests[name])
        self.c.require(f"sha256 {name}", actual == self.digests[name], self.digests[name][:16], actual[:16],
                       "" if actual == self.digests[name] else f"{name} differs from the bytes its block certificate was issued for")
        return data


def verify_full_model(root: Path, rel: str, *, level: str, reference: str, tol: Tolerances, model: str | None,
                      stream: bool = False, loaded: Any = None, full: Any = None, tau_act: float = 1e-2) -> CertReport:
    """A full-model certificate: its references to block certificates (by id), its evaluation file, the
    internal arithmetic of its metrics; at level replay the all-IR stream when every block is stitched;
    at level full the whole stitched evaluation, re-run with the model."""
    from blockcert.certificate import FULL_PREDICATE, FULL_SCHEMA_VERSION

    c = Checker()
    with guard(c, rel):
        cert, _ = load_certificate(root, rel, c, FULL_PREDICATE)
        pred = cert["predicate"]
        exact_keys(c, "predicate", pred, FULL_FIELDS)
        c.require("device", pred["device"] in ("cpu", "cuda", "mps"), "cpu|cuda|mps", short(pred["device"]))
        c.require("predicate schema_version", pred["schema_version"] == FULL_SCHEMA_VERSION, FULL_SCHEMA_VERSION, pred["schema_version"])
        exact_keys(c, "predicate.metrics", pred["metrics"], FULL_METRICS)
        m = pred["metrics"]
        for key in FULL_METRICS - {"layer_mae", "layer_max"}:
            real(c, f"metrics.{key}", m[key])
        for key in ("layer_mae", "layer_max"):
            typed(c, f"metrics.{key}", m[key], list)
            for v in m[key]:
                real(c, f"metrics.{key}[]", v)
        contents = check_subjects(root, cert, c)
        known = {*contents, rel, envelope_name(rel)}  # the envelope is checked by .signatures
        stray = sorted(f"full/{p.name}" for p in (root / "full").iterdir() if f"full/{p.name}" not in known)
        c.require("no unreferenced artifacts in full/", not stray, "", ", ".join(stray),
                  f"files under full/ that the full-model certificate does not cover: {stray}" if stray else "")
        for name in (MANIFEST, pred["evaluation"], TRACE_INDEX):
            c.require(f"{name} referenced", name in contents, name, "", "the full-model certificate must cover it")
        manifest = strict_json(contents[MANIFEST], MANIFEST)
        for key in ("tool", "model", "prompts"):
            c.require(f"{key} = run.json", pred[key] == manifest.get(key), short(pred[key]), short(manifest.get(key)))
        L = pred["model"]["n_blocks"]
        c.require("one entry per layer", len(m["layer_mae"]) == len(m["layer_max"]) == L, L, len(m["layer_mae"]))
        refs = typed(c, "block_certificates", pred["block_certificates"], list)
        for ref in refs:
            exact_keys(c, "block certificate reference", ref, {"index", "certificate", "certificate_id"})
            name = ref["certificate"]
            c.require(f"reference {name}", name == BlockPaths(ref['index']).certificate and name in contents, name, "",
                      "every referenced block certificate must be a subject")
            actual = hashlib.sha256(contents[name]).hexdigest()
            c.require(f"certificate id {name}", ref["certificate_id"] == actual, str(ref["certificate_id"])[:16], actual[:16],
                      f"{name} changed after the full-model certificate was written" if ref["certificate_id"] != actual else "")
        c.require("stitched blocks = referenced", sorted(r["index"] for r in refs) == pred["stitched_blocks"],
                  pred["stitched_blocks"], sorted(r["index"] for r in refs))
        covered = _Covered(root, contents, refs, c)
        index = strict_json(contents[TRACE_INDEX], TRACE_INDEX)
        chain = level == "replay" and pred["stitched_blocks"] == list(range(L))
        traces = {}
        for e in index["entries"]:  # every trace is checked at every level; kept only when a later check reads it
            data = covered.read(e["file"])
            if chain or level == "full":
                traces[e["file"]] = read_safetensors(data, e["file"])
            del data
        evaluation = strict_json(contents[pred["evaluation"]], pred["evaluation"])
        exact_keys(c, "eval.json", evaluation, {"stitched_blocks", "metrics", "probe"})
        c.record("eval.json = certificate", evaluation["metrics"] == m and evaluation["stitched_blocks"] == pred["stitched_blocks"],
                  "same metrics", "" if evaluation["metrics"] == m else "differ")
        probe = typed(c, "eval.json probe", evaluation["probe"], list)
        for item in probe:
            exact_keys(c, "eval.json probe item", item, {"prompt", "label", "kind", "baseline", "stitched"})
        derived = {
            "mean_layer_mae": float(np.mean(m["layer_mae"])), "worst_layer_mae": float(np.max(m["layer_mae"])),
            "max_residual_error": float(np.max(m["layer_max"])), "delta_ppl": m["ppl_stitched"] - m["ppl_baseline"],
            "rel_delta_ppl": abs(m["ppl_stitched"] - m["ppl_baseline"]) / m["ppl_baseline"], "probe_prompts": len(probe),
            "probe_stitched_vs_baseline": _agree(probe, "stitched", "baseline"),
            "probe_baseline_vs_human": _agree(probe, "baseline", "label"), "probe_stitched_vs_human": _agree(probe, "stitched", "label"),
        }
        for key, value in derived.items():
            c.record(f"metric {key} follows", value == m[key], m[key], value)
        if chain:
            _replay_full_stream(covered, [traces[e["file"]]["residual"] for e in index["entries"]], pred, c, tol, reference)
        if level == "full":
            stored = [traces[e["file"]] for e in index["entries"]]
            full = full or backend(reference).FullCheck(root, model, tol, stream=stream, loaded=loaded)
            full.recaptured(pred, index["entries"], stored, c, tau_act)  # the stored traces are the model's
            del traces
            full.check_full_model(root, pred, evaluation, stored, lambda ell: _covered_ir(covered, ell), c)
    return CertReport(rel, "full-model", None, None, None, tuple(c.checks))


def _covered_ir(covered: _Covered, ell: int) -> BlockIR:
    """Block ``ell``'s IR, read through the digests its block certificate gives its two files."""
    d = f"block_{ell:03d}"
    meta = strict_json(covered.read(f"{d}/ir.json"), f"{d}/ir.json")
    tensors = read_safetensors(covered.read(f"{d}/ir.safetensors"), f"{d}/ir.safetensors")
    return from_dict(meta, {k: np.array(v) for k, v in tensors.items()})


def _replay_full_stream(covered: _Covered, residuals: list[np.ndarray], pred: dict[str, Any], c: Checker, tol: Tolerances,
                        reference: str) -> None:
    """Every block stitched: the stream x_hat^(1..L) is a pure function of x^(0) and the IRs. Recompute it."""
    replay_one = backend(reference).replay_one
    L = pred["model"]["n_blocks"]
    xs = [np.asarray(res[0]) for res in residuals]
    errs: list[list[np.ndarray]] = [[] for _ in range(L)]
    bands: list[list[np.ndarray]] = [[] for _ in range(L)]
    for ell in range(L):  # block-major: one IR in memory at a time (a Llama-2-7B block's is 0.8 GB)
        ir = _covered_ir(covered, ell)
        for p, res in enumerate(residuals):
            xs[p] = replay_one(ir, xs[p])[0]
            errs[ell].append(distances(xs[p], res[ell + 1]))
            # each block of the chain adds its own rounding: ell + 1 replay bands, per token
            bands[ell].append((ell + 1) * tol.replay_band(np.maximum(norms(res[ell]), norms(res[ell + 1]))))
        del ir
    claimed = pred["metrics"]
    ok_mae = ok_max = True
    for ell in range(L):  # the claim lies where the per-token errors, each known to +-its band, put the mean and the max
        e, b = np.concatenate(errs[ell]), np.concatenate(bands[ell])
        lo, hi = np.maximum(e - b, 0.0), e + b
        ok_mae &= within(claimed["layer_mae"][ell], (float(lo.mean()), float(hi.mean())))
        ok_max &= within(claimed["layer_max"][ell], (float(lo.max()), float(hi.max())))
    mae = [float(np.mean(np.concatenate(e))) for e in errs]
    mx = [float(np.max(np.concatenate(e))) for e in errs]
    c.record("layer MAE (IR chain)", ok_mae, short(claimed["layer_mae"]), short(mae))
    c.record("layer max (IR chain)", ok_max, short(claimed["layer_max"]), short(mx))
