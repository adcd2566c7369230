"""The BlockCert IR: one explicit, arch-neutral record per residual block.

A block is ``norm1 -> attention -> [post_attn_norm] -> residual add -> norm2 -> mlp -> [post_mlp_norm] ->
residual add`` (``residual="sequential"``: GPT-2, Llama, Mistral, Qwen2/3, Gemma 2/3's sandwich norms, OLMo2's
post-norms with no pre-norm) or ``x + attn(norm1(x)) + mlp(norm2(x))`` (``residual="parallel"``: GPT-NeoX,
GPT-J, Phi). A missing ``norm1``/``norm2`` is the identity (OLMo2). Attention may normalise its queries and
keys (``q_norm``/``k_norm``, before RoPE: per head when the weight has ``head_dim`` entries, over the whole
projection when it has ``n_heads*head_dim``) and soft-cap its logits (``softcap * tanh(s / softcap)``, Gemma 2).
Every extension is optional and absent by default; an IR without them replays exactly as schema v1 did.

Every number the interpreter uses is in here: weights in ``x @ W`` layout (``[d_in, d_out]``), biases, norm
parameters, the explicit attention mask ``M`` (``mask[i, j]``: position ``i`` may attend to position ``j``), a
per-head gate, and RoPE as explicit cos/sin tables indexed by absolute position id.

Records are frozen attrs classes validated on construction, so an inconsistent IR cannot exist in memory.
Arrays are numpy (``import blockcert.ir`` never imports torch). On disk an IR is two files: ``<stem>.json``
(kinds, sizes, scalars, and the *name* of each tensor) and ``<stem>.safetensors`` (the tensors, no pickle).
The round trip is exact: same dtypes, shapes and bytes, so a replay of a reloaded IR is bit-identical.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import numpy as np
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from blockcert.artifacts.fsutil import atomic_write_text, atomic_write_with
from blockcert.errors import IRFormatError

SCHEMA_VERSION = 2

NormKind = Literal["layernorm", "rmsnorm"]
Activation = Literal["gelu_tanh", "gelu", "relu", "silu"]
RopeStyle = Literal["half", "interleaved"]
ResidualKind = Literal["sequential", "parallel"]

_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def _arrays_identical(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Bitwise identity: same dtype, same shape, same bytes (NaN == NaN, -0.0 != 0.0)."""
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _array_validator(ndim: int, kind: str) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        where = f"{type(instance).__name__}.{attribute.name}"
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{where} must be a numpy array, got {type(value).__name__}")
        if value.ndim != ndim:
            raise ValueError(f"{where} must have {ndim} dimension(s), got shape {value.shape}")
        if kind == "float" and value.dtype.type not in _FLOAT_DTYPES:
            raise ValueError(f"{where} must be float16/32/64, got {value.dtype}")
        if kind == "bool" and value.dtype != np.bool_:
            raise ValueError(f"{where} must be bool, got {value.dtype}")

    return check


def _array(ndim: int, kind: str = "float", optional: bool = False) -> Any:
    validator = _array_validator(ndim, kind)
    eq = attrs.cmp_using(eq=_arrays_identical)
    if optional:
        return attrs.field(default=None, validator=validator, eq=eq)
    return attrs.field(validator=validator, eq=eq)


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value <= 0:
        raise ValueError(f"{type(instance).__name__}.{attribute.name} must be > 0, got {value}")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@attrs.frozen
class Linear:
    """``y = x @ weight + bias``; ``weight`` is ``[d_in, d_out]``."""

    weight: np.ndarray = _array(2)
    bias: np.ndarray | None = _array(1, optional=True)

    def __attrs_post_init__(self) -> None:
        if self.bias is not None:
            _require(
                self.bias.shape == (self.weight.shape[1],),
                f"Linear.bias shape {self.bias.shape} does not match weight {self.weight.shape}",
            )

    @property
    def d_in(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.weight.shape[1])


@attrs.frozen
class Norm:
    """LayerNorm (mean-centred, optional bias) or RMSNorm over the last axis."""

    kind: NormKind = attrs.field(validator=attrs.validators.in_(("layernorm", "rmsnorm")))
    weight: np.ndarray = _array(1)
    eps: float = attrs.field(converter=float)
    bias: np.ndarray | None = _array(1, optional=True)

    def __attrs_post_init__(self) -> None:
        _require(self.eps >= 0, f"Norm.eps must be >= 0, got {self.eps}")
        if self.bias is not None:
            _require(self.bias.shape == self.weight.shape, "Norm.bias and Norm.weight differ in shape")
        _require(self.kind == "layernorm" or self.bias is None, "an rmsnorm has no bias")


