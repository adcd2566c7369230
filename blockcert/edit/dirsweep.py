"""The directional-edit sweep (``blockcert edit direction-sweep``): for each layer ℓ, the refusal direction at
x^(ℓ) (:mod:`blockcert.edit.direction`), then certified edits with it:

* ``direction-ablate:layers=all`` (does projecting it out everywhere remove the refusals?), and
* ``direction-add:layer=ℓ,alpha=a`` for each scale s, with a = s × ‖μ_refuse − μ_answer‖ (s = 1 adds the
  difference of means itself, as Arditi et al. do; does adding it make the model refuse benign requests?).

Every configuration is an ordinary edit certificate (``blockcert verify`` each), so the sweep's numbers are
exactly the certified ones. Layout under ``out``::

    sweep.json                 what the sweep is of: model identity, dtype, corpus digests, decoding (resume key)
    directions/L<ℓ>/           the direction at layer ℓ (direction.safetensors, direction.json)
    edits/L<ℓ>-ablate/         one edit certificate per configuration
    edits/L<ℓ>-add-x<s>/
    results.json, results.md   every row: accuracies with Wilson 95% intervals, exact McNemar tests against the
                               unedited completions, locality (KL, unchanged benign completions, stress PPL), ε_edit
    sweep.png                  refuse / answer accuracy and KL against the layer, one line per edit

The unedited completions are generated once and handed to every edit (``certify_edit(base_completions=...)``).
An interrupted sweep resumes: a configuration whose certificate is complete (certificate.json is written last)
and whose edit.json names the same model, corpus, decoding, spec and direction digest is read back, not redone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from blockcert.artifacts.layout import CERTIFICATE, EDIT_MANIFEST, EDIT_METRICS
from blockcert.edit.certify import Decoding, certify_edit, generate, read_completions
from blockcert.edit.refusal import PairedChange, classify, load_corpus, paired_change, score, wilson
from blockcert.edit.sweep import prepare_sweep_dir, save_figure, sweep_manifest
from blockcert.errors import UserError

SWEEP_KIND = "blockcert/direction-sweep/v1"


@attrs.frozen
class DirectionRow:
    layer: int
    edit: str  # "ablate" or "add"
    scale: float | None  # add: alpha = scale × norm
    alpha: float | None
    spec: str  # as certified (the edit's own copy of the direction: direction=direction)
    out: str
    certificate_id: str
    direction_sha256: str
    norm: float  # ‖μ_refuse − μ_answer‖ at x^(ℓ)
    separation: float | None  # in-sample, pooled standard deviations
    answer_correct: int
    refuse_correct: int
    n_answer: int
    n_refuse: int
    answer_interval: tuple[float, float]
    refuse_interval: tuple[float, float]
    answer_change: PairedChange
    refuse_change: PairedChange
    kl_mean: float
    kl_max: float
    benign_unchanged: int
    ppl_base: float
    ppl_edited: float
    epsilon_edit: float
    seconds: float
    resumed: bool  # read back from an earlier, interrupted run of the same sweep


@attrs.frozen
class DirectionSweepResult:
    out: Path
    model: str
    dtype: str
    corpus: str
    decoding: dict[str, Any]
    base: dict[str, Any]
    rows: tuple[DirectionRow, ...]
    seconds: float
    direction_corpus: str = ""  # where the directions were computed (the corpus itself: in-sample)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dtype": self.dtype, "corpus": self.corpus, "direction_corpus": self.direction_corpus,
                "decoding": self.decoding, "base": self.base,
                "intervals": "Wilson score, 95%; changes: exact two-sided McNemar test on the paired prompts against the unedited model",
                "rows": [attrs.asdict(r) for r in self.rows], "seconds": self.seconds}


def auto_layers(n_blocks: int) -> list[int]:
    """Five evenly spaced layers, round(k·L/6) for k = 1..5 (``--layers auto``): 5, 10, 15, 20, 25 of SmolLM2's 30."""
    return sorted({round(n_blocks * k / 6) for k in range(1, 6)})


def edit_name(layer: int, scale: float | None) -> str:
    return f"L{layer:02d}-ablate" if scale is None else f"L{layer:02d}-add-x{scale:g}"


