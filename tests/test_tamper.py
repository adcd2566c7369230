"""The tamper suite: every way of passing off a bad certificate is rejected with a message that names the
artifact or metric, never with a traceback."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rfc8785
from safetensors.numpy import load_file, save

from blockcert.certificate import TENSOR_ANNOTATION
from blockcert.artifacts.digest import tensors_sha256
from blockcert.metrics import Policy
from blockcert.pipeline.certify import run
from blockcert.artifacts.safeio import ArtifactError, read_npz
from blockcert.verifier.core import verify
from test_run import make_model_dir

CERT = "block_000/certificate.json"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, byte_tokenizer) -> Path:
    """A complete, valid run on a small random model (blocks 0 and 1, the default prompts)."""
    base = tmp_path_factory.mktemp("tamper")
    model = make_model_dir(base / "model", byte_tokenizer, layers=2)
    run(model, prompts="builtin:default", out=base / "run", bounds=True)
    run(model, prompts="builtin:stress", out=base / "other-prompts")
    run(model, prompts="builtin:default", out=base / "strict", policy=Policy(tau_act=1e-12))  # nothing certified
    assert verify(base / "run").ok
    return base


@pytest.fixture()
def work(pristine, tmp_path) -> Path:
    shutil.copytree(pristine / "run", tmp_path / "run")
    return tmp_path / "run"


# ---------------------------------------------------------------------------------------------------
# Helpers an attacker would use: edit a file and keep every digest in the certificates consistent.
# ---------------------------------------------------------------------------------------------------


def load_cert(root: Path, rel: str = CERT) -> dict:
    return json.loads((root / rel).read_bytes())


def write_cert(root: Path, cert: dict, rel: str = CERT) -> None:
    (root / rel).write_bytes(rfc8785.dumps(cert))


def redigest(root: Path, rel_cert: str = CERT) -> None:
    """Recompute every subject digest of a certificate from the files as they now are."""
    cert = load_cert(root, rel_cert)
    for s in cert["subject"]:
        path = root / s["name"]
        if path.is_file():
            s["digest"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            if s["name"].endswith(".safetensors"):
                try:
                    s["annotations"][TENSOR_ANNOTATION] = tensors_sha256(load_file(path))
                except Exception:
                    pass
    write_cert(root, cert, rel_cert)


def edit_cert(root: Path, fn: Callable[[dict], None], rel: str = CERT) -> None:
    cert = load_cert(root, rel)
    fn(cert)
    write_cert(root, cert, rel)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def st_header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def st_write(path: Path, header_text: bytes, body: bytes, length: int | None = None) -> None:
    path.write_bytes(struct.pack("<Q", len(header_text) if length is None else length) + header_text + body)


def failures(root: Path, **kwargs) -> str:
    report = verify(root, **kwargs)
    assert not report.ok
    return "\n".join(f"{c.name}: claimed={c.claimed} actual={c.actual} {c.detail}"
                     for cert in report.certificates for c in cert.checks if not c.ok)


# ---------------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------------


def t_flip_ir_byte(root: Path) -> str:
    flip_byte(root / "block_000/ir.safetensors", -3)
    return "sha256 block_000/ir.safetensors"


def t_flip_ir_byte_and_redigest(root: Path) -> str:
    p = root / "block_000/ir.safetensors"
    t = load_file(p)
    t["mlp.down.weight"][0, 0] *= 1.5  # one weight of the IR changed, every digest updated to match
    p.write_bytes(save(t))
    redigest(root)
    return "is not what the IR replay gives"


def t_truncated_artifact(root: Path) -> str:
    p = root / "block_000/errors.safetensors"
    p.write_bytes(p.read_bytes()[:-8])
    redigest(root)
    return "truncated or extended"


def t_extended_artifact(root: Path) -> str:
    p = root / "block_000/ir.safetensors"
    p.write_bytes(p.read_bytes() + b"\0" * 16)
    redigest(root)
    return "truncated or extended"


def t_swapped_tensor_names(root: Path) -> str:
    p = root / "block_000/ir.safetensors"
    t = load_file(p)
    t["mlp.up.weight"], t["mlp.gate.weight"] = t["mlp.gate.weight"], t["mlp.up.weight"]
    p.write_bytes(save(t))
    redigest(root)
    return "is not what the IR replay gives"


def t_missing_artifact(root: Path) -> str:
    (root / "block_000/errors.safetensors").unlink()
    return "missing"


def t_extra_artifact(root: Path) -> str:
    (root / "block_000/notes.bin").write_bytes(b"smuggled")
    return "unreferenced"


def t_dotdot_path(root: Path) -> str:
    edit_cert(root, lambda c: c["subject"][0].update(name="block_000/../run.json"))
    return "'..'"


def t_absolute_path(root: Path) -> str:
    edit_cert(root, lambda c: c["subject"][0].update(name=str(root / "run.json")))
    return "absolute"


def t_symlink_outside(root: Path) -> str:
    outside = root.parent / "outside.json"
    shutil.copy(root / "traces/index.json", outside)
    (root / "traces/index.json").unlink()
    os.symlink(outside, root / "traces/index.json")
    return "outside the run directory"


def t_fifo(root: Path) -> str:
    (root / "block_000/errors.safetensors").unlink()
    os.mkfifo(root / "block_000/errors.safetensors")
    return "not a regular file"


def t_unknown_digest_algorithm(root: Path) -> str:
    edit_cert(root, lambda c: c["subject"][0]["digest"].update(sha512="ab" * 64))
    return "digest algorithm"


def t_malformed_hex(root: Path) -> str:
    edit_cert(root, lambda c: c["subject"][0]["digest"].update(sha256="XYZ" + "0" * 61))
    return "digest hex"


def t_oversized_safetensors_header(root: Path) -> str:
    p = root / "block_000/errors.safetensors"
    header, body = st_header(p)
    st_write(p, json.dumps(header).encode(), body, length=1 << 40)
    redigest(root)
    return "oversized"


def t_overlapping_tensors(root: Path) -> str:
    p = root / "block_000/errors.safetensors"
    header, body = st_header(p)
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    a, b = header[names[0]], header[names[1]]
    shift = 4
    b["data_offsets"] = [b["data_offsets"][0] - shift, b["data_offsets"][1] - shift]
    st_write(p, json.dumps(header).encode(), body)
    redigest(root)
    return "overlaps"


def t_hole_in_tensors(root: Path) -> str:
    p = root / "block_000/errors.safetensors"
    header, body = st_header(p)
    for k, v in header.items():
        if k != "__metadata__":
            v["data_offsets"] = [v["data_offsets"][0] + 8, v["data_offsets"][1] + 8]
    st_write(p, json.dumps(header).encode(), b"\0" * 8 + body)
    redigest(root)
    return "hole"


def t_duplicate_safetensors_keys(root: Path) -> str:
    p = root / "block_000/errors.safetensors"
    header, body = st_header(p)
    text = json.dumps(header)
    first = next(k for k in header if k != "__metadata__")
    dup = text[:-1] + f', "{first}": ' + json.dumps(header[first]) + "}"
    st_write(p, dup.encode(), body)
    redigest(root)
    return "duplicate key"


def t_shape_two_to_the_64(root: Path) -> str:
    """A header shape whose byte count overflows 64-bit integers (digests redone): one failure, no traceback."""
    p = root / "block_000/errors.safetensors"
    header, body = st_header(p)
    first = next(k for k in header if k != "__metadata__")
    header[first]["shape"] = [2**64]
    st_write(p, json.dumps(header).encode(), body)
    redigest(root)
    return "needs more than"


def t_sparse_3gb_artifact(root: Path) -> str:
    """A 3 GB sparse file in place of an artifact is refused from its header, without reading it."""
    p = root / "block_000/errors.safetensors"
    p.unlink()
    with open(p, "wb") as fh:
        fh.truncate(3 << 30)
    return "block_000/errors.safetensors header: invalid JSON"


def t_duplicate_json_keys(root: Path) -> str:
    raw = (root / CERT).read_bytes()
    (root / CERT).write_bytes(raw[:-1] + b',"_type":"https://in-toto.io/Statement/v1"}')
    return "duplicate key"


def t_nan_in_metrics(root: Path) -> str:
    cert = load_cert(root)
    text = rfc8785.dumps(cert).decode()
    eps = rfc8785.dumps(cert["predicate"]["metrics"]["epsilon"]).decode()
    (root / CERT).write_text(text.replace(f'"epsilon":{eps}', '"epsilon":NaN'))
    return "NaN"


def t_infinity_in_metrics(root: Path) -> str:
    cert = load_cert(root)
    text = rfc8785.dumps(cert).decode()
    eps = rfc8785.dumps(cert["predicate"]["metrics"]["epsilon"]).decode()
    (root / CERT).write_text(text.replace(f'"epsilon":{eps}', '"epsilon":1e999'))
    return "overflows"


def t_non_canonical_bytes(root: Path) -> str:
    (root / CERT).write_text(json.dumps(load_cert(root), indent=1))
    return "canonical"


def t_unknown_schema_major(root: Path) -> str:
    edit_cert(root, lambda c: c.update(predicateType="https://blockcert.dev/predicate/block-certificate/v4"))
    return "predicateType"


def t_v3_certificate_posing_as_v2(root: Path) -> str:
    # a v2 statement whose policy already names its rule is no v2 statement: it is not migrated, and fails
    edit_cert(root, lambda c: c.update(predicateType="https://blockcert.dev/predicate/block-certificate/v2"))
    return "predicateType"


def t_wrong_type(root: Path) -> str:
    edit_cert(root, lambda c: c.update(_type="https://in-toto.io/Statement/v0.1"))
    return "_type"


def t_missing_field(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"]["metrics"].pop("mae"))
    return "schema predicate.metrics"


def t_mistyped_field(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"]["metrics"].update(epsilon="0.0"))
    return "metrics.epsilon"


def t_unknown_field(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"].update(override_verdict=True))
    return "unknown fields"


def t_edited_metric(root: Path) -> str:
    def halve(record: dict) -> None:
        record["epsilon"] = record["epsilon"] / 2

    edit_cert(root, lambda c: halve(c["predicate"]["metrics"]))
    m = json.loads((root / "block_000/metrics.json").read_bytes())
    halve(m["metrics"])
    (root / "block_000/metrics.json").write_bytes(rfc8785.dumps(m))
    redigest(root)
    return "metric epsilon"


def t_edited_coverage(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"]["metrics"].update(cov_path=0.5))
    return "cov_path"


def t_certified_while_failing(root: Path, pristine: Path) -> str:
    shutil.rmtree(root)
    shutil.copytree(pristine / "strict", root)
    def claim(c: dict) -> None:
        c["predicate"]["verdict"] = {"certified": True, "cov_act_ok": True, "cov_loss_ok": True}
    edit_cert(root, claim)
    m = json.loads((root / "block_000/metrics.json").read_bytes())
    m["certified"] = True
    (root / "block_000/metrics.json").write_bytes(rfc8785.dumps(m))
    redigest(root)
    assert "fail the verifier's policy" in failures(root, policy=Policy(tau_act=1e-12))  # under its own policy
    return "verdict consistent with its metrics"


def t_loosened_thresholds(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"]["policy"].update(alpha_act=0.5))
    return "loosens"


def t_trace_from_other_prompts(root: Path, pristine: Path) -> str:
    shutil.rmtree(root / "traces")
    shutil.copytree(pristine / "other-prompts" / "traces", root / "traces")
    for rel in ("block_000/certificate.json", "block_001/certificate.json"):
        cert = load_cert(root, rel)
        cert["subject"] = [s for s in cert["subject"] if not s["name"].startswith("traces/prompt_")]
        cert["subject"] += [{"name": f"traces/{p.name}", "digest": {"sha256": ""}, "annotations": {TENSOR_ANNOTATION: ""}}
                            for p in sorted((root / "traces").glob("prompt_*"))]
        cert["subject"].sort(key=lambda s: s["name"])
        write_cert(root, cert, rel)
        redigest(root, rel)
    return "prompt set digest"


def t_block_cert_edited_after_summary(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"]["tool"].update(version="9.9.9"))
    return "changed after the run summary"


def t_stored_errors_edited(root: Path) -> str:
    p = root / "block_000/errors.safetensors"
    t = load_file(p)
    t["p000.error"] = t["p000.error"] * 0
    p.write_bytes(save(t))
    redigest(root)
    return "stored p000"


def t_stored_losses_edited(root: Path) -> str:
    p = root / "block_000/errors.safetensors"
    t = load_file(p)
    t["p001.loss_stitched"] = t["p001.loss_stitched"] + 1.0
    p.write_bytes(save(t))
    redigest(root)
    return "cov_loss"


def t_certificate_moved_to_other_block(root: Path) -> str:
    shutil.copy(root / "block_000/certificate.json", root / "block_001/certificate.json")
    return "block_001"


def t_run_manifest_edited(root: Path) -> str:
    m = json.loads((root / "run.json").read_text())
    m["model"]["name"] = "gpt-17"
    (root / "run.json").write_text(json.dumps(m))
    return "sha256 run.json"


def t_model_identity_edited(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"]["model"].update(name="a-much-bigger-model"))
    return "model = run.json"


def t_summary_edited(root: Path) -> str:
    """The run summary rewritten canonically with a verdict the certificates do not support."""
    summary = json.loads((root / "metrics.json").read_bytes())
    summary["certified_all"] = not summary["certified_all"]
    (root / "metrics.json").write_bytes(rfc8785.dumps(summary))
    return "summary certified_all"


def t_summary_missing(root: Path) -> str:
    (root / "metrics.json").unlink()
    return "interrupted run has no summary"


def edit_bounds(root: Path, fn: Callable[[dict], None], summary: Callable[[dict], None] | None = None) -> None:
    """Edit block_000/bounds.json (and the certificate's summary of it), keeping every digest consistent."""
    p = root / "block_000/bounds.json"
    record = json.loads(p.read_bytes())
    fn(record)
    p.write_bytes(rfc8785.dumps(record))
    if summary is not None:
        edit_cert(root, lambda c: summary(c["predicate"]["lipschitz"]))
    redigest(root)


def t_bounds_lowered_consistently(root: Path) -> str:
    """A smaller K_attn with every composition and summary redone to match: only recomputation catches it."""
    from fractions import Fraction

    from blockcert.bounds.rounding import fdown as _fdown
    from blockcert.bounds.rounding import fup as _fup

    def lower(r: dict) -> None:
        up = r["certified"]["upper"]
        up["K_attn"] = up["K_attn"] / 4
        one = Fraction(1)
        up["analytic_upper_bound"] = _fup((one + Fraction(up["K_attn"])) * (one + Fraction(up["K_mlp"])))
        up["hybrid_upper_bound"] = _fup((one + Fraction(up["K_attn"])) * (one + Fraction(up["K_mlp_local"])))
        r["certified"]["hybrid_input_radius"] = _fdown(Fraction(r["settings"]["radius"]) / (one + Fraction(up["K_attn"])))
        bounds_now.update(r)

    bounds_now: dict = {}

    def summary(s: dict) -> None:
        s["analytic_upper_bound"] = bounds_now["certified"]["upper"]["analytic_upper_bound"]
        s["hybrid_upper_bound"] = bounds_now["certified"]["upper"]["hybrid_upper_bound"]
        s["hybrid_input_radius"] = bounds_now["certified"]["hybrid_input_radius"]

    edit_bounds(root, lower, summary)
    return "recomputed K_attn"


def t_bounds_summary_differs(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"]["lipschitz"].update(hybrid_upper_bound=1.0))
    return "lipschitz.hybrid_upper_bound = bounds.json"


def t_bounds_composition_wrong(root: Path) -> str:
    def edit(r: dict) -> None:
        r["certified"]["upper"]["analytic_upper_bound"] = r["certified"]["upper"]["analytic_upper_bound"] / 10

    edit_bounds(root, edit, lambda s: s.update(analytic_upper_bound=s["analytic_upper_bound"] / 10))
    return "analytic_upper_bound = composition of K_attn, K_mlp"


def t_bounds_epsilon_seq_lowered(root: Path) -> str:
    edit_bounds(root, lambda r: r.update(epsilon_seq=r["epsilon_seq"] / 2), lambda s: s.update(epsilon_seq=s["epsilon_seq"] / 2))
    return "epsilon_seq from errors.safetensors"


def t_bounds_lower_above_upper(root: Path) -> str:
    big = 1e30

    def edit(r: dict) -> None:
        r["empirical_lower_bound"]["value"] = big

    edit_bounds(root, edit, lambda s: s.update(empirical_lower_bound=big))
    return "empirical lower <= certified upper"


def t_bounds_region_widened(root: Path) -> str:
    """The number a bound claims stays; the region it is claimed on is edited (the digests redone)."""
    def edit(r: dict) -> None:
        regions = r["certified"]["regions"]
        regions["K_attn"] = regions["K_attn"].replace("T <= ", "T <= 1000", 1)

    edit_bounds(root, edit)
    return "recomputed regions"


def t_bounds_dropped_from_predicate(root: Path) -> str:
    edit_cert(root, lambda c: c["predicate"].update(lipschitz=None))
    return "no bounds.json without predicate.lipschitz"


CASES = {name[2:]: fn for name, fn in globals().items() if name.startswith("t_")}


def test_there_are_at_least_25_distinct_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_tamper_case_is_rejected(name, work, pristine):
    fn = CASES[name]
    needle = fn(work, pristine) if fn.__code__.co_argcount == 2 else fn(work)
    message = failures(work)
    assert needle in message, message


@pytest.mark.parametrize("name", ["flip_ir_byte", "fifo", "duplicate_json_keys", "symlink_outside", "oversized_safetensors_header",
                                  "shape_two_to_the_64", "sparse_3gb_artifact"])
def test_cli_rejects_with_exit_1_and_no_traceback(name, work, pristine):
    CASES[name](work)
    proc = subprocess.run([sys.executable, "-m", "blockcert", "verify", str(work)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "Traceback" not in proc.stderr + proc.stdout


def test_pristine_run_verifies_at_every_depth(pristine, tmp_path):
    root = pristine / "run"
    assert verify(root, level="hashes").ok
    assert verify(root, level="replay").ok
    assert verify(root, level="replay", reference="numpy").ok
    assert verify(root, level="full", model=str(pristine / "model")).ok


def test_full_level_rejects_another_model(pristine, tmp_path, byte_tokenizer):
    other = make_model_dir(tmp_path / "other", byte_tokenizer, layers=2, scale=1.01)
    assert "is not the certified model" in failures(pristine / "run", level="full", model=str(other))


def test_verifier_policy_stricter_than_certificate(pristine):
    message = failures(pristine / "run", policy=Policy(alpha_act=1.0, tau_act=1e-12))
    assert "loosens" in message


def test_npz_import_refuses_pickles_and_object_arrays():
    buf = io.BytesIO()
    np.savez(buf, w=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ArtifactError, match="refused"):
        read_npz(buf.getvalue(), "weights.npz")
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("w.npy", pickle.dumps(os.system))
    with pytest.raises(ArtifactError):
        read_npz(buf.getvalue(), "weights.npz")
    buf = io.BytesIO()
    np.savez(buf, w=np.arange(3.0))
    assert read_npz(buf.getvalue(), "ok.npz")["w"].tolist() == [0.0, 1.0, 2.0]


def test_sparse_3gb_artifact_is_refused_in_bounded_memory(work):
    """The verifier reads a safetensors header before the file: a 3 GB sparse artifact costs no 3 GB."""
    CASES["sparse_3gb_artifact"](work)
    # VmHWM is this process's own peak (ru_maxrss would keep the forking pytest process's high-water mark)
    code = ("import re, sys; from blockcert.verifier.core import verify; ok = verify(sys.argv[1]).ok; "
            "print(ok, re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))")
    proc = subprocess.run([sys.executable, "-c", code, str(work)], capture_output=True, text=True, timeout=300)
    ok, peak_kib = proc.stdout.split()
    assert ok == "False" and int(peak_kib) < 1_500_000, proc.stdout  # far below the file's 3 GB
