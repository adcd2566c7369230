"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file: artifacts are meant to be shared


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then ``os.replace``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write_with(path, write)


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` fills a temp file in ``path``'s directory (e.g. a library's ``save_file``, which
    streams what it writes instead of building it in memory); then fsync and ``os.replace`` as
    :func:`atomic_write_bytes` does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, _MODE)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _fault_point()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


_writes = 0


def _fault_point() -> None:
    """Crash-safety testing: ``BLOCKCERT_FAULT_AFTER_WRITES=N`` SIGKILLs this process on its N-th
    atomic write, after the temp file is complete and before it replaces the target (the worst moment)."""
    global _writes
    limit = os.environ.get("BLOCKCERT_FAULT_AFTER_WRITES")
    if limit:
        _writes += 1
        if _writes == int(limit):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


def is_temp_name(name: str) -> bool:
    """Names of the temp files :func:`atomic_write_bytes` creates (stale ones remain after a SIGKILL)."""
    return name.startswith(".") and name.endswith(".tmp")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