def _finished(edit_dir: Path, loaded: Any, spec: str, direction_sha: str, corpus_sha: str, decoding: dict[str, Any]) -> bool:
    """An earlier run's certificate for this configuration, complete and made the same way."""
    if not (edit_dir / CERTIFICATE).is_file():
        return False
    try:
        m = json.loads((edit_dir / EDIT_MANIFEST).read_text(encoding="utf-8"))
        return (m["edit"]["spec"] == spec and m["edit"]["direction"]["sha256"] == direction_sha
                and m["model"]["weights_sha256"] == loaded.weights_sha256() and m["corpus"]["sha256"] == corpus_sha
                and m["decoding"] == decoding)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _row(layer: int, scale: float | None, alpha: float | None, direction: Any, edit_dir: Path, items: Sequence[Any],
         seconds: float, resumed: bool) -> DirectionRow:
    """A row from the certificate on disk (fresh or resumed alike: the sweep reports what was certified)."""
    import hashlib

    manifest = json.loads((edit_dir / EDIT_MANIFEST).read_text(encoding="utf-8"))
    metrics = json.loads((edit_dir / EDIT_METRICS).read_text(encoding="utf-8"))
    rows = read_completions(edit_dir)
    before = [classify(r["base"], i) for i, r in zip(items, rows)]
    after = [classify(r["edited"], i) for i, r in zip(items, rows)]
    acc = score(items, after)
    loc = metrics["locality"]
    return DirectionRow(
        layer, "ablate" if scale is None else "add", scale, alpha, manifest["edit"]["spec"], str(edit_dir),
        hashlib.sha256((edit_dir / CERTIFICATE).read_bytes()).hexdigest(), direction.sha256, float(direction.meta["norm_before_normalising"]),
        direction.meta.get("projection", {}).get("separation"), acc.answer_correct, acc.refuse_correct, acc.n_answer, acc.n_refuse,
        wilson(acc.answer_correct, acc.n_answer), wilson(acc.refuse_correct, acc.n_refuse),
        paired_change(items, before, after, "answer"), paired_change(items, before, after, "refuse"),
        loc["neutral"]["kl_mean"], loc["neutral"]["kl_max"], loc["benign"]["unchanged"], loc["stress"]["ppl_base"],
        loc["stress"]["ppl_edited"], metrics["epsilon_edit"], seconds, resumed)


