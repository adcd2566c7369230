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


SWEEP_MANIFEST = "sweep.json"


def sweep_manifest(kind: str, loaded: Any, items: Sequence[Any], corpus_desc: str, decoding: Decoding,
                   **extra: Any) -> dict[str, Any]:
    """What a sweep directory is a sweep of (the key an interrupted sweep resumes under)."""
    from blockcert.edit.refusal import corpus_sha256

    return {"kind": kind, "model": loaded.name, "weights_sha256": loaded.weights_sha256(), "dtype": loaded.dtype,
            "corpus": {"description": corpus_desc, "sha256": corpus_sha256(items)}, "decoding": decoding.record(loaded), **extra}


def prepare_sweep_dir(root: Path, manifest: dict[str, Any], force: bool) -> None:
    """Create ``root`` for a sweep, or resume the same sweep in it; refuse another sweep's (or anything else's)
    directory unless ``force`` (which deletes an earlier sweep, never a directory that is not one)."""
    import shutil

    from blockcert.artifacts.fsutil import atomic_write_bytes

    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory")
    marker = root / SWEEP_MANIFEST
    if root.is_dir() and any(root.iterdir()):
        earlier = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
        if earlier is None and not (force and (root / "results.json").is_file()):
            raise UserError(f"--out {root} is not empty and holds no {SWEEP_MANIFEST}: it is not a sweep of this kind",
                            "choose another --out (or --force for a sweep written before sweeps could resume)")
        if force:
            shutil.rmtree(root)
        elif earlier != manifest:
            raise UserError(f"{root} holds a sweep of another kind, model, precision, corpus or decoding ({marker})",
                            "pass --force to start it over, or choose another --out")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(marker, canonical_json(manifest))


def _completions_file(path: Path, items: Sequence[Any]) -> list[str] | None:
    """The completions an earlier run of the same sweep wrote to ``path`` (None when absent or not of ``items``)."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return None
    if [r.get("id") for r in rows] != [i.id for i in items] or not all(isinstance(r.get("completion"), str) for r in rows):
        return None
    return [r["completion"] for r in rows]


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
    force: bool = False,
) -> SweepResult:
    """``mlp-scale`` at every (block, α): answer and refuse accuracy of greedy completions of the corpus.

    Writes ``sweep.json`` (what the sweep is of), ``completions/unedited.jsonl`` and ``completions/<block>_<alpha>.jsonl``
    (every completion with the classifier's judgement, each as soon as it is generated), ``results.json`` (after every
    configuration; ``"complete": false`` until the last) and ``sweep.png`` (answer vs refuse accuracy per α, one line
    per block) under ``out``. Run again on the same ``out``, it resumes: completions already written for the same
    model, precision, corpus and decoding are read back, not regenerated (``force`` starts over).
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
    prepare_sweep_dir(root, sweep_manifest("blockcert/edit-sweep/v1", loaded, items, corpus_desc, decoding), force)
    (root / "completions").mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not progress)
    rows: list[SweepRow] = []

    def write(path: Path, completions: Sequence[str]) -> list[Any]:
        judged = [classify(c, i) for c, i in zip(completions, items)]
        lines = [canonical_json({"id": i.id, "label": i.label, "completion": c, "judgement": judgement_dict(j)}) + b"\n"
                 for i, c, j in zip(items, completions, judged)]
        atomic_write_bytes(path, b"".join(lines))
        return judged

    def generated(path: Path, handle: Any) -> list[str]:
        earlier = _completions_file(path, items)
        if earlier is not None:
            return earlier
        with handle:
            return generate(loaded, items, decoding)

    with bar:
        task = bar.add_task("Edit sweep", total=1 + sum(a != 1.0 for a in alphas) * len(blocks))
        base = _completions_file(root / "completions" / "unedited.jsonl", items) or generate(loaded, items, decoding)
        base_judged = write(root / "completions" / "unedited.jsonl", base)
        bar.advance(task)
        base_acc = score(items, base_judged)
        for b in blocks:
            for a in alphas:
                handle = handles[(b, a)]
                path = root / "completions" / f"{b:03d}_{a!r}.jsonl"
                completions = base if a == 1.0 else generated(path, handle)
                judged = write(path, completions)
                if a != 1.0:
                    bar.advance(task)
                acc = score(items, judged)
                rows.append(SweepRow(b, float(a), str(handle.spec), acc.answer_accuracy, acc.refuse_accuracy, acc.answer_correct,
                                     acc.refuse_correct, a == 1.0, wilson(acc.answer_correct, acc.n_answer),
                                     wilson(acc.refuse_correct, acc.n_refuse), paired_change(items, base_judged, judged, "answer"),
                                     paired_change(items, base_judged, judged, "refuse")))
                result = SweepResult(root, loaded.name, corpus_desc, decoding.record(loaded), base_acc, tuple(rows),
                                     time.perf_counter() - start, loaded.dtype)
                complete = len(rows) == len(blocks) * len(alphas)
                atomic_write_text(root / "results.json", json.dumps({**result.to_dict(), "complete": complete}, indent=2) + "\n")
    plot_sweep(result, root / "sweep.png")
    return result


def plot_sweep(result: SweepResult, path: Path) -> None:
    """Answer and refuse accuracy against α, one colour per block (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    """A matplotlib figure as PNG bytes without a timestamp or version (the same sweep, the same file), atomically."""
    import matplotlib.pyplot as plt

    from blockcert.artifacts.fsutil import atomic_write_bytes

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
