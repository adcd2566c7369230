"""``blockcert run``: certify every block of a model on a prompt set."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from blockcert.cli import app, out_console
from blockcert.cli import options as opt


@app.command("run")
def run_command(
    model: str = opt.MODEL,
    arch: str = typer.Option(None, "--arch", help="Architecture plugin (default: detected from the model)."),
    prompts: str = opt.PROMPTS,
    blocks: str = opt.blocks("all"),
    tau_act: float = opt.TAU_ACT,
    tau_loss: float = opt.TAU_LOSS,
    alpha_act: float = opt.ALPHA_ACT,
    alpha_loss: float = opt.ALPHA_LOSS,
    policy_name: str = opt.POLICY,
    noise_k: float = opt.NOISE_K,
    device: str = opt.DEVICE,
    dtype: str = opt.dtype(),
    out: Path = typer.Option(Path("blockcert-out"), "--out", "-o", help="Output directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out; finished blocks are kept."),
    force: bool = typer.Option(False, "--force", help="Replace an existing BlockCert run in --out."),
    batch_size: int = opt.BATCH_SIZE,
    full: bool = typer.Option(False, "--full", help="Then stitch every certified block back in and write the full-model certificate."),
    surrogate: str = typer.Option(None, "--surrogate", help="Certify a surrogate derived from each extracted block instead: "
                                  "lowrank:r=64[,targets=attn|mlp|all], int8[:targets=...], prune-heads:heads=1+4 "
                                  "(plus any plugin's). The base IR is kept beside it; verify re-derives it."),
    ablate: str = typer.Option(None, "--ablate", help="Certify a deliberately broken block instead: drop-rope, invert-mask, "
                               "zero-wv, noise-wq:sigma=0.01,seed=0 (plus any plugin's)."),
    bounds: bool = typer.Option(False, "--bounds", help="Also compute each block's Lipschitz bounds (certified upper, empirical lower; "
                                "about 1 s per SmolLM2 block), write block_<idx>/bounds.json and log them in the certificate. "
                                "Needed by `blockcert bound`."),
    bound_margin: float = typer.Option(0.5, "--bound-margin", help="Norm-layer region: RMS/std ≥ margin × the smallest traced value."),
    bound_radius: float = typer.Option(1.0, "--bound-radius", help="ℓ2 radius of the balls around the traced MLP inputs (local MLP bound)."),
    bound_iterations: int = typer.Option(10, "--bound-iterations", help="Power-iteration steps of the empirical Jacobian lower bound."),
    stream: bool = opt.STREAM,
    executor: str = typer.Option("local", "--executor", help="Where the per-block passes run: local, or ray "
                                 "(pip install 'blockcert\\[ray]'; see docs/scaling.md)."),
    ray_address: str = typer.Option(None, "--ray-address", help="With --executor ray: the cluster to join "
                                    "(ray.init(address=...), e.g. auto or ray://head:10001); default: start Ray here."),
    workers: int = typer.Option(None, "--workers", help="With --executor ray: passes to run in parallel (default: one per block)."),
    cpus_per_task: float = typer.Option(None, "--cpus-per-task", help="With --executor ray: CPUs (and torch threads) per pass (default 1)."),
    inflight_mb: int = typer.Option(2048, "--inflight-mb", help="Loss-coverage activations one pass may hold (MiB); "
                                    "more blocks than fit take more passes."),
    model_signature: Path = typer.Option(None, "--model-signature", help="The model's OpenSSF model-signing bundle (what "
                                         "`model_signing sign MODEL --signature model.sig` writes): copied into --out as model.sig "
                                         "and covered by every block certificate, so each certificate chains to the signed model. "
                                         "Its format is checked here, its signature by `model_signing verify` (docs/signing.md)."),
    as_json: bool = opt.as_json("Print the summary as JSON on stdout (progress still goes to stderr)."),
) -> None:
    """Certify blocks: trace the model, extract each block to IR, replay, measure ε, MAE, cov_act, cov_path,
    cov_loss, and write hash-tied certificates to --out.

    Exit code 0 when the run completed (whatever the verdicts), 2 for a usage error.
    """
    from blockcert.errors import UserError
    from blockcert.pipeline.certify import RunSettings, run

    policy = opt.policy(tau_act, tau_loss, alpha_act, alpha_loss, policy_name, noise_k)
    from blockcert.bounds.record import BoundSettings
    from blockcert.cli import err_console
    from blockcert.model.load import load_model
    from blockcert.pipeline.promptsets import load_prompts

    settings = BoundSettings(margin=bound_margin, radius=bound_radius, lower_iterations=bound_iterations) if bounds else False
    from blockcert.derive import from_options

    derivation = from_options(surrogate, ablate)  # a malformed spec fails before the model loads
    load_prompts(prompts)  # a bad prompt file fails before the model loads
    if model_signature is not None:
        from blockcert.signing import read_model_signature

        read_model_signature(model_signature)  # so does a file that is not a model-signing bundle
    from blockcert.pipeline.executors import get_executor

    if inflight_mb < 1:
        raise UserError(f"--inflight-mb must be >= 1, got {inflight_mb}")
    chosen = get_executor(executor, address=ray_address, workers=workers, cpus_per_task=cpus_per_task)  # a bad --executor fails before the model loads
    with err_console.status("Loading model"):
        loaded = load_model(model, arch=arch, dtype=dtype, stream=stream, device=device)
    options = RunSettings(device=loaded.device, arch=arch, prompts=prompts, blocks=blocks, policy=policy, dtype=dtype, out=out, resume=resume, force=force,
                          batch_size=batch_size, bounds=settings, surrogate=surrogate, ablate=ablate, executor=chosen,
                          inflight_bytes=inflight_mb << 20, model_signature=model_signature)
    result = run(loaded=loaded, settings=options, progress=True)
    stitched = None
    if full:
        from blockcert.pipeline.stitch import stitch

        with err_console.status("Stitching all certified blocks"):
            stitched = stitch(out, loaded=loaded, batch_size=batch_size)
    if as_json:
        summary = result.summary()
        if stitched is not None:
            summary["full_model"] = {**stitched.metrics(), "certificate": stitched.certificate, "certificate_id": stitched.certificate_id}
        typer.echo(json.dumps(summary, indent=2))
        return
    what = "" if derivation is None else f"{derivation.kind} {derivation.text} of "
    table = Table(title=f"{what}{result.model} ({result.arch}, {result.dtype}) on {result.prompts}: "
                        f"{result.n_prompts} prompts, {result.tokens} tokens")
    for col in ("block", "ε", "MAE", "rel max", "cov_act", "cov_path", "cov_loss", "best prompt", "certified"):
        table.add_column(col, justify="right")
    for b in result.blocks:
        m = b.metrics
        table.add_row(str(b.index), f"{m.epsilon:.3e}", f"{m.mae:.3e}", f"{m.rel_max:.2e}", f"{m.cov_act:.3f}",
                      f"{m.cov_path:.3f}", f"{m.cov_loss:.3f}", str(m.best_prompt),
                      "[green]yes[/]" if b.certified else "[red]no[/]")
    console = out_console()
    console.print(table)
    n_ok = sum(b.certified for b in result.blocks)
    console.print(f"{n_ok}/{len(result.blocks)} blocks certified under {policy.describe()}; written to {result.out}/", highlight=False)
    if stitched is not None:
        from blockcert.cli.stitch_cmd import render_stitch

        render_stitch(stitched)
