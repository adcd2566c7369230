"""Path coverage that can fail: m_l is observed from the native block (blockcert/model/observe.py), not assumed.

A model whose attention applies a sliding window the adapter does not know about, and a model with a dead
head, are traced as they really behave; an IR that disagrees loses path coverage, and verify --level full
re-observes the model instead of trusting the stored patterns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers.modeling_utils import AttentionInterface

import blockcert
from blockcert.pipeline.certify import run
from blockcert.pipeline.trace import capture
from blockcert.verifier.core import verify
from test_run import make_model_dir

WINDOW = 3


def windowed_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention that also limits each query to the last WINDOW keys (as Mistral's or Gemma's local
    layers do), returning its probabilities as every eager implementation does."""
    rep = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)  # [B, H, S, hd]
    scores = query @ k.transpose(-1, -2) * scaling  # [B, H, T, S]
    T, S = scores.shape[-2:]
    i, j = torch.arange(T)[:, None], torch.arange(S)[None, :]
    scores = scores.masked_fill(~((j <= i) & (j > i - WINDOW)), float("-inf"))
    probs = scores.softmax(dim=-1)
    return (probs @ v).transpose(1, 2).contiguous(), probs  # [B, T, H, hd], [B, H, T, S]


AttentionInterface.register("blockcert-test-window", windowed_eager)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, byte_tokenizer):
    return make_model_dir(tmp_path_factory.mktemp("observe") / "model", byte_tokenizer, layers=2)


def test_plain_model_is_observed_causal_with_every_head_active(model_dir):
    loaded = blockcert.load_model(model_dir)
    t = capture(loaded, ["The quick brown fox jumps over the lazy dog."])[0]
    T = t.n_tokens
    assert all(np.array_equal(t.masks[ell], np.tril(np.ones((T, T), bool))) for ell in range(2))
    assert t.head_gates.all()


def test_a_window_the_adapter_does_not_know_is_observed_and_path_coverage_falls(model_dir, tmp_path):
    loaded = blockcert.load_model(model_dir)
    loaded.model.config._attn_implementation = "blockcert-test-window"
    t = capture(loaded, ["The quick brown fox jumps over the lazy dog."])[0]
    T = t.n_tokens
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    assert np.array_equal(t.masks[0], (j <= i) & (j > i - WINDOW))  # what the block did, not the causal formula
    result = run(loaded=loaded, prompts="builtin:default", out=tmp_path / "run")
    for block in result.blocks:  # the Llama IR is plainly causal: rows beyond the window disagree
        tokens = block.metrics.tokens
        assert block.metrics.cov_path == pytest.approx(WINDOW * 4 / tokens)  # 4 prompts, WINDOW rows each agree
    assert verify(tmp_path / "run").ok  # the numbers follow from the (observed) artifacts
    # the same model as it loads from disk (plain causal attention) did not take these decisions
    report = verify(tmp_path / "run", level="full", model=str(model_dir))
    failed = "\n".join(ch.detail for c in report.certificates for ch in c.checks if not ch.ok)
    assert not report.ok and "masks differ from what the model applied" in failed


def test_a_dead_head_is_observed_and_an_ir_gating_another_head_off_loses_path_coverage(model_dir, tmp_path):
    loaded = blockcert.load_model(model_dir)
    attn = loaded.model.model.layers[1].self_attn
    hd = attn.head_dim
    with torch.no_grad():
        attn.v_proj.weight[:hd] = 0  # KV head 0 is dead: query heads 0 and 1 (GQA groups of 2) output zero
    t = capture(loaded, ["The quick brown fox jumps over the lazy dog."])[0]
    assert t.head_gates[0].all() and t.head_gates[1].tolist() == [False, False, True, True]
    run(loaded=loaded, prompts="builtin:default", out=tmp_path / "exact")
    cert = json.loads((tmp_path / "exact/block_001/certificate.json").read_bytes())
    assert cert["predicate"]["metrics"]["cov_path"] == 1.0  # the exact IR's heads 0, 1 are dead too
    run(loaded=loaded, prompts="builtin:default", out=tmp_path / "pruned", surrogate="prune-heads:heads=2", blocks="1")
    cert = json.loads((tmp_path / "pruned/block_001/certificate.json").read_bytes())
    assert cert["predicate"]["metrics"]["cov_path"] == 0.0
    assert verify(tmp_path / "pruned").ok
