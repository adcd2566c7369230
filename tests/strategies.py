"""Hypothesis strategies: small random GPT-2 / Llama configs, seeded weights, inputs."""

from __future__ import annotations

import math

import torch
from hypothesis import strategies as st


@st.composite
def llama_configs(draw: st.DrawFn):
    from transformers import LlamaConfig

    n_kv = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    rope_type = draw(st.sampled_from(["default", "linear"]))
    rope = {"rope_theta": draw(st.floats(100.0, 1e6)), "rope_type": rope_type}
    if rope_type == "linear":
        rope["factor"] = draw(st.sampled_from([2.0, 4.0]))
    return LlamaConfig(
        vocab_size=64,
        # HF requires hidden % heads == 0; head_dim is drawn independently (it may differ from hidden/heads)
        hidden_size=n_kv * group * draw(st.sampled_from([2, 4, 8, 12])),
        intermediate_size=draw(st.sampled_from([8, 20, 32, 64])),
        num_hidden_layers=2,
        num_attention_heads=n_kv * group,
        num_key_value_heads=n_kv,
        head_dim=draw(st.sampled_from([4, 8, 16])),
        hidden_act=draw(st.sampled_from(["silu", "gelu_pytorch_tanh", "gelu", "relu"])),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
        attention_bias=draw(st.booleans()),
        mlp_bias=draw(st.booleans()),
        rope_parameters=rope,
        max_position_embeddings=128,
        attn_implementation=draw(st.sampled_from(["eager", "sdpa"])),
    )


@st.composite
def qwen2_configs(draw: st.DrawFn):
    """Qwen2: Llama's layout with q/k/v biases, and, drawn half the time, sliding windows on the upper layers."""
    from transformers import Qwen2Config

    n_kv = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    sliding = draw(st.booleans())
    return Qwen2Config(
        vocab_size=64,
        hidden_size=n_kv * group * draw(st.sampled_from([2, 4, 8])),
        intermediate_size=draw(st.sampled_from([8, 20, 32])),
        num_hidden_layers=2,
        num_attention_heads=n_kv * group,
        num_key_value_heads=n_kv,
        hidden_act=draw(st.sampled_from(["silu", "gelu_pytorch_tanh"])),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
        rope_parameters={"rope_theta": draw(st.floats(100.0, 1e6)), "rope_type": "default"},
        use_sliding_window=sliding,
        sliding_window=draw(st.integers(2, 6)) if sliding else None,
        max_window_layers=draw(st.integers(0, 2)),
        max_position_embeddings=128,
        attn_implementation=draw(st.sampled_from(["eager", "sdpa"])),
    )


def _rotary_common(draw: st.DrawFn) -> dict:
    """What every rotary decoder family below draws: GQA shape, head_dim (independent of hidden/heads), MLP width,
    eps, attention implementation."""
    n_kv = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    return dict(
        vocab_size=64, hidden_size=n_kv * group * draw(st.sampled_from([2, 4, 8])), intermediate_size=draw(st.sampled_from([8, 20, 32])),
        num_hidden_layers=2, num_attention_heads=n_kv * group, num_key_value_heads=n_kv, head_dim=draw(st.sampled_from([4, 8, 16])),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])), max_position_embeddings=128,
        attn_implementation=draw(st.sampled_from(["eager", "sdpa"])),
    )


def _layer_types(draw: st.DrawFn) -> list[str]:
    return [draw(st.sampled_from(["sliding_attention", "full_attention"])) for _ in range(2)]


@st.composite
def mistral_configs(draw: st.DrawFn):
    """Mistral: Llama's layout, a sliding window in every layer (drawn half the time)."""
    from transformers import MistralConfig

    return MistralConfig(**_rotary_common(draw), hidden_act=draw(st.sampled_from(["silu", "gelu_pytorch_tanh"])),
                         sliding_window=draw(st.one_of(st.none(), st.integers(2, 6))),
                         rope_parameters={"rope_theta": draw(st.floats(100.0, 1e6)), "rope_type": "default"})


