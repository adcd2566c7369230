"""``Qwen3ForCausalLM`` <-> BlockCert: the rotary decoder layout (:mod:`blockcert.decoder`)."""

from __future__ import annotations

from blockcert.decoder import Layout, RotaryDecoder

QWEN3 = Layout(q_norm="self_attn.q_norm", k_norm="self_attn.k_norm")


class Qwen3Native(RotaryDecoder):
    arch = "qwen3"
    layout = QWEN3
