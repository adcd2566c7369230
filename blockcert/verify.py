"""The third-party verifier: re-derive every claim of a run's certificates from the artifacts alone.

Levels (each includes the one before):

* ``hashes``: strict JSON, canonical bytes, statement type and schema, every subject's path and digest,
  the required artifacts present and no unreferenced ones, cross-references (metrics, IR, trace index).
* ``replay``: replays every IR on its recorded traces (torch float32, or numpy float64 with
  ``reference="numpy"``, which never imports torch), recomputes e(p,t), eps, MAE, cov_act, cov_path,
  cov_loss (from the stored per-token losses), and the verdict under the verifier's policy.
* ``full``: also loads the model, checks its weights digest, re-captures the traces and re-runs the
  suffixes to re-derive the stitched losses and cov_loss. With ``reference="numpy"`` the model is the
  verifier's own float64 numpy forward (:mod:`blockcert.reference`), which shares no code with the producer.

The verifier's policy comes from its caller, never from the certificate: a certificate whose thresholds
are looser than the verifier's fails, and a claimed ``certified: true`` must hold under the verifier's
policy. Unknown fields are errors. Each check reports claimed vs recomputed.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import rfc8785

from .checks import Check, Checker, Fail, exact_keys, guard, real, short, typed
from .certificate import BLOCK_PREDICATE, CERT_SCHEMA_VERSION, STATEMENT_TYPE, TENSOR_ANNOTATION
from .derive import BASE_STEM, DERIVATION_FIELDS, KINDS, ir_difference
from .derive import rederive as rederive_ir
from .digest import tensors_sha256
from .errors import UserError
from .ir import BlockIR, from_dict, to_dict
from .ir import migrate as migrate_ir
from .policy import Policy
from .safeio import (
    MAX_JSON_BYTES, MAX_TENSOR_FILE_BYTES, ArtifactError, is_sha256_hex, nonfinite, read_artifact, read_hashed, read_safetensors,
    read_safetensors_typed, resolve_inside, strict_json,
)
from .verify_bounds import check_lipschitz, recheck_lipschitz
from .verify_metrics import (
    Recomputed, Tolerances, check_errors_file, check_recomputed, check_stored, check_token_errors, check_trace,
    distances, norms, within,
)

LEVELS = ("hashes", "replay", "full")

#: predicateType of an older certificate schema -> function rewriting its statement into the current one.
#: A format change adds ``migrate_vN_to_vN+1`` here and a golden run (tests/make_golden.py); old runs keep verifying.
def migrate_v1_to_v2(cert: dict[str, Any]) -> dict[str, Any]:
    """Schema v1 -> v2: v2 added ``predicate.lipschitz`` (null when a run computed no bounds, as v1 runs never did)."""
    pred = cert.get("predicate")
    if not isinstance(pred, dict) or pred.get("schema_version") != 1 or "lipschitz" in pred:
        return cert  # not a well-formed v1 predicate: let the v2 checks report what is wrong
    return {**cert, "predicateType": BLOCK_PREDICATE, "predicate": {**pred, "schema_version": 2, "lipschitz": None}}


MIGRATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "https://blockcert.dev/predicate/block-certificate/v1": migrate_v1_to_v2,
}
REFERENCES = ("torch", "numpy")
#: each reference's module: ``replay_one(ir, x_in)``, ``recheck_bounds``, ``remeasure_edit`` and ``FullCheck`` (the
#: model at level full). The numpy one never imports torch or producer code (tests/test_import_graph.py); the
#: torch one is imported only when chosen.
BACKENDS = {"torch": "blockcert.verify_full", "numpy": "blockcert.reference.full"}


def backend(reference: str) -> Any:
    """The module of ``reference`` (see :data:`BACKENDS`)."""
    return importlib.import_module(BACKENDS[reference])

PER_PROMPT_FIELDS = ("per_prompt_cov_act", "per_prompt_mae", "per_prompt_cov_loss")
METRIC_FIELDS = ("epsilon", "mae", "cov_act", "cov_path", "cov_loss", "rel_max", "rel_mean", "tokens", "loss_tokens", "best_prompt")
PREDICATE_FIELDS = {"schema_version", "tool", "model", "block", "prompts", "policy", "metrics", "verdict", "replay", "surrogate", "lipschitz"}
MODEL_FIELDS = {"name", "arch", "dtype", "weights_sha256", "source_sha256", "n_blocks", "d_model"}
BLOCK_FIELDS = {"index", "arch", "n_ctx", "ir"}
PROMPT_FIELDS = {"description", "count", "sha256", "tokens", "trace_index"}
POLICY_FIELDS = {"tau_act", "tau_loss", "alpha_act", "alpha_loss"}
VERDICT_FIELDS = {"certified", "cov_act_ok", "cov_loss_ok"}
REPLAY_FIELDS = {"backend", "dtype", "interpreter_sha256"}
TOOL_FIELDS = {"name", "version"}
RUN_FIELDS = {"tool", "model", "prompts", "policy", "replay", "n_ctx"}  # + "derivation" in a surrogate/ablation run


@attrs.frozen
class CertReport:
    path: str
    kind: str
    block: int | None
    claimed_certified: bool | None
    certified: bool | None  # recomputed under the verifier's policy (None at level hashes)
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@attrs.frozen
class VerifyReport:
    root: str
    level: str
    reference: str
    policy: Policy
    tolerances: Tolerances
    certificates: tuple[CertReport, ...]

    @property
    def ok(self) -> bool:
        return bool(self.certificates) and all(c.ok for c in self.certificates)

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"ok": self.ok}


# The shared checker vocabulary under the names this module's callers (verify_edit, verify_bounds) use.
_Checker, _Fail, _guard, _exact_keys, _typed, _real, _short = Checker, Fail, guard, exact_keys, typed, real, short


# ---------------------------------------------------------------------------------------------------


def _load_certificate(root: Path, rel: str, c: _Checker, predicate_type: str = BLOCK_PREDICATE) -> tuple[dict[str, Any], bytes]:
    try:
        raw = read_artifact(root, rel, MAX_JSON_BYTES)
        cert = strict_json(raw, rel)
    except ArtifactError as exc:
        c.require("certificate readable", False, detail=str(exc))
    c.require("certificate is an object", isinstance(cert, dict), "object", type(cert).__name__)
    try:
        canonical = rfc8785.dumps(cert)
    except Exception as exc:  # rfc8785 raises its own errors for integers out of range etc.
        c.require("canonical JSON (RFC 8785)", False, detail=f"{rel}: {exc}")
    c.require("canonical JSON (RFC 8785)", canonical == raw, f"{len(canonical)} canonical bytes", f"{len(raw)} bytes",
              "" if canonical == raw else f"{rel} is not in canonical form (re-serialised or edited by hand)")
    _exact_keys(c, "statement", cert, {"_type", "subject", "predicateType", "predicate"})
    if cert["predicateType"] in MIGRATIONS:
        cert = MIGRATIONS[cert["predicateType"]](cert)
    c.require("statement _type", cert["_type"] == STATEMENT_TYPE, STATEMENT_TYPE, cert["_type"])
    c.require("predicateType", cert["predicateType"] == predicate_type, predicate_type, cert["predicateType"],
              "unknown predicate type or schema major version")
    return cert, raw


def _read_hashed(root: Path, name: str, limit: int, expected: str, cache: dict[Any, Any] | None) -> tuple[bytes, str, dict[str, Any]]:
    """(bytes, sha256, memo) of an artifact, read only if its streamed digest is ``expected`` (else the bytes
    are empty). Within one verify() call a file shared by many certificates (the traces) is read and hashed
    once, keyed by its identity and modification stamp."""
    import os

    key = None
    if cache is not None:
        path = resolve_inside(root, name)
        try:
            st = os.stat(path)
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key is not None and key in cache:
            return cache[key]
    data, digest = read_hashed(root, name, limit, expected)
    entry = (data, digest, {})
    if key is not None and digest == expected:
        cache[key] = entry
    return entry


def _parse_tensors(c: _Checker, name: str, data: bytes, memo: dict[str, Any]) -> dict[str, np.ndarray]:
    """The tensors of a covered safetensors artifact, parsed once; any NaN or infinity fails here, at every level."""
    if "tensors" not in memo:
        try:
            tensors, codes = read_safetensors_typed(data, name)
        except ArtifactError as exc:
            c.require(f"tensors {name}", False, detail=str(exc))
        bad = {k: nonfinite(v, codes[k]) for k, v in tensors.items()}
        memo["nonfinite"] = {k: n for k, n in bad.items() if n}
        memo["tensors"], memo["dtypes"] = tensors, codes
        memo["tensors_sha256"] = tensors_sha256(tensors)
    bad = memo["nonfinite"]
    c.require(f"finite values {name}", not bad, "no NaN or infinity", ", ".join(f"{k}: {n}" for k, n in sorted(bad.items()))[:80],
              f"{name} holds non-finite values ({', '.join(sorted(bad))})" if bad else "")
    return memo["tensors"]


def _check_subjects(root: Path, cert: dict[str, Any], c: _Checker, cache: dict[Any, Any] | None = None,
                    own_dir: str | None = None, parsed: dict[str, dict[str, Any]] | None = None) -> dict[str, bytes]:
    """Read and hash every subject. With ``cache``, artifacts outside ``own_dir`` (the certificate's own
    directory) are shared by other certificates and are read once per verify() call; a certificate's own
    files (its IR: 0.8 GB for a Llama-2-7B block) are not kept after its checks. ``parsed`` receives each
    safetensors subject's memo (tensors, dtypes)."""
    subjects = _typed(c, "subject", cert["subject"], list)
    contents: dict[str, bytes] = {}
    names = []
    for s in subjects:
        _typed(c, "subject entry", s, dict)
        c.require("schema subject entry", {"name", "digest"} <= set(s) <= {"name", "digest", "annotations"},
                  "name, digest[, annotations]", ",".join(sorted(s)))
        name = _typed(c, "subject name", s["name"], str)
        names.append(name)
        digest = _typed(c, f"digest of {name}", s["digest"], dict)
        c.require(f"digest algorithm of {name}", set(digest) == {"sha256"}, "sha256", ",".join(sorted(digest)),
                  "only sha256 digests are accepted")
        c.require(f"digest hex of {name}", is_sha256_hex(digest["sha256"]), "64 lowercase hex digits", digest["sha256"])
        limit = MAX_TENSOR_FILE_BYTES if name.endswith(".safetensors") else MAX_JSON_BYTES
        try:
            shared = own_dir is None or not name.startswith(f"{own_dir}/")
            data, actual, memo = _read_hashed(root, name, limit, digest["sha256"], cache if shared else None)
        except ArtifactError as exc:
            c.require(f"artifact {name}", False, detail=str(exc))
        c.require(f"sha256 {name}", actual == digest["sha256"], digest["sha256"][:16], actual[:16],
                  "" if actual == digest["sha256"] else f"{name} differs from the bytes this certificate was issued for")
        if name.endswith(".safetensors"):
            ann = _typed(c, f"annotations of {name}", s.get("annotations"), dict)
            c.require(f"annotations of {name}", set(ann) == {TENSOR_ANNOTATION}, TENSOR_ANNOTATION, ",".join(sorted(ann)))
            _parse_tensors(c, name, data, memo)
            td = memo["tensors_sha256"]
            c.require(f"tensor digest {name}", td == ann[TENSOR_ANNOTATION], str(ann[TENSOR_ANNOTATION])[:16], td[:16])
            if parsed is not None:
                parsed[name] = memo
        else:
            c.require(f"annotations of {name}", "annotations" not in s, "none", "present")
        contents[name] = data
    c.require("subjects unique and sorted", names == sorted(set(names)), "sorted, unique", ",".join(names)[:80])
    return contents


