"""Built-in adapter for Mistral decoder layers (``MistralDecoderLayer``).

Llama's layout (:mod:`blockcert.decoder`); when ``config.sliding_window`` is set, every layer attends within it.

Importing this module does not import torch.
"""

from __future__ import annotations

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture

ARCH = Architecture(
    name="mistral",
    model_types=("mistral",),
    block_classes=("MistralDecoderLayer",),
    description="Mistral decoder layers: Llama's layout with sliding-window attention in every layer",
)


HOOKS = ArchitectureHooks(ARCH, native="blockcert_mistral.adapter:MistralNative")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()
