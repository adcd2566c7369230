"""``Olmo2ForCausalLM`` <-> BlockCert: the rotary decoder layout (:mod:`blockcert.decoder`)."""

from __future__ import annotations

from blockcert.decoder import Layout, RotaryDecoder

OLMO2 = Layout(norm1=None, norm2=None, post_attn_norm="post_attention_layernorm",
               post_mlp_norm="post_feedforward_layernorm", q_norm="self_attn.q_norm", k_norm="self_attn.k_norm")


class Olmo2Native(RotaryDecoder):
    arch = "olmo2"
    layout = OLMO2