@attrs.frozen
class Rope:
    """Rotary position embedding as explicit tables: row ``p`` of ``cos``/``sin`` is position id ``p``.

    The first ``rotary_dim`` features of every query/key head are rotated, the rest pass through.
    ``style="half"`` pairs feature ``i`` with ``i + rotary_dim/2`` (Llama's ``rotate_half``; the tables
    repeat each frequency in both halves); ``"interleaved"`` pairs ``2i`` with ``2i+1`` (GPT-J).
    """

    cos: np.ndarray = _array(2)
    sin: np.ndarray = _array(2)
    style: RopeStyle = attrs.field(default="half", validator=attrs.validators.in_(("half", "interleaved")))

    def __attrs_post_init__(self) -> None:
        _require(self.cos.shape == self.sin.shape, f"Rope.cos {self.cos.shape} != Rope.sin {self.sin.shape}")
        _require(self.cos.shape[1] % 2 == 0, f"Rope rotary_dim must be even, got {self.cos.shape[1]}")

    @property
    def rotary_dim(self) -> int:
        return int(self.cos.shape[1])

    @property
    def n_ctx(self) -> int:
        return int(self.cos.shape[0])


@attrs.frozen
class Attention:
    """Multi-head attention with grouped KV heads (``n_kv_heads`` divides ``n_heads``).

    Query head ``h`` reads KV head ``h // (n_heads // n_kv_heads)``. ``mask[i, j]`` is True where
    position ``i`` may attend to position ``j`` (causal plus any extra structure, e.g. a sliding window);
    ``head_gate[h]`` scales head ``h``'s output before ``o`` (1 = on, 0 = pruned).
    """

    q: Linear
    k: Linear
    v: Linear
    o: Linear
    n_heads: int = attrs.field(validator=_positive)
    n_kv_heads: int = attrs.field(validator=_positive)
    head_dim: int = attrs.field(validator=_positive)
    scale: float = attrs.field(converter=float)
    mask: np.ndarray = _array(2, "bool")
    head_gate: np.ndarray = _array(1)
    rope: Rope | None = None
    q_norm: Norm | None = None
    k_norm: Norm | None = None
    softcap: float | None = attrs.field(default=None, converter=attrs.converters.optional(float))

    def __attrs_post_init__(self) -> None:
        h, kv, hd = self.n_heads, self.n_kv_heads, self.head_dim
        for name, heads in (("q_norm", h), ("k_norm", kv)):
            n: Norm | None = getattr(self, name)
            if n is not None:
                size = n.weight.shape[0]
                _require(size in (hd, heads * hd), f"{name} has {size} weights: expected head_dim={hd} (per head) "
                         f"or {heads * hd} (the whole projection)")
        if self.softcap is not None:
            _require(self.softcap > 0 and self.softcap != float("inf"), f"softcap must be a finite number > 0, got {self.softcap}")
        _require(h % kv == 0, f"n_kv_heads={kv} must divide n_heads={h}")
        _require(self.q.d_out == h * hd, f"q projects to {self.q.d_out}, expected n_heads*head_dim={h * hd}")
        for name in ("k", "v"):
            lin: Linear = getattr(self, name)
            _require(lin.d_out == kv * hd, f"{name} projects to {lin.d_out}, expected n_kv_heads*head_dim={kv * hd}")
        _require(self.q.d_in == self.k.d_in == self.v.d_in, "q, k, v must read the same d_model")
        _require(self.o.d_in == h * hd, f"o reads {self.o.d_in}, expected n_heads*head_dim={h * hd}")
        n = self.mask.shape[0]
        _require(self.mask.shape == (n, n), f"mask must be square, got {self.mask.shape}")
        _require(self.head_gate.shape == (h,), f"head_gate shape {self.head_gate.shape}, expected ({h},)")
        if self.rope is not None:
            _require(self.rope.rotary_dim <= hd, f"rotary_dim {self.rope.rotary_dim} > head_dim {hd}")
            _require(self.rope.n_ctx == n, f"RoPE tables cover {self.rope.n_ctx} positions, mask covers {n}")


