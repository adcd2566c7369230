"""The verifier's float64 numpy model (blockcert/verifier/reference/model.py) against Hugging Face's own forward.

The numpy reference re-derives traces, stitched losses, perplexities and edit deviations with this model,
so it must be the architecture: per layer, its residual stream equals HF's ``output_hidden_states`` within
float32 rounding, its logits HF's, its weights digest the producer's, and an architecture it does not
implement is refused by name. Random-init models with weights large enough that a wrong rotary pairing, a
missing bias or a wrong GELU shows (tests/strategies.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from strategies import seeded_model
from transformers import GPT2Config, LlamaConfig, Qwen2Config

import blockcert
from blockcert.errors import UserError
from blockcert.verifier.reference.model import Model

CONFIGS = {
    "llama": lambda: LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0),
    "llama-untied": lambda: LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, head_dim=24),
    "qwen2": lambda: Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=64, use_sliding_window=False),
    "gpt2": lambda: GPT2Config(vocab_size=97, n_embd=48, n_layer=2, n_head=4, n_positions=64),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    model = seeded_model(CONFIGS[request.param](), 3).eval()
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return request.param, model, path


def test_residual_stream_and_logits_match_hf(pair):
    name, hf, path = pair
    ref = Model(path)
    ids = np.array([5, 17, 3, 88, 41, 41, 2, 60, 9, 33, 71, 0], np.int64)
    with torch.no_grad():
        out = hf(torch.from_numpy(ids)[None], output_hidden_states=True)
    res, masks, gates = ref.stream(ids)
    assert res.shape == (ref.n_blocks + 1, ids.size, ref.d_model)
    for layer in range(ref.n_blocks):  # HF's last hidden state is after the final norm; compare the blocks' outputs
        theirs = out.hidden_states[layer][0].double().numpy()
        gap = np.linalg.norm(res[layer] - theirs, axis=-1) / np.maximum(np.linalg.norm(theirs, axis=-1), 1e-30)
        assert gap.max() < 1e-5, (name, layer, gap.max())
    logits = out.logits[0].double().numpy()
    assert np.abs(ref.logits(res[-1]) - logits).max() < 1e-4 * max(1.0, np.abs(logits).max()), name
    losses = ref.token_losses(res[-1], ids)
    want = torch.nn.functional.cross_entropy(out.logits[0, :-1].double(), torch.from_numpy(ids[1:]), reduction="none").numpy()
    assert np.abs(losses - want).max() < 1e-4
    assert masks.shape == (ref.n_blocks, ids.size, ids.size) and np.array_equal(masks[0], np.tril(np.ones((ids.size, ids.size), bool)))
    assert gates.all()


def test_weights_digest_is_the_producers(pair):
    name, hf, path = pair
    # qwen2 has no built-in adapter (examples/blockcert-qwen2 has one): the state dict is all the digest needs
    loaded = blockcert.load_model(path, arch="llama" if name == "qwen2" else None)
    assert Model(path).weights_sha256("float32") == loaded.weights_sha256(), name
    for dtype in ("bfloat16", "float16"):  # the file holds float32: the cast (round to nearest even) is the reference's own
        half = blockcert.load_model(path, arch="llama" if name == "qwen2" else None, dtype=dtype)
        assert Model(path).weights_sha256(dtype) == half.weights_sha256(), (name, dtype)


def test_a_float32_shadow_is_float32_and_close(pair):
    name, _, path = pair
    ref = Model(path)
    ids = np.arange(1, 11, dtype=np.int64)
    res64 = ref.stream(ids)[0]
    res32 = ref.shadow().stream(ids)[0]
    assert res32.dtype == np.float32 and res64.dtype == np.float64
    rel = np.linalg.norm(res32 - res64, axis=-1) / np.linalg.norm(res64, axis=-1)
    assert 0 < rel.max() < 1e-5, name  # not the same computation, and only float32 rounding apart


def test_unsupported_architectures_are_refused_by_name(tmp_path, pair):
    _, _, path = pair
    cfg = json.loads((path / "config.json").read_text())
    for change, needle in (({"model_type": "gemma3_text"}, "gemma3_text"), ({"rope_parameters": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 500.0}}, "yarn"),
                           ({"activation_function": "relu", "hidden_act": "gelu"}, "not")):
        d = tmp_path / needle
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({**cfg, **change}))
        (d / "model.safetensors").symlink_to(path / "model.safetensors")
        if cfg["model_type"] == "gpt2" and "rope_parameters" in change:
            continue  # GPT-2 has no RoPE to scale
        with pytest.raises(UserError, match=needle):
            Model(d)
