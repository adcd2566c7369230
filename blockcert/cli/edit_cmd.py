"""``blockcert edit``: certified local edits (MLP α-scaling), the refusal harness, sweeps, human labels."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from blockcert.cli import app, err_console, out_console
from blockcert.cli import options as opt

edit_app = typer.Typer(
    help="Certified local edits (paper §7): apply an edit, measure it on the refusal/safety corpus, write an edit certificate.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(edit_app, name="edit")

MODEL_HELP = "Local HF directory, .gguf file, or registered name (default: the embedded SmolLM2-135M-Instruct)."
CORPUS_HELP = "Labelled corpus: builtin:refusal (60 prompts: 30 answer, 30 refuse) or a JSONL file of the same shape."


def _decoding(max_new_tokens: int, batch_size: int, no_chat_template: bool):
    from blockcert.edit.certify import Decoding

    return Decoding(max_new_tokens=max_new_tokens, batch_size=batch_size, chat_template=not no_chat_template)


def _spec(spec: str | None, block: int | None, mlp_scale: float | None) -> str:
    from blockcert.errors import UserError

    if spec and (block is not None or mlp_scale is not None):
        raise UserError("give either --spec or --block with --mlp-scale, not both")
    if spec:
        return spec
    if block is None or mlp_scale is None:
        raise UserError("say which edit: --block N --mlp-scale ALPHA (or --spec mlp-scale:block=N,alpha=ALPHA)",
                        "e.g. blockcert edit --block 15 --mlp-scale 0.33")
    return f"mlp-scale:block={block},alpha={mlp_scale!r}"


@edit_app.callback()
def edit_command(
    ctx: typer.Context,
    block: int = typer.Option(None, "--block", "-b", help="The block whose MLP is scaled."),
    mlp_scale: float = typer.Option(None, "--mlp-scale", help="α: the block's residual becomes x + Attn + α·MLP (1 = unchanged)."),
    spec: str = typer.Option(None, "--spec", help="Any edit spec a plugin provides, e.g. mlp-scale:block=15,alpha=0.33, "
                             "direction-ablate:layers=all,direction=DIR or direction-add:layer=10,alpha=4,direction=DIR "
                             "(DIR from `blockcert direction`)."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    corpus: str = typer.Option("builtin:refusal", "--corpus", help=CORPUS_HELP),
    out: Path = typer.Option(Path("blockcert-edit"), "--out", "-o", help="Output directory for the edit certificate."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier edit certificate in --out."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Greedy completion length (fixed, recorded in the certificate)."),
    batch_size: int = typer.Option(24, "--batch-size", help="Prompts per generation batch (recorded: verification regenerates the same way)."),
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Feed the raw prompt instead of the model's chat template."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    device: str = opt.DEVICE,
) -> None:
    """Apply one edit, generate greedy completions of the corpus before and after, judge them with the §7.1
    classifier, measure ε_edit, the final-state deviation and the locality metrics (KL divergence on neutral
    prompts, unchanged benign completions, perplexity change on the stress prompts), and write an edit
    certificate to --out. A directional edit (--spec direction-...) copies its direction into --out/direction/.

    Sub-commands: `sweep` (mlp-scale, many blocks × α), `direction-sweep` (directions over layers × α),
    `export` / `import` (human labels)."""
    if ctx.invoked_subcommand is not None:
        return
    from blockcert.edit.certify import certify_edit
    from blockcert.model.load import load_model

    text = _spec(spec, block, mlp_scale)
    decoding = _decoding(max_new_tokens, batch_size, no_chat_template)
    with err_console.status("Loading model"):
        loaded = load_model(model, device=device)
    result = certify_edit(loaded=loaded, spec=text, out=out, corpus=corpus, decoding=decoding, force=force, progress=True)
    d = result.deviation
    if as_json:
        typer.echo(json.dumps({"out": str(result.out), "spec": result.spec, "before": _acc(result.before), "after": _acc(result.after),
                               "epsilon_edit": d.epsilon_edit, "max_final_deviation": d.max_final_deviation,
                               "amplification": d.amplification, "locality": result.locality,
                               "certificate_id": result.certificate_id}, indent=2))
        return
    console = out_console()
    table = Table(title=f"{result.spec} on {loaded.name}: {corpus}")
    for col in ("", "answer accuracy", "refuse accuracy"):
        table.add_column(col, justify="right")
    for name, acc in (("before (unedited)", result.before), ("after (edited)", result.after)):
        table.add_row(name, f"{acc.answer_accuracy:.3f} ({acc.answer_correct}/{acc.n_answer})",
                      f"{acc.refuse_accuracy:.3f} ({acc.refuse_correct}/{acc.n_refuse})")
    console.print(table)
    loc = result.locality
    if loc is not None:
        b, n, st = loc["benign"], loc["neutral"], loc["stress"]
        share = "—" if b["share"] is None else f"{b['share']:.3f}"
        console.print(f"locality: KL(unedited ‖ edited) on {n['prompts']} mean {n['kl_mean']:.3g} / max {n['kl_max']:.3g} nats "
                      f"({n['tokens']} tokens); benign completions unchanged {b['unchanged']}/{b['total']} ({share}); "
                      f"perplexity on {st['prompts']} {st['ppl_base']:.4g} → {st['ppl_edited']:.4g} (Δ {st['delta_ppl']:+.4g})",
                      highlight=False)
    amp = "—" if d.amplification is None else f"{d.amplification:.2f}×"
    where = f"block {result.block}" if len(result.blocks) <= 1 else f"blocks {result.blocks[0]}-{result.blocks[-1]} (the maximum)"
    console.print(f"local edit error ε_edit at {where}: {d.epsilon_edit:.4g}; max ‖F′(x) − F(x)‖ at the final "
                  f"hidden state: {d.max_final_deviation:.4g}; downstream amplification {amp}\n"
                  f"edit certificate: {result.out}/certificate.json (id {result.certificate_id[:16]}…)", highlight=False)


def _acc(acc) -> dict:
    import attrs

    return attrs.asdict(acc)


def _flips(change, starred: bool = False) -> str:
    """" (+gained/-lost)" against the unedited completions ("" when none moved); ``starred``: " *" when McNemar p < 0.05."""
    if not (change.gained or change.lost):
        return ""
    return f" (+{change.gained}/-{change.lost}{' *' if starred and change.p_value < 0.05 else ''})"


def _floats(text: str, what: str) -> list[float]:
    from blockcert.errors import UserError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r}: expected comma-separated numbers") from None


@edit_app.command("sweep")
def sweep_command(
    blocks: str = typer.Option("0,4,8,12,16,20,24,28", "--blocks", "-b", help="Blocks to edit: all, 0,4,8 or 0-4."),
    alphas: str = typer.Option("0,0.25,0.33,0.5,1", "--alphas", help="Comma-separated MLP scales α."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    corpus: str = typer.Option("builtin:refusal", "--corpus", help=CORPUS_HELP),
    out: Path = typer.Option(Path("blockcert-edit-sweep"), "--out", "-o",
                             help="Directory for results.json, sweep.png and the completions. An interrupted sweep resumes here."),
    force: bool = typer.Option(False, "--force", help="Start over: delete an earlier sweep in --out."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Greedy completion length."),
    batch_size: int = typer.Option(24, "--batch-size", help="Prompts per generation batch."),
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Feed the raw prompt instead of the chat template."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json on stdout."),
    device: str = opt.DEVICE,
    dtype: str = opt.dtype(help="Precision the model generates in: float32, bfloat16 or float16."),
) -> None:
    """Answer and refuse accuracy for mlp-scale at every block × α (the analog of the paper's Table 7 and its
    Llama-2 block sweep); writes results.json, a plot (sweep.png) and every completion."""
    from blockcert.edit.sweep import sweep
    from blockcert.model.load import load_model
    from blockcert.spec import parse_blocks

    alpha_values = _floats(alphas, "--alphas")
    decoding = _decoding(max_new_tokens, batch_size, no_chat_template)
    with err_console.status("Loading model"):
        loaded = load_model(model, device=device, dtype=dtype)
    chosen = parse_blocks(blocks, loaded.native.n_blocks)
    result = sweep(loaded=loaded, blocks=chosen, alphas=alpha_values, out=out, corpus=corpus, decoding=decoding, progress=True,
                   force=force)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console = out_console()
    table = Table(title=f"mlp-scale sweep on {result.model} ({corpus}); unedited: answer {result.base.answer_accuracy:.2f}, "
                        f"refuse {result.base.refuse_accuracy:.2f}")
    table.add_column("block", justify="right")
    for a in alpha_values:
        table.add_column(f"α={a:g}\nanswer / refuse", justify="right")
    for b in chosen:
        cells = []
        for a in alpha_values:
            r = next(r for r in result.rows if r.block == b and r.alpha == a)
            flips = _flips(r.refuse_change)
            mark = " *" if min(r.answer_change.p_value, r.refuse_change.p_value) < 0.05 else ""
            cells.append(f"{r.answer_accuracy:.2f} / {r.refuse_accuracy:.2f}{flips}{mark}")
        table.add_row(str(b), *cells)
    console.print(table)
    console.print("(+g/-l): refuse prompts gained / lost against the unedited completions; *: the answer or refuse change has "
                  "exact McNemar p < 0.05. results.json has Wilson 95% intervals on every accuracy.", highlight=False)
    console.print(f"{len(result.rows)} configurations in {result.seconds:.0f} s; written to {result.out}/ (results.json, sweep.png, "
                  "completions/)", highlight=False)


@edit_app.command("direction-sweep")
def direction_sweep_command(
    layers: str = typer.Option("auto", "--layers", "-l", help="Layers ℓ whose direction (at x^(ℓ)) is computed and edited: "
                               "all, 6,10,14, 4-8, or auto (five evenly spaced: L/6, 2L/6, …, 5L/6 of the model's L blocks)."),
    scales: str = typer.Option("1", "--scales", help="direction-add strengths s, comma-separated: α = s × ‖μ_refuse − μ_answer‖ at "
                               "that layer (1 adds the difference of means itself)."),
    no_ablate: bool = typer.Option(False, "--no-ablate", help="Skip direction-ablate:layers=all (only the additions)."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    corpus: str = typer.Option("builtin:refusal", "--corpus", help=CORPUS_HELP + " SPEC[k/n] is its k-th of n folds."),
    direction_corpus: str = typer.Option(None, "--direction-corpus", help="Compute the directions from this corpus instead "
                                         "(default: --corpus, in-sample); e.g. --direction-corpus 'builtin:refusal[1/2]' "
                                         "--corpus 'builtin:refusal[2/2]' tests each direction on prompts it did not see."),
    out: Path = typer.Option(Path("blockcert-direction-sweep"), "--out", "-o",
                             help="Directory for the directions, one edit certificate per configuration, results.json/.md and "
                                  "sweep.png. An interrupted sweep resumes here."),
    force: bool = typer.Option(False, "--force", help="Start over: delete an earlier sweep in --out."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Greedy completion length."),
    batch_size: int = typer.Option(24, "--batch-size", help="Prompts per generation batch."),
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Feed the raw prompt instead of the chat template "
                                          "(the direction is then taken at the raw prompt's last token)."),
    as_json: bool = typer.Option(False, "--json", help="Print results.json on stdout."),
    device: str = opt.DEVICE,
    dtype: str = opt.dtype(help="Precision the model runs in: float32, bfloat16 or float16."),
) -> None:
    """The refusal direction at each layer and certified edits with it: direction-ablate at every layer and
    direction-add at that layer for each scale; answer/refuse accuracy with Wilson intervals and McNemar tests,
    and the locality metrics, per configuration. Each configuration is an edit certificate under --out/edits/
    (`blockcert verify` it); results.json, results.md and sweep.png summarise them."""
    from blockcert.edit.dirsweep import auto_layers, direction_sweep, edit_name
    from blockcert.model.load import load_model
    from blockcert.spec import parse_blocks

    scale_values = _floats(scales, "--scales")
    decoding = _decoding(max_new_tokens, batch_size, no_chat_template)
    with err_console.status("Loading model"):
        loaded = load_model(model, device=device, dtype=dtype)
    n = loaded.native.n_blocks
    chosen = auto_layers(n) if layers.strip() == "auto" else parse_blocks(layers, n, "--layers")
    result = direction_sweep(loaded=loaded, layers=chosen, scales=scale_values, ablate=not no_ablate, out=out, corpus=corpus,
                             direction_corpus=direction_corpus, decoding=decoding, force=force, progress=True)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    b = result.base
    console = out_console()
    source = "in-sample" if result.direction_corpus == result.corpus else f"directions from {result.direction_corpus}"
    table = Table(title=f"direction sweep on {result.model} ({result.dtype}, {corpus}, {source}); unedited: answer "
                        f"{b['answer_correct']}/{b['n_answer']}, refuse {b['refuse_correct']}/{b['n_refuse']}")
    for col in ("edit", "α", "answer", "refuse", "benign unchanged", "KL mean", "stress PPL"):
        table.add_column(col, justify="right")
    for r in result.rows:
        table.add_row(edit_name(r.layer, r.scale) + (" (resumed)" if r.resumed else ""), "—" if r.alpha is None else f"{r.alpha:g}",
                      f"{r.answer_correct}/{r.n_answer}{_flips(r.answer_change, True)}",
                      f"{r.refuse_correct}/{r.n_refuse}{_flips(r.refuse_change, True)}",
                      f"{r.benign_unchanged}/{r.n_answer}", f"{r.kl_mean:.3g}", f"{r.ppl_base:.4g} → {r.ppl_edited:.4g}")
    console.print(table)
    console.print("(+g/-l): prompts gained / lost against the unedited completions; *: exact McNemar p < 0.05. "
                  f"{len(result.rows)} configurations in {result.seconds:.0f} s; written to {result.out}/ (results.json, results.md, "
                  "sweep.png, directions/, edits/: verify each with `blockcert verify`)", highlight=False)


@edit_app.command("export")
def export_command(
    edit_dir: Path = typer.Argument(..., help="An edit certificate directory (blockcert edit --out)."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV file to write for annotators."),
) -> None:
    """Write every completion (base and edited) to a CSV for human annotators: fill the `label` column with
    answer, refuse, harmful or other, then `blockcert edit import`."""
    from blockcert.artifacts.fsutil import atomic_write_text
    from blockcert.edit.certify import read_completions
    from blockcert.edit.human import export_csv
    from blockcert.errors import UserError
    from blockcert.verifier.edit import is_edit_dir

    if not is_edit_dir(edit_dir):
        raise UserError(f"{edit_dir} is not a BlockCert edit directory (edit.json and certificate.json expected)")
    rows = read_completions(edit_dir)
    atomic_write_text(out, export_csv(rows))
    err_console.print(f"wrote {len(rows) * 2} completions to {out}; labels: answer, refuse, harmful, other")


@edit_app.command("import")
def import_command(
    edit_dir: Path = typer.Argument(..., help="The edit certificate directory the sheets were exported from."),
    sheets: list[Path] = typer.Argument(..., help="One labelled CSV per annotator."),
) -> None:
    """Attach annotators' labels: copies them into the edit directory, aggregates answer/refuse accuracy,
    harmful rate and agreement, and re-issues the edit certificate with them."""
    from blockcert.edit.certify import import_labels

    human = import_labels(edit_dir, [str(s) for s in sheets])
    console = out_console()
    table = Table(title=f"Human labels ({human['annotators']} annotators)")
    for col in ("", "answer accuracy", "refuse accuracy", "harmful rate"):
        table.add_column(col, justify="right")
    for side in ("base", "edited"):
        h = human[side]
        table.add_row(side, f"{h['answer_accuracy']:.3f}", f"{h['refuse_accuracy']:.3f}", f"{h['harmful_rate']:.3f}")
    console.print(table)
    ag = human["agreement"]
    console.print(f"agreement: pairwise {_opt(ag['pairwise'])}, Fleiss' κ {_opt(ag['fleiss_kappa'])}; certificate re-issued in {edit_dir}/",
                  highlight=False)


def _opt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"
