"""Block certificates (``block_*/certificate.json``) and the run summary (``metrics.json``) at every level:
the predicate and its cross-references, the per-token arrays, the IR (and a surrogate's derivation), the
replay on the stored traces and, at level full, on the reference's own."""


from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import rfc8785

from blockcert.artifacts import records as R
from blockcert.artifacts.layout import (
    BLOCK_METRICS,
    BOUNDS,
    CERTIFICATE,
    ENVELOPE,
    ERRORS,
    FULL,
    FULL_CERTIFICATE,
    IR,
    MANIFEST,
    MODEL_SIGNATURE,
    SUMMARY,
    TRACE_INDEX,
    TRACES,
)
from blockcert.artifacts.safeio import (
    MAX_JSON_BYTES,
    ArtifactError,
    is_sha256_hex,
    read_artifact,
    read_safetensors,
    strict_json,
)
from blockcert.certificate import CERT_SCHEMA_VERSION, TENSOR_ANNOTATION
from blockcert.derive import BASE_STEM, DERIVATION_FIELDS, KINDS, ir_difference
from blockcert.derive import rederive as rederive_ir
from blockcert.errors import UserError
from blockcert.ir import BlockIR, from_dict, to_dict
from blockcert.ir import migrate as migrate_ir
from blockcert.policy import Policy
from blockcert.verifier.backends import backend, replay_one
from blockcert.verifier.bounds import check_lipschitz, recheck_lipschitz
from blockcert.verifier.checks import Checker, Fail, exact_keys, guard, real, short, typed
from blockcert.verifier.metrics import (
    Recomputed,
    Tolerances,
    check_errors_file,
    check_recomputed,
    check_stored,
    check_token_errors,
    check_trace,
    distances,
    norms,
    stored_floors,
)
from blockcert.verifier.subjects import CertReport, check_subjects, load_certificate, migrate_policy, migrate_replay

PER_PROMPT_FIELDS = ("per_prompt_cov_act", "per_prompt_mae", "per_prompt_cov_loss")
# the key sets enforced below are the records' (blockcert/artifacts/records.py): the contract is written once
METRIC_FIELDS = tuple(a.name for a in attrs.fields(R.ClaimedMetrics))
PREDICATE_FIELDS = R.keys(R.BlockPredicate)
MODEL_FIELDS = R.keys(R.ModelIdentity)
BLOCK_FIELDS = R.keys(R.BlockRef)
PROMPT_FIELDS = R.keys(R.CertifiedPrompts)
POLICY_FIELDS = R.keys(Policy)
VERDICT_FIELDS = R.keys(R.Verdict)
REPLAY_FIELDS = R.keys(R.Replay)
TOOL_FIELDS = R.keys(R.Tool)
RUN_FIELDS = R.keys(R.RunManifest) - {"derivation"}  # + "derivation" in a surrogate/ablation run
#: the policy numbers each rule uses: a certificate may not loosen those (the others it carries are unused)
USED_POLICY_FIELDS = {"paper": ("tau_act", "tau_loss", "alpha_act", "alpha_loss"),
                      "relative": ("tau_act", "tau_loss", "alpha_act", "alpha_loss"),
                      "noise-floor": ("k", "alpha_act", "alpha_loss")}


def _check_block_files(root: Path, block_dirname: str, contents: dict[str, bytes], c: Checker, with_bounds: bool,
                       derived: bool) -> None:
    names = (f"{IR}.json", f"{IR}.safetensors", ERRORS, BLOCK_METRICS) + ((BOUNDS,) if with_bounds else ())
    names += (f"{BASE_STEM}.json", f"{BASE_STEM}.safetensors") if derived else ()
    expected = {f"{block_dirname}/{n}" for n in names}
    missing = expected - set(contents)
    c.require("required artifacts referenced", not missing, "ir, errors, metrics", "", f"not referenced: {sorted(missing)}")
    own = {f"{block_dirname}/{CERTIFICATE}", f"{block_dirname}/{ENVELOPE}"}  # the envelope is checked by .signatures
    on_disk = {f"{block_dirname}/{p.name}" for p in (root / block_dirname).iterdir()} - own
    extra = on_disk - set(contents)
    c.require("no unreferenced artifacts", not extra, "", ", ".join(sorted(extra)),
              f"files in {block_dirname}/ that the certificate does not cover: {sorted(extra)}" if extra else "")


