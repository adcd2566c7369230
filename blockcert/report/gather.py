"""``blockcert report``: a run directory as one self-contained HTML page, or a Markdown summary.

This module gathers everything the report shows from the run's artifacts (:func:`collect`) into the records
of :mod:`.views`; :mod:`.html` and :mod:`.markdown` render them, :mod:`.svg` draws the charts, and
:mod:`.write` writes the page (:func:`~blockcert.report.write.write_report`).
Nothing is recomputed from the model: every number is read from the certificates, the block records,
``errors.safetensors``, ``bounds.json`` and ``full/eval.json``, after :func:`blockcert.verifier.core.verify` at level
``hashes`` has checked that they are the artifacts the certificates speak for (its result is shown, pass or
fail). The model is not loaded; only its tokenizer, to show tokens as text (:func:`decode_tokens`).

The report is written outside the run directory (``<OUT_DIR>.report.html`` by default), because
``blockcert verify`` rejects unexpected files inside it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from blockcert.artifacts.layout import BLOCK_METRICS, ERRORS, FULL_CERTIFICATE, FULL_EVAL, MANIFEST, SUMMARY, TRACE_INDEX
from blockcert.errors import UserError
from blockcert.report.views import (
    BlockView,
    CompareRow,
    DirectionSweepRow,
    DirectionSweepView,
    EditSweep,
    FullView,
    MinimizeRow,
    MinimizeView,
    PromptView,
    RunView,
    SweepRow,
    TokenErrors,
    Verification,
)

FORMATS = ("html", "md")
AUTO_TOKEN_BLOCKS = 8  # at most this many blocks get per-token text heat maps by default
SWEEP_FIELDS = ("block", "alpha", "answer_accuracy", "refuse_accuracy")


def _read_json(root: Path, rel: str) -> Any:
    """A run's JSON file as it is. The report reads dicts, not the strict records of blockcert.artifacts.records,
    on purpose: it must still show a run that fails verification (with its failed checks), where a record
    loader would stop at the first field out of place."""
    try:
        return json.loads((root / rel).read_bytes())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {root / rel}: {exc}", f"run `blockcert verify {root}` to see what is wrong with the run") from exc


def _subjects(cert: dict[str, Any]) -> tuple[tuple[str, str, str | None], ...]:
    return tuple((s["name"], s["digest"]["sha256"], (s.get("annotations") or {}).get("blockcert.tensors_sha256"))
                 for s in cert.get("subject", []))


def _verification(cert_report: Any) -> Verification:
    failed = tuple(f"{ch.name}: {ch.detail or f'claimed {ch.claimed}, found {ch.actual}'}" for ch in cert_report.checks if not ch.ok)
    return Verification(cert_report.ok, len(cert_report.checks), failed)


def _load_errors(root: Path, block_dir: str, n_prompts: int, base_loss: Sequence[np.ndarray]) -> tuple[TokenErrors, ...]:
    from safetensors.numpy import load_file

    try:
        t = load_file(root / block_dir / ERRORS)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {root / block_dir / 'errors.safetensors'}: {exc}", f"run `blockcert verify {root}`") from exc
    out = []
    for k in range(n_prompts):
        stitched = t[f"p{k:03d}.loss_stitched"].astype(np.float64)
        out.append(TokenErrors(t[f"p{k:03d}.error"], t[f"p{k:03d}.rel_error"], t[f"p{k:03d}.path_match"],
                               np.abs(stitched - base_loss[k].astype(np.float64))))
    return tuple(out)


def _load_trace_ids(root: Path, index: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token ids and baseline losses of every prompt, without reading the (large) residual stream."""
    from safetensors import safe_open

    ids, losses = [], []
    for entry in index["entries"]:
        try:
            with safe_open(str(root / entry["file"]), framework="np") as f:
                ids.append(f.get_tensor("input_ids"))
                losses.append(f.get_tensor("loss"))
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"cannot read {root / entry['file']}: {exc}", f"run `blockcert verify {root}`") from exc
    return ids, losses


