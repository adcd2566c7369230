"""Built-in adapter for OLMo 2 decoder layers (``Olmo2DecoderLayer``).

``h = x + norm(attn(x))``, ``y = h + norm(mlp(h))``: no norm before either sublayer, and an RMSNorm over the
whole projected queries / keys (``n_heads*head_dim`` weights) before RoPE.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="olmo2",
    model_types=('olmo2',),
    block_classes=('Olmo2DecoderLayer',),
    description="OLMo 2 decoder layers: no pre-norms, RMSNorm after attention and after the MLP, QK-norm over the whole projection",
)


@hookimpl(trylast=True)
def blockcert_register_architectures(register: Any) -> None:
    register(ARCH)


@hookimpl(trylast=True)
def blockcert_trace(model: Any, arch: str) -> Any:
    if arch != ARCH.name:
        return None
    from .adapter import Olmo2Native

    return Olmo2Native(model)


@hookimpl(trylast=True)
def blockcert_to_ir(native: Any, index: int, n_ctx: int) -> Any:
    if native.arch != ARCH.name:
        return None
    from blockcert.decoder import rotary_decoder_ir

    return rotary_decoder_ir(native, index, n_ctx)
