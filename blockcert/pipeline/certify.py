"""``blockcert run``: trace a model on a prompt set, extract every block to IR, measure, certify.

Output directory (paths in certificates are relative to it)::

    run.json                     what was run (model identity, prompts, policy): checked by --resume
    traces/index.json            the prompts; traces/prompt_<k>.safetensors: x^(0..L), m_l, l_base
    block_<idx>/ir.json, ir.safetensors      the extracted IR
    block_<idx>/errors.safetensors           per-token e(p,t), e/||x||, path matches, l_stitched
    block_<idx>/metrics.json                 the block's metrics and verdict
    block_<idx>/certificate.json             in-toto statement, canonical JSON (written last)
    metrics.json                 summary over blocks (written at the end)
    model.sig                    with --model-signature: the model's OpenSSF model-signing bundle, a subject of every block

Loss coverage really replaces block l by its IR replay and runs blocks l+1..L-1 and the head on the
result; the prefix is the stored trace x^(l) (blocks < l are never re-run) and the prompts of a batch
go through the suffix together. The selected blocks are certified in one pass over the model
(:mod:`blockcert.pipeline.staircase`): at block j the pass advances every variant l < j, then extracts and
replays block j, so each block's weights are used once per pass (``--stream`` reads them once). The
passes (groups of blocks) run on an executor (:mod:`blockcert.pipeline.executors`): here, or on Ray.

Why this module is long: it is ``run()`` in the order things happen (prepare the output, extract and
measure each block, certify, resume), and splitting one procedure over files would hide its order; the
maths it calls lives elsewhere (metrics, interpreter, staircase, executors).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import attrs
import cattrs
import numpy as np
import torch

from blockcert import __version__, derive
from blockcert.artifacts import records as R
from blockcert.artifacts.digest import canonical_json, file_sha256
from blockcert.artifacts.fsutil import atomic_write_bytes, atomic_write_text, is_temp_name
from blockcert.artifacts.layout import (
    BLOCK_METRICS,
    BOUNDS,
    CERTIFICATE,
    ERRORS,
    IR,
    MANIFEST,
    MODEL_SIGNATURE,
    SUMMARY,
    TRACE_INDEX,
    BlockPaths,
    block_dir,
)
from blockcert.bounds.record import BoundSettings, block_record, predicate_summary
from blockcert.certificate import BLOCK_PREDICATE, CERT_SCHEMA_VERSION, certificate_id, statement, subject, write_certificate
from blockcert.derive import Derivation
from blockcert.errors import UserError
from blockcert.ir import save_ir
from blockcert.metrics import BlockMetrics, Policy, block_metrics, certified, path_matches, token_errors, token_norms
from blockcert.model.load import LoadedModel, load_model
from blockcert.pipeline.executors import Executor, get_executor, model_ref
from blockcert.pipeline.floor import act_floors, loss_floor_passes
from blockcert.pipeline.promptsets import load_prompts
from blockcert.pipeline.staircase import suffix_losses, variant_bytes
from blockcert.pipeline.trace import PromptTrace, capture, load_traces, prompt_file, prompts_sha256, save_traces
from blockcert.plugins import get_plugins
from blockcert.signing import read_model_signature
from blockcert.spec import parse_blocks

DEFAULT_INFLIGHT_BYTES = 2 << 30  # loss-coverage activations one pass may hold (see blockcert.pipeline.staircase)


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


def _interpreter_sha256() -> str:
    from blockcert import interpreter

    return file_sha256(interpreter.__file__)


def _manifest(loaded: LoadedModel, prompts_desc: str, prompts: Sequence[str], policy: Policy, n_ctx: int) -> dict[str, Any]:
    return R.dump(R.RunManifest(
        tool=R.Tool("blockcert", __version__),
        model=R.ModelIdentity(loaded.name, loaded.arch, loaded.dtype, loaded.weights_sha256(), loaded.source_sha256,
                              loaded.native.n_blocks, loaded.native.d_model),
        prompts=R.PromptSet(prompts_desc, len(prompts), prompts_sha256(prompts)),
        policy=policy,
        replay=R.Replay("torch", "float32", _interpreter_sha256(), loaded.device),
        n_ctx=n_ctx,
    ))


def _prepare_out(out: Path, manifest: dict[str, Any], resume: bool, force: bool) -> None:
    manifest_path = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    occupied = out.is_dir() and any(not is_temp_name(p.name) for p in out.iterdir())
    if out.is_dir():  # temp files of our own root artifacts, left by a killed run (never anyone else's)
        for stale in out.iterdir():
            if is_temp_name(stale.name) and stale.name.startswith((f".{MANIFEST}.", f".{SUMMARY}.", f".{MODEL_SIGNATURE}.")):
                stale.unlink(missing_ok=True)
    if occupied and resume:
        if not manifest_path.is_file():
            raise UserError(f"--resume: {out} holds no {MANIFEST}, so it is not a BlockCert run to continue")
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        R.read(R.RunManifest, old, str(manifest_path))  # another tool's or version's run.json: a usage error naming it
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


def _check_model_signature(root: Path, signature: bytes | None) -> None:
    """--resume: the run keeps the model signature it was started with (its finished certificates cover it, or not)."""
    path = root / MODEL_SIGNATURE
    old = path.read_bytes() if path.is_file() else None
    if old != signature and _finished_indices(root):
        said = ("without --model-signature" if old is None else f"with --model-signature (its copy is {MODEL_SIGNATURE})"
                if signature is None else f"with another --model-signature ({MODEL_SIGNATURE} differs)")
        raise UserError(f"--resume: {root} was started {said}", "rerun with the original settings, or choose a new --out")


def _place_model_signature(root: Path, signature: bytes | None) -> None:
    path = root / MODEL_SIGNATURE
    if signature is None:
        path.unlink(missing_ok=True)  # left by a run that was killed before any block finished
    elif not path.is_file() or path.read_bytes() != signature:
        atomic_write_bytes(path, signature)


def _load_finished(root: Path, index: int, bounds: BoundSettings | None = None) -> BlockResult | None:
    """The result of a block an earlier run finished; None if it must be (re)done.

    With ``bounds``, a block whose certificate logs no Lipschitz bounds, or bounds computed with other
    settings, counts as unfinished.
    """
    d = root / block_dir(index)
    cert_path, metrics_path = d / CERTIFICATE, d / BLOCK_METRICS
    if not (cert_path.is_file() and metrics_path.is_file()):
        return None
    try:
        record = R.load(R.BlockMetricsRecord, json.loads(metrics_path.read_text(encoding="utf-8")))
        m = dict(record.metrics)
        for key in ("per_prompt_cov_act", "per_prompt_mae", "per_prompt_cov_loss"):
            m[key] = tuple(m[key])
        metrics = BlockMetrics(**m)
        cert = json.loads(cert_path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError, cattrs.BaseValidationError):
        return None  # damaged by a crash in an older version: redo the block
    if bounds is not None and not _has_bounds(d, cert, bounds):
        return None
    return BlockResult(index, metrics, bool(record.certified), BlockPaths(index).certificate,
                       certificate_id(cert), resumed=True)


def _has_bounds(d: Path, cert: dict[str, Any], bounds: BoundSettings) -> bool:
    if not (cert.get("predicate") or {}).get("lipschitz"):
        return False
    try:
        record = R.load(R.BoundsRecord, json.loads((d / BOUNDS).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, cattrs.BaseValidationError):
        return False  # damaged by a crash in an older version: redo the bounds
    return record.settings == bounds


@attrs.frozen
class Measurement:
    """Per-prompt arrays for one block: what eq. (3)-(10) aggregate."""

    errors: list[np.ndarray]  # [T_p] e(p,t)
    norms: list[np.ndarray]  # [T_p] ||x^(l+1)_t||
    paths: list[np.ndarray]  # [T_p] bool: all discrete decisions match
    base: list[np.ndarray]  # [T_p - 1] baseline token losses (from the trace)
    stitched: list[np.ndarray]  # [T_p - 1] token losses with block l replaced by its replay


def replay_all(ir: Any, traces: Sequence[Any], index: int,
                device: Any = "cpu") -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Replay ``ir`` on every prompt's recorded x^(l), unpadded, exactly as a verifier replays it, on ``device``:
    (outputs [T_p, d], errors, norms, path matches) per prompt, on the CPU."""
    plugins = get_plugins()
    outputs, errors, norms, paths = [], [], [], []
    for t in traces:
        rep = plugins.replay(ir, torch.from_numpy(t.residual[index])[None].to(device))  # [1, T_p, d], on the model's device
        outputs.append(rep.output[0].cpu().numpy())
        errors.append(token_errors(outputs[-1], t.residual[index + 1]))
        norms.append(token_norms(t.residual[index + 1]))
        paths.append(path_matches(rep.mask[0].cpu().numpy(), t.masks[index], rep.head_active.cpu().numpy(), t.head_gates[index]))
    return outputs, errors, norms, paths


