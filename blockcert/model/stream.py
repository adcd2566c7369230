"""Streaming a safetensors checkpoint one block at a time (``--stream``): models larger than RAM.

:func:`open_streamed` builds the Hugging Face model from its config with every parameter on the meta
device (no memory; buffers such as RoPE's ``inv_freq`` are computed for real, as ``from_pretrained``
computes them), so the real HF module tree and the real HF code are there, but no weights. The weights
stay in the checkpoint's safetensors shards and are brought in per *unit*: one residual block, or one of
the parameter-holding modules outside the blocks (embedding, final norm, LM head). A unit is installed
when it is used (a block through ``native.blocks[k]`` or its forward, the others through their forward),
read from the memory-mapped shard and copied out in the run's dtype, and it is given back (its
parameters return to the meta device) when a unit of another kind or another block is installed: the
embeddings, the blocks and the output side (final norm and head) are never resident together. After
block k is read, block k+1 is read in a background thread.

Memory: at most one block resident and one being prefetched, or the embeddings, or the final norm and
LM head — never the whole model (and glibc is asked to give freed memory back; see ``_pin_mmap_threshold``). The arithmetic is the HF code's own on the same weights in the same dtype, so every
number (and so every certificate) equals the one of the in-memory model; :meth:`StreamedModel.state_dict`
yields the weights tensor by tensor, in the order and dtype of the in-memory ``state_dict()``, so the
weights digest is the same too.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import torch

from blockcert.errors import UserError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class Checkpoint:
    """The tensors of a safetensors checkpoint directory by name: ``model.safetensors.index.json`` (its
    ``weight_map``, name -> shard) or a single ``model.safetensors``. Every read opens the shard
    memory-mapped, copies the tensors out and closes it, so no mapping outlives a read."""

    def __init__(self, path: Path) -> None:
        from safetensors import safe_open

        self.path = path
        index = path / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"{index} is not a safetensors index (no weight_map): {exc}") from exc
            self.files = {name: path / shard for name, shard in weight_map.items()}
        elif (path / SINGLE_FILE).is_file():
            with safe_open(path / SINGLE_FILE, framework="pt") as f:
                self.files = {name: path / SINGLE_FILE for name in f.keys()}
        else:
            raise UserError(f"--stream needs safetensors weights: {path} has neither {INDEX_FILE} nor {SINGLE_FILE}",
                            "convert the checkpoint with save_pretrained(..., safe_serialization=True), or run without --stream")
        missing = sorted({str(f.name) for f in self.files.values() if not f.is_file()})
        if missing:
            raise UserError(f"{path}: shard(s) {', '.join(missing)} named by {INDEX_FILE} are missing")

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def read(self, names: Mapping[str, str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """{key: checkpoint name} -> {key: an owned copy of that tensor}; floating tensors in ``dtype``."""
        from safetensors import safe_open

        by_file: dict[Path, list[tuple[str, str]]] = {}
        for key, name in names.items():
            by_file.setdefault(self.files[name], []).append((key, name))
        out = {}
        for file, items in by_file.items():
            with safe_open(file, framework="pt") as f:
                for key, name in items:
                    t = f.get_tensor(name)  # a view of the mapped file
                    out[key] = t.to(dtype, copy=True) if t.is_floating_point() else t.clone()
        return out

    def view(self, name: str) -> torch.Tensor:
        """One tensor as stored, still backed by the mapped file (freed with the tensor)."""
        from safetensors import safe_open

        with safe_open(self.files[name], framework="pt") as f:
            return f.get_tensor(name)


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Every parameter registered inside goes to the meta device; buffers stay real (computed on CPU)."""
    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


@attrs.define(eq=False)
class _Unit:
    """Modules whose parameters come and go together: one block, or one module outside the blocks."""

    name: str
    block: int | None  # the block index, None for a module outside the blocks
    side: str  # "block"; "input" (registered before the blocks: embeddings) or "output" (after: final norm, head)
    params: list[tuple[torch.nn.Module, str, str]]  # (owner module, attribute, checkpoint name)
    meta: list[torch.nn.Parameter]  # the meta parameters to put back on eviction
    resident: bool = False


