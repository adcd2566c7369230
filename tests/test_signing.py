"""Signed certificates (docs/signing.md): ``blockcert keygen``, ``blockcert sign``, ``blockcert verify --trust`` and
``blockcert run --model-signature``, on real runs of a small random model.

Beside the tamper suite: every way of passing off an unsigned, foreign or forged signature fails with a check that
names the certificate and the key. Interop both ways with securesystemslib's own DSSE code, and with an envelope
that sigstore-python wrote (inside a real OpenSSF model-signing bundle)."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_run import make_model_dir

import blockcert
from blockcert.edit.certify import Decoding, certify_edit
from blockcert.errors import UserError
from blockcert.pipeline.certify import run
from blockcert.pipeline.stitch import stitch
from blockcert.signing import keygen, load_signer, read_model_signature, sign
from blockcert.verifier.core import verify
from blockcert.verifier.signatures import accepted_keys, load_trusted

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "model-signing"
CERTS = ["block_000/certificate.json", "block_001/certificate.json", "full/certificate.json"]
IN_TOTO = "application/vnd.in-toto+json"


@pytest.fixture(scope="module")
def base(tmp_path_factory, byte_tokenizer) -> Path:
    """A run of blocks 0 and 1 made with --model-signature, stitched (full/), an edit directory, and three key pairs:
    alice (ed25519), bob (ECDSA P-256), mallory (ed25519)."""
    base = tmp_path_factory.mktemp("signing")
    model = make_model_dir(base / "model", byte_tokenizer, layers=2)
    loaded = blockcert.load_model(model)
    run(loaded=loaded, prompts="builtin:default", out=base / "run", model_signature=DATA / "model.sig")
    stitch(base / "run", loaded=loaded)
    certify_edit(loaded=loaded, spec="mlp-scale:block=1,alpha=0.33", out=base / "edit", decoding=Decoding(max_new_tokens=4))
    for name, kind in (("alice", "ed25519"), ("bob", "ecdsa-p256"), ("mallory", "ed25519")):
        keygen(base / name, kind)
    return base


@pytest.fixture()
def work(base, tmp_path) -> Path:
    shutil.copytree(base / "run", tmp_path / "run")
    return tmp_path / "run"


def key(base: Path, name: str, public: bool = True) -> Path:
    return base / f"{name}.{'pub' if public else 'key'}.pem"


def keyid(base: Path, name: str) -> str:
    return load_trusted([key(base, name)])[0].keyid


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def failures(root: Path, **kw) -> str:
    report = verify(root, level="hashes", **kw)
    assert not report.ok
    return "\n".join(f"{ch.name}: {ch.detail}" for c in report.certificates for ch in c.checks if not ch.ok)


def envelope(root: Path, rel: str = "block_000/certificate.json") -> Path:
    return root / rel.replace("certificate.json", "certificate.dsse.json")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blockcert", *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)


# ---------------------------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_keygen_writes_a_private_key_only_its_owner_reads_and_the_public_pem(tmp_path, kind):
    from cryptography.hazmat.primitives import serialization as ser
    from securesystemslib.signer import SSlibKey

    private, public, kid = keygen(tmp_path / "k", kind)
    assert (private.name, public.name) == ("k.key.pem", "k.pub.pem")
    assert private.stat().st_mode & 0o777 == 0o600
    priv = ser.load_pem_private_key(private.read_bytes(), None)
    pub = ser.load_pem_public_key(public.read_bytes())
    assert priv.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo) == \
        pub.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
    assert kid == SSlibKey.from_crypto(pub).keyid == load_signer(private).public_key.keyid  # securesystemslib's default key id
    before = private.read_bytes()
    with pytest.raises(UserError, match="refusing to overwrite"):
        keygen(tmp_path / "k", kind)
    assert private.read_bytes() == before
    assert keygen(tmp_path / "k", kind, force=True)[2] != kid
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_keygen_refuses_an_unknown_type(tmp_path):
    with pytest.raises(UserError, match="unknown --type"):
        keygen(tmp_path / "k", "rsa")
    assert not list(tmp_path.iterdir())


def _foreign_keys(tmp_path: Path) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    out = {}
    for name, k in (("rsa", rsa.generate_private_key(65537, 2048)), ("p384", ec.generate_private_key(ec.SECP384R1()))):
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
        out[f"{name}.pub"] = tmp_path / f"{name}.pub.pem"
        out[f"{name}.pub"].write_bytes(k.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo))
    out["garbage"] = tmp_path / "garbage.pem"
    out["garbage"].write_text("hello, I am not a key\n")
    out["missing"] = tmp_path / "nowhere.pem"
    return out


@pytest.mark.parametrize(("which", "needle"), [("rsa", "RSA keys are not supported"), ("p384", "ECDSA secp384r1 keys are not supported"),
                                                ("garbage", "is not a PEM private key"), ("missing", "cannot read it"),
                                                ("public", "is a public key")])
def test_sign_refuses_a_key_it_cannot_sign_with_and_writes_nothing(work, base, tmp_path, which, needle):
    path = key(base, "alice") if which == "public" else _foreign_keys(tmp_path)[which]
    before = files(work)
    with pytest.raises(UserError, match=needle):
        sign(work, path)
    assert files(work) == before


@pytest.mark.parametrize(("which", "needle"), [("rsa.pub", "RSA keys are not supported"),
                                                ("p384.pub", "ECDSA secp384r1 keys are not supported"),
                                                ("garbage", "is not a PEM public key"), ("missing", "cannot read it"),
                                                ("private", "is a private key")])
def test_verify_refuses_a_trusted_key_it_cannot_check_with(work, base, tmp_path, which, needle):
    path = key(base, "alice", public=False) if which == "private" else _foreign_keys(tmp_path)[which]
    with pytest.raises(UserError, match=needle):
        verify(work, level="hashes", trust=[path])
    with pytest.raises(UserError, match="would accept no signature"):
        verify(work, level="hashes", trust=[])


# ---------------------------------------------------------------------------------------------------------------
# signing
# ---------------------------------------------------------------------------------------------------------------


def test_signing_writes_one_envelope_beside_each_certificate_and_changes_no_byte(work, base):
    before = files(work)
    signed = sign(work, key(base, "alice", public=False))
    after = files(work)
    assert sorted(str(s.certificate.relative_to(work)) for s in signed) == CERTS
    new = sorted(set(after) - set(before))
    assert new == [c.replace("certificate.json", "certificate.dsse.json") for c in CERTS]
    assert {k: v for k, v in after.items() if k in before} == before  # certificates (and their ids), summary, artifacts
    summary = json.loads(after["metrics.json"])
    assert {b["certificate"]: b["certificate_id"] for b in summary["blocks"]} == \
        {c: hashlib.sha256(before[c]).hexdigest() for c in CERTS[:2]}
    for cert in CERTS:
        env = json.loads(after[cert.replace("certificate.json", "certificate.dsse.json")])
        assert list(env) == ["payloadType", "payload", "signatures"]
        assert env["payloadType"] == IN_TOTO
        assert base64.b64decode(env["payload"]) == before[cert]
        assert [s["keyid"] for s in env["signatures"]] == [keyid(base, "alice")]
    assert not [p for p in work.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("signer", ["alice", "bob"])  # ed25519, ECDSA P-256
def test_a_signed_run_verifies_with_the_signers_key_and_lists_it(work, base, signer):
    sign(work, key(base, signer, public=False))
    report = verify(work, level="replay", trust=[key(base, signer)])
    assert report.ok, failures(work, trust=[key(base, signer)])
    assert report.trusted == (keyid(base, signer),)
    by_path = {c.path: c for c in report.certificates}
    for cert in CERTS:
        assert (by_path[cert].signature, by_path[cert].signers) == ("verified", (keyid(base, signer),))
    assert by_path["metrics.json"].signature == ""
    listed = json.loads(json.dumps(report.as_dict()))  # what --json prints
    assert {c["path"]: c["signers"] for c in listed["certificates"]}["block_001/certificate.json"] == [keyid(base, signer)]


def test_another_key_is_not_trusted_and_the_failure_names_certificate_and_key(work, base):
    sign(work, key(base, "alice", public=False))
    message = failures(work, trust=[key(base, "mallory")])
    for cert in CERTS:
        assert f"{cert}: signed by keyid {keyid(base, 'alice')}, not by a trusted key ({keyid(base, 'mallory')})" in message, message
    assert verify(work, level="hashes", trust=[key(base, "mallory"), key(base, "alice")]).ok  # any one trusted key suffices


def test_without_trust_signatures_are_reported_not_required(work, base):
    sign(work, key(base, "alice", public=False))
    envelope(work, CERTS[1]).unlink()
    report = verify(work, level="hashes")
    assert report.ok and report.trusted is None
    status = {c.path: (c.signature, c.signers) for c in report.certificates}
    assert status[CERTS[0]] == status[CERTS[2]] == ("unchecked", (keyid(base, "alice"),))
    assert status[CERTS[1]] == ("unsigned", ())
    message = failures(work, trust=[key(base, "alice")])
    assert "block_001/certificate.json is not signed: block_001/certificate.dsse.json is missing" in message


def test_an_unsigned_run_verifies_as_before(work):
    report = verify(work, level="hashes")
    assert report.ok and {c.signature for c in report.certificates} == {"unsigned", ""}
    assert not any("signature" in ch.name or "envelope" in ch.name for c in report.certificates for ch in c.checks)


def test_cosigning_keeps_every_signature_and_re_signing_replaces_ones_own(work, base):
    sign(work, key(base, "alice", public=False))
    sign(work, key(base, "bob", public=False))
    sign(work, key(base, "alice", public=False))
    env = json.loads(envelope(work).read_bytes())
    assert sorted(s["keyid"] for s in env["signatures"]) == sorted([keyid(base, "alice"), keyid(base, "bob")])
    for who in ("alice", "bob"):
        assert verify(work, level="hashes", trust=[key(base, who)]).ok


def test_signing_replaces_an_envelope_over_other_bytes(work, base):
    sign(work, key(base, "alice", public=False))
    shutil.copy(envelope(work, CERTS[1]), envelope(work, CERTS[0]))  # block 1's envelope beside block 0
    signed = {str(s.certificate.relative_to(work)): s for s in sign(work, key(base, "bob", public=False))}
    assert signed[CERTS[0]].replaced and not signed[CERTS[1]].replaced
    assert signed[CERTS[0]].signers == (keyid(base, "bob"),)
    assert verify(work, level="hashes", trust=[key(base, "bob")]).ok


def test_sign_refuses_what_is_not_a_certificate(work, base, tmp_path):
    with pytest.raises(UserError, match="holds no certificate"):
        sign(tmp_path, key(base, "alice", public=False))
    with pytest.raises(UserError, match="is not a BlockCert certificate"):
        sign(work / "run.json", key(base, "alice", public=False))
    (work / "block_001" / "certificate.json").write_text("{not json")
    before = files(work)
    with pytest.raises(UserError, match="not a BlockCert certificate"):
        sign(work, key(base, "alice", public=False))
    assert files(work) == before  # nothing signed when one certificate is bad


def test_one_certificate_and_an_edit_directory_are_signed_and_verified(work, base, tmp_path):
    sign(work / CERTS[1], key(base, "alice", public=False))
    assert [p.name for p in (work / "block_001").glob("*.dsse.json")] == ["certificate.dsse.json"]
    assert not envelope(work, CERTS[0]).exists()
    assert verify(work / CERTS[1], level="hashes", trust=[key(base, "alice")]).ok
    edit = tmp_path / "edit"
    shutil.copytree(base / "edit", edit)
    sign(edit, key(base, "bob", public=False))
    report = verify(edit, level="hashes", trust=[key(base, "bob")])
    assert report.ok and report.certificates[0].signers == (keyid(base, "bob"),)
    assert "certificate.json: signed by keyid" in failures(edit, trust=[key(base, "alice")])


# ---------------------------------------------------------------------------------------------------------------
# forged and tampered signatures: each fails with a check naming the certificate (and the key, where there is one)
# ---------------------------------------------------------------------------------------------------------------


def _rewrite(path: Path, fn) -> None:
    env = json.loads(path.read_bytes())
    fn(env)
    path.write_text(json.dumps(env))


def _sig_over(base: Path, who: str, data: bytes) -> str:
    """``who``'s real signature over ``data``, base64 as in an envelope."""
    return base64.b64encode(bytes.fromhex(load_signer(key(base, who, public=False)).sign(data).signature)).decode()


