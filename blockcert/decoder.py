"""The common Hugging Face decoder layout, shared by the architecture plugins built on it (Llama, Mistral, Qwen2,
Qwen3, Gemma 2/3, OLMo2; GPT-NeoX and Phi reuse the native side).

``model.<base>`` holds the token embedding, ``layers``, the final norm and a model-level ``rotary_emb``;
``model.<head>`` is the LM head; each layer has ``self_attn.{q,k,v,o}_proj`` and a gated MLP
``mlp.{gate,up,down}_proj``, and its norms where the family's :class:`Layout` (a declarative role map) says.
:class:`RotaryDecoder` runs such a model block by block and :func:`rotary_decoder_ir` converts one layer to the
IR. An adapter subclasses the first (its ``arch``, its ``layout``, and the names of the model-level parts when
they differ) and calls the second; what differs within a family (biases on q/k/v, windows, the soft-cap, the
scale) is read from the modules and the config, not copied per plugin.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import attrs
import torch

from blockcert import native as hf
from blockcert.errors import UserError
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR, Norm


@attrs.frozen
class Layout:
    """Where a decoder layer keeps each norm: a dotted attribute path from the layer, or None when it has none.

    ``norm1`` normalises the attention input, ``norm2`` the MLP input (None: the identity, as in OLMo2);
    ``post_attn_norm`` / ``post_mlp_norm`` the sublayer outputs before the residual adds (Gemma 2/3's sandwich,
    OLMo2); ``q_norm`` / ``k_norm`` the projected queries and keys before RoPE (per head or over the whole
    projection, by their width). ``norm_offset=1``: every norm multiplies by ``1 + weight`` (Gemma), folded into
    the IR's weights.
    """

    norm1: str | None = "input_layernorm"
    norm2: str | None = "post_attention_layernorm"
    post_attn_norm: str | None = None
    post_mlp_norm: str | None = None
    q_norm: str | None = None
    k_norm: str | None = None
    norm_offset: float = 0.0

    def norm(self, layer: torch.nn.Module, role: str) -> Norm | None:
        """The IR norm of ``role`` (a field name) in ``layer``, or None when the layout has none there."""
        path = getattr(self, role)
        if path is None:
            return None
        return hf.norm_module(operator.attrgetter(path)(layer), offset=self.norm_offset)


#: Llama's layout: a pre-norm before each sublayer
PRE_NORM = Layout()
#: Gemma 2/3's sandwich: a (1 + weight) RMSNorm before and after each sublayer
GEMMA = Layout(norm1="input_layernorm", post_attn_norm="post_attention_layernorm", norm2="pre_feedforward_layernorm",
               post_mlp_norm="post_feedforward_layernorm", norm_offset=1.0)


class RotaryDecoder(hf.NativeModel):
    """``model.<base_attr>``: embedding, layers, final norm, rotary_emb; ``model.<head_attr>``."""

    layout: Layout = PRE_NORM
    base_attr = "model"
    embed_attr = "embed_tokens"
    final_norm_attr = "norm"
    head_attr = "lm_head"

    @property
    def base(self) -> torch.nn.Module:
        return getattr(self.model, self.base_attr)

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.base.layers

    def sliding_window(self, index: int) -> int | None:
        """The attention window of block ``index`` (query ``i`` sees key ``j`` only when ``i - window < j <= i``),
        or None for full causal attention. Default: as HF's models with ``config.layer_types`` pick each layer's
        mask, a ``"sliding_attention"`` layer has the window ``config.sliding_window``; other layers have none."""
        config = self.model.config
        layer_types = getattr(config, "layer_types", None)
        if not layer_types or layer_types[index] != "sliding_attention":
            return None
        if getattr(config, "sliding_window", None) is None:  # HF's own forward refuses this config too
            raise UserError(f"{self.arch} block {index} is a sliding_attention layer but config.sliding_window is not set",
                            "set sliding_window=<n> in the config, or make the layer full_attention")
        return int(config.sliding_window)

    def rope_kwargs(self, index: int) -> dict[str, Any]:
        """What else ``rotary_emb`` takes for block ``index`` (Gemma 3: its layer type); default nothing."""
        return {}

    def attention_softcap(self, index: int) -> float | None:
        """The attention logit soft-cap of block ``index`` (``config.attn_logit_softcapping``), or None."""
        cap = getattr(self.model.config, "attn_logit_softcapping", None)
        return None if cap is None else float(cap)

    def attention_allowed(self, index: int, positions: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        allowed = super().attention_allowed(index, positions, key_mask)  # causal (+ padding): [B, T, T]
        window = self.sliding_window(index)
        if window is not None:
            distance = positions[:, :, None] - positions[:, None, :]  # query - key: [B, T, T]
            allowed = allowed & (distance < window)
        return allowed

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # no learned positions: RoPE acts inside attention (Gemma's embedding module scales by sqrt(d) itself)
        return getattr(self.base, self.embed_attr)(input_ids)

    def call_block(
        self, index: int, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # the layer needs the model-level RoPE (cos, sin) for these positions and a mask
        cos_sin, mask = self._batch_inputs(x, positions, key_mask, index)
        if self.sliding_window(index) is not None:  # a windowed layer: its own explicit mask
            mask = hf.additive_mask(self.attention_allowed(index, positions, key_mask), x.dtype)
        out = self.blocks[index](x, attention_mask=mask, position_ids=positions, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out

    def head(self, x: torch.Tensor) -> torch.Tensor:
        logits = getattr(self.model, self.head_attr)(getattr(self.base, self.final_norm_attr)(x))
        cap = getattr(self.model.config, "final_logit_softcapping", None)  # Gemma 2
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _batch_inputs(
        self, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None, index: int = 0
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """RoPE (cos, sin) and the full-attention mask of one batch, built once and reused by every block (one
        (cos, sin) per distinct :meth:`rope_kwargs`).

        The cache is keyed on the identity of ``positions`` / ``key_mask`` (callers pass the same
        tensors to each block of a batch). Plain causal attention on positions 0..T-1 under SDPA gets no
        explicit mask, so SDPA takes its ``is_causal`` kernel exactly as HF's own forward does; every
        other case (padded keys, shifted positions, eager attention) gets the explicit additive mask.
        """
        cached = getattr(self, "_cache", None)
        if not (cached is not None and cached[0] is positions and cached[1] is key_mask and cached[2] == (x.dtype, x.device)):
            T = positions.shape[-1]
            plain = (key_mask is None and getattr(self.model.config, "_attn_implementation", None) == "sdpa"
                     and bool((positions == torch.arange(T, device=positions.device)).all()))
            mask = None if plain else hf.additive_mask(hf.NativeModel.attention_allowed(self, 0, positions, key_mask), x.dtype)
            cached = self._cache = (positions, key_mask, (x.dtype, x.device), {}, mask)
        kwargs = self.rope_kwargs(index)
        key = tuple(sorted(kwargs.items()))
        if key not in cached[3]:
            cached[3][key] = self.base.rotary_emb(x, position_ids=positions, **kwargs)
        return cached[3][key], cached[4]


def rotary_decoder_ir(native: RotaryDecoder, index: int, n_ctx: int) -> BlockIR:
    """Layer ``index`` of a :class:`RotaryDecoder` as IR: its norms where ``native.layout`` says, q/k/v/o with
    whatever biases the modules have, GQA from the config, the soft-cap and scale the attention module uses, RoPE
    tabulated from the model's own rotary embedding (the layer's own table), the window in the mask."""
    layer = native.blocks[index]
    attn, mlp = layer.self_attn, layer.mlp
    config = native.model.config
    layout = native.layout
    n_heads = int(config.num_attention_heads)
    n_kv_heads = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(attn.head_dim)
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch=native.arch,
        index=index,
        d_model=native.d_model,
        residual="sequential",
        norm1=layout.norm(layer, "norm1"),
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
            rope=hf.rope_from_rotary_embedding(native.base.rotary_emb, n_ctx, **native.rope_kwargs(index)),
            q_norm=layout.norm(layer, "q_norm"),
            k_norm=layout.norm(layer, "k_norm"),
            softcap=native.attention_softcap(index),
        ),
        norm2=layout.norm(layer, "norm2"),
        post_attn_norm=layout.norm(layer, "post_attn_norm"),
        post_mlp_norm=layout.norm(layer, "post_mlp_norm"),
        mlp=MLP(
            activation=hf.activation_name(getattr(config, "hidden_activation", None) or config.hidden_act),  # Gemma: hidden_activation
            up=hf.from_nn_linear(mlp.up_proj),
            gate=hf.from_nn_linear(mlp.gate_proj),
            down=hf.from_nn_linear(mlp.down_proj),
        ),
        source={"hf_class": type(layer).__name__, "model_type": str(config.model_type)},
    )
