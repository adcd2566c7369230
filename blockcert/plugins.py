"""The one plugin manager, behind a small typed facade.

Built-ins are registered from :data:`BUILTIN_PLUGINS` (module name, plugin name); third-party plugins
arrive through the ``blockcert`` entry-point group. ``BLOCKCERT_DISABLE_PLUGINS=a,b`` blocks plugins by
name (built-in or not) before anything is loaded. ``check_pending()`` runs after loading, so a misspelt
hook implementation fails loudly instead of being ignored.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from importlib import metadata
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from blockcert import hookspecs
from blockcert.errors import UserError

if TYPE_CHECKING:
    from blockcert.catalog import Architecture, ModelEntry, SyntheticShape
    from blockcert.interpreter import Replay
    from blockcert.ir import BlockIR
    from blockcert.native import NativeModel
    from blockcert.spec import Spec

ENTRY_POINT_GROUP = "blockcert"
DISABLE_ENV = "BLOCKCERT_DISABLE_PLUGINS"

#: (plugin name, module) for every built-in, in registration order.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("core", "blockcert.builtin"),
    ("gpt2", "blockcert_gpt2"),
    ("llama", "blockcert_llama"),
    ("qwen", "blockcert_qwen"),
    ("gemma2", "blockcert_gemma2"),
    ("gemma3", "blockcert_gemma3"),
    ("qwen3", "blockcert_qwen3"),
    ("mistral", "blockcert_mistral"),
    ("olmo2", "blockcert_olmo2"),
    ("gpt_neox", "blockcert_gpt_neox"),
    ("phi", "blockcert_phi"),
    ("surrogates", "blockcert_surrogates"),
    ("edits", "blockcert_edits"),
)


@attrs.frozen
class PluginInfo:
    name: str
    version: str
    hooks: tuple[str, ...]
    builtin: bool
    module: str


def _blocked_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _own_version() -> str:
    try:
        return metadata.version("blockcert")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class Plugins:
    """Typed access to every hook. Get the process-wide instance with :func:`get_plugins`."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm

    # -- catalogue ---------------------------------------------------------------------------------

    def architectures(self) -> dict[str, Architecture]:
        found: dict[str, Architecture] = {}

        def register(arch: Architecture) -> None:
            found.setdefault(arch.name, arch)  # hooks run newest plugin first: third parties win

        self.pm.hook.blockcert_register_architectures(register=register)
        return found

    def models(self) -> dict[str, ModelEntry]:
        found: dict[str, ModelEntry] = {}

        def register(entry: ModelEntry) -> None:
            for key in (entry.name, *entry.aliases):
                found.setdefault(key, entry)

        self.pm.hook.blockcert_register_models(register=register)
        return found

    def synthetic_shapes(self) -> dict[str, SyntheticShape]:
        found: dict[str, SyntheticShape] = {}

        def register(shape: SyntheticShape) -> None:
            found.setdefault(shape.name, shape)

        self.pm.hook.blockcert_register_synthetic_shapes(register=register)
        return found

    def detect_architecture(self, model: Any) -> str:
        """The registered architecture of a loaded HF model, from its model_type or block classes."""
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        classes = {type(m).__name__ for m in model.modules()}
        archs = self.architectures()
        for arch in archs.values():
            if model_type in arch.model_types or classes & set(arch.block_classes):
                return arch.name
        raise UserError(
            f"no plugin handles model_type {model_type!r} (known architectures: {', '.join(sorted(archs)) or 'none'})",
            "install a plugin for it (see docs/plugins.md), or pass --arch if one of the known ones fits",
        )

    # -- dispatch ----------------------------------------------------------------------------------

    def trace(self, model: Any, arch: str) -> NativeModel:
        try:
            native = self.pm.hook.blockcert_trace(model=model, arch=arch)
        except (AttributeError, KeyError, IndexError, TypeError) as exc:  # an adapter given a model of another layout
            raise self._misfit(model, arch, exc) from None
        if native is None:
            known = ", ".join(sorted(self.architectures()))
            raise UserError(f"no plugin can trace architecture {arch!r} (known: {known})", "check --arch")
        return native

    def check_fits(self, native: NativeModel, model: Any, arch: str) -> None:
        """Ask the adapter for the model's parts now (adapters find them lazily), so that an ``--arch`` that does
        not fit the model is one usage error naming both, not an AttributeError later."""
        try:
            native.n_blocks, native.d_model, native.blocks[0]
        except (AttributeError, KeyError, IndexError, TypeError) as exc:
            raise self._misfit(model, arch, exc) from None

    def _misfit(self, model: Any, arch: str, exc: Exception) -> UserError:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        try:
            hint = f"the detected architecture is {self.detect_architecture(model)!r}: drop --arch"
        except (UserError, AttributeError):
            hint = "no registered architecture fits it; see docs/plugins.md to write one"
        return UserError(f"--arch {arch}: the {arch} adapter cannot read this model ({type(model).__name__}, model_type "
                         f"{model_type!r}): {type(exc).__name__}: {exc}", hint)

    def to_ir(self, native: NativeModel, index: int, n_ctx: int) -> BlockIR:
        if not 0 <= index < native.n_blocks:
            raise UserError(f"block {index} does not exist: the model has blocks 0..{native.n_blocks - 1}")
        ir = self.pm.hook.blockcert_to_ir(native=native, index=index, n_ctx=n_ctx)
        if ir is None:
            raise UserError(f"no plugin converts {native.arch!r} blocks to IR")
        return ir

    def replay(self, ir: BlockIR, x: Any, positions: Any = None, key_mask: Any = None) -> Replay:
        result = self.pm.hook.blockcert_replay(ir=ir, x=x, positions=positions, key_mask=key_mask)
        if result is None:
            raise UserError(f"no plugin replays IR of architecture {ir.arch!r}")
        return result

    def perturb(self, ir: BlockIR, spec: Spec) -> BlockIR:
        out = self.pm.hook.blockcert_perturb(ir=ir, spec=spec)
        if out is None:
            raise UserError(f"unknown ablation {spec.name!r}", "run `blockcert plugins` to see what is installed")
        return out

    def surrogate(self, ir: BlockIR, spec: Spec, traces: Any = None) -> BlockIR:
        out = self.pm.hook.blockcert_surrogate(ir=ir, spec=spec, traces=traces)
        if out is None:
            raise UserError(f"unknown surrogate {spec.name!r}", "run `blockcert plugins` to see what is installed")
        return out

    def edit(self, target: Any, spec: Spec) -> Any:
        out = self.pm.hook.blockcert_edit(target=target, spec=spec)
        if out is None:
            raise UserError(f"unknown edit {spec.name!r}", "run `blockcert plugins` to see what is installed")
        return out

    # -- introspection -----------------------------------------------------------------------------

    def list(self) -> list[PluginInfo]:
        builtin_names = {name for name, _ in BUILTIN_PLUGINS}
        dists = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # blocked
                continue
            module = getattr(plugin, "__name__", type(plugin).__module__)
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            dist = dists.get(id(plugin))
            version = dist.version if dist is not None else _own_version()
            infos.append(PluginInfo(name, version, hooks, name in builtin_names, module))
        return sorted(infos, key=lambda i: (not i.builtin, i.name))


def make_plugin_manager(*, entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager: hookspecs, built-ins, then entry points (both minus blocked names), checked."""
    pm = pluggy.PluginManager("blockcert")
    pm.add_hookspecs(hookspecs)
    for name in _blocked_names():
        pm.set_blocked(name)
    for name, module_name in BUILTIN_PLUGINS:
        if pm.is_blocked(name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise UserError(f"the built-in plugin {name!r} ({module_name}) is not installed: {exc}",
                            "reinstall BlockCert (`pip install -e .` in a source checkout, or `make setup`)") from exc
        pm.register(module, name=name)
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:  # a broken third-party plugin must name itself, not crash with a trace
            raise UserError(
                f"a plugin in entry-point group {ENTRY_POINT_GROUP!r} failed to load: {exc}",
                f"uninstall it or set {DISABLE_ENV}=<name> to skip it",
            ) from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise UserError(
            f"plugin {name!r} implements an unknown hook: {exc}",
            f"fix the hook name, or set {DISABLE_ENV}={name} to skip the plugin",
        ) from exc
    return pm


@cache
def get_plugins() -> Plugins:
    """The process-wide :class:`Plugins` (built once, on first use)."""
    return Plugins(make_plugin_manager())
