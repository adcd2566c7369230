"""The stitched model (paper §4.3, §6.5-6.6): chosen blocks replaced by their IR replays, replayed end to end.

From a finished run directory: x_hat^(0) = x^(0) (the recorded embedding); block l is the IR replay of
``block_<l>/ir`` if l is stitched, else the native block; the head gives the stitched token losses. We
record, per layer l = 1..L, the mean and max over tokens of ||x_hat^(l) - x^(l)||_2 (the MAE of eq. 5 applied
to the whole stream), baseline and stitched perplexity, and a 60-prompt semantic probe. The result is
written to ``full/eval.json`` and a full-model certificate ``full/certificate.json`` that references every
block certificate by id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from blockcert.artifacts import records as R
from blockcert.artifacts.digest import canonical_json, file_sha256
from blockcert.artifacts.fsutil import atomic_write_bytes
from blockcert.artifacts.layout import CERTIFICATE, EVAL, FULL, FULL_CERTIFICATE, FULL_EVAL, MANIFEST, SUMMARY, TRACE_INDEX, BlockPaths
from blockcert.artifacts.safeio import strict_json
from blockcert.certificate import FULL_PREDICATE, FULL_SCHEMA_VERSION, statement, subject, write_certificate
from blockcert.errors import UserError
from blockcert.ir import BlockIR, load_ir, read_n_ctx
from blockcert.metrics import token_errors
from blockcert.model.load import LoadedModel, load_model
from blockcert.pipeline.trace import batches, load_traces, pad_batch, prompt_nll
from blockcert.plugins import get_plugins
from blockcert.prompts import probe_items


@attrs.frozen
class ProbeItem:
    prompt: str
    label: str
    kind: str
    baseline: str  # the baseline model's greedy next token, decoded
    stitched: str  # the stitched model's


@attrs.frozen
class StitchResult:
    stitched_blocks: tuple[int, ...]
    layer_mae: tuple[float, ...]  # l = 1..L: mean over tokens of ||x_hat^(l) - x^(l)||
    layer_max: tuple[float, ...]  # l = 1..L: max over tokens
    ppl_baseline: float
    ppl_stitched: float
    probe: tuple[ProbeItem, ...]
    certificate: str
    certificate_id: str

    @property
    def mean_layer_mae(self) -> float:
        return float(np.mean(self.layer_mae))

    @property
    def worst_layer_mae(self) -> float:
        return float(np.max(self.layer_mae))

    @property
    def max_residual_error(self) -> float:
        return float(np.max(self.layer_max))

    @property
    def delta_ppl(self) -> float:
        return self.ppl_stitched - self.ppl_baseline

    @property
    def rel_delta_ppl(self) -> float:
        return abs(self.delta_ppl) / self.ppl_baseline

    def agreement(self, a: str, b: str) -> float:
        def pick(item: ProbeItem, who: str) -> str:
            return item.label if who == "label" else getattr(item, who)

        same = [_norm(pick(i, a)) == _norm(pick(i, b)) for i in self.probe]
        return float(np.mean(same)) if same else 1.0

    def metrics(self) -> dict[str, Any]:
        return {
            "layer_mae": list(self.layer_mae), "layer_max": list(self.layer_max),
            "mean_layer_mae": self.mean_layer_mae, "worst_layer_mae": self.worst_layer_mae,
            "max_residual_error": self.max_residual_error,
            "ppl_baseline": self.ppl_baseline, "ppl_stitched": self.ppl_stitched,
            "delta_ppl": self.delta_ppl, "rel_delta_ppl": self.rel_delta_ppl,
            "probe_prompts": len(self.probe),
            "probe_stitched_vs_baseline": self.agreement("stitched", "baseline"),
            "probe_baseline_vs_human": self.agreement("baseline", "label"),
            "probe_stitched_vs_human": self.agreement("stitched", "label"),
        }


def _norm(token: str) -> str:
    return token.strip().lower()


class IRsOnDemand(Mapping[int, BlockIR]):
    """The stitched blocks' IRs by index, read from the run directory when first used and kept one at a
    time: the block-major pass of :func:`run_streams` needs block l's IR only while it is at block l (a
    Llama-2-7B block's IR is 0.8 GB in float32; all 32 would be 26 GB)."""

    def __init__(self, root: Path, indices: Sequence[int]) -> None:
        self.stems = {i: root / f"block_{i:03d}" / "ir" for i in indices}
        self._current: tuple[int, BlockIR] | None = None

    def __getitem__(self, index: int) -> BlockIR:
        if self._current is None or self._current[0] != index:
            stem = self.stems[index]  # KeyError for a block that is not stitched, as a dict would raise
            self._current = None  # drop the previous IR before reading the next
            self._current = (index, load_ir(stem))
        return self._current[1]

    def __iter__(self) -> Iterator[int]:
        return iter(self.stems)

    def __len__(self) -> int:
        return len(self.stems)

    def __contains__(self, index: object) -> bool:
        return index in self.stems

    def n_ctx(self) -> int | None:
        """The shortest context any stitched IR covers, from the tensor file headers."""
        return min((read_n_ctx(stem) for stem in self.stems.values()), default=None)


