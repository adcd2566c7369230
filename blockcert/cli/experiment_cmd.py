"""``blockcert experiment``: re-run the paper's Tables 1-6 and its prompt-shift experiment on a model."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import typer
from rich.table import Table

from blockcert.cli import app, out_console
from blockcert.cli import options as opt

experiment_app = typer.Typer(
    name="experiment",
    help="Regenerate analogs of the paper's tables on a model: every number from fresh (or reused) blockcert runs "
         "kept under --out/runs/, a results.json, a table on stdout.",
    no_args_is_help=True,
)
app.add_typer(experiment_app, name="experiment")

# Options every experiment takes (typer reads these as metadata, so one instance can serve every command);
# :func:`experiment` gives each command all of them, in this order, before its own.
BLOCKS = opt.blocks("0,5,10,15,20", "Blocks to measure: 0,5,10, 0-4 or all (the paper's 0,5,10,15,20 by default).")
DTYPE = opt.dtype("bfloat16", "Native precision: bfloat16 (default; the native block rounds to bfloat16 and the IR does not, so "
                  "they differ by rounding, as in the paper), float16, or float32 (the extraction is then exact up to float32 "
                  "rounding). The IR always replays in float32.")
PROMPTS = typer.Option("builtin:stress", "--prompts", "-p", help="The evaluation prompt set (the paper's ten stress prompts by default): "
                       "builtin:NAME, a text file (one prompt per line) or .jsonl.")
OUT = typer.Option(None, "--out", "-o", help="Output directory: runs/ and results.json (default: blockcert-experiments/<experiment>).")
FORCE = typer.Option(False, "--force", help="Redo every run instead of reusing the finished ones in --out.")
AS_JSON = opt.as_json("Print results.json on stdout instead of the table (progress still goes to stderr).")
COMMON = [("model", str, opt.MODEL), ("blocks", str, BLOCKS), ("dtype", str, DTYPE), ("prompts", str, PROMPTS),
          ("tau_act", float, opt.TAU_ACT), ("tau_loss", float, opt.TAU_LOSS), ("alpha_act", float, opt.ALPHA_ACT),
          ("alpha_loss", float, opt.ALPHA_LOSS), ("policy_name", str, opt.POLICY), ("noise_k", float, opt.NOISE_K), ("device", str, opt.DEVICE),
          ("batch_size", int, opt.BATCH_SIZE), ("out", Path, OUT), ("force", bool, FORCE),
          ("as_json", bool, AS_JSON)]
RANKS = typer.Option("16,32,64", "--ranks", help="Ranks r of the lowrank:r=R rows (truncated SVD of W_Q, W_K, W_V, W_O).")
SURROGATES = typer.Option(["int8"], "--surrogate", help="Another surrogate row after the low-rank ones (repeatable; default int8). "
                          "Passing any replaces the default.")
ABLATIONS = typer.Option(["drop-rope", "invert-mask", "zero-wv", "noise-wq:sigma=0.01"], "--ablate",
                         help="An ablation row (repeatable). Passing any replaces the paper's four.")
LEVELS = typer.Option("0.90,0.94,0.97", "--levels", help="Table 4: the cov_act levels, comma-separated.")
SIZES = typer.Option("1,4,10", "--sizes", help="Table 5: the prompt-set sizes k, comma-separated.")
CERTIFY = typer.Option("builtin:default", "--certify-prompts", help="Prompt shift: the set the blocks are certified on "
                       "(then re-measured on --prompts).")


def _numbers(text: str, flag: str, kind: type) -> list[Any]:
    from blockcert.errors import UserError

    try:
        values = [kind(p) for p in (part.strip() for part in text.split(",")) if p]
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated {'integers' if kind is int else 'numbers'}") from None
    if not values:
        raise UserError(f"{flag} {text!r}: give at least one value")
    return values


@attrs.frozen
class Common:
    """What every experiment command was given: the runs' settings, where to write, how to print."""

    settings: Any
    out: Path | None
    as_json: bool

    def directory(self, name: str) -> Path:
        return _out(self.out, name)

    @classmethod
    def of(cls, model: str | None, blocks: str, dtype: str, prompts: str, tau_act: float, tau_loss: float, alpha_act: float,
           alpha_loss: float, policy_name: str, noise_k: float, device: str, batch_size: int, out: Path | None, force: bool,
           as_json: bool) -> Common:
        from blockcert.errors import UserError
        from blockcert.model.load import DTYPES
        from blockcert.pipeline.experiments import Settings

        policy = opt.policy(tau_act, tau_loss, alpha_act, alpha_loss, policy_name, noise_k)
        if dtype not in DTYPES:
            raise UserError(f"unknown --dtype {dtype!r}", f"choose one of: {', '.join(DTYPES)}")
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        from blockcert.model.device import resolve_device

        resolve_device(device)  # a device this machine lacks fails before any work
        settings = Settings(model=model, blocks=blocks, dtype=dtype, prompts=prompts, policy=policy, batch_size=batch_size, force=force,
                            device=device)
        return cls(settings, out, as_json)


