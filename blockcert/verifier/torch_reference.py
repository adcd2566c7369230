"""``verify --level full``: the artifacts follow from the model.

The model is loaded once and its weights digest checked; the traces are re-captured from the prompt texts
with the model's own tokenizer, and every stored byte of them is compared with the model's: token ids,
attention patterns and head gates exactly, each residual vector per token within its rounding band
(:meth:`Tolerances.trace_band`, never more than a fraction of τ_act), each baseline token loss within
``loss_abs``. The block checks then rest on the model's own traces; the stitched losses are re-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blockcert.verifier.metrics import Tolerances, norms, record_trace_problems, trace_problems

#: how far a re-run perplexity may differ, relative to the baseline perplexity (torch re-runs the producer's
#: float32 arithmetic: the token losses agree to float32 rounding, summed in float64)
FULL_PPL_RTOL = 1e-5


def replay_one(ir: Any, x_in: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output [T, d], mask [T, T] bool, head gates [H] bool) of the IR on x^(l), in torch float32."""
    import torch

    from blockcert.interpreter import replay

    out = replay(ir, torch.from_numpy(np.array(x_in, dtype=np.float32))[None])
    return out.output[0].numpy(), out.mask[0].numpy().astype(bool), out.head_active.numpy().astype(bool)


def recheck_bounds(c: Any, rec: dict[str, Any], ir: Any, inputs: list[np.ndarray], *, with_lower: bool) -> None:
    """The torch reference also re-runs the producer's own bound computation (the same numbers within
    rounding) and, at level full, the empirical lower bound (torch autograd)."""
    from blockcert.verifier.bounds_exact import recheck_exact

    recheck_exact(c, rec, ir, inputs, with_lower=with_lower)


