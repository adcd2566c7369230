"""`blockcert run --surrogate / --ablate`: derived blocks certified like any block, and re-derived by the verifier."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rfc8785
from safetensors.numpy import load_file, save

from blockcert.derive import BASE_STEM
from blockcert.errors import UserError
from blockcert.ir import load_ir
from blockcert.pipeline.certify import run
from blockcert.verifier.core import verify
from test_run import make_model_dir
from test_tamper import edit_cert, failures, redigest


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, byte_tokenizer) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("derive") / "model", byte_tokenizer, layers=2)


@pytest.fixture(scope="module")
def runs(model_dir, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("derive-runs")
    out = {}
    for name, kwargs in {"identity": {}, "lowrank": {"surrogate": "lowrank:r=4"}, "invert": {"ablate": "invert-mask"},
                         "prune": {"surrogate": "prune-heads:heads=1"}}.items():
        out[name] = base / name
        run(model_dir, prompts="builtin:default", out=out[name], **kwargs)
    return out


def cert(root: Path, block: int = 0) -> dict:
    return json.loads((root / f"block_{block:03d}" / "certificate.json").read_bytes())


def test_certificate_records_the_derivation(runs):
    pred = cert(runs["lowrank"])["predicate"]
    sur = pred["surrogate"]
    assert sur["kind"] == "surrogate" and sur["requested"] == "lowrank:r=4" and sur["spec"].startswith("lowrank:r=4")
    assert sur["base_ir"] == f"block_000/{BASE_STEM}.json"
    names = {s["name"] for s in cert(runs["lowrank"])["subject"]}
    assert {f"block_000/{BASE_STEM}.json", f"block_000/{BASE_STEM}.safetensors"} <= names
    assert any(k.startswith("energy_kept") for k in sur["notes"])
    # the base IR is the plain extraction: identical to the identity run's IR
    base = load_ir(runs["lowrank"] / "block_000" / BASE_STEM)
    assert base == load_ir(runs["identity"] / "block_000" / "ir")
    derived = load_ir(runs["lowrank"] / "block_000" / "ir")
    sv = np.linalg.svd(derived.attn.q.weight.astype(np.float64), compute_uv=False)
    assert np.all(sv[4:] <= 1e-5 * sv[0])  # rank 4 up to the float32 rounding of the stored weights
    assert json.loads((runs["lowrank"] / "run.json").read_text())["derivation"] == {"kind": "surrogate", "spec": "lowrank:r=4"}
    assert cert(runs["identity"])["predicate"]["surrogate"] is None


@pytest.mark.parametrize("name", ["lowrank", "invert", "prune"])
def test_derived_runs_verify_at_every_depth(runs, model_dir, name):
    for kwargs in ({"level": "hashes"}, {"level": "replay"}, {"level": "replay", "reference": "numpy"},
                   {"level": "full", "model": str(model_dir)}):
        report = verify(runs[name], **kwargs)
        assert report.ok, (kwargs, [(c.path, ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok])
    checks = {ch.name for c in verify(runs[name]).certificates for ch in c.checks}
    assert "re-derived surrogate = certified IR" in checks


def test_metrics_respond(runs):
    def metric(name: str, key: str) -> float:
        return float(np.mean([cert(runs[name], b)["predicate"]["metrics"][key] for b in (0, 1)]))

    for name in ("lowrank", "invert", "prune"):
        assert metric(name, "epsilon") > 10 * metric("identity", "epsilon")
    assert metric("identity", "cov_path") == 1.0
    assert metric("invert", "cov_path") < 0.5  # every mask row of a sequence longer than one token changed
    assert metric("prune", "cov_path") == 0.0  # a gated head is a changed discrete decision on every token


def _swap_in_base_ir(root: Path) -> None:
    """Certify the plain extraction while claiming it is the low-rank surrogate (every digest redone)."""
    d = root / "block_000"
    shutil.copy(d / f"{BASE_STEM}.safetensors", d / "ir.safetensors")
    meta = json.loads((d / "ir.json").read_text())
    base_meta = json.loads((d / f"{BASE_STEM}.json").read_text())
    base_meta["source"] = meta["source"]  # keep the derivation record the certificate names
    (d / "ir.json").write_text(json.dumps(base_meta, indent=2, sort_keys=True) + "\n")
    redigest(root)


def test_tampered_derivations_are_rejected(runs, tmp_path):
    work = tmp_path / "w1"
    shutil.copytree(runs["lowrank"], work)
    _swap_in_base_ir(work)
    block0 = next(c for c in verify(work, level="hashes").certificates if c.path == "block_000/certificate.json")
    assert block0.ok  # every digest of the block is consistent ...
    assert "re-derived surrogate = certified IR" in failures(work)  # ... but the IR is not what the spec makes

    work = tmp_path / "w2"
    shutil.copytree(runs["lowrank"], work)
    edit_cert(work, lambda c: c["predicate"]["surrogate"].update(spec="lowrank:r=8,targets=attn"))
    assert "surrogate.spec = the IR's derivation" in failures(work, level="hashes")

    work = tmp_path / "w3"
    shutil.copytree(runs["lowrank"], work)
    p = work / "block_000" / f"{BASE_STEM}.safetensors"
    t = load_file(p)
    t["attn.q.weight"] = t["attn.q.weight"] * np.float32(1.01)
    p.write_bytes(save(t))
    redigest(work)
    assert "surrogate.base_ir_tensors_sha256" in failures(work, level="hashes")

    work = tmp_path / "w4"  # a plain certificate in a run made for an ablation
    shutil.copytree(runs["invert"], work)
    edit_cert(work, lambda c: c["predicate"].update(surrogate=None))
    assert "derivation = run.json" in failures(work, level="hashes")


def test_bad_requests_write_nothing(model_dir, tmp_path):
    for kwargs, needle in [({"surrogate": "lowrank:r=4", "ablate": "zero-wv"}, "exclusive"),
                           ({"surrogate": "lowrnk"}, "unknown surrogate 'lowrnk'"),
                           ({"ablate": "invert-mask:x=1"}, "'x'"),
                           ({"surrogate": "prune-heads:heads=99"}, "heads")]:
        out = tmp_path / "none"
        with pytest.raises(UserError, match=needle):
            run(model_dir, prompts="builtin:default", out=out, **kwargs)
        assert not out.exists()


def test_resume_refuses_another_derivation(runs, model_dir, tmp_path):
    work = tmp_path / "r"
    shutil.copytree(runs["lowrank"], work)
    with pytest.raises(UserError, match="derivation"):
        run(model_dir, prompts="builtin:default", out=work, resume=True, surrogate="lowrank:r=8")
    again = run(model_dir, prompts="builtin:default", out=work, resume=True, surrogate="lowrank:r=4")
    assert all(b.resumed for b in again.blocks)


@pytest.mark.slow
def test_cli_surrogate_run(model_dir, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--model", str(model_dir), "--prompts", "builtin:default",
                           "--surrogate", "int8", "--out", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["blocks"][0]["epsilon"] > 0
    assert cert(out)["predicate"]["surrogate"]["spec"].startswith("int8")
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--model", str(model_dir), "--ablate", "no-such",
                           "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "drop-rope" in proc.stderr and "Traceback" not in proc.stderr


def test_canonical_json_digest_of_the_certificate_is_its_id(runs):
    raw = (runs["lowrank"] / "block_000" / "certificate.json").read_bytes()
    assert rfc8785.dumps(json.loads(raw)) == raw
    summary = json.loads((runs["lowrank"] / "metrics.json").read_bytes())
    assert summary["blocks"][0]["certificate_id"] == hashlib.sha256(raw).hexdigest()
