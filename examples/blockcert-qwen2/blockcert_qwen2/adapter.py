"""``Qwen2ForCausalLM`` <-> BlockCert: where the blocks live, how to call one, block -> IR."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blockcert import native as hf
from blockcert.errors import UserError
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR


class Qwen2Native(hf.NativeModel):
    arch = "qwen2"

    @property
    def base(self) -> torch.nn.Module:
        return self.model.model  # Qwen2Model: embed_tokens, layers, norm, rotary_emb

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.base.layers

    def sliding_window(self, index: int) -> int | None:
        """The window of block ``index`` as HF's Qwen2Model applies it, or None for full causal attention.

        Qwen2Model picks each layer's mask by ``config.layer_types[index]``; a ``"sliding_attention"``
        layer lets query ``i`` see key ``j`` only when ``i - window < j <= i``, ``window = config.sliding_window``.
        """
        config = self.model.config
        if config.layer_types[index] != "sliding_attention":
            return None
        if config.sliding_window is None:  # HF's own forward refuses this config too
            raise UserError(
                f"qwen2 block {index} is a sliding_attention layer but config.sliding_window is not set",
                "set use_sliding_window=True and sliding_window=<n> in the config, or make the layer full_attention",
            )
        return int(config.sliding_window)

    def attention_allowed(
        self, index: int, positions: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        allowed = super().attention_allowed(index, positions, key_mask)  # causal (+ padding): [B, T, T]
        window = self.sliding_window(index)
        if window is not None:
            distance = positions[:, :, None] - positions[:, None, :]  # query - key: [B, T, T]
            allowed = allowed & (distance < window)
        return allowed

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.base.embed_tokens(input_ids)  # no learned positions: RoPE acts inside attention

    def call_block(
        self, index: int, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # Qwen2DecoderLayer needs the model-level RoPE (cos, sin) for these positions and an explicit mask.
        cos_sin = self.base.rotary_emb(x, position_ids=positions)
        mask = hf.additive_mask(self.attention_allowed(index, positions, key_mask), x.dtype)
        out = self.blocks[index](x, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.base.norm(x))


def to_ir(native: Qwen2Native, index: int, n_ctx: int) -> BlockIR:
    layer = native.blocks[index]
    attn, mlp = layer.self_attn, layer.mlp
    config = native.model.config
    n_heads = int(config.num_attention_heads)
    n_kv_heads = int(getattr(config, "num_key_value_heads", None) or n_heads)
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch="qwen2",
        index=index,
        d_model=native.d_model,
        residual="sequential",
        norm1=hf.rms_norm(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
        attn=Attention(
            q=hf.from_nn_linear(attn.q_proj),  # with bias
            k=hf.from_nn_linear(attn.k_proj),  # with bias
            v=hf.from_nn_linear(attn.v_proj),  # with bias
            o=hf.from_nn_linear(attn.o_proj),  # no bias
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=int(attn.head_dim),
            scale=float(attn.scaling),
            mask=hf.causal_mask_table(n_ctx, window=native.sliding_window(index)),
            head_gate=hf.head_gate(n_heads),
            rope=hf.rope_from_rotary_embedding(native.base.rotary_emb, n_ctx),
        ),
        norm2=hf.rms_norm(layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
        mlp=MLP(
            activation=hf.activation_name(config.hidden_act),
            up=hf.from_nn_linear(mlp.up_proj),
            gate=hf.from_nn_linear(mlp.gate_proj),
            down=hf.from_nn_linear(mlp.down_proj),
        ),
        source={"hf_class": type(layer).__name__, "model_type": str(config.model_type)},
    )