def direction_sweep(
    model: str | Path | None = None,
    *,
    layers: Sequence[int],
    scales: Sequence[float] = (1.0,),
    ablate: bool = True,
    out: str | Path = "blockcert-direction-sweep",
    corpus: str = "builtin:refusal",
    direction_corpus: str | None = None,
    decoding: Decoding | None = None,
    loaded: Any = None,
    force: bool = False,
    progress: bool = False,
    device: str = "cpu",
    dtype: str = "float32",
) -> DirectionSweepResult:
    """Directions at each of ``layers`` and the certified edits with them (see the module docstring). The directions
    come from ``direction_corpus`` (default: ``corpus``, in-sample); e.g. ``builtin:refusal[1/2]`` with
    ``corpus="builtin:refusal[2/2]"`` tests each direction on prompts it was not computed from."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from blockcert.artifacts.fsutil import atomic_write_text
    from blockcert.edit.direction import make_direction
    from blockcert.model.load import load_model

    decoding = decoding or Decoding()
    items, corpus_desc = load_corpus(corpus)
    if not layers or not (ablate or scales):
        raise UserError("a direction sweep needs at least one layer, and --scales or the ablation")
    if any(s <= 0 for s in scales):
        raise UserError(f"--scales {','.join(f'{s:g}' for s in scales)}: every scale must be positive (α = scale × ‖mean difference‖)")
    loaded = loaded or load_model(model, device=device, dtype=dtype)
    n_blocks = loaded.native.n_blocks
    bad = [ell for ell in layers if not 0 <= ell < n_blocks]
    if bad:
        raise UserError(f"--layers {bad[0]}: {loaded.name} has blocks 0-{n_blocks - 1}; the direction at x^(ℓ) is edited at block ℓ")
    root = Path(out)
    from blockcert.edit.refusal import corpus_sha256

    direction_corpus = direction_corpus or corpus
    d_items, d_desc = load_corpus(direction_corpus)
    manifest = sweep_manifest(SWEEP_KIND, loaded, items, corpus_desc, decoding,
                              direction_corpus={"description": d_desc, "sha256": corpus_sha256(d_items)})
    prepare_sweep_dir(root, manifest, force)
    start = time.perf_counter()
    configs = [(ell, s) for ell in layers for s in ((None,) if ablate else ()) + tuple(scales)]
    base: list[str] | None = None
    rows: list[DirectionRow] = []
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task("Direction sweep", total=len(configs))
        directions: dict[int, Any] = {}
        for ell, s in configs:
            if ell not in directions:
                bar.update(task, description=f"Direction at layer {ell}")
                directions[ell] = make_direction(loaded, layer=ell, out=root / "directions" / f"L{ell:02d}", corpus=direction_corpus,
                                                 chat_template=decoding.chat_template, force=True)
            d = directions[ell]
            alpha = None if s is None else round(float(s) * float(d.meta["norm_before_normalising"]), 4)
            spec = (f"direction-ablate:layers=all,direction={d.path}" if s is None
                    else f"direction-add:layer={ell},alpha={alpha!r},direction={d.path}")
            edit_dir = root / "edits" / edit_name(ell, s)
            certified = spec.rsplit("direction=", 1)[0] + "direction=direction"
            t = time.perf_counter()
            resumed = _finished(edit_dir, loaded, certified, d.sha256, manifest["corpus"]["sha256"], manifest["decoding"])
            if not resumed:
                if base is None:
                    bar.update(task, description="Generating (unedited)")
                    base = generate(loaded, items, decoding)
                bar.update(task, description=f"{edit_name(ell, s)}: generating, deviations, locality")
                certify_edit(loaded=loaded, spec=spec, out=edit_dir, corpus=corpus, decoding=decoding, force=True, base_completions=base)
            rows.append(_row(ell, s, alpha, d, edit_dir, items, 0.0 if resumed else time.perf_counter() - t, resumed))
            bar.advance(task)
            _write(root, rows, manifest, items, time.perf_counter() - start, partial=True)
    result = _write(root, rows, manifest, items, time.perf_counter() - start, partial=False)
    plot_direction_sweep(result, root / "sweep.png")
    atomic_write_text(root / "results.md", results_markdown(result))
    return result


def _write(root: Path, rows: Sequence[DirectionRow], manifest: dict[str, Any], items: Sequence[Any], seconds: float,
           partial: bool) -> DirectionSweepResult:
    """results.json after every configuration (``"complete": false`` until the last), so a crash loses nothing."""
    from blockcert.artifacts.fsutil import atomic_write_text

    first = read_completions(Path(rows[0].out))
    base_acc = score(items, [classify(r["base"], i) for i, r in zip(items, first)])
    base = {**attrs.asdict(base_acc), "answer_interval": wilson(base_acc.answer_correct, base_acc.n_answer),
            "refuse_interval": wilson(base_acc.refuse_correct, base_acc.n_refuse)}
    result = DirectionSweepResult(root, manifest["model"], manifest["dtype"], manifest["corpus"]["description"], manifest["decoding"],
                                  base, tuple(rows), seconds, manifest["direction_corpus"]["description"])
    atomic_write_text(root / "results.json", json.dumps({**result.to_dict(), "complete": not partial}, indent=2) + "\n")
    return result


def _edit_label(r: DirectionRow) -> str:
    return "ablate, all layers" if r.edit == "ablate" else f"add at ℓ, {r.scale:g}× (α = {r.alpha:g})"


def results_markdown(result: DirectionSweepResult) -> str:
    """The sweep as a Markdown table (docs/edits.md quotes these)."""
    b = result.base
    where = ("in-sample: directions from the same prompts" if result.direction_corpus == result.corpus
             else f"directions from {result.direction_corpus}")
    lines = [f"Direction sweep of {result.model} ({result.dtype}) on {result.corpus} ({where}); unedited: answer "
             f"{b['answer_correct']}/{b['n_answer']}, "
             f"refuse {b['refuse_correct']}/{b['n_refuse']}. Changes against the unedited completions of the same prompts: "
             "+gained/−lost, exact McNemar p.", "",
             "| layer ℓ | edit | ‖μ_refuse − μ_answer‖ | separation | answer | refuse | benign unchanged | KL mean / max (nats) "
             "| stress PPL | ε_edit |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        sep = "—" if r.separation is None else f"{r.separation:.2f}"
        a, f = r.answer_change, r.refuse_change
        lines.append(f"| {r.layer} | {_edit_label(r)} | {r.norm:.3g} | {sep} | {r.answer_correct}/{r.n_answer} (+{a.gained}/−{a.lost}, "
                     f"p {a.p_value:.2g}) | {r.refuse_correct}/{r.n_refuse} (+{f.gained}/−{f.lost}, p {f.p_value:.2g}) | "
                     f"{r.benign_unchanged}/{r.n_answer} | {r.kl_mean:.3g} / {r.kl_max:.3g} | {r.ppl_base:.4g} → {r.ppl_edited:.4g} "
                     f"| {r.epsilon_edit:.3g} |")
    return "\n".join(lines) + "\n"


def plot_direction_sweep(result: DirectionSweepResult, path: Path) -> None:
    """Refuse accuracy, answer accuracy and mean KL against the layer, one line per edit (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    series = sorted({(r.edit, r.scale) for r in result.rows}, key=lambda k: (k[0], k[1] or 0.0))
    b = result.base
    for kind, scale in series:
        pts = sorted((r.layer, r.refuse_correct / max(r.n_refuse, 1), r.answer_correct / max(r.n_answer, 1), r.kl_mean)
                     for r in result.rows if (r.edit, r.scale) == (kind, scale))
        label = "ablate (all layers)" if kind == "ablate" else f"add {scale:g}×"
        for ax, k in zip(axes, (1, 2, 3)):
            ax.plot([p[0] for p in pts], [p[k] for p in pts], marker="o", label=label)
    axes[0].axhline(b["refuse_correct"] / max(b["n_refuse"], 1), color="grey", ls="--", lw=1, label="unedited")
    axes[1].axhline(b["answer_correct"] / max(b["n_answer"], 1), color="grey", ls="--", lw=1, label="unedited")
    for ax, title in zip(axes, ("refuse accuracy", "answer accuracy", "KL(unedited ‖ edited), mean, nats")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("layer ℓ of the direction")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"direction sweep, {result.model} ({result.dtype}), {result.corpus}", fontsize=9)
    save_figure(fig, path)
