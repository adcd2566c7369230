"""Built-in edit plugin: ``mlp-scale`` (paper §7.2), the block's residual becomes ``x + Attn + α·MLP``; and the
directional edits ``direction-ablate`` and ``direction-add`` (:mod:`blockcert_edits.directions`).

``blockcert_edit(target, spec)`` with ``spec = mlp-scale:block=<int>,alpha=<float>`` (canonical form, both
parameters required) and ``target`` either

* a :class:`blockcert.ir.BlockIR` of that block: returns the edited IR (``W_down`` and ``b_down`` times α,
  computed in float64 and cast back; ``source["edit"]`` records the canonical spec), or
* a :class:`blockcert.model.load.LoadedModel`: returns an :class:`MLPScale` handle that edits the live model
  with a forward hook on the block's MLP (``NativeModel.mlp_module``) scaling its output by α — a context
  manager, so the model is restored on exit. α = 1 multiplies by exactly 1.0, which changes no bit.

Importing this module does not import torch.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np

from blockcert.errors import UserError
from blockcert.hookspecs import hookimpl

EDITS = ("mlp-scale", "direction-ablate", "direction-add")


@attrs.frozen
class MLPScaleSpec:
    block: int
    alpha: float

    def __str__(self) -> str:
        return f"mlp-scale:block={self.block},alpha={self.alpha!r}"


def parse(spec: Any) -> MLPScaleSpec:
    text = str(spec)
    unknown = sorted(set(spec.params) - {"block", "alpha"})
    if unknown:
        raise UserError(f"edit {text!r}: unknown parameter {unknown[0]!r} (mlp-scale takes block, alpha)")
    missing = [k for k in ("block", "alpha") if k not in spec.params]
    if missing:
        raise UserError(f"edit {text!r}: parameter {missing[0]!r} is required (e.g. mlp-scale:block=15,alpha=0.33)")
    raw_block = spec.params["block"]
    if not raw_block.isdigit():
        raise UserError(f"edit {text!r}: parameter 'block' must be a block index (0, 1, ...), got {raw_block!r}")
    try:
        alpha = float(spec.params["alpha"])
    except ValueError:
        raise UserError(f"edit {text!r}: parameter 'alpha' must be a number, got {spec.params['alpha']!r}") from None
    if not math.isfinite(alpha):
        raise UserError(f"edit {text!r}: parameter 'alpha' must be finite")
    return MLPScaleSpec(int(raw_block), alpha)


def scale_ir(ir: Any, edit: MLPScaleSpec) -> Any:
    if ir.index != edit.block:
        raise UserError(f"edit {edit} targets block {edit.block}, but this IR is block {ir.index}")

    def times(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else (a.astype(np.float64) * edit.alpha).astype(a.dtype)

    down = attrs.evolve(ir.mlp.down, weight=times(ir.mlp.down.weight), bias=times(ir.mlp.down.bias))
    return attrs.evolve(ir, mlp=attrs.evolve(ir.mlp, down=down), source={**ir.source, "edit": str(edit)})


class MLPScale:
    """``mlp-scale`` applied to a live model; ``with handle: ...`` or ``handle.apply()`` / ``handle.remove()``."""

    def __init__(self, loaded: Any, edit: MLPScaleSpec) -> None:
        n = loaded.native.n_blocks
        if not 0 <= edit.block < n:
            raise UserError(f"edit {edit}: block {edit.block} does not exist (the model has blocks 0-{n - 1})")
        self.loaded, self.spec = loaded, edit
        self.block, self.alpha = edit.block, edit.alpha
        self._handle: Any = None

    def _hook(self, module: Any, inputs: Any, output: Any) -> Any:
        return output * self.alpha

    def apply(self) -> MLPScale:
        if self._handle is None:
            self._handle = self.loaded.native.mlp_module(self.block).register_forward_hook(self._hook)
        return self

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> MLPScale:
        return self.apply()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __str__(self) -> str:
        return str(self.spec)


def _forms(name: str) -> tuple[Any, Any, Any]:
    """(parse, the IR form, the live-model handle) of edit kind ``name``."""
    if name == "mlp-scale":
        return parse, scale_ir, MLPScale
    from blockcert_edits import directions  # imported only for its kinds: it is the larger module

    return directions.parse, directions.edit_ir, directions.DirectionEdit


@hookimpl(trylast=True)
def blockcert_edit(target: Any, spec: Any) -> Any:
    if spec.name not in EDITS:
        return None
    parse_spec, on_ir, handle = _forms(spec.name)
    edit = parse_spec(spec)
    from blockcert.ir import BlockIR

    if isinstance(target, BlockIR):
        return on_ir(target, edit)
    if hasattr(target, "native"):
        return handle(target, edit)
    return None
