"""Golden runs: every later version of BlockCert must still verify the certificates committed here.

When the certificate format changes, bump CERT_SCHEMA_VERSION, add a migration for the old predicate type
in blockcert/verifier/subjects.py (MIGRATIONS), and add a new golden directory with tests/make_golden.py; never
rewrite an old one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from blockcert.policy import Policy
from blockcert.verifier.core import Tolerances, verify

DATA = Path(__file__).parent / "data"
GOLDEN = sorted(DATA.glob("golden-run-v*"))


def test_there_is_a_golden_run():
    assert GOLDEN


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: p.name)
@pytest.mark.parametrize("level, reference", [("hashes", "torch"), ("replay", "torch"), ("replay", "numpy")])
def test_golden_run_still_verifies(golden, level, reference):
    # Replays on another CPU may round differently: allow rounding relative to the activations. Each golden run is
    # judged by its own rule (from v3 runs name it; earlier ones are the paper's), as a user would pass --policy.
    rule = json.loads((golden / "run.json").read_text())["policy"].get("name", "paper")
    report = verify(golden, level=level, reference=reference, tolerances=Tolerances.for_reference(reference), policy=Policy(name=rule))
    failed = [(c.path, ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
    assert report.ok, failed


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: p.name)
def test_golden_run_tampered_fails(golden, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(golden, copy)
    path = copy / "block_001" / "ir.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not verify(copy, level="hashes").ok
