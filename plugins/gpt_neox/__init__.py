"""Built-in adapter for GPT-NeoX layers (``GPTNeoXLayer``: GPT-NeoX-20B, Pythia, and models built on them).

LayerNorm with bias before each sublayer, one fused ``query_key_value`` projection laid out head by head,
partial rotary embeddings (``rotary_pct`` / ``partial_rotary_factor``: the first features of each head rotate, the
rest pass through), a plain (non-gated) MLP, and either the parallel residual ``x + attn(ln1(x)) + mlp(ln2(x))``
(``use_parallel_residual``, the default) or the sequential one. Importing this module does not import torch.
"""

from __future__ import annotations

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture

ARCH = Architecture(
    name="gpt_neox",
    model_types=("gpt_neox",),
    block_classes=("GPTNeoXLayer",),
    description="GPT-NeoX / Pythia layers: LayerNorm, fused per-head QKV, partial RoPE, parallel or sequential residual",
)


HOOKS = ArchitectureHooks(ARCH, native="blockcert_gpt_neox.adapter:GPTNeoXNative", to_ir="blockcert_gpt_neox.adapter:to_ir")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()
