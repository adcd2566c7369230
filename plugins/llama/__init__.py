"""Built-in adapter for Llama-family decoder layers (``LlamaDecoderLayer``).

RMSNorm pre-normalisation, RoPE (tabulated from the model's own rotary embedding, so scaled variants
are captured), grouped-query attention (``num_key_value_heads`` < ``num_attention_heads``), SwiGLU MLP,
optional attention / MLP biases. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="llama",
    model_types=("llama",),
    block_classes=("LlamaDecoderLayer",),
    description="Llama / SmolLM2 / TinyLlama decoder layers: RMSNorm, RoPE, GQA, SwiGLU",
)

HOOKS = ArchitectureHooks(ARCH, native="blockcert_llama.adapter:LlamaNative")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()


@hookimpl(trylast=True)
def blockcert_register_synthetic_shapes(register: Any) -> None:
    from .synthetic import SHAPES

    for shape in SHAPES:
        register(shape)
