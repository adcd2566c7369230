"""Built-in adapter for Qwen3 decoder layers (``Qwen3DecoderLayer``).

Llama's layout plus an RMSNorm over each query and key head (``self_attn.q_norm``/``k_norm``, ``head_dim`` weights)
before RoPE, and sliding windows on the layers ``config.layer_types`` marks.

Importing this module does not import torch.
"""

from __future__ import annotations

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture

ARCH = Architecture(
    name="qwen3",
    model_types=("qwen3",),
    block_classes=("Qwen3DecoderLayer",),
    description="Qwen3 decoder layers: RMSNorm, per-head QK-norm before RoPE, GQA, SwiGLU, optional sliding windows",
)


HOOKS = ArchitectureHooks(ARCH, native="blockcert_qwen3.adapter:Qwen3Native")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()
