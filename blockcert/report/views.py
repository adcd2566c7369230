"""What a report shows, as records: one run's blocks, prompts, full-model evaluation, comparisons and edit
sweep, each number read from the run's artifacts by :func:`blockcert.report.gather.collect`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np


@attrs.frozen
class Verification:
    """One certificate's result at level ``hashes``: ok, and ``failed`` = "check: detail" of each failed check."""

    ok: bool
    checks: int
    failed: tuple[str, ...] = ()


@attrs.frozen(eq=False)
class TokenErrors:
    """One prompt of one block, from ``errors.safetensors``; ``loss_delta`` = |ℓ_stitched − ℓ_base| per loss token."""

    error: np.ndarray  # [T] float64: e(p,t)
    rel_error: np.ndarray  # [T]
    path_match: np.ndarray  # [T] bool
    loss_delta: np.ndarray  # [T-1]


@attrs.frozen(eq=False)
class BlockView:
    index: int
    certificate: str  # block_<idx>/certificate.json
    certificate_id: str  # SHA-256 of its bytes
    predicate: dict[str, Any]
    metrics: dict[str, Any]  # the block's metrics.json "metrics" (per_prompt_* included), else the predicate's
    certified: bool
    verification: Verification
    subjects: tuple[tuple[str, str, str | None], ...]  # (name, sha256, tensor digest) of the block's own files
    errors: tuple[TokenErrors, ...]

    @property
    def derivation(self) -> dict[str, Any] | None:
        return self.predicate.get("surrogate")

    @property
    def lipschitz(self) -> dict[str, Any] | None:
        return self.predicate.get("lipschitz")


@attrs.frozen
class PromptView:
    index: int
    text: str
    ids: tuple[int, ...]
    pieces: tuple[str, ...]  # each token as text (the token id in brackets when no tokenizer is available)
    special: tuple[bool, ...]  # a special token (no text of the prompt), shown in its tokenizer spelling


@attrs.frozen
class FullView:
    evaluation: dict[str, Any]  # full/eval.json
    certificate_id: str | None
    verification: Verification | None
    subjects: tuple[tuple[str, str, str | None], ...]


@attrs.frozen
class CompareRow:
    label: str
    derivation: str  # the spec, or "extraction"
    blocks: tuple[int, ...]  # the blocks every compared run has
    certified: int
    mean_cov_act: float
    mean_cov_loss: float
    mean_mae: float
    mean_epsilon: float
    mae_ratio: float | None  # mean MAE / this run's mean MAE over the same blocks (None: this run's is 0)
    verified: bool
    per_block: dict[int, tuple[float, float, bool]]  # index -> (cov_act, MAE, certified)


@attrs.frozen
class SweepRow:
    block: int
    alpha: float
    answer_accuracy: float
    refuse_accuracy: float


@attrs.frozen
class EditSweep:
    source: str
    rows: tuple[SweepRow, ...]
    meta: tuple[tuple[str, str], ...]  # the file's other scalar fields, shown as they are


@attrs.frozen
class MinimizeRow:
    block: int
    heads: tuple[int, int]  # kept, total
    neurons: tuple[int, int]
    rank: tuple[int, int]  # summed over the block's matrices
    cov_act: float
    cov_loss: float
    certified: bool
    candidates: int
    seconds: float


@attrs.frozen
class MinimizeView:
    source: str
    model: str
    dtype: str
    budget: str
    rows: tuple[MinimizeRow, ...]


@attrs.frozen
class DirectionSweepRow:
    layer: int
    edit: str  # "ablate" | "add"
    scale: float | None
    alpha: float | None
    answer: tuple[int, int]  # correct, total
    refuse: tuple[int, int]
    answer_change: tuple[int, int, float]  # gained, lost, exact McNemar p
    refuse_change: tuple[int, int, float]
    kl_mean: float
    benign_unchanged: int
    ppl: tuple[float, float]  # stress perplexity unedited, edited
    verifies: bool  # its edit certificate passes level hashes and states these accuracies and KL
    problem: str  # why not ("" when it does)


@attrs.frozen
class DirectionSweepView:
    source: str
    model: str
    dtype: str
    corpus: str
    direction_corpus: str
    base: tuple[tuple[int, int], tuple[int, int]]  # (answer, refuse) of the unedited model: correct, total
    rows: tuple[DirectionSweepRow, ...]


@attrs.frozen(eq=False)
class RunView:
    """Everything a report shows about one run directory."""

    root: Path
    label: str  # the run directory as the user named it
    manifest: dict[str, Any]  # run.json
    blocks: tuple[BlockView, ...]
    prompts: tuple[PromptView, ...]
    tokens_source: str  # how the tokens were turned into text
    tokens_decoded: bool
    token_blocks: tuple[int, ...]  # blocks with per-token text heat maps
    token_blocks_reason: str
    verified: bool  # every certificate and the run summary pass at level hashes
    summary_verification: Verification | None
    shared_subjects: tuple[tuple[str, str, str | None], ...]  # run.json, traces/* (common to every block)
    full: FullView | None
    bounds: Any  # compose.BoundReport or None
    bounds_note: str | None  # why there is no global bound, when some block logs bounds
    compare: tuple[CompareRow, ...]
    edit_sweep: EditSweep | None
    minimize: MinimizeView | None = None
    direction_sweep: DirectionSweepView | None = None

    @property
    def policy(self) -> dict[str, float]:
        return self.manifest["policy"]

    @property
    def derivation(self) -> dict[str, Any] | None:
        return self.manifest.get("derivation")

    @property
    def derivation_spec(self) -> str | None:
        """A derived run's canonical spec, as certified (``run.json`` holds the spec as requested)."""
        if not self.derivation:
            return None
        return next((b.derivation["spec"] for b in self.blocks if b.derivation), self.derivation["spec"])

    @property
    def n_certified(self) -> int:
        return sum(b.certified for b in self.blocks)

    def block(self, index: int) -> BlockView:
        return next(b for b in self.blocks if b.index == index)


# ---------------------------------------------------------------------------------------------------
# Reading a run
# ---------------------------------------------------------------------------------------------------