@torch.no_grad()
def measure_block(loaded: LoadedModel, traces: Sequence[PromptTrace], ir: Any, index: int, batch_size: int) -> Measurement:
    """Replay ``ir`` on the recorded x^(l) of every prompt and re-run the native suffix from its output."""
    outputs, errors, norms, paths = replay_all(ir, traces, index, loaded.native.device)
    stitched = suffix_losses(loaded, traces, [index], lambda _: outputs, batch_size)[index]
    return Measurement(errors, norms, paths, [t.loss for t in traces], stitched)


# ---------------------------------------------------------------------------------------------------
# The per-block work: one task certifies a group of blocks in one pass (here or on a worker)
# ---------------------------------------------------------------------------------------------------


@attrs.frozen(eq=False)
class TraceSlice:
    """What certifying some blocks needs of one prompt's trace (what a worker is sent): x^(l), x^(l+1),
    m_l of those blocks. Indexed like :class:`PromptTrace` (``residual[l]``, ``masks[l]``, ...)."""

    index: int
    input_ids: np.ndarray
    loss: np.ndarray
    residual: dict[int, np.ndarray]
    masks: dict[int, np.ndarray]
    head_gates: dict[int, np.ndarray]

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])


def slice_traces(traces: Sequence[Any], blocks: Sequence[int]) -> list[TraceSlice]:
    """Copies of the parts of ``traces`` that certifying ``blocks`` needs (the rest can be freed)."""
    layers = sorted({j for i in blocks for j in (i, i + 1)})
    return [TraceSlice(t.index, t.input_ids, t.loss, {j: t.residual[j].copy() for j in layers},
                       {i: t.masks[i].copy() for i in blocks}, {i: t.head_gates[i].copy() for i in blocks}) for t in traces]


