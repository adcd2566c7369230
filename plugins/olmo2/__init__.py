"""Built-in adapter for OLMo 2 decoder layers (``Olmo2DecoderLayer``).

``h = x + norm(attn(x))``, ``y = h + norm(mlp(h))``: no norm before either sublayer, and an RMSNorm over the
whole projected queries / keys (``n_heads*head_dim`` weights) before RoPE.

Importing this module does not import torch.
"""

from __future__ import annotations

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture

ARCH = Architecture(
    name="olmo2",
    model_types=("olmo2",),
    block_classes=("Olmo2DecoderLayer",),
    description="OLMo 2 decoder layers: no pre-norms, RMSNorm after attention and after the MLP, QK-norm over the whole projection",
)


HOOKS = ArchitectureHooks(ARCH, native="blockcert_olmo2.adapter:Olmo2Native")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()
