"""The three hooks every architecture plugin implements, written once.

An architecture plugin registers its :class:`~blockcert.catalog.Architecture`, answers ``blockcert_trace`` for its
name with its :class:`~blockcert.native.NativeModel`, and ``blockcert_to_ir`` for its native models. Only the
names differ between plugins, so the plugin module makes one :class:`ArchitectureHooks` and exports its three
bound hooks (pluggy finds the hook marker through a bound method)::

    HOOKS = ArchitectureHooks(ARCH, native="blockcert_mistral.adapter:MistralNative")
    blockcert_register_architectures, blockcert_trace, blockcert_to_ir = HOOKS.exports()

``native`` and ``to_ir`` are ``"module:attribute"`` strings imported on first use, so importing the plugin
module imports neither torch nor transformers. ``to_ir`` defaults to :func:`blockcert.decoder.rotary_decoder_ir`.
"""

from __future__ import annotations

import importlib
from typing import Any

from blockcert.catalog import Architecture
from blockcert.hookspecs import hookimpl

ROTARY_DECODER_IR = "blockcert.decoder:rotary_decoder_ir"


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class ArchitectureHooks:
    """The built-in hooks of one architecture (all ``trylast``: a third-party plugin of the same name wins)."""

    def __init__(self, arch: Architecture, *, native: str, to_ir: str = ROTARY_DECODER_IR) -> None:
        self.arch, self.native, self.to_ir = arch, native, to_ir

    @hookimpl(trylast=True)
    def blockcert_register_architectures(self, register: Any) -> None:
        register(self.arch)

    @hookimpl(trylast=True)
    def blockcert_trace(self, model: Any, arch: str) -> Any:
        if arch != self.arch.name:
            return None
        return _load(self.native)(model)

    @hookimpl(trylast=True)
    def blockcert_to_ir(self, native: Any, index: int, n_ctx: int) -> Any:
        if native.arch != self.arch.name:
            return None
        return _load(self.to_ir)(native, index, n_ctx)

    def exports(self) -> tuple[Any, Any, Any]:
        """(blockcert_register_architectures, blockcert_trace, blockcert_to_ir), for the plugin module's namespace."""
        return self.blockcert_register_architectures, self.blockcert_trace, self.blockcert_to_ir