def _check_predicate(pred: Any, c: Checker, policy: Policy) -> None:
    exact_keys(c, "predicate", pred, PREDICATE_FIELDS)
    c.require("predicate schema_version", pred["schema_version"] == CERT_SCHEMA_VERSION, CERT_SCHEMA_VERSION, pred["schema_version"])
    exact_keys(c, "predicate.tool", pred["tool"], TOOL_FIELDS)
    exact_keys(c, "predicate.model", pred["model"], MODEL_FIELDS)
    typed(c, "model.weights_sha256", pred["model"]["weights_sha256"], str)
    c.require("model.weights_sha256 hex", is_sha256_hex(pred["model"]["weights_sha256"]), "sha256 hex", pred["model"]["weights_sha256"])
    exact_keys(c, "predicate.block", pred["block"], BLOCK_FIELDS)
    typed(c, "block.index", pred["block"]["index"], int)
    exact_keys(c, "predicate.prompts", pred["prompts"], PROMPT_FIELDS)
    exact_keys(c, "predicate.policy", pred["policy"], POLICY_FIELDS)
    exact_keys(c, "predicate.metrics", pred["metrics"], set(METRIC_FIELDS))
    for key in METRIC_FIELDS:
        real(c, f"metrics.{key}", pred["metrics"][key])
    exact_keys(c, "predicate.verdict", pred["verdict"], VERDICT_FIELDS)
    for key in VERDICT_FIELDS:
        typed(c, f"verdict.{key}", pred["verdict"][key], bool)
    exact_keys(c, "predicate.replay", pred["replay"], REPLAY_FIELDS)
    c.require("replay.device", pred["replay"]["device"] in ("cpu", "cuda", "mps"), "cpu|cuda|mps", short(pred["replay"]["device"]))
    if pred["surrogate"] is not None:
        exact_keys(c, "predicate.surrogate", pred["surrogate"], DERIVATION_FIELDS)
        c.require("surrogate.kind", pred["surrogate"]["kind"] in KINDS, "|".join(KINDS), pred["surrogate"]["kind"])
    name = pred["policy"]["name"]
    c.require("policy name = the verifier's", name == policy.name, policy.name, short(name),
              f"the certificate was made under the {name!r} policy; verify with --policy {name} to judge it by that rule deliberately")
    used = USED_POLICY_FIELDS[name]
    claimed = {k: real(c, f"policy.{k}", pred["policy"][k]) for k in sorted(POLICY_FIELDS - {"name"})}
    ours = attrs.asdict(policy)
    looser = [k for k in used if (claimed[k] < ours[k] if k.startswith("alpha") else claimed[k] > ours[k])]
    c.require("policy not looser than the verifier's", not looser,
              ", ".join(f"{k}={ours[k]:g}" for k in used), ", ".join(f"{k}={claimed[k]:g}" for k in used),
              f"certificate loosens {looser}; verify with matching flags to accept it deliberately" if looser else "")