@attrs.frozen(eq=False)
class StreamJob:
    """One right-padded batch to run through the (stitched) model: x^(0) float32 [B, T, d], prompt lengths,
    and the blocks replaced by their IR (none: the baseline model)."""

    x0: torch.Tensor
    lengths: list[int]
    irs: Mapping[int, BlockIR]


@torch.no_grad()
def run_streams(loaded: LoadedModel, jobs: Sequence[StreamJob],
                on_layer: Callable[[int, int, torch.Tensor], None] | None = None) -> list[torch.Tensor]:
    """x_hat^(L) of every job, in the native dtype: block l is the IR replay of ``job.irs[l]`` (each prompt
    unpadded, as certified) or the native block. Block-major, so a streamed model reads each block once
    for all jobs; ``on_layer(l, job, x)`` sees every x_hat^(l), l = 1..L, as float32 [B, T, d]."""
    plugins = get_plugins()
    native = loaded.native
    device = native.device
    positions = [torch.arange(job.x0.shape[1], device=device)[None].expand(job.x0.shape[:2]) for job in jobs]
    xs = [job.x0.to(device=device, dtype=native.dtype) for job in jobs]
    for index in range(native.n_blocks):
        for k, job in enumerate(jobs):
            if index in job.irs:
                y = torch.zeros(xs[k].shape, dtype=torch.float32, device=device)
                for b, n in enumerate(job.lengths):
                    y[b, :n] = plugins.replay(job.irs[index], xs[k][b : b + 1, :n].float()).output[0]
                xs[k] = y.to(native.dtype)
            else:
                xs[k] = native.call_block(index, xs[k], positions[k])
            if on_layer is not None:
                on_layer(index + 1, k, xs[k].float())
    return xs


def _check_model(loaded: LoadedModel, manifest: R.RunManifest) -> None:
    if loaded.weights_sha256() != manifest.model.weights_sha256:
        raise UserError(f"model {loaded.name} is not the model of this run (weights digest differs)",
                        "pass --model with the model the run certified")


@torch.no_grad()
def stitch(out: str | Path, *, blocks: Sequence[int] | None = None, model: str | None = None, loaded: LoadedModel | None = None,
           batch_size: int = 8, stream: bool = False, device: str = "cpu") -> StitchResult:
    """Stitch ``blocks`` (default: every certified block) of the run in ``out``; write ``full/``.

    ``stream=True`` loads the model block by block (:mod:`blockcert.model.stream`): one pass reads each block once."""
    root = Path(out)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise UserError(f"{root} is not a finished blockcert run (no run.json)", "run `blockcert run --out DIR` first")
    manifest = R.read(R.RunManifest, strict_json(manifest_path.read_bytes(), str(manifest_path)), str(manifest_path))
    summary_path = root / SUMMARY
    if not summary_path.is_file():
        raise UserError(f"{root} has no metrics.json: the run did not finish", "finish it with `blockcert run --resume`")
    summary = strict_json(summary_path.read_bytes(), str(summary_path))
    available = {b["index"]: b for b in summary["blocks"]}
    chosen = sorted(available) if blocks is None else sorted(set(blocks))
    missing = [i for i in chosen if i not in available]
    if missing:
        raise UserError(f"blocks {missing} have no certificate in {root}", f"certified blocks: {sorted(available)}")
    loaded = loaded or load_model(model or manifest.model.name, arch=manifest.model.arch, dtype=manifest.model.dtype, stream=stream,
                                 device=device)
    _check_model(loaded, manifest)
    result = _evaluate(root, loaded, chosen, batch_size)
    return _write(root, manifest, summary, result, loaded.device)


