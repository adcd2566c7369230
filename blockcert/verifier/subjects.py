"""A certificate and the artifacts it covers: the statement read strictly, every subject's path, size and
digest checked (streamed), its tensors parsed once; and the report of one certificate's checks."""


from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import rfc8785

from blockcert.artifacts.digest import tensors_sha256
from blockcert.artifacts.safeio import (
    MAX_JSON_BYTES,
    MAX_TENSOR_FILE_BYTES,
    ArtifactError,
    is_sha256_hex,
    nonfinite,
    read_artifact,
    read_hashed,
    read_safetensors_typed,
    resolve_inside,
    strict_json,
)
from blockcert.certificate import BLOCK_PREDICATE, FULL_PREDICATE, STATEMENT_TYPE, TENSOR_ANNOTATION
from blockcert.verifier.checks import Check, Checker, exact_keys, typed


#: predicateType of an older certificate schema -> function rewriting its statement into the current one.
#: A format change adds ``migrate_vN_to_vN+1`` here and a golden run (tests/make_golden.py); old runs keep verifying.
def migrate_v1_to_v2(cert: dict[str, Any]) -> dict[str, Any]:
    """Schema v1 -> v2: v2 added ``predicate.lipschitz`` (null when a run computed no bounds, as v1 runs never did)."""
    pred = cert.get("predicate")
    if not isinstance(pred, dict) or pred.get("schema_version") != 1 or "lipschitz" in pred:
        return cert  # not a well-formed v1 predicate: let the later checks report what is wrong
    return {**cert, "predicateType": V2, "predicate": {**pred, "schema_version": 2, "lipschitz": None}}


#: what a policy written before schema v3 was: the paper's absolute thresholds (k unused)
PAPER_POLICY = {"name": "paper", "k": 4.0}


def migrate_policy(policy: Any) -> Any:
    """A policy object of a run written before schema v3 (no ``name``, no ``k``: the paper's) in the v3 form;
    anything else unchanged. Used for the policy copies in run.json, metrics.json and the run summary."""
    if isinstance(policy, dict) and not (set(PAPER_POLICY) & set(policy)):
        return {**policy, **PAPER_POLICY}
    return policy


def migrate_replay(replay: Any) -> Any:
    """A replay record of a run written before schema v3 (no ``device``: every such run ran on the CPU) in the
    v3 form; anything else unchanged. Used for the copy in run.json too."""
    if isinstance(replay, dict) and "device" not in replay:
        return {**replay, "device": "cpu"}
    return replay


def migrate_v2_to_v3(cert: dict[str, Any]) -> dict[str, Any]:
    """Schema v2 -> v3: v3 names the policy (``paper``, ``relative``, ``noise-floor``) and records its k, and
    the replay record says on which device the run ran; every earlier certificate was made under the paper's
    absolute thresholds, on the CPU."""
    pred = cert.get("predicate")
    if not isinstance(pred, dict) or pred.get("schema_version") != 2 or not isinstance(pred.get("policy"), dict) \
            or set(PAPER_POLICY) & set(pred["policy"]) or not isinstance(pred.get("replay"), dict) or "device" in pred["replay"]:
        return cert  # not a well-formed v2 predicate: let the later checks report what is wrong
    return {**cert, "predicateType": BLOCK_PREDICATE,
            "predicate": {**pred, "schema_version": 3, "policy": migrate_policy(pred["policy"]), "replay": migrate_replay(pred["replay"])}}


def migrate_full_v1_to_v2(cert: dict[str, Any]) -> dict[str, Any]:
    """Full-model schema v1 -> v2: v2 records the device the stitched evaluation ran on; v1 runs all ran on the CPU."""
    pred = cert.get("predicate")
    if not isinstance(pred, dict) or pred.get("schema_version") != 1 or "device" in pred:
        return cert
    return {**cert, "predicateType": FULL_PREDICATE, "predicate": {**pred, "schema_version": 2, "device": "cpu"}}


V1 = "https://blockcert.dev/predicate/block-certificate/v1"
V2 = "https://blockcert.dev/predicate/block-certificate/v2"

#: applied in turn while the statement's predicate type has one (v1 -> v2 -> v3)
MIGRATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    V1: migrate_v1_to_v2,
    V2: migrate_v2_to_v3,
    "https://blockcert.dev/predicate/full-model-certificate/v1": migrate_full_v1_to_v2,
}


@attrs.frozen
class CertReport:
    path: str
    kind: str
    block: int | None
    claimed_certified: bool | None
    certified: bool | None  # recomputed under the verifier's policy (None at level hashes)
    checks: tuple[Check, ...]
    signature: str = ""  # unsigned | unchecked (no --trust) | verified | invalid: see .signatures ("" for the run summary)
    signers: tuple[str, ...] = ()  # key ids: the trusted keys that verified, or (unchecked) the ones the envelope claims

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)