@attrs.frozen(eq=False)
class Extraction:
    """Block ``index`` extracted (and derived), replayed on its traces and measured: all but loss coverage."""

    index: int
    arch: str
    n_ctx: int
    ir: Any  # the certified IR; None once the run has written it
    base: Any  # the extraction a surrogate or ablation was derived from (None without --surrogate/--ablate)
    surrogate: dict[str, Any] | None  # predicate.surrogate
    errors: list[np.ndarray]
    norms: list[np.ndarray]
    paths: list[np.ndarray]
    bounds: dict[str, Any] | None  # the bounds.json record, with --bounds
    floor_act: list[np.ndarray] | None = None  # per prompt [T_p]: the native block's precision noise (noise-floor policy)


@attrs.frozen
class PassStep:
    """A task's pass has run block ``block`` (for progress)."""

    block: int


@attrs.frozen(eq=False)
class Coverage:
    """Block ``index``'s token losses with it replaced by its replay (its pass has reached the head)."""

    index: int
    stitched: list[np.ndarray]  # per prompt [T_p - 1]
    floor_loss: list[np.ndarray] | None = None  # per prompt [T_p - 1]: the loss change of the block's own noise


@attrs.frozen(eq=False)
class BlockTask:
    """Certify ``blocks`` in one pass: what an executor runs. ``model`` is a LoadedModel or a ModelRef."""

    model: Any
    traces: Sequence[Any]
    blocks: tuple[int, ...]
    n_ctx: int
    batch_size: int
    derivation: Derivation | None = None
    bounds: BoundSettings | None = None
    floors: bool = False  # measure the native block's precision floors (the noise-floor policy)