class _StreamedBlocks(torch.nn.ModuleList):
    """The model's block list: indexing a block installs its weights (so ``to_ir`` sees real tensors)."""

    _blockcert_stream: StreamedModel

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, slice):  # e.g. HF's own forward: a plain list; each block installs itself on call
            return torch.nn.ModuleList(list(self._modules.values())[idx])
        item = super().__getitem__(idx)
        self._blockcert_stream.install(self._blockcert_stream.block_units[idx % len(self)])
        return item


class StreamedModel:
    """An HF model on the meta device whose units are installed from a :class:`Checkpoint` on use."""

    def __init__(self, model: torch.nn.Module, checkpoint: Checkpoint, dtype: torch.dtype) -> None:
        self.model, self.checkpoint, self.dtype = model, checkpoint, dtype
        self.block_units: list[_Unit] = []
        self.other_units: list[_Unit] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blockcert-prefetch")
        self._pending: tuple[_Unit, Future[dict[str, torch.Tensor]]] | None = None
        self.reads = 0  # units read from the checkpoint (prefetched ones included): for tests and benchmarks
        self._sources, self._missing = self._checkpoint_names()
        self._load_buffers()

    # -- setup ---------------------------------------------------------------------------------------

    def _checkpoint_names(self, aliases: dict[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
        """State-dict parameter name -> the checkpoint tensor holding it (tied weights share one), and the names
        found nowhere. ``aliases``: parameter name -> another name a checkpoint may store it under (an
        architecture adapter's ``checkpoint_aliases``)."""
        aliases = aliases or {}
        groups: dict[int, list[str]] = {}
        missing: list[str] = []
        for name, p in self.model.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(name)
        prefix = f"{getattr(self.model, 'base_model_prefix', '')}."
        sources = {}
        for names in groups.values():
            candidates = [n for n in names if n in self.checkpoint]
            candidates += [n.removeprefix(prefix) for n in names if n.startswith(prefix) and n.removeprefix(prefix) in self.checkpoint]
            candidates += [aliases[n] for n in names if aliases.get(n) in self.checkpoint]
            if not candidates:
                missing.append(names[0])
                continue
            for n in names:
                sources[n] = candidates[0]
        return sources, missing

    def _load_buffers(self) -> None:
        """Persistent buffers the checkpoint stores (rare: most are computed from the config)."""
        state = set(self.model.state_dict())
        for name, buf in list(self.model.named_buffers()):
            if name in state and name in self.checkpoint:
                module, _, attr = name.rpartition(".")
                owner = self.model.get_submodule(module)
                owner._buffers[attr] = self.checkpoint.read({name: name}, buf.dtype)[name]

    def attach(self, blocks: torch.nn.ModuleList, aliases: dict[str, str] | None = None, arch: str = "") -> None:
        """Split the model into units around ``blocks`` (the architecture adapter's block list). ``aliases``: the
        adapter's ``checkpoint_aliases``, for parameters a checkpoint stores under another name."""
        if self._missing:
            self._sources, self._missing = self._checkpoint_names(aliases)
        if self._missing:
            name = self._missing[0]
            raise UserError(f"{self.checkpoint.path}: no checkpoint tensor holds the model's parameter {name} "
                            f"({len(self._missing)} parameter(s) unmatched; the {arch or 'architecture'} adapter declares "
                            f"aliases for {sorted(aliases or {}) or 'none'})",
                            "if the checkpoint stores it under another name (e.g. GPT-NeoX's embed_out.weight for lm_head.weight), "
                            "declare it in the adapter's NativeModel.checkpoint_aliases (docs/plugins.md)")
        names = {id(m): n for n, m in self.model.named_modules()}
        if id(blocks) not in names or not isinstance(blocks, torch.nn.ModuleList):
            raise UserError("--stream: the architecture's blocks are not a ModuleList of the model")
        prefix = names[id(blocks)]
        for k, block in enumerate(blocks):
            self.block_units.append(self._unit(f"{prefix}.{k}", block, k, "block"))
        side = "input"  # HF registers the embeddings before the blocks and the final norm and head after them
        for name, module in self.model.named_modules():
            inside = name == prefix or name.startswith(f"{prefix}.")
            if inside:
                side = "output"
            elif any(p is not None for p in module._parameters.values()):
                self.other_units.append(self._unit(name, module, None, side, recurse=False))
        blocks.__class__ = _StreamedBlocks
        blocks._blockcert_stream = self
        for unit, module in [*zip(self.block_units, blocks), *((u, self.model.get_submodule(u.name)) for u in self.other_units)]:
            module.register_forward_pre_hook(lambda _m, _args, unit=unit: self.install(unit))

    def _unit(self, name: str, module: torch.nn.Module, block: int | None, side: str, recurse: bool = True) -> _Unit:
        params, meta = [], []
        owners = module.named_modules(prefix=name) if recurse else [(name, module)]
        for owner_name, owner in owners:
            for attr, p in owner._parameters.items():
                if p is not None:
                    params.append((owner, attr, self._sources[f"{owner_name}.{attr}"]))
                    meta.append(p)
        return _Unit(name, block, side, params, meta)

    # -- residency -----------------------------------------------------------------------------------

    def _read(self, unit: _Unit) -> dict[str, torch.Tensor]:
        self.reads += 1
        return self.checkpoint.read({str(i): src for i, (_, _, src) in enumerate(unit.params)}, self.dtype)

    def install(self, unit: _Unit) -> None:
        """Make ``unit``'s parameters real; give back what may not stay beside it; prefetch the next block."""
        with self._lock:
            if unit.resident:
                return
            tensors = None
            if self._pending is not None:
                pending, future = self._pending
                self._pending = None
                if pending is unit:
                    tensors = future.result()
            if tensors is None:
                tensors = self._read(unit)
            evicted = False
            for other in (*self.block_units, *self.other_units):
                # one block at a time, or the embeddings, or the final norm and head (which run together)
                if other.resident and (unit.side == "block" or other.side != unit.side):
                    self._evict(other)
                    evicted = True
            if evicted:
                _trim_heap()
            for i, (owner, attr, _) in enumerate(unit.params):
                owner._parameters[attr] = torch.nn.Parameter(tensors[str(i)], requires_grad=False)
            unit.resident = True
            nxt = None if unit.block is None or unit.block + 1 >= len(self.block_units) else self.block_units[unit.block + 1]
            if nxt is not None and not nxt.resident:
                self._pending = (nxt, self._pool.submit(self._read, nxt))

    def _evict(self, unit: _Unit) -> None:
        for (owner, attr, _), meta in zip(unit.params, unit.meta):
            owner._parameters[attr] = meta
        unit.resident = False

    # -- the weights digest --------------------------------------------------------------------------

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        """The in-memory model's ``state_dict()``, read lazily one tensor at a time (for the digest)."""
        return _LazyState(self)


class _LazyState(Mapping[str, torch.Tensor]):
    def __init__(self, streamed: StreamedModel) -> None:
        self.streamed = streamed
        self.meta = streamed.model.state_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self.meta)

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, name: str) -> torch.Tensor:
        t = self.meta[name]
        if not t.is_meta:
            return t  # a buffer computed from the config
        stored = self.streamed.checkpoint.view(self.streamed._sources[name])
        return stored if stored.dtype == t.dtype else stored.to(t.dtype)


