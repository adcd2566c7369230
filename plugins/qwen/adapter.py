"""``Qwen2ForCausalLM`` <-> BlockCert: the rotary decoder layout (its per-layer sliding windows from
``config.layer_types``, read by :class:`blockcert.decoder.RotaryDecoder`)."""

from __future__ import annotations

from blockcert.decoder import RotaryDecoder


class Qwen2Native(RotaryDecoder):
    arch = "qwen2"