def collect(out: str | Path, *, compare: Sequence[str | Path] = (), edit_sweep: str | Path | None = None,
            tokenizer: str | None = None, token_blocks: str = "auto", minimize: str | Path | None = None,
            direction_sweep: str | Path | None = None) -> RunView:
    """Read and verify (level ``hashes``) the run in ``out`` and everything the report shows about it."""
    from blockcert.verifier.core import find_certificates, recorded_rule, verify

    root = Path(out)
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root} is not a blockcert run directory (no {MANIFEST})", "pass the --out directory of `blockcert run`")
    sweep = load_edit_sweep(edit_sweep) if edit_sweep is not None else None  # a malformed file fails before any work
    minimized = load_minimize(minimize) if minimize is not None else None
    directions = load_direction_sweep(direction_sweep) if direction_sweep is not None else None
    root, certs = find_certificates(root)
    manifest = _read_json(root, MANIFEST)
    index = _read_json(root, TRACE_INDEX)
    report = verify(root, level="hashes", policy=recorded_rule(root))
    by_path = {c.path: _verification(c) for c in report.certificates}
    ids, base_loss = _load_trace_ids(root, index)
    texts = [e["text"] for e in index["entries"]]
    blocks = []
    shared: tuple[tuple[str, str, str | None], ...] = ()
    for rel in certs:
        raw = (root / rel).read_bytes()
        try:
            cert = json.loads(raw)
            pred = cert["predicate"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{root / rel} is not a certificate: {exc}", f"run `blockcert verify {root}`") from exc
        block_dir = rel.split("/")[0]
        record = _read_json(root, f"{block_dir}/{BLOCK_METRICS}") if (root / block_dir / BLOCK_METRICS).is_file() else {}
        subjects = _subjects(cert)
        shared = shared or tuple(s for s in subjects if not s[0].startswith(block_dir + "/"))
        blocks.append(BlockView(
            index=int(pred["block"]["index"]), certificate=rel, certificate_id=hashlib.sha256(raw).hexdigest(), predicate=pred,
            metrics=record.get("metrics", pred["metrics"]), certified=bool(pred["verdict"]["certified"]),
            verification=by_path.get(rel, Verification(False, 0, ("not verified",))),
            subjects=tuple(s for s in subjects if s[0].startswith(block_dir + "/")),
            errors=_load_errors(root, block_dir, len(texts), base_loss)))
    blocks.sort(key=lambda b: b.index)
    prompts, source, decoded = decode_tokens(manifest, texts, ids, tokenizer)
    chosen, reason = _token_blocks(blocks, token_blocks)
    bounds, note = _bounds(root, blocks)
    return RunView(
        root=root, label=str(out), manifest=manifest, blocks=tuple(blocks), prompts=tuple(prompts),
        tokens_source=source, tokens_decoded=decoded, token_blocks=chosen, token_blocks_reason=reason,
        verified=report.ok, summary_verification=by_path.get(SUMMARY), shared_subjects=shared,
        full=_full(root, by_path), bounds=bounds, bounds_note=note,
        compare=_compare(root, manifest, blocks, report.ok, compare), edit_sweep=sweep, minimize=minimized,
        direction_sweep=directions,
    )


def _full(root: Path, by_path: dict[str, Verification]) -> FullView | None:
    if not (root / FULL_EVAL).is_file():
        return None
    evaluation = _read_json(root, FULL_EVAL)
    cert_path = root / FULL_CERTIFICATE
    cert_id, subjects = None, ()
    if cert_path.is_file():
        raw = cert_path.read_bytes()
        cert_id = hashlib.sha256(raw).hexdigest()
        subjects = _subjects(_read_json(root, FULL_CERTIFICATE))
    return FullView(evaluation, cert_id, by_path.get(FULL_CERTIFICATE), subjects)


def _bounds(root: Path, blocks: Sequence[BlockView]) -> tuple[Any, str | None]:
    """Theorem 1 over the run (``blockcert bound``), or why it cannot be instantiated."""
    if not any(b.lipschitz for b in blocks):
        return None, None
    from blockcert.bounds.compose import bound

    try:
        return bound(root), None
    except UserError as exc:
        return None, exc.message


def _token_blocks(blocks: Sequence[BlockView], spec: str) -> tuple[tuple[int, ...], str]:
    """Which blocks get per-token text heat maps: ``auto``, ``all``, ``none`` or a block list (``0,15``, ``10-12``)."""
    have = [b.index for b in blocks]
    spec = spec.strip()
    if spec == "all":
        return tuple(have), "every block (--token-blocks all)"
    if spec == "none":
        return (), "none (--token-blocks none)"
    if spec != "auto":
        from blockcert.spec import parse_blocks

        try:
            wanted = parse_blocks(spec, 10**6, "--token-blocks")
        except UserError as exc:
            raise UserError(exc.message, "use auto, all, none, 0,15 or 10-12") from None
        missing = sorted(set(wanted) - set(have))
        if missing:
            raise UserError(f"--token-blocks {spec}: blocks {missing} are not in this run", f"the run has blocks {have}")
        return tuple(wanted), f"chosen with --token-blocks {spec}"
    weak = [b for b in blocks if not b.certified or b.metrics["cov_act"] < 1 or b.metrics["cov_loss"] < 1]
    if weak:
        weak.sort(key=lambda b: (b.certified, b.metrics["cov_act"], b.metrics["cov_loss"], b.index))
        shown = sorted(b.index for b in weak[:AUTO_TOKEN_BLOCKS])
        more = f"; the {len(weak) - len(shown)} others are in the overview" if len(weak) > len(shown) else ""
        return tuple(shown), f"blocks that fail or have a token above τ_act or a loss token above τ_loss{more}"
    if not blocks:
        return (), "no blocks"
    worst = max(blocks, key=lambda b: (b.metrics["epsilon"], -b.index))
    return (worst.index,), "every token of every block is covered: the block with the largest ε is shown"


# ---------------------------------------------------------------------------------------------------
# Tokens as text
# ---------------------------------------------------------------------------------------------------


def decode_tokens(manifest: dict[str, Any], texts: Sequence[str], ids: Sequence[np.ndarray], spec: str | None,
                  ) -> tuple[list[PromptView], str, bool]:
    """Each prompt's tokens as text, and a sentence saying how they were obtained.

    The traces store token ids only. We load just a tokenizer, never the model: the one of ``spec`` (a
    local HF directory, a ``.gguf`` file, a registered model name, or ``none``), by default of the model
    recorded in ``run.json``. A tokenizer is used only if re-tokenizing every prompt text reproduces the
    stored ids exactly, so it cannot show tokens other than the certified ones. Its offsets then cut the
    prompt's own text into pieces (the gap before a token, e.g. its leading space, goes with it, so the
    pieces of a prompt concatenate to its text); a special token without text is shown in the
    tokenizer's spelling. Without a usable tokenizer the pieces are the ids, ``[1234]``.
    """
    as_ids = [_id_view(k, t, a) for k, (t, a) in enumerate(zip(texts, ids))]
    if spec is not None and spec.strip().lower() == "none":
        return as_ids, "token ids (--tokenizer none)", False
    name = spec or manifest["model"]["name"]
    reasons = []
    try:
        candidates = _tokenizers(name, manifest["model"].get("source_sha256") if spec is None else None)
        for where, load in candidates:
            try:
                encode = load()
            except (OSError, ValueError, ImportError, RuntimeError) as exc:
                reasons.append(f"cannot load the tokenizer {where}: {exc}")
                continue
            encoded = [encode(t) for t in texts]
            bad = next((k for k, (e, a) in enumerate(zip(encoded, ids)) if e.ids != [int(i) for i in a]), None)
            if bad is None:
                views = [_text_view(k, t, e) for k, (t, e) in enumerate(zip(texts, encoded))]
                return views, f"text, cut by the tokenizer {where}, which reproduces the stored token ids of all {len(texts)} prompts", True
            reasons.append(f"the tokenizer {where} does not reproduce the stored token ids of prompt {bad}")
    except UserError as exc:
        reasons.append(exc.message)
    if not reasons:
        reasons.append(f"no tokenizer files for {name}")
    if spec is not None:
        raise UserError(f"--tokenizer {spec}: {'; '.join(reasons)}", "pass the tokenizer of the run's model, or --tokenizer none")
    return as_ids, f"token ids: {'; '.join(reasons)} (pass --tokenizer)", False


@attrs.frozen
class Encoded:
    ids: list[int]
    offsets: list[tuple[int, int]] | None  # character span of each token in the text (None: not available)
    spelled: list[str]  # the tokenizer's own spelling of each token
    special: list[bool]


def _id_view(k: int, text: str, ids: np.ndarray) -> PromptView:
    return PromptView(k, text, tuple(int(i) for i in ids), tuple(f"[{int(i)}]" for i in ids), (False,) * len(ids))


def _text_view(k: int, text: str, enc: Encoded) -> PromptView:
    if enc.offsets is None:
        return PromptView(k, text, tuple(enc.ids), tuple(enc.spelled), tuple(enc.special))
    pieces, end = [], 0
    last_text = max((n for n, (s, e) in enumerate(enc.offsets) if e > s), default=None)
    for n, (s, e) in enumerate(enc.offsets):
        if e <= s:  # no text of its own (a special token the tokenizer added)
            pieces.append(enc.spelled[n])
            continue
        stop = len(text) if n == last_text else max(e, end)
        pieces.append(text[end:stop])  # "" for the second token of a character split across tokens
        end = stop
    special = [sp or e <= s for sp, (s, e) in zip(enc.special, enc.offsets)]
    return PromptView(k, text, tuple(enc.ids), tuple(pieces), tuple(special))


def _tokenizers(spec: str, source_sha256: str | None) -> list[tuple[str, Callable[[], Callable[[str], Encoded]]]]:
    """Where the tokenizer of a model spec may be, cheapest first: ``tokenizer.json`` read by the
    ``tokenizers`` library (under a second, no torch), then transformers' ``AutoTokenizer`` (which imports
    torch). For a GGUF file, the dequantized copy that ``load_model`` caches (``models.gguf_cache_dir``)
    holds the tokenizer files; without it the GGUF itself is read (slow)."""
    from blockcert.artifacts.digest import file_sha256
    from blockcert.model.load import TOKENIZER_FILES, cache_root, resolve

    name, path = resolve(spec)
    gguf = None
    if path.is_file():
        gguf = path
        path = cache_root() / "models" / f"{path.stem}-{(source_sha256 or file_sha256(path))[:16]}"
    out: list[tuple[str, Callable[[], Callable[[str], Encoded]]]] = []
    if (path / "tokenizer.json").is_file():
        out.append((f"{path / 'tokenizer.json'}", lambda: _fast_encoder(path / "tokenizer.json")))
    if any((path / f).is_file() for f in TOKENIZER_FILES):
        out.append((f"of {path} (transformers)", lambda: _hf_encoder(path)))
    elif gguf is not None:
        out.append((f"in {gguf} (transformers)", lambda: _hf_encoder(gguf.parent, gguf.name)))
    return out


def _fast_encoder(tokenizer_json: Path) -> Callable[[str], Encoded]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))

    def encode(text: str) -> Encoded:
        e = tok.encode(text)
        return Encoded(list(e.ids), [tuple(o) for o in e.offsets], list(e.tokens), [bool(m) for m in e.special_tokens_mask])

    return encode