def _check_block_files(root: Path, block_dirname: str, contents: dict[str, bytes], c: _Checker, with_bounds: bool,
                       derived: bool) -> None:
    names = ("ir.json", "ir.safetensors", "errors.safetensors", "metrics.json") + (("bounds.json",) if with_bounds else ())
    names += (f"{BASE_STEM}.json", f"{BASE_STEM}.safetensors") if derived else ()
    expected = {f"{block_dirname}/{n}" for n in names}
    missing = expected - set(contents)
    c.require("required artifacts referenced", not missing, "ir, errors, metrics", "", f"not referenced: {sorted(missing)}")
    on_disk = {f"{block_dirname}/{p.name}" for p in (root / block_dirname).iterdir()} - {f"{block_dirname}/certificate.json"}
    extra = on_disk - set(contents)
    c.require("no unreferenced artifacts", not extra, "", ", ".join(sorted(extra)),
              f"files in {block_dirname}/ that the certificate does not cover: {sorted(extra)}" if extra else "")


def _check_predicate(pred: Any, c: _Checker, policy: Policy) -> None:
    _exact_keys(c, "predicate", pred, PREDICATE_FIELDS)
    c.require("predicate schema_version", pred["schema_version"] == CERT_SCHEMA_VERSION, CERT_SCHEMA_VERSION, pred["schema_version"])
    _exact_keys(c, "predicate.tool", pred["tool"], TOOL_FIELDS)
    _exact_keys(c, "predicate.model", pred["model"], MODEL_FIELDS)
    _typed(c, "model.weights_sha256", pred["model"]["weights_sha256"], str)
    c.require("model.weights_sha256 hex", is_sha256_hex(pred["model"]["weights_sha256"]), "sha256 hex", pred["model"]["weights_sha256"])
    _exact_keys(c, "predicate.block", pred["block"], BLOCK_FIELDS)
    _typed(c, "block.index", pred["block"]["index"], int)
    _exact_keys(c, "predicate.prompts", pred["prompts"], PROMPT_FIELDS)
    _exact_keys(c, "predicate.policy", pred["policy"], POLICY_FIELDS)
    _exact_keys(c, "predicate.metrics", pred["metrics"], set(METRIC_FIELDS))
    for key in METRIC_FIELDS:
        _real(c, f"metrics.{key}", pred["metrics"][key])
    _exact_keys(c, "predicate.verdict", pred["verdict"], VERDICT_FIELDS)
    for key in VERDICT_FIELDS:
        _typed(c, f"verdict.{key}", pred["verdict"][key], bool)
    _exact_keys(c, "predicate.replay", pred["replay"], REPLAY_FIELDS)
    if pred["surrogate"] is not None:
        _exact_keys(c, "predicate.surrogate", pred["surrogate"], DERIVATION_FIELDS)
        c.require("surrogate.kind", pred["surrogate"]["kind"] in KINDS, "|".join(KINDS), pred["surrogate"]["kind"])
    claimed = {k: _real(c, f"policy.{k}", pred["policy"][k]) for k in POLICY_FIELDS}
    ours = attrs.asdict(policy)
    looser = [k for k in POLICY_FIELDS if (claimed[k] > ours[k] if k.startswith("tau") else claimed[k] < ours[k])]
    c.require("policy not looser than the verifier's", not looser,
              ", ".join(f"{k}={ours[k]:g}" for k in sorted(POLICY_FIELDS)),
              ", ".join(f"{k}={claimed[k]:g}" for k in sorted(POLICY_FIELDS)),
              f"certificate loosens {looser}; verify with matching flags to accept it deliberately" if looser else "")