class FullCheck:
    """Loads the model once; compares the stored traces with re-captured ones; re-runs suffix losses."""

    def __init__(self, root: Path, model: str | None, tol: Tolerances, stream: bool = False, loaded: Any = None,
                 device: str = "cpu") -> None:
        self.root, self.model_spec, self.tol, self.stream, self.device = root, model, tol, stream, device
        self.loaded: Any = loaded
        self.traces: Any = None
        self._problems: dict[tuple[int, float], list[tuple[str, str, str, str]]] = {}

    def _model(self, pred: dict[str, Any], c: Any) -> Any:
        if self.loaded is None:
            from blockcert.model.load import load_model

            self.loaded = load_model(self.model_spec, arch=pred["model"]["arch"], dtype=pred["model"]["dtype"], stream=self.stream,
                                     device=self.device)
        digest = self.loaded.weights_sha256()
        c.require("model weights digest", digest == pred["model"]["weights_sha256"], pred["model"]["weights_sha256"][:16],
                  digest[:16], f"{self.model_spec} is not the certified model")
        c.require("model dtype", self.loaded.dtype == pred["model"]["dtype"], pred["model"]["dtype"], self.loaded.dtype)
        return self.loaded

    def recaptured(self, pred: dict[str, Any], entries: Sequence[dict[str, Any]], stored: Sequence[dict[str, np.ndarray]], c: Any,
                   tau_act: float) -> list[Any]:
        """The model's own traces of the certified prompts, after checking that the stored ones are them."""
        from blockcert.pipeline.trace import capture

        loaded = self._model(pred, c)
        if self.traces is None:
            self.traces = capture(loaded, [e["text"] for e in entries])
        c.require("re-captured prompt count", len(self.traces) == len(stored), len(stored), len(self.traces))
        for k, (mine, theirs) in enumerate(zip(self.traces, stored)):
            key = (k, tau_act)
            if key not in self._problems:  # the band is capped at a fraction of τ_act: per policy
                self._problems[key] = trace_problems(k, mine, theirs, lambda n: self.tol.trace_band(n, loaded.dtype, tau_act),
                                                     self.tol.loss_abs)
            record_trace_problems(c, k, self._problems[key], "the model")
        return list(self.traces)

    def block_io(self, k: int, ell: int, stored_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block ``ell``'s input and output on prompt ``k`` in the model's re-captured trace."""
        return self.traces[k].residual[ell], self.traces[k].residual[ell + 1]

    def error_band(self, stored_band: np.ndarray, e_stored: np.ndarray, e_model: np.ndarray, x_in: np.ndarray,
                   x_out: np.ndarray) -> np.ndarray:
        """The band of a per-token error taken on the model's re-captured trace: the replay band, widened by the
        gap to the error on the stored trace (which :meth:`recaptured` capped at a fraction of τ_act)."""
        return np.maximum(stored_band, self.tol.replay_band(np.maximum(norms(x_in), norms(x_out)))) + np.abs(e_stored - e_model)

    def check_full_model(self, root: Path, pred: dict[str, Any], evaluation: dict[str, Any], stored: Sequence[dict[str, np.ndarray]],
                         ir_at: Any, c: Any) -> None:
        """The whole stitched evaluation re-run with the model (:func:`blockcert.pipeline.stitch.recompute`)."""
        from blockcert.pipeline.stitch import recompute
        from blockcert.verifier.checks import short

        m, L = pred["metrics"], pred["model"]["n_blocks"]
        # per layer: the chain's rounding grows with depth, one replay band per stitched block, sized by the
        # layer's token norms (model-derived: the traces were just checked against the model)
        mean_norm = [float(np.mean(np.concatenate([norms(t["residual"][ell + 1]) for t in stored]))) for ell in range(L)]
        max_norm = [float(np.max(np.concatenate([norms(t["residual"][ell + 1]) for t in stored]))) for ell in range(L)]
        if isinstance(stored, list):
            del stored[:]  # the stored traces are no longer needed: free them before the model re-runs everything
        again = recompute(root, self.model_spec, pred["stitched_blocks"], stream=self.stream, loaded=self.loaded)
        for key in sorted(again):
            a, b = m[key], again[key]
            if key in ("layer_mae", "layer_max"):
                scale = mean_norm if key == "layer_mae" else max_norm
                bands = [float(self.tol.replay_band(np.array([n]))[0]) * (ell + 1) for ell, n in enumerate(scale)]
                ok = len(a) == len(b) == L and all(abs(x - y) <= w for x, y, w in zip(a, b, bands))
            elif key.startswith("probe"):
                ok = a == b
            else:  # perplexities and their differences: float32 token losses summed in float64
                ok = abs(float(a) - float(b)) <= FULL_PPL_RTOL * max(abs(float(again["ppl_baseline"])), 1.0)
            c.record(f"re-run {key}", ok, short(a), short(b))

    def stitched(self, ir: Any, ell: int, stored: Sequence[np.ndarray], c: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Block ``ell`` replaced by ``ir`` on the model's traces: the suffix token losses, re-run; each stored
        one must be within ``loss_abs`` nats."""
        from blockcert.pipeline.certify import measure_block

        m = measure_block(self.loaded, self.traces, ir, ell, batch_size=8)
        out = []
        for k, (new, old) in enumerate(zip(m.stitched, stored)):
            gap = float(np.abs(np.asarray(new, np.float64) - np.asarray(old, np.float64)).max()) if new.size else 0.0
            c.record(f"re-run suffix losses prompt {k}", gap <= self.tol.loss_abs, "stored l_stitched", f"max |Δ| {gap:.3g}",
                     "" if gap <= self.tol.loss_abs else f"block_{ell:03d}/errors.safetensors: stitched losses of prompt {k} are not the model's")
            out.append(np.asarray(new, np.float64))
        return out, [np.full(o.shape, self.tol.loss_abs) for o in out]

    def floors(self, ell: int, stored_act: Sequence[np.ndarray], stored_loss: Sequence[np.ndarray],
               c: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The noise-floor policy's floors of block ``ell``, re-measured on the model's traces (the native block in
        the model's dtype against itself in the reference precision, and the suffix's own loss noise).
        Each stored floor must be within the rounding band of the model's dtype (activations) or ``loss_abs``
        (losses) of the re-measured one; the verdict then rests on the re-measured floors."""
        from blockcert.pipeline.floor import act_floors, loss_floor_passes

        act, references = act_floors(self.loaded, self.traces, ell)
        loss = loss_floor_passes(self.loaded, self.traces, [ell], {ell: references}, 8)[ell]
        for k, (mine, theirs, t) in enumerate(zip(act, stored_act, self.traces)):
            band = self.tol.trace_noise(norms(t.residual[ell + 1]), self.loaded.dtype)
            off = np.flatnonzero(np.abs(np.asarray(theirs, np.float64) - mine) > band)
            c.record(f"re-measured floor_act prompt {k}", not off.size, "stored floors", f"{off.size} token(s) off",
                     "" if not off.size else f"block_{ell:03d}/errors.safetensors: the activation floors of prompt {k} are not the model's")
        for k, (mine, theirs) in enumerate(zip(loss, stored_loss)):
            gap = float(np.abs(np.asarray(theirs, np.float64) - mine).max()) if mine.size else 0.0
            c.record(f"re-measured floor_loss prompt {k}", gap <= 2 * self.tol.loss_abs, "stored floors", f"max |Δ| {gap:.3g}",
                     "" if gap <= 2 * self.tol.loss_abs else f"block_{ell:03d}/errors.safetensors: the loss floors of prompt {k} are not the model's")
        return act, loss


#: relative band of a re-measured edit deviation
DEVIATION_RTOL = 1e-4


#: absolute floor of the band of a re-measured KL divergence (nats): float64 softmax rounding of two equal
#: distributions, a constant no certificate chooses
KL_ABS = 1e-9
#: cosine a direction recomputed from its corpus must reach against the stored one (float32 storage rounding)
DIRECTION_COSINE = 1 - 1e-6


def remeasure_edit(c: Any, pred: dict[str, Any], rows: list[dict[str, Any]], metrics: dict[str, Any], model: str | None, tol: Any,
                   device: str = "cpu", *, root: Path | None = None, level: str = "replay") -> None:
    """An edit certificate at level replay/full: load the model, check its digest, regenerate both sets of
    completions with the recorded decoding policy (identical, or the check fails), re-measure the deviations and
    the locality metrics; at full, also recompute a directional edit's direction from its corpus."""
    from blockcert.edit import certify as E
    from blockcert.errors import UserError
    from blockcert.model.load import load_model
    from blockcert.verifier.checks import short as _short

    items = [E.CorpusItem(r["id"], r["label"], r["category"], r["prompt"], tuple(r["keywords"])) for r in rows]

    spec_model = model or pred["model"]["name"]
    try:
        loaded = load_model(spec_model, arch=pred["model"]["arch"], dtype=pred["model"]["dtype"], device=device)
    except UserError as exc:
        c.require("model available to regenerate", False, spec_model, "", f"{exc.message}; pass --model")
    digest = loaded.weights_sha256()
    c.require("model weights digest", digest == pred["model"]["weights_sha256"], pred["model"]["weights_sha256"][:16], digest[:16],
              f"{spec_model} is not the certified model")
    d = pred["decoding"]
    decoding = E.Decoding(max_new_tokens=d["max_new_tokens"], batch_size=d["batch_size"], chat_template=d["chat_template"], seed=d["seed"])
    c.require("decoding policy reproducible", decoding.record(loaded) == d, _short(d), _short(decoding.record(loaded)))
    handle = E.edit_handle(loaded, pred["edit"]["spec"], base=root)
    base = E.generate(loaded, items, decoding)
    with handle:
        edited = E.generate(loaded, items, decoding)
    for r, b, e in zip(rows, base, edited):
        c.record(f"regenerated {r['id']} base", b == r["base"], _short(r["base"]), _short(b))
        c.record(f"regenerated {r['id']} edited", e == r["edited"], _short(r["edited"]), _short(e))
    dev = E.deviation(loaded, handle, items, decoding)
    # every per-prompt number is re-measured; the maxima and the amplification then follow from them
    # (checked at every level by _check_deviation_arithmetic)
    for entry, eps, fin in zip(metrics["per_prompt"], dev.per_prompt_epsilon, dev.per_prompt_final):
        for key, mine in (("epsilon_edit", eps), ("final_deviation", fin)):
            claimed = entry[key]
            c.record(f"re-measured {entry['id']} {key}", abs(claimed - mine) <= DEVIATION_RTOL * max(abs(mine), 1e-6), claimed, mine)
    for key, mine in (("epsilon_edit", dev.epsilon_edit), ("max_final_deviation", dev.max_final_deviation)):
        claimed = metrics[key]
        c.record(f"re-measured {key}", abs(claimed - mine) <= DEVIATION_RTOL * max(abs(mine), 1e-6), claimed, mine)
    if metrics.get("locality") is not None:
        _remeasure_locality(c, loaded, handle, metrics["locality"])
    if level == "full" and "direction" in pred["edit"]:
        _recompute_direction(c, loaded, handle)


def _remeasure_locality(c: Any, loaded: Any, handle: Any, loc: dict[str, Any]) -> None:
    """Each prompt's KL divergence (mean and max) and summed losses, re-measured; the summaries follow from them
    (checked at every level)."""
    from blockcert.edit.locality import locality_numbers

    neutral, stress = locality_numbers(loaded, handle)
    for k, (claimed, mine) in enumerate(zip(loc["neutral"]["per_prompt"], neutral)):
        for key in ("kl_mean", "kl_max"):
            band = DEVIATION_RTOL * abs(mine[key]) + KL_ABS
            c.record(f"re-measured neutral prompt {k} {key}", claimed["tokens"] == mine["tokens"] and abs(claimed[key] - mine[key]) <= band,
                     claimed[key], f"{mine[key]:.6g} ±{band:.2g}")
    for k, (claimed, mine) in enumerate(zip(loc["stress"]["per_prompt"], stress)):
        for key in ("nll_base", "nll_edited"):
            band = DEVIATION_RTOL * max(abs(mine[key]), 1e-6)
            c.record(f"re-measured stress prompt {k} {key}", claimed["tokens"] == mine["tokens"] and abs(claimed[key] - mine[key]) <= band,
                     claimed[key], f"{mine[key]:.6g} ±{band:.2g}")


def _recompute_direction(c: Any, loaded: Any, handle: Any) -> None:
    """Level full: the direction recomputed from the corpus and layer its provenance names, on this model."""
    from blockcert.edit.direction import recompute_matches
    from blockcert.errors import UserError

    meta = handle.direction.meta
    try:
        same, cos = recompute_matches(loaded, handle.direction)
    except UserError as exc:
        c.record("direction recomputed from its corpus", False, "recomputable", "", exc.message)
        return
    c.record("direction recomputed from its corpus", same or cos >= DIRECTION_COSINE, f"cos >= {DIRECTION_COSINE}",
             f"{'bit-identical' if same else f'cos {cos:.9f}'} (layer {meta.get('layer')}, {(meta.get('corpus') or {}).get('description')})")
