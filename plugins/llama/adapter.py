"""``LlamaForCausalLM`` <-> BlockCert: the common rotary decoder layout (:mod:`blockcert.decoder`), full causal
attention in every layer."""

from __future__ import annotations

from blockcert.decoder import RotaryDecoder


class LlamaNative(RotaryDecoder):
    arch = "llama"
