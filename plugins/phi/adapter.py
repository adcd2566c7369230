"""``PhiForCausalLM`` <-> BlockCert: the rotary decoder's native side (:class:`blockcert.decoder.RotaryDecoder`)
under Phi's names, and its own block -> IR mapping.

``model.model`` holds ``embed_tokens``, ``layers``, ``final_layernorm`` and the model-level ``rotary_emb``; the LM
head ``model.lm_head`` has a bias (the inherited ``head`` calls the module, so it is applied). Each
``PhiDecoderLayer`` computes, in eval mode (its dropouts are off)::

    n = input_layernorm(x)
    y = self_attn.dense(attn(n)) + mlp.fc2(act(mlp.fc1(n))) + x

where attention projects q, k, v (with biases), LayerNorms each head of q and of k when ``qk_layernorm`` (one
LayerNorm of ``head_dim`` weights for all query heads, another for all key heads), then rotates the first
``rotary_ndims = int(head_dim * partial_rotary_factor)`` features of each head.
"""

from __future__ import annotations

import torch

from blockcert import native as hf
from blockcert.decoder import RotaryDecoder
from blockcert.errors import UserError
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR, Rope


class PhiNative(RotaryDecoder):
    arch = "phi"
    embed_attr = "embed_tokens"
    final_norm_attr = "final_layernorm"


def rope_table(native: PhiNative, attn: torch.nn.Module, n_ctx: int) -> Rope | None:
    """The RoPE tables of attention module ``attn``, or None when nothing rotates (``rotary_ndims == 0``).

    Phi slices ``rotary_ndims`` features and rotates them with the model's tables, which are ``rotary_ndims``
    rounded up to even wide; an odd ``rotary_ndims`` is a config the model itself cannot run (a shape error, or for
    1 a broadcast that makes the head wider), so it is refused here rather than mapped to something else."""
    ndims = int(attn.rotary_ndims)
    if ndims == 0:  # an empty inverse-frequency table: q, k pass through
        return None
    rope = hf.rope_from_rotary_embedding(native.base.rotary_emb, n_ctx)
    if rope.rotary_dim != ndims:
        raise UserError(f"phi: the rotary tables are {rope.rotary_dim} wide but attention rotates {ndims} features per head "
                        "(head_dim * partial_rotary_factor must be even)", "fix partial_rotary_factor in the config")
    return rope


def to_ir(native: PhiNative, index: int, n_ctx: int) -> BlockIR:
    layer = native.blocks[index]
    attn, mlp = layer.self_attn, layer.mlp
    config = native.model.config
    n_heads = int(config.num_attention_heads)
    n_kv_heads = int(getattr(config, "num_key_value_heads", None) or n_heads)
    qk_norm = bool(attn.qk_layernorm)
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch=native.arch,
        index=index,
        d_model=native.d_model,
        residual="parallel",
        norm1=hf.layer_norm(layer.input_layernorm),  # the one LayerNorm feeds both sublayers (two copies: no shared arrays)
        attn=Attention(
            q=hf.from_nn_linear(attn.q_proj),
            k=hf.from_nn_linear(attn.k_proj),
            v=hf.from_nn_linear(attn.v_proj),
            o=hf.from_nn_linear(attn.dense),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=int(attn.head_dim),
            scale=float(attn.scaling),
            mask=hf.causal_mask_table(n_ctx),
            head_gate=hf.head_gate(n_heads),
            rope=rope_table(native, attn, n_ctx),
            q_norm=hf.layer_norm(attn.q_layernorm) if qk_norm else None,  # head_dim weights: per head
            k_norm=hf.layer_norm(attn.k_layernorm) if qk_norm else None,
        ),
        norm2=hf.layer_norm(layer.input_layernorm),
        mlp=MLP(
            activation=hf.activation_name(config.hidden_act),
            up=hf.from_nn_linear(mlp.fc1),
            down=hf.from_nn_linear(mlp.fc2),
        ),
        source={"hf_class": type(layer).__name__, "model_type": str(config.model_type)},
    )
