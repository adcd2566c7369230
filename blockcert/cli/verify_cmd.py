"""``blockcert verify``: re-derive every claim of a run's certificates from its artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from blockcert.cli import app, err_console, out_console
from blockcert.cli import options as opt


@app.command("verify")
def verify_command(
    path: Path = typer.Argument(..., help="A blockcert run directory, or one block certificate.json."),
    level: str = typer.Option("replay", "--level", "-l", help="hashes | replay | full (full also needs --model)."),
    reference: str = typer.Option("torch", "--reference", help="torch (float32, as the producer) or numpy (float64, never imports torch)."),
    model: str = typer.Option(None, "--model", "-m", help="With --level full: the model to check against the certificates."),
    tau_act: float = opt.TAU_ACT,
    tau_loss: float = opt.TAU_LOSS,
    alpha_act: float = opt.ALPHA_ACT,
    alpha_loss: float = opt.ALPHA_LOSS,
    policy_name: str = opt.POLICY,
    noise_k: float = opt.NOISE_K,
    device: str = opt.DEVICE,
    tol_replay: float = typer.Option(None, "--tol-replay-units", help="Per-token band on recomputed errors, in float32 roundings of that token's norm (default 64; 128 with --reference numpy)."),
    tol_trace: float = typer.Option(None, "--tol-trace-units", help="With --level full: per-token band on stored vs re-captured residuals, in roundings of the model dtype (default 128, capped at τ_act/8; 512, not capped, with --reference numpy)."),
    tol_loss: float = typer.Option(None, "--tol-loss", help="With --level full: per-token band on stored vs re-run token losses, in nats (default 2e-4)."),
    tol_tokens: int = typer.Option(None, "--tol-tokens", help="Tokens whose path match may flip (default 0)."),
    stream: bool = typer.Option(False, "--stream", help="With --level full: read the model one block at a time from its safetensors shards."),
    show_all: bool = typer.Option(False, "--all-checks", help="List every check, not only the failed ones."),
    trust: list[Path] = typer.Option(None, "--trust", help="A public key (PEM, ed25519 or ECDSA P-256) whose signatures you accept; "
                                     "repeatable. Then every certificate must carry a DSSE envelope (certificate.dsse.json, "
                                     "from blockcert sign) over its exact bytes, validly signed by one of these keys. "
                                     "Without --trust, envelopes that are there are checked and their key ids reported."),
    as_json: bool = opt.as_json("Machine-readable report on stdout."),
) -> None:
    """Verify certificates: schema, canonical bytes, artifact digests and paths (hashes); replay every IR
    and recompute the metrics and the verdict under YOUR policy (replay); re-check the model itself (full).
    The policy flags are the verifier's own: a certificate can never loosen them. With --trust, also who signed
    each certificate (docs/signing.md).

    Exit code 0 if every certificate verifies, 1 if any check fails, 2 for a usage error.
    """
    import attrs

    from blockcert.errors import UserError
    from blockcert.verifier.core import Tolerances, verify

    policy = opt.policy(tau_act, tau_loss, alpha_act, alpha_loss, policy_name, noise_k)
    from blockcert.model.device import resolve_device

    device = resolve_device(device, announce=lambda m: err_console.print(m, highlight=False))  # before any work
    given = {k: v for k, v in (("replay_units", tol_replay), ("trace_units", tol_trace), ("loss_abs", tol_loss), ("tokens", tol_tokens))
             if v is not None}
    bad = [f"--tol-{k.split('_')[0]}{'-units' if k.endswith('units') else ''}" for k, v in given.items() if not v >= 0]
    if bad:
        raise UserError(f"{', '.join(bad)} must be a number >= 0")
    tol = attrs.evolve(Tolerances.for_reference(reference), **given)
    with err_console.status(f"Verifying {path} (level {level}, {reference} reference)"):
        report = verify(path, level=level, reference=reference, policy=policy, tolerances=tol, model=model, stream=stream, device=device,
                        trust=trust or None)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        console = out_console()
        console.print(f"policy: {policy.describe()}; level {level}, {reference} reference", highlight=False)
        console.print(f"tolerances: {tol.describe(reference)}", highlight=False)
        signed = report.trusted is not None or any(c.signature not in ("", "unsigned") for c in report.certificates)
        if signed:
            console.print("signatures: " + (f"required, from a trusted key ({', '.join(report.trusted)})" if report.trusted is not None
                                            else "reported, not checked (no --trust)"), highlight=False, soft_wrap=True)
        table = Table(title=f"Certificates in {report.root}")
        for col in ("certificate", "block", "checks", "claims certified", "certified (recomputed)", *(("signed by",) if signed else ()),
                    "verified"):
            table.add_column(col, overflow="fold")
        for cert in report.certificates:
            passed = sum(ch.ok for ch in cert.checks)
            table.add_row(cert.path, "" if cert.block is None else str(cert.block), f"{passed}/{len(cert.checks)}",
                          _yn(cert.claimed_certified), _yn(cert.certified), *((_signer(cert),) if signed else ()),
                          "[green]yes[/]" if cert.ok else "[red]NO[/]")
        console.print(table)
        for cert in report.certificates:
            rows = [ch for ch in cert.checks if show_all or not ch.ok]
            if not rows:
                continue
            detail = Table(title=cert.path, title_justify="left")
            for col in ("check", "result", "claimed", "recomputed", "detail"):
                detail.add_column(col, overflow="fold")
            for ch in rows:
                detail.add_row(ch.name, "[green]pass[/]" if ch.ok else "[red]FAIL[/]", ch.claimed, ch.actual, ch.detail)
            console.print(detail)
        for cert in report.certificates:  # who signed is what an auditor asks first: one plain line per failed certificate
            if cert.signature == "invalid":
                failed = [ch for ch in cert.checks if not ch.ok and ("signature" in ch.name or "envelope" in ch.name)]
                why = failed[0].detail or failed[0].name if failed else ""
                console.print(f"[red]signature FAIL[/] {why}", highlight=False, soft_wrap=True)
        console.print("[green]verified[/]" if report.ok else "[red]verification failed[/]")
    if not report.ok:
        raise typer.Exit(1)


def _signer(cert) -> str:
    ids = ", ".join(k[:16] for k in cert.signers)
    shown = {"verified": ids, "unchecked": f"{ids} (not checked)", "invalid": "[red]invalid[/]", "unsigned": "unsigned"}
    return shown.get(cert.signature, "")


def _yn(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")
