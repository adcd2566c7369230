"""``GPTNeoXForCausalLM`` <-> BlockCert: the rotary decoder's native side (:class:`blockcert.decoder.RotaryDecoder`)
under GPT-NeoX's names, and its own block -> IR mapping.

``model.gpt_neox`` holds ``embed_in``, ``layers``, ``final_layer_norm`` and the model-level ``rotary_emb``; the LM
head is ``model.lm_head`` (transformers 5 loads a checkpoint's ``embed_out.weight`` into it, and writes it back
under that name). Each ``GPTNeoXLayer`` computes, in eval mode (its dropouts are off)::

    a = attention.dense(attn(input_layernorm(x)))
    parallel:    y = mlp(post_attention_layernorm(x)) + a + x
    sequential:  h = a + x;  y = mlp(post_attention_layernorm(h)) + h
"""

from __future__ import annotations

import torch

from blockcert import native as hf
from blockcert.decoder import RotaryDecoder
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR, Rope


class GPTNeoXNative(RotaryDecoder):
    arch = "gpt_neox"
    base_attr = "gpt_neox"
    embed_attr = "embed_in"
    final_norm_attr = "final_layer_norm"
    head_attr = "lm_head"
    #: transformers 5 saves GPT-NeoX's lm_head.weight as embed_out.weight (the name Pythia's checkpoints use), and
    #: renames it back only in its own loader; --stream reads tensors by name, so it needs the alias
    checkpoint_aliases = {"lm_head.weight": "embed_out.weight"}


def rope_table(native: GPTNeoXNative, attn: torch.nn.Module, n_ctx: int) -> Rope | None:
    """The RoPE tables of attention module ``attn``, or None when nothing rotates (``int(head_size * rotary_pct) == 0``).

    HF rotates as many features as its cos table is wide (``apply_rotary_pos_emb`` slices ``cos.shape[-1]``),
    which is ``rotary_ndims`` rounded up to even: the table's own width is the IR's ``rotary_dim``."""
    if int(attn.rotary_ndims) == 0:  # an empty inverse-frequency table: q, k pass through
        return None
    return hf.rope_from_rotary_embedding(native.base.rotary_emb, n_ctx)


def to_ir(native: GPTNeoXNative, index: int, n_ctx: int) -> BlockIR:
    layer = native.blocks[index]
    attn, mlp = layer.attention, layer.mlp
    config = native.model.config
    n_heads = int(config.num_attention_heads)
    head_dim = int(attn.head_size)
    width = n_heads * head_dim
    # query_key_value [3*H*hd, d]: its output is viewed as [H, 3*hd], each head's q, k, v in turn
    q, k, v = hf.split_fused_qkv(attn.query_key_value.weight, attn.query_key_value.bias, [width] * 3, interleaved_heads=n_heads)
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch=native.arch,
        index=index,
        d_model=native.d_model,
        residual="parallel" if layer.use_parallel_residual else "sequential",
        norm1=hf.layer_norm(layer.input_layernorm),
        attn=Attention(
            q=q,
            k=k,
            v=v,
            o=hf.from_nn_linear(attn.dense),
            n_heads=n_heads,
            n_kv_heads=n_heads,
            head_dim=head_dim,
            scale=float(attn.scaling),
            mask=hf.causal_mask_table(n_ctx),
            head_gate=hf.head_gate(n_heads),
            rope=rope_table(native, attn, n_ctx),
        ),
        norm2=hf.layer_norm(layer.post_attention_layernorm),
        mlp=MLP(
            activation=hf.activation_name(config.hidden_act),
            up=hf.from_nn_linear(mlp.dense_h_to_4h),
            down=hf.from_nn_linear(mlp.dense_4h_to_h),
        ),
        source={"hf_class": type(layer).__name__, "model_type": str(config.model_type)},
    )
