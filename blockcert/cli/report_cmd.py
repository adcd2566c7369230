"""``blockcert report``: a run directory as one self-contained HTML page (or a Markdown summary)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from blockcert.cli import app, err_console


@app.command("report")
def report_command(
    out: Path = typer.Argument(..., help="A blockcert run directory."),
    output: str = typer.Option(None, "--output", "-o", help="Where to write the report (default: <OUT>.report.html or .md, beside "
                               "the run directory; never inside it). '-' writes to stdout."),
    fmt: str = typer.Option("html", "--format", "-f", help="html (one self-contained page) or md (a Markdown summary)."),
    compare: list[str] = typer.Option(None, "--compare", "-c", help="Another run directory of the same model and prompts to "
                                      "put beside this one (repeatable): mean cov_act, MAE, ratio."),
    edit_sweep: Path = typer.Option(None, "--edit-sweep", help="An edit-sweep JSON file (as `blockcert edit sweep` writes it)."),
    minimize: Path = typer.Option(None, "--minimize", help="A `blockcert minimize` output directory: adds the per-block "
                                  "kept-fraction chart and table of the smallest certified surrogates."),
    direction_sweep: Path = typer.Option(None, "--direction-sweep", help="A `blockcert edit direction-sweep` output directory: "
                                         "adds accuracy and KL against the layer, each row checked against its edit certificate."),
    tokenizer: str = typer.Option(None, "--tokenizer", help="Tokenizer to show tokens as text: a local HF directory, a .gguf "
                                  "file, a model name, or 'none' for token ids (default: the run's model)."),
    token_blocks: str = typer.Option("auto", "--token-blocks", help="Blocks with per-token text heat maps: auto (weak blocks, "
                                     "else the worst), all, none, or a list such as 0,15 or 10-12."),
) -> None:
    """Write a report of a run: summary and verification (level hashes), per-block metrics against the policy,
    per-token error heat maps, the stitched model, Lipschitz bounds and Theorem 1, derived runs side by side,
    an edit sweep, a direction sweep, minimal mechanisms (--minimize), and every certificate id and digest. Reads artifacts only: the model is never loaded."""
    from blockcert.report.write import render, write_report

    start = time.perf_counter()
    with err_console.status(f"Verifying {out} (level hashes) and building the report"):
        if output == "-":
            from blockcert.report.gather import collect

            view = collect(out, compare=compare or (), edit_sweep=edit_sweep, tokenizer=tokenizer, token_blocks=token_blocks,
                           minimize=minimize, direction_sweep=direction_sweep)
            sys.stdout.write(render(view, fmt))
            target = None
        else:
            target, view = write_report(out, output, fmt=fmt, compare=compare or (), edit_sweep=edit_sweep, tokenizer=tokenizer,
                                        token_blocks=token_blocks, minimize=minimize, direction_sweep=direction_sweep)
    status = "every certificate verifies" if view.verified else "VERIFICATION FAILED"
    line = (f"{view.n_certified}/{len(view.blocks)} blocks certified, {status} (level hashes); "
            f"built in {time.perf_counter() - start:.1f} s")
    if target is None:
        err_console.print(line, highlight=False)
    else:
        typer.echo(f"report written to {target}")
        err_console.print(line, highlight=False)