def _hf_encoder(path: Path, gguf_file: str | None = None) -> Callable[[str], Encoded]:
    from blockcert.model.load import quiet_transformers

    quiet_transformers()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, **({"gguf_file": gguf_file} if gguf_file else {}))
    special = set(getattr(tok, "all_special_ids", ()))

    def encode(text: str) -> Encoded:
        fast = bool(getattr(tok, "is_fast", False))
        r = tok(text, return_offsets_mapping=True) if fast else tok(text)
        ids = [int(i) for i in r["input_ids"]]
        spelled = tok.convert_ids_to_tokens(ids) if fast else [tok.decode([i]) for i in ids]
        offsets = [tuple(o) for o in r["offset_mapping"]] if fast else None
        return Encoded(ids, offsets, [str(s) for s in spelled], [i in special for i in ids])

    return encode


# ---------------------------------------------------------------------------------------------------
# Other runs (--compare) and edit sweeps (--edit-sweep)
# ---------------------------------------------------------------------------------------------------


def _compare(root: Path, manifest: dict[str, Any], blocks: Sequence[BlockView], verified: bool, others: Sequence[str | Path],
             ) -> tuple[CompareRow, ...]:
    """This run and each ``--compare`` run on the blocks they all have: mean cov_act, cov_loss, MAE, ε."""
    if not others:
        return ()
    from blockcert.verifier.core import find_certificates, recorded_rule, verify

    runs: list[tuple[str, dict[str, Any], dict[int, dict[str, Any]], bool]] = [
        (f"{root} (this run)", manifest, {b.index: b.predicate for b in blocks}, verified)]
    for other in others:
        path = Path(other)
        if not (path / MANIFEST).is_file():
            raise UserError(f"--compare {other}: not a blockcert run directory (no {MANIFEST})")
        theirs = _read_json(path, MANIFEST)
        for key, what in (("model", "weights_sha256"), ("prompts", "sha256")):
            if theirs[key][what] != manifest[key][what]:
                raise UserError(f"--compare {other}: another {key} than {root} ({key}.{what} differs)",
                                "compare runs of the same model (and dtype) on the same prompt set")
        path, certs = find_certificates(path)
        preds = {}
        for rel in certs:
            pred = _read_json(path, rel)["predicate"]
            preds[int(pred["block"]["index"])] = pred
        runs.append((str(other), theirs, preds, verify(path, level="hashes", policy=recorded_rule(path)).ok))
    common = sorted(set.intersection(*(set(p) for _, _, p, _ in runs)))
    if not common:
        raise UserError("--compare: the runs have no block in common", "certify the same --blocks in every run")
    this_mae = float(np.mean([runs[0][2][i]["metrics"]["mae"] for i in common]))
    rows = []
    for label, m, preds, ok in runs:
        sel = [preds[i] for i in common]
        mae = float(np.mean([p["metrics"]["mae"] for p in sel]))
        d = m.get("derivation")
        spec = sel[0]["surrogate"]["spec"] if sel[0].get("surrogate") else d["spec"] if d else ""
        rows.append(CompareRow(
            label=label, derivation=f"{d['kind']} {spec}" if d else "extraction",
            blocks=tuple(common), certified=sum(bool(p["verdict"]["certified"]) for p in sel),
            mean_cov_act=float(np.mean([p["metrics"]["cov_act"] for p in sel])),
            mean_cov_loss=float(np.mean([p["metrics"]["cov_loss"] for p in sel])),
            mean_mae=mae, mean_epsilon=float(np.mean([p["metrics"]["epsilon"] for p in sel])),
            mae_ratio=mae / this_mae if this_mae > 0 else None, verified=ok,
            per_block={i: (float(p["metrics"]["cov_act"]), float(p["metrics"]["mae"]), bool(p["verdict"]["certified"]))
                       for i, p in zip(common, sel)}))
    return tuple(rows)


