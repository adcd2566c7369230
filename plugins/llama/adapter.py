"""``LlamaForCausalLM`` <-> BlockCert: the common rotary decoder layout (:mod:`blockcert.decoder`), full causal
attention in every layer."""

from __future__ import annotations

from blockcert.decoder import RotaryDecoder, rotary_decoder_ir
from blockcert.ir import BlockIR


class LlamaNative(RotaryDecoder):
    arch = "llama"


def to_ir(native: LlamaNative, index: int, n_ctx: int) -> BlockIR:
    return rotary_decoder_ir(native, index, n_ctx)
