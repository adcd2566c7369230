"""Certificates made under one rounding verify under another: torch with 1 vs 2 threads rounds the same
float32 replay differently (on the real model), and the verifier's per-token bands absorb exactly that."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from blockcert.pipeline.certify import run
from blockcert.verifier.core import verify


@pytest.fixture(scope="module")
def by_threads(smollm2, tmp_path_factory) -> dict[int, object]:
    base = tmp_path_factory.mktemp("threads")
    before = torch.get_num_threads()
    out = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out[n] = base / f"threads-{n}"
            run(loaded=smollm2, blocks="3", prompts="builtin:default", out=out[n])
    finally:
        torch.set_num_threads(before)
    return out


def test_thread_counts_round_differently(by_threads):
    """Otherwise the next test would prove nothing: the two runs' stored errors differ in their last bits."""
    a = load_file(by_threads[1] / "block_003/errors.safetensors")
    b = load_file(by_threads[2] / "block_003/errors.safetensors")
    gap = max(float(np.abs(a[k] - b[k]).max()) for k in a if k.endswith(".error"))
    assert 0 < gap < 1e-4


@pytest.mark.parametrize("made, checked", [(1, 2), (2, 1)])
def test_certified_with_one_thread_count_verifies_with_the_other(by_threads, made, checked):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(checked)
        for reference in ("torch", "numpy"):
            report = verify(by_threads[made], reference=reference)
            assert report.ok, [(ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
    finally:
        torch.set_num_threads(before)
