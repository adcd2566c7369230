"""Crash safety: `blockcert run` SIGKILLed at many points, then resumed, gives byte-identical certificates
to an uninterrupted run, and an interrupted run directory never verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from blockcert.errors import UserError
from blockcert.verifier.core import verify
from test_run import make_model_dir


def blockcert_run(model: Path, out: Path, *extra: str, fault: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("BLOCKCERT_FAULT_AFTER_WRITES", None)
    if fault is not None:
        env["BLOCKCERT_FAULT_AFTER_WRITES"] = str(fault)
    cmd = [sys.executable, "-m", "blockcert", "run", "--model", str(model), "--prompts", "builtin:default", "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, byte_tokenizer):
    base = tmp_path_factory.mktemp("crash")
    model = make_model_dir(base / "model", byte_tokenizer, layers=3)
    proc = blockcert_run(model, base / "ref")
    assert proc.returncode == 0, proc.stderr
    return model, base / "ref"


def _verifies(root: Path) -> bool:
    """Whether ``root`` verifies; a directory with no certificate yet is refused as a usage error."""
    try:
        return verify(root).ok
    except UserError:
        return False


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# Atomic writes in a 3-block run: 1 run.json, 4 traces + index, then 5 per block, then the summary (21).
@pytest.mark.slow
@pytest.mark.parametrize("fault", [1, 5, 6, 9, 16, 21])
def test_killed_run_resumes_to_identical_certificates(reference, tmp_path, fault):
    model, ref = reference
    out = tmp_path / "out"
    killed = blockcert_run(model, out, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert out.is_dir()  # at least run.json was written before the fault
    assert not _verifies(out)  # a partial run never verifies, at every fault point
    resumed = blockcert_run(model, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _files(out) == _files(ref)
    assert verify(out).ok
