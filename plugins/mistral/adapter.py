"""``MistralForCausalLM`` <-> BlockCert: the rotary decoder layout (:mod:`blockcert.decoder`)."""

from __future__ import annotations

from blockcert.decoder import RotaryDecoder


class MistralNative(RotaryDecoder):
    arch = "mistral"

    def sliding_window(self, index: int) -> int | None:
        """MistralModel builds one mask for every layer: sliding when ``config.sliding_window`` is set."""
        window = getattr(self.model.config, "sliding_window", None)
        return None if window is None else int(window)
