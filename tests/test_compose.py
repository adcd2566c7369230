"""`blockcert run --bounds` and `blockcert bound`: Lipschitz bounds in the certificates, Theorem 1 over a run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

import blockcert
from blockcert.bounds.compose import bound
from blockcert.errors import UserError
from blockcert.pipeline.certify import run
from blockcert.pipeline.stitch import stitch
from blockcert.verifier.core import verify
from test_run import make_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, byte_tokenizer) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("compose") / "model", byte_tokenizer, layers=3)


@pytest.fixture(scope="module")
def bounded_run(model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compose-run") / "run"
    run(model_dir, prompts="builtin:stress", out=out, bounds=True)
    stitch(out)
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blockcert", *args], capture_output=True, text=True, timeout=600)


def certs(root: Path) -> list[dict]:
    return [json.loads(p.read_bytes())["predicate"] for p in sorted(root.glob("block_*/certificate.json"))]


def test_bounds_are_logged_labelled_and_verify(bounded_run, model_dir):
    for pred in certs(bounded_run):
        lip = pred["lipschitz"]
        record = json.loads((bounded_run / lip["bounds"]).read_bytes())
        assert record["certified"]["upper"]["analytic_upper_bound"] == lip["analytic_upper_bound"]
        assert set(record["certified"]["regions"]) >= {"K_attn", "K_mlp", "K_mlp_local", "analytic_upper_bound", "hybrid_upper_bound"}
        for s in record["certified"]["spectral"].values():
            assert 0 < s["lower"] <= s["upper"]
        # the empirical lower bound is attained, the analytic one certified: lower <= upper, and a visible gap
        assert 0 < lip["empirical_lower_bound"] <= lip["hybrid_upper_bound"]
        assert lip["empirical_lower_bound"] <= lip["analytic_upper_bound"]
        # epsilon_seq lies between the per-token epsilon and sqrt(T) times it
        T = record["certified"]["seq_len"]
        assert pred["metrics"]["epsilon"] <= lip["epsilon_seq"] <= (T ** 0.5) * pred["metrics"]["epsilon"] * (1 + 1e-9)
    report = verify(bounded_run, level="full", model=str(model_dir))
    assert report.ok, [(c.path, ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
    names = {ch.name for c in report.certificates for ch in c.checks}
    assert {"recomputed K_attn", "recomputed empirical lower bound", "epsilon_seq from errors.safetensors"} <= names


def test_theorem_1_from_the_certificates(bounded_run):
    report = bound(bounded_run)
    preds = certs(bounded_run)
    eps = [Fraction(p["lipschitz"]["epsilon_seq"]) for p in preds]
    lips = [Fraction(p["lipschitz"]["analytic_upper_bound"]) for p in preds]
    # the closed form sum_i eps_i prod_{j>i} L_j, computed independently of the Horner recursion
    closed = Fraction(0)
    for i, e in enumerate(eps):
        prod = Fraction(1)
        for lip in lips[i + 1:]:
            prod *= lip
        closed += e * prod
    analytic = next(v for v in report.variants if v.name == "analytic")
    assert analytic.bound.exact == closed and Fraction(analytic.bound.upper) >= closed
    assert analytic.per_layer[0] == eps[0]  # delta_1 = eps_0: nothing before block 0
    mixed = report.sound
    assert mixed.bound.exact <= analytic.bound.exact
    # the bound is above what the stitched model really did, at every layer
    assert report.observed_layer_max is not None and report.holds is True
    for delta, seen in zip(mixed.per_layer, report.observed_layer_max):
        assert delta >= Fraction(seen)
    assert report.observed_max == max(report.observed_layer_max)
    assert not next(v for v in report.variants if v.name == "per-token-eps").sound
    assert report.sum_eps.sum_eps_exact == sum(eps) and not report.sum_eps.lips_le_one
    assert {h.status for h in report.hypotheses} <= {"certified", "measured", "checked", "empirical", "violated"}


def test_subset_of_blocks_sets_the_others_eps_to_zero(bounded_run):
    report = bound(bounded_run, blocks="1")
    assert report.stitched_blocks == (1,)
    v = next(v for v in report.variants if v.name == "analytic")
    eps1 = Fraction(certs(bounded_run)[1]["lipschitz"]["epsilon_seq"])
    assert v.per_layer[0] == 0 and v.per_layer[1] == eps1
    assert report.observed_max is None  # full/eval.json stitched all blocks, not this subset


def test_bound_holds_when_the_error_is_not_tiny(model_dir, tmp_path):
    """bfloat16 native blocks against the float32 IR: per-block errors and stitched deviations far above rounding."""
    out = tmp_path / "bf16"
    run(model_dir, prompts="builtin:default", out=out, dtype="bfloat16", bounds=True)
    stitch(out)
    report = bound(out)
    assert report.observed_max is not None and report.observed_max > 1e-4
    assert report.holds is True


def test_cli_bound_text_and_json(bounded_run):
    proc = cli("bound", str(bounded_run))
    assert proc.returncode == 0, proc.stderr
    assert "Theorem 1" in proc.stdout and "the bound holds at every layer" in proc.stdout and "hypotheses" in proc.stdout
    proc = cli("bound", str(bounded_run), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["holds"] is True and {v["name"] for v in data["variants"]} == {"analytic", "mixed", "hybrid", "per-token-eps"}
    mixed = next(v for v in data["variants"] if v["name"] == "mixed")
    assert Fraction(mixed["bound"]["decimal"]) >= Fraction(data["observed"]["max_residual_error"])


def test_cli_bound_errors(model_dir, bounded_run, tmp_path):
    plain = tmp_path / "plain"
    run(model_dir, prompts="builtin:default", out=plain)
    proc = cli("bound", str(plain))
    assert proc.returncode == 2 and "log no Lipschitz bounds" in proc.stderr and "Traceback" not in proc.stderr
    partial = tmp_path / "partial"
    run(model_dir, prompts="builtin:default", out=partial, blocks="0", bounds=True)
    proc = cli("bound", str(partial))
    assert proc.returncode == 2 and "no certificate for blocks 1-2" in proc.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(bounded_run, tampered)
    (tampered / "block_001" / "bounds.json").write_bytes(b"{}")
    proc = cli("bound", str(tampered))
    assert proc.returncode == 2 and "does not verify" in proc.stderr
    proc = cli("bound", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_resume_with_bounds_adds_them(model_dir, tmp_path):
    out = tmp_path / "resume"
    run(model_dir, prompts="builtin:default", out=out)
    assert all(p["lipschitz"] is None for p in certs(out))
    result = run(model_dir, prompts="builtin:default", out=out, resume=True, bounds=True)
    assert not any(b.resumed for b in result.blocks)
    assert all(p["lipschitz"] is not None for p in certs(out))
    again = run(model_dir, prompts="builtin:default", out=out, resume=True, bounds=True)
    assert all(b.resumed for b in again.blocks)
    assert verify(out).ok


def test_api_exports():
    assert blockcert.bound is bound and blockcert.BoundSettings(margin=0.25).margin == 0.25
    with pytest.raises(UserError, match="--bound-margin"):
        blockcert.BoundSettings(margin=0.0)
