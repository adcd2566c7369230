"""Built-in adapter for Qwen3 decoder layers (``Qwen3DecoderLayer``).

Llama's layout plus an RMSNorm over each query and key head (``self_attn.q_norm``/``k_norm``, ``head_dim`` weights)
before RoPE, and sliding windows on the layers ``config.layer_types`` marks.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="qwen3",
    model_types=('qwen3',),
    block_classes=('Qwen3DecoderLayer',),
    description="Qwen3 decoder layers: RMSNorm, per-head QK-norm before RoPE, GQA, SwiGLU, optional sliding windows",
)


@hookimpl(trylast=True)
def blockcert_register_architectures(register: Any) -> None:
    register(ARCH)


@hookimpl(trylast=True)
def blockcert_trace(model: Any, arch: str) -> Any:
    if arch != ARCH.name:
        return None
    from .adapter import Qwen3Native

    return Qwen3Native(model)


@hookimpl(trylast=True)
def blockcert_to_ir(native: Any, index: int, n_ctx: int) -> Any:
    if native.arch != ARCH.name:
        return None
    from blockcert.decoder import rotary_decoder_ir

    return rotary_decoder_ir(native, index, n_ctx)