@torch.no_grad()
def extract_block(loaded: LoadedModel, traces: Sequence[Any], index: int, n_ctx: int, derivation: Derivation | None = None,
                  bounds: BoundSettings | None = None) -> tuple[Extraction, list[np.ndarray]]:
    """Block ``index`` to IR (derived if asked), replayed and measured; also its replay outputs [T_p, d]."""
    ir = get_plugins().to_ir(loaded.native, index, n_ctx)
    base = surrogate = None
    if derivation is not None:
        from blockcert.artifacts.digest import tensors_sha256
        from blockcert.ir import to_dict

        base = ir
        ir = derive.apply(derivation, base, [t.residual[index] for t in traces])
        surrogate = derive.predicate(derivation, ir, block_dir(index), tensors_sha256(to_dict(base)[1]))
    outputs, errors, norms, paths = replay_all(ir, traces, index, loaded.native.device)
    record = None if bounds is None else block_record(ir, [t.residual[index] for t in traces], errors, bounds)
    return Extraction(index, ir.arch, ir.n_ctx, ir, base, surrogate, errors, norms, paths, record), outputs


def certify_blocks(task: BlockTask, emit: Callable[[Any], None]) -> None:
    """One pass over the model for the task's blocks. ``emit`` gets, in order: each block's
    :class:`Extraction` when the pass reaches it (the block then joins the loss-coverage staircase), a
    :class:`PassStep` after every block of the pass, and each block's :class:`Coverage` at the end."""
    from blockcert.pipeline.executors import resolve_model

    loaded = resolve_model(task.model)
    references: dict[int, list[np.ndarray]] = {}  # the blocks' reference-precision outputs (noise-floor)

    def start(index: int) -> list[np.ndarray]:
        extraction, outputs = extract_block(loaded, task.traces, index, task.n_ctx, task.derivation, task.bounds)
        if task.floors:  # here, while block ``index`` is in memory
            floors, references[index] = act_floors(loaded, task.traces, index)
            extraction = attrs.evolve(extraction, floor_act=floors)
        emit(extraction)
        return outputs

    step = lambda j: emit(PassStep(j))  # noqa: E731
    losses = suffix_losses(loaded, task.traces, task.blocks, start, task.batch_size, step=step)
    floor_loss: dict[int, list[np.ndarray]] = {}
    if task.floors:  # two more passes: the block's noise through the suffix, and the suffix's own noise
        floor_loss = loss_floor_passes(loaded, task.traces, task.blocks, references, task.batch_size, step=step)
    for index in sorted(losses):
        emit(Coverage(index, losses[index], floor_loss.get(index)))


