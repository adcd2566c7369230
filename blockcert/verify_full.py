"""``verify --level full``: check the model itself, re-capture its traces, re-run the suffixes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np



class FullCheck:
    """Loads the model once; per block, recomputes the stitched losses with the certified IR."""

    def __init__(self, root: Path, model: str, tol: Any, stream: bool = False) -> None:
        self.root, self.model_spec, self.tol, self.stream = root, model, tol, stream
        self.loaded: Any = None
        self.traces: Any = None
        self.problem: str | None = None

    def _prepare(self, pred: dict[str, Any], texts: list[str], c: Any) -> None:
        if self.loaded is not None:
            return
        from .models import load_model
        from .trace import capture

        self.loaded = load_model(self.model_spec, arch=pred["model"]["arch"], dtype=pred["model"]["dtype"], stream=self.stream)
        self.traces = capture(self.loaded, texts)

    def __call__(self, ir: Any, ell: int, base: list[np.ndarray], stitched: list[np.ndarray], c: Any, pred: dict[str, Any],
                 texts: list[str], stored_residuals: list[np.ndarray]) -> list[np.ndarray]:
        from .pipeline import measure_block

        self._prepare(pred, texts, c)
        digest = self.loaded.weights_sha256()
        c.require("model weights digest", digest == pred["model"]["weights_sha256"], pred["model"]["weights_sha256"][:16],
                  digest[:16], f"{self.model_spec} is not the certified model")
        for t, stored in zip(self.traces, stored_residuals):
            peak = float(np.abs(stored).max())
            gap = float(np.abs(t.residual[ell : ell + 2] - stored[ell : ell + 2]).max())
            c.require(f"re-captured trace prompt {t.index}", gap <= self.tol.abs + self.tol.rel * peak, "stored x^(l), x^(l+1)",
                      f"max |Δ| {gap:.3g}")
        for t, b in zip(self.traces, base):
            c.require(f"re-computed baseline losses prompt {t.index}", np.allclose(t.loss, b, rtol=0, atol=1e-4), "stored", "recomputed")
        m = measure_block(self.loaded, self.traces, ir, ell, batch_size=8)
        for k, (new, old) in enumerate(zip(m.stitched, stitched)):
            gap = float(np.abs(np.asarray(new, np.float64) - old).max()) if new.size else 0.0
            c.record(f"re-run suffix losses prompt {k}", gap <= 1e-4, "stored l_stitched", f"max |Δ| {gap:.3g}")
        return [np.asarray(s, np.float64) for s in m.stitched]

