"""Signatures on certificates: the DSSE envelope beside each one (``certificate.dsse.json``), checked against the
keys the verifier is told to trust (``blockcert verify --trust PUB.pem``). docs/signing.md is the user's guide.

* An envelope that is there is always checked: strict JSON, exactly ``payloadType``, ``payload`` and
  ``signatures``, the in-toto payload type, canonical base64, and a payload **byte-identical** to the
  certificate file beside it (an envelope for another certificate, or for an older version of this one, fails).
* With trusted keys, every certificate must have an envelope with at least one signature that verifies, over
  the DSSE pre-authentication encoding, under one of those keys. A signature's ``keyid`` is an unauthenticated
  hint (DSSE): every signature is tried against every trusted key, and the key id reported is the trusted
  key's own (securesystemslib's default key id), never the envelope's claim.
* Without trusted keys, signatures are reported (the key ids the envelope claims) and not checked.

DSSE's encoding and the signature maths are securesystemslib's and pyca/cryptography's; nothing here comes from
the producer's :mod:`blockcert.signing`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts.layout import envelope_name
from blockcert.artifacts.safeio import MAX_JSON_BYTES, ArtifactError, read_artifact, resolve_inside, strict_json
from blockcert.errors import UserError
from blockcert.verifier.checks import Checker, Fail, exact_keys, typed
from blockcert.verifier.subjects import CertReport

IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = 2 * MAX_JSON_BYTES  # base64 grows a certificate by 4/3
KEY_HINT = "pass an ed25519 or ECDSA P-256 public key in PEM (blockcert keygen writes PREFIX.pub.pem)"


@attrs.frozen
class TrustedKey:
    keyid: str
    path: str
    key: Any = attrs.field(repr=False, eq=False)  # securesystemslib.signer.SSlibKey


def load_trusted(paths: Sequence[str | Path]) -> tuple[TrustedKey, ...]:
    """The public keys at ``paths``; a file that is unreadable, not a PEM public key, or of another type is a usage
    error naming it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    keys: dict[str, TrustedKey] = {}
    for path in map(Path, paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"--trust {path}: cannot read it ({exc.strerror or exc})", KEY_HINT) from None
        if b"PRIVATE KEY-----" in data:
            raise UserError(f"--trust {path} is a private key; trust the public one", KEY_HINT)
        try:
            pub = load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm):
            raise UserError(f"--trust {path} is not a PEM public key", KEY_HINT) from None
        if isinstance(pub, ed25519.Ed25519PublicKey):
            scheme = "ed25519"
        elif isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1):
            scheme = "ecdsa-sha2-nistp256"
        else:
            what = f"ECDSA {pub.curve.name}" if isinstance(pub, ec.EllipticCurvePublicKey) else type(pub).__name__.lstrip("_")
            raise UserError(f"--trust {path}: {what.removesuffix('PublicKey')} keys are not supported; "
                            "blockcert verifies ed25519 and ECDSA P-256 signatures", KEY_HINT)
        key = SSlibKey.from_crypto(pub, scheme=scheme)
        keys.setdefault(key.keyid, TrustedKey(key.keyid, str(path), key))
    return tuple(keys.values())


def _b64(value: str, what: str) -> bytes:
    """Strict base64, standard or URL-safe alphabet (DSSE allows either)."""
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        try:
            return base64.b64decode(value, altchars=b"-_", validate=True)
        except binascii.Error:
            raise ArtifactError(f"{what} is not base64") from None


