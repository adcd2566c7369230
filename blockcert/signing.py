"""Signing certificates (``blockcert sign``, ``blockcert keygen``) and recording a model's signature
(``blockcert run --model-signature``). docs/signing.md is the user's guide.

A certificate is an in-toto Statement; signing wraps its bytes, unchanged, in a DSSE envelope (payload type
``application/vnd.in-toto+json``) written beside it as ``certificate.dsse.json``. The envelope and the
signatures are securesystemslib's (:class:`securesystemslib.dsse.Envelope`, :class:`CryptoSigner` on
pyca/cryptography): the format in-toto, TUF and Sigstore tooling read. A key's id is securesystemslib's default
key id (the SHA-256 of the canonical JSON of its type, scheme and public value), as in-toto layouts name keys.

This is producer code: the verifier (:mod:`blockcert.verifier.signatures`) reads envelopes with its own code on
top of securesystemslib and imports nothing from here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
from pathlib import Path

import attrs

from blockcert.artifacts.fsutil import atomic_write_bytes, atomic_write_with
from blockcert.artifacts.layout import CERTIFICATE, envelope_name
from blockcert.artifacts.safeio import MAX_JSON_BYTES, ArtifactError, strict_json
from blockcert.certificate import STATEMENT_TYPE
from blockcert.errors import UserError

IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
PREDICATE_PREFIX = "https://blockcert.dev/predicate/"
KEY_TYPES = ("ed25519", "ecdsa-p256")
#: what ``model_signing sign`` (OpenSSF model-signing) writes: a Sigstore bundle around a DSSE envelope
MODEL_SIGNING_PREDICATE_PREFIX = "https://model_signing/"


@attrs.frozen
class Signed:
    certificate: Path
    envelope: Path
    keyid: str
    signers: tuple[str, ...]  # every key id in the envelope now (a co-signed envelope keeps the others)
    replaced: bool  # an envelope for other bytes (a stale or foreign one) was replaced


# -- keys --------------------------------------------------------------------------------------------------------


def keygen(prefix: str | Path, kind: str = "ed25519", force: bool = False) -> tuple[Path, Path, str]:
    """Write ``PREFIX.key.pem`` (PKCS#8, unencrypted, mode 0600) and ``PREFIX.pub.pem`` (SubjectPublicKeyInfo);
    return both paths and the key id."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    if kind not in KEY_TYPES:
        raise UserError(f"unknown --type {kind!r}", f"choose one of {', '.join(KEY_TYPES)}")
    private, public = Path(f"{prefix}.key.pem"), Path(f"{prefix}.pub.pem")
    existing = [str(p) for p in (private, public) if os.path.lexists(p)]
    if existing and not force:
        raise UserError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; refusing to overwrite a key",
                        "choose another --out prefix, or pass --force to replace it")
    if not private.parent.is_dir():
        raise UserError(f"--out {prefix}: the directory {private.parent} does not exist")
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    def write_private(tmp: Path) -> None:
        os.chmod(tmp, 0o600)  # before a byte of the key is in it
        with open(tmp, "wb") as fh:
            fh.write(pem)

    atomic_write_with(private, write_private)
    atomic_write_bytes(public, pub)
    return private, public, _signer(key).public_key.keyid


def load_signer(path: str | Path):  # -> securesystemslib.signer.CryptoSigner
    """A signer for the PEM private key at ``path``: ed25519 or ECDSA P-256, anything else a usage error naming it."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    path = Path(path)
    hint = "pass the private key (blockcert keygen writes PREFIX.key.pem)"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"--key {path}: cannot read it ({exc.strerror or exc})", hint) from None
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise UserError(f"--key {path} is a public key; signing needs the private key", hint)
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise UserError(f"--key {path} is encrypted; blockcert signs with an unencrypted PEM key",
                        "decrypt a copy (openssl pkcs8 -in KEY -out plain.pem) and keep it private") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UserError(f"--key {path} is not a PEM private key", hint) from None
    p256 = isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    if not (isinstance(key, ed25519.Ed25519PrivateKey) or p256):
        raise UserError(f"--key {path}: {key_kind(key)} keys are not supported; blockcert signs with ed25519 or ECDSA P-256 keys",
                        "make one with: blockcert keygen --out PREFIX [--type ecdsa-p256]")
    return _signer(key)


def key_kind(key) -> str:
    """``RSA``, ``ECDSA secp384r1``, ``Ed448``...: a key's type, for messages."""
    curve = getattr(key, "curve", None)
    name = type(key).__name__.lstrip("_").removesuffix("PrivateKey").removesuffix("PublicKey")
    return f"ECDSA {curve.name}" if curve is not None else name


def _signer(key):  # an Ed25519 or P-256 private key -> securesystemslib.signer.CryptoSigner
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from securesystemslib.signer import CryptoSigner, SSlibKey

    scheme = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "ecdsa-sha2-nistp256"
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key(), scheme=scheme))


