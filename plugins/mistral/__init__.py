"""Built-in adapter for Mistral decoder layers (``MistralDecoderLayer``).

Llama's layout (:mod:`blockcert.decoder`); when ``config.sliding_window`` is set, every layer attends within it.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="mistral",
    model_types=('mistral',),
    block_classes=('MistralDecoderLayer',),
    description="Mistral decoder layers: Llama's layout with sliding-window attention in every layer",
)


@hookimpl(trylast=True)
def blockcert_register_architectures(register: Any) -> None:
    register(ARCH)


@hookimpl(trylast=True)
def blockcert_trace(model: Any, arch: str) -> Any:
    if arch != ARCH.name:
        return None
    from .adapter import MistralNative

    return MistralNative(model)


@hookimpl(trylast=True)
def blockcert_to_ir(native: Any, index: int, n_ctx: int) -> Any:
    if native.arch != ARCH.name:
        return None
    from blockcert.decoder import rotary_decoder_ir

    return rotary_decoder_ir(native, index, n_ctx)