def experiment(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(common, **own_options)`` as ``blockcert experiment NAME`` with the :data:`COMMON` options
    first, then its own: the shared signature is written once, here."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in inspect.signature(fn, eval_str=True).parameters.values()
               if p.name != "common"]
        params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=t) for n, t, d in COMMON] + own

        @functools.wraps(fn)
        def command(**kw: Any) -> None:
            common = Common.of(**{n: kw.pop(n) for n, _, _ in COMMON})
            fn(common, **kw)

        del command.__wrapped__  # typer reads the signature below, not fn's
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        experiment_app.command(name)(command)
        return command

    return register


def _out(out: Path | None, name: str) -> Path:
    from blockcert.pipeline.experiments import OUT_ROOT

    return out if out is not None else OUT_ROOT / name


# -- rendering -----------------------------------------------------------------------------------------


def _show(title: str, table: Table, note: str | None = None) -> None:
    """The title on its own line (a narrow table would fold a long rich title), the table, a note under it."""
    console = out_console()
    console.print(title, style="bold", highlight=False, markup=False)
    console.print(table)
    if note:
        console.print(note, highlight=False, markup=False)  # plain text: "[low, high]" is not a style tag


def _ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}" if r < 1e4 else f"{r:.2e}"


def _about(setup: Any) -> str:
    p = setup.policy
    return (f"{setup.model} ({setup.arch}, {setup.dtype}), blocks {','.join(map(str, setup.blocks))}; "
            f"τ_act={p.tau_act:g}, τ_loss={p.tau_loss:g}, α_act={p.alpha_act:g}, α_loss={p.alpha_loss:g}")


def _ci(i: Any, fmt: str = ".3f") -> str:
    """A bootstrap interval as ``mean [low, high]``."""
    return f"{i.mean:{fmt}} [{i.low:{fmt}}, {i.high:{fmt}}]"


def _num(x: float | None, fmt: str = ".2e") -> str:
    return "none" if x is None else f"{x:{fmt}}"


def render_extraction(t: Any) -> None:
    from blockcert.pipeline.experiments import PAPER_TABLE1

    table = Table()
    for col in ("block", "mean cov_act [95% CI]", "mean MAE [95% CI]", "min cov_act", "mean cov_loss", "ε", "certified",
                "paper (Llama-2-7B): cov_act, error"):
        table.add_column(col, justify="right")
    for b in t.blocks:
        paper = PAPER_TABLE1.get(b.block)
        table.add_row(str(b.block), _ci(b.cov_act), _ci(b.mae, ".2e"), f"{b.min_cov_act:.3f}", f"{b.cov_loss.mean:.3f}",
                      f"{b.epsilon:.2e}", "yes" if b.certified else "[red]no[/]", "—" if paper is None else f"{paper[0]:.3f}, {paper[1]:.2e}")
    n = t.blocks[0].n_prompts if t.blocks else 0
    _show(f"Table 1 analog, the extraction per block, on {t.prompts}", table,
          f"Means over the {n} prompts of each prompt's value; [low, high]: 95% bootstrap interval over prompts (2,000 resamples, "
          "seed 0). The paper's column is its Llama-2-7B table.")


def render_lipschitz(t: Any) -> None:
    from blockcert.pipeline.experiments import PAPER_TABLE6

    table = Table()
    for col in ("block", "ε", "K_attn", "K_mlp", "K_mlp local", "L_block (hybrid)", "analytic", "paper (TinyLlama): ε, K_attn, K_MLP, L_block"):
        table.add_column(col, justify="right")
    for b in t.blocks:
        paper = PAPER_TABLE6.get(b.block)
        table.add_row(str(b.block), f"{b.epsilon:.2e}", _num(b.K_attn), _num(b.K_mlp), _num(b.K_mlp_local), _num(b.hybrid_upper_bound),
                      _num(b.analytic_upper_bound), "—" if paper is None else ", ".join(f"{v:.1e}" for v in paper))
    notes = sorted({b.bounds_note for b in t.blocks if b.bounds_note})
    radius = t.blocks[0].radius if t.blocks else 1.0
    _show(f"Table 6 analog, Lipschitz quantities per block, on {t.prompts}", table,
          f"From each block's bounds.json (docs/bounds.md): K_mlp local on ℓ2 balls of radius {radius:g} around the traced inputs (the "
          "paper's auto-LiRPA quantity); L_block (hybrid) = (1 + K_attn)(1 + K_mlp local), which keeps the MLP's residual identity the "
          "paper's (1 + K_attn) K_MLP drops." + ("".join(f"\n{n}" for n in notes) if notes else ""))


