"""Built-in adapter for GPT-2 blocks (``GPT2Block``).

LayerNorm with bias, fused ``c_attn`` split into Q/K/V, HF ``Conv1D`` weights (already ``[in, out]``),
``gelu_new``, learned absolute positions (in the embedding, outside the block), causal attention
scaled as the config says (``scale_attn_weights``, ``scale_attn_by_inverse_layer_idx``).
Importing this module does not import torch.
"""

from __future__ import annotations

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture

ARCH = Architecture(
    name="gpt2",
    model_types=("gpt2",),
    block_classes=("GPT2Block",),
    description="GPT-2 blocks: LayerNorm, fused QKV Conv1D, gelu_new, learned positions",
)

HOOKS = ArchitectureHooks(ARCH, native="blockcert_gpt2.adapter:GPT2Native", to_ir="blockcert_gpt2.adapter:to_ir")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()