def _cross_refs(pred: dict[str, Any], contents: dict[str, bytes], block_dirname: str, c: _Checker) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics_record = strict_json(contents[f"{block_dirname}/metrics.json"], f"{block_dirname}/metrics.json")
    _exact_keys(c, "metrics.json", metrics_record, {"block", "metrics", "certified", "policy"})
    _exact_keys(c, "metrics.json metrics", metrics_record["metrics"], set(METRIC_FIELDS) | set(PER_PROMPT_FIELDS))
    for key in METRIC_FIELDS:
        c.require(f"metrics.json {key} = certificate", metrics_record["metrics"].get(key) == pred["metrics"][key],
                  pred["metrics"][key], metrics_record["metrics"].get(key))
    c.require("metrics.json verdict = certificate", metrics_record["certified"] == pred["verdict"]["certified"],
              pred["verdict"]["certified"], metrics_record["certified"])
    c.require("metrics.json policy = certificate", metrics_record["policy"] == pred["policy"], pred["policy"], metrics_record["policy"])
    c.require("block index", metrics_record["block"] == pred["block"]["index"] and block_dirname == f"block_{pred['block']['index']:03d}",
              pred["block"]["index"], f"{metrics_record['block']} in {block_dirname}")
    c.require("run manifest referenced", "run.json" in contents, "run.json", "", "the certificate must cover run.json")
    manifest = strict_json(contents["run.json"], "run.json")
    _exact_keys(c, "run.json", manifest, RUN_FIELDS | ({"derivation"} if isinstance(manifest, dict) and "derivation" in manifest else set()))
    for key in ("tool", "model", "policy", "replay"):
        c.require(f"{key} = run.json", pred[key] == manifest.get(key), _short(pred[key]), _short(manifest.get(key)))
    sur = pred["surrogate"]
    wanted = None if sur is None else {"kind": sur["kind"], "spec": sur["requested"]}
    c.require("derivation = run.json", manifest.get("derivation") == wanted, _short(wanted), _short(manifest.get("derivation")),
              "the run was made for another surrogate/ablation than this certificate's")
    run_prompts = manifest.get("prompts") or {}
    c.require("prompts = run.json", {k: pred["prompts"][k] for k in ("description", "count", "sha256")} == run_prompts,
              _short(pred["prompts"]), _short(run_prompts))
    c.require("block.n_ctx = run.json", pred["block"]["n_ctx"] == manifest.get("n_ctx"), pred["block"]["n_ctx"], manifest.get("n_ctx"))
    from . import interpreter as _interp
    from .digest import file_sha256 as _fsha

    current = _fsha(_interp.__file__)
    same = pred["replay"]["interpreter_sha256"] == current
    c.record("interpreter version", True, str(pred["replay"]["interpreter_sha256"])[:16], current[:16],
             "" if same else "produced by another interpreter version; the numbers are recomputed with this one")
    c.require("block.ir path", pred["block"]["ir"] == f"{block_dirname}/ir.json", f"{block_dirname}/ir.json", pred["block"]["ir"])
    index_name = pred["prompts"]["trace_index"]
    c.require("trace index referenced", index_name in contents, index_name, "", "the certificate must cover the trace index")
    index = strict_json(contents[index_name], index_name)
    _exact_keys(c, "trace index", index, {"prompts", "prompts_sha256", "entries"})
    texts = [e.get("text") for e in index["entries"]] if isinstance(index["entries"], list) else []
    recomputed = hashlib.sha256(rfc8785.dumps(texts)).hexdigest()
    c.require("prompt set digest", recomputed == pred["prompts"]["sha256"] == index["prompts_sha256"],
              pred["prompts"]["sha256"][:16], recomputed[:16], "the traces are not those of the certified prompt set")
    c.require("prompt count", len(texts) == pred["prompts"]["count"], pred["prompts"]["count"], len(texts))
    c.require("prompt set description", index["prompts"] == pred["prompts"]["description"], pred["prompts"]["description"], index["prompts"])
    for k, e in enumerate(index["entries"]):
        _exact_keys(c, "trace index entry", e, {"index", "text", "tokens", "file"})
        _typed(c, "trace index entry tokens", e["tokens"], int)
        c.require(f"trace index entry {k}", e["index"] == k and e["file"] == f"traces/prompt_{k:03d}.safetensors" and e["tokens"] >= 2,
                  f"index {k}, traces/prompt_{k:03d}.safetensors, >= 2 tokens", f"{e['index']}, {e['file']}, {e['tokens']}")
        c.require(f"trace {e['file']} referenced", e["file"] in contents, e["file"], "", "every trace file must be a subject")
    _check_ir_source(c, contents, block_dirname, pred)
    return metrics_record, index