def render_derived(t: Any) -> None:
    what = "low-rank and other surrogates" if t.experiment == "table2" else "ablations"
    table = Table()
    for col in ("row", "mean cov_act", "mean MAE", "error ratio", "mean cov_path", "mean cov_loss",
                "all prompts: cov_act [95% CI]", "MAE [95% CI]", "error ratio"):
        table.add_column(col, justify="left" if col == "row" else "right")
    for r in t.rows:
        a = r.all_prompts
        table.add_row(r.label, f"{r.cov_act:.3f}", f"{r.mae:.3e}", _ratio(r.error_ratio), f"{r.cov_path:.3f}", f"{r.cov_loss:.3f}",
                      _ci(a.cov_act), _ci(a.mae, ".2e"), _ratio(a.error_ratio))
    best = ", ".join(f"{c.block}→{c.prompt}" for c in t.rows[0].blocks)
    _show(f"{t.experiment.replace('table', 'Table ')} analog, {what}, on {t.prompts} (best prompt per block, and all prompts)", table,
          f"The first five columns are means over blocks of the block's value on its best prompt (block→prompt: {best}; the baseline "
          "run's best_prompt, the same prompt in every row), the paper's convention. Error ratio = mean MAE / the baseline's. "
          "The last three are over every prompt of every block, with 95% bootstrap intervals over those cells.")


def render_thresholds(t: Any) -> None:
    alpha = t.setup.policy.alpha_act
    table = Table()
    table.add_column("block", justify="right")
    for level in t.levels:
        table.add_column(f"cov_act ≥ {level:.2f}", justify="right")
    table.add_column(f"τ_act for cov_act ≥ {alpha:g}", justify="right")
    for b in t.blocks:
        table.add_row(str(b.block), *(f"{n}/{b.n_prompts}" for n in b.passing), f"{b.tau_act_needed:.3e}")
    _show(f"Table 4 analog, threshold sensitivity, on {t.prompts}: prompts with cov_act ≥ level and cov_loss ≥ {t.loss_level:.2f}",
          table, f"Last column: the smallest τ_act under which the block's cov_act over all {t.blocks[0].n_prompts} prompts "
                 f"would reach α_act = {alpha:g} (the per-token error at that quantile).")


def render_sizes(t: Any) -> None:
    table = Table()
    table.add_column("block", justify="right")
    for k in t.sizes:
        table.add_column(f"k = {k}", justify="right")
    for b in t.blocks:
        table.add_row(str(b.block), *(f"{v:.3f}" for v in b.min_cov_act))
    _show(f"Table 5 analog, prompt-set size, on {t.prompts}: min per-prompt cov_act over the first k prompts", table)


def render_shift(t: Any) -> None:
    from blockcert.pipeline.experiments import prompt_label

    a, b = prompt_label(t.certify_prompts), prompt_label(t.shifted_prompts)
    p = t.setup.policy
    table = Table()
    table.add_column("block", justify="right")
    for col in (f"MAE {a}", f"MAE {b}", f"cov_act {a}", f"cov_act {b}", f"cov_loss {a}", f"cov_loss {b}", "certified", "same IR"):
        table.add_column(col, justify="right")
    yes = lambda ok: "[green]yes[/]" if ok else "[red]no[/]"  # noqa: E731
    for r in t.blocks:
        table.add_row(str(r.block), f"{r.certify.mae:.3e}", f"{r.shifted.mae:.3e}", f"{r.certify.cov_act:.3f}",
                      f"{r.shifted.cov_act:.3f}", f"{r.certify.cov_loss:.3f}", f"{r.shifted.cov_loss:.3f}",
                      f"{yes(r.certify.certified)} → {yes(r.shifted.certified)}", yes(r.same_extraction))
    _show(f"Prompt shift: certified on {t.certify_prompts}, re-measured on {t.shifted_prompts}", table,
          f"All-prompt values of each set; certified ({a} → {b}) = cov_act ≥ α_act={p.alpha_act:g} and cov_loss ≥ "
          f"α_loss={p.alpha_loss:g}; same IR = identical weight tensors in the two runs.")


