"""Every hook dispatches through the :class:`~blockcert.plugins.Plugins` facade.

Each test registers a tiny plugin class on the process-wide manager and unregisters it in
``finally``, so no test leaks a plugin into another. Hooks with no built-in implementation yet
(blockcert_perturb, blockcert_surrogate, blockcert_edit) are shown to reach a third-party
implementation; blockcert_replay shows a third party overriding the built-in (``trylast``) one.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pluggy
import pytest

from blockcert import plugins as plugins_module
from blockcert.catalog import Architecture, ModelEntry
from blockcert.errors import UserError
from blockcert.hookspecs import hookimpl
from blockcert.interpreter import Replay, replay
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR, Linear, Norm
from blockcert.plugins import Plugins, get_plugins, make_plugin_manager
from blockcert.spec import parse_spec


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[Plugins]:
    """``plugin`` registered on the process-wide manager for the duration of the block."""
    plugins = get_plugins()
    plugins.pm.register(plugin, name=name)
    try:
        yield plugins
    finally:
        plugins.pm.unregister(name=name)


def toy_ir(arch: str = "toy") -> BlockIR:
    """A 4-wide, 2-head (1 KV head) block over 3 positions, seeded: enough to replay, nothing more."""
    rng = np.random.default_rng(0)

    def lin(d_in: int, d_out: int) -> Linear:
        return Linear(weight=rng.standard_normal((d_in, d_out)).astype(np.float32))

    ones = np.ones(4, dtype=np.float32)
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch=arch,
        index=0,
        d_model=4,
        residual="sequential",
        norm1=Norm(kind="rmsnorm", weight=ones, eps=1e-6),
        attn=Attention(
            q=lin(4, 4), k=lin(4, 2), v=lin(4, 2), o=lin(4, 4),
            n_heads=2, n_kv_heads=1, head_dim=2, scale=2**-0.5,
            mask=np.tril(np.ones((3, 3), dtype=bool)),
            head_gate=np.ones(2, dtype=np.float32),
        ),
        norm2=Norm(kind="rmsnorm", weight=ones, eps=1e-6),
        mlp=MLP(activation="relu", up=lin(4, 8), down=lin(8, 4)),
    )


def toy_input() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 3, 4))  # [B, T, d] float64


# ---------------------------------------------------------------------------------------------------
# Catalogue hooks
# ---------------------------------------------------------------------------------------------------


class CataloguePlugin:
    @hookimpl
    def blockcert_register_architectures(self, register: Any) -> None:
        register(Architecture(name="llama", model_types=("llama",), block_classes=(), description="third-party llama"))
        register(Architecture(name="toy", model_types=("toy",), block_classes=("ToyBlock",)))

    @hookimpl
    def blockcert_register_models(self, register: Any) -> None:
        register(ModelEntry(name="toy-model", description="a toy", locate=lambda: Path("/nonexistent"), aliases=("toy",)))


def test_catalogue_hooks_collect_every_plugin_and_third_parties_win() -> None:
    with registered(CataloguePlugin(), "test-catalogue") as plugins:
        archs = plugins.architectures()
        assert archs["toy"].block_classes == ("ToyBlock",)
        assert archs["llama"].description == "third-party llama"  # beats the built-in llama entry
        assert "gpt2" in archs  # built-ins still contribute
        models = plugins.models()
        assert models["toy-model"] is models["toy"]
    archs = get_plugins().architectures()
    assert "toy" not in archs and archs["llama"].description != "third-party llama"
    assert "toy-model" not in get_plugins().models()


# ---------------------------------------------------------------------------------------------------
# trace / to_ir: dispatch by architecture
# ---------------------------------------------------------------------------------------------------


class ToyNative:
    arch = "toy"
    n_blocks = 1


class TraceToIRPlugin:
    @hookimpl
    def blockcert_trace(self, model: Any, arch: str) -> Any:
        return ToyNative() if arch == "toy" else None

    @hookimpl
    def blockcert_to_ir(self, native: Any, index: int, n_ctx: int) -> Any:
        return toy_ir() if native.arch == "toy" else None


def test_trace_and_to_ir_dispatch_to_the_plugin_for_its_arch() -> None:
    with registered(TraceToIRPlugin(), "test-trace") as plugins:
        native = plugins.trace(object(), "toy")
        assert isinstance(native, ToyNative)
        assert plugins.to_ir(native, 0, 3) == toy_ir()
        with pytest.raises(UserError, match="block 1 does not exist"):
            plugins.to_ir(native, 1, 3)
    with pytest.raises(UserError, match="no plugin can trace architecture 'toy'"):
        get_plugins().trace(object(), "toy")
    with pytest.raises(UserError, match="no plugin converts 'toy' blocks to IR"):
        get_plugins().to_ir(ToyNative(), 0, 3)


# ---------------------------------------------------------------------------------------------------
# replay: a third party overrides the built-in reference interpreter
# ---------------------------------------------------------------------------------------------------


class ZeroReplayPlugin:
    """Replays only IRs of arch ``toy``, as all zeros; returns None (falls through) for anything else."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def blockcert_replay(self, ir: BlockIR, x: Any, positions: Any, key_mask: Any) -> Any:
        if ir.arch != "toy":
            return None
        self.calls += 1
        B, T, _ = x.shape
        return Replay(output=np.zeros_like(x), mask=np.ones((B, T, T), dtype=bool), head_active=ir.attn.head_gate != 0)