def _check_ir_source(c: _Checker, contents: dict[str, bytes], block_dirname: str, pred: dict[str, Any]) -> None:
    """ir.json's ``source`` is a label (strings only), but the parts the verifier reads must agree with the
    certificate: derivation notes exactly when the certificate is a surrogate's, never an edit's mark."""
    for stem in ("ir", BASE_STEM) if pred["surrogate"] is not None else ("ir",):
        meta = strict_json(contents[f"{block_dirname}/{stem}.json"], f"{block_dirname}/{stem}.json")
        _typed(c, f"{stem}.json", meta, dict)
        source = _typed(c, f"{stem}.json source", meta.get("source", {}), dict)
        c.require(f"{stem}.json source", all(isinstance(v, str) for v in source.values()), "strings", short(source))
        derived = any(k == "derivation" or k.startswith("derivation.") for k in source)
        want = stem == "ir" and pred["surrogate"] is not None
        c.require(f"{stem}.json source derivation", derived == want, "derived" if want else "not derived", "derived" if derived else "not derived",
                  "" if derived == want else f"{block_dirname}/{stem}.json says it was {'not ' if not derived else ''}derived, "
                  "unlike the certificate")
        c.require(f"{stem}.json source edit", "edit" not in source, "no edit", source.get("edit", ""),
                  "an edited IR is certified by blockcert edit, not as a block certificate")


def _check_ir_record(c: _Checker, contents: dict[str, bytes], parsed: dict[str, dict[str, Any]], block_dirname: str, stem: str) -> None:
    """Every level: the IR parses, and its JSON record is exactly the one its fields serialise to (no field
    left to a default, no other spelling of the same IR), so the bytes hashed are the IR replayed."""
    name = f"{block_dirname}/{stem}.json"
    meta = strict_json(contents[name], name)
    try:
        ir = from_dict(meta, dict(parsed[f"{block_dirname}/{stem}.safetensors"]["tensors"]))
    except UserError as exc:
        c.require("IR well-formed", False, detail=f"{block_dirname}/{stem}: {exc.message}")
    again = to_dict(ir)[0]
    del ir
    c.require(f"IR record {name}", again == migrate_ir(meta), "every field explicit, as the IR serialises", "other spelling",
              "" if again == migrate_ir(meta) else f"{name} leaves fields to defaults or spells them otherwise")


def _load_ir(contents: dict[str, bytes], block_dirname: str, c: _Checker, stem: str = "ir") -> BlockIR:
    meta = strict_json(contents[f"{block_dirname}/{stem}.json"], f"{block_dirname}/{stem}.json")
    tensors = read_safetensors(contents[f"{block_dirname}/{stem}.safetensors"], f"{block_dirname}/{stem}.safetensors")
    try:
        return from_dict(meta, {k: np.array(v) for k, v in tensors.items()})
    except UserError as exc:
        c.require("IR well-formed", False, detail=f"{block_dirname}/{stem}: {exc.message}")
        raise