def _finish(result: Any, out: Path, as_json: bool, render: Any) -> None:
    from blockcert.pipeline.experiments import RESULTS, RUNS_DIR, to_json

    if as_json:
        typer.echo(json.dumps(to_json(result), indent=2))
        return
    out_console().print(_about(result.setup), highlight=False)
    render(result)
    made = sum(not r.reused for r in result.runs)
    out_console().print(f"{len(result.runs)} runs in {out / RUNS_DIR}/ ({made} made now, {len(result.runs) - made} reused; "
                        f"each verifies with `blockcert verify {out / RUNS_DIR}/<run>`); results in {out / RESULTS}",
                        highlight=False)


# -- commands ------------------------------------------------------------------------------------------


@experiment("table1")
def table1_command(common: Common) -> None:
    """Table 1: per block, mean cov_act and MAE over the prompts (bootstrap intervals), min cov_act, cov_loss, ε."""
    from blockcert.pipeline.experiments import table1

    result = table1(common.settings, common.directory("table1"), progress=True)
    _finish(result, common.directory("table1"), common.as_json, render_extraction)


@experiment("table6")
def table6_command(common: Common) -> None:
    """Table 6: per block, ε and the Lipschitz bounds (K_attn, K_mlp, the block bounds) of the extraction, beside the paper's."""
    from blockcert.pipeline.experiments import table6

    result = table6(common.settings, common.directory("table6"), progress=True)
    _finish(result, common.directory("table6"), common.as_json, render_lipschitz)


@experiment("table2")
def table2_command(common: Common, ranks: str = RANKS, surrogates: list[str] = SURROGATES) -> None:
    """Table 2: the extraction vs low-rank attention surrogates (and int8), on each block's best prompt."""
    from blockcert.pipeline.experiments import table2

    rank_list = _numbers(ranks, "--ranks", int)
    result = table2(common.settings, common.directory("table2"), ranks=rank_list, surrogates=surrogates, progress=True)
    _finish(result, common.directory("table2"), common.as_json, render_derived)


@experiment("table3")
def table3_command(common: Common, ablations: list[str] = ABLATIONS) -> None:
    """Table 3: the extraction vs ablations (drop RoPE, invert the mask, zero W_V, noise on W_Q), on each block's best prompt."""
    from blockcert.pipeline.experiments import table3

    result = table3(common.settings, common.directory("table3"), ablations=ablations, progress=True)
    _finish(result, common.directory("table3"), common.as_json, render_derived)


@experiment("table4")
def table4_command(common: Common, levels: str = LEVELS) -> None:
    """Table 4: per block, how many prompts reach each cov_act level with cov_loss ≥ α_loss (the extraction's run)."""
    from blockcert.pipeline.experiments import table4

    result = table4(common.settings, common.directory("table4"), levels=_numbers(levels, "--levels", float), progress=True)
    _finish(result, common.directory("table4"), common.as_json, render_thresholds)


@experiment("table5")
def table5_command(common: Common, sizes: str = SIZES) -> None:
    """Table 5: per block, the minimum per-prompt cov_act over the first k prompts (the extraction's run)."""
    from blockcert.pipeline.experiments import table5

    result = table5(common.settings, common.directory("table5"), sizes=_numbers(sizes, "--sizes", int), progress=True)
    _finish(result, common.directory("table5"), common.as_json, render_sizes)


@experiment("prompt-shift")
def prompt_shift_command(common: Common, certify_prompts: str = CERTIFY) -> None:
    """Prompt shift: certify on --certify-prompts, re-measure the same extraction on --prompts."""
    from blockcert.pipeline.experiments import prompt_shift

    result = prompt_shift(common.settings, common.directory("prompt-shift"), certify_prompts=certify_prompts, progress=True)
    _finish(result, common.directory("prompt-shift"), common.as_json, render_shift)


@experiment("all")
def all_command(common: Common, ranks: str = RANKS, surrogates: list[str] = SURROGATES, ablations: list[str] = ABLATIONS,
                levels: str = LEVELS, sizes: str = SIZES, certify_prompts: str = CERTIFY) -> None:
    """Every experiment, each run made once and shared (the extraction's run on --prompts, with bounds, serves Tables 1-6)."""
    from blockcert.pipeline.experiments import run_all

    result = run_all(common.settings, common.directory("all"), ranks=_numbers(ranks, "--ranks", int), surrogates=surrogates,
                     ablations=ablations, levels=_numbers(levels, "--levels", float), sizes=_numbers(sizes, "--sizes", int),
                     certify_prompts=certify_prompts, progress=True)

    def render(r: Any) -> None:
        for table, fn in ((r.table1, render_extraction), (r.table6, render_lipschitz), (r.table2, render_derived), (r.table3, render_derived), (r.table4, render_thresholds),
                          (r.table5, render_sizes), (r.prompt_shift, render_shift)):
            fn(table)

    _finish(result, common.directory("all"), common.as_json, render)
