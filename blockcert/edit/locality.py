"""Locality of an edit (edit schema v3): does it leave the rest of the model alone?

* KL(p_unedited ‖ p_edited) of the next-token distributions at every position of the neutral prompts
  (``builtin:default``), per prompt (mean, max) and token-weighted overall;
* the share of benign (answer-labelled) corpus prompts whose greedy completion is unchanged;
* the perplexity change on the stress prompts (``builtin:stress``), from summed next-token losses.

The verifier redoes :func:`locality_record`'s arithmetic at every level and re-measures
:func:`locality_numbers` at replay (``blockcert.verifier.torch_reference``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: the neutral prompts of the KL measurement and the prompts of the perplexity change
NEUTRAL_PROMPTS = "builtin:default"
STRESS_PROMPTS = "builtin:stress"


def token_logprobs(loaded: Any, handle: Any, texts: Sequence[str], batch_size: int = 8) -> list[tuple[Any, Any, np.ndarray]]:
    """Per prompt (tokenised as the traces are): the unedited and the edited next-token log-probabilities [n, V]
    (float64) and the token ids; right-padded batches (causal attention: real tokens never see a pad)."""
    import torch

    from blockcert.pipeline.trace import padded_batches, tokenize_prompts

    native = loaded.native
    ids = tokenize_prompts(loaded, texts)
    out = []
    for part, batch, positions in padded_batches(ids, batch_size, native.device):
        with torch.no_grad():
            base = native.head(native.residual_stream(batch, positions)[-1])
            with handle:
                edited = native.head(native.residual_stream(batch, positions)[-1])
        for b, a in enumerate(part):
            n = a.size
            out.append((torch.log_softmax(base[b, :n].double(), -1).cpu().numpy(),
                        torch.log_softmax(edited[b, :n].double(), -1).cpu().numpy(), a))
    return out


def locality_numbers(loaded: Any, handle: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per neutral prompt: tokens, mean and max KL(p_unedited ‖ p_edited) of the next-token distributions over all
    its positions; per stress prompt: tokens scored and the summed next-token losses, unedited and edited."""
    from blockcert.pipeline.promptsets import load_prompts

    neutral = []
    for lp, lq, _ in token_logprobs(loaded, handle, load_prompts(NEUTRAL_PROMPTS)):
        kl = np.sum(np.exp(lp) * (lp - lq), axis=-1)
        neutral.append({"tokens": int(kl.size), "kl_mean": float(kl.mean()), "kl_max": float(kl.max())})
    stress = []
    for lp, lq, ids in token_logprobs(loaded, handle, load_prompts(STRESS_PROMPTS)):
        nxt = ids[1:]
        rows = np.arange(nxt.size)
        stress.append({"tokens": int(nxt.size), "nll_base": float(-lp[rows, nxt].sum()), "nll_edited": float(-lq[rows, nxt].sum())})
    return neutral, stress


def locality_record(neutral: list[dict[str, Any]], stress: list[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``locality`` entry of metrics.json from the per-prompt numbers and the completions (the verifier redoes
    this arithmetic, in this order, at every level)."""
    import math

    from blockcert.pipeline.promptsets import load_prompts
    from blockcert.pipeline.trace import prompts_sha256

    n_kl = sum(p["tokens"] for p in neutral)
    n_ppl = sum(p["tokens"] for p in stress)
    ppl_base = math.exp(sum(p["nll_base"] for p in stress) / n_ppl)
    ppl_edited = math.exp(sum(p["nll_edited"] for p in stress) / n_ppl)
    benign = [r for r in rows if r["label"] == "answer"]
    unchanged = sum(r["edited"] == r["base"] for r in benign)
    return {
        "neutral": {"prompts": NEUTRAL_PROMPTS, "sha256": prompts_sha256(load_prompts(NEUTRAL_PROMPTS)), "tokens": n_kl,
                    "kl_mean": sum(p["tokens"] * p["kl_mean"] for p in neutral) / n_kl, "kl_max": max(p["kl_max"] for p in neutral),
                    "per_prompt": neutral, "definition": "KL(p_unedited ‖ p_edited) of the next-token distribution, in nats, at "
                    "every position of every prompt"},
        "benign": {"unchanged": unchanged, "total": len(benign), "share": unchanged / len(benign) if benign else None,
                   "definition": "answer-labelled corpus prompts whose edited greedy completion equals the unedited one"},
        "stress": {"prompts": STRESS_PROMPTS, "sha256": prompts_sha256(load_prompts(STRESS_PROMPTS)), "tokens": n_ppl,
                   "ppl_base": ppl_base, "ppl_edited": ppl_edited, "delta_ppl": ppl_edited - ppl_base, "per_prompt": stress},
    }


def locality(loaded: Any, handle: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """KL divergence on the neutral prompts, the share of unchanged benign completions, ΔPPL on the stress prompts."""
    neutral, stress = locality_numbers(loaded, handle)
    return locality_record(neutral, stress, rows)
