"""The common Hugging Face decoder layout, shared by the architecture plugins built on it (Llama, Qwen2, ...).

``model.model`` holds ``embed_tokens``, ``layers``, ``norm`` and a model-level ``rotary_emb``; ``model.lm_head``
is the head; each layer has ``input_layernorm``, ``self_attn.{q,k,v,o}_proj``, ``post_attention_layernorm``
and a gated MLP ``mlp.{gate,up,down}_proj``. :class:`RotaryDecoder` runs such a model block by block and
:func:`rotary_decoder_ir` converts one layer to the IR. An adapter subclasses the first (its ``arch``, and
``sliding_window`` when its layers have windows) and calls the second; what differs between these
families (biases on q/k/v, windows) is read from the modules and the config, not copied per plugin.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blockcert import native as hf
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR


class RotaryDecoder(hf.NativeModel):
    """``model.model``: embed_tokens, layers, norm, rotary_emb; ``model.lm_head``."""

    @property
    def base(self) -> torch.nn.Module:
        return self.model.model

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.base.layers

    def sliding_window(self, index: int) -> int | None:
        """The attention window of block ``index`` (query ``i`` sees key ``j`` only when ``i - window < j <= i``),
        or None for full causal attention (the default)."""
        return None

    def attention_allowed(self, index: int, positions: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
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
        # the layer needs the model-level RoPE (cos, sin) for these positions and a mask
        cos_sin, mask = self._batch_inputs(x, positions, key_mask)
        if self.sliding_window(index) is not None:  # a windowed layer: its own explicit mask
            mask = hf.additive_mask(self.attention_allowed(index, positions, key_mask), x.dtype)
        out = self.blocks[index](x, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.base.norm(x))

    def _batch_inputs(
        self, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """RoPE (cos, sin) and the full-attention mask of one batch, built once and reused by every block.

        The cache is keyed on the identity of ``positions`` / ``key_mask`` (callers pass the same
        tensors to each block of a batch). Plain causal attention on positions 0..T-1 under SDPA gets no
        explicit mask, so SDPA takes its ``is_causal`` kernel exactly as HF's own forward does; every
        other case (padded keys, shifted positions, eager attention) gets the explicit additive mask.
        """
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is positions and cached[1] is key_mask and cached[2] == (x.dtype, x.device):
            return cached[3], cached[4]
        cos_sin = self.base.rotary_emb(x, position_ids=positions)
        T = positions.shape[-1]
        plain = (key_mask is None and getattr(self.model.config, "_attn_implementation", None) == "sdpa"
                 and bool((positions == torch.arange(T, device=positions.device)).all()))
        mask = None if plain else hf.additive_mask(hf.NativeModel.attention_allowed(self, 0, positions, key_mask), x.dtype)
        self._cache = (positions, key_mask, (x.dtype, x.device), cos_sin, mask)
        return cos_sin, mask


def rotary_decoder_ir(native: RotaryDecoder, index: int, n_ctx: int) -> BlockIR:
    """Layer ``index`` of a :class:`RotaryDecoder` as IR: RMSNorms, q/k/v/o with whatever biases the modules
    have, GQA from the config, RoPE tabulated from the model's own rotary embedding, the window in the mask."""
    layer = native.blocks[index]
    attn, mlp = layer.self_attn, layer.mlp
    config = native.model.config
    n_heads = int(config.num_attention_heads)
    n_kv_heads = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(attn.head_dim)
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch=native.arch,
        index=index,
        d_model=native.d_model,
        residual="sequential",
        norm1=hf.rms_norm(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
        attn=Attention(
            q=hf.from_nn_linear(attn.q_proj),
            k=hf.from_nn_linear(attn.k_proj),
            v=hf.from_nn_linear(attn.v_proj),
            o=hf.from_nn_linear(attn.o_proj),
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
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
