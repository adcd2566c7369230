"""``blockcert stitch``: replace certified blocks by their IR replays and measure the stitched model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from blockcert.cli import app, err_console, out_console
from blockcert.cli import options as opt


def render_stitch(result) -> None:
    m = result.metrics()
    console = out_console()
    table = Table(title=f"Stitched model: {len(result.stitched_blocks)} blocks replaced by their IR")
    table.add_column("layer", justify="right")
    table.add_column("MAE ||x̂ − x||", justify="right")
    table.add_column("max ||x̂ − x||", justify="right")
    for layer, (mae, mx) in enumerate(zip(result.layer_mae, result.layer_max), start=1):
        table.add_row(str(layer), f"{mae:.3e}", f"{mx:.3e}")
    console.print(table)
    console.print(
        f"mean layer MAE {m['mean_layer_mae']:.3e}, worst layer MAE {m['worst_layer_mae']:.3e}, "
        f"max residual error {m['max_residual_error']:.3e}\n"
        f"perplexity: baseline {m['ppl_baseline']:.6f}, stitched {m['ppl_stitched']:.6f}, "
        f"Δ {m['delta_ppl']:.3e} (relative {m['rel_delta_ppl']:.3e})\n"
        f"semantic probe ({m['probe_prompts']} prompts): stitched = baseline {m['probe_stitched_vs_baseline']:.3f}, "
        f"baseline = human label {m['probe_baseline_vs_human']:.3f}, stitched = human label {m['probe_stitched_vs_human']:.3f}\n"
        f"full-model certificate: {result.certificate} (id {result.certificate_id[:16]}…)",
        highlight=False,
    )


@app.command("stitch")
def stitch_command(
    out: Path = typer.Argument(..., help="A finished blockcert run directory."),
    blocks: str = typer.Option("all", "--blocks", "-b", help="Blocks to replace by their IR: all (every certified block), 0,5,10 or 0-4."),
    model: str = typer.Option(None, "--model", "-m", help="The run's model (default: the name recorded in run.json)."),
    stream: bool = typer.Option(False, "--stream", help="Read the model one block at a time from its safetensors shards."),
    device: str = opt.DEVICE,
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON on stdout."),
) -> None:
    """Replay the whole model with the chosen blocks replaced by their IR: per-layer MAE, max residual
    error, perplexity baseline vs stitched, a 60-prompt semantic probe; writes a full-model certificate
    (full/certificate.json) that references every block certificate by id."""
    from blockcert.model.device import resolve_device
    from blockcert.pipeline.stitch import stitch
    from blockcert.spec import parse_blocks

    device = resolve_device(device, announce=lambda m: err_console.print(m, highlight=False))  # before any work
    chosen = None if blocks.strip() == "all" else parse_blocks(blocks, 10**6)
    with err_console.status("Stitching"):
        result = stitch(out, blocks=chosen, model=model, stream=stream, device=device)
    if as_json:
        typer.echo(json.dumps({"stitched_blocks": list(result.stitched_blocks), **result.metrics(),
                               "certificate": result.certificate, "certificate_id": result.certificate_id}, indent=2))
    else:
        render_stitch(result)
