"""``Qwen2ForCausalLM`` <-> BlockCert: the rotary decoder layout, plus Qwen2's per-layer sliding windows."""

from __future__ import annotations

from blockcert.decoder import RotaryDecoder
from blockcert.errors import UserError


class Qwen2Native(RotaryDecoder):
    arch = "qwen2"

    def sliding_window(self, index: int) -> int | None:
        """The window of block ``index`` as HF's Qwen2Model applies it, or None for full causal attention:
        Qwen2Model picks each layer's mask by ``config.layer_types[index]``, and a ``"sliding_attention"`` layer
        lets query ``i`` see key ``j`` only when ``i - window < j <= i``, ``window = config.sliding_window``."""
        config = self.model.config
        layer_types = getattr(config, "layer_types", None)
        if not layer_types or layer_types[index] != "sliding_attention":
            return None
        if config.sliding_window is None:  # HF's own forward refuses this config too
            raise UserError(f"qwen2 block {index} is a sliding_attention layer but config.sliding_window is not set",
                            "set use_sliding_window=True and sliding_window=<n> in the config, or make the layer full_attention")
        return int(config.sliding_window)
