"""``Gemma2ForCausalLM`` <-> BlockCert: the rotary decoder layout (:mod:`blockcert.decoder`)."""

from __future__ import annotations

from blockcert.decoder import GEMMA, RotaryDecoder


class Gemma2Native(RotaryDecoder):
    arch = "gemma2"
    layout = GEMMA