def accepted_keys(payload_type: str, payload: bytes, signatures: Sequence[bytes], trusted: Sequence[TrustedKey]) -> list[str]:
    """Ids of the trusted keys under which at least one of ``signatures`` verifies over DSSE's PAE."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import UnverifiedSignatureError
    from securesystemslib.signer import Signature

    pae = Envelope(payload, payload_type, {}).pae()
    out = []
    for t in trusted:
        for sig in signatures:
            try:
                t.key.verify_signature(Signature(t.keyid, sig.hex()), pae)  # the trusted key's id: the envelope's is a hint
            except UnverifiedSignatureError:  # VerificationError (a malformed signature) is one too
                continue
            out.append(t.keyid)
            break
    return out


@attrs.frozen
class SignatureResult:
    status: str  # unsigned | unchecked | verified | invalid
    signers: tuple[str, ...]  # verified: the trusted keys' ids; unchecked: the ids the envelope claims


def check_signature(root: Path, rel: str, c: Checker, trusted: Sequence[TrustedKey] | None) -> SignatureResult:
    """Record the checks of the envelope beside certificate ``rel`` (relative to ``root``) in ``c``."""
    env_rel = envelope_name(rel)
    name = f"signature {rel}"
    result = SignatureResult("invalid", ())
    try:
        present = resolve_inside(root, env_rel).exists() or (root / env_rel).is_symlink()
        if not present:
            if trusted is not None:
                c.record(name, False, "an envelope signed by a trusted key", "no envelope",
                         f"{rel} is not signed: {env_rel} is missing (blockcert sign {rel} --key KEY)")
                return result
            return SignatureResult("unsigned", ())
        doc = strict_json(read_artifact(root, env_rel, MAX_ENVELOPE_BYTES), env_rel)
        exact_keys(c, f"envelope {env_rel}", doc, {"payloadType", "payload", "signatures"})
        c.require(f"envelope payloadType {env_rel}", doc["payloadType"] == IN_TOTO_PAYLOAD, IN_TOTO_PAYLOAD, str(doc["payloadType"])[:60])
        entries = typed(c, f"envelope signatures {env_rel}", doc["signatures"], list)
        c.require(f"envelope signatures {env_rel}", bool(entries), "at least one", 0)
        sigs, claimed = [], []
        for s in entries:
            typed(c, f"envelope signature {env_rel}", s, dict)
            c.require(f"envelope signature {env_rel}", {"sig"} <= set(s) <= {"sig", "keyid"}, "sig[, keyid]", ",".join(sorted(map(str, s))))
            claimed.append(str(typed(c, f"envelope keyid {env_rel}", s.get("keyid", ""), str)))
            sigs.append(_b64(typed(c, f"envelope sig {env_rel}", s["sig"], str), f"{env_rel} signature"))
        ids = ", ".join(k or "(none)" for k in claimed)
        payload = _b64(typed(c, f"envelope payload {env_rel}", doc["payload"], str), f"{env_rel} payload")
        raw = read_artifact(root, rel, MAX_JSON_BYTES)
        want, got = hashlib.sha256(raw).hexdigest(), hashlib.sha256(payload).hexdigest()
        c.require(f"envelope payload = {rel}", payload == raw, want[:16], got[:16],
                  "" if payload == raw else f"{rel}: its envelope {env_rel} (keyid {ids}) signs other bytes (another certificate, "
                  "or an older version of this one): re-sign it with blockcert sign")
        if trusted is None:
            c.record(name, True, "", f"keyid {ids}", "not checked: no --trust")
            return SignatureResult("unchecked", tuple(claimed))
        ok = accepted_keys(doc["payloadType"], payload, sigs, trusted)
        ours = {t.keyid for t in trusted}
        if ok:
            c.record(name, True, "a trusted key", ", ".join(ok), f"{rel} signed by keyid {', '.join(ok)}")
            return SignatureResult("verified", tuple(ok))
        forged = [k for k in claimed if k in ours]
        detail = (f"{rel}: the signature claiming trusted keyid {forged[0]} does not verify (a tampered envelope or a signature "
                  "over other bytes)" if forged else
                  f"{rel}: signed by keyid {ids}, not by a trusted key "
                  f"({', '.join(sorted(ours))})")
        c.record(name, False, "a trusted key", ids[:60], detail)
    except Fail:
        pass
    except (ArtifactError, KeyError, TypeError, ValueError) as exc:  # a malformed envelope: one line naming it
        c.record(name, False, "a well-formed envelope", "", f"{rel}: {exc}")
    return result


def attach(root: Path, reports: Sequence[CertReport], trusted: Sequence[TrustedKey] | None) -> tuple[CertReport, ...]:
    """Every certificate report (not the run summary) with its signature checks, status and signers added."""
    out = []
    for report in reports:
        if report.kind == "summary":
            out.append(report)
            continue
        c = Checker()
        res = check_signature(root, report.path, c, trusted)
        out.append(attrs.evolve(report, checks=report.checks + tuple(c.checks), signature=res.status, signers=res.signers))
    return tuple(out)
