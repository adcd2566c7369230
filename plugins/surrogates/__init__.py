"""Built-in surrogates and ablations: pure-numpy transforms of a block's IR (no torch, deterministic).

Surrogates (``blockcert_surrogate``; ``traces`` is ignored, nothing here is fitted):

* ``lowrank:r=R,targets=T`` (defaults ``r=64``, ``targets=attn``): each target weight becomes its
  rank-``min(r, min(shape))`` truncated SVD (float64 ``np.linalg.svd``). ``targets``: ``attn`` (q, k, v, o),
  ``mlp`` (up, gate if gated, down) or ``all``. Biases untouched.
* ``int8:targets=T`` (default ``all``): symmetric per-output-channel int8 quantisation,
  ``scale_j = max_i |W_ij| / 127`` (1 for a zero column), ``W' = clip(rint(W / scale), -127, 127) * scale``,
  stored dequantised in the weight's dtype (the IR holds float weights).
* ``prune-heads:heads=H+H...`` (required): ``head_gate[h] = 0`` for the listed query heads.
* ``minimize:heads=HEX,neurons=HEX,rank=M:R+M:R...,score=S,log=SHA`` (all required; written by
  ``blockcert minimize``, docs/minimize.md): the query heads and MLP hidden units whose bits are set in the
  hex keep-vectors are kept (bit ``i`` little-endian within each byte; cleared units zero their W_up/W_gate
  columns, bias entries and W_down row), then each matrix ``M`` (``attn.q`` ... ``mlp.down``) is truncated to
  rank ``R`` (full rank: untouched). ``score`` and ``log`` name the search's score method and the SHA-256 of its
  log; they change nothing in the IR. An all-on candidate is the base IR bit for bit.

Ablations (``blockcert_perturb``), deliberately wrong IRs that the checks must catch:

* ``drop-rope``: no rotary embedding (an error on a block without RoPE).
* ``invert-mask``: ``allowed' = NOT allowed``, the diagonal kept allowed so every softmax row stays
  finite in any replay (see :func:`~blockcert_surrogates.transforms.invert_mask`).
* ``zero-wv``: ``W_V = 0`` and ``b_V = 0``.
* ``noise-wq:sigma=S,seed=N`` (defaults ``0.01``, ``0``): ``W_Q += sigma * N(0, 1)`` drawn with
  ``np.random.default_rng(seed)`` in float64; ``sigma=0`` leaves ``W_Q`` bit-identical.

The canonical spec string is the name followed by every parameter, defaults filled in, in the order
listed above: ``lowrank:r=64,targets=attn``, ``int8:targets=all``, ``prune-heads:heads=1+4`` (heads
ascending), ``noise-wq:sigma=0.01,seed=0`` (sigma as Python's ``repr`` of the float), and bare
``drop-rope`` / ``invert-mask`` / ``zero-wv``. A derived IR keeps its original ``source`` entries and adds

* ``derivation``: the canonical spec string, so ``derive(original, derived.source["derivation"])``
  rebuilds the derived IR bit for bit (the verifier relies on this);
* ``derivation.kind``: ``surrogate`` or ``ablation``;
* what the transform measured, per matrix ``M`` (``attn.q`` ... ``mlp.down``), all strings:
  lowrank ``derivation.rank.M`` (``str(int)``) and ``derivation.energy_kept.M``
  (``repr(float)``, ``sum_{i<r} s_i^2 / sum_i s_i^2``); int8 ``derivation.max_abs_error.M`` and
  ``derivation.rel_error.M`` (``||W' - W||_F / ||W||_F``); noise-wq ``derivation.rel_error.attn.q``.

Derivations do not chain: an IR whose ``source`` already has a ``derivation`` is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import attrs

from blockcert.errors import UserError
from blockcert.hookspecs import hookimpl
from blockcert.ir import BlockIR
from blockcert.spec import Spec, parse_spec

from . import transforms as tf

_DIGITS = re.compile(r"^[0-9]+$")


def _count(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not _DIGITS.match(text) or int(text) < low:
            raise ValueError
        return int(text)

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError
        return text

    return parse


def _sigma(text: str) -> float:
    value = float(text) + 0.0  # float() raises ValueError itself; + 0.0 turns -0.0 into 0.0
    if not math.isfinite(value) or value < 0:
        raise ValueError
    return value


def _hex(text: str) -> str:
    if not re.fullmatch(r"(?:[0-9a-f]{2})+", text):
        raise ValueError
    return text


def _ranks(text: str) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for item in text.split("+"):
        key, colon, value = item.partition(":")
        if not colon or key not in tf.RANK_KEYS or key in ranks or not _DIGITS.match(value):
            raise ValueError
        ranks[key] = int(value)
    return ranks


def _show_ranks(ranks: dict[str, int]) -> str:
    return "+".join(f"{k}:{ranks[k]}" for k in tf.RANK_KEYS if k in ranks)


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ValueError
    return text


def _heads(text: str) -> tuple[int, ...]:
    parts = text.split("+")
    if not all(_DIGITS.match(p) for p in parts) or len({int(p) for p in parts}) != len(parts):
        raise ValueError
    return tuple(sorted(int(p) for p in parts))


@attrs.frozen
class _Param:
    name: str
    default: str | None  # None: required
    accepted: str  # what a value may be, for error messages
    parse: Callable[[str], Any]  # raises ValueError for a value it does not accept
    show: Callable[[Any], str] = str  # the canonical text of a parsed value


@attrs.frozen
class _Transform:
    kind: str  # "surrogate" or "ablation"
    params: tuple[_Param, ...]  # in canonical order
    apply: Callable[..., tuple[BlockIR, tf.Info]]  # apply(ir, **parsed params)


def _targets(default: str) -> _Param:
    return _Param("targets", default, "one of attn, mlp, all", _choice(*tf.TARGETS))


#: Every transform by name, its parameters in canonical order.
_TRANSFORMS: dict[str, _Transform] = {
    "lowrank": _Transform("surrogate", (_Param("r", "64", "an integer >= 1", _count(1)), _targets("attn")), tf.lowrank),
    "int8": _Transform("surrogate", (_targets("all"),), tf.int8),
    "prune-heads": _Transform(
        "surrogate",
        (_Param("heads", None, "distinct query-head indices joined by '+', e.g. heads=1+4", _heads, lambda hs: "+".join(map(str, hs))),),
        tf.prune_heads,
    ),
    "minimize": _Transform(
        "surrogate",
        (_Param("heads", None, "a hex keep-vector over the query heads", _hex),
         _Param("neurons", None, "a hex keep-vector over the MLP hidden units", _hex),
         _Param("rank", None, "MATRIX:RANK joined by '+', every matrix of the block (attn.q ... mlp.down)", _ranks, _show_ranks),
         _Param("score", None, "the score method's name", _choice("attribution")),
         _Param("log", None, "the search log's SHA-256 (64 hex digits)", _sha256)),
        tf.minimize,
    ),
    "drop-rope": _Transform("ablation", (), tf.drop_rope),
    "invert-mask": _Transform("ablation", (), tf.invert_mask),
    "zero-wv": _Transform("ablation", (), tf.zero_wv),
    "noise-wq": _Transform(
        "ablation",
        (_Param("sigma", "0.01", "a finite number >= 0", _sigma, repr), _Param("seed", "0", "an integer >= 0", _count(0))),
        tf.noise_wq,
    ),
}
SURROGATES: tuple[str, ...] = tuple(n for n, t in _TRANSFORMS.items() if t.kind == "surrogate")
ABLATIONS: tuple[str, ...] = tuple(n for n, t in _TRANSFORMS.items() if t.kind == "ablation")


def _parse(t: _Transform, spec: Spec, where: str) -> tuple[dict[str, Any], str]:
    """The spec's parameters parsed (defaults filled) and the canonical spec string."""
    known = [p.name for p in t.params]
    takes = f"{spec.name} takes {', '.join(known)}" if known else f"{spec.name} takes no parameters"
    for key in spec.params:
        if key not in known:
            raise UserError(f"{where}: unknown parameter {key!r} ({takes})")
    values: dict[str, Any] = {}
    for p in t.params:
        text = spec.params.get(p.name, p.default)
        if text is None:
            raise UserError(f"{where}: parameter {p.name!r} is required ({p.accepted})")
        try:
            values[p.name] = p.parse(text)
        except ValueError:
            raise UserError(f"{where}: parameter {p.name!r} must be {p.accepted}, got {text!r}") from None
    canonical = ",".join(f"{p.name}={p.show(values[p.name])}" for p in t.params)
    return values, spec.name + (":" + canonical if canonical else "")


