"""Built-in adapter for Phi decoder layers (``PhiDecoderLayer``: Phi-1, Phi-1.5, Phi-2).

One LayerNorm (with bias) feeds both sublayers in parallel, ``y = x + attn(ln(x)) + mlp(ln(x))``; q/k/v
projections with biases (grouped KV heads when the config has them), partial rotary embeddings
(``partial_rotary_factor``), an optional per-head LayerNorm on the queries and keys before RoPE (``qk_layernorm``),
a plain ``fc1 -> act -> fc2`` MLP, and an LM head with a bias. Importing this module does not import torch.
"""

from __future__ import annotations

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture

ARCH = Architecture(
    name="phi",
    model_types=("phi",),
    block_classes=("PhiDecoderLayer",),
    description="Phi-1/1.5/2 decoder layers: one LayerNorm, parallel attention and MLP, partial RoPE, optional QK LayerNorm",
)


HOOKS = ArchitectureHooks(ARCH, native="blockcert_phi.adapter:PhiNative", to_ir="blockcert_phi.adapter:to_ir")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()
