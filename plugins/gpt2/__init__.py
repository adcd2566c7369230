"""Built-in adapter for GPT-2 blocks (``GPT2Block``).

LayerNorm with bias, fused ``c_attn`` split into Q/K/V, HF ``Conv1D`` weights (already ``[in, out]``),
``gelu_new``, learned absolute positions (in the embedding, outside the block), causal attention
scaled as the config says (``scale_attn_weights``, ``scale_attn_by_inverse_layer_idx``).
Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="gpt2",
    model_types=("gpt2",),
    block_classes=("GPT2Block",),
    description="GPT-2 blocks: LayerNorm, fused QKV Conv1D, gelu_new, learned positions",
)


@hookimpl(trylast=True)
def blockcert_register_architectures(register: Any) -> None:
    register(ARCH)


@hookimpl(trylast=True)
def blockcert_trace(model: Any, arch: str) -> Any:
    if arch != ARCH.name:
        return None
    from .adapter import GPT2Native

    return GPT2Native(model)


@hookimpl(trylast=True)
def blockcert_to_ir(native: Any, index: int, n_ctx: int) -> Any:
    if native.arch != ARCH.name:
        return None
    from .adapter import to_ir

    return to_ir(native, index, n_ctx)
