"""``blockcert minimize``: the smallest certified mechanism of a block (docs/minimize.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from blockcert.cli import app, err_console, out_console
from blockcert.cli import options as opt


@app.command("minimize")
def minimize_command(
    model: str = opt.MODEL,
    blocks: str = opt.blocks("5,15"),
    budget: str = typer.Option("all", "--budget", help="What to take away: heads (query heads), neurons (MLP hidden units), "
                               "rank (a rank per matrix) or all (heads, then neurons, then ranks)."),
    prompts: str = opt.PROMPTS,
    tau_act: float = opt.TAU_ACT,
    tau_loss: float = opt.TAU_LOSS,
    alpha_act: float = opt.ALPHA_ACT,
    alpha_loss: float = opt.ALPHA_LOSS,
    policy_name: str = opt.POLICY,
    noise_k: float = opt.NOISE_K,
    dtype: str = opt.dtype(),
    score: str = typer.Option("attribution", "--score", help="How components are ranked before the search: attribution "
                              "(activation × gradient of the stitched loss, attribution patching; docs/minimize.md)."),
    seed: int = typer.Option(0, "--seed", help="Breaks ties between equal scores (the search is deterministic given it)."),
    refine: int = typer.Option(16, "--refine", help="Greedy refinement: at most this many kept heads and units (lowest "
                               "score first) are each tried for removal after the binary search."),
    held_out: str = typer.Option(None, "--held-out", help="Another prompt set (e.g. builtin:default): each result is also "
                                 "certified, unchanged, on it (heldout/block_<idx>/), and the shift is reported."),
    batch_size: int = opt.BATCH_SIZE,
    out: Path = typer.Option(Path("blockcert-minimize"), "--out", "-o", help="Output directory: minimize.json, search/ "
                             "(the search logs) and runs/block_<idx>/ (one certified run per block)."),
    force: bool = typer.Option(False, "--force", help="Redo a finished minimize run in --out."),
    as_json: bool = opt.as_json("Print minimize.json on stdout."),
) -> None:
    """Find, for each block, the smallest surrogate (kept heads, kept MLP neurons, a rank per matrix) that still
    certifies under the policy, and certify it: binary search on the count kept in attribution-score order,
    then greedy refinement. Each result is an ordinary certified run (runs/block_<idx>/) that `blockcert verify`
    re-derives from the base IR and the masks and re-measures; the search itself is logged and hashed into the
    certificate, not redone by the verifier.

    Exit code 0 when every block's result certifies, 1 when some block has no certified candidate (the best one
    found is still written, certified false), 2 for a usage error."""
    from blockcert.minimize import minimize
    from blockcert.pipeline.promptsets import load_prompts

    policy = opt.policy(tau_act, tau_loss, alpha_act, alpha_loss, policy_name, noise_k)
    load_prompts(prompts)  # a bad prompt file fails before the model loads
    result = minimize(model, blocks=blocks, budget=budget, prompts=prompts, policy=policy, dtype=dtype, out=out, seed=seed,
                      refine=refine, score=score, batch_size=batch_size, force=force, progress=True, held_out=held_out)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        table = Table(title=f"minimize on {result.model} ({result.dtype}), budget {result.budget}")
        held = any(b["held_out"] for b in result.blocks)
        for col in ("block", "heads kept", "neurons kept", "rank kept", "cov_act", "cov_loss", "certified", "candidates", "wall s",
                    *(("held-out cov_act / cov_loss",) if held else ())):
            table.add_column(col, justify="right")
        for b in result.blocks:
            kept, totals, m = b["kept"], b["totals"], b["metrics"]
            ranks = sum(kept["rank"].values()), sum(totals["rank"].values())
            table.add_row(str(b["block"]), f"{kept['heads']}/{totals['heads']}", f"{kept['neurons']}/{totals['neurons']}",
                          f"{ranks[0]}/{ranks[1]}", f"{m['cov_act']:.3f}", f"{m['cov_loss']:.3f}", "yes" if b["certified"] else "NO",
                          str(b["candidates"]), f"{b['seconds']:.0f}", *((_held(b["held_out"]),) if held else ()))
        out_console().print(table)
        out_console().print(f"written to {result.out}/ (minimize.json, search/, runs/); rank kept is the sum over the block's "
                            "matrices. `blockcert verify` each runs/block_<idx> to re-derive and re-measure.", highlight=False)
    if not result.certified_all:
        bad = ", ".join(str(b["block"]) for b in result.blocks if not b["certified"])
        err_console.print(f"[bold red]not certified:[/] block(s) {bad}: no candidate meets the policy, not even the whole block; "
                          "the best candidate found (the whole block) is written with certified false.", highlight=False)
        raise typer.Exit(1)


def _held(h: dict | None) -> str:
    if not h:
        return ""
    m = h["metrics"]
    return f"{m['cov_act']:.3f} / {m['cov_loss']:.3f}" + ("" if h["certified"] else " (not certified)")