def test_replay_override_beats_the_builtin() -> None:
    x = toy_input()
    reference = replay(toy_ir(), x).output
    assert np.array_equal(get_plugins().replay(toy_ir(), x).output, reference)  # the built-in interpreter
    plugin = ZeroReplayPlugin()
    with registered(plugin, "test-replay") as plugins:
        assert not np.any(plugins.replay(toy_ir(), x).output)  # the override ran first and won
        assert plugin.calls == 1
        assert np.array_equal(plugins.replay(toy_ir("other"), x).output, replay(toy_ir("other"), x).output)
    assert np.array_equal(get_plugins().replay(toy_ir(), x).output, reference)


# ---------------------------------------------------------------------------------------------------
# perturb / surrogate / edit: dispatch by spec name, unknown names are UserErrors
# ---------------------------------------------------------------------------------------------------


class DerivedPlugin:
    """One spec name per hook, parameters read from the spec; None for every other name."""

    def __init__(self) -> None:
        self.traces: list[Any] = []

    @hookimpl
    def blockcert_perturb(self, ir: BlockIR, spec: Any) -> BlockIR | None:
        if spec.name != "test-gate-heads":
            return None
        gate = np.full(ir.attn.n_heads, float(spec.params["value"]), dtype=np.float32)
        return attrs.evolve(ir, attn=attrs.evolve(ir.attn, head_gate=gate))

    @hookimpl
    def blockcert_surrogate(self, ir: BlockIR, spec: Any, traces: Any) -> BlockIR | None:
        if spec.name != "test-identity":
            return None
        self.traces.append(traces)
        return ir

    @hookimpl
    def blockcert_edit(self, target: Any, spec: Any) -> Any:
        if spec.name != "test-mlp-scale" or not isinstance(target, BlockIR):
            return None
        alpha = float(spec.params["alpha"])
        down = attrs.evolve(target.mlp.down, weight=target.mlp.down.weight * np.float32(alpha))
        return attrs.evolve(target, mlp=attrs.evolve(target.mlp, down=down))


def test_perturb_dispatches_through_the_facade() -> None:
    ir = toy_ir()
    with registered(DerivedPlugin(), "test-derived") as plugins:
        out = plugins.perturb(ir, parse_spec("test-gate-heads:value=0"))
        assert not np.any(out.attn.head_gate)
        assert np.array_equal(replay(out, toy_input()).head_active, [False, False])
        with pytest.raises(UserError, match="unknown ablation 'no-such-ablation'"):
            plugins.perturb(ir, parse_spec("no-such-ablation"))
    with pytest.raises(UserError, match="unknown ablation 'test-gate-heads'"):
        get_plugins().perturb(ir, parse_spec("test-gate-heads:value=0"))


def test_surrogate_dispatches_through_the_facade_with_traces() -> None:
    ir = toy_ir()
    plugin = DerivedPlugin()
    with registered(plugin, "test-derived") as plugins:
        assert plugins.surrogate(ir, parse_spec("test-identity")) is ir
        traces = [toy_input()]
        assert plugins.surrogate(ir, parse_spec("test-identity"), traces) is ir
        assert plugin.traces == [None, traces]
        with pytest.raises(UserError, match="unknown surrogate 'no-such-surrogate'"):
            plugins.surrogate(ir, parse_spec("no-such-surrogate:r=4"))
    with pytest.raises(UserError, match="unknown surrogate 'test-identity'"):
        get_plugins().surrogate(ir, parse_spec("test-identity"))


def test_edit_dispatches_through_the_facade() -> None:
    ir = toy_ir()
    with registered(DerivedPlugin(), "test-derived") as plugins:
        same = plugins.edit(ir, parse_spec("test-mlp-scale:alpha=1"))
        assert same == ir  # alpha = 1 is the identity
        half = plugins.edit(ir, parse_spec("test-mlp-scale:alpha=0.5"))
        assert np.array_equal(half.mlp.down.weight, ir.mlp.down.weight * np.float32(0.5))
        with pytest.raises(UserError, match="unknown edit 'test-mlp-scale'"):
            plugins.edit(object(), parse_spec("test-mlp-scale:alpha=0.5"))  # not an IR: every plugin declines
    with pytest.raises(UserError, match="unknown edit 'test-mlp-scale'"):
        get_plugins().edit(ir, parse_spec("test-mlp-scale:alpha=0.5"))


# ---------------------------------------------------------------------------------------------------
# A misspelt hook implementation fails loudly
# ---------------------------------------------------------------------------------------------------


class MisspeltPlugin:
    @hookimpl
    def blockcert_to_irr(self, native: Any, index: int, n_ctx: int) -> Any:
        return None


def test_misspelt_hook_fails_check_pending() -> None:
    pm = make_plugin_manager(entry_points=False)
    pm.register(MisspeltPlugin(), name="misspelt")  # registering alone does not notice
    with pytest.raises(pluggy.PluginValidationError, match="blockcert_to_irr"):
        pm.check_pending()


def test_make_plugin_manager_refuses_a_misspelt_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    @hookimpl
    def blockcert_to_irr(native: Any, index: int, n_ctx: int) -> Any:
        return None

    module = types.ModuleType("blockcert_test_misspelt")  # a plugin module, as a built-in would be
    module.blockcert_to_irr = blockcert_to_irr  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    builtins = (*plugins_module.BUILTIN_PLUGINS, ("misspelt", module.__name__))
    monkeypatch.setattr(plugins_module, "BUILTIN_PLUGINS", builtins)
    with pytest.raises(UserError, match="implements an unknown hook") as info:
        make_plugin_manager(entry_points=False)
    assert "blockcert_to_irr" in str(info.value)
    monkeypatch.setenv(plugins_module.DISABLE_ENV, "misspelt")  # the documented escape hatch
    assert make_plugin_manager(entry_points=False).is_blocked("misspelt")