@attrs.frozen
class MLP:
    """``down(act(up(x)))``, or gated (SwiGLU etc.): ``down(act(gate(x)) * up(x))``."""

    activation: Activation = attrs.field(validator=attrs.validators.in_(("gelu_tanh", "gelu", "relu", "silu")))
    up: Linear
    down: Linear
    gate: Linear | None = None

    def __attrs_post_init__(self) -> None:
        _require(self.down.d_in == self.up.d_out, f"down reads {self.down.d_in}, up gives {self.up.d_out}")
        if self.gate is not None:
            _require(self.gate.weight.shape == self.up.weight.shape, "gate and up must have the same shape")


@attrs.frozen
class BlockIR:
    """One residual block, replayable by :mod:`blockcert.interpreter` from this record alone."""

    schema_version: int = attrs.field(validator=attrs.validators.in_((SCHEMA_VERSION,)))
    arch: str
    index: int
    d_model: int = attrs.field(validator=_positive)
    residual: ResidualKind = attrs.field(validator=attrs.validators.in_(("sequential", "parallel")))
    norm1: Norm | None  # None: the identity (no pre-attention norm, OLMo2)
    attn: Attention
    norm2: Norm | None  # None: the identity
    mlp: MLP
    source: dict[str, str] = attrs.field(factory=dict)
    post_attn_norm: Norm | None = None  # applied to the attention output before the residual add (Gemma 2/3, OLMo2)
    post_mlp_norm: Norm | None = None  # applied to the MLP output before the residual add

    def __attrs_post_init__(self) -> None:
        d = self.d_model
        if self.residual == "parallel":
            _require(self.post_attn_norm is None and self.post_mlp_norm is None, "a parallel block has no post-norms")
        norms = [(name, n.weight.shape[0]) for name in ("norm1", "norm2", "post_attn_norm", "post_mlp_norm")
                 if (n := getattr(self, name)) is not None]
        for name, size in (
            *norms,
            ("attn.q input", self.attn.q.d_in),
            ("attn.o output", self.attn.o.d_out),
            ("mlp.up input", self.mlp.up.d_in),
            ("mlp.down output", self.mlp.down.d_out),
        ):
            _require(size == d, f"{name} has size {size}, expected d_model={d}")

    @property
    def n_ctx(self) -> int:
        """Positions covered by the mask (and RoPE tables): the longest sequence this IR can replay."""
        return int(self.attn.mask.shape[0])

    @property
    def extensions(self) -> tuple[str, ...]:
        """The schema-v2 operators this block uses (empty: a block schema v1 could express)."""
        a = self.attn
        used = [("no norm1", self.norm1 is None), ("no norm2", self.norm2 is None),
                ("post_attn_norm", self.post_attn_norm is not None), ("post_mlp_norm", self.post_mlp_norm is not None),
                ("q_norm", a.q_norm is not None), ("k_norm", a.k_norm is not None), ("softcap", a.softcap is not None)]
        return tuple(name for name, on in used if on)


# ---------------------------------------------------------------------------------------------------
# Serialisation: JSON for structure and scalars, safetensors for tensors, referenced by dotted name.
# ---------------------------------------------------------------------------------------------------


def to_dict(ir: BlockIR) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Split an IR into a JSON-able dict (tensors replaced by their names) and the named tensors."""
    tensors: dict[str, np.ndarray] = {}
    meta = _walk(ir, "", tensors)
    return meta, tensors


def _walk(obj: Any, path: str, tensors: dict[str, np.ndarray]) -> Any:
    # A module-level function, not a closure: a recursive closure is a reference cycle, which would keep
    # ``tensors`` (every weight of the block) alive until the garbage collector happens to run.
    if isinstance(obj, np.ndarray):
        tensors[path] = obj
        return path
    if attrs.has(type(obj)):
        return {f.name: _walk(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name, tensors) for f in attrs.fields(type(obj))}
    if isinstance(obj, dict):
        return dict(obj)
    return obj


def _converter(tensors: dict[str, np.ndarray], used: set[str]) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)

    def tensor(name: Any, _: Any) -> np.ndarray:
        if not isinstance(name, str):
            raise TypeError(f"expected a tensor name, got {name!r}")
        if name not in tensors:
            raise ValueError(f"tensor {name!r} is referenced but not in the tensor file")
        if name in used:
            raise ValueError(f"tensor {name!r} is referenced twice")
        used.add(name)
        return tensors[name]

    conv.register_structure_hook(np.ndarray, tensor)
    return conv


def migrate_v1_to_v2(meta: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: the optional operators did not exist, so each is absent; nothing else changes (the tensors, their
    names and every replayed number are the same). A v1 record carrying a v2 field is malformed, not migrated."""
    attn = meta.get("attn")
    attn_keys = attn if isinstance(attn, dict) else {}
    extra = [k for k in ("post_attn_norm", "post_mlp_norm") if k in meta] + [f"attn.{k}" for k in ("q_norm", "k_norm", "softcap") if k in attn_keys]
    if extra:
        raise IRFormatError(f"invalid IR record: schema_version 1 has no field {', '.join(extra)} (extra keys)")
    meta = dict(meta, schema_version=2, post_attn_norm=None, post_mlp_norm=None)
    if isinstance(attn, dict):
        meta["attn"] = dict(attn, q_norm=None, k_norm=None, softcap=None)
    return meta


