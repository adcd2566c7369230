"""``blockcert bound``: Theorem 1 from a run's certificates, beside the observed stitched deviation."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from blockcert.cli import app, err_console, out_console


def _sci(x: float | None) -> str:
    return "—" if x is None else f"{x:.3e}"


def render_bound(report) -> None:
    from blockcert.bounds.compose import sci_up

    console = out_console()
    sound = report.sound
    table = Table(title=f"Theorem 1 on {report.root}: {len(report.stitched_blocks)} of {report.n_blocks} blocks stitched "
                        "(sequence norm: Frobenius over tokens)")
    for col in ("block", "ε_token", "ε_seq", "L analytic", "L hybrid", "hybrid radius", "L used", "Jacobian lower",
                "bound δ after block (mixed)", "observed max"):
        table.add_column(col, justify="right")
    for k, b in enumerate(report.blocks):
        observed = report.observed_layer_max[k] if report.observed_layer_max else None
        table.add_row(str(b.index), _sci(b.epsilon_token) if b.stitched else "native", _sci(b.epsilon_seq) if b.stitched else "0",
                      _sci(b.analytic), _sci(b.hybrid), _sci(b.hybrid_input_radius), sound.lips[k], _sci(b.empirical_lower),
                      sci_up(sound.per_layer[k]), _sci(observed))
    console.print(table)
    for v in report.variants:
        mark = "[green]sound[/]" if v.sound else "[yellow]not a bound[/]"
        console.print(f"  {v.name:>14}: {sci_up(v.bound.exact)}  ({mark}) {v.label}", highlight=False)
    console.print(f"  {'Σ ε_i':>14}: {sci_up(report.sum_eps.sum_eps_exact)}  (the bound if every L_i ≤ 1; "
                  f"{'so it holds' if report.sum_eps.lips_le_one else 'here the L_i are > 1, so it is not a bound'})", highlight=False)
    if report.observed_max is not None:
        ratio = report.to_dict()["observed"]["bound_over_observed_log10"]
        console.print(f"observed max residual error of the stitched replay: {report.observed_max:.4g}; the sound bound is "
                      f"10^{ratio:.1f} times larger" if ratio is not None else "", highlight=False)
        console.print("[green]the bound holds at every layer[/]" if report.holds else
                      "[bold red]the bound is BELOW the observed deviation at some layer: a hypothesis failed[/]")
    else:
        console.print("no stitched evaluation of these blocks: run `blockcert stitch` to compare with the observed deviation")
    console.print("hypotheses:")
    for h in report.hypotheses:
        color = {"certified": "green", "measured": "green", "checked": "green", "empirical": "yellow", "violated": "red"}[h.status]
        console.print(f"  [{color}]{h.status:>9}[/] {h.name}: {h.detail}", highlight=False)


@app.command("bound")
def bound_command(
    out: Path = typer.Argument(..., help="A blockcert run directory whose blocks were certified with --bounds."),
    blocks: str = typer.Option(None, "--blocks", "-b", help="Blocks replaced by their IR (ε = 0 for the others). Default: "
                               "those of full/eval.json if the run was stitched, else all."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    emit: str = typer.Option(None, "--emit", metavar="coq|lean", help="Also write the bound as a theorem instance for "
                             "the mechanised Theorem 1 (lean/coq/GlobalBound.v or lean/GlobalBound.lean); prints the "
                             "command that checks it."),
    emit_out: Path = typer.Option(None, "--emit-out", metavar="FILE", help="Where --emit writes (default: "
                                  "./blockcert_bound.v or ./BlockcertBound.lean)."),
    variant: str = typer.Option("mixed", "--variant", help="Which bound --emit states: mixed (the sound headline), "
                                "analytic, hybrid or per-token-eps."),
) -> None:
    """Instantiate the global composition bound (Theorem 1, Σ_i ε_i Π_{j>i} L_j) from the block certificates,
    in exact rational arithmetic rounded outward, beside the observed max residual of the stitched replay.

    Exit code 0; 1 if a sound bound is below the observed deviation; 2 for a usage error."""
    from blockcert.bounds.compose import bound
    from blockcert.errors import UserError

    if emit is None and (emit_out is not None or variant != "mixed"):
        raise UserError(f"{'--emit-out' if emit_out is not None else '--variant'} needs --emit coq or --emit lean")
    if emit is not None:
        from blockcert.bounds.emit import target

        emit_out = target(emit, emit_out, out, variant)  # argument mistakes exit 2 before any work
    with err_console.status("Verifying certificates and composing bounds"):
        report = bound(out, blocks=blocks)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        render_bound(report)
    if emit is not None:
        from blockcert.bounds.emit import emit as write_instance

        done = write_instance(report, emit, emit_out, variant=variant)
        if not done.instance.sound:
            err_console.print(f"[yellow]warning:[/] variant {variant} is not a valid bound for this run; the file states "
                              "it only as a conditional theorem", highlight=False, soft_wrap=True)
        err_console.print(f"wrote {done.path} ({emit}: {done.instance.n} blocks, variant {variant}, bound {done.instance.decimal})",
                          highlight=False, soft_wrap=True)
        err_console.print(f"check it with: {done.command}", highlight=False, soft_wrap=True)
    if report.holds is False:
        raise typer.Exit(1)
