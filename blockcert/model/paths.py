"""Where a model spec's files are, without loading anything (no torch, no transformers).

A spec is a local HF directory, a ``.gguf`` file (whose dequantized copy :func:`blockcert.model.load.load_model`
caches under :func:`cache_root`), or a registered name. Never a hub download.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from blockcert.artifacts.digest import file_sha256
from blockcert.errors import UserError
from blockcert.plugins import get_plugins

#: files one of which a directory must hold for it to have a tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def cache_root() -> Path:
    env = os.environ.get("BLOCKCERT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "blockcert"


def gguf_cache_path(gguf: Path, sha256: str | None = None) -> Path:
    """Where the dequantized weights of ``gguf`` are cached (they may not be there yet)."""
    return cache_root() / "models" / f"{gguf.stem}-{(sha256 or file_sha256(gguf))[:16]}"


_NOTICED: set[str] = set()


def package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed package ``package`` (found, not imported), or None if it is not there."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _located(entry: Any) -> Path:
    """``entry.locate()``; a model that comes with terms of use says so once per process, on stderr, with their path."""
    path = entry.locate()
    if entry.terms is not None and entry.name not in _NOTICED:
        _NOTICED.add(entry.name)
        print(f"note: {entry.name}: {entry.licence}; the terms: {package_file(*entry.terms)}", file=sys.stderr)
    return path


def resolve(spec: str | os.PathLike[str] | None) -> tuple[str, Path]:
    """(display name, local path) for a model spec: None (the default), a directory, a .gguf, or a name."""
    models = get_plugins().models()
    if spec is None:
        defaults = [m for m in models.values() if m.default]
        if not defaults:
            raise UserError("no default model is registered", "pass --model")
        entry = defaults[0]
        return entry.name, _located(entry)
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        return str(path), path
    if text in models:
        entry = models[text]
        return entry.name, _located(entry)
    names = sorted({m.name for m in models.values()})
    raise UserError(
        f"model {text!r} is not a local model directory, a .gguf file, or a registered name",
        f"registered names: {', '.join(names)}; BlockCert never downloads models",
    )


def hf_directory(spec: str | os.PathLike[str] | None) -> tuple[str, Path]:
    """(display name, HF directory) of a spec whose weights are already on disk as safetensors: a GGUF
    resolves to its dequantized cache entry, which must exist (any ``blockcert`` command that loads the
    model with torch creates it once)."""
    name, path = resolve(spec)
    if path.is_file():
        target = gguf_cache_path(path)
        if not (target / "config.json").is_file():
            raise UserError(f"{path.name} has not been dequantized on this machine yet (no {target})",
                            "load it once with torch, e.g. `blockcert verify RUN --reference torch`, then verify again")
        return name, target
    return name, path