def _evaluate(root: Path, loaded: LoadedModel, chosen: list[int], batch_size: int) -> StitchResult:
    traces = load_traces(root)
    if traces is None:
        raise UserError(f"{root}/traces is incomplete")
    irs = IRsOnDemand(root, chosen)
    L = loaded.native.n_blocks
    groups = [[traces[k] for k in group] for group in batches(len(traces), batch_size)]
    jobs = []
    for part in groups:
        lengths = [t.n_tokens for t in part]
        x0 = torch.zeros((len(part), max(lengths), loaded.native.d_model))
        for b, t in enumerate(part):
            x0[b, : t.n_tokens] = torch.from_numpy(t.residual[0])
        jobs.append(StreamJob(x0, lengths, irs))
    items, probe_ids = _probe_inputs(loaded, irs.n_ctx())
    batch = pad_batch(probe_ids).to(loaded.native.device)
    x0 = loaded.native.embed(batch, torch.arange(batch.shape[1], device=batch.device)[None].expand_as(batch)).float()
    lengths = [a.size for a in probe_ids]
    jobs += [StreamJob(x0, lengths, irs), StreamJob(x0, lengths, {})]  # the probe: stitched, baseline
    errs: list[list[np.ndarray]] = [[] for _ in range(L)]

    def on_layer(layer: int, k: int, x: torch.Tensor) -> None:
        if k < len(groups):
            for b, t in enumerate(groups[k]):
                errs[layer - 1].append(token_errors(x[b, : t.n_tokens].cpu().numpy(), t.residual[layer]))

    finals = run_streams(loaded, jobs, on_layer)
    nll_base, nll_stitched = [], []
    for k, part in enumerate(groups):
        ids = pad_batch([t.input_ids for t in part]).to(loaded.native.device)
        nll = prompt_nll(loaded.native, finals[k], ids, [t.n_tokens for t in part])
        for b, t in enumerate(part):
            nll_stitched.append(nll[b].astype(np.float64))
            nll_base.append(t.loss.astype(np.float64))
    layer_mae = tuple(float(np.mean(np.concatenate(e))) for e in errs)
    layer_max = tuple(float(np.max(np.concatenate(e))) for e in errs)
    ppl_base = math.exp(float(np.mean(np.concatenate(nll_base))))
    ppl_st = math.exp(float(np.mean(np.concatenate(nll_stitched))))
    probe = _probe_answers(loaded, items, probe_ids, finals[-2], finals[-1])
    return StitchResult(tuple(chosen), layer_mae, layer_max, ppl_base, ppl_st, tuple(probe), FULL_CERTIFICATE, "")


def _probe_inputs(loaded: LoadedModel, n_ctx: int | None) -> tuple[list[dict[str, str]], list[np.ndarray]]:
    """The probe prompts and their token ids (each at most ``n_ctx``, the stitched IRs' context)."""
    items = probe_items()
    ids = [np.asarray(loaded.tokenizer(item["prompt"])["input_ids"], dtype=np.int64) for item in items]
    for item, a in zip(items, ids):
        if n_ctx is not None and a.size > n_ctx:
            raise UserError(f"probe prompt {item['prompt']!r} has {a.size} tokens, beyond the IR tables ({n_ctx})")
    return items, ids


def _probe_answers(loaded: LoadedModel, items: list[dict[str, str]], ids: list[np.ndarray], stitched: torch.Tensor,
                   base: torch.Tensor) -> list[ProbeItem]:
    """Greedy next token of the baseline and the stitched model on each probe prompt."""
    last = torch.tensor([a.size for a in ids], device=stitched.device) - 1
    rows = torch.arange(len(ids), device=stitched.device)

    def decode(x: torch.Tensor) -> list[str]:
        best = loaded.native.head(x)[rows, last].argmax(-1)
        return [loaded.tokenizer.decode([int(t)]) for t in best]

    return [ProbeItem(item["prompt"], item["label"], item.get("kind", ""), b, s_)
            for item, b, s_ in zip(items, decode(base), decode(stitched))]


def _write(root: Path, manifest: R.RunManifest, summary: dict[str, Any], result: StitchResult, device: str = "cpu") -> StitchResult:
    d = root / FULL
    evaluation = {
        "stitched_blocks": list(result.stitched_blocks),
        "metrics": result.metrics(),
        "probe": [attrs.asdict(p) for p in result.probe],
    }
    atomic_write_bytes(d / EVAL, canonical_json(evaluation))
    refs = []
    for index in result.stitched_blocks:
        rel = BlockPaths(index).certificate
        refs.append({"index": index, "certificate": rel, "certificate_id": file_sha256(root / rel)})
    predicate = R.dump(R.FullPredicate(
        schema_version=FULL_SCHEMA_VERSION,
        tool=manifest.tool,
        model=manifest.model,
        prompts=manifest.prompts,
        stitched_blocks=list(result.stitched_blocks),
        block_certificates=[R.BlockCertificateRef(**r) for r in refs],
        metrics=R.load(R.FullMetrics, result.metrics()),
        evaluation=FULL_EVAL,
        device=device,
    ))
    subjects = [subject(root, FULL_EVAL), subject(root, MANIFEST), subject(root, TRACE_INDEX),
                *(subject(root, r["certificate"]) for r in refs)]
    cert = statement(subjects, FULL_PREDICATE, predicate)
    cert_id = write_certificate(d / CERTIFICATE, cert)
    return attrs.evolve(result, certificate_id=cert_id)


@torch.no_grad()
def recompute(root: Path, model: str | None, blocks: Sequence[int], stream: bool = False,
              loaded: LoadedModel | None = None, device: str = "cpu") -> dict[str, Any]:
    """The full-model metrics of ``root`` re-derived with ``model`` (or ``loaded``, already loaded; for
    ``verify --level full``), nothing written. The model must be the run's (its weights digest is checked)."""
    manifest = R.read(R.RunManifest, strict_json((root / MANIFEST).read_bytes(), MANIFEST), MANIFEST)
    loaded = loaded or load_model(model or manifest.model.name, arch=manifest.model.arch, dtype=manifest.model.dtype, stream=stream,
                                 device=device)
    _check_model(loaded, manifest)
    return _evaluate(root, loaded, list(blocks), batch_size=8).metrics()
