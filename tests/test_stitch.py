"""The stitched model and its full-model certificate (paper §4.3, §6.5-6.6)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction

import pytest
import rfc8785
from test_run import make_model_dir

from blockcert.pipeline.certify import run
from blockcert.pipeline.stitch import probe_items, stitch
from blockcert.verifier.core import verify


@pytest.fixture(scope="module")
def stitched_run(tmp_path_factory, byte_tokenizer):
    base = tmp_path_factory.mktemp("stitch")
    model = make_model_dir(base / "model", byte_tokenizer, layers=3)
    run(model, prompts="builtin:default", out=base / "run")
    result = stitch(base / "run", model=str(model))
    return base, model, result


def test_probe_set_is_labelled_prompts():
    items = probe_items()
    assert len(items) >= 60  # the counts per kind and the labels' tokens: tests/test_prompt_data.py
    assert {i["kind"] for i in items} == {"arithmetic", "fact", "yes/no", "completion", "antonym"}
    assert all(i["prompt"].strip() and i["label"].strip() for i in items)


def test_stitched_model_matches_baseline(stitched_run):
    _, _, r = stitched_run
    m = r.metrics()
    assert r.stitched_blocks == (0, 1, 2) and len(m["layer_mae"]) == 3
    assert m["rel_delta_ppl"] <= 1e-5 and m["probe_stitched_vs_baseline"] == 1.0
    assert 0 < m["max_residual_error"] and m["worst_layer_mae"] == max(m["layer_mae"])
    assert m["probe_prompts"] == len(probe_items())


def test_full_model_certificate_verifies_at_every_level(stitched_run):
    base, model, _ = stitched_run
    root = base / "run"
    cert = json.loads((root / "full/certificate.json").read_bytes())
    assert cert["predicateType"].endswith("full-model-certificate/v2")
    assert [r["index"] for r in cert["predicate"]["block_certificates"]] == [0, 1, 2]
    for kwargs in ({"level": "hashes"}, {"level": "replay"}, {"level": "replay", "reference": "numpy"},
                   {"level": "full", "model": str(model)}):
        report = verify(root, **kwargs)
        assert report.ok, (kwargs, [(c.path, ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok])
        assert any(c.kind == "full-model" for c in report.certificates)
    # the numpy reference never imports torch, full-model certificate included
    code = (f"import sys; from blockcert.verifier.core import verify; r = verify({str(root)!r}, reference='numpy'); "
            "assert r.ok and any(c.kind == 'full-model' for c in r.certificates); assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _copy(stitched_run, tmp_path):
    base, _, _ = stitched_run
    shutil.copytree(base / "run", tmp_path / "run")
    return tmp_path / "run"


def _failures(root, **kw) -> str:
    report = verify(root, **kw)
    assert not report.ok
    return "\n".join(f"{ch.name} {ch.detail}" for c in report.certificates for ch in c.checks if not ch.ok)


def test_block_certificate_edited_after_full_model_certificate(stitched_run, tmp_path):
    root = _copy(stitched_run, tmp_path)
    cert = json.loads((root / "block_001/certificate.json").read_bytes())
    cert["predicate"]["tool"]["version"] = "0.0.0-edited"
    (root / "block_001/certificate.json").write_bytes(rfc8785.dumps(cert))
    message = _failures(root, level="hashes")
    assert "block_001/certificate.json differs from the bytes this certificate was issued for" in message


def test_edited_evaluation_is_rejected(stitched_run, tmp_path):
    root = _copy(stitched_run, tmp_path)
    cert = json.loads((root / "full/certificate.json").read_bytes())
    cert["predicate"]["metrics"]["ppl_stitched"] *= 0.5
    (root / "full/certificate.json").write_bytes(rfc8785.dumps(cert))
    message = _failures(root, level="hashes")
    assert "eval.json = certificate" in message and "metric delta_ppl follows" in message


def test_edited_layer_errors_are_recomputed(stitched_run, tmp_path):
    """Every block stitched: the verifier recomputes the stream from the IRs alone and catches a false MAE."""
    root = _copy(stitched_run, tmp_path)
    for name in ("full/eval.json", "full/certificate.json"):
        obj = json.loads((root / name).read_bytes())
        metrics = obj["metrics"] if "metrics" in obj else obj["predicate"]["metrics"]
        # beyond rounding: an identity IR's honest layer MAE is float32 noise (~1e-7 here), which the verifier
        # accepts within a per-token rounding band; a claim 1e-3 (τ_act / 10) off is a lie
        metrics["layer_mae"][1] += 1e-3
        metrics["mean_layer_mae"] = sum(metrics["layer_mae"]) / len(metrics["layer_mae"])
        metrics["worst_layer_mae"] = max(metrics["layer_mae"])
        if name == "full/certificate.json":
            import hashlib

            for s in obj["subject"]:
                if s["name"] == "full/eval.json":
                    s["digest"]["sha256"] = hashlib.sha256((root / "full/eval.json").read_bytes()).hexdigest()
        (root / name).write_bytes(rfc8785.dumps(obj))
    assert verify(root, level="hashes").certificates  # structure is consistent now ...
    assert "layer MAE (IR chain)" in _failures(root, level="replay")  # ... but the numbers are not


def test_stitch_a_subset_and_bad_requests(stitched_run, tmp_path):
    base, model, _ = stitched_run
    root = _copy(stitched_run, tmp_path)
    r = stitch(root, blocks=[1], model=str(model))
    assert r.stitched_blocks == (1,) and r.layer_mae[0] == 0.0  # layer 1 (after block 0) is untouched
    assert verify(root, level="replay").ok
    proc = subprocess.run([sys.executable, "-m", "blockcert", "stitch", str(root), "--blocks", "7", "--model", str(model)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no certificate" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "blockcert", "stitch", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "run.json" in proc.stderr


@pytest.mark.slow
def test_default_model_fully_stitched(tmp_path):
    """All 30 SmolLM2 blocks replaced by their IR: perplexity within 1e-5 relative, probe agreement 1.0, and
    Theorem 1 from the certified Lipschitz bounds above the observed max residual at every layer."""
    out = tmp_path / "D"
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--full", "--bounds", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    full = json.loads(proc.stdout)["full_model"]
    assert full["rel_delta_ppl"] <= 1e-5
    assert full["probe_stitched_vs_baseline"] == 1.0
    assert len(full["layer_mae"]) == 30
    report = verify(out, level="hashes")
    assert report.ok
    proc = subprocess.run([sys.executable, "-m", "blockcert", "bound", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    theorem = json.loads(proc.stdout)
    assert theorem["holds"] is True and theorem["observed"]["max_residual_error"] == full["max_residual_error"]
    sound = [v for v in theorem["variants"] if v["sound"]]
    assert sound and all(Fraction(v["bound"]["decimal"]) >= Fraction(full["max_residual_error"]) for v in sound)


def test_full_certificate_alone_reads_only_covered_bytes(stitched_run, tmp_path):
    """Verifying full/certificate.json by itself: the IRs of the chain and the trace files are covered only by
    the block certificates (themselves covered by id), and are read through those digests."""
    root = _copy(stitched_run, tmp_path)
    assert verify(root / "full/certificate.json").ok
    p = root / "block_001/ir.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01  # one weight changed; no certificate re-digested
    p.write_bytes(bytes(data))
    assert "sha256 block_001/ir.safetensors" in _failures(root / "full/certificate.json")
    p = root / "traces/prompt_001.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0x01
    p.write_bytes(bytes(data))
    assert "sha256 traces/prompt_001.safetensors" in _failures(root / "full/certificate.json", level="hashes")


def test_a_schema_v1_full_model_certificate_still_verifies(stitched_run, tmp_path):
    """Full-model schema v2 added ``device``; a v1 certificate (without it) is read as made on the CPU."""
    import shutil

    import rfc8785

    from blockcert.verifier.core import verify

    base, _, _ = stitched_run
    root = tmp_path / "run"
    shutil.copytree(base / "run", root)
    cert = json.loads((root / "full/certificate.json").read_text())
    assert cert["predicate"]["device"] == "cpu"
    del cert["predicate"]["device"]
    cert["predicate"]["schema_version"] = 1
    cert["predicateType"] = "https://blockcert.dev/predicate/full-model-certificate/v1"
    (root / "full/certificate.json").write_bytes(rfc8785.dumps(cert))
    report = verify(root, level="hashes")
    assert report.ok, [(c.path, ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
