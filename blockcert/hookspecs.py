"""Every BlockCert hook, grouped by phase. Implement them with ``@blockcert.hookimpl``.

Catalogue hooks hand the plugin a ``register`` callback and may be implemented by any number of
plugins. Dispatch hooks are ``firstresult``: each implementation returns None for inputs it does not
handle, and the first non-None result wins. Built-in implementations are ``trylast``, so a third-party
plugin can override any of them. Nothing outside :mod:`blockcert.plugins` calls ``pm.hook.*``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from blockcert.catalog import Architecture, ModelEntry, SyntheticShape
    from blockcert.interpreter import Replay
    from blockcert.ir import BlockIR
    from blockcert.native import NativeModel
    from blockcert.spec import Spec

hookspec = pluggy.HookspecMarker("blockcert")
hookimpl = pluggy.HookimplMarker("blockcert")

# ---------------------------------------------------------------------------------------------------
# Catalogue: what exists
# ---------------------------------------------------------------------------------------------------


@hookspec
def blockcert_register_architectures(register: Callable[[Architecture], None]) -> None:
    """Register each :class:`~blockcert.catalog.Architecture` (HF model types / block classes) this plugin adapts."""


@hookspec
def blockcert_register_models(register: Callable[[ModelEntry], None]) -> None:
    """Register each :class:`~blockcert.catalog.ModelEntry` loadable by name; ``locate()`` never downloads."""


@hookspec
def blockcert_register_synthetic_shapes(register: Callable[[SyntheticShape], None]) -> None:
    """Register each :class:`~blockcert.catalog.SyntheticShape` ``blockcert synth --shape NAME`` can write."""


# ---------------------------------------------------------------------------------------------------
# trace: where the blocks live and how to run one natively
# ---------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def blockcert_trace(model: Any, arch: str) -> NativeModel | None:
    """Wrap HF ``model`` of architecture ``arch`` as a :class:`~blockcert.native.NativeModel`. Stops at first non-None result."""


# ---------------------------------------------------------------------------------------------------
# to_ir: native block -> IR
# ---------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def blockcert_to_ir(native: NativeModel, index: int, n_ctx: int) -> BlockIR | None:
    """Convert block ``index`` of ``native`` to a :class:`~blockcert.ir.BlockIR` covering ``n_ctx`` positions. Stops at first non-None result."""


# ---------------------------------------------------------------------------------------------------
# replay: IR + input residual -> output residual (+ the discrete decisions taken)
# ---------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def blockcert_replay(ir: BlockIR, x: Any, positions: Any, key_mask: Any) -> Replay | None:
    """Replay ``ir`` on residual ``x`` [B,T,d] at ``positions`` [B,T] (``key_mask`` [B,T] or None). Stops at first non-None result."""


# ---------------------------------------------------------------------------------------------------
# perturb / surrogate / edit: derived IRs and edited models
# ---------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def blockcert_perturb(ir: BlockIR, spec: Spec) -> BlockIR | None:
    """Return ``ir`` deliberately broken as ``spec`` says (e.g. ``drop-rope``, ``invert-mask``). Stops at first non-None result."""


@hookspec(firstresult=True)
def blockcert_surrogate(ir: BlockIR, spec: Spec, traces: Any) -> BlockIR | None:
    """Return a cheaper replacement for ``ir`` built as ``spec`` says (e.g. ``lowrank:r=64``), optionally fitted on ``traces``. Stops at first non-None result."""


@hookspec(firstresult=True)
def blockcert_edit(target: Any, spec: Spec) -> Any | None:
    """Apply the edit ``spec`` (e.g. ``mlp-scale:block=15,alpha=0.33``) to ``target`` (a model or an IR) and return the edited artifact. Stops at first non-None result."""