# glibc serves allocations below its mmap threshold from the heap, and the threshold rises (up to 32 MB)
# as large tensors are freed, so a block's weight matrices and activations end up in the heap, whose freed
# pages stay in the resident set. While streaming, the threshold is pinned at 1 MiB (larger tensors are
# mapped and unmapped on their own) and the heap is trimmed whenever a unit is given back. Elsewhere
# (no glibc) both are no-ops.

M_MMAP_THRESHOLD = -3  # mallopt parameter, <malloc.h>


def _glibc() -> Any:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def _pin_mmap_threshold() -> None:
    if _LIBC is not None:
        _LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 20)


def _trim_heap() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def open_streamed(path: Path, dtype: torch.dtype) -> StreamedModel:
    """The model in ``path`` (config.json + safetensors shards) on the meta device, ready to stream."""
    from transformers import AutoConfig, AutoModelForCausalLM

    checkpoint = Checkpoint(path)
    _pin_mmap_threshold()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        with meta_parameters():
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot build the model in {path} from its config: {exc}") from exc
    model.tie_weights()  # as from_pretrained does: tied parameters are one object, read from one tensor
    model = model.to(dtype).eval()  # as load_model does (this also casts buffers such as inv_freq)
    return StreamedModel(model, checkpoint, dtype)
