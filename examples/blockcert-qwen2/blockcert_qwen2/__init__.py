"""Third-party BlockCert plugin for Qwen2 decoder layers (``Qwen2DecoderLayer``).

Llama's block with two differences: the q/k/v projections carry biases (o_proj does not), and a
config may turn on sliding-window attention for some layers (``layer_types[i] == "sliding_attention"``).
Both are captured: biases are ordinary :class:`~blockcert.ir.Linear` biases, and a sliding layer's
mask is the causal table restricted to the window. Importing this module does not import torch.

Unlike the built-ins these hooks are not ``trylast``: a third-party plugin runs before them.
"""

from __future__ import annotations

from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="qwen2",
    model_types=("qwen2",),
    block_classes=("Qwen2DecoderLayer",),
    description="Qwen2 / Qwen2.5 decoder layers: RMSNorm, RoPE, GQA, q/k/v biases, SwiGLU, optional sliding window",
)


@hookimpl
def blockcert_register_architectures(register: Any) -> None:
    register(ARCH)


@hookimpl
def blockcert_trace(model: Any, arch: str) -> Any:
    if arch != ARCH.name:
        return None
    from .adapter import Qwen2Native

    return Qwen2Native(model)


@hookimpl
def blockcert_to_ir(native: Any, index: int, n_ctx: int) -> Any:
    if native.arch != ARCH.name:
        return None
    from .adapter import to_ir

    return to_ir(native, index, n_ctx)