def load_certificate(root: Path, rel: str, c: Checker, predicate_type: str = BLOCK_PREDICATE) -> tuple[dict[str, Any], bool]:
    """The certificate at ``rel`` (strict, canonical JSON), brought to the current schema, and whether it was written
    in an older one (then the run's other records may be in the older form too)."""
    try:
        raw = read_artifact(root, rel, MAX_JSON_BYTES)
        cert = strict_json(raw, rel)
    except ArtifactError as exc:
        c.require("certificate readable", False, detail=str(exc))
    c.require("certificate is an object", isinstance(cert, dict), "object", type(cert).__name__)
    try:
        canonical = rfc8785.dumps(cert)
    except Exception as exc:  # rfc8785 raises its own errors for integers out of range etc.
        c.require("canonical JSON (RFC 8785)", False, detail=f"{rel}: {exc}")
    c.require("canonical JSON (RFC 8785)", canonical == raw, f"{len(canonical)} canonical bytes", f"{len(raw)} bytes",
              "" if canonical == raw else f"{rel} is not in canonical form (re-serialised or edited by hand)")
    exact_keys(c, "statement", cert, {"_type", "subject", "predicateType", "predicate"})
    seen = set()
    written = cert["predicateType"]
    while cert["predicateType"] in MIGRATIONS and cert["predicateType"] not in seen:
        seen.add(cert["predicateType"])
        cert = MIGRATIONS[cert["predicateType"]](cert)
    c.require("statement _type", cert["_type"] == STATEMENT_TYPE, STATEMENT_TYPE, cert["_type"])
    c.require("predicateType", cert["predicateType"] == predicate_type, predicate_type, cert["predicateType"],
              "unknown predicate type or schema major version")
    return cert, cert["predicateType"] != written


def read_subject(root: Path, name: str, limit: int, expected: str, cache: dict[Any, Any] | None) -> tuple[bytes, str, dict[str, Any]]:
    """(bytes, sha256, memo) of an artifact, read only if its streamed digest is ``expected`` (else the bytes
    are empty). Within one verify() call a file shared by many certificates (the traces) is read and hashed
    once, keyed by its identity and modification stamp."""
    import os

    key = None
    if cache is not None:
        path = resolve_inside(root, name)
        try:
            st = os.stat(path)
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key is not None and key in cache:
            return cache[key]
    data, digest = read_hashed(root, name, limit, expected)
    entry = (data, digest, {})
    if key is not None and digest == expected:
        cache[key] = entry
    return entry


def parse_tensors(c: Checker, name: str, data: bytes, memo: dict[str, Any]) -> dict[str, np.ndarray]:
    """The tensors of a covered safetensors artifact, parsed once; any NaN or infinity fails here, at every level."""
    if "tensors" not in memo:
        try:
            tensors, codes = read_safetensors_typed(data, name)
        except ArtifactError as exc:
            c.require(f"tensors {name}", False, detail=str(exc))
        bad = {k: nonfinite(v, codes[k]) for k, v in tensors.items()}
        memo["nonfinite"] = {k: n for k, n in bad.items() if n}
        memo["tensors"], memo["dtypes"] = tensors, codes
        memo["tensors_sha256"] = tensors_sha256(tensors)
    bad = memo["nonfinite"]
    c.require(f"finite values {name}", not bad, "no NaN or infinity", ", ".join(f"{k}: {n}" for k, n in sorted(bad.items()))[:80],
              f"{name} holds non-finite values ({', '.join(sorted(bad))})" if bad else "")
    return memo["tensors"]


def check_subjects(root: Path, cert: dict[str, Any], c: Checker, cache: dict[Any, Any] | None = None,
                    own_dir: str | None = None, parsed: dict[str, dict[str, Any]] | None = None) -> dict[str, bytes]:
    """Read and hash every subject. With ``cache``, artifacts outside ``own_dir`` (the certificate's own
    directory) are shared by other certificates and are read once per verify() call; a certificate's own
    files (its IR: 0.8 GB for a Llama-2-7B block) are not kept after its checks. ``parsed`` receives each
    safetensors subject's memo (tensors, dtypes)."""
    subjects = typed(c, "subject", cert["subject"], list)
    contents: dict[str, bytes] = {}
    names = []
    for s in subjects:
        typed(c, "subject entry", s, dict)
        c.require("schema subject entry", {"name", "digest"} <= set(s) <= {"name", "digest", "annotations"},
                  "name, digest[, annotations]", ",".join(sorted(s)))
        name = typed(c, "subject name", s["name"], str)
        names.append(name)
        digest = typed(c, f"digest of {name}", s["digest"], dict)
        c.require(f"digest algorithm of {name}", set(digest) == {"sha256"}, "sha256", ",".join(sorted(digest)),
                  "only sha256 digests are accepted")
        c.require(f"digest hex of {name}", is_sha256_hex(digest["sha256"]), "64 lowercase hex digits", digest["sha256"])
        limit = MAX_TENSOR_FILE_BYTES if name.endswith(".safetensors") else MAX_JSON_BYTES
        try:
            shared = own_dir is None or not name.startswith(f"{own_dir}/")
            data, actual, memo = read_subject(root, name, limit, digest["sha256"], cache if shared else None)
        except ArtifactError as exc:
            c.require(f"artifact {name}", False, detail=str(exc))
        c.require(f"sha256 {name}", actual == digest["sha256"], digest["sha256"][:16], actual[:16],
                  "" if actual == digest["sha256"] else f"{name} differs from the bytes this certificate was issued for")
        if name.endswith(".safetensors"):
            ann = typed(c, f"annotations of {name}", s.get("annotations"), dict)
            c.require(f"annotations of {name}", set(ann) == {TENSOR_ANNOTATION}, TENSOR_ANNOTATION, ",".join(sorted(ann)))
            parse_tensors(c, name, data, memo)
            td = memo["tensors_sha256"]
            c.require(f"tensor digest {name}", td == ann[TENSOR_ANNOTATION], str(ann[TENSOR_ANNOTATION])[:16], td[:16])
            if parsed is not None:
                parsed[name] = memo
        else:
            c.require(f"annotations of {name}", "annotations" not in s, "none", "present")
        contents[name] = data
    c.require("subjects unique and sorted", names == sorted(set(names)), "sorted, unique", ",".join(names)[:80])
    return contents
