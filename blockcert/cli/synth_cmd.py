"""``blockcert synth``: write a synthetic checkpoint (seeded random weights, real HF layout) for benchmarks."""

from __future__ import annotations

from pathlib import Path

import typer

from blockcert.cli import app, err_console, out_console


def _size(text: str) -> int:
    from blockcert.errors import UserError

    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    upper = text.strip().upper()
    for unit, factor in units.items():
        if upper.endswith(unit) and upper[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(upper[: -len(unit)]) * factor)
    if upper.isdigit():
        return int(upper)
    raise UserError(f"--shard-size {text!r} is not a size", "write e.g. 2GB, 500MB or 1GiB")


@app.command("synth")
def synth_command(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to create (must not exist, or be empty)."),
    shape: str = typer.Option("tinyllama", "--shape", help="A shape a plugin registers; built in (Llama): tinyllama (22 layers, "
                              "d=2048, GQA 32/4), llama2-7b (32 layers, d=4096) or tiny (4 layers, d=256, for tests)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16: the stored weights."),
    layers: int = typer.Option(None, "--layers", help="Override the number of layers."),
    seed: int = typer.Option(0, "--seed", help="Weights are a function of (seed, tensor name)."),
    shard_size: str = typer.Option("2GB", "--shard-size", help="Largest shard file (e.g. 2GB, 500MB)."),
    prompts: int = typer.Option(10, "--prompts", help="Lines in DIR/prompts.txt."),
    prompt_tokens: int = typer.Option(256, "--prompt-tokens", help="Tokens per prompt (the tokenizer is byte-level)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier synthetic checkpoint in --out (with --tokenizer-only: "
                               "an earlier tokenizer)."),
    tokenizer_only: bool = typer.Option(False, "--tokenizer-only", help="Write only the byte-level tokenizer into --out (which may be "
                                        "an existing model directory): a local HF model needs one to be traced on text prompts."),
) -> None:
    """Write config.json, sharded model-0000k-of-0000n.safetensors with model.safetensors.index.json, a
    byte-level tokenizer and prompts.txt: a model of a real shape with seeded random weights, written
    shard by shard (never the whole model in memory). Certify it with `blockcert run --model DIR
    --prompts DIR/prompts.txt --stream`."""
    from blockcert.model.synthetic import synthesize, write_tokenizer

    if tokenizer_only:
        from blockcert.errors import UserError

        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file", "give a directory (an existing model directory is fine)")
        if (out / "tokenizer.json").exists() and not force:
            raise UserError(f"{out}/tokenizer.json exists", "pass --force to replace it")
        out.mkdir(parents=True, exist_ok=True)
        write_tokenizer(out)
        out_console().print(f"byte-level tokenizer (ids 0-255 = bytes, <s> 256, </s> 257, <unk> 258) written to {out}/; "
                            "the model's vocabulary must have at least 259 rows", highlight=False)
        return

    with err_console.status("Writing shards") as status:
        path = synthesize(out, shape, dtype=dtype, layers=layers, seed=seed, shard_bytes=_size(shard_size), n_prompts=prompts,
                          prompt_tokens=prompt_tokens, force=force,
                          progress=lambda k, n: status.update(f"Writing shards: {k}/{n} done"))
    total = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    out_console().print(f"synthetic {shape} checkpoint ({dtype}, {total / 1e9:.2f} GB of weights) written to {path}/", highlight=False)
