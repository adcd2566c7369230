"""Built-in adapter for Gemma 2 decoder layers (``Gemma2DecoderLayer``).

Gemma's sandwich (:data:`blockcert.decoder.GEMMA`): an RMSNorm with ``1 + weight`` before and after each sublayer,
the attention logits soft-capped (``config.attn_logit_softcapping``), windows on the ``sliding_attention``
layers, ``query_pre_attn_scalar ** -0.5`` as the scale (read from the module). The final logit soft-cap is in
the head (native side).

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="gemma2",
    model_types=('gemma2',),
    block_classes=('Gemma2DecoderLayer',),
    description="Gemma 2 decoder layers: (1+w) RMSNorm sandwich, attention logit soft-cap, alternating sliding windows",
)


@hookimpl(trylast=True)
def blockcert_register_architectures(register: Any) -> None:
    register(ARCH)


@hookimpl(trylast=True)
def blockcert_trace(model: Any, arch: str) -> Any:
    if arch != ARCH.name:
        return None
    from .adapter import Gemma2Native

    return Gemma2Native(model)


@hookimpl(trylast=True)
def blockcert_to_ir(native: Any, index: int, n_ctx: int) -> Any:
    if native.arch != ARCH.name:
        return None
    from blockcert.decoder import rotary_decoder_ir

    return rotary_decoder_ir(native, index, n_ctx)
