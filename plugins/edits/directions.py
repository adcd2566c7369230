"""Directional edits (Arditi et al., 2024): ``direction-ablate`` and ``direction-add`` (docs/edits.md, "Directions").

``direction-ablate:layer=ℓ,direction=D`` removes the unit direction r (the artifact in ``D``, see
:mod:`blockcert.edit.direction`) from what block ℓ writes to the residual stream: its attention output and its
MLP output each become ``y − (y·r) r``. ``layers=all`` does so in every block and also removes r from the
embedding output ``x^(0)``; then ``x^(l)·r = 0`` at every layer, which is the paper's ablation
``x ← x − (x·r) r`` applied to the residual stream everywhere.

``direction-add:layer=ℓ,alpha=a,direction=D`` adds ``a·r`` to block ℓ's output at every position.

Three forms, tested to agree (tests/test_directions.py):

* the **hook** form (``form=hook``, the default): forward hooks on the live model (the attention and MLP modules,
  a pre-hook on block 0 for the embedding, a hook on the block for ``direction-add``);
* the **weights** form (``form=weights``, ablation only): the writing weights are orthogonalised in place,
  ``W_out ← (I − r rᵀ) W_out`` and ``b_out ← (I − r rᵀ) b_out`` for each block's attention output and MLP down
  projection (and ``W_E ← W_E (I − r rᵀ)`` for ``layers=all``, with a tied LM head untied for the duration), and
  restored bit for bit on exit;
* the **IR** form: ``blockcert_edit(BlockIR, spec)`` returns the block's IR with the same orthogonalised output
  projections (ablation) or ``a·r`` added to the MLP down bias (addition).

Architectures whose sublayer outputs pass through a norm before the residual add (Gemma 2/3, OLMo2) are refused:
there the writing weights are not the last map before the stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from blockcert.errors import UserError

FORMS = ("hook", "weights")
ATTN_NAMES = ("self_attn", "attn", "attention")
ATTN_OUT = ("o_proj", "c_proj", "dense", "out_proj")
MLP_OUT = ("down_proj", "c_proj", "dense_4h_to_h", "fc2")


@attrs.frozen
class DirectionSpec:
    kind: str
    layer: int | None  # None: layers=all (ablation only)
    direction: str  # where the artifact was read from, as given
    alpha: float | None = None  # direction-add only
    form: str = "hook"

    def __str__(self) -> str:
        where = "layers=all" if self.layer is None else f"layer={self.layer}"
        alpha = "" if self.alpha is None else f",alpha={self.alpha!r}"
        form = "" if self.form == "hook" else f",form={self.form}"
        return f"{self.kind}:{where}{alpha},direction={self.direction}{form}"

    @property
    def blocks(self) -> tuple[int, ...] | None:
        return None if self.layer is None else (self.layer,)


def parse(spec: Any) -> DirectionSpec:
    import math

    text, p = str(spec), spec.params
    allowed = {"layer", "layers", "direction", "form"} | ({"alpha"} if spec.name == "direction-add" else set())
    unknown = sorted(set(p) - allowed)
    if unknown:
        raise UserError(f"edit {text!r}: unknown parameter {unknown[0]!r} ({spec.name} takes {', '.join(sorted(allowed))})")
    if "direction" not in p:
        raise UserError(f"edit {text!r}: parameter 'direction' is required (a directory made by `blockcert direction`)",
                        f"e.g. {spec.name}:layer=10,direction=refusal-dir")
    if ("layer" in p) == ("layers" in p):
        raise UserError(f"edit {text!r}: give exactly one of layer=<block> and layers=all")
    layer: int | None = None
    if "layers" in p:
        if p["layers"] != "all" or spec.name != "direction-ablate":
            raise UserError(f"edit {text!r}: layers= takes only 'all', and only for direction-ablate", "or give layer=<block>")
    elif not p["layer"].isdigit():
        raise UserError(f"edit {text!r}: parameter 'layer' must be a block index (0, 1, ...), got {p['layer']!r}")
    else:
        layer = int(p["layer"])
    alpha = None
    if spec.name == "direction-add":
        if "alpha" not in p:
            raise UserError(f"edit {text!r}: parameter 'alpha' is required (e.g. direction-add:layer=10,alpha=4,direction=D)")
        try:
            alpha = float(p["alpha"])
        except ValueError:
            raise UserError(f"edit {text!r}: parameter 'alpha' must be a number, got {p['alpha']!r}") from None
        if not math.isfinite(alpha):
            raise UserError(f"edit {text!r}: parameter 'alpha' must be finite")
    form = p.get("form", "hook")
    if form not in FORMS or (form == "weights" and spec.name != "direction-ablate"):
        raise UserError(f"edit {text!r}: form must be hook or weights (weights: direction-ablate only), got {form!r}")
    return DirectionSpec(spec.name, layer, p["direction"], alpha, form)


def _direction(edit: DirectionSpec, d_model: int) -> Any:
    from blockcert.edit.direction import load_direction

    return load_direction(Path(edit.direction), d_model)


def _project_out(w: np.ndarray, r: np.ndarray, axis: int) -> np.ndarray:
    """``w`` with the component along ``r`` removed on ``axis`` (the output axis), computed in float64."""
    w64, r64 = w.astype(np.float64), r.astype(np.float64)
    if w.ndim == 1:
        return (w64 - np.dot(w64, r64) * r64).astype(w.dtype)
    if axis == 1:  # [d_in, d_out]
        return (w64 - np.outer(w64 @ r64, r64)).astype(w.dtype)
    return (w64 - np.outer(r64, r64 @ w64)).astype(w.dtype)  # [d_out, d_in]


# ---------------------------------------------------------------------------------------------------
# The IR form
# ---------------------------------------------------------------------------------------------------


def edit_ir(ir: Any, edit: DirectionSpec) -> Any:
    if edit.layer is not None and ir.index != edit.layer:
        raise UserError(f"edit {edit} targets block {edit.layer}, but this IR is block {ir.index}")
    if ir.post_attn_norm is not None or ir.post_mlp_norm is not None:
        raise UserError(f"edit {edit}: {ir.arch} block {ir.index} normalises its sublayer outputs before the residual add, so "
                        "its writing weights are not the last map before the stream; directional edits are not defined here")
    r = _direction(edit, ir.d_model).vector
    if edit.kind == "direction-ablate":
        def ortho(lin: Any) -> Any:
            return attrs.evolve(lin, weight=_project_out(lin.weight, r, 1),
                                bias=None if lin.bias is None else _project_out(lin.bias, r, 0))

        attn = attrs.evolve(ir.attn, o=ortho(ir.attn.o))
        mlp = attrs.evolve(ir.mlp, down=ortho(ir.mlp.down))
    else:
        down = ir.mlp.down
        base = np.zeros(down.d_out, dtype=down.weight.dtype) if down.bias is None else down.bias
        bias = (base.astype(np.float64) + edit.alpha * r.astype(np.float64)).astype(base.dtype)
        attn, mlp = ir.attn, attrs.evolve(ir.mlp, down=attrs.evolve(down, bias=bias))
    return attrs.evolve(ir, attn=attn, mlp=mlp, source={**ir.source, "edit": str(edit)})


# ---------------------------------------------------------------------------------------------------
# The live model: hooks or orthogonalised weights
# ---------------------------------------------------------------------------------------------------


def _child(module: Any, names: tuple[str, ...], what: str, arch: str, index: int) -> Any:
    import torch

    for name in names:
        found = getattr(module, name, None)
        if isinstance(found, torch.nn.Module):
            return found
    raise UserError(f"{arch} block {index}: no {what} module (looked for {', '.join(names)})",
                    "directional edits support the pre-norm decoders (Llama, Qwen, Mistral, GPT-2, GPT-NeoX, Phi)")


def _replace_first(output: Any, fn: Any) -> Any:
    if isinstance(output, tuple):
        return (fn(output[0]), *output[1:])
    return fn(output)


class DirectionEdit:
    """A directional edit of a live model; ``with handle: ...`` or ``handle.apply()`` / ``handle.remove()``.

    ``block`` is the edited block (block 0 for ``layers=all``) and ``blocks`` every block it changes; ``direction``
    is the loaded artifact."""

    def __init__(self, loaded: Any, edit: DirectionSpec) -> None:
        native = loaded.native
        n = native.n_blocks
        if edit.layer is not None and not 0 <= edit.layer < n:
            raise UserError(f"edit {edit}: block {edit.layer} does not exist (the model has blocks 0-{n - 1})")
        layout = getattr(native, "layout", None)
        if layout is not None and (layout.post_attn_norm or layout.post_mlp_norm):
            raise UserError(f"edit {edit}: {native.arch} normalises its sublayer outputs before the residual add, so what a "
                            "block writes is not its output projection's; directional edits are not defined for it")
        self.loaded, self.spec = loaded, edit
        self.direction = _direction(edit, native.d_model)
        self.blocks = tuple(range(n)) if edit.layer is None else (edit.layer,)
        self.block = self.blocks[0]
        self._undo: list[Any] = []
        import torch

        self._r = torch.from_numpy(self.direction.vector.astype(np.float32))

    def _r_like(self, t: Any) -> Any:
        return self._r.to(device=t.device, dtype=t.dtype)

    def _project(self, y: Any) -> Any:
        r = self._r_like(y)
        return y - (y @ r)[..., None] * r

    def _write_modules(self, index: int) -> tuple[Any, Any]:
        native = self.loaded.native
        block = native.blocks[index]
        return _child(block, ATTN_NAMES, "attention", native.arch, index), native.mlp_module(index)

    def apply(self) -> DirectionEdit:
        if self._undo:
            return self
        try:
            if self.spec.form == "weights":
                self._apply_weights()
            else:
                self._apply_hooks()
        except BaseException:
            self.remove()
            raise
        return self

    def _apply_hooks(self) -> None:
        native = self.loaded.native
        if self.spec.kind == "direction-add":
            shift = self.spec.alpha

            def add(module: Any, inputs: Any, output: Any) -> Any:
                return _replace_first(output, lambda y: y + shift * self._r_like(y))

            self._undo.append(native.blocks[self.block].register_forward_hook(add))
            return
        for index in self.blocks:
            for module in self._write_modules(index):
                self._undo.append(module.register_forward_hook(lambda m, i, out: _replace_first(out, self._project)))
        if self.spec.layer is None:  # layers=all: the embedding's output, i.e. block 0's input x^(0)
            def pre(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if args:
                    return (self._project(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": self._project(kwargs["hidden_states"])}

            self._undo.append(native.blocks[0].register_forward_pre_hook(pre, with_kwargs=True))

    def _apply_weights(self) -> None:
        import torch

        native, model = self.loaded.native, self.loaded.model
        r64 = torch.from_numpy(self.direction.vector.astype(np.float64))

        def ortho(param: Any, out_axis: int) -> None:
            old = param.data.clone()
            self._undo.append(_Restore(param, old))
            w = old.double()
            r = r64.to(w.device)
            if w.ndim == 1:
                new = w - (w @ r) * r
            elif out_axis == 0:  # torch.nn.Linear: [d_out, d_in]
                new = w - torch.outer(r, r @ w)
            else:  # GPT-2's Conv1D, and embeddings: [*, d_out]
                new = w - torch.outer(w @ r, r)
            param.data.copy_(new.to(old.dtype))

        for index in self.blocks:
            attn, mlp = self._write_modules(index)
            for owner, names in ((attn, ATTN_OUT), (mlp, MLP_OUT)):
                lin = _child(owner, names, "output projection", native.arch, index)
                out_axis = 1 if type(lin).__name__ == "Conv1D" else 0
                ortho(lin.weight, out_axis)
                if getattr(lin, "bias", None) is not None:
                    ortho(lin.bias, 0)
        if self.spec.layer is None:
            embedding = model.get_input_embeddings()
            others = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Embedding) and m is not embedding]
            if others:
                raise UserError(f"edit {self.spec}: {native.arch} has other embeddings ({', '.join(others)}) that would need "
                                "orthogonalising too", "use form=hook for layers=all on this architecture")
            head = model.get_output_embeddings()
            if head is not None and head.weight is embedding.weight:  # tied: keep the LM head as it was
                self._undo.append(_Untie(head, head.weight))
                head.weight = torch.nn.Parameter(embedding.weight.data.clone(), requires_grad=False)
            ortho(embedding.weight, 1)

    def remove(self) -> None:
        while self._undo:
            self._undo.pop().remove()

    def __enter__(self) -> DirectionEdit:
        return self.apply()

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def __str__(self) -> str:
        return str(self.spec)


@attrs.define
class _Restore:
    param: Any
    old: Any

    def remove(self) -> None:
        self.param.data.copy_(self.old)


@attrs.define
class _Untie:
    head: Any
    weight: Any

    def remove(self) -> None:
        self.head.weight = self.weight

