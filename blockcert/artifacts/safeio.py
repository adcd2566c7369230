"""Reading untrusted artifacts: paths that cannot escape, strict JSON, strictly validated safetensors.

Everything here assumes the input was written by someone trying to fool the verifier. Each problem is
an :class:`ArtifactError` whose message names the artifact and what is wrong; nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

MAX_JSON_BYTES = 64 << 20
MAX_TENSOR_FILE_BYTES = 64 << 30
MAX_SAFETENSORS_HEADER = 16 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# safetensors dtype code -> numpy dtype (little-endian). BF16 has no numpy dtype: kept as raw uint16.
SAFETENSORS_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"), "U16": np.dtype("<u2"), "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "BF16": np.dtype("<u2"),
}


class ArtifactError(Exception):
    """An artifact that is missing, unsafe, malformed or inconsistent; the message names it."""


def is_sha256_hex(value: Any) -> bool:
    return isinstance(value, str) and bool(_HEX64.match(value))


def check_relpath(name: Any) -> PurePosixPath:
    """A path inside a certificate: relative, POSIX, normalised, no '..', no empty or '.' parts."""
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"artifact path {name!r} is not a non-empty string")
    if "\\" in name or "\x00" in name:
        raise ArtifactError(f"artifact path {name!r} contains a backslash or NUL")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/"):
        raise ArtifactError(f"artifact path {name!r} is absolute; paths must be relative to the run directory")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise ArtifactError(f"artifact path {name!r} contains '..' or '.' or an empty part")
    return p


def resolve_inside(root: Path, name: str) -> Path:
    """``root/name`` after checking that neither the path nor any symlink along it leaves ``root``."""
    rel = check_relpath(name)
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root_real / rel))
    if target != root_real and root_real not in target.parents:
        raise ArtifactError(f"artifact {name!r} resolves to {target}, outside the run directory {root_real}")
    return target


def regular_file(root: Path, name: str, max_bytes: int) -> tuple[Path, os.stat_result]:
    """(path, stat) of a regular file inside ``root`` (no FIFOs, devices, directories) of at most ``max_bytes``."""
    path = resolve_inside(root, name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ArtifactError(f"artifact {name!r} is missing") from None
    except OSError as exc:
        raise ArtifactError(f"artifact {name!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"artifact {name!r} is not a regular file")
    if st.st_size > max_bytes:
        raise ArtifactError(f"artifact {name!r} is {st.st_size} bytes, over the limit of {max_bytes}")
    return path, st


def read_artifact(root: Path, name: str, max_bytes: int) -> bytes:
    """The bytes of a regular file inside ``root`` (no FIFOs, devices, directories; bounded size)."""
    path, st = regular_file(root, name, max_bytes)
    with open(path, "rb") as fh:
        data = fh.read(min(max_bytes, st.st_size) + 1)
    if len(data) != st.st_size:
        raise ArtifactError(f"artifact {name!r} changed size while being read")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} overflows")
    return value


def strict_json(data: bytes, what: str) -> Any:
    """Parse JSON rejecting duplicate keys, NaN/Infinity, overflowing numbers and invalid UTF-8."""
    try:
        text = data.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactError(f"{what}: invalid JSON ({exc})") from None


def tensor_nbytes(shape: list[int], dtype: str, limit: int, what: str, name: str) -> int:
    """Bytes a tensor of ``shape`` needs, in Python integers (a shape like [2^64] cannot overflow), refused
    as soon as it exceeds ``limit``."""
    n = SAFETENSORS_DTYPES[dtype].itemsize
    for s in shape:
        n *= s
        if n > limit:
            raise ArtifactError(f"{what}: tensor {name!r} of shape {shape} needs more than the {limit} bytes the file holds")
    return n


def safetensors_size(fh: Any, size: int, what: str) -> int:
    """Read only the header of an open safetensors file and return the file size it declares
    (8 + header + the tensors' bytes), so a file of the wrong size is refused before its data is read."""
    head = fh.read(8)
    if len(head) < 8:
        raise ArtifactError(f"{what}: truncated safetensors file ({size} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_SAFETENSORS_HEADER or n > size - 8:
        raise ArtifactError(f"{what}: safetensors header length {n} is oversized for a {size}-byte file")
    header = strict_json(fh.read(n), f"{what} header")
    if not isinstance(header, dict):
        raise ArtifactError(f"{what}: safetensors header is not an object")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ArtifactError(f"{what}: tensor {name!r} has invalid data_offsets {offsets!r}")
        end = max(end, offsets[1])
    return 8 + n + end


def read_hashed(root: Path, name: str, max_bytes: int, expected_sha256: str | None = None) -> tuple[bytes, str]:
    """(bytes, sha256) of an untrusted artifact in bounded work and memory before it is trusted.

    A safetensors file's size must be what its header declares (read first). With ``expected_sha256`` the
    file is hashed in 1 MiB chunks and only read into memory when the digest matches (a 3 GB sparse file
    with a wrong digest costs one streamed pass, not 3 GB of memory). The bytes kept are re-hashed, so a
    file rewritten between the two reads is caught."""
    path, st = regular_file(root, name, max_bytes)
    import hashlib

    with open(path, "rb") as fh:
        if name.endswith(".safetensors"):
            declared = safetensors_size(fh, st.st_size, name)
            if declared != st.st_size:
                raise ArtifactError(f"{name}: tensors cover {declared} bytes but the file has {st.st_size} (truncated or extended)")
            fh.seek(0)
        if expected_sha256 is not None:
            h = hashlib.sha256()
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
            if h.hexdigest() != expected_sha256:
                return b"", h.hexdigest()
            fh.seek(0)
        data = fh.read(st.st_size + 1)
    if len(data) != st.st_size:
        raise ArtifactError(f"artifact {name!r} changed size while being read")
    return data, hashlib.sha256(data).hexdigest()


def nonfinite(array: np.ndarray, dtype: str) -> int:
    """How many entries of a float tensor are NaN or infinite (BF16 arrives as raw uint16 bits)."""
    if dtype == "BF16":
        return int(np.count_nonzero((array & 0x7F80) == 0x7F80))
    if array.dtype.kind == "f":
        return int(array.size - np.count_nonzero(np.isfinite(array)))
    return 0


def read_safetensors(data: bytes, what: str) -> dict[str, np.ndarray]:
    """The tensors of a safetensors blob, parsed strictly (see :func:`read_safetensors_typed`)."""
    return read_safetensors_typed(data, what)[0]


def read_safetensors_typed(data: bytes, what: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, their safetensors dtype codes) of a blob parsed strictly: bounded header, known dtypes,
    tensors tiling the data exactly (no overlaps, no holes, nothing trailing), shapes matching byte counts,
    no duplicate names."""
    if len(data) < 8:
        raise ArtifactError(f"{what}: truncated safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_SAFETENSORS_HEADER or n > len(data) - 8:
        raise ArtifactError(f"{what}: safetensors header length {n} is oversized for a {len(data)}-byte file")
    header = strict_json(data[8 : 8 + n], f"{what} header")
    if not isinstance(header, dict):
        raise ArtifactError(f"{what}: safetensors header is not an object")
    body = memoryview(data)[8 + n :]
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise ArtifactError(f"{what}: __metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ArtifactError(f"{what}: tensor {name!r} has a malformed header entry")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise ArtifactError(f"{what}: tensor {name!r} has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise ArtifactError(f"{what}: tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise ArtifactError(f"{what}: tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        nbytes = tensor_nbytes(shape, dtype, len(body), what, name)
        if not 0 <= begin <= end or end - begin != nbytes:
            raise ArtifactError(f"{what}: tensor {name!r} spans bytes {begin}-{end} but shape {shape} of {dtype} needs {nbytes}")
        entries.append((begin, end, name, dtype, shape))
    entries.sort()
    cursor = 0
    for begin, end, name, _, _ in entries:
        if begin != cursor:
            kind = "overlaps the previous tensor" if begin < cursor else f"leaves a hole of {begin - cursor} bytes before it"
            raise ArtifactError(f"{what}: tensor {name!r} {kind}")
        cursor = end
    if cursor != len(body):
        raise ArtifactError(f"{what}: tensors cover {cursor} bytes but the data section has {len(body)} (truncated or extended)")
    out, codes = {}, {}
    for begin, end, name, dtype, shape in entries:
        out[name] = np.frombuffer(body[begin:end], dtype=SAFETENSORS_DTYPES[dtype]).reshape(shape)
        codes[name] = dtype
    return out, codes


def read_npz(data: bytes, what: str) -> dict[str, np.ndarray]:
    """Arrays from an ``.npz`` (paper-compatible import) without ever unpickling: object arrays are refused."""
    import io
    import zipfile

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            out = {name: archive[name] for name in archive.files}
    except ValueError as exc:  # numpy refuses object arrays when allow_pickle=False
        raise ArtifactError(f"{what}: refused ({exc}); .npz imports may hold plain numeric arrays only") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArtifactError(f"{what}: not a valid .npz archive ({exc})") from None
    for name, value in out.items():
        # numpy hands back members that are not .npy arrays (e.g. a raw pickle) as bytes: refuse them too
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            kind = type(value).__name__ if not isinstance(value, np.ndarray) else f"dtype {value.dtype}"
            raise ArtifactError(f"{what}: member {name!r} refused ({kind}); .npz imports may hold plain numeric arrays only")
    return out