def plan_groups(blocks: Sequence[int], per_pass: int, workers: int | None) -> list[tuple[int, ...]]:
    """Blocks -> groups, each certified in one pass. At most ``per_pass`` blocks in flight per pass.

    One worker: consecutive blocks share a pass (a pass reads blocks min(group)..L-1, so this reads
    least). Several: dealt round-robin over ``workers`` passes (default one per block), which balances
    their work (block l's suffix costs L-1-l blocks).
    """
    blocks = sorted(blocks)
    per_pass = max(1, per_pass)
    if workers == 1:
        return [tuple(blocks[i : i + per_pass]) for i in range(0, len(blocks), per_pass)]
    n = max(workers or len(blocks), -(-len(blocks) // per_pass))
    return [tuple(blocks[i::n]) for i in range(min(n, len(blocks)))]


def _remove_stale_temps(directory: Path) -> None:
    """Temp files left by a run that was killed mid-write (never valid artifacts)."""
    if directory.is_dir():
        for stale in (p for p in directory.iterdir() if is_temp_name(p.name)):
            stale.unlink(missing_ok=True)


def _write_ir(root: Path, extraction: Extraction) -> Extraction:
    """Write a freshly extracted block's IR (and base IR); return the record without the tensors."""
    d = root / block_dir(extraction.index)
    _remove_stale_temps(d)
    if extraction.bounds is None:  # left by an interrupted --bounds run of this block: not part of this certificate
        (d / BOUNDS).unlink(missing_ok=True)
    if extraction.base is not None:
        save_ir(extraction.base, d / derive.BASE_STEM)
    save_ir(extraction.ir, d / "ir")
    return attrs.evolve(extraction, ir=None, base=None)


def _certify(
    root: Path, ex: Extraction, stitched: list[np.ndarray], traces: Sequence[Any], policy: Policy,
    shared_subjects: Sequence[dict[str, Any]], manifest: dict[str, Any], floor_loss: list[np.ndarray] | None = None,
) -> BlockResult:
    """Metrics, verdict, per-token errors, bounds and the certificate of a block whose IR is written."""
    index = ex.index
    d = root / block_dir(index)
    names = [f"{IR}.json", f"{IR}.safetensors", ERRORS, BLOCK_METRICS]
    if ex.surrogate is not None:
        names += [f"{derive.BASE_STEM}.json", f"{derive.BASE_STEM}.safetensors"]
    errors, norms, paths = ex.errors, ex.norms, ex.paths
    metrics = block_metrics(errors, norms, paths, [t.loss for t in traces], stitched, policy, ex.floor_act, floor_loss)
    verdict = certified(metrics.cov_act, metrics.cov_loss, policy)
    from safetensors.numpy import save

    per_token: dict[str, np.ndarray] = {}
    for k, (t, e, n, p, s) in enumerate(zip(traces, errors, norms, paths, stitched)):
        key = f"p{t.index:03d}"
        per_token[f"{key}.error"] = e
        per_token[f"{key}.rel_error"] = np.divide(e, n, out=np.zeros_like(e), where=n > 0)
        per_token[f"{key}.path_match"] = np.asarray(p, bool)
        per_token[f"{key}.loss_stitched"] = np.asarray(s, np.float32)
        if policy.uses_floor:
            per_token[f"{key}.floor_act"] = np.asarray(ex.floor_act[k], np.float64)
            per_token[f"{key}.floor_loss"] = np.asarray(floor_loss[k], np.float64)
    atomic_write_bytes(d / ERRORS, save(per_token, metadata={"format": "blockcert-errors"}))
    record = R.BlockMetricsRecord(index, _metrics_dict(metrics), verdict, policy)
    atomic_write_bytes(d / BLOCK_METRICS, canonical_json(R.dump(record)))
    lipschitz = None
    if ex.bounds is not None:
        atomic_write_bytes(d / BOUNDS, canonical_json(ex.bounds))
        names.append(BOUNDS)
        lipschitz = predicate_summary(ex.bounds, f"{block_dir(index)}/{BOUNDS}")
    own = [subject(root, f"{block_dir(index)}/{name}") for name in sorted(names)]
    m = _metrics_dict(metrics)
    predicate = R.dump(R.BlockPredicate(
        schema_version=CERT_SCHEMA_VERSION,
        tool=R.load(R.Tool, manifest["tool"]),
        model=R.load(R.ModelIdentity, manifest["model"]),
        block=R.BlockRef(index, ex.arch, ex.n_ctx, f"{block_dir(index)}/ir.json"),
        prompts=R.CertifiedPrompts(**manifest["prompts"], tokens=metrics.tokens, trace_index=TRACE_INDEX),
        policy=policy,
        metrics=R.ClaimedMetrics(**{k: m[k] for k in R.keys(R.ClaimedMetrics)}),
        verdict=R.Verdict(verdict, metrics.cov_act >= policy.alpha_act, metrics.cov_loss >= policy.alpha_loss),
        replay=R.load(R.Replay, manifest["replay"]),
        surrogate=ex.surrogate,
        lipschitz=None if lipschitz is None else R.load(R.LipschitzSummary, lipschitz),
    ))
    cert = statement([*own, *shared_subjects], BLOCK_PREDICATE, predicate)
    cert_id = write_certificate(d / CERTIFICATE, cert)  # last: its presence marks the block done
    return BlockResult(index, metrics, verdict, BlockPaths(index).certificate, cert_id, resumed=False)


@attrs.frozen
class RunSettings:
    """Everything :func:`run` is told besides the model: what to certify, under which policy, where and how.
    ``blockcert.run(model, **options)`` builds one from its keywords; ``run(model, settings=s)`` takes it whole."""

    arch: str | None = None
    prompts: str = "builtin:stress"
    blocks: str | Sequence[int] = "all"
    policy: Policy = attrs.field(default=None, converter=lambda p: Policy() if p is None else p)
    dtype: str = "float32"
    out: str | Path = "blockcert-out"
    resume: bool = False
    force: bool = False
    batch_size: int = 8
    bounds: bool | BoundSettings = False
    surrogate: str | None = None
    ablate: str | None = None
    stream: bool = False
    executor: str | Executor = "local"
    inflight_bytes: int = DEFAULT_INFLIGHT_BYTES
    device: str = "cpu"  # cpu, cuda, mps or auto: where the model and the replay run (traces stay on the CPU)
    model_signature: str | Path | None = None  # an OpenSSF model-signing bundle: kept as model.sig, a subject of every block


def run(model: str | Path | None = None, *, settings: RunSettings | None = None, loaded: LoadedModel | None = None,
        progress: bool = False, **options: Any) -> RunResult:
    """Certify ``blocks`` of ``model`` on ``prompts``; write everything under ``out``. See the module doc.

    The options are the fields of :class:`RunSettings`, given as keywords or as ``settings=`` (not both).
    ``loaded`` is a model already loaded (then ``model`` is not read); ``progress`` draws bars on stderr.

    ``stream=True`` loads the model block by block from its safetensors shards (never all of it; see
    :mod:`blockcert.model.stream`); the certificates are byte-identical to an in-memory run's. ``executor``
    (``"local"``, ``"ray"`` or an :class:`~blockcert.pipeline.executors.Executor`) runs the passes that certify
    the blocks; a pass holds at most ``inflight_bytes`` of loss-coverage activations (more blocks than
    that fit take more passes).

    ``bounds=True`` (or a :class:`~blockcert.bounds.record.BoundSettings`) also computes each block's
    Lipschitz bounds, writes them to ``block_<idx>/bounds.json`` and logs them in the certificate
    (about 1 s per SmolLM2 block); with ``resume=True``, finished blocks without bounds, or with bounds
    computed under other settings, are redone.

    ``surrogate="lowrank:r=64"`` or ``ablate="invert-mask"`` certifies, for every block, the IR derived
    from the extraction by that plugin instead of the extraction itself (see :mod:`blockcert.derive`).

    ``model_signature`` names an OpenSSF model-signing bundle (``model_signing sign`` writes ``model.sig``) for the
    model: its format is checked, it is copied to ``model.sig`` in ``out`` and every block certificate covers it as
    a subject, so a certificate chains to the signed model (docs/signing.md).
    """
    if settings is not None and options:
        raise TypeError(f"run() takes settings= or its fields as keywords, not both (got {', '.join(sorted(options))})")
    s = settings if settings is not None else RunSettings(**options)
    arch, prompts, blocks, policy, dtype, out = s.arch, s.prompts, s.blocks, s.policy, s.dtype, s.out
    resume, force, batch_size, bounds, surrogate, ablate = s.resume, s.force, s.batch_size, s.bounds, s.surrogate, s.ablate
    stream, executor, inflight_bytes = s.stream, s.executor, s.inflight_bytes
    bound_settings = (BoundSettings() if bounds is True else bounds) or None
    derivation = derive.from_options(surrogate, ablate)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    policy = policy or Policy()
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    console = Console(stderr=True)
    texts = load_prompts(prompts)
    executor = get_executor(executor)
    with ExitStack() as stack:
        if progress:
            stack.enter_context(console.status("Loading model"))
        loaded = loaded or load_model(model, arch=arch, dtype=dtype, stream=stream, device=s.device)
    selected = parse_blocks(blocks, loaded.native.n_blocks)
    root = Path(out)
    from blockcert.pipeline.trace import tokenize_prompts

    n_ctx = max(ids.size for ids in tokenize_prompts(loaded, texts))  # validates prompts before writing anything
    if derivation is not None:  # an unknown name or a bad parameter fails here, before anything is written
        derive.apply(derivation, get_plugins().to_ir(loaded.native, selected[0], n_ctx))
    manifest = _manifest(loaded, prompts, texts, policy, n_ctx)
    if derivation is not None:
        manifest["derivation"] = derivation.manifest()
    signature = None if s.model_signature is None else read_model_signature(s.model_signature)
    if resume:
        _check_model_signature(root, signature)
    _prepare_out(root, manifest, resume, force)
    _place_model_signature(root, signature)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not progress)
    with bar:
        traces = load_traces(root) if resume else None
        if traces is None:
            _remove_stale_temps(root / "traces")
            task = bar.add_task("Capturing traces", total=loaded.native.n_blocks)
            traces = capture(loaded, texts, batch_size=batch_size, progress=lambda n: bar.advance(task, n))
            save_traces(root, traces, prompts)
        shared = [subject(root, MANIFEST), subject(root, TRACE_INDEX), *(subject(root, prompt_file(t.index)) for t in traces)]
        shared += [subject(root, MODEL_SIGNATURE)] if signature is not None else []
        finished = {i: r for i in selected if resume and (r := _load_finished(root, i, bound_settings)) is not None}
        todo = [i for i in selected if i not in finished]
        tokens = sum(t.n_tokens for t in traces)
        traces = slice_traces(traces, todo)  # x^(l), x^(l+1), m_l of the blocks to certify: the rest is freed
        per_pass = inflight_bytes // variant_bytes([t.n_tokens for t in traces], batch_size, loaded.native.d_model, loaded.native.dtype)
        groups = plan_groups(todo, per_pass, executor.workers) if todo else []
        passes = 3 if policy.uses_floor else 1  # noise-floor: two more passes measure the loss floor
        task = bar.add_task("Certifying blocks", total=passes * sum(loaded.native.n_blocks - g[0] for g in groups))
        model_arg = model_ref(loaded) if executor.remote else loaded
        tasks = [BlockTask(model_arg, slice_traces(traces, g) if executor.remote else traces, g, n_ctx, batch_size, derivation,
                           bound_settings, policy.uses_floor) for g in groups]
        extracted: dict[int, Extraction] = {}
        done: dict[int, BlockResult] = dict(finished)

        def on_event(event: Any) -> None:
            if isinstance(event, PassStep):
                bar.advance(task)
            elif isinstance(event, Extraction):  # write its IR now and drop the tensors
                extracted[event.index] = _write_ir(root, event)
            else:  # its pass is done: metrics, artifacts, certificate
                done[event.index] = _certify(root, extracted.pop(event.index), event.stitched, traces, policy, shared, manifest,
                                             event.floor_loss)

        executor.map(certify_blocks, tasks, on_event)
        results = [done[i] for i in selected]
    result = RunResult(out=root, model=loaded.name, arch=loaded.arch, dtype=loaded.dtype, prompts=prompts,
                       n_prompts=len(texts), tokens=tokens, policy=policy, blocks=tuple(results))
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
        if suffix.isdigit() and (d / CERTIFICATE).is_file():
            out.append(int(suffix))
    return sorted(out)