@st.composite
def qwen3_configs(draw: st.DrawFn):
    """Qwen3: per-head QK-norm, optional attention bias, sliding layers from layer_types."""
    from transformers import Qwen3Config

    sliding = draw(st.booleans())
    return Qwen3Config(**_rotary_common(draw), hidden_act="silu", attention_bias=draw(st.booleans()),
                       use_sliding_window=sliding, sliding_window=draw(st.integers(2, 6)) if sliding else None,
                       layer_types=_layer_types(draw) if sliding else None,
                       rope_parameters={"rope_theta": draw(st.floats(100.0, 1e6)), "rope_type": "default"})


@st.composite
def olmo2_configs(draw: st.DrawFn):
    """OLMo 2: post-norms only, QK-norm over the whole projection."""
    from transformers import Olmo2Config

    return Olmo2Config(**_rotary_common(draw), hidden_act="silu", attention_bias=draw(st.booleans()),
                       rope_parameters={"rope_theta": draw(st.floats(100.0, 1e6)), "rope_type": "default"})


@st.composite
def gemma2_configs(draw: st.DrawFn):
    """Gemma 2: (1+w) sandwich norms, logit soft-caps (attention and final), windows on sliding layers."""
    from transformers import Gemma2Config

    common = _rotary_common(draw) | {"attn_implementation": "eager"}  # Gemma 2 has no SDPA path (SDPA cannot soft-cap)
    return Gemma2Config(**common, hidden_activation="gelu_pytorch_tanh", layer_types=_layer_types(draw),
                        sliding_window=draw(st.integers(2, 6)), query_pre_attn_scalar=draw(st.sampled_from([4, 16, 256])),
                        attn_logit_softcapping=draw(st.sampled_from([None, 0.5, 5.0, 50.0])),
                        final_logit_softcapping=draw(st.sampled_from([None, 3.0, 30.0])),
                        rope_parameters={"rope_theta": draw(st.floats(100.0, 1e6)), "rope_type": "default"})


@st.composite
def gemma3_configs(draw: st.DrawFn):
    """Gemma 3 text: (1+w) sandwich norms, per-head QK-norm, a local and a global RoPE table by layer type."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**_rotary_common(draw), hidden_activation="gelu_pytorch_tanh", layer_types=_layer_types(draw),
                            sliding_window=draw(st.integers(2, 6)), query_pre_attn_scalar=draw(st.sampled_from([4, 16, 256])),
                            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": draw(st.floats(100.0, 1e5))},
                                             "full_attention": {"rope_type": "default", "rope_theta": draw(st.floats(1e5, 1e6))}})


#: architecture name -> its config strategy, for the rotary decoder families sharing :mod:`blockcert.decoder`
DECODER_FAMILIES = {"mistral": mistral_configs, "qwen3": qwen3_configs, "olmo2": olmo2_configs, "gemma2": gemma2_configs,
                    "gemma3": gemma3_configs}


@st.composite
def gpt2_configs(draw: st.DrawFn):
    from transformers import GPT2Config

    n_head = draw(st.integers(1, 4))
    head_dim = draw(st.sampled_from([4, 8, 16]))
    return GPT2Config(
        vocab_size=64,
        n_positions=128,
        n_embd=n_head * head_dim,
        n_layer=2,
        n_head=n_head,
        n_inner=draw(st.sampled_from([None, 24, 40])),
        activation_function=draw(st.sampled_from(["gelu_new", "gelu", "relu", "gelu_pytorch_tanh"])),
        layer_norm_epsilon=draw(st.sampled_from([1e-5, 1e-6])),
        scale_attn_weights=draw(st.booleans()),
        scale_attn_by_inverse_layer_idx=draw(st.booleans()),
        attn_implementation=draw(st.sampled_from(["eager", "sdpa"])),
    )


def seeded_model(config, seed: int):
    """A random-init HF causal LM whose weights are big enough that a wrong IR shows.

    HF's default init (std 0.02) makes blocks nearly the identity; here every matrix gets
    std 1/sqrt(fan_in), biases std 0.1, norm weights 1 + 0.1 N(0,1), all from ``seed``.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                fan_in = p.shape[1] if "c_" not in name else p.shape[0]  # GPT-2 Conv1D is [in, out]
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif "norm" in name or "ln_" in name:
                p.copy_((1 + 0.1 * torch.randn(p.shape, generator=gen)) if name.endswith("weight") else 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


token_batches = st.tuples(st.integers(1, 3), st.integers(1, 64), st.integers(0, 2**31 - 1))
