"""Digests: files, tensors (over name, dtype, shape and little-endian bytes), canonical JSON.

A tensor digest does not depend on the container (safetensors header order, metadata, zip layout):
two files holding the same named tensors have the same tensor digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import rfc8785


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def update_tensor(h: Any, name: str, dtype: str, shape: Iterable[int], data: Any) -> None:
    header = rfc8785.dumps([name, dtype, [int(s) for s in shape]])
    h.update(len(header).to_bytes(8, "little"))
    h.update(header)
    h.update(data)


def tensors_sha256(tensors: Mapping[str, np.ndarray], dtype_names: Mapping[str, str] | None = None) -> str:
    """SHA-256 over every (name, dtype, shape, C-order little-endian bytes), names sorted.

    ``dtype_names`` names the dtype of tensors numpy holds as raw bits (bfloat16 as ``uint16``), so their
    digest is the torch tensor's."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # little-endian bytes on every host
        dtype = (dtype_names or {}).get(name, a.dtype.name)
        update_tensor(h, name, dtype, a.shape, a.view(np.uint8).reshape(-1) if a.size else b"")
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 (JCS) bytes: sorted keys, no insignificant whitespace, no NaN/Infinity."""
    return rfc8785.dumps(obj)


def json_sha256(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def relpath_posix(path: Path, root: Path) -> str:
    return path.resolve().relative_to(root.resolve()).as_posix()