def _cross_refs(pred: dict[str, Any], contents: dict[str, bytes], block_dirname: str, c: Checker,
                legacy: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The certificate against metrics.json and run.json (``legacy``: the certificate was migrated from an older
    schema, so the copies in those files may be in the older form too)."""
    def unchanged(value: Any) -> Any:
        return value

    policy_of, replay_of = (migrate_policy, migrate_replay) if legacy else (unchanged, unchanged)
    metrics_record = strict_json(contents[f"{block_dirname}/{BLOCK_METRICS}"], f"{block_dirname}/{BLOCK_METRICS}")
    exact_keys(c, "metrics.json", metrics_record, R.keys(R.BlockMetricsRecord))
    exact_keys(c, "metrics.json metrics", metrics_record["metrics"], set(METRIC_FIELDS) | set(PER_PROMPT_FIELDS))
    for key in METRIC_FIELDS:
        c.require(f"metrics.json {key} = certificate", metrics_record["metrics"].get(key) == pred["metrics"][key],
                  pred["metrics"][key], metrics_record["metrics"].get(key))
    c.require("metrics.json verdict = certificate", metrics_record["certified"] == pred["verdict"]["certified"],
              pred["verdict"]["certified"], metrics_record["certified"])
    c.require("metrics.json policy = certificate", policy_of(metrics_record["policy"]) == pred["policy"], pred["policy"],
              metrics_record["policy"])
    c.require("block index", metrics_record["block"] == pred["block"]["index"] and block_dirname == f"block_{pred['block']['index']:03d}",
              pred["block"]["index"], f"{metrics_record['block']} in {block_dirname}")
    c.require("run manifest referenced", MANIFEST in contents, MANIFEST, "", f"the certificate must cover {MANIFEST}")
    manifest = strict_json(contents[MANIFEST], MANIFEST)
    exact_keys(c, "run.json", manifest, RUN_FIELDS | ({"derivation"} if isinstance(manifest, dict) and "derivation" in manifest else set()))
    for key in ("tool", "model", "policy", "replay"):
        theirs = {"policy": policy_of, "replay": replay_of}.get(key, unchanged)(manifest.get(key))
        c.require(f"{key} = run.json", pred[key] == theirs, short(pred[key]), short(manifest.get(key)))
    sur = pred["surrogate"]
    wanted = None if sur is None else {"kind": sur["kind"], "spec": sur["requested"]}
    c.require("derivation = run.json", manifest.get("derivation") == wanted, short(wanted), short(manifest.get("derivation")),
              "the run was made for another surrogate/ablation than this certificate's")
    run_prompts = manifest.get("prompts") or {}
    c.require("prompts = run.json", {k: pred["prompts"][k] for k in ("description", "count", "sha256")} == run_prompts,
              short(pred["prompts"]), short(run_prompts))
    c.require("block.n_ctx = run.json", pred["block"]["n_ctx"] == manifest.get("n_ctx"), pred["block"]["n_ctx"], manifest.get("n_ctx"))
    from blockcert import interpreter as _interp
    from blockcert.artifacts.digest import file_sha256 as _fsha

    current = _fsha(_interp.__file__)
    same = pred["replay"]["interpreter_sha256"] == current
    c.record("interpreter version", True, str(pred["replay"]["interpreter_sha256"])[:16], current[:16],
             "" if same else "produced by another interpreter version; the numbers are recomputed with this one")
    c.require("block.ir path", pred["block"]["ir"] == f"{block_dirname}/ir.json", f"{block_dirname}/ir.json", pred["block"]["ir"])
    index_name = pred["prompts"]["trace_index"]
    c.require("trace index referenced", index_name in contents, index_name, "", "the certificate must cover the trace index")
    index = strict_json(contents[index_name], index_name)
    exact_keys(c, "trace index", index, {"prompts", "prompts_sha256", "entries"})
    texts = [e.get("text") for e in index["entries"]] if isinstance(index["entries"], list) else []
    recomputed = hashlib.sha256(rfc8785.dumps(texts)).hexdigest()
    c.require("prompt set digest", recomputed == pred["prompts"]["sha256"] == index["prompts_sha256"],
              pred["prompts"]["sha256"][:16], recomputed[:16], "the traces are not those of the certified prompt set")
    c.require("prompt count", len(texts) == pred["prompts"]["count"], pred["prompts"]["count"], len(texts))
    c.require("prompt set description", index["prompts"] == pred["prompts"]["description"], pred["prompts"]["description"], index["prompts"])
    for k, e in enumerate(index["entries"]):
        exact_keys(c, "trace index entry", e, {"index", "text", "tokens", "file"})
        typed(c, "trace index entry tokens", e["tokens"], int)
        c.require(f"trace index entry {k}", e["index"] == k and e["file"] == f"traces/prompt_{k:03d}.safetensors" and e["tokens"] >= 2,
                  f"index {k}, traces/prompt_{k:03d}.safetensors, >= 2 tokens", f"{e['index']}, {e['file']}, {e['tokens']}")
        c.require(f"trace {e['file']} referenced", e["file"] in contents, e["file"], "", "every trace file must be a subject")
    _check_ir_source(c, contents, block_dirname, pred)
    return metrics_record, index


def _check_ir_source(c: Checker, contents: dict[str, bytes], block_dirname: str, pred: dict[str, Any]) -> None:
    """ir.json's ``source`` is a label (strings only), but the parts the verifier reads must agree with the
    certificate: derivation notes exactly when the certificate is a surrogate's, never an edit's mark."""
    for stem in ("ir", BASE_STEM) if pred["surrogate"] is not None else ("ir",):
        meta = strict_json(contents[f"{block_dirname}/{stem}.json"], f"{block_dirname}/{stem}.json")
        typed(c, f"{stem}.json", meta, dict)
        source = typed(c, f"{stem}.json source", meta.get("source", {}), dict)
        c.require(f"{stem}.json source", all(isinstance(v, str) for v in source.values()), "strings", short(source))
        derived = any(k == "derivation" or k.startswith("derivation.") for k in source)
        want = stem == "ir" and pred["surrogate"] is not None
        c.require(f"{stem}.json source derivation", derived == want, "derived" if want else "not derived", "derived" if derived else "not derived",
                  "" if derived == want else f"{block_dirname}/{stem}.json says it was {'not ' if not derived else ''}derived, "
                  "unlike the certificate")
        c.require(f"{stem}.json source edit", "edit" not in source, "no edit", source.get("edit", ""),
                  "an edited IR is certified by blockcert edit, not as a block certificate")


def _check_ir_record(c: Checker, contents: dict[str, bytes], parsed: dict[str, dict[str, Any]], block_dirname: str, stem: str) -> None:
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


def _load_ir(contents: dict[str, bytes], block_dirname: str, c: Checker, stem: str = "ir") -> BlockIR:
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


def _check_derivation(c: Checker, cert: dict[str, Any], pred: dict[str, Any], contents: dict[str, bytes], block_dirname: str,
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
    c.require("surrogate.notes = the IR's", notes == sur["notes"], short(sur["notes"]), short(notes))
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
                   stored: dict[str, np.ndarray], ir: BlockIR, block_dirname: str, c: Checker, policy: Policy, tol: Tolerances,
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
        y, mask, gates = replay_one(ir, x_in, reference)
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
            y_m, _, _ = replay_one(ir, x_in_m, reference)
            e_m = distances(y_m, x_out_m)
            r.errors.append(e_m)
            r.bands.append(full.error_band(band, e_s, e_m, x_in_m, x_out_m))
            r.out_norms.append(norms(x_out_m))
            r.base.append(np.asarray(m.loss, np.float64))
    if model_traces is not None:
        losses, loss_bands = full.stitched(ir, ell, [stored[f"p{e['index']:03d}.loss_stitched"] for e in entries], c)
        r.stitched.extend(losses)
        r.stitched_bands = loss_bands
    r.floor_act, r.floor_loss = stored_floors(stored, [f"p{e['index']:03d}" for e in entries])
    if model_traces is not None and r.floor_act is not None:  # the verdict rests on the model's own floors
        r.floor_act, r.floor_loss = full.floors(ell, r.floor_act, r.floor_loss, c)
    return check_recomputed(c, pred, record, r, policy, tol)


def verify_certificate(root: Path, rel: str, *, level: str, reference: str, policy: Policy, tol: Tolerances,
                       full: Any = None, cache: dict[Any, Any] | None = None) -> CertReport:
    c = Checker()
    claimed_cert = verdict = block = None
    with guard(c, rel):
        # run.json / metrics.json copies are read in the old form only for a certificate written in the old form: a v3
        # run whose run.json lost its replay.device (say) is not a v2 run
        cert, legacy = load_certificate(root, rel, c)
        pred = cert["predicate"]
        _check_predicate(pred, c, policy)
        block = pred["block"]["index"]
        claimed_cert = pred["verdict"]["certified"]
        block_dirname = rel.rsplit("/", 1)[0]
        parsed: dict[str, dict[str, Any]] = {}
        contents = check_subjects(root, cert, c, cache, own_dir=block_dirname, parsed=parsed)
        _check_block_files(root, block_dirname, contents, c, with_bounds=pred["lipschitz"] is not None,
                           derived=pred["surrogate"] is not None)
        metrics_record, index = _cross_refs(pred, contents, block_dirname, c, legacy)
        L, d = pred["model"]["n_blocks"], pred["model"]["d_model"]
        typed(c, "model.n_blocks", L, int)
        typed(c, "model.d_model", d, int)
        c.require("block index in range", 0 <= block < L, f"0..{L - 1}", block)
        entries = index["entries"]
        traces = [check_trace(c, e["file"], parsed[e["file"]], e["tokens"], L, d) for e in entries]
        for stem in ("ir", BASE_STEM) if pred["surrogate"] is not None else ("ir",):
            _check_ir_record(c, contents, parsed, block_dirname, stem)
        stored = check_errors_file(c, f"{block_dirname}/errors.safetensors", parsed[f"{block_dirname}/errors.safetensors"], entries,
                                   floors=pred["policy"]["name"] == "noise-floor")
        check_stored(c, pred, metrics_record, entries, traces, stored, policy)
        bounds = check_lipschitz(c, pred, contents, block_dirname, exact_keys=exact_keys)
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


ROOT_ENTRIES = {MANIFEST, SUMMARY, TRACES, FULL, MODEL_SIGNATURE}


def expected_summary(root: Path, certs: Sequence[str]) -> dict[str, Any]:
    """The summary a run writes, rebuilt from run.json, the block metrics records and the certificates."""
    manifest = strict_json(read_artifact(root, MANIFEST, MAX_JSON_BYTES), MANIFEST)
    blocks, tokens = [], None
    for rel in certs:
        raw = read_artifact(root, rel, MAX_JSON_BYTES)
        pred = strict_json(raw, rel)["predicate"]
        record = strict_json(read_artifact(root, rel.rsplit("/", 1)[0] + "/" + BLOCK_METRICS, MAX_JSON_BYTES), BLOCK_METRICS)
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
    c = Checker()
    try:
        cert_dirs = {rel.split("/")[0] for rel in certs}
        extra = sorted(p.name for p in root.iterdir() if p.name not in ROOT_ENTRIES | cert_dirs)
        c.record("no unexpected files in the run directory", not extra, "", ", ".join(extra))
        if (root / MODEL_SIGNATURE).exists():  # blockcert run --model-signature: every block certificate covers it
            names = {rel: {s.get("name") for s in strict_json(read_artifact(root, rel, MAX_JSON_BYTES), rel)["subject"]} for rel in certs}
            uncovered = [rel for rel in certs if MODEL_SIGNATURE not in names[rel]]
            c.record(f"{MODEL_SIGNATURE} covered by every certificate", not uncovered, len(certs), len(certs) - len(uncovered),
                     f"{MODEL_SIGNATURE} is not a subject of {', '.join(uncovered)}" if uncovered else "")
            bundle = strict_json(read_artifact(root, MODEL_SIGNATURE, MAX_JSON_BYTES), MODEL_SIGNATURE)
            env = bundle.get("dsseEnvelope") if isinstance(bundle, dict) else None
            kind = env.get("payloadType") if isinstance(env, dict) else None
            c.record(f"{MODEL_SIGNATURE} is a model-signing bundle", kind == "application/vnd.in-toto+json",
                     "a Sigstore bundle with an in-toto DSSE envelope", short(kind))
        if (root / "full").exists():  # full/ is only ever written with its certificate, which covers the rest
            c.record("full/ holds a full-model certificate", (root / FULL_CERTIFICATE).is_file(), FULL_CERTIFICATE,
                     ", ".join(sorted(p.name for p in (root / "full").iterdir())) if (root / "full").is_dir() else "not a directory",
                     "files under full/ that no certificate covers")
        try:
            index = strict_json(read_artifact(root, TRACE_INDEX, MAX_JSON_BYTES), TRACE_INDEX)
            listed = {"index.json", *(str(e["file"]).split("/")[-1] for e in index["entries"])}
        except (ArtifactError, KeyError, TypeError) as exc:
            c.require("traces/index.json", False, detail=str(exc))
        stray = sorted(p.name for p in (root / "traces").iterdir() if p.name not in listed)
        c.record("no unexpected files in traces/", not stray, "", ", ".join(stray))
        try:
            raw = read_artifact(root, SUMMARY, MAX_JSON_BYTES)
        except ArtifactError as exc:
            c.require("run summary metrics.json", False, detail=f"{exc} (an interrupted run has no summary)")
        summary = strict_json(raw, SUMMARY)
        c.record("metrics.json canonical", rfc8785.dumps(summary) == raw, "RFC 8785 bytes", "" if rfc8785.dumps(summary) == raw else "other bytes")
        expected = expected_summary(root, certs)
        typed(c, "metrics.json", summary, dict)
        for key in sorted(set(expected) | set(summary)):
            if key == "blocks":
                continue
            c.record(f"summary {key}", summary.get(key) == expected.get(key), short(expected.get(key)), short(summary.get(key)))
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
    except Fail:
        pass
    except (AttributeError, TypeError, ValueError, KeyError, ArtifactError) as exc:
        c.record("run summary well-formed", False, detail=f"metrics.json: {type(exc).__name__}: {exc}")
    return CertReport(SUMMARY, "summary", None, None, None, tuple(c.checks))
