"""Built-in adapter for Gemma 2 decoder layers (``Gemma2DecoderLayer``).

Gemma's sandwich (:data:`blockcert.decoder.GEMMA`): an RMSNorm with ``1 + weight`` before and after each sublayer,
the attention logits soft-capped (``config.attn_logit_softcapping``), windows on the ``sliding_attention``
layers, ``query_pre_attn_scalar ** -0.5`` as the scale (read from the module). The final logit soft-cap is in
the head (native side).

Importing this module does not import torch.
"""

from __future__ import annotations

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture

ARCH = Architecture(
    name="gemma2",
    model_types=("gemma2",),
    block_classes=("Gemma2DecoderLayer",),
    description="Gemma 2 decoder layers: (1+w) RMSNorm sandwich, attention logit soft-cap, alternating sliding windows",
)


HOOKS = ArchitectureHooks(ARCH, native="blockcert_gemma2.adapter:Gemma2Native")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()
