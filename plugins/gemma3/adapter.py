"""``Gemma3ForCausalLM`` <-> BlockCert: the rotary decoder layout (:mod:`blockcert.decoder`)."""

from __future__ import annotations

from typing import Any

import attrs

from blockcert.decoder import GEMMA, RotaryDecoder
from blockcert.errors import UserError

GEMMA3 = attrs.evolve(GEMMA, q_norm="self_attn.q_norm", k_norm="self_attn.k_norm")


class Gemma3Native(RotaryDecoder):
    arch = "gemma3"
    layout = GEMMA3

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        if getattr(model.config, "use_bidirectional_attention", False):
            raise UserError("this Gemma 3 config attends bidirectionally (use_bidirectional_attention): not a causal decoder",
                            "BlockCert certifies causal language models; load the causal Gemma 3 text model")

    def rope_kwargs(self, index: int) -> dict[str, Any]:
        """Gemma3RotaryEmbedding keeps one table per layer type: the layer's own."""
        return {"layer_type": self.model.config.layer_types[index]}