# -- certificates ------------------------------------------------------------------------------------------------


def find_certificates(path: str | Path) -> list[Path]:
    """Every certificate under ``path``: a run directory (its blocks' and full/'s), an edit directory, ``full/``, or
    one certificate file."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path} does not exist", "pass a run, full-model or edit directory, or a certificate.json")
    found = sorted(path.glob(f"block_*/{CERTIFICATE}")) + [p for p in (path / "full" / CERTIFICATE, path / CERTIFICATE) if p.is_file()]
    if not found:
        raise UserError(f"{path} holds no certificate (block_*/{CERTIFICATE}, full/{CERTIFICATE} or {CERTIFICATE})",
                        "pass a run, full-model or edit directory, or a certificate.json")
    return found


def _certificate_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_JSON_BYTES:
        raise UserError(f"{path} is {len(data)} bytes, not a BlockCert certificate")
    try:
        cert = strict_json(data, str(path))
    except ArtifactError as exc:
        raise UserError(f"{exc}; not a BlockCert certificate") from None
    kind = cert.get("predicateType") if isinstance(cert, dict) else None
    if not (isinstance(cert, dict) and cert.get("_type") == STATEMENT_TYPE and isinstance(kind, str) and kind.startswith(PREDICATE_PREFIX)):
        raise UserError(f"{path} is not a BlockCert certificate (an in-toto Statement with a {PREDICATE_PREFIX}... predicate)")
    return data


def _existing(path: Path, payload: bytes):  # -> Envelope | None
    """The envelope at ``path`` if it is a well-formed DSSE envelope over exactly ``payload`` (then it is co-signed)."""
    from securesystemslib.dsse import Envelope

    try:
        env = Envelope.from_dict(copy.deepcopy(json.loads(path.read_bytes())))
    except Exception:  # missing, malformed, or not securesystemslib's idea of an envelope: replaced, never co-signed
        return None
    return env if env.payload == payload and env.payload_type == IN_TOTO_PAYLOAD else None


def envelope_bytes(env) -> bytes:  # env: securesystemslib.dsse.Envelope
    doc = env.to_dict()
    ordered = {"payloadType": doc["payloadType"], "payload": doc["payload"], "signatures": doc["signatures"]}  # the spec's order
    return (json.dumps(ordered, indent=2) + "\n").encode()


def sign_certificate(path: Path, signer) -> Signed:
    """Wrap the certificate at ``path`` in a DSSE envelope signed by ``signer``, written atomically beside it.
    An envelope already there over the same bytes gains this signature (others are kept: co-signing); one over
    other bytes is replaced. The certificate itself is only read."""
    from securesystemslib.dsse import Envelope

    payload = _certificate_bytes(path)
    target = path.with_name(envelope_name(path.name))
    env = _existing(target, payload) if target.exists() else None
    replaced = target.exists() and env is None
    env = env or Envelope(payload, IN_TOTO_PAYLOAD, {})
    env.sign(signer)
    atomic_write_bytes(target, envelope_bytes(env))
    return Signed(path, target, signer.public_key.keyid, tuple(env.signatures), replaced)


def sign(path: str | Path, key: str | Path) -> list[Signed]:
    """Sign every certificate under ``path`` with the private key at ``key``."""
    signer = load_signer(key)
    certs = find_certificates(path)
    for cert in certs:  # every one is a certificate before any envelope is written
        _certificate_bytes(cert)
    return [sign_certificate(cert, signer) for cert in certs]


# -- the model's own signature (OpenSSF model-signing) -------------------------------------------------------------


def read_model_signature(path: str | Path) -> bytes:
    """The bytes of an OpenSSF model-signing bundle (what ``model_signing sign`` writes, ``model.sig``): a Sigstore
    bundle JSON whose DSSE envelope holds an in-toto Statement with a ``https://model_signing/...`` predicate.
    Only the format is checked here; the signature is the model's signer's, checked by ``model_signing verify``."""
    path = Path(path)
    what = f"--model-signature {path}"
    hint = "pass the bundle that `model_signing sign MODEL --signature model.sig` wrote for this model (docs/signing.md)"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{what}: cannot read it ({exc.strerror or exc})", hint) from None
    try:
        bundle = strict_json(data, what) if len(data) <= MAX_JSON_BYTES else None
        env = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(env["payload"], validate=True))
        ok = env["payloadType"] == IN_TOTO_PAYLOAD and str(statement["predicateType"]).startswith(MODEL_SIGNING_PREDICATE_PREFIX)
    except (ArtifactError, KeyError, TypeError, ValueError, binascii.Error):
        ok = False
    if not ok:
        raise UserError(f"{what} is not an OpenSSF model-signing bundle (a Sigstore bundle whose DSSE envelope holds an "
                        f"in-toto Statement with a {MODEL_SIGNING_PREDICATE_PREFIX}... predicate)", hint)
    return data
