"""The GPT-NeoX and Phi plugins: for any small random config, every block's IR replays the native HF block, and
embed -> call_block* -> head is the HF model's own forward.

GPT-NeoX: fused per-head QKV, partial RoPE (a rotary width of 0, odd widths HF rounds up to even, and the full head),
parallel and sequential residuals, with and without attention biases. Phi: one LayerNorm feeding both sublayers,
grouped KV heads, partial RoPE, QK LayerNorm on and off, an LM head with a bias. Both under eager and SDPA attention.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeded_model, token_batches
from test_equivalence import TOL, _check

import blockcert
from blockcert.errors import UserError
from blockcert.interpreter import replay

#: modest: the property tests build two models per example; a smaller profile (HYPOTHESIS_PROFILE=fast) still wins
EXAMPLES = settings(max_examples=min(25, settings().max_examples), deadline=None)

ACTIVATIONS = ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu"]  # every HF name with an exact IR activation


def _rope(draw: st.DrawFn, partial: float) -> dict:
    rope_type = draw(st.sampled_from(["default", "linear"]))
    rope = {"rope_theta": draw(st.floats(100.0, 1e6)), "rope_type": rope_type, "partial_rotary_factor": partial}
    if rope_type == "linear":
        rope["factor"] = draw(st.sampled_from([2.0, 4.0]))
    return rope


@st.composite
def neox_configs(draw: st.DrawFn):
    from transformers import GPTNeoXConfig

    n_heads = draw(st.integers(1, 4))
    head_size = draw(st.sampled_from([2, 4, 6, 8, 12, 16]))
    # int(head_size * pct) may be 0 (nothing rotates), odd (HF's table, and so its rotation, is one wider) or all
    partial = draw(st.sampled_from([0.0, 0.25, 0.3, 0.5, 1.0]))
    return GPTNeoXConfig(
        vocab_size=64,
        hidden_size=n_heads * head_size,
        intermediate_size=draw(st.sampled_from([8, 20, 32, 64])),
        num_hidden_layers=2,
        num_attention_heads=n_heads,
        hidden_act=draw(st.sampled_from(ACTIVATIONS)),
        layer_norm_eps=draw(st.sampled_from([1e-5, 1e-6])),
        use_parallel_residual=draw(st.booleans()),
        attention_bias=draw(st.booleans()),
        tie_word_embeddings=draw(st.booleans()),
        rope_parameters=_rope(draw, partial),
        max_position_embeddings=128,
        attn_implementation=draw(st.sampled_from(["eager", "sdpa"])),
    )


@st.composite
def phi_configs(draw: st.DrawFn):
    from transformers import PhiConfig

    n_kv = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    # Phi rotates int(head_dim * factor) features with a table that many wide rounded up to even: the count must be
    # even (an odd one is a config HF itself cannot run; test_phi_odd_rotary_width_is_refused)
    head_dim, partial = draw(st.tuples(st.sampled_from([4, 6, 8, 12, 16]), st.sampled_from([0.0, 0.25, 0.4, 0.5, 0.75, 1.0]))
                             .filter(lambda hp: int(hp[0] * hp[1]) % 2 == 0))
    return PhiConfig(
        vocab_size=64,
        hidden_size=n_kv * group * head_dim,  # Phi's head_dim is hidden_size // num_attention_heads
        intermediate_size=draw(st.sampled_from([8, 20, 32, 64])),
        num_hidden_layers=2,
        num_attention_heads=n_kv * group,
        num_key_value_heads=n_kv,
        hidden_act=draw(st.sampled_from(ACTIVATIONS)),
        layer_norm_eps=draw(st.sampled_from([1e-5, 1e-6])),
        qk_layernorm=draw(st.booleans()),
        tie_word_embeddings=draw(st.booleans()),
        rope_parameters=_rope(draw, partial),
        max_position_embeddings=128,
        attn_implementation=draw(st.sampled_from(["eager", "sdpa"])),
    )


ARCHS = {"gpt_neox": neox_configs(), "phi": phi_configs()}


@EXAMPLES
@given(config=neox_configs(), batch=token_batches)
def test_gpt_neox_ir_replays_native_block(config, batch, tmp_path_factory):
    assert blockcert.wrap_model(seeded_model(config, 0)).arch == "gpt_neox"
    _check(config, batch, tmp_path_factory)


@EXAMPLES
@given(config=phi_configs(), batch=token_batches)
def test_phi_ir_replays_native_block(config, batch, tmp_path_factory):
    assert blockcert.wrap_model(seeded_model(config, 0)).arch == "phi"
    _check(config, batch, tmp_path_factory)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@EXAMPLES
@given(data=st.data())
def test_native_pipeline_equals_hf_forward(arch, data):
    """embed -> call_block* -> head is the HF model's own forward (the renamed model-level parts, Phi's head bias)."""
    config = data.draw(ARCHS[arch])
    B, T, seed = data.draw(token_batches)
    model = seeded_model(config, seed)
    ids = torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(ids).logits
    loaded = blockcert.wrap_model(model)
    assert loaded.arch == arch
    got = loaded.native.forward(ids)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("arch", sorted(ARCHS))
@EXAMPLES
@given(data=st.data())
def test_shifted_positions_and_left_padding_replay_as_native(arch, data):
    """Position ids that do not start at 0 (they index the RoPE tables) and left-padded rows (a key mask): the IR
    replays call_block's output, padding queries (which may attend to no key) included."""
    config = data.draw(ARCHS[arch])
    B, T, seed = data.draw(token_batches)
    shift = data.draw(st.integers(0, 40))
    pads = data.draw(st.lists(st.integers(0, T - 1), min_size=B, max_size=B))
    loaded = blockcert.wrap_model(seeded_model(config, seed))
    positions = (torch.arange(T) + shift)[None].expand(B, T)
    key_mask = torch.arange(T)[None] >= torch.tensor(pads)[:, None]  # [B, T]: row b is padded by pads[b]
    x = torch.randn(B, T, config.hidden_size, generator=torch.Generator().manual_seed(seed))
    ir = blockcert.get_plugins().to_ir(loaded.native, 1, T + shift)
    with torch.no_grad():
        native = loaded.native.call_block(1, x, positions, key_mask)
    y = replay(ir, x, positions, key_mask).output
    y64 = replay(ir, x.double().numpy(), positions.numpy(), key_mask.numpy()).output
    band = max(TOL * float(native.abs().max()), 4 * float(np.abs(y.double().numpy() - y64).max()))
    assert float((y - native).abs().max()) <= band
    assert float(np.abs(y64 - native.double().numpy()).max()) <= band


