"""``blockcert ir-check``: convert blocks to IR and show the replay error of each against the native block."""

from __future__ import annotations

import json

import attrs
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from blockcert.cli import app, err_console, out_console


@app.command("ir-check")
def ir_check(
    model: str = typer.Option(None, "--model", "-m", help="Local HF directory, .gguf file, or registered name (default: the embedded SmolLM2-135M-Instruct)."),
    arch: str = typer.Option(None, "--arch", help="Architecture plugin to use (default: detected from the model)."),
    prompts: str = typer.Option("builtin:default", "--prompts", help="builtin:<name> or a text file with one prompt per line."),
    blocks: str = typer.Option("all", "--blocks", help="all, 0,5,10 or 0-4."),
    numpy_reference: bool = typer.Option(False, "--numpy/--no-numpy", help="Also replay in numpy float64 (the torch-free reference)."),
    tolerance: float = typer.Option(1e-5, "--tolerance", help="Largest acceptable relative error max|Δ|/max|x|."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable results on stdout."),
) -> None:
    """Convert blocks to IR, replay each on the native residual stream, and print the error per block.

    Exits 1 if any block's relative error exceeds --tolerance.
    """
    from blockcert.model.equivalence import check_blocks
    from blockcert.model.load import load_model
    from blockcert.pipeline.promptsets import load_prompts
    from blockcert.spec import parse_blocks

    texts = load_prompts(prompts)
    with err_console.status("Loading model"):
        loaded = load_model(model, arch=arch)
    selected = parse_blocks(blocks, loaded.native.n_blocks)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console) as bar:
        task = bar.add_task("IR replay vs native", total=len(selected))
        results = check_blocks(loaded, texts, selected, numpy_reference=numpy_reference, progress=lambda _: bar.advance(task))
    worst = max(r.rel if r.rel_numpy is None else max(r.rel, r.rel_numpy) for r in results)
    ok = worst <= tolerance
    if as_json:
        typer.echo(json.dumps({"model": loaded.name, "arch": loaded.arch, "prompts": len(texts), "tolerance": tolerance,
                               "ok": ok, "blocks": [attrs.asdict(r) for r in results]}, indent=2))
    else:
        table = Table(title=f"IR replay vs native: {loaded.name} ({loaded.arch}), {len(texts)} prompts, {results[0].tokens} tokens")
        table.add_column("block", justify="right")
        table.add_column("max |Δ| (torch f32)", justify="right")
        table.add_column("relative", justify="right")
        if numpy_reference:
            table.add_column("max |Δ| (numpy f64)", justify="right")
            table.add_column("relative", justify="right")
        table.add_column("≤ tol", justify="center")
        for r in results:
            rel = r.rel if r.rel_numpy is None else max(r.rel, r.rel_numpy)
            row = [str(r.index), f"{r.max_abs:.3e}", f"{r.rel:.3e}"]
            if numpy_reference:
                row += [f"{r.max_abs_numpy:.3e}", f"{r.rel_numpy:.3e}"]
            row.append("[green]yes[/]" if rel <= tolerance else "[red]no[/]")
            table.add_row(*row)
        out_console().print(table)
        out_console().print(f"worst relative error {worst:.3e} (tolerance {tolerance:g}): " + ("[green]all blocks match[/]" if ok else "[red]mismatch[/]"))
    if not ok:
        raise typer.Exit(1)