_MIGRATIONS = {1: migrate_v1_to_v2}
#: the versions :func:`migrate` reads (v1: before the optional QK-norm, post-norms, soft-cap and identity norms)
READABLE_VERSIONS = (*_MIGRATIONS, SCHEMA_VERSION)


def migrate(meta: dict[str, Any]) -> dict[str, Any]:
    """Bring an older IR JSON record up to :data:`SCHEMA_VERSION` (one ``migrate_vN_to_vN1`` per step)."""
    version = meta.get("schema_version")
    while version in _MIGRATIONS and version != SCHEMA_VERSION:
        meta = _MIGRATIONS[version](meta)
        version = meta["schema_version"]
    if version == SCHEMA_VERSION:
        return meta
    raise IRFormatError(
        f"unsupported IR schema_version {version!r} (this blockcert reads versions {', '.join(map(str, READABLE_VERSIONS))})",
        "upgrade blockcert, or re-extract the IR with this version",
    )


def _describe(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, (ValueError, TypeError)) and str(exc):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    from cattrs.v import format_exception

    return format_exception(exc, type_)


def from_dict(meta: dict[str, Any], tensors: dict[str, np.ndarray]) -> BlockIR:
    """Inverse of :func:`to_dict`. Every tensor must be referenced exactly once; unknown keys are errors."""
    if not isinstance(meta, dict):
        raise IRFormatError(f"IR record must be a JSON object, got {type(meta).__name__}")
    meta = migrate(meta)
    used: set[str] = set()
    source = dict(tensors)  # the converter is a reference cycle: empty this after use, so it holds no weights
    try:
        ir = _converter(source, used).structure(meta, BlockIR)
    except (ClassValidationError, ForbiddenExtraKeysError) as exc:
        details = "; ".join(cattrs.transform_error(exc, format_exception=_describe))
        raise IRFormatError(f"invalid IR record: {details}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise IRFormatError(f"invalid IR record: {exc}") from exc
    finally:
        source.clear()
    extra = sorted(set(tensors) - used)
    if extra:
        raise IRFormatError(f"tensor file holds tensors no IR field references: {', '.join(extra)}")
    return ir


def _paths(stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def save_ir(ir: BlockIR, stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.safetensors`` atomically; return both paths."""
    from safetensors.numpy import save_file

    meta, tensors = to_dict(ir)
    json_path, st_path = _paths(stem)
    # save_file writes tensor by tensor: no second copy of the whole IR in memory (a Llama-2-7B block is 0.8 GB)
    atomic_write_with(st_path, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp,
                                                     metadata={"format": "blockcert-ir"}))
    atomic_write_text(json_path, json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return json_path, st_path


def read_n_ctx(stem: str | os.PathLike[str]) -> int:
    """:attr:`BlockIR.n_ctx` of the IR at ``stem``, from its tensor file's header alone (no weights read)."""
    from safetensors import safe_open

    _, st_path = _paths(stem)
    with safe_open(st_path, framework="np") as f:
        return int(f.get_slice("attn.mask").get_shape()[0])  # the name to_dict gives BlockIR.attn.mask


def load_ir(stem: str | os.PathLike[str]) -> BlockIR:
    """Read an IR written by :func:`save_ir`; any inconsistency is an :class:`IRFormatError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    json_path, st_path = _paths(stem)
    for p in (json_path, st_path):
        if not p.is_file():
            raise IRFormatError(f"IR file not found: {p}", "pass the stem the IR was saved under (e.g. block_3/ir)")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IRFormatError(f"{json_path}: not valid JSON ({exc})") from exc
    try:
        tensors = load(st_path.read_bytes())
    except (SafetensorError, ValueError) as exc:
        raise IRFormatError(f"{st_path}: not a valid safetensors file ({exc})") from exc
    try:
        return from_dict(meta, tensors)
    except IRFormatError as exc:
        raise IRFormatError(f"{json_path}: {exc.message}", exc.hint) from exc