def _neox(**kw):
    from transformers import GPTNeoXConfig

    base = {"vocab_size": 64, "hidden_size": 24, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "max_position_embeddings": 128}
    return seeded_model(GPTNeoXConfig(**{**base, **kw}), 0)


def _phi(**kw):
    from transformers import PhiConfig

    base = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 128}
    return seeded_model(PhiConfig(**{**base, **kw}), 0)


@pytest.mark.parametrize(("pct", "rotary_dim"), [(0.0, None), (0.25, 4), (0.5, 6), (1.0, 12)])  # 12 * 0.25 = 3: HF rotates 4
@pytest.mark.parametrize("parallel", [True, False])
def test_gpt_neox_ir_structure(pct, rotary_dim, parallel):
    loaded = blockcert.wrap_model(_neox(rotary_pct=pct, use_parallel_residual=parallel))
    assert loaded.arch == "gpt_neox"
    ir = blockcert.get_plugins().to_ir(loaded.native, 0, 16)
    assert ir.residual == ("parallel" if parallel else "sequential")
    assert (ir.attn.rope is None) if rotary_dim is None else (ir.attn.rope.rotary_dim == rotary_dim)
    assert ir.norm1.kind == ir.norm2.kind == "layernorm" and ir.norm1.bias is not None
    assert not np.array_equal(ir.norm1.weight, ir.norm2.weight)  # input_layernorm, post_attention_layernorm
    assert ir.attn.n_heads == ir.attn.n_kv_heads == 2 and ir.attn.head_dim == 12
    assert ir.attn.scale == pytest.approx(12**-0.5)
    assert ir.mlp.gate is None and ir.mlp.activation == "gelu"  # GPT-NeoX's default hidden_act
    assert ir.source == {"hf_class": "GPTNeoXLayer", "model_type": "gpt_neox"}


@pytest.mark.parametrize("qk", [True, False])
def test_phi_ir_structure(qk):
    loaded = blockcert.wrap_model(_phi(qk_layernorm=qk))
    assert loaded.arch == "phi"
    ir = blockcert.get_plugins().to_ir(loaded.native, 0, 16)
    assert ir.residual == "parallel"
    assert ir.norm1 == ir.norm2 and ir.norm1.weight is not ir.norm2.weight  # one LayerNorm, two independent copies
    assert ir.attn.rope.rotary_dim == 4  # head_dim 8, partial_rotary_factor 0.5 (PhiConfig's default)
    assert (ir.attn.n_heads, ir.attn.n_kv_heads, ir.attn.head_dim) == (4, 2, 8)
    assert all(lin.bias is not None for lin in (ir.attn.q, ir.attn.k, ir.attn.v, ir.attn.o))
    assert ir.mlp.activation == "gelu_tanh"  # PhiConfig's default gelu_new
    if qk:
        assert ir.attn.q_norm.weight.shape == ir.attn.k_norm.weight.shape == (8,)  # per head
        assert ir.extensions == ("q_norm", "k_norm")
    else:
        assert ir.attn.q_norm is None and ir.attn.k_norm is None and ir.extensions == ()


def test_phi_odd_rotary_width_is_refused():
    """head_dim 8 * 0.375 = 3 features to rotate, with a table 4 wide: HF's own forward fails on a shape mismatch;
    the adapter refuses it by name rather than certifying some other rotation."""
    loaded = blockcert.wrap_model(_phi(rope_parameters={"rope_theta": 1e4, "rope_type": "default", "partial_rotary_factor": 0.375}))
    with pytest.raises(UserError, match="rotary tables are 4 wide but attention rotates 3"):
        blockcert.get_plugins().to_ir(loaded.native, 0, 16)


def test_gpt_neox_streams_a_checkpoint_saved_by_transformers(tmp_path):
    """transformers 5 writes GPT-NeoX's lm_head.weight as embed_out.weight: --stream (which reads tensors by name)
    finds it through the adapter's checkpoint_aliases, and reads the same weights and logits as the in-memory load."""
    from safetensors import safe_open

    _neox().save_pretrained(tmp_path / "neox")
    with safe_open(tmp_path / "neox" / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "embed_out.weight" in names and "lm_head.weight" not in names
    streamed = blockcert.load_model(tmp_path / "neox", stream=True)
    whole = blockcert.load_model(tmp_path / "neox")
    assert streamed.arch == whole.arch == "gpt_neox"
    assert streamed.weights_sha256() == whole.weights_sha256()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(streamed.native.forward(ids), whole.native.forward(ids))
