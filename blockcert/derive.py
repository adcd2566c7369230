"""Derived blocks: a surrogate (``--surrogate lowrank:r=64``) or an ablation (``--ablate invert-mask``) of the
extracted IR, certified by the same pipeline as the extraction itself.

The run keeps both IRs: ``block_<idx>/base_ir.*`` is the extraction (the block copied into explicit
tensors) and ``block_<idx>/ir.*`` is what was derived from it and is replayed, measured and certified.
The certificate's ``predicate.surrogate`` records the kind, the canonical spec (every parameter, defaults
filled), the base IR's tensor digest and the plugin's own notes (energy kept, quantisation error, ...), so a
verifier can re-derive the certified IR from the base IR and compare.

Plugins implement ``blockcert_surrogate`` / ``blockcert_perturb`` (docs/plugins.md). A derived IR should
carry ``source["derivation"]`` = its canonical spec and ``source["derivation.<note>"]`` entries; if it does
not, the spec as given is used and no notes are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from blockcert.artifacts.layout import BASE_IR
from blockcert.errors import UserError
from blockcert.ir import BlockIR
from blockcert.spec import Spec, parse_spec

KINDS = ("surrogate", "ablation")
BASE_STEM = BASE_IR  # the extraction a derivation starts from, kept beside it
DERIVATION_FIELDS = {"kind", "spec", "requested", "base_ir", "base_ir_tensors_sha256", "notes"}


@attrs.frozen
class Derivation:
    """What to derive from each extracted block: ``kind`` is ``surrogate`` or ``ablation``."""

    kind: str
    text: str

    @property
    def spec(self) -> Spec:
        return parse_spec(self.text, "--surrogate" if self.kind == "surrogate" else "--ablate")

    def manifest(self) -> dict[str, str]:
        return {"kind": self.kind, "spec": self.text}


def from_options(surrogate: str | None, ablate: str | None) -> Derivation | None:
    """The derivation asked for by ``--surrogate`` / ``--ablate`` (at most one), validated."""
    if surrogate and ablate:
        raise UserError("--surrogate and --ablate are exclusive: a run certifies one kind of block",
                        "make one run per surrogate or ablation, each with its own --out")
    if not (surrogate or ablate):
        return None
    d = Derivation("surrogate", surrogate) if surrogate else Derivation("ablation", ablate)  # type: ignore[arg-type]
    d.spec  # noqa: B018  (parse now: a malformed spec fails before the model loads)
    return d


def apply(derivation: Derivation, base: BlockIR, inputs: Sequence[np.ndarray] | None = None) -> BlockIR:
    """The derived IR, through the plugin hooks (``inputs``: the block's traced inputs, for fitted surrogates)."""
    from blockcert.plugins import get_plugins

    plugins = get_plugins()
    try:
        if derivation.kind == "surrogate":
            return plugins.surrogate(base, derivation.spec, traces=inputs)
        return plugins.perturb(base, derivation.spec)
    except UserError as exc:
        if not exc.message.startswith("unknown"):
            raise
        try:
            import blockcert_surrogates as builtin

            known = builtin.SURROGATES if derivation.kind == "surrogate" else builtin.ABLATIONS
        except (ImportError, AttributeError):
            raise exc from None
        flag = "--surrogate" if derivation.kind == "surrogate" else "--ablate"
        raise UserError(f"{flag} {derivation.text!r}: {exc.message}", f"built-in: {', '.join(known)}; plugins may add more "
                        "(`blockcert plugins`)") from None


def canonical(derivation: Derivation, derived: BlockIR) -> str:
    return derived.source.get("derivation") or str(derivation.spec)


def notes(derived: BlockIR) -> dict[str, str]:
    return {k.removeprefix("derivation."): v for k, v in sorted(derived.source.items()) if k.startswith("derivation.")}


def predicate(derivation: Derivation, derived: BlockIR, block_dirname: str, base_tensors_sha256: str) -> dict[str, Any]:
    """``predicate.surrogate`` of a derived block's certificate."""
    return {
        "kind": derivation.kind,
        "spec": canonical(derivation, derived),
        "requested": derivation.text,
        "base_ir": f"{block_dirname}/{BASE_STEM}.json",
        "base_ir_tensors_sha256": base_tensors_sha256,
        "notes": notes(derived),
    }


def rederive(kind: str, spec_text: str, base: BlockIR) -> BlockIR:
    """What a verifier computes: the derivation re-applied to the base IR with the canonical spec."""
    if kind not in KINDS:
        raise UserError(f"unknown derivation kind {kind!r} (known: {', '.join(KINDS)})")
    return apply(Derivation(kind, spec_text), base)


def ir_difference(a: BlockIR, b: BlockIR) -> tuple[bool, float, str]:
    """(same structure, max |Δ| relative to each tensor's max |value|, worst tensor) between two IRs."""
    from blockcert.ir import to_dict

    meta_a, ta = to_dict(a)
    meta_b, tb = to_dict(b)
    # the plugin's notes (energy kept, ...) are floats printed as text: compare the tensors, not those digits
    src_a, src_b = meta_a.pop("source", {}), meta_b.pop("source", {})
    if meta_a != meta_b or sorted(ta) != sorted(tb) or sorted(src_a) != sorted(src_b) or src_a.get("derivation") != src_b.get("derivation"):
        return False, float("inf"), "structure"
    worst, where = 0.0, ""
    for name in sorted(ta):
        x, y = np.asarray(ta[name]), np.asarray(tb[name])
        if x.shape != y.shape or x.dtype != y.dtype:
            return False, float("inf"), name
        if x.dtype == np.bool_:
            if not np.array_equal(x, y):
                return True, float("inf"), name
            continue
        scale = max(float(np.max(np.abs(y))) if y.size else 0.0, 1e-30)
        gap = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))) / scale if x.size else 0.0
        if gap > worst:
            worst, where = gap, name
    return True, worst, where
