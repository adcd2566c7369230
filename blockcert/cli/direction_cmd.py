"""``blockcert direction``: a refusal direction (difference of means) as a hashed artifact (docs/edits.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from blockcert.cli import app, err_console, out_console
from blockcert.cli import options as opt


@app.command("direction")
def direction_command(
    layer: int = typer.Option(..., "--layer", "-l", help="Where to read the residual stream: x^(LAYER), the input of block "
                              "LAYER (0 = the embedding output, L = the last block's output)."),
    corpus: str = typer.Option("builtin:refusal", "--corpus", help="Labelled corpus: builtin:refusal or a JSONL file "
                               "(id, label answer|refuse, prompt)."),
    model: str = opt.MODEL,
    dtype: str = opt.dtype("float32"),
    no_chat_template: bool = typer.Option(False, "--no-chat-template", help="Read the raw prompt's last token instead of the "
                                          "chat-templated prompt's (the newline after the assistant tag)."),
    out: Path = typer.Option(Path("blockcert-direction"), "--out", "-o", help="Directory for direction.safetensors and "
                             "direction.json."),
    force: bool = typer.Option(False, "--force", help="Replace a direction already in --out."),
    as_json: bool = opt.as_json("Print direction.json on stdout."),
) -> None:
    """Compute the refusal direction r = normalise(mean over refuse prompts − mean over answer prompts) of the
    residual stream x^(LAYER) at the last prompt token, and write it with its provenance (model, corpus digest,
    layer, position) and SHA-256. Use it with the edits direction-ablate:layer=N,direction=OUT (or layers=all)
    and direction-add:layer=N,alpha=A,direction=OUT."""
    from blockcert.edit.direction import make_direction
    from blockcert.edit.refusal import load_corpus
    from blockcert.model.load import load_model

    load_corpus(corpus)  # a bad corpus fails before the model loads
    with err_console.status("Loading model"):
        loaded = load_model(model, dtype=dtype)
    with err_console.status(f"Residual stream at layer {layer} of {corpus}"):
        d = make_direction(loaded, layer=layer, out=out, corpus=corpus, chat_template=not no_chat_template, force=force)
    if as_json:
        typer.echo(json.dumps(d.meta, indent=2))
        return
    p = d.meta["projection"]
    sep = "—" if p["separation"] is None else f"{p['separation']:.2f}"
    out_console().print(
        f"direction at layer {layer} of {loaded.name} ({loaded.dtype}) from {d.meta['corpus']['description']} "
        f"({d.meta['corpus']['refuse']} refuse, {d.meta['corpus']['answer']} answer prompts)\n"
        f"‖mean difference‖ = {d.meta['norm_before_normalising']:.4g}; along r: refuse prompts {p['refuse_mean']:.4g}, answer prompts "
        f"{p['answer_mean']:.4g}, separation {sep} pooled standard deviations (in-sample)\n"
        f"written to {out}/ (direction.safetensors sha256 {d.sha256[:16]}…)", highlight=False)