#: how far a re-derived surrogate may sit from the certified one (max |Δ| over max |value|, per tensor):
#: a truncated SVD on another LAPACK rounds differently; a tampered weight is far beyond this.
DERIVATION_RTOL = 1e-5


def _check_derivation(c: _Checker, cert: dict[str, Any], pred: dict[str, Any], contents: dict[str, bytes], block_dirname: str,
                      rederive: bool) -> None:
    """A surrogate/ablation certificate: the base IR is covered and named by its tensor digest, the certified IR
    says how it was derived, and (level replay) re-deriving it from the base IR gives the certified IR."""
    sur = pred["surrogate"]
    base_json = f"{block_dirname}/{BASE_STEM}.json"
    c.require("surrogate.base_ir", sur["base_ir"] == base_json and base_json in contents, base_json, sur["base_ir"])
    annotated = next((s.get("annotations", {}).get(TENSOR_ANNOTATION) for s in cert["subject"]
                      if s["name"] == f"{block_dirname}/{BASE_STEM}.safetensors"), None)
    c.require("surrogate.base_ir_tensors_sha256", sur["base_ir_tensors_sha256"] == annotated, str(sur["base_ir_tensors_sha256"])[:16],
              str(annotated)[:16], "the certificate names another base IR than the one it covers")
    derived_meta = strict_json(contents[f"{block_dirname}/ir.json"], f"{block_dirname}/ir.json")
    source = derived_meta.get("source") or {}
    recorded = source.get("derivation", sur["requested"])
    c.require("surrogate.spec = the IR's derivation", recorded == sur["spec"], sur["spec"], recorded)
    notes = {k.removeprefix("derivation."): v for k, v in source.items() if k.startswith("derivation.")}
    c.require("surrogate.notes = the IR's", notes == sur["notes"], _short(sur["notes"]), _short(notes))
    if not rederive:
        return
    base = _load_ir(contents, block_dirname, c, BASE_STEM)
    certified_ir = _load_ir(contents, block_dirname, c)
    again = rederive_ir(sur["kind"], sur["spec"], base)
    same, gap, where = ir_difference(again, certified_ir)
    c.record("re-derived surrogate = certified IR", same and gap <= DERIVATION_RTOL, sur["spec"],
             f"max rel |Δ| {gap:.3g}" + (f" ({where})" if where else ""),
             "" if same and gap <= DERIVATION_RTOL else f"{block_dirname}/ir is not {sur['spec']} of {BASE_STEM}")


def _replay_checks(pred: dict[str, Any], entries: Sequence[dict[str, Any]], traces: Sequence[dict[str, np.ndarray]],
                   stored: dict[str, np.ndarray], ir: BlockIR, block_dirname: str, c: _Checker, policy: Policy, tol: Tolerances,
                   reference: str, full: Any, record: dict[str, Any]) -> bool | None:
    """Replay the IR on the stored traces (and at level full on the model's own, re-captured ones) and
    re-derive every per-token value; the metrics are then judged by :func:`check_recomputed`."""
    ell = pred["block"]["index"]
    c.require("IR block index", ir.index == ell and ir.arch == pred["block"]["arch"] and ir.n_ctx == pred["block"]["n_ctx"],
              f"{ell}/{pred['block']['arch']}/{pred['block']['n_ctx']}", f"{ir.index}/{ir.arch}/{ir.n_ctx}")
    c.record("model.d_model = IR", pred["model"]["d_model"] == ir.d_model, pred["model"]["d_model"], ir.d_model)
    where = f"{block_dirname}/errors.safetensors"
    model_traces = full.recaptured(pred, entries, traces, c, policy.tau_act) if full is not None else None
    r = Recomputed([], [], [], [], [], [], tol.loss_abs if full is not None else 0.0)
    for k, (e, t) in enumerate(zip(entries, traces)):
        key = f"p{e['index']:03d}"
        x_in, x_out = t["residual"][ell], t["residual"][ell + 1]
        y, mask, gates = _replay_one(ir, x_in, reference)
        e_s = distances(y, x_out)
        band = tol.replay_band(np.maximum(norms(x_in), norms(x_out)))
        check_token_errors(c, where, e["index"], stored[f"{key}.error"], e_s, band)
        observed = t if model_traces is None else {"masks": model_traces[k].masks, "head_gates": model_traces[k].head_gates}
        path = np.all(mask == np.asarray(observed["masks"][ell], bool), axis=-1) & bool(
            np.array_equal(gates, np.asarray(observed["head_gates"][ell], bool)))
        same = np.array_equal(np.asarray(stored[f"{key}.path_match"], bool), path)
        c.record(f"stored {key}.path_match", same, "the replay's decisions vs the " + ("model's" if full is not None else "recorded"),
                 "" if same else f"{int(np.sum(stored[f'{key}.path_match'] != path))} token(s) differ")
        r.paths.append(path)
        if model_traces is None:
            r.errors.append(e_s)
            r.bands.append(band)
            r.out_norms.append(norms(x_out))
            r.base.append(np.asarray(t["loss"], np.float64))
            r.stitched.append(np.asarray(stored[f"{key}.loss_stitched"], np.float64))
        else:  # the verdict rests on the model's own trace; the stored one may only differ by its rounding band
            m = model_traces[k]
            x_in_m, x_out_m = full.block_io(k, ell, x_in)  # the block's input and the model's output from it
            y_m, _, _ = _replay_one(ir, x_in_m, reference)
            e_m = distances(y_m, x_out_m)
            r.errors.append(e_m)
            r.bands.append(full.error_band(band, e_s, e_m, x_in_m, x_out_m))
            r.out_norms.append(norms(x_out_m))
            r.base.append(np.asarray(m.loss, np.float64))
    if model_traces is not None:
        losses, loss_bands = full.stitched(ir, ell, [stored[f"p{e['index']:03d}.loss_stitched"] for e in entries], c)
        r.stitched.extend(losses)
        r.stitched_bands = loss_bands
    return check_recomputed(c, pred, record, r, policy, tol)


