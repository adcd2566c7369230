"""Certified local edits (paper §7): apply an edit, measure its behavioural effect on a labelled corpus, certify.

``blockcert edit --block 15 --mlp-scale 0.33`` (or ``--spec mlp-scale:block=15,alpha=0.33``, or any edit a
plugin registers through ``blockcert_edit``) generates greedy completions of the refusal/safety corpus with
the unedited and the edited model, judges them with the heuristic classifier of §7.1, measures the local
edit error ε_edit at the edited block and the deviation it causes at the final hidden state, and writes an
edit certificate::

    edit.json            what was done: model identity, edit spec, corpus (digest), decoding policy, classifier
    completions.jsonl    per prompt: the base and the edited completion and what the classifier found
    metrics.json         answer / refuse accuracy before and after, ε_edit, max ‖F′(x) − F(x)‖, amplification
    human.json, labels/  optional: annotators' labels imported with ``blockcert edit import``
    certificate.json     in-toto statement over all of the above (canonical JSON, written last)

Everything is recomputable: ``blockcert verify`` re-classifies the stored completions and, given the model,
regenerates them and re-measures the deviations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from blockcert.artifacts import records as R
from blockcert.artifacts.digest import canonical_json, json_sha256
from blockcert.artifacts.layout import CERTIFICATE, COMPLETIONS, DIRECTION_DIR, DIRECTION_FILES, EDIT_MANIFEST, EDIT_METRICS, HUMAN
from blockcert.artifacts.layout import LABELS as LABELS_DIR
from blockcert.edit.locality import locality
from blockcert.edit.refusal import (  # noqa: F401  the edit contract, re-exported: blockcert.edit.certify.classify etc. keep working
    CORPUS_FIELDS,
    EDIT_PREDICATE,
    EDIT_SCHEMA_VERSION,
    HARMFUL_MARKERS,
    HUMAN_LABELS,
    LABELS,
    REFUSAL_MARKERS,
    Accuracy,
    CorpusItem,
    Judgement,
    PairedChange,
    classifier_record,
    classify,
    completions_bytes,
    corpus_sha256,
    judgement_dict,
    load_corpus,
    paired_change,
    score,
    wilson,
)
from blockcert.errors import UserError

# ---------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class Decoding:
    """Greedy decoding policy (recorded in the certificate; verification regenerates with it)."""

    max_new_tokens: int = 48
    batch_size: int = 24
    chat_template: bool = True
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")

    def record(self, loaded: Any) -> dict[str, Any]:
        template = getattr(loaded.tokenizer, "chat_template", None) if self.chat_template else None
        return {**attrs.asdict(self), "do_sample": False, "padding": "left",
                "chat_template_sha256": json_sha256(template) if template else None}


def prompt_texts(loaded: Any, items: Sequence[CorpusItem], decoding: Decoding) -> list[str]:
    tok = loaded.tokenizer
    if tok is None:
        raise UserError(f"model {loaded.name} has no tokenizer: edits need one to generate text")
    if decoding.chat_template and getattr(tok, "chat_template", None):
        return [tok.apply_chat_template([{"role": "user", "content": i.prompt}], tokenize=False, add_generation_prompt=True)
                for i in items]
    return [i.prompt for i in items]


def generate(loaded: Any, items: Sequence[CorpusItem], decoding: Decoding, progress: Any = None) -> list[str]:
    """Greedy completions (new text only), left-padded batches of ``decoding.batch_size`` in corpus order."""
    import torch

    tok = loaded.tokenizer
    texts = prompt_texts(loaded, items, decoding)
    side, pad = tok.padding_side, tok.pad_token
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    out: list[str] = []
    try:
        for start in range(0, len(texts), decoding.batch_size):
            enc = tok(texts[start : start + decoding.batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(loaded.native.device) for k, v in enc.items()}
            torch.manual_seed(decoding.seed)
            with torch.no_grad():
                ids = loaded.model.generate(**enc, max_new_tokens=decoding.max_new_tokens, do_sample=False,
                                            pad_token_id=tok.pad_token_id, num_beams=1)
            new = ids[:, enc["input_ids"].shape[1]:]
            out.extend(tok.decode(row.cpu(), skip_special_tokens=True) for row in new)
            if progress is not None:
                progress(len(new))
    finally:
        tok.padding_side, tok.pad_token = side, pad
    return out


# ---------------------------------------------------------------------------------------------------
# Local edit error and downstream deviation (§7.2)
# ---------------------------------------------------------------------------------------------------


@attrs.frozen
class Deviation:
    epsilon_edit: float  # max over prompts, tokens and edited blocks l of ||B'_l(x^(l)) - B_l(x^(l))||
    max_final_deviation: float  # max over prompts and tokens of ||x'^(L) - x^(L)||
    amplification: float | None  # max_final_deviation / epsilon_edit (None when epsilon_edit = 0)
    per_prompt_epsilon: tuple[float, ...]
    per_prompt_final: tuple[float, ...]


def deviation(loaded: Any, handle: Any, items: Sequence[CorpusItem], decoding: Decoding) -> Deviation:
    """ε_edit at the edited block(s) on the traced prompts (each edited block fed the unedited stream; the maximum
    over blocks), and the deviation at the final hidden state."""
    import torch

    from blockcert.pipeline.trace import padded_batches

    tok = loaded.tokenizer
    native = loaded.native
    texts = prompt_texts(loaded, items, decoding)
    ids = [np.asarray(tok(t, add_special_tokens=False)["input_ids"], dtype=np.int64) for t in texts]
    eps, fin = [], []
    blocks = tuple(getattr(handle, "blocks", (handle.block,)))  # every block the edit changes
    for part, batch, positions in padded_batches(ids, decoding.batch_size, native.device):
        with torch.no_grad():
            base = native.residual_stream(batch, positions)
            with handle:
                local = {ell: native.call_block(ell, base[ell], positions) for ell in blocks}
                edited = native.residual_stream(batch, positions)
        for b, a in enumerate(part):
            n = a.size
            eps.append(max(float(torch.linalg.vector_norm((local[ell][b, :n] - base[ell + 1][b, :n]).double(), dim=-1).max())
                           for ell in blocks))
            fin.append(float(torch.linalg.vector_norm((edited[-1][b, :n] - base[-1][b, :n]).double(), dim=-1).max()))
    e, f = max(eps), max(fin)
    return Deviation(e, f, f / e if e > 0 else None, tuple(eps), tuple(fin))


# ---------------------------------------------------------------------------------------------------
# Applying an edit and certifying it
# ---------------------------------------------------------------------------------------------------


def parse_edit(text: str) -> Any:
    from blockcert.spec import parse_spec

    return parse_spec(text, "--spec")


def edit_handle(loaded: Any, text: str, base: Path | None = None) -> Any:
    """The edit ``text`` applied to ``loaded`` through the ``blockcert_edit`` hook (a context manager). A relative
    ``direction=`` path is resolved against ``base`` when given (an edit certificate's own copy of its direction)."""
    from blockcert.plugins import get_plugins
    from blockcert.spec import Spec

    spec = parse_edit(text)
    if base is not None and "direction" in spec.params and not Path(spec.params["direction"]).is_absolute():
        spec = Spec(spec.name, {**spec.params, "direction": str(Path(base) / spec.params["direction"])})
    handle = get_plugins().edit(loaded, spec)
    for attr in ("block", "__enter__", "__exit__"):
        if not hasattr(handle, attr):
            raise UserError(f"edit {text!r}: the plugin returned {type(handle).__name__}, which is not a model edit handle "
                            "(needs .block and a context manager)", "see docs/plugins.md, blockcert_edit")
    return handle


@attrs.frozen
class EditResult:
    out: Path
    spec: str
    block: int
    before: Accuracy
    after: Accuracy
    deviation: Deviation
    certificate_id: str
    human: dict[str, Any] | None = None
    locality: dict[str, Any] | None = None
    blocks: tuple[int, ...] = ()  # every block the edit changes (ε_edit is the maximum over them)


def _completion_rows(items: Sequence[CorpusItem], base: Sequence[str], edited: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for item, b, e in zip(items, base, edited):
        jb, je = classify(b, item), classify(e, item)
        rows.append({"id": item.id, "label": item.label, "category": item.category, "prompt": item.prompt,
                     "keywords": list(item.keywords), "base": b, "edited": e, "base_judgement": judgement_dict(jb),
                     "edited_judgement": judgement_dict(je)})
    return rows


def metrics_record(items: Sequence[CorpusItem], rows: Sequence[dict[str, Any]], dev: Deviation,
                   locality: dict[str, Any] | None = None) -> R.EditMetrics:
    before = score(items, [classify(r["base"], i) for i, r in zip(items, rows)])
    after = score(items, [classify(r["edited"], i) for i, r in zip(items, rows)])
    return R.EditMetrics(
        before=attrs.asdict(before), after=attrs.asdict(after), epsilon_edit=dev.epsilon_edit,
        max_final_deviation=dev.max_final_deviation, amplification=dev.amplification,
        per_prompt=[{"id": i.id, "epsilon_edit": e, "final_deviation": f} for i, e, f in zip(items, dev.per_prompt_epsilon, dev.per_prompt_final)],
        locality=locality,
    )


def edit_manifest(loaded: Any, spec: str, handle: Any, items: Sequence[CorpusItem], corpus_desc: str,
                  decoding: Decoding) -> R.EditManifest:
    from blockcert import __version__

    return R.EditManifest(
        tool=R.Tool("blockcert", __version__),
        model=R.ModelIdentity(loaded.name, loaded.arch, loaded.dtype, loaded.weights_sha256(), loaded.source_sha256,
                              loaded.native.n_blocks, loaded.native.d_model),
        edit={"spec": spec, "block": int(handle.block),
              **({"direction": handle.direction.meta} if getattr(handle, "direction", None) is not None else {})},
        corpus={"description": corpus_desc, "count": len(items), "sha256": corpus_sha256(items),
                "answer": sum(i.label == "answer" for i in items), "refuse": sum(i.label == "refuse" for i in items)},
        decoding=decoding.record(loaded),
        classifier=classifier_record(),
        device=loaded.device,
    )


def certify_edit(
    model: str | Path | None = None,
    *,
    spec: str,
    out: str | Path = "blockcert-edit",
    corpus: str = "builtin:refusal",
    decoding: Decoding | None = None,
    force: bool = False,
    loaded: Any = None,
    progress: bool = False,
    device: str = "cpu",
    base_completions: Sequence[str] | None = None,
) -> EditResult:
    """Apply edit ``spec`` to ``model``, measure it on ``corpus``, and write an edit certificate to ``out``.

    ``base_completions``: the unedited model's completions of ``corpus`` under ``decoding``, when the caller has
    already generated them with this ``loaded`` model (a sweep generates them once); the verifier regenerates them."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from blockcert.model.load import load_model

    decoding = decoding or Decoding()
    items, corpus_desc = load_corpus(corpus)
    root = Path(out)
    _prepare_edit_out(root, force)
    loaded = loaded or load_model(model, device=device)
    handle = edit_handle(loaded, spec)
    canonical = str(getattr(handle, "spec", spec))
    direction = getattr(handle, "direction", None)
    if direction is not None:  # the certificate names its own copy of the direction, relative to the edit directory
        canonical = str(attrs.evolve(handle.spec, direction=DIRECTION_DIR))
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not progress)
    with bar:
        if base_completions is None:
            task = bar.add_task("Generating (unedited)", total=len(items))
            base = generate(loaded, items, decoding, progress=lambda n: bar.advance(task, n))
        elif len(base_completions) != len(items):
            raise ValueError(f"base_completions: {len(base_completions)} completions for {len(items)} corpus prompts")
        else:
            base = list(base_completions)
        task = bar.add_task(f"Generating ({canonical})", total=len(items))
        with handle:
            edited = generate(loaded, items, decoding, progress=lambda n: bar.advance(task, n))
        task = bar.add_task("Deviations and locality", total=None)
        dev = deviation(loaded, handle, items, decoding)
        rows = _completion_rows(items, base, edited)
        local = locality(loaded, handle, rows)  # blockcert.edit.locality
    manifest = edit_manifest(loaded, canonical, handle, items, corpus_desc, decoding)
    metrics = metrics_record(items, rows, dev, local)
    if direction is not None:
        direction.copy_to(root / DIRECTION_DIR)
    cert_id = write_edit_artifacts(root, manifest, rows, metrics, human=None)
    return EditResult(root, canonical, int(handle.block), Accuracy(**metrics.before), Accuracy(**metrics.after), dev, cert_id,
                      locality=local, blocks=tuple(getattr(handle, "blocks", (handle.block,))))


def _prepare_edit_out(root: Path, force: bool) -> None:
    import shutil

    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not force:
            raise UserError(f"output directory {root} is not empty", "pass --force to replace an earlier edit certificate, or another --out")
        if not (root / EDIT_MANIFEST).is_file():
            raise UserError(f"--force: {root} does not look like a BlockCert edit directory (edit.json missing); refusing to delete it")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def read_completions(root: Path) -> list[dict[str, Any]]:
    """The rows of an edit directory's completions.jsonl (one JSON object per line)."""
    return [json.loads(line) for line in (root / COMPLETIONS).read_text(encoding="utf-8").splitlines()]


def write_edit_artifacts(root: Path, manifest: R.EditManifest, rows: Sequence[dict[str, Any]], metrics: R.EditMetrics,
                         human: dict[str, Any] | None) -> str:
    """Write edit.json, completions.jsonl, metrics.json (and human.json), then the certificate; return its id."""
    from blockcert.artifacts.fsutil import atomic_write_bytes
    from blockcert.certificate import statement, subject, write_certificate

    (root / CERTIFICATE).unlink(missing_ok=True)  # the certificate is written last: never a stale one
    atomic_write_bytes(root / EDIT_MANIFEST, canonical_json(R.dump(manifest)))
    atomic_write_bytes(root / COMPLETIONS, completions_bytes(rows))
    atomic_write_bytes(root / EDIT_METRICS, canonical_json(R.dump(metrics)))
    names = [COMPLETIONS, EDIT_MANIFEST, EDIT_METRICS]
    if "direction" in manifest.edit:
        names += [f"{DIRECTION_DIR}/{n}" for n in DIRECTION_FILES]
    if human is not None:
        atomic_write_bytes(root / HUMAN, canonical_json(human))
        names += [HUMAN, *human["files"]]
    what = manifest
    predicate = R.dump(R.EditPredicate(
        schema_version=EDIT_SCHEMA_VERSION, tool=what.tool, model=what.model, edit=what.edit, corpus=what.corpus,
        decoding=what.decoding, classifier=what.classifier,
        metrics={k: getattr(metrics, k) for k in ("before", "after", "epsilon_edit", "max_final_deviation", "amplification", "locality")},
        human_labels=None if human is None else {k: human[k] for k in ("annotators", "base", "edited", "agreement")},
        completions=COMPLETIONS,
        device=what.device,
    ))
    cert = statement([subject(root, n) for n in sorted(names)], EDIT_PREDICATE, predicate)
    return write_certificate(root / CERTIFICATE, cert)


def import_labels(root: str | Path, sheets: Sequence[str | Path]) -> dict[str, Any]:
    """Copy the annotators' sheets into ``root/labels/``, aggregate them and re-issue the edit certificate."""
    import json

    from blockcert.artifacts.fsutil import atomic_write_text
    from blockcert.edit.human import aggregate, read_labels
    from blockcert.verifier.edit import is_edit_dir

    root = Path(root)
    if not is_edit_dir(root):
        raise UserError(f"{root} is not a BlockCert edit directory (edit.json and certificate.json expected)")
    if not sheets:
        raise UserError("give at least one label sheet")
    rows = read_completions(root)
    items = [CorpusItem(r["id"], r["label"], r["category"], r["prompt"], tuple(r["keywords"])) for r in rows]
    parsed, names = [], []
    for k, sheet in enumerate(sheets, 1):
        path = Path(sheet)
        if not path.is_file():
            raise UserError(f"label sheet not found: {path}")
        text = path.read_text(encoding="utf-8")
        parsed.append(read_labels(text, str(path), rows))
        names.append(f"{LABELS_DIR}/annotator_{k}.csv")
    labels_dir = root / LABELS_DIR
    if labels_dir.exists():
        for old in labels_dir.iterdir():
            old.unlink()
    labels_dir.mkdir(exist_ok=True)
    for name, sheet in zip(names, sheets):
        atomic_write_text(root / name, Path(sheet).read_text(encoding="utf-8"))
    human = aggregate(items, rows, parsed, names)
    manifest = R.read(R.EditManifest, json.loads((root / EDIT_MANIFEST).read_text(encoding="utf-8")), str(root / EDIT_MANIFEST))
    metrics = R.read(R.EditMetrics, json.loads((root / EDIT_METRICS).read_text(encoding="utf-8")), str(root / EDIT_METRICS))
    write_edit_artifacts(root, manifest, rows, metrics, human)
    return human
