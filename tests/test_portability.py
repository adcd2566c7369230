"""Certificates made under one rounding verify under another. "Elsewhere" is this machine made to round like a
different one: torch's scalar kernels instead of its vectorised ones (ATEN_CPU_CAPABILITY=default), MKL in its
compatible code path (MKL_CBWR=COMPATIBLE) and one thread. The same float32 replay of the real model then differs
in its last bits, and the verifier's per-token bands absorb exactly that.

(Thread counts alone are not enough: on some CPUs MKL rounds a matrix product identically with 1 and 2 threads,
which made an earlier version of this test prove nothing there.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from blockcert.pipeline.certify import run
from blockcert.verifier.core import verify

ELSEWHERE = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _elsewhere(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blockcert", *args], env={**os.environ, **ELSEWHERE},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def made(smollm2, tmp_path_factory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("rounding")
    out = {"here": base / "here", "elsewhere": base / "elsewhere"}
    run(loaded=smollm2, blocks="3", prompts="builtin:default", out=out["here"])
    proc = _elsewhere("run", "--blocks", "3", "--prompts", "builtin:default", "--out", str(out["elsewhere"]))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_the_two_machines_round_differently(made):
    """Otherwise the next tests would prove nothing: the two runs' stored errors differ in their last bits."""
    a = load_file(made["here"] / "block_003/errors.safetensors")
    b = load_file(made["elsewhere"] / "block_003/errors.safetensors")
    gap = max(float(np.abs(a[k] - b[k]).max()) for k in a if k.endswith(".error"))
    assert 0 < gap < 1e-4


@pytest.mark.parametrize("reference", ["torch", "numpy"])
def test_made_elsewhere_verifies_here(made, reference):
    report = verify(made["elsewhere"], reference=reference)
    assert report.ok, [(ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]


@pytest.mark.parametrize("reference", ["torch", "numpy"])
def test_made_here_verifies_elsewhere(made, reference):
    proc = _elsewhere("verify", str(made["here"]), "--reference", reference)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