def _replay_one(ir: BlockIR, x_in: np.ndarray, reference: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output [T, d], mask [T, T] bool, head gates [H] bool) of the IR on one prompt's x^(l)."""
    return backend(reference).replay_one(ir, x_in)


def verify_certificate(root: Path, rel: str, *, level: str, reference: str, policy: Policy, tol: Tolerances,
                       full: Any = None, cache: dict[Any, Any] | None = None) -> CertReport:
    c = _Checker()
    claimed_cert = verdict = block = None
    with _guard(c, rel):
        cert, _ = _load_certificate(root, rel, c)
        pred = cert["predicate"]
        _check_predicate(pred, c, policy)
        block = pred["block"]["index"]
        claimed_cert = pred["verdict"]["certified"]
        block_dirname = rel.rsplit("/", 1)[0]
        parsed: dict[str, dict[str, Any]] = {}
        contents = _check_subjects(root, cert, c, cache, own_dir=block_dirname, parsed=parsed)
        _check_block_files(root, block_dirname, contents, c, with_bounds=pred["lipschitz"] is not None,
                           derived=pred["surrogate"] is not None)
        metrics_record, index = _cross_refs(pred, contents, block_dirname, c)
        L, d = pred["model"]["n_blocks"], pred["model"]["d_model"]
        _typed(c, "model.n_blocks", L, int)
        _typed(c, "model.d_model", d, int)
        c.require("block index in range", 0 <= block < L, f"0..{L - 1}", block)
        entries = index["entries"]
        traces = [check_trace(c, e["file"], parsed[e["file"]], e["tokens"], L, d) for e in entries]
        for stem in ("ir", BASE_STEM) if pred["surrogate"] is not None else ("ir",):
            _check_ir_record(c, contents, parsed, block_dirname, stem)
        stored = check_errors_file(c, f"{block_dirname}/errors.safetensors", parsed[f"{block_dirname}/errors.safetensors"], entries)
        check_stored(c, pred, metrics_record, entries, traces, stored, policy)
        bounds = check_lipschitz(c, pred, contents, block_dirname, exact_keys=_exact_keys)
        if pred["surrogate"] is not None:
            _check_derivation(c, cert, pred, contents, block_dirname, rederive=level in ("replay", "full"))
        if level in ("replay", "full"):
            ir = _load_ir(contents, block_dirname, c)
            verdict = _replay_checks(pred, entries, traces, stored, ir, block_dirname, c, policy, tol, reference, full, metrics_record)
            if bounds is not None:
                inputs = [t["residual"][block] for t in traces]
                recheck_lipschitz(c, bounds, ir, inputs)  # against the independent, simpler bounds
                backend(reference).recheck_bounds(c, bounds, ir, inputs, with_lower=level == "full")
    return CertReport(rel, "block", block, claimed_cert, verdict, tuple(c.checks))


ROOT_ENTRIES = {"run.json", "metrics.json", "traces", "full"}


def _expected_summary(root: Path, certs: Sequence[str]) -> dict[str, Any]:
    """The summary a run writes, rebuilt from run.json, the block metrics records and the certificates."""
    manifest = strict_json(read_artifact(root, "run.json", MAX_JSON_BYTES), "run.json")
    blocks, tokens = [], None
    for rel in certs:
        raw = read_artifact(root, rel, MAX_JSON_BYTES)
        pred = strict_json(raw, rel)["predicate"]
        record = strict_json(read_artifact(root, rel.rsplit("/", 1)[0] + "/metrics.json", MAX_JSON_BYTES), "metrics.json")
        tokens = pred["prompts"]["tokens"]
        blocks.append({"index": pred["block"]["index"], **record["metrics"], "certified": record["certified"],
                       "certificate": rel, "certificate_id": hashlib.sha256(raw).hexdigest()})
    blocks.sort(key=lambda b: b["index"])
    return {
        "model": manifest["model"]["name"], "arch": manifest["model"]["arch"], "dtype": manifest["model"]["dtype"],
        "prompts": manifest["prompts"]["description"], "prompts_evaluated": manifest["prompts"]["count"], "tokens": tokens,
        "policy": manifest["policy"], "certified_all": all(b["certified"] for b in blocks), "blocks": blocks,
    }


