"""The mlp-scale sweep (the paper's Table 7 and its Llama-2 block sweep, §7.2-7.3): answer and refuse accuracy of
greedy completions of the refusal corpus at every (block, α), with Wilson intervals and exact McNemar tests against
the unedited model. ``blockcert edit sweep``; the directional sweep is :mod:`blockcert.edit.dirsweep`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts.digest import canonical_json
from blockcert.edit.certify import Decoding, edit_handle, generate
from blockcert.edit.refusal import Accuracy, PairedChange, classify, judgement_dict, load_corpus, paired_change, score, wilson
from blockcert.errors import UserError


@attrs.frozen
class SweepRow:
    block: int
    alpha: float
    spec: str
    answer_accuracy: float
    refuse_accuracy: float
    answer_correct: int
    refuse_correct: int
    reused_base: bool  # alpha == 1: the unedited completions (alpha = 1 changes no bit, see the tests)
    answer_interval: tuple[float, float]  # Wilson 95%
    refuse_interval: tuple[float, float]
    answer_change: PairedChange  # against the unedited completions of the same prompts (exact McNemar)
    refuse_change: PairedChange


@attrs.frozen
class SweepResult:
    out: Path
    model: str
    corpus: str
    decoding: dict[str, Any]
    base: Accuracy
    rows: tuple[SweepRow, ...]
    seconds: float
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        base = {**attrs.asdict(self.base), "answer_interval": wilson(self.base.answer_correct, self.base.n_answer),
                "refuse_interval": wilson(self.base.refuse_correct, self.base.n_refuse)}
        return {"model": self.model, "dtype": self.dtype, "corpus": self.corpus, "decoding": self.decoding, "base": base,
                "intervals": "Wilson score, 95%; changes: exact two-sided McNemar test on the paired prompts against the unedited model",
                "rows": [attrs.asdict(r) for r in self.rows], "seconds": self.seconds}


def sweep(
    model: str | Path | None = None,
    *,
    blocks: Sequence[int],
    alphas: Sequence[float],
    out: str | Path = "blockcert-edit-sweep",
    corpus: str = "builtin:refusal",
    decoding: Decoding | None = None,
    loaded: Any = None,
    progress: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
) -> SweepResult:
    """``mlp-scale`` at every (block, α): answer and refuse accuracy of greedy completions of the corpus.

    Writes ``results.json``, ``sweep.png`` (answer vs refuse accuracy per α, one line per block) and
    ``completions/<block>_<alpha>.jsonl`` (every completion with the classifier's judgement) under ``out``.
    """
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from blockcert.artifacts.fsutil import atomic_write_bytes, atomic_write_text
    from blockcert.model.load import load_model

    decoding = decoding or Decoding()
    items, corpus_desc = load_corpus(corpus)
    if not blocks or not alphas:
        raise UserError("a sweep needs at least one block and one alpha")
    loaded = loaded or load_model(model, device=device, dtype=dtype)
    handles = {(b, a): edit_handle(loaded, f"mlp-scale:block={b},alpha={a!r}") for b in blocks for a in alphas}  # validates all first
    root = Path(out)
    (root / "completions").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not progress)
    rows: list[SweepRow] = []
    with bar:
        task = bar.add_task("Edit sweep", total=1 + sum(a != 1.0 for a in alphas) * len(blocks))
        base = generate(loaded, items, decoding)
        bar.advance(task)
        base_judged = [classify(c, i) for c, i in zip(base, items)]
        base_acc = score(items, base_judged)
        for b in blocks:
            for a in alphas:
                handle = handles[(b, a)]
                if a == 1.0:
                    completions = base
                else:
                    with handle:
                        completions = generate(loaded, items, decoding)
                    bar.advance(task)
                judged = [classify(c, i) for c, i in zip(completions, items)]
                acc = score(items, judged)
                rows.append(SweepRow(b, float(a), str(handle.spec), acc.answer_accuracy, acc.refuse_accuracy, acc.answer_correct,
                                     acc.refuse_correct, a == 1.0, wilson(acc.answer_correct, acc.n_answer),
                                     wilson(acc.refuse_correct, acc.n_refuse), paired_change(items, base_judged, judged, "answer"),
                                     paired_change(items, base_judged, judged, "refuse")))
                lines = [canonical_json({"id": i.id, "label": i.label, "completion": c, "judgement": judgement_dict(j)}) + b"\n"
                         for i, c, j in zip(items, completions, judged)]
                atomic_write_bytes(root / "completions" / f"{b:03d}_{a!r}.jsonl", b"".join(lines))
    result = SweepResult(root, loaded.name, corpus_desc, decoding.record(loaded), base_acc, tuple(rows), time.perf_counter() - start,
                         loaded.dtype)
    atomic_write_text(root / "results.json", json.dumps(result.to_dict(), indent=2) + "\n")
    plot_sweep(result, root / "sweep.png")
    return result


def plot_sweep(result: SweepResult, path: Path) -> None:
    """Answer and refuse accuracy against α, one colour per block (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from blockcert.artifacts.fsutil import atomic_write_bytes

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    blocks = sorted({r.block for r in result.rows})
    for b in blocks:
        pts = sorted((r.alpha, r.answer_accuracy, r.refuse_accuracy) for r in result.rows if r.block == b)
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1] for p in pts], marker="o", label=f"block {b}")
        axes[1].plot(xs, [p[2] for p in pts], marker="o", label=f"block {b}")
    for ax, title in zip(axes, ("answer accuracy", "refuse accuracy")):
        ax.set_title(title)
        ax.set_xlabel("MLP scale α")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"mlp-scale sweep, {result.model}, {result.corpus}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