def _derive(ir: BlockIR, spec: Spec, kind: str) -> BlockIR | None:
    t = _TRANSFORMS.get(spec.name)
    if t is None or t.kind != kind:
        return None
    where = f"{kind} {str(spec)!r}"
    values, canonical = _parse(t, spec, where)
    if "derivation" in ir.source:
        raise UserError(
            f"{where}: block {ir.index} is already derived ({ir.source['derivation']!r})",
            "derive from the original (extracted) IR; derivations do not chain",
        )
    try:
        derived, info = t.apply(ir, **values)
    except tf.Inapplicable as exc:
        raise UserError(f"{where}: {exc}") from None
    recorded = {f"derivation.{key}": value for key, value in info.items()}
    source = {**ir.source, "derivation": canonical, "derivation.kind": kind, **recorded}
    return attrs.evolve(derived, source=source)


def derive(ir: BlockIR, spec_text: str) -> BlockIR:
    """Apply the surrogate or ablation ``spec_text`` (e.g. ``"lowrank:r=8"``) to ``ir``, by this plugin alone."""
    spec = parse_spec(spec_text, "surrogate/ablation")
    t = _TRANSFORMS.get(spec.name)
    if t is None:
        raise UserError(
            f"unknown surrogate/ablation {spec.name!r} (surrogates: {', '.join(SURROGATES)}; ablations: {', '.join(ABLATIONS)})"
        )
    derived = _derive(ir, spec, t.kind)
    assert derived is not None  # the name is ours and of this kind
    return derived


@hookimpl(trylast=True)
def blockcert_surrogate(ir: BlockIR, spec: Spec, traces: Any) -> BlockIR | None:
    return _derive(ir, spec, "surrogate")


@hookimpl(trylast=True)
def blockcert_perturb(ir: BlockIR, spec: Spec) -> BlockIR | None:
    return _derive(ir, spec, "ablation")