def load_edit_sweep(path: str | Path) -> EditSweep:
    """An edit sweep as ``blockcert edit sweep`` writes it: ``{"rows": [{"block", "alpha", "answer_accuracy",
    "refuse_accuracy"}, ...], ...}``; other top-level fields with a scalar value are shown as they are."""
    from blockcert.artifacts.safeio import ArtifactError, strict_json

    p = Path(path)
    try:
        data = strict_json(p.read_bytes(), str(p))
    except (OSError, ArtifactError) as exc:
        raise UserError(f"--edit-sweep {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise UserError(f"--edit-sweep {path}: expected an object with a non-empty list \"rows\"",
                        'rows look like {"block": 15, "alpha": 0.33, "answer_accuracy": 0.9, "refuse_accuracy": 0.6}')
    rows = []
    for n, row in enumerate(data["rows"]):
        missing = [f for f in SWEEP_FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise UserError(f"--edit-sweep {path}: row {n} lacks {', '.join(missing)}")
        block, values = row["block"], [row[f] for f in SWEEP_FIELDS[1:]]
        if not isinstance(block, int) or isinstance(block, bool) or block < 0:
            raise UserError(f"--edit-sweep {path}: row {n}: block must be a non-negative integer, not {block!r}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise UserError(f"--edit-sweep {path}: row {n}: alpha and the accuracies must be finite numbers")
        if not all(0 <= v <= 1 for v in values[1:]):
            raise UserError(f"--edit-sweep {path}: row {n}: accuracies must lie in [0, 1]")
        rows.append(SweepRow(block, float(values[0]), float(values[1]), float(values[2])))
    rows.sort(key=lambda r: (r.block, r.alpha))
    meta = tuple((k, json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v)
                 for k, v in data.items() if k != "rows" and (v is None or isinstance(v, (str, int, float, bool))))
    return EditSweep(str(path), tuple(rows), meta)


def load_minimize(path: str | Path) -> MinimizeView:
    """The summary of a ``blockcert minimize`` directory (its ``minimize.json``), for the kept-fraction chart."""
    from blockcert.artifacts.safeio import ArtifactError, strict_json

    p = Path(path)
    p = p / "minimize.json" if p.is_dir() else p
    try:
        data = strict_json(p.read_bytes(), str(p))
        rows = tuple(MinimizeRow(
            int(b["block"]), (int(b["kept"]["heads"]), int(b["totals"]["heads"])), (int(b["kept"]["neurons"]), int(b["totals"]["neurons"])),
            (sum(map(int, b["kept"]["rank"].values())), sum(map(int, b["totals"]["rank"].values()))),
            float(b["metrics"]["cov_act"]), float(b["metrics"]["cov_loss"]), bool(b["certified"]), int(b["candidates"]), float(b["seconds"]))
            for b in data["blocks"])
        view = MinimizeView(str(path), str(data["model"]), str(data["dtype"]), str(data["budget"]), tuple(sorted(rows, key=lambda r: r.block)))
    except (OSError, ArtifactError) as exc:
        raise UserError(f"--minimize {path}: {exc}", "pass the --out directory of `blockcert minimize`") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"--minimize {path}: not a minimize.json ({type(exc).__name__}: {exc})",
                        "pass the --out directory of `blockcert minimize`") from exc
    if not view.rows:
        raise UserError(f"--minimize {path}: no blocks")
    return view


def _change(c: dict[str, Any]) -> tuple[int, int, float]:
    return int(c["gained"]), int(c["lost"]), float(c["p_value"])


def load_direction_sweep(path: str | Path) -> DirectionSweepView:
    """A ``blockcert edit direction-sweep`` directory: its results.json, each row checked against its own edit
    certificate (``edits/<name>/``, verified at level hashes: the accuracies and the KL the row shows must be
    the certified ones)."""
    from blockcert.artifacts.safeio import ArtifactError, strict_json
    from blockcert.edit.dirsweep import edit_name
    from blockcert.verifier.core import verify

    from blockcert.verifier.sweeps import is_direction_sweep

    root = Path(path)
    hint = "pass the --out directory of `blockcert edit direction-sweep`"
    if not is_direction_sweep(root):
        raise UserError(f"--direction-sweep {path}: not a direction sweep (no sweep.json and edits/)", hint)
    try:
        data = strict_json((root / "results.json").read_bytes(), str(root / "results.json"))
        base = data["base"]
        report = verify(root, level="hashes")  # every edit certificate, and results.json against them (verifier.sweeps)
        failed = {c.path for c in report.certificates if not c.ok}
        differs = {ch.name.split(":")[0] for c in report.certificates if c.path == "results.json" for ch in c.checks if not ch.ok}
        rows = []
        for r in data["rows"]:
            name = edit_name(int(r["layer"]), None if r["scale"] is None else float(r["scale"]))
            problem = ("its edit certificate does not verify" if f"edits/{name}/certificate.json" in failed
                       else "results.json differs from its edit certificate" if name in differs else "")
            rows.append(DirectionSweepRow(
                int(r["layer"]), str(r["edit"]), r["scale"], r["alpha"], (int(r["answer_correct"]), int(r["n_answer"])),
                (int(r["refuse_correct"]), int(r["n_refuse"])), _change(r["answer_change"]), _change(r["refuse_change"]), float(r["kl_mean"]),
                int(r["benign_unchanged"]), (float(r["ppl_base"]), float(r["ppl_edited"])), not problem, problem))
        view = DirectionSweepView(str(path), str(data["model"]), str(data["dtype"]), str(data["corpus"]),
                                  str(data.get("direction_corpus") or data["corpus"]),
                                  ((int(base["answer_correct"]), int(base["n_answer"])), (int(base["refuse_correct"]), int(base["n_refuse"]))),
                                  tuple(rows))
    except (OSError, ArtifactError) as exc:
        raise UserError(f"--direction-sweep {path}: {exc}", hint) from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"--direction-sweep {path}: not a direction sweep's results.json ({type(exc).__name__}: {exc})", hint) from exc
    if not view.rows:
        raise UserError(f"--direction-sweep {path}: no configurations")
    return view


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


__all__: Sequence[str] = ["collect", "decode_tokens", "load_direction_sweep", "load_edit_sweep", "load_minimize"]
