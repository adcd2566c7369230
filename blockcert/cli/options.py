"""Options several commands share, defined once. Typer reads an ``Option`` as metadata, so one instance serves
every command that names it; a factory makes the few whose default differs between commands."""

from __future__ import annotations

from typing import Any

import typer

MODEL_HELP = "Local HF directory, .gguf file, or registered name (default: the embedded SmolLM2-135M-Instruct)."
PROMPTS_HELP = "builtin:default, builtin:stress, a text file (one prompt per line) or .jsonl."

MODEL = typer.Option(None, "--model", "-m", help=MODEL_HELP)
PROMPTS = typer.Option("builtin:stress", "--prompts", "-p", help=PROMPTS_HELP)
TAU_ACT = typer.Option(1e-2, "--tau-act", help="τ_act: a token is covered if its block-output error e(p,t) ≤ τ_act (eq. 6).")
TAU_LOSS = typer.Option(1e-3, "--tau-loss", help="τ_loss: a token's loss is unaffected if |Δℓ| ≤ τ_loss (eq. 7-8).")
ALPHA_ACT = typer.Option(0.94, "--alpha-act", help="α_act: certified needs cov_act ≥ α_act (eq. 9).")
ALPHA_LOSS = typer.Option(0.9, "--alpha-loss", help="α_loss: certified needs cov_loss ≥ α_loss (eq. 10).")
POLICY = typer.Option("paper", "--policy", help="How a token counts as covered: paper (e ≤ τ_act, |Δℓ| ≤ τ_loss), relative "
                      "(e ≤ τ_act·‖x‖) or noise-floor (e and |Δℓ| within --noise-k × the native block's own precision noise).")
NOISE_K = typer.Option(4.0, "--noise-k", help="k of --policy noise-floor: a token is covered within k × its floor "
                       "(default 4: see docs/results.md, 'Choosing k').")
DEVICE = typer.Option("cpu", "--device", help="Where the model and the IR replay run: cpu, cuda, mps, or auto (CUDA, then MPS, "
                      "else the CPU, with a note). Traces and artifacts stay on the CPU; the numpy reference always runs there.")
BATCH_SIZE = typer.Option(8, "--batch-size", help="Prompts per batch (trace capture and loss-coverage suffixes).")
STREAM = typer.Option(False, "--stream", help="Never load the whole model: read one block at a time from its safetensors shards "
                      "(memory-mapped). Every number is the in-memory model's.")


def blocks(default: str, help: str = "all, 0,5,10 or 0-4.") -> Any:
    return typer.Option(default, "--blocks", "-b", help=help)


def dtype(default: str = "float32", help: str = "Native precision: float32, bfloat16 or float16. The IR always replays in float32.") -> Any:
    return typer.Option(default, "--dtype", help=help)


def as_json(help: str) -> Any:
    return typer.Option(False, "--json", help=help)


def policy(tau_act: float, tau_loss: float, alpha_act: float, alpha_loss: float, name: str = "paper", k: float = 4.0) -> Any:
    """The :class:`~blockcert.policy.Policy` of the policy flags; a bad value is a usage error naming it."""
    from blockcert.errors import UserError
    from blockcert.policy import POLICY_NAMES, Policy

    if name not in POLICY_NAMES:
        raise UserError(f"unknown --policy {name!r}", f"choose one of: {', '.join(POLICY_NAMES)}")
    try:
        return Policy(tau_act=tau_act, tau_loss=tau_loss, alpha_act=alpha_act, alpha_loss=alpha_loss, name=name, k=k)
    except ValueError as exc:
        flag = "--noise-k" if str(exc).startswith("k ") else "a threshold"
        raise UserError(f"invalid {flag}: {exc}") from exc