def f_payload_edited(root, base):  # the certificate inside the envelope changed, the signature kept
    def edit(e):
        e["payload"] = base64.b64encode(base64.b64decode(e["payload"]).replace(b'"index":0', b'"index":1')).decode()
    _rewrite(envelope(root), edit)
    return f"block_000/certificate.json: its envelope block_000/certificate.dsse.json (keyid {keyid(base, 'alice')}) signs other bytes"


def f_envelope_of_another_certificate(root, base):
    shutil.copy(envelope(root, CERTS[1]), envelope(root, CERTS[0]))
    return f"block_000/certificate.json: its envelope block_000/certificate.dsse.json (keyid {keyid(base, 'alice')}) signs other bytes"


def f_certificate_changed_after_signing(root, base):
    cert = root / CERTS[0]
    cert.write_bytes(cert.read_bytes().replace(b'"certified":true', b'"certified":false', 1))
    return "block_000/certificate.json: its envelope block_000/certificate.dsse.json"


def f_signature_bit_flipped(root, base):
    def flip(e):
        sig = bytearray(base64.b64decode(e["signatures"][0]["sig"]))
        sig[5] ^= 1
        e["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    _rewrite(envelope(root), flip)
    return f"block_000/certificate.json: the signature claiming trusted keyid {keyid(base, 'alice')} does not verify"


def f_signature_over_other_bytes(root, base):  # alice really signed, but the raw certificate, not DSSE's PAE
    raw = (root / CERTS[0]).read_bytes()
    _rewrite(envelope(root), lambda e: e["signatures"][0].update(sig=_sig_over(base, "alice", raw)))
    return f"block_000/certificate.json: the signature claiming trusted keyid {keyid(base, 'alice')} does not verify"


def f_keyid_claimed_by_a_forger(root, base):  # mallory signs and writes alice's key id
    from securesystemslib.dsse import Envelope

    pae = Envelope((root / CERTS[0]).read_bytes(), IN_TOTO, {}).pae()
    _rewrite(envelope(root), lambda e: e["signatures"][0].update(sig=_sig_over(base, "mallory", pae)))
    return f"block_000/certificate.json: the signature claiming trusted keyid {keyid(base, 'alice')} does not verify"


def f_signed_by_an_untrusted_key(root, base):
    sign(root / CERTS[0], key(base, "mallory", public=False))
    envelope_doc = json.loads(envelope(root).read_bytes())
    envelope_doc["signatures"] = [s for s in envelope_doc["signatures"] if s["keyid"] == keyid(base, "mallory")]
    envelope(root).write_text(json.dumps(envelope_doc))
    return f"block_000/certificate.json: signed by keyid {keyid(base, 'mallory')}, not by a trusted key"


def f_payload_type_changed(root, base):
    _rewrite(envelope(root), lambda e: e.update(payloadType="application/json"))
    return "envelope payloadType block_000/certificate.dsse.json"


def f_no_signatures(root, base):
    _rewrite(envelope(root), lambda e: e.update(signatures=[]))
    return "envelope signatures block_000/certificate.dsse.json"


def f_unknown_field(root, base):
    _rewrite(envelope(root), lambda e: e.update(note="trust me"))
    return "schema envelope block_000/certificate.dsse.json: unknown fields ['note']"


def f_signature_not_base64(root, base):
    _rewrite(envelope(root), lambda e: e["signatures"][0].update(sig="%%%not base64%%%"))
    return "block_000/certificate.json: block_000/certificate.dsse.json signature is not base64"


def f_envelope_not_json(root, base):
    envelope(root).write_text('{"payloadType": "a", "payloadType": "b"}')
    return "block_000/certificate.json: block_000/certificate.dsse.json: invalid JSON (duplicate key 'payloadType')"


def f_envelope_links_outside(root, base):
    outside = root.parent / "elsewhere.dsse.json"
    shutil.copy(envelope(root), outside)
    envelope(root).unlink()
    envelope(root).symlink_to(outside)
    return "outside the run directory"


def f_envelope_missing(root, base):
    envelope(root).unlink()
    return "block_000/certificate.json is not signed: block_000/certificate.dsse.json is missing"


FORGERIES = {name[2:]: fn for name, fn in globals().items() if name.startswith("f_")}
#: what fails even without --trust: the envelope is there and is wrong whoever signed it
WITHOUT_TRUST = {"payload_edited", "envelope_of_another_certificate", "certificate_changed_after_signing", "payload_type_changed",
                 "no_signatures", "unknown_field", "signature_not_base64", "envelope_not_json", "envelope_links_outside"}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_or_tampered_signature_is_rejected(name, work, base):
    sign(work, key(base, "alice", public=False))
    assert verify(work, level="hashes", trust=[key(base, "alice")]).ok
    needle = FORGERIES[name](work, base)
    message = failures(work, trust=[key(base, "alice")])
    assert needle in message, message
    report = verify(work, level="hashes", trust=[key(base, "alice")])
    assert {c.path: c.signature for c in report.certificates}[CERTS[0]] == "invalid"
    if name in WITHOUT_TRUST:
        assert not verify(work, level="hashes").ok
    elif name != "envelope_missing":
        assert verify(work, level="hashes").ok  # signatures are not checked without --trust


# ---------------------------------------------------------------------------------------------------------------
# interop: securesystemslib's own DSSE code, both ways; an envelope sigstore-python wrote
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signer", ["alice", "bob"])
def test_our_envelopes_verify_with_securesystemslibs_own_dsse_verification(work, base, signer):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    sign(work, key(base, signer, public=False))
    public = SSlibKey.from_crypto(load_pem_public_key(key(base, signer).read_bytes()))
    other = SSlibKey.from_crypto(load_pem_public_key(key(base, "mallory").read_bytes()))
    for cert in CERTS:
        env = Envelope.from_dict(json.loads(envelope(work, cert).read_bytes()))
        assert env.payload_type == IN_TOTO and env.payload == (work / cert).read_bytes()
        assert list(env.verify([public], 1)) == [public.keyid]
        with pytest.raises(VerificationError):
            env.verify([other], 1)


def test_envelopes_securesystemslib_writes_verify_with_ours(work, base):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner(load_pem_private_key(key(base, "bob", public=False).read_bytes(), None))
    for cert in CERTS:
        env = Envelope((work / cert).read_bytes(), IN_TOTO, {})
        env.sign(signer)
        envelope(work, cert).write_text(json.dumps(env.to_dict()))
    report = verify(work, level="hashes", trust=[key(base, "bob")])
    assert report.ok and {c.signers for c in report.certificates if c.kind != "summary"} == {(keyid(base, "bob"),)}
    assert "not by a trusted key" in failures(work, trust=[key(base, "alice")])


def test_an_envelope_sigstore_python_wrote_verifies_with_ours():
    """The DSSE envelope inside a real model-signing bundle: written by sigstore-python with an empty key id."""
    env = json.loads((DATA / "model.sig").read_bytes())["dsseEnvelope"]
    assert env["signatures"][0]["keyid"] == ""
    sig = base64.b64decode(env["signatures"][0]["sig"])
    payload = base64.b64decode(env["payload"])
    trusted = load_trusted([DATA / "signer.pub.pem"])
    assert accepted_keys(env["payloadType"], payload, [sig], trusted) == [trusted[0].keyid]
    assert accepted_keys(env["payloadType"], payload + b" ", [sig], trusted) == []
    assert accepted_keys("application/json", payload, [sig], trusted) == []  # the payload type is signed too


def test_the_verifier_shares_no_code_with_the_signing_side():
    """blockcert.verifier.* never imports blockcert.signing (the producer's signing code)."""
    bad = []
    for path in sorted((ROOT / "blockcert" / "verifier").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "blockcert.signing" or n.startswith("blockcert.signing.")]
    assert not bad, bad


# ---------------------------------------------------------------------------------------------------------------
# the model's own signature: run --model-signature
# ---------------------------------------------------------------------------------------------------------------


def test_a_run_with_a_model_signature_covers_it_in_every_block_certificate(base):
    root = base / "run"
    assert (root / "model.sig").read_bytes() == (DATA / "model.sig").read_bytes()
    digest = hashlib.sha256((DATA / "model.sig").read_bytes()).hexdigest()
    for cert in CERTS[:2]:
        subjects = {s["name"]: s["digest"]["sha256"] for s in json.loads((root / cert).read_bytes())["subject"]}
        assert subjects["model.sig"] == digest
    report = verify(root, level="replay")
    assert report.ok
    names = [ch.name for c in report.certificates for ch in c.checks]
    assert "sha256 model.sig" in names and "model.sig covered by every certificate" in names


@pytest.mark.parametrize(("tamper", "needle"), [
    ("flip", "model.sig differs from the bytes this certificate was issued for"),
    ("delete", "artifact 'model.sig' is missing"),
    ("not-a-bundle", "model.sig is a model-signing bundle"),
])
def test_a_changed_model_signature_fails(work, tamper, needle):
    sig = work / "model.sig"
    if tamper == "flip":
        data = bytearray(sig.read_bytes())
        data[40] ^= 1
        sig.write_bytes(bytes(data))
    elif tamper == "delete":
        sig.unlink()
    else:  # re-digested everywhere, so only the format check is left to catch it
        from test_tamper import redigest

        sig.write_text('{"mediaType": "something else"}')
        for cert in CERTS[:2]:
            redigest(work, cert)
    assert needle in failures(work)


def test_a_model_signature_no_certificate_covers_is_an_unexpected_file(base, tmp_path, byte_tokenizer):
    plain = tmp_path / "plain"
    run(base / "model", prompts="builtin:default", blocks="0", out=plain)
    assert not (plain / "model.sig").exists()
    assert "model.sig" not in {s["name"] for s in json.loads((plain / "block_000/certificate.json").read_bytes())["subject"]}
    shutil.copy(DATA / "model.sig", plain / "model.sig")
    assert "model.sig is not a subject of block_000/certificate.json" in failures(plain)


def test_model_signature_bad_input_and_resume(base, tmp_path):
    with pytest.raises(UserError, match="is not an OpenSSF model-signing bundle"):
        read_model_signature(base / "model" / "config.json")
    with pytest.raises(UserError, match="cannot read it"):
        read_model_signature(tmp_path / "missing.sig")
    with pytest.raises(UserError, match="is not an OpenSSF model-signing bundle"):
        run(base / "model", prompts="builtin:default", blocks="0", out=tmp_path / "bad", model_signature=base / "model" / "config.json")
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    out = tmp_path / "r"
    run(base / "model", prompts="builtin:default", blocks="0", out=out, model_signature=DATA / "model.sig")
    other = tmp_path / "other.sig"
    other.write_text(json.dumps(json.loads((DATA / "model.sig").read_bytes()), indent=1))  # the same bundle, other bytes
    with pytest.raises(UserError, match="another --model-signature"):
        run(base / "model", prompts="builtin:default", blocks="0-1", out=out, resume=True, model_signature=other)
    with pytest.raises(UserError, match="was started with --model-signature"):
        run(base / "model", prompts="builtin:default", blocks="0-1", out=out, resume=True)
    assert (out / "model.sig").read_bytes() == (DATA / "model.sig").read_bytes()
    result = run(base / "model", prompts="builtin:default", blocks="0-1", out=out, resume=True, model_signature=DATA / "model.sig")
    assert [b.resumed for b in result.blocks] == [True, False]
    assert verify(out, level="hashes").ok
    plain = tmp_path / "plain"
    run(base / "model", prompts="builtin:default", blocks="0", out=plain)
    with pytest.raises(UserError, match="was started without --model-signature"):
        run(base / "model", prompts="builtin:default", blocks="0-1", out=plain, resume=True, model_signature=DATA / "model.sig")


# ---------------------------------------------------------------------------------------------------------------
# the command line: real processes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # spawns the CLI
def test_cli_keygen_run_sign_verify_end_to_end(base, tmp_path):
    assert cli("keygen", "--out", tmp_path / "me").returncode == 0
    proc = cli("keygen", "--out", tmp_path / "other", "--type", "ecdsa-p256")
    assert proc.returncode == 0 and "keyid" in proc.stdout
    proc = cli("run", "--model", base / "model", "--prompts", "builtin:default", "--blocks", "0", "--out", tmp_path / "run",
               "--model-signature", DATA / "model.sig")
    assert proc.returncode == 0, proc.stderr
    proc = cli("sign", tmp_path / "run", "--key", tmp_path / "me.key.pem")
    assert proc.returncode == 0 and "1 certificate signed by keyid" in proc.stdout, proc.stdout + proc.stderr
    mine, theirs = keyid(tmp_path, "me"), keyid(tmp_path, "other")
    proc = cli("verify", tmp_path / "run", "--level", "hashes", "--trust", tmp_path / "me.pub.pem")
    assert proc.returncode == 0 and "verified" in proc.stdout, proc.stdout
    proc = cli("verify", tmp_path / "run", "--level", "hashes", "--trust", tmp_path / "other.pub.pem")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("signature FAIL")]
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert lines == [f"signature FAIL block_000/certificate.json: signed by keyid {mine}, not by a trusted key ({theirs})"], proc.stdout
    proc = cli("verify", tmp_path / "run", "--level", "hashes", "--trust", tmp_path / "me.pub.pem", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["trusted"] == [mine]
    assert {c["path"]: c["signers"] for c in report["certificates"]}["block_000/certificate.json"] == [mine]


@pytest.mark.slow  # spawns the CLI
def test_cli_bad_input_is_one_line_never_a_traceback(work, base, tmp_path):
    keys = _foreign_keys(tmp_path)
    usage = [
        (("sign", work, "--key", keys["rsa"]), "RSA keys are not supported"),
        (("sign", work, "--key", keys["missing"]), "cannot read it"),
        (("sign", work, "--key", key(base, "alice")), "is a public key"),
        (("verify", work, "--trust", keys["p384.pub"]), "ECDSA secp384r1 keys are not supported"),
        (("verify", work, "--trust", keys["garbage"]), "is not a PEM public key"),
        (("keygen", "--out", base / "alice"), "refusing to overwrite"),
        (("run", "--model", base / "model", "--out", tmp_path / "x", "--model-signature", base / "model" / "config.json"),
         "is not an OpenSSF model-signing bundle"),
    ]
    for args, needle in usage:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: ") and needle in proc.stderr.splitlines()[0], proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
    sign(work, key(base, "alice", public=False))
    f_signature_bit_flipped(work, base)
    shutil.copy(envelope(work, CERTS[1]), envelope(work, CERTS[2]))  # block 1's envelope beside the full-model certificate
    proc = cli("verify", work, "--level", "hashes", "--trust", key(base, "alice"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("signature FAIL")]
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert lines == [
        f"signature FAIL block_000/certificate.json: the signature claiming trusted keyid {keyid(base, 'alice')} does not verify "
        "(a tampered envelope or a signature over other bytes)",
        f"signature FAIL full/certificate.json: its envelope full/certificate.dsse.json (keyid {keyid(base, 'alice')}) signs other "
        "bytes (another certificate, or an older version of this one): re-sign it with blockcert sign",
    ], proc.stdout


@pytest.mark.slow  # spawns the CLI
def test_help_texts_explain_signing():
    for args, needles in ((("sign", "--help"), ("DSSE", "--key", "co-signing")), (("keygen", "--help"), ("0600", "ecdsa-p256")),
                          (("verify", "--help"), ("--trust", "certificate.dsse.json")),
                          (("run", "--help"), ("--model-signature", "model.sig"))):
        proc = cli(*args)
        text = " ".join(proc.stdout.split())
        assert proc.returncode == 0 and all(n in text for n in needles), (args, proc.stdout)


def test_the_docs_name_the_files_and_commands():
    """docs/signing.md and the README name the files and commands the code writes and takes."""
    doc = (ROOT / "docs" / "signing.md").read_text()
    for needle in ("certificate.dsse.json", IN_TOTO, "blockcert keygen --out", "--trust", "--model-signature", "model.sig",
                   "cosign verify-blob-attestation", "PREFIX.key.pem", "PREFIX.pub.pem", "ecdsa-p256"):
        assert needle in doc, needle
    readme = (ROOT / "README.md").read_text()
    assert "blockcert sign" in readme and "--trust" in readme and "docs/signing.md" in readme
