"""``blockcert sign`` and ``blockcert keygen``: DSSE envelopes beside certificates, and keys to sign them with."""

from __future__ import annotations

from pathlib import Path

import typer

from blockcert.cli import app, out_console


@app.command("sign")
def sign_command(
    path: Path = typer.Argument(..., help="A run directory (every block_*/certificate.json and full/certificate.json), "
                                "a full/ or edit directory, or one certificate.json."),
    key: Path = typer.Option(..., "--key", "-k", help="Your private key, PEM: ed25519 or ECDSA P-256 (blockcert keygen makes one)."),
) -> None:
    """Sign certificates: write a DSSE envelope (payload type application/vnd.in-toto+json, payload = the
    certificate's exact bytes) beside each one, e.g. block_000/certificate.dsse.json. The certificates, their
    ids and every other file stay as they are. An envelope already there over the same bytes gains your signature
    beside the others (co-signing); one over other bytes is replaced. Check with
    `blockcert verify PATH --trust YOUR.pub.pem`; cosign and in-toto tooling read the same envelopes (docs/signing.md).

    Exit code 0 when every certificate is signed, 2 for a usage error (a missing, unreadable or unsupported key,
    a path that holds no certificate).
    """
    from blockcert.signing import sign

    signed = sign(path, key)
    console = out_console()
    for s in signed:
        note = " (replaced an envelope over other bytes)" if s.replaced else ""
        others = [k for k in s.signers if k != s.keyid]
        also = f"; also signed by {', '.join(k[:16] for k in others)}" if others else ""
        console.print(f"signed {s.certificate} -> {s.envelope.name}{note}{also}", highlight=False, soft_wrap=True)
    console.print(f"{len(signed)} certificate{'s' if len(signed) != 1 else ''} signed by keyid {signed[0].keyid}", highlight=False,
                  soft_wrap=True)


@app.command("keygen")
def keygen_command(
    out: Path = typer.Option(..., "--out", "-o", help="Prefix: writes PREFIX.key.pem (private, mode 0600) and PREFIX.pub.pem."),
    kind: str = typer.Option("ed25519", "--type", help="ed25519 (default) or ecdsa-p256."),
    force: bool = typer.Option(False, "--force", help="Replace existing key files with that prefix."),
) -> None:
    """Make a signing key pair for `blockcert sign`: the private key as unencrypted PKCS#8 PEM (mode 0600: keep it
    secret), the public key as PEM for `blockcert verify --trust` (and cosign's --key). Prints the key id
    (securesystemslib's default key id, as in in-toto layouts) that envelopes and verify reports name.

    Exit code 0, or 2 for a usage error (an unknown --type, existing files without --force).
    """
    from blockcert.signing import keygen

    private, public, keyid = keygen(out, kind, force)
    console = out_console()
    console.print(f"private key {private} (keep it secret)\npublic key  {public}\nkeyid       {keyid}", highlight=False, soft_wrap=True)