def verify_summary(root: Path, certs: Sequence[str]) -> CertReport:
    """The run directory as a whole: nothing unexpected in it, and ``metrics.json`` canonical and exactly the
    summary of the certificates present (each named by its id), so no byte of it is unchecked."""
    c = _Checker()
    try:
        cert_dirs = {rel.split("/")[0] for rel in certs}
        extra = sorted(p.name for p in root.iterdir() if p.name not in ROOT_ENTRIES | cert_dirs)
        c.record("no unexpected files in the run directory", not extra, "", ", ".join(extra))
        if (root / "full").exists():  # full/ is only ever written with its certificate, which covers the rest
            c.record("full/ holds a full-model certificate", (root / "full/certificate.json").is_file(), "full/certificate.json",
                     ", ".join(sorted(p.name for p in (root / "full").iterdir())) if (root / "full").is_dir() else "not a directory",
                     "files under full/ that no certificate covers")
        try:
            index = strict_json(read_artifact(root, "traces/index.json", MAX_JSON_BYTES), "traces/index.json")
            listed = {"index.json", *(str(e["file"]).split("/")[-1] for e in index["entries"])}
        except (ArtifactError, KeyError, TypeError) as exc:
            c.require("traces/index.json", False, detail=str(exc))
        stray = sorted(p.name for p in (root / "traces").iterdir() if p.name not in listed)
        c.record("no unexpected files in traces/", not stray, "", ", ".join(stray))
        try:
            raw = read_artifact(root, "metrics.json", MAX_JSON_BYTES)
        except ArtifactError as exc:
            c.require("run summary metrics.json", False, detail=f"{exc} (an interrupted run has no summary)")
        summary = strict_json(raw, "metrics.json")
        c.record("metrics.json canonical", rfc8785.dumps(summary) == raw, "RFC 8785 bytes", "" if rfc8785.dumps(summary) == raw else "other bytes")
        expected = _expected_summary(root, certs)
        _typed(c, "metrics.json", summary, dict)
        for key in sorted(set(expected) | set(summary)):
            if key == "blocks":
                continue
            c.record(f"summary {key}", summary.get(key) == expected.get(key), _short(expected.get(key)), _short(summary.get(key)))
        got = {b.get("certificate"): b for b in summary.get("blocks", []) if isinstance(b, dict)}
        want = {b["certificate"]: b for b in expected["blocks"]}
        c.record("summary lists every certificate", set(got) == set(want) and len(got) == len(summary.get("blocks", [])),
                 len(want), len(summary.get("blocks", [])))
        for rel in sorted(want):
            entry, exp = got.get(rel, {}), want[rel]
            if entry.get("certificate_id") != exp["certificate_id"]:
                c.record(f"certificate id {rel}", False, str(entry.get("certificate_id"))[:16], exp["certificate_id"][:16],
                         f"{rel} changed after the run summary was written")
                continue
            diff = sorted(k for k in set(entry) | set(exp) if entry.get(k) != exp.get(k))
            c.record(f"summary entry {rel}", not diff, "as in the certificate and metrics.json", ", ".join(diff))
    except _Fail:
        pass
    except (AttributeError, TypeError, ValueError, KeyError, ArtifactError) as exc:
        c.record("run summary well-formed", False, detail=f"metrics.json: {type(exc).__name__}: {exc}")
    return CertReport("metrics.json", "summary", None, None, None, tuple(c.checks))


FULL_FIELDS = {"schema_version", "tool", "model", "prompts", "stitched_blocks", "block_certificates", "metrics", "evaluation"}
FULL_METRICS = {"layer_mae", "layer_max", "mean_layer_mae", "worst_layer_mae", "max_residual_error", "ppl_baseline", "ppl_stitched",
                "delta_ppl", "rel_delta_ppl", "probe_prompts", "probe_stitched_vs_baseline", "probe_baseline_vs_human",
                "probe_stitched_vs_human"}


def _agree(items: list[dict[str, Any]], a: str, b: str) -> float:
    same = [str(i[a]).strip().lower() == str(i[b]).strip().lower() for i in items]
    return float(np.mean(same)) if same else 1.0


