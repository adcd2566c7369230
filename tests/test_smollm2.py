"""On the real SmolLM2-135M-Instruct weights: every one of the 30 blocks replays within 1e-5 relative."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import blockcert
from blockcert.prompts import builtin

pytestmark = pytest.mark.slow  # every test here is about the real default model

TOL = 1e-5


def test_every_block_matches_native(smollm2):
    results = blockcert.check_blocks(smollm2, builtin("default"), numpy_reference=True)
    assert [r.index for r in results] == list(range(30))
    worst = max(results, key=lambda r: max(r.rel, r.rel_numpy))
    assert worst.rel <= TOL and worst.rel_numpy <= TOL, worst
    assert all(r.max_abs > 0 for r in results)  # a real comparison happened (float32 rounding differs)


def test_ir_check_cli_end_to_end():
    out = subprocess.run([sys.executable, "-m", "blockcert", "ir-check", "--blocks", "0,14-15,29", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["arch"] == "llama" and report["prompts"] == 4
    assert [b["index"] for b in report["blocks"]] == [0, 14, 15, 29]


def test_ir_check_fails_when_tolerance_is_impossible():
    out = subprocess.run([sys.executable, "-m", "blockcert", "ir-check", "--blocks", "0", "--tolerance", "0"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "mismatch" in out.stdout
