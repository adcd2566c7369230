"""Block certificates: in-toto Statement v1, canonical JSON (RFC 8785), hash-tied to their artifacts.

A certificate's id is the SHA-256 of its canonical bytes. Subjects are the artifacts it speaks for,
named by POSIX paths relative to the run directory (the folder holding ``metrics.json``, ``traces/``
and ``block_<idx>/``); every subject carries the SHA-256 of its file bytes, and tensor files also the
container-independent tensor digest (``blockcert.tensors_sha256`` annotation). See docs/certificate.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from blockcert.artifacts.digest import canonical_json, file_sha256, tensors_sha256
from blockcert.artifacts.fsutil import atomic_write_bytes

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
BLOCK_PREDICATE = "https://blockcert.dev/predicate/block-certificate/v3"
CERT_SCHEMA_VERSION = 3
FULL_PREDICATE = "https://blockcert.dev/predicate/full-model-certificate/v2"
FULL_SCHEMA_VERSION = 2
TENSOR_ANNOTATION = "blockcert.tensors_sha256"


def subject(root: Path, relpath: str) -> dict[str, Any]:
    """An in-toto ResourceDescriptor for the artifact at ``root/relpath``."""
    path = root / relpath
    entry: dict[str, Any] = {"name": relpath, "digest": {"sha256": file_sha256(path)}}
    if relpath.endswith(".safetensors"):
        from safetensors.numpy import load_file

        entry["annotations"] = {TENSOR_ANNOTATION: tensors_sha256(load_file(path))}
    return entry


def statement(subjects: Sequence[Mapping[str, Any]], predicate_type: str, predicate: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": sorted((dict(s) for s in subjects), key=lambda s: s["name"]),
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def certificate_id(cert: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(cert)).hexdigest()


def write_certificate(path: Path, cert: Mapping[str, Any]) -> str:
    """Write canonical bytes atomically; return the certificate id."""
    data = canonical_json(cert)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()
