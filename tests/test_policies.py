"""The three coverage policies (paper, relative, noise-floor) on a real random-init Llama in bfloat16: what they
certify, that the verifier re-derives every verdict, and that a forger cannot buy a verdict with floors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from adversary import redigest, resummarize
from safetensors.numpy import load_file
from test_run import make_model_dir

from blockcert.certificate import subject
from blockcert.ir import load_ir
from blockcert.metrics import act_thresholds, loss_thresholds
from blockcert.pipeline.certify import Extraction, _certify, replay_all, run
from blockcert.pipeline.floor import LOSS_ULPS, U32, model_in
from blockcert.pipeline.trace import load_traces, prompt_file
from blockcert.policy import NOISE_K, Policy
from blockcert.verifier.core import verify
from blockcert.verifier.metrics import thresholds

NOISE = Policy(name="noise-floor")


@pytest.fixture(scope="module")
def made(tmp_path_factory, byte_tokenizer) -> dict:
    base = tmp_path_factory.mktemp("policies")
    model = make_model_dir(base / "model", byte_tokenizer, layers=3)
    runs = {}
    for name, options in {"identity": {}, "zero-wv": {"ablate": "zero-wv"}}.items():
        for policy in ("paper", "relative", "noise-floor"):
            out = base / f"{name}-{policy}"
            runs[name, policy] = run(str(model), prompts="builtin:default", blocks="all", dtype="bfloat16",
                                     policy=Policy(name=policy), out=out, **options)
    return {"model": str(model), "runs": runs, "base": base}


def failed(report) -> list[str]:
    return [f"{c.path}: {ch.name}: {ch.detail}" for c in report.certificates for ch in c.checks if not ch.ok]


def test_in_bfloat16_only_the_noise_floor_tells_the_identity_from_an_ablation(made):
    runs = made["runs"]
    # the paper's absolute τ_act = 1e-2 is far below bfloat16's rounding: nothing certifies, good or bad
    assert not any(b.certified for b in runs["identity", "paper"].blocks)
    assert all(b.metrics.cov_act == 0.0 for b in runs["identity", "paper"].blocks)
    assert all(b.certified for b in runs["identity", "noise-floor"].blocks)
    assert not any(b.certified for b in runs["zero-wv", "noise-floor"].blocks)
    assert max(b.metrics.cov_act for b in runs["zero-wv", "noise-floor"].blocks) < 0.5


@pytest.mark.parametrize("policy", ["paper", "relative", "noise-floor"])
def test_every_level_re_derives_the_verdict(made, policy):
    for name in ("identity", "zero-wv"):
        out = made["runs"][name, policy].out
        for level in ("hashes", "replay", "full"):
            report = verify(out, level=level, policy=Policy(name=policy), model=made["model"] if level == "full" else None)
            assert report.ok, failed(report)


def test_the_floors_are_artifacts(made):
    out = made["runs"]["identity", "noise-floor"].out
    stored = load_file(out / "block_001/errors.safetensors")
    assert {"p000.floor_act", "p000.floor_loss"} <= set(stored)
    assert np.all(stored["p000.floor_act"] > 0) and np.all(stored["p000.floor_loss"] > 0)
    cert = json.loads((out / "block_001/certificate.json").read_text())
    assert cert["predicate"]["policy"]["name"] == "noise-floor" and cert["predicate"]["policy"]["k"] == NOISE_K
    paper = load_file(made["runs"]["identity", "paper"].out / "block_001/errors.safetensors")
    assert not any(k.endswith(("floor_act", "floor_loss")) for k in paper)


def test_a_certificate_is_judged_by_its_own_rule_only_deliberately(made):
    out = made["runs"]["identity", "noise-floor"].out
    report = verify(out, level="hashes")  # the verifier's default policy is the paper's
    assert not report.ok and any("policy name" in f for f in failed(report))
    looser = verify(out, level="hashes", policy=Policy(name="noise-floor", k=NOISE_K / 2))
    assert not looser.ok and any("loosens ['k']" in f for f in failed(looser))


def test_numpy_reference_says_it_cannot_re_measure_floors(made, tmp_path):
    # float32: the numpy reference re-captures the traces of a float32 run, and then meets the floors
    out = run(made["model"], prompts="builtin:default", blocks="1", policy=NOISE, out=tmp_path / "f32").out
    assert verify(out, level="full", reference="torch", policy=NOISE, model=made["model"]).ok
    report = verify(out, level="full", reference="numpy", policy=NOISE, model=made["model"])
    assert not report.ok and any("--reference torch" in f for f in failed(report))


def forge_floors(root: Path, factor: float) -> None:
    """A forger's noise-floor run: every stored floor multiplied by ``factor``, then the metrics, verdict,
    certificates and summary rebuilt from them with our own writers."""
    traces = load_traces(root)
    manifest = json.loads((root / "run.json").read_text())
    for d in sorted(root.glob("block_*")):
        ell = int(d.name.removeprefix("block_"))
        stored = load_file(d / "errors.safetensors")
        keys = [f"p{t.index:03d}" for t in traces]
        ir = load_ir(d / "ir")
        _, errs, norms, paths = replay_all(ir, traces, ell)
        surrogate = json.loads((d / "certificate.json").read_text())["predicate"]["surrogate"]  # the ablation, kept
        ex = Extraction(ell, ir.arch, ir.n_ctx, None, None, surrogate, errs, norms, paths, None,
                        [stored[f"{k}.floor_act"] * factor for k in keys])
        shared = [subject(root, "run.json"), subject(root, "traces/index.json"), *(subject(root, prompt_file(t.index)) for t in traces)]
        _certify(root, ex, [stored[f"{k}.loss_stitched"] for k in keys], traces, Policy(**manifest["policy"]), shared, manifest,
                 [stored[f"{k}.floor_loss"] * factor for k in keys])
        redigest(root, f"{d.name}/certificate.json")
    resummarize(root)


def test_inflated_floors_buy_a_verdict_below_full_and_are_caught_at_full(made, tmp_path):
    import shutil

    root = tmp_path / "forged"
    shutil.copytree(made["runs"]["zero-wv", "noise-floor"].out, root)
    forge_floors(root, 1e4)
    certified = [json.loads(p.read_text())["predicate"]["verdict"]["certified"] for p in sorted(root.glob("block_*/certificate.json"))]
    assert all(certified)  # the forgery claims every ablated block
    for level in ("hashes", "replay"):  # below full the floors are as trusted as the traces (docs/verification.md)
        assert verify(root, level=level, policy=NOISE).ok
    report = verify(root, level="full", policy=NOISE, model=made["model"])
    assert not report.ok
    assert any("re-measured floor_act" in f for f in failed(report))
    assert all(c.certified is False for c in report.certificates if c.kind == "block")


def test_producer_and_verifier_thresholds_agree():
    rng = np.random.default_rng(0)
    norms, floors, lfloors = rng.uniform(1, 100, 7), rng.uniform(0, 1, 7), rng.uniform(0, 1, 6)
    for policy in (Policy(), Policy(name="relative", tau_act=0.03), Policy(name="noise-floor", k=3.0)):
        act, loss = thresholds(policy, [norms], [6], [floors], [lfloors])
        np.testing.assert_array_equal(act[0], act_thresholds(policy, norms, floors))
        np.testing.assert_array_equal(loss[0], loss_thresholds(policy, 6, lfloors))
    assert np.array_equal(act_thresholds(Policy(name="relative", tau_act=0.5), np.array([2.0, 4.0])), [1.0, 2.0])


def test_model_in_restores_every_tensor_exactly(made):
    import blockcert

    loaded = blockcert.load_model(made["model"], dtype="bfloat16")
    before = {n: t.clone() for n, t in loaded.model.state_dict().items()}
    buffers = {n: (b.dtype, b.clone()) for n, b in loaded.model.named_buffers()}
    import torch

    with model_in(loaded.model, torch.float32):
        assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    after = loaded.model.state_dict()
    assert all(torch.equal(before[n], after[n]) and before[n].dtype == after[n].dtype for n in before)
    assert all(b.dtype == buffers[n][0] and torch.equal(b, buffers[n][1]) for n, b in loaded.model.named_buffers())


def test_loss_floor_is_the_larger_of_the_block_noise_and_the_suffix_noise():
    from blockcert.pipeline.floor import loss_floors

    base = np.array([2.0, 3.0], np.float32)
    block, suffix = base + np.array([0.1, 0.5], np.float32), base - np.array([0.3, 0.2], np.float32)
    np.testing.assert_allclose(loss_floors([base], [block], [suffix])[0], [0.3, 0.5], rtol=1e-6)


def test_loss_floor_is_never_below_the_float32_resolution_of_the_loss():
    from blockcert.pipeline.floor import loss_floors

    base = np.array([2.0, 0.5], np.float32)
    floor = loss_floors([base], [base], [base])[0]  # no measured noise at all
    np.testing.assert_array_equal(floor, LOSS_ULPS * U32 * np.abs(base.astype(np.float64)))


@pytest.mark.slow  # spawns the CLI
@pytest.mark.parametrize("args, message", [
    (["--policy", "strict"], "unknown --policy 'strict'"),
    (["--policy", "noise-floor", "--noise-k", "0"], "--noise-k"),
    (["--policy", "noise-floor", "--noise-k", "-2"], "--noise-k"),
])
@pytest.mark.parametrize("command", ["run", "verify"])
def test_bad_policy_flags_are_one_line_and_exit_2(command, args, message, tmp_path):
    target = ["--out", str(tmp_path / "o")] if command == "run" else [str(tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "blockcert", command, *target, *args], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------------
# --device: the plumbing on a CPU-only machine (a GPU run is benchmarks/gpu_costs.py's and docs/performance.md's)
# ---------------------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blockcert", *args], capture_output=True, text=True)


@pytest.mark.slow  # spawns the CLI
def test_device_cpu_and_auto_run_and_are_recorded(made, tmp_path):
    import torch

    if torch.cuda.is_available() or getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator: auto would not fall back")
    for device in ("cpu", "auto"):
        out = tmp_path / device
        proc = cli("run", "--model", made["model"], "--prompts", "builtin:default", "--blocks", "1", "--device", device, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert ("no CUDA or MPS device here; running on the CPU" in proc.stderr) == (device == "auto")
        cert = json.loads((out / "block_001/certificate.json").read_text())
        assert cert["predicate"]["replay"]["device"] == "cpu"
        assert json.loads((out / "run.json").read_text())["replay"]["device"] == "cpu"
    same = [(tmp_path / d / "block_001/certificate.json").read_bytes() for d in ("cpu", "auto")]
    assert same[0] == same[1]  # auto on this machine is the CPU, bit for bit
    proc = cli("verify", str(tmp_path / "auto"), "--level", "full", "--model", made["model"], "--device", "auto")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow  # spawns the CLI
@pytest.mark.parametrize("command", [
    ["run", "--blocks", "0"], ["verify", "."], ["stitch", "."], ["edit", "--mlp-scale", "0.5", "--block", "0"],
    ["experiment", "table2"],
])
@pytest.mark.parametrize("device, message", [("tpu", "unknown --device 'tpu'"), ("cuda", "--device cuda: this machine has no CUDA")])
def test_a_device_this_machine_lacks_is_one_line_and_exit_2(command, device, message, tmp_path):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "blockcert", *command, "--device", device, "--out", str(tmp_path / "o")]
                          if command[0] not in ("verify", "stitch") else
                          [sys.executable, "-m", "blockcert", *command, "--device", device], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_benchmark_refuses_without_cuda_in_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would measure")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks/gpu_costs.py")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "needs a CUDA GPU" in proc.stderr and "nothing measured" in proc.stderr


def test_report_and_bound_judge_a_run_by_its_own_rule(made, tmp_path):
    from blockcert.bounds.compose import bound
    from blockcert.report.gather import collect

    out = tmp_path / "nf"
    run(made["model"], prompts="builtin:default", blocks="all", dtype="bfloat16", policy=NOISE, out=out, bounds=True)
    view = collect(out, tokenizer="none")
    assert view.verified  # at level hashes, under the noise-floor rule the run names
    assert bound(out).blocks  # Theorem 1 reads the run's certificates after the same check
