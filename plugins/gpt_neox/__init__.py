"""Built-in adapter for GPT-NeoX layers (``GPTNeoXLayer``: GPT-NeoX-20B, Pythia, and models built on them).

LayerNorm with bias before each sublayer, one fused ``query_key_value`` projection laid out head by head,
partial rotary embeddings (``rotary_pct`` / ``partial_rotary_factor``: the first features of each head rotate, the
rest pass through), a plain (non-gated) MLP, and either the parallel residual ``x + attn(ln1(x)) + mlp(ln2(x))``
(``use_parallel_residual``, the default) or the sequential one. Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="gpt_neox",
    model_types=("gpt_neox",),
    block_classes=("GPTNeoXLayer",),
    description="GPT-NeoX / Pythia layers: LayerNorm, fused per-head QKV, partial RoPE, parallel or sequential residual",
)


@hookimpl(trylast=True)
def blockcert_register_architectures(register: Any) -> None:
    register(ARCH)


@hookimpl(trylast=True)
def blockcert_trace(model: Any, arch: str) -> Any:
    if arch != ARCH.name:
        return None
    from .adapter import GPTNeoXNative

    return GPTNeoXNative(model)


@hookimpl(trylast=True)
def blockcert_to_ir(native: Any, index: int, n_ctx: int) -> Any:
    if native.arch != ARCH.name:
        return None
    from .adapter import to_ir

    return to_ir(native, index, n_ctx)
