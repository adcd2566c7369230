"""``blockcert run``: trace a model on a prompt set, extract every block to IR, measure, certify.

Output directory (paths in certificates are relative to it)::

    run.json                     what was run (model identity, prompts, policy): checked by --resume
    traces/index.json            the prompts; traces/prompt_<k>.safetensors: x^(0..L), m_l, l_base
    block_<idx>/ir.json, ir.safetensors      the extracted IR
    block_<idx>/errors.safetensors           per-token e(p,t), e/||x||, path matches, l_stitched
    block_<idx>/metrics.json                 the block's metrics and verdict
    block_<idx>/certificate.json             in-toto statement, canonical JSON (written last)
    metrics.json                 summary over blocks (written at the end)

Loss coverage really replaces block l by its IR replay and runs blocks l+1..L-1 and the head on the
result; the prefix is the stored trace x^(l) (blocks < l are never re-run) and the prompts of a batch
go through the suffix together.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from . import __version__
from .certificate import BLOCK_PREDICATE, CERT_SCHEMA_VERSION, certificate_id, statement, subject, write_certificate
from .digest import canonical_json, file_sha256
from .errors import UserError
from .fsutil import atomic_write_bytes, atomic_write_text, is_temp_name
from .ir import save_ir
from . import derive
from .derive import Derivation
from .lipschitz import BoundSettings, block_record, predicate_summary
from .metrics import BlockMetrics, Policy, block_metrics, certified, path_matches, token_errors, token_norms
from .models import LoadedModel, load_model
from .plugins import get_plugins
from .promptsets import load_prompts
from .spec import parse_blocks
from .trace import PromptTrace, batches, capture, load_traces, prompt_file, prompt_nll, prompts_sha256, save_traces

MANIFEST = "run.json"
BOUNDS_FILE = "bounds.json"
SUMMARY = "metrics.json"


@attrs.frozen
class BlockResult:
    index: int
    metrics: BlockMetrics
    certified: bool
    certificate: str  # path relative to the run directory
    certificate_id: str  # SHA-256 of the certificate's canonical bytes
    resumed: bool  # True if an earlier run had already finished this block


@attrs.frozen
class RunResult:
    out: Path
    model: str
    arch: str
    dtype: str
    prompts: str
    n_prompts: int
    tokens: int
    policy: Policy
    blocks: tuple[BlockResult, ...]

    @property
    def certified_all(self) -> bool:
        return all(b.certified for b in self.blocks)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model, "arch": self.arch, "dtype": self.dtype, "prompts": self.prompts,
            "prompts_evaluated": self.n_prompts, "tokens": self.tokens, "policy": attrs.asdict(self.policy),
            "certified_all": self.certified_all,
            "blocks": [{"index": b.index, **_metrics_dict(b.metrics), "certified": b.certified,
                        "certificate": b.certificate, "certificate_id": b.certificate_id} for b in self.blocks],
        }


def _metrics_dict(m: BlockMetrics) -> dict[str, Any]:
    d = attrs.asdict(m)
    for key in ("per_prompt_cov_act", "per_prompt_mae", "per_prompt_cov_loss"):
        d[key] = list(d[key])
    return d


def block_dir(index: int) -> str:
    return f"block_{index:03d}"


def _interpreter_sha256() -> str:
    from . import interpreter

    return file_sha256(interpreter.__file__)


def _manifest(loaded: LoadedModel, prompts_desc: str, prompts: Sequence[str], policy: Policy, n_ctx: int) -> dict[str, Any]:
    return {
        "tool": {"name": "blockcert", "version": __version__},
        "model": {
            "name": loaded.name, "arch": loaded.arch, "dtype": loaded.dtype,
            "weights_sha256": loaded.weights_sha256(), "source_sha256": loaded.source_sha256,
            "n_blocks": loaded.native.n_blocks, "d_model": loaded.native.d_model,
        },
        "prompts": {"description": prompts_desc, "count": len(prompts), "sha256": prompts_sha256(prompts)},
        "policy": attrs.asdict(policy),
        "replay": {"backend": "torch", "dtype": "float32", "interpreter_sha256": _interpreter_sha256()},
        "n_ctx": n_ctx,
    }


def _prepare_out(out: Path, manifest: dict[str, Any], resume: bool, force: bool) -> None:
    manifest_path = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    occupied = out.is_dir() and any(not is_temp_name(p.name) for p in out.iterdir())
    if out.is_dir():  # temp files of our own root artifacts, left by a killed run (never anyone else's)
        for stale in out.iterdir():
            if is_temp_name(stale.name) and stale.name.startswith((f".{MANIFEST}.", f".{SUMMARY}.")):
                stale.unlink(missing_ok=True)
    if occupied and resume:
        if not manifest_path.is_file():
            raise UserError(f"--resume: {out} holds no {MANIFEST}, so it is not a BlockCert run to continue")
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        if old != manifest:
            diffs = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise UserError(f"--resume: {out} was produced with different settings ({', '.join(diffs)} differ)",
                            "rerun with the original settings, or choose a new --out")
        return
    if occupied and not force:
        raise UserError(f"output directory {out} is not empty", "pass --resume to continue that run, --force to replace it, or another --out")
    if occupied and force:
        if not manifest_path.is_file():
            raise UserError(f"--force: {out} does not look like a BlockCert run ({MANIFEST} missing); refusing to delete it")
        # rename first: a --force killed half-way leaves --out empty, not a run missing its run.json
        trash = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        os.replace(out, trash)
        shutil.rmtree(trash)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _load_finished(root: Path, index: int, bounds: BoundSettings | None = None) -> BlockResult | None:
    """The result of a block an earlier run finished; None if it must be (re)done.

    With ``bounds``, a block whose certificate logs no Lipschitz bounds, or bounds computed with other
    settings, counts as unfinished.
    """
    d = root / block_dir(index)
    cert_path, metrics_path = d / "certificate.json", d / "metrics.json"
    if not (cert_path.is_file() and metrics_path.is_file()):
        return None
    try:
        record = json.loads(metrics_path.read_text(encoding="utf-8"))
        m = record["metrics"]
        for key in ("per_prompt_cov_act", "per_prompt_mae", "per_prompt_cov_loss"):
            m[key] = tuple(m[key])
        metrics = BlockMetrics(**m)
        cert = json.loads(cert_path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError):
        return None  # damaged by a crash in an older version: redo the block
    if bounds is not None and not _has_bounds(d, cert, bounds):
        return None
    return BlockResult(index, metrics, bool(record["certified"]), f"{block_dir(index)}/certificate.json",
                       certificate_id(cert), resumed=True)


def _has_bounds(d: Path, cert: dict[str, Any], bounds: BoundSettings) -> bool:
    if not (cert.get("predicate") or {}).get("lipschitz"):
        return False
    try:
        record = json.loads((d / BOUNDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return record.get("settings") == attrs.asdict(bounds)


def _pad(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """[T_b, d] arrays -> right-padded float32 [B, T_max, d]."""
    t_max = max(a.shape[0] for a in arrays)
    out = torch.zeros((len(arrays), t_max, arrays[0].shape[-1]), dtype=torch.float32)
    for b, a in enumerate(arrays):
        out[b, : a.shape[0]] = torch.from_numpy(a)
    return out


@attrs.frozen
class Measurement:
    """Per-prompt arrays for one block: what eq. (3)-(10) aggregate."""

    errors: list[np.ndarray]  # [T_p] e(p,t)
    norms: list[np.ndarray]  # [T_p] ||x^(l+1)_t||
    paths: list[np.ndarray]  # [T_p] bool: all discrete decisions match
    base: list[np.ndarray]  # [T_p - 1] baseline token losses (from the trace)
    stitched: list[np.ndarray]  # [T_p - 1] token losses with block l replaced by its replay


@torch.no_grad()
def measure_block(loaded: LoadedModel, traces: Sequence[PromptTrace], ir: Any, index: int, batch_size: int) -> Measurement:
    """Replay ``ir`` on the recorded x^(l) of every prompt and re-run the native suffix from its output."""
    plugins = get_plugins()
    native = loaded.native
    m = Measurement([], [], [], [], [])
    for group in batches(len(traces), batch_size):
        part = [traces[k] for k in group]
        # Each prompt is replayed on its own, unpadded, exactly as a verifier will replay it; the
        # outputs are then padded into one batch for the native suffix.
        reps = [plugins.replay(ir, torch.from_numpy(t.residual[index])[None]) for t in part]  # [1, T_p, d] each
        y_pad = _pad([r.output[0].numpy() for r in reps])  # [B, T, d]
        B, T, _ = y_pad.shape
        positions = torch.arange(T)[None].expand(B, T)
        x = y_pad.to(native.dtype)  # the stitched stream continues in the native precision
        for j in range(index + 1, native.n_blocks):  # the suffix, batched; the prefix is the trace
            x = native.call_block(j, x, positions)
        ids = torch.zeros((B, T), dtype=torch.long)
        for b, t in enumerate(part):
            ids[b, : t.n_tokens] = torch.from_numpy(t.input_ids)
        nll = prompt_nll(native, x, ids, [t.n_tokens for t in part])
        for b, (t, rep) in enumerate(zip(part, reps)):
            m.errors.append(token_errors(rep.output[0].numpy(), t.residual[index + 1]))
            m.norms.append(token_norms(t.residual[index + 1]))
            m.paths.append(path_matches(rep.mask[0].numpy(), t.masks[index], rep.head_active.numpy(), t.head_gates[index]))
            m.base.append(t.loss)
            m.stitched.append(nll[b])
    return m


def _remove_stale_temps(directory: Path) -> None:
    """Temp files left by a run that was killed mid-write (never valid artifacts)."""
    if directory.is_dir():
        for stale in (p for p in directory.iterdir() if is_temp_name(p.name)):
            stale.unlink(missing_ok=True)


def certify_block(
    loaded: LoadedModel, traces: Sequence[PromptTrace], index: int, root: Path, policy: Policy,
    n_ctx: int, shared_subjects: Sequence[dict[str, Any]], manifest: dict[str, Any], batch_size: int,
    bounds: BoundSettings | None = None, derivation: Derivation | None = None,
) -> BlockResult:
    """Extract block ``index`` (and derive from it), replay it on its traces, measure, write its artifacts and certificate."""
    ir = get_plugins().to_ir(loaded.native, index, n_ctx)
    d = root / block_dir(index)
    _remove_stale_temps(d)
    if bounds is None:  # left by an interrupted --bounds run of this block: not part of this certificate
        (d / BOUNDS_FILE).unlink(missing_ok=True)
    names = ["ir.json", "ir.safetensors", "errors.safetensors", "metrics.json"]
    surrogate = None
    if derivation is not None:
        base = ir
        ir = derive.apply(derivation, base, [t.residual[index] for t in traces])
        save_ir(base, d / derive.BASE_STEM)
        names += [f"{derive.BASE_STEM}.json", f"{derive.BASE_STEM}.safetensors"]
        from .digest import tensors_sha256
        from .ir import to_dict

        surrogate = derive.predicate(derivation, ir, block_dir(index), tensors_sha256(to_dict(base)[1]))
    save_ir(ir, d / "ir")
    meas = measure_block(loaded, traces, ir, index, batch_size)
    errors, norms, paths, stitched = meas.errors, meas.norms, meas.paths, meas.stitched
    metrics = block_metrics(errors, norms, paths, meas.base, stitched, policy)
    verdict = certified(metrics.cov_act, metrics.cov_loss, policy)
    from safetensors.numpy import save

    per_token: dict[str, np.ndarray] = {}
    for t, e, n, p, s in zip(traces, errors, norms, paths, stitched):
        key = f"p{t.index:03d}"
        per_token[f"{key}.error"] = e
        per_token[f"{key}.rel_error"] = np.divide(e, n, out=np.zeros_like(e), where=n > 0)
        per_token[f"{key}.path_match"] = np.asarray(p, bool)
        per_token[f"{key}.loss_stitched"] = np.asarray(s, np.float32)
    atomic_write_bytes(d / "errors.safetensors", save(per_token, metadata={"format": "blockcert-errors"}))
    record = {"block": index, "metrics": _metrics_dict(metrics), "certified": verdict, "policy": attrs.asdict(policy)}
    atomic_write_bytes(d / "metrics.json", canonical_json(record))
    lipschitz = None
    if bounds is not None:
        record = block_record(ir, [t.residual[index] for t in traces], errors, bounds)
        atomic_write_bytes(d / BOUNDS_FILE, canonical_json(record))
        names.append(BOUNDS_FILE)
        lipschitz = predicate_summary(record, f"{block_dir(index)}/{BOUNDS_FILE}")
    own = [subject(root, f"{block_dir(index)}/{name}") for name in sorted(names)]
    m = _metrics_dict(metrics)
    predicate = {
        "schema_version": CERT_SCHEMA_VERSION,
        "tool": manifest["tool"],
        "model": manifest["model"],
        "block": {"index": index, "arch": ir.arch, "n_ctx": ir.n_ctx, "ir": f"{block_dir(index)}/ir.json"},
        "prompts": {**manifest["prompts"], "tokens": metrics.tokens, "trace_index": "traces/index.json"},
        "policy": attrs.asdict(policy),
        "metrics": {k: m[k] for k in ("epsilon", "mae", "cov_act", "cov_path", "cov_loss", "rel_max", "rel_mean",
                                       "tokens", "loss_tokens", "best_prompt")},
        "verdict": {"certified": verdict, "cov_act_ok": metrics.cov_act >= policy.alpha_act,
                    "cov_loss_ok": metrics.cov_loss >= policy.alpha_loss},
        "replay": manifest["replay"],
        "surrogate": surrogate,
        "lipschitz": lipschitz,
    }
    cert = statement([*own, *shared_subjects], BLOCK_PREDICATE, predicate)
    cert_id = write_certificate(d / "certificate.json", cert)  # last: its presence marks the block done
    return BlockResult(index, metrics, verdict, f"{block_dir(index)}/certificate.json", cert_id, resumed=False)


def run(
    model: str | Path | None = None,
    *,
    arch: str | None = None,
    prompts: str = "builtin:stress",
    blocks: str | Sequence[int] = "all",
    policy: Policy | None = None,
    dtype: str = "float32",
    out: str | Path = "blockcert-out",
    resume: bool = False,
    force: bool = False,
    batch_size: int = 8,
    progress: bool = False,
    loaded: LoadedModel | None = None,
    bounds: bool | BoundSettings = False,
    surrogate: str | None = None,
    ablate: str | None = None,
) -> RunResult:
    """Certify ``blocks`` of ``model`` on ``prompts``; write everything under ``out``. See the module doc.

    ``bounds=True`` (or a :class:`~blockcert.lipschitz.BoundSettings`) also computes each block's
    Lipschitz bounds, writes them to ``block_<idx>/bounds.json`` and logs them in the certificate
    (about 1 s per SmolLM2 block); with ``resume=True``, finished blocks without bounds, or with bounds
    computed under other settings, are redone.

    ``surrogate="lowrank:r=64"`` or ``ablate="invert-mask"`` certifies, for every block, the IR derived
    from the extraction by that plugin instead of the extraction itself (see :mod:`blockcert.derive`).
    """
    settings = (BoundSettings() if bounds is True else bounds) or None
    derivation = derive.from_options(surrogate, ablate)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    policy = policy or Policy()
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    console = Console(stderr=True)
    texts = load_prompts(prompts)
    with ExitStack() as stack:
        if progress:
            stack.enter_context(console.status("Loading model"))
        loaded = loaded or load_model(model, arch=arch, dtype=dtype)
    selected = parse_blocks(blocks, loaded.native.n_blocks)
    root = Path(out)
    from .trace import tokenize_prompts

    n_ctx = max(ids.size for ids in tokenize_prompts(loaded, texts))  # validates prompts before writing anything
    if derivation is not None:  # an unknown name or a bad parameter fails here, before anything is written
        derive.apply(derivation, get_plugins().to_ir(loaded.native, selected[0], n_ctx))
    manifest = _manifest(loaded, prompts, texts, policy, n_ctx)
    if derivation is not None:
        manifest["derivation"] = derivation.manifest()
    _prepare_out(root, manifest, resume, force)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not progress)
    results: list[BlockResult] = []
    with bar:
        traces = load_traces(root) if resume else None
        if traces is None:
            _remove_stale_temps(root / "traces")
            task = bar.add_task("Capturing traces", total=len(texts))
            traces = capture(loaded, texts, batch_size=batch_size, progress=lambda n: bar.advance(task, n))
            save_traces(root, traces, prompts)
        shared = [subject(root, MANIFEST), subject(root, "traces/index.json"), *(subject(root, prompt_file(t.index)) for t in traces)]
        task = bar.add_task("Certifying blocks", total=len(selected))
        for index in selected:
            done = _load_finished(root, index, settings) if resume else None
            results.append(done or certify_block(loaded, traces, index, root, policy, n_ctx, shared, manifest, batch_size,
                                                 settings, derivation))
            bar.advance(task)
    result = RunResult(out=root, model=loaded.name, arch=loaded.arch, dtype=loaded.dtype, prompts=prompts,
                       n_prompts=len(texts), tokens=sum(t.n_tokens for t in traces), policy=policy, blocks=tuple(results))
    # The summary on disk covers every finished block in the directory (an earlier --blocks included),
    # in canonical JSON so that the verifier can check it byte for byte.
    others = [r for i in _finished_indices(root) if i not in selected and (r := _load_finished(root, i)) is not None]
    on_disk = attrs.evolve(result, blocks=tuple(sorted((*results, *others), key=lambda b: b.index)))
    atomic_write_bytes(root / SUMMARY, canonical_json(on_disk.summary()))
    return result


def _finished_indices(root: Path) -> list[int]:
    out = []
    for d in root.glob("block_*"):
        suffix = d.name.removeprefix("block_")
        if suffix.isdigit() and (d / "certificate.json").is_file():
            out.append(int(suffix))
    return sorted(out)