class _Covered:
    """What the referenced block certificates cover (traces, IRs), read through their digests.

    The full-model certificate covers the block certificates by id, the trace index and its own files, but
    not the trace files or the IRs; the block certificates do. Every such artifact the full-model checks
    read is read here, streamed and compared with the digest a block certificate gives it, so verifying
    ``full/certificate.json`` alone never reads an uncovered byte."""

    def __init__(self, root: Path, contents: dict[str, bytes], refs: list[dict[str, Any]], c: _Checker) -> None:
        self.root, self.c = root, c
        self.digests: dict[str, str] = {}
        c.require("a referenced block certificate", bool(refs), "at least one", 0)
        for ref in refs:
            for s in strict_json(contents[ref["certificate"]], ref["certificate"])["subject"]:
                name, digest = s["name"], s["digest"]["sha256"]
                c.require(f"one digest for {name}", self.digests.setdefault(name, digest) == digest, self.digests[name][:16], digest[:16],
                          f"the block certificates disagree about {name}")
        index_digest = hashlib.sha256(contents["traces/index.json"]).hexdigest()
        c.require("trace index = the block certificates'", self.digests.get("traces/index.json") == index_digest,
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
    from .certificate import FULL_PREDICATE, FULL_SCHEMA_VERSION

    c = _Checker()
    with _guard(c, rel):
        cert, _ = _load_certificate(root, rel, c, FULL_PREDICATE)
        pred = cert["predicate"]
        _exact_keys(c, "predicate", pred, FULL_FIELDS)
        c.require("predicate schema_version", pred["schema_version"] == FULL_SCHEMA_VERSION, FULL_SCHEMA_VERSION, pred["schema_version"])
        _exact_keys(c, "predicate.metrics", pred["metrics"], FULL_METRICS)
        m = pred["metrics"]
        for key in FULL_METRICS - {"layer_mae", "layer_max"}:
            _real(c, f"metrics.{key}", m[key])
        for key in ("layer_mae", "layer_max"):
            _typed(c, f"metrics.{key}", m[key], list)
            for v in m[key]:
                _real(c, f"metrics.{key}[]", v)
        contents = _check_subjects(root, cert, c)
        stray = sorted(f"full/{p.name}" for p in (root / "full").iterdir() if f"full/{p.name}" not in contents | {rel: b""})
        c.require("no unreferenced artifacts in full/", not stray, "", ", ".join(stray),
                  f"files under full/ that the full-model certificate does not cover: {stray}" if stray else "")
        for name in ("run.json", pred["evaluation"], "traces/index.json"):
            c.require(f"{name} referenced", name in contents, name, "", "the full-model certificate must cover it")
        manifest = strict_json(contents["run.json"], "run.json")
        for key in ("tool", "model", "prompts"):
            c.require(f"{key} = run.json", pred[key] == manifest.get(key), _short(pred[key]), _short(manifest.get(key)))
        L = pred["model"]["n_blocks"]
        c.require("one entry per layer", len(m["layer_mae"]) == len(m["layer_max"]) == L, L, len(m["layer_mae"]))
        refs = _typed(c, "block_certificates", pred["block_certificates"], list)
        for ref in refs:
            _exact_keys(c, "block certificate reference", ref, {"index", "certificate", "certificate_id"})
            name = ref["certificate"]
            c.require(f"reference {name}", name == f"block_{ref['index']:03d}/certificate.json" and name in contents, name, "",
                      "every referenced block certificate must be a subject")
            actual = hashlib.sha256(contents[name]).hexdigest()
            c.require(f"certificate id {name}", ref["certificate_id"] == actual, str(ref["certificate_id"])[:16], actual[:16],
                      f"{name} changed after the full-model certificate was written" if ref["certificate_id"] != actual else "")
        c.require("stitched blocks = referenced", sorted(r["index"] for r in refs) == pred["stitched_blocks"],
                  pred["stitched_blocks"], sorted(r["index"] for r in refs))
        covered = _Covered(root, contents, refs, c)
        index = strict_json(contents["traces/index.json"], "traces/index.json")
        chain = level == "replay" and pred["stitched_blocks"] == list(range(L))
        traces = {}
        for e in index["entries"]:  # every trace is checked at every level; kept only when a later check reads it
            data = covered.read(e["file"])
            if chain or level == "full":
                traces[e["file"]] = read_safetensors(data, e["file"])
            del data
        evaluation = strict_json(contents[pred["evaluation"]], pred["evaluation"])
        _exact_keys(c, "eval.json", evaluation, {"stitched_blocks", "metrics", "probe"})
        c.record("eval.json = certificate", evaluation["metrics"] == m and evaluation["stitched_blocks"] == pred["stitched_blocks"],
                  "same metrics", "" if evaluation["metrics"] == m else "differ")
        probe = _typed(c, "eval.json probe", evaluation["probe"], list)
        for item in probe:
            _exact_keys(c, "eval.json probe item", item, {"prompt", "label", "kind", "baseline", "stitched"})
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


def _replay_full_stream(covered: _Covered, residuals: list[np.ndarray], pred: dict[str, Any], c: _Checker, tol: Tolerances,
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
    c.record("layer MAE (IR chain)", ok_mae, _short(claimed["layer_mae"]), _short(mae))
    c.record("layer max (IR chain)", ok_max, _short(claimed["layer_max"]), _short(mx))


def find_certificates(path: Path) -> tuple[Path, list[str]]:
    """(run directory, certificate paths relative to it) for a run directory or one certificate file."""
    path = Path(path)
    if path.is_dir():
        certs = sorted(p.relative_to(path).as_posix() for p in path.glob("block_*/certificate.json"))
        if not certs:
            raise UserError(f"{path} holds no block_*/certificate.json", "pass a blockcert run directory or a certificate file")
        return path, certs
    if path.is_file() and path.name.endswith(".json"):
        root = path.parent.parent
        return root, [path.relative_to(root).as_posix()]
    raise UserError(f"{path} is neither a run directory nor a certificate file")


def verify(path: str | Path, *, level: str = "replay", reference: str = "torch", policy: Policy | None = None,
           tolerances: Tolerances | None = None, model: str | None = None, progress: Callable[[str], None] | None = None,
           stream: bool = False) -> VerifyReport:
    """Verify every certificate under ``path`` (a run directory) or one certificate file.

    ``stream=True``: at level full, load ``model`` block by block (:mod:`blockcert.stream`)."""
    if level not in LEVELS:
        raise UserError(f"unknown --level {level!r}", f"choose one of {', '.join(LEVELS)}")
    if reference not in REFERENCES:
        raise UserError(f"unknown --reference {reference!r}", f"choose one of {', '.join(REFERENCES)}")
    policy = policy or Policy()
    tol = tolerances or Tolerances.for_reference(reference)
    from .verify_edit import is_edit_dir, verify_edit

    target = Path(path)
    edit_root = target if is_edit_dir(target) else target.parent if target.name == "certificate.json" and is_edit_dir(target.parent) else None
    if edit_root is not None:  # an edit certificate (blockcert edit): regenerated with the model at levels replay/full
        report = verify_edit(edit_root, level=level, model=model, reference=reference, tol=tol)
        return VerifyReport(str(edit_root), level, reference, policy, tol, (report,))
    if level == "full" and model is None:
        raise UserError("--level full needs --model (the model the certificates claim to certify)")
    root, certs = find_certificates(Path(path))
    full = backend(reference).FullCheck(root, model, tol, stream=stream) if level == "full" else None
    reports = []
    cache: dict[Any, Any] = {}
    for rel in certs:
        reports.append(verify_certificate(root, rel, level=level, reference=reference, policy=policy, tol=tol, full=full, cache=cache))
        if progress is not None:
            progress(rel)
    full_rel = "full/certificate.json"
    # The block checks are done: free what only they needed (the cached traces) before the full-model
    # check, which re-evaluates the stitched model with the model already loaded.
    cache.clear()
    kwargs = {"level": level, "reference": reference, "tol": tol, "model": model, "stream": stream, "full": full, "tau_act": policy.tau_act}
    if Path(path).is_dir() and (root / full_rel).exists():
        reports.append(verify_full_model(root, full_rel, **kwargs))
    elif Path(path).is_file() and Path(path).resolve() == (root / full_rel).resolve():
        reports = [verify_full_model(root, full_rel, **kwargs)]
    if Path(path).is_dir():
        reports.append(verify_summary(root, certs))
    return VerifyReport(str(root), level, reference, policy, tol, tuple(reports))


__all__: Sequence[str] = ["verify", "VerifyReport", "CertReport", "Check", "Tolerances", "LEVELS", "REFERENCES"]
