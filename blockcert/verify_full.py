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

from .verify_metrics import Tolerances, distances, norms


class FullCheck:
    """Loads the model once; compares the stored traces with re-captured ones; re-runs suffix losses."""

    def __init__(self, root: Path, model: str | None, tol: Tolerances, stream: bool = False, loaded: Any = None) -> None:
        self.root, self.model_spec, self.tol, self.stream = root, model, tol, stream
        self.loaded: Any = loaded
        self.traces: Any = None
        self._problems: dict[tuple[int, float], list[tuple[str, str, str, str]]] = {}

    def _model(self, pred: dict[str, Any], c: Any) -> Any:
        if self.loaded is None:
            from .models import load_model

            self.loaded = load_model(self.model_spec, arch=pred["model"]["arch"], dtype=pred["model"]["dtype"], stream=self.stream)
        digest = self.loaded.weights_sha256()
        c.require("model weights digest", digest == pred["model"]["weights_sha256"], pred["model"]["weights_sha256"][:16],
                  digest[:16], f"{self.model_spec} is not the certified model")
        c.require("model dtype", self.loaded.dtype == pred["model"]["dtype"], pred["model"]["dtype"], self.loaded.dtype)
        return self.loaded

    def recaptured(self, pred: dict[str, Any], entries: Sequence[dict[str, Any]], stored: Sequence[dict[str, np.ndarray]], c: Any,
                   tau_act: float) -> list[Any]:
        """The model's own traces of the certified prompts, after checking that the stored ones are them."""
        from .trace import capture

        loaded = self._model(pred, c)
        if self.traces is None:
            self.traces = capture(loaded, [e["text"] for e in entries])
        c.require("re-captured prompt count", len(self.traces) == len(stored), len(stored), len(self.traces))
        for k, (mine, theirs) in enumerate(zip(self.traces, stored)):
            key = (k, tau_act)
            if key not in self._problems:
                self._problems[key] = self._compare(k, mine, theirs, loaded.dtype, tau_act)
            for name, claimed, actual, detail in self._problems[key]:
                c.record(name, False, claimed, actual, detail)
            if self._problems[key]:
                c.require(f"re-captured trace prompt {k}", False, detail=f"traces/prompt_{k:03d}.safetensors is not what the model gives")
            c.record(f"re-captured trace prompt {k}", True, "ids, masks, gates, residuals, losses", "as the model gives")
        return list(self.traces)

    def _compare(self, k: int, mine: Any, theirs: dict[str, np.ndarray], dtype: str, tau_act: float) -> list[tuple[str, str, str, str]]:
        where = f"traces/prompt_{k:03d}.safetensors"
        out = []
        ids = theirs["input_ids"]
        if ids.dtype != np.int64 or ids.shape != mine.input_ids.shape or not np.array_equal(ids, mine.input_ids):
            first = next((t for t in range(min(ids.size, mine.input_ids.size)) if ids[t] != mine.input_ids[t]), min(ids.size, mine.input_ids.size))
            out.append((f"input_ids prompt {k}", f"{ids.size} ids", f"{mine.input_ids.size} ids",
                        f"{where}: token ids differ from the tokenizer's at position {first}"))
            return out  # nothing else can be compared token by token
        for name in ("masks", "head_gates"):
            if not np.array_equal(np.asarray(theirs[name], bool), getattr(mine, name)):
                out.append((f"re-captured {name} prompt {k}", "stored", "observed", f"{where}: {name} differ from what the model applied"))
        res_s, res_m = theirs["residual"], mine.residual
        for layer in range(res_m.shape[0]):
            gap = distances(res_s[layer], res_m[layer])
            band = self.tol.trace_band(norms(res_m[layer]), dtype, tau_act)
            off = np.flatnonzero(gap > band)
            if off.size:
                t = int(off[0])
                out.append((f"re-captured residual prompt {k}", f"x^({layer}) token {t}", f"|Δ| {gap[t]:.3g} > band {band[t]:.3g}",
                            f"{where}: the stored residual x^({layer}) differs from the model's at {off.size} token(s)"))
                break
        loss_gap = np.abs(np.asarray(theirs["loss"], np.float64) - np.asarray(mine.loss, np.float64))
        if loss_gap.size and float(loss_gap.max()) > self.tol.loss_abs:
            out.append((f"re-computed baseline losses prompt {k}", "stored", f"max |Δ| {float(loss_gap.max()):.3g}",
                        f"{where}: baseline token losses differ from the model's by more than {self.tol.loss_abs:g} nats"))
        return out

    def stitched(self, ir: Any, ell: int, stored: Sequence[np.ndarray], c: Any) -> list[np.ndarray]:
        """Block ``ell`` replaced by ``ir`` on the model's traces: the suffix token losses, re-run; each stored
        one must be within ``loss_abs`` nats."""
        from .pipeline import measure_block

        m = measure_block(self.loaded, self.traces, ir, ell, batch_size=8)
        out = []
        for k, (new, old) in enumerate(zip(m.stitched, stored)):
            gap = float(np.abs(np.asarray(new, np.float64) - np.asarray(old, np.float64)).max()) if new.size else 0.0
            c.record(f"re-run suffix losses prompt {k}", gap <= self.tol.loss_abs, "stored l_stitched", f"max |Δ| {gap:.3g}",
                     "" if gap <= self.tol.loss_abs else f"block_{ell:03d}/errors.safetensors: stitched losses of prompt {k} are not the model's")
            out.append(np.asarray(new, np.float64))
        return out
