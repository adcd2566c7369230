"""Experiments: the paper's Tables 1-6 and its prompt-shift paragraph (sections 6.2-6.7), re-run on a model.

Every number comes from ordinary ``blockcert run`` directories made here, one per configuration
(prompt set x derivation), under ``<out>/runs/``: anyone can ``blockcert verify`` them. A run whose
configuration (model weights, dtype, prompts, policy, derivation, tool and interpreter version) is
already complete in ``<out>/runs/`` is reused, and a half-finished one is resumed, so running an
experiment again is cheap. One model is loaded per experiment and shared by its runs; ``run_all``
also shares the runs themselves (the baseline run on the stress prompts serves Tables 2-5 and the
prompt shift).

Conventions, following the paper's table captions and text:

* Table 1 (the extraction, per block): the mean over prompts of each prompt's cov_act and MAE (the paper's
  "mean activation coverage" and "mean extraction error"), with the minimum per-prompt cov_act, the mean
  cov_loss and ε (the worst per-token error).
* Table 6 (Lipschitz quantities, per block): ε, ``K_attn``, the analytic and the local (ball of radius 1)
  MLP bounds and the block bounds of the extraction's own ``bounds.json`` (``run --bounds``); ``null`` where
  no finite bound is claimed (docs/bounds.md §5).
* Every mean over prompts comes with a 95% bootstrap confidence interval (:func:`bootstrap`: 2,000
  resamples of the prompts, percentile interval, seed 0, so it is reproducible).

* Tables 2 and 3 ("best prompt per block"): each block is read on ONE prompt, the best prompt of the
  block's *baseline* run (highest cov_act, ties: lowest MAE, then lowest index; ``BlockMetrics.best_prompt``),
  and every row uses that same prompt. A row's cov_act, MAE, cov_path and cov_loss are each block's
  value on that prompt, averaged over the blocks. The error ratio is the row's mean MAE divided by the
  baseline row's mean MAE (the paper's 4.80e-2 / 3.38e-2 = 1.42). Beside it, each row's all-prompt
  means (every prompt of every block, with bootstrap intervals over prompts) and their error ratio: one
  prompt per block is the paper's convention, not enough data to rank surrogates on.
* Table 4: per block, the number of prompts whose own cov_act is >= each level while their own
  cov_loss is >= ``loss_level`` (the policy's alpha_loss by default, the paper's 0.90).
* Table 5: per block, the minimum per-prompt cov_act over the first k prompts.
* Prompt shift: two runs of the same extraction (the IR weight tensors are checked to be identical),
  one certified on ``certify_prompts`` (``builtin:default``), one on the shifted set (``builtin:stress``);
  per block the all-prompt MAE, cov_act and cov_loss of each and whether each certifies under the policy.

``results.json`` (written atomically) is :func:`to_json` of the returned result; :func:`load_results`
reads it back into the same attrs objects.

Why this module is long: one function per table of the paper (2-5, and the prompt shift), each beside
the record it fills, sharing one runner; a table's code and its record are read together.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import cattrs
import numpy as np

from blockcert import __version__
from blockcert.artifacts.digest import canonical_json, file_sha256
from blockcert.artifacts.fsutil import atomic_write_text
from blockcert.artifacts.layout import BlockPaths
from blockcert.derive import Derivation, from_options
from blockcert.errors import UserError
from blockcert.metrics import BlockMetrics, Policy, certified
from blockcert.pipeline.promptsets import load_prompts
from blockcert.spec import parse_blocks

if TYPE_CHECKING:
    from blockcert.model.load import LoadedModel
    from blockcert.pipeline.certify import BlockResult, RunResult

RESULTS = "results.json"
RESULTS_SCHEMA_VERSION = 2  # v2: Tables 1 and 6, bootstrap intervals, all-prompt columns in Tables 2-3
RUNS_DIR = "runs"
OUT_ROOT = Path("blockcert-experiments")

DEFAULT_BLOCKS = (0, 5, 10, 15, 20)
DEFAULT_RANKS = (16, 32, 64)
DEFAULT_SURROGATES = ("int8",)
DEFAULT_ABLATIONS = ("drop-rope", "invert-mask", "zero-wv", "noise-wq:sigma=0.01")
DEFAULT_LEVELS = (0.90, 0.94, 0.97)
DEFAULT_SIZES = (1, 4, 10)
DEFAULT_CERTIFY_PROMPTS = "builtin:default"
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95

#: the paper's numbers, shown beside ours: Table 1 (Llama-2-7B: mean cov_act, mean extraction error) and
#: Table 6 (TinyLlama: ε_i, K_attn, K_MLP (auto-LiRPA, ball of radius 1), L_block = (1 + K_attn) K_MLP)
PAPER_TABLE1 = {0: (0.924, 4.70e-3), 5: (0.968, 2.75e-2), 10: (1.000, 4.38e-2), 15: (1.000, 4.82e-2), 20: (1.000, 5.83e-2)}
PAPER_TABLE6 = {0: (2.0e-3, 5.7e2, 1.1e3, 6.0e5), 5: (6.6e-3, 1.5e2, 1.3e3, 2.1e5), 10: (1.1e-2, 1.2e2, 1.5e3, 1.8e5),
                15: (2.4e-2, 1.0e2, 1.6e3, 1.6e5), 20: (4.1e-2, 2.6e2, 1.9e3, 4.9e5)}


# -- inputs --------------------------------------------------------------------------------------------


@attrs.frozen
class Settings:
    """What every experiment shares. ``prompts`` is the evaluation set (the paper's ten stress prompts);
    the prompt shift certifies on another set and re-measures on this one."""

    model: str | None = None  # a local HF directory, a .gguf file or a registered name; None: the default model
    blocks: str | tuple[int, ...] = DEFAULT_BLOCKS  # "all", "0,5,10", "0-4" or indices
    dtype: str = "bfloat16"  # native precision; the IR replays in float32 whatever this is
    prompts: str = "builtin:stress"
    policy: Policy = attrs.field(factory=Policy)
    batch_size: int = 8
    force: bool = False  # redo every run instead of reusing a finished one
    device: str = "cpu"  # where the model and the replay run (--device)


# -- results -------------------------------------------------------------------------------------------


@attrs.frozen
class Setup:
    """The model and configuration the numbers were measured on."""

    model: str
    arch: str
    weights_sha256: str
    dtype: str
    blocks: tuple[int, ...]
    policy: Policy


@attrs.frozen
class RunInfo:
    """One ``blockcert run`` an experiment used."""

    path: str  # relative to the experiment's output directory
    prompts: str
    kind: str  # "extraction", "surrogate" or "ablation"
    spec: str | None  # the surrogate or ablation as requested; None for the plain extraction
    n_prompts: int
    tokens: int
    reused: bool  # every block came from an earlier invocation


@attrs.frozen
class Interval:
    """A mean over prompts and its bootstrap confidence interval (``low`` <= ``mean`` <= ``high`` up to resampling)."""

    mean: float
    low: float
    high: float
    n: int  # the prompts (or prompt-block cells) the mean is over


def bootstrap(values: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, level: float = BOOTSTRAP_LEVEL,
              seed: int = 0) -> Interval:
    """The mean of ``values`` with a percentile bootstrap interval: ``resamples`` means of resamples drawn with
    replacement (numpy's default generator seeded with ``seed``: the same numbers every time), their
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. One value: the interval is that value."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("a mean over no values")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean=mean, low=mean, high=mean, n=1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(mean=mean, low=float(min(low, mean)), high=float(max(high, mean)), n=int(x.size))


@attrs.frozen
class ExtractionBlock:
    """A row of Table 1: one block's extraction over every prompt."""

    block: int
    n_prompts: int
    cov_act: Interval  # the mean over prompts of each prompt's cov_act
    mae: Interval  # the mean over prompts of each prompt's MAE
    min_cov_act: float
    cov_loss: Interval
    epsilon: float  # the worst per-token error
    certified: bool


@attrs.frozen
class ExtractionTable:
    """Table 1: the extraction, per block (the paper's Llama-2-7B table, on this model)."""

    schema_version: int
    experiment: str
    setup: Setup
    prompts: str
    runs: tuple[RunInfo, ...]
    blocks: tuple[ExtractionBlock, ...]


@attrs.frozen
class LipschitzBlock:
    """A row of Table 6 (``None``: no finite bound; ``bounds_note`` says why)."""

    block: int
    epsilon: float  # the worst per-token error
    epsilon_seq: float  # the sequence-level residual Theorem 1 uses
    K_attn: float | None
    K_mlp: float | None  # analytic, on the norm region
    K_mlp_local: float | None  # on balls of radius ``radius`` around the traced inputs (the paper's auto-LiRPA quantity)
    analytic_upper_bound: float | None
    hybrid_upper_bound: float | None  # L_block
    radius: float
    bounds_note: str


@attrs.frozen
class LipschitzTable:
    """Table 6: per-block Lipschitz quantities from the extraction's bounds.json."""

    schema_version: int
    experiment: str
    setup: Setup
    prompts: str
    runs: tuple[RunInfo, ...]
    blocks: tuple[LipschitzBlock, ...]


@attrs.frozen
class AllPromptMeans:
    """A Table 2/3 row over every prompt of every block (bootstrap intervals over the prompt-block cells)."""

    cov_act: Interval
    mae: Interval
    cov_loss: Interval
    error_ratio: float | None  # mae.mean / the baseline row's


@attrs.frozen
class BestPromptBlock:
    """One block of a Table 2/3 row, on the block's baseline best prompt."""

    block: int
    prompt: int  # index in the prompt set
    cov_act: float
    mae: float
    cov_path: float
    cov_loss: float


@attrs.frozen
class DerivedRow:
    """A row of Table 2 or 3: means over blocks of the best-prompt values."""

    label: str
    kind: str
    spec: str | None
    run: str
    cov_act: float
    mae: float
    error_ratio: float | None  # mae / the baseline row's mae; None if the baseline's is 0
    cov_path: float
    cov_loss: float
    blocks: tuple[BestPromptBlock, ...]
    all_prompts: AllPromptMeans


@attrs.frozen
class DerivedTable:
    """Table 2 (surrogates) or Table 3 (ablations); ``rows[0]`` is the baseline (the extraction itself)."""

    schema_version: int
    experiment: str
    setup: Setup
    prompts: str
    runs: tuple[RunInfo, ...]
    rows: tuple[DerivedRow, ...]

    def row(self, label: str) -> DerivedRow:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(label)


@attrs.frozen
class ThresholdBlock:
    block: int
    n_prompts: int
    passing: tuple[int, ...]  # per level: prompts with cov_act >= level and cov_loss >= loss_level
    tau_act_needed: float  # the smallest tau_act under which the block's cov_act (all prompts) reaches alpha_act


@attrs.frozen
class ThresholdTable:
    """Table 4: threshold sensitivity of the baseline run."""

    schema_version: int
    experiment: str
    setup: Setup
    prompts: str
    runs: tuple[RunInfo, ...]
    levels: tuple[float, ...]
    loss_level: float
    blocks: tuple[ThresholdBlock, ...]


@attrs.frozen
class PromptSizeBlock:
    block: int
    min_cov_act: tuple[float, ...]  # per size k: min per-prompt cov_act over the first k prompts


@attrs.frozen
class PromptSizeTable:
    """Table 5: prompt-set size sensitivity of the baseline run."""

    schema_version: int
    experiment: str
    setup: Setup
    prompts: str
    runs: tuple[RunInfo, ...]
    sizes: tuple[int, ...]
    blocks: tuple[PromptSizeBlock, ...]


@attrs.frozen
class ShiftSide:
    """A block's metrics over every prompt of one prompt set."""

    mae: float
    cov_act: float
    cov_loss: float
    certified: bool  # cov_act >= alpha_act and cov_loss >= alpha_loss


@attrs.frozen
class ShiftBlock:
    block: int
    certify: ShiftSide
    shifted: ShiftSide
    same_extraction: bool  # the two runs' IRs hold identical weights (their mask/RoPE tables agree where both exist)


@attrs.frozen
class PromptShiftTable:
    """Prompt shift (section 6.7): certify on one prompt set, re-measure the same extraction on another."""

    schema_version: int
    experiment: str
    setup: Setup
    certify_prompts: str
    shifted_prompts: str
    runs: tuple[RunInfo, ...]
    blocks: tuple[ShiftBlock, ...]


@attrs.frozen
class AllResults:
    """Every experiment, sharing runs where their configurations coincide."""

    schema_version: int
    experiment: str
    setup: Setup
    runs: tuple[RunInfo, ...]
    table1: ExtractionTable
    table6: LipschitzTable
    table2: DerivedTable
    table3: DerivedTable
    table4: ThresholdTable
    table5: PromptSizeTable
    prompt_shift: PromptShiftTable


Result = ExtractionTable | LipschitzTable | DerivedTable | ThresholdTable | PromptSizeTable | PromptShiftTable | AllResults
_TYPES: dict[str, type] = {"table1": ExtractionTable, "table6": LipschitzTable, "table2": DerivedTable, "table3": DerivedTable, "table4": ThresholdTable,
                           "table5": PromptSizeTable, "prompt-shift": PromptShiftTable, "all": AllResults}

_converter = cattrs.Converter(forbid_extra_keys=True)


def to_json(result: Result) -> dict[str, Any]:
    """The plain-JSON form of a result (what ``results.json`` holds)."""
    return _converter.unstructure(result)


def from_json(data: dict[str, Any]) -> Result:
    """The result object back from :func:`to_json`'s form."""
    name = data.get("experiment") if isinstance(data, dict) else None
    if name not in _TYPES:
        raise UserError(f"not a BlockCert experiment result (experiment {name!r})")
    if data.get("schema_version") != RESULTS_SCHEMA_VERSION:
        raise UserError(f"experiment results schema {data.get('schema_version')!r} is not supported (expected {RESULTS_SCHEMA_VERSION})",
                        "run the experiment again with the same --out: its finished runs are reused, only results.json is rebuilt")
    try:
        return _converter.structure(data, _TYPES[name])
    except cattrs.BaseValidationError as exc:
        raise UserError(f"malformed experiment results: {'; '.join(cattrs.transform_error(exc, path='results'))}") from None
    except (ValueError, TypeError) as exc:
        raise UserError(f"malformed experiment results: {exc}") from None


def load_results(path: str | Path) -> Result:
    """Read an experiment's ``results.json`` (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    return from_json(data)


# -- runs ----------------------------------------------------------------------------------------------


@attrs.frozen
class _Need:
    """A run an experiment needs: the extraction (``derivation=None``) or a derivation of it, on a prompt set."""

    prompts: str
    derivation: Derivation | None = None
    bounds: bool = False  # the run computes bounds.json (Table 6)

    @property
    def kind(self) -> str:
        return "extraction" if self.derivation is None else self.derivation.kind

    @property
    def spec(self) -> str | None:
        return None if self.derivation is None else self.derivation.text


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in ".+" else "" if c == "=" else "-" for c in text)
    return "-".join(filter(None, out.split("-")))


def prompt_label(prompts: str) -> str:
    """``builtin:stress`` -> ``stress``; a prompt file -> its stem."""
    return prompts.removeprefix("builtin:") if prompts.startswith("builtin:") else Path(prompts).stem


class _Session:
    """One loaded model, one output directory, and the runs made (or reused) so far."""

    def __init__(self, settings: Settings, out: Path, needs: Sequence[_Need], loaded: LoadedModel | None, progress: bool) -> None:
        from rich.console import Console

        self.settings, self.out, self.progress = settings, out, progress
        self.console = Console(stderr=True, quiet=not progress)
        self.texts = {n.prompts: load_prompts(n.prompts) for n in needs}  # a bad prompt set fails before the model loads
        parse_blocks(settings.blocks, 10**6)  # malformed --blocks fails before the model loads, too
        if loaded is None:
            from blockcert.model.load import load_model

            with self.console.status("Loading model"):
                loaded = load_model(settings.model, dtype=settings.dtype, device=settings.device)
        self.loaded = loaded
        self.blocks = tuple(parse_blocks(settings.blocks, loaded.native.n_blocks))
        self._check_derivations(needs)
        from blockcert import interpreter
        from blockcert.pipeline.trace import prompts_sha256

        self._identity = {
            "model": loaded.name, "weights_sha256": loaded.weights_sha256(), "dtype": loaded.dtype,
            "policy": attrs.asdict(settings.policy), "tool": __version__,
            "interpreter_sha256": file_sha256(interpreter.__file__),
        }
        self._prompts_sha256 = {p: prompts_sha256(t) for p, t in self.texts.items()}
        self._plan = list(dict.fromkeys(needs))
        self._done: dict[_Need, tuple[RunInfo, RunResult]] = {}

    def _check_derivations(self, needs: Sequence[_Need]) -> None:
        """An unknown surrogate or ablation, or one that does not apply to this model, fails before any run."""
        from blockcert import derive
        from blockcert.plugins import get_plugins

        derivations = list(dict.fromkeys(n.derivation for n in needs if n.derivation is not None))
        if derivations:
            base = get_plugins().to_ir(self.loaded.native, self.blocks[0], 8)
            for d in derivations:
                derive.apply(d, base)

    @property
    def setup(self) -> Setup:
        return Setup(model=self.loaded.name, arch=self.loaded.arch, weights_sha256=self.loaded.weights_sha256(),
                     dtype=self.loaded.dtype, blocks=self.blocks, policy=self.settings.policy)

    def path(self, need: _Need) -> Path:
        """``runs/<what>-<prompts>-<dtype>-<digest>``: the digest covers everything ``--resume`` checks."""
        ident = {**self._identity, "prompts": need.prompts, "prompts_sha256": self._prompts_sha256[need.prompts],
                 "derivation": None if need.derivation is None else need.derivation.manifest(),
                 **({"bounds": True} if need.bounds else {})}  # (absent when off: earlier runs keep their directories)
        digest = hashlib.sha256(canonical_json(ident)).hexdigest()[:8]
        what = "baseline" if need.derivation is None else _slug(need.derivation.text)
        return self.out / RUNS_DIR / f"{what}-{_slug(prompt_label(need.prompts))}-{self.loaded.dtype}-{digest}"

    def get(self, need: _Need) -> tuple[RunInfo, RunResult]:
        """The run for ``need``: made now, resumed, or reused from disk or from earlier in this session. A run with
        bounds serves a need for the same run without them (the bounds change no other number)."""
        with_bounds = attrs.evolve(need, bounds=True)
        if not need.bounds and (with_bounds in self._plan or with_bounds in self._done or self.path(with_bounds).is_dir()):
            need = with_bounds
        if need in self._done:
            return self._done[need]
        from blockcert.pipeline.certify import run

        where = self.path(need)
        step = self._plan.index(need) + 1 if need in self._plan else len(self._plan)
        what = "extraction" if need.derivation is None else f"{need.kind} {need.spec}"
        self.console.print(f"[{step}/{len(self._plan)}] {what} on {need.prompts} → {where}", highlight=False, soft_wrap=True)
        s = self.settings
        result = run(loaded=self.loaded, prompts=need.prompts, blocks=list(self.blocks), policy=s.policy, out=where,
                     resume=not s.force, force=s.force, batch_size=s.batch_size, progress=self.progress,
                     surrogate=need.spec if need.kind == "surrogate" else None,
                     ablate=need.spec if need.kind == "ablation" else None, bounds=need.bounds)
        info = RunInfo(path=where.relative_to(self.out).as_posix(), prompts=need.prompts, kind=need.kind, spec=need.spec,
                       n_prompts=result.n_prompts, tokens=result.tokens, reused=all(b.resumed for b in result.blocks))
        if info.reused:
            self.console.print("      reused: every block was already finished", style="dim", highlight=False, soft_wrap=True)
        self._done[need] = (info, result)
        return info, result

    def runs(self) -> tuple[RunInfo, ...]:
        return tuple(info for info, _ in self._done.values())


def _per_token(run_dir: Path, block: int) -> dict[str, np.ndarray]:
    """A block's per-token arrays (``p<k>.error``, ``.path_match``, ...) from the run's errors.safetensors."""
    from safetensors.numpy import load_file


    return load_file(run_dir / BlockPaths(block).errors)


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))


def _blocks_by_index(result: RunResult) -> dict[int, BlockResult]:
    return {b.index: b for b in result.blocks}


# -- Tables 2 and 3 ------------------------------------------------------------------------------------


def _derived_needs(settings: Settings, derivations: Sequence[Derivation]) -> list[_Need]:
    return [_Need(settings.prompts), *(_Need(settings.prompts, d) for d in derivations)]


def _derived_table(session: _Session, name: str, derivations: Sequence[Derivation], labels: Sequence[str]) -> DerivedTable:
    prompts = session.settings.prompts
    base_info, base = session.get(_Need(prompts))
    best = {b.index: b.metrics.best_prompt for b in base.blocks}
    rows: list[DerivedRow] = []
    runs = [base_info]
    for label, need in zip(["Baseline (extraction)", *labels], [_Need(prompts), *(_Need(prompts, d) for d in derivations)]):
        info, result = session.get(need)
        if need.derivation is not None:
            runs.append(info)
        by_index = _blocks_by_index(result)
        cells = []
        for index in session.blocks:
            m, k = by_index[index].metrics, best[index]
            path = _per_token(session.out / info.path, index)[f"p{k:03d}.path_match"]
            cells.append(BestPromptBlock(block=index, prompt=k, cov_act=m.per_prompt_cov_act[k], mae=m.per_prompt_mae[k],
                                         cov_path=float(np.mean(path)), cov_loss=m.per_prompt_cov_loss[k]))
        mae = _mean([c.mae for c in cells])
        base_mae = rows[0].mae if rows else mae
        every = [by_index[i].metrics for i in session.blocks]  # all prompts of all blocks: the cells resampled
        all_mae = bootstrap([v for m in every for v in m.per_prompt_mae])
        base_all = rows[0].all_prompts.mae.mean if rows else all_mae.mean
        means = AllPromptMeans(cov_act=bootstrap([v for m in every for v in m.per_prompt_cov_act]), mae=all_mae,
                               cov_loss=bootstrap([v for m in every for v in m.per_prompt_cov_loss]),
                               error_ratio=all_mae.mean / base_all if base_all > 0 else None)
        rows.append(DerivedRow(label=label, kind=need.kind, spec=need.spec, run=info.path,
                               cov_act=_mean([c.cov_act for c in cells]), mae=mae,
                               error_ratio=mae / base_mae if base_mae > 0 else None,
                               cov_path=_mean([c.cov_path for c in cells]), cov_loss=_mean([c.cov_loss for c in cells]),
                               blocks=tuple(cells), all_prompts=means))
    return DerivedTable(schema_version=RESULTS_SCHEMA_VERSION, experiment=name, setup=session.setup, prompts=prompts,
                        runs=tuple(runs), rows=tuple(rows))


def _table2_derivations(ranks: Sequence[int], surrogates: Sequence[str]) -> tuple[list[Derivation], list[str]]:
    ranks = list(ranks)
    if any(not isinstance(r, int) or isinstance(r, bool) or r < 1 for r in ranks):
        raise UserError(f"--ranks {','.join(map(str, ranks))}: every rank must be an integer >= 1")
    specs = [*(f"lowrank:r={r}" for r in ranks), *surrogates]
    if len(set(specs)) != len(specs):
        raise UserError(f"table2: a surrogate is listed twice ({', '.join(specs)})")
    derivations = [_derivation(s, "surrogate") for s in specs]
    labels = [*(f"lowrank r={r}" for r in ranks), *surrogates]
    return derivations, labels


def _table3_derivations(ablations: Sequence[str]) -> tuple[list[Derivation], list[str]]:
    if len(set(ablations)) != len(ablations):
        raise UserError(f"table3: an ablation is listed twice ({', '.join(ablations)})")
    return [_derivation(a, "ablation") for a in ablations], list(ablations)


def _derivation(spec: str, kind: str) -> Derivation:
    d = from_options(spec, None) if kind == "surrogate" else from_options(None, spec)
    assert d is not None
    return d


# -- Tables 1 and 6 ------------------------------------------------------------------------------------


def _table1(session: _Session) -> ExtractionTable:
    info, result = session.get(_Need(session.settings.prompts))
    rows = []
    for b in result.blocks:
        m = b.metrics
        rows.append(ExtractionBlock(block=b.index, n_prompts=result.n_prompts, cov_act=bootstrap(m.per_prompt_cov_act),
                                    mae=bootstrap(m.per_prompt_mae), min_cov_act=float(min(m.per_prompt_cov_act)),
                                    cov_loss=bootstrap(m.per_prompt_cov_loss), epsilon=float(m.epsilon),
                                    certified=b.certified))
    return ExtractionTable(schema_version=RESULTS_SCHEMA_VERSION, experiment="table1", setup=session.setup,
                           prompts=session.settings.prompts, runs=(info,), blocks=tuple(rows))


def _table6(session: _Session) -> LipschitzTable:
    info, result = session.get(_Need(session.settings.prompts, bounds=True))
    rows = []
    for b in result.blocks:
        record = json.loads((session.out / info.path / BlockPaths(b.index).bounds).read_text(encoding="utf-8"))
        up, regions = record["certified"]["upper"], record["certified"]["regions"]
        note = regions["hybrid_upper_bound"] if up["hybrid_upper_bound"] is None else ""
        rows.append(LipschitzBlock(block=b.index, epsilon=float(b.metrics.epsilon), epsilon_seq=float(record["epsilon_seq"]),
                                   K_attn=up["K_attn"], K_mlp=up["K_mlp"], K_mlp_local=up["K_mlp_local"],
                                   analytic_upper_bound=up["analytic_upper_bound"], hybrid_upper_bound=up["hybrid_upper_bound"],
                                   radius=float(record["settings"]["radius"]), bounds_note=note))
    return LipschitzTable(schema_version=RESULTS_SCHEMA_VERSION, experiment="table6", setup=session.setup,
                          prompts=session.settings.prompts, runs=(info,), blocks=tuple(rows))


# -- Tables 4 and 5 ------------------------------------------------------------------------------------


def _check_levels(levels: Sequence[float], loss_level: float | None) -> None:
    for value in (*levels, *(() if loss_level is None else (loss_level,))):
        if not 0 <= value <= 1:
            raise UserError(f"coverage levels must lie in [0, 1], got {value}")
    if not levels:
        raise UserError("--levels: give at least one coverage level")


def _tau_needed(errors: np.ndarray, alpha: float) -> float:
    """The smallest tau with mean(errors <= tau) >= alpha (counted exactly as cov_act counts)."""
    e = np.sort(errors)
    covered = np.searchsorted(e, e, side="right") / e.size  # cov_act at tau = e[i]
    return float(e[int(np.argmax(covered >= alpha))])


def _table4(session: _Session, levels: Sequence[float], loss_level: float | None) -> ThresholdTable:
    loss_level = session.settings.policy.alpha_loss if loss_level is None else loss_level
    info, result = session.get(_Need(session.settings.prompts))
    rows = []
    for b in result.blocks:
        m = b.metrics
        passing = tuple(sum(1 for a, l in zip(m.per_prompt_cov_act, m.per_prompt_cov_loss) if a >= level and l >= loss_level)
                        for level in levels)
        tokens = _per_token(session.out / info.path, b.index)
        errors = np.concatenate([tokens[f"p{k:03d}.error"] for k in range(result.n_prompts)])
        rows.append(ThresholdBlock(block=b.index, n_prompts=result.n_prompts, passing=passing,
                                   tau_act_needed=_tau_needed(errors, session.settings.policy.alpha_act)))
    return ThresholdTable(schema_version=RESULTS_SCHEMA_VERSION, experiment="table4", setup=session.setup,
                          prompts=session.settings.prompts, runs=(info,), levels=tuple(levels), loss_level=loss_level,
                          blocks=tuple(rows))


def _check_sizes(sizes: Sequence[int], n_prompts: int, prompts: str) -> None:
    if not sizes:
        raise UserError("--sizes: give at least one prompt-set size")
    bad = [k for k in sizes if not 1 <= k <= n_prompts]
    if bad:
        raise UserError(f"--sizes {','.join(map(str, sizes))}: {prompts} has {n_prompts} prompts, so every size must be 1-{n_prompts}")


def _table5(session: _Session, sizes: Sequence[int]) -> PromptSizeTable:
    info, result = session.get(_Need(session.settings.prompts))
    rows = tuple(PromptSizeBlock(block=b.index, min_cov_act=tuple(min(b.metrics.per_prompt_cov_act[:k]) for k in sizes))
                 for b in result.blocks)
    return PromptSizeTable(schema_version=RESULTS_SCHEMA_VERSION, experiment="table5", setup=session.setup,
                           prompts=session.settings.prompts, runs=(info,), sizes=tuple(sizes), blocks=rows)


# -- prompt shift --------------------------------------------------------------------------------------


def _same_extraction(a: Path, b: Path) -> bool:
    """Identical IR tensors, except that the mask and RoPE tables may cover different lengths (the
    longest prompt of each set): those must agree on the positions both cover."""
    from blockcert.ir import load_ir, to_dict

    meta_a, ta = to_dict(load_ir(a))
    meta_b, tb = to_dict(load_ir(b))
    if sorted(ta) != sorted(tb) or meta_a.get("source") != meta_b.get("source"):
        return False
    for name in ta:
        x, y = ta[name], tb[name]
        if x.dtype != y.dtype or x.ndim != y.ndim:
            return False
        if x.shape != y.shape:
            common = tuple(slice(0, min(p, q)) for p, q in zip(x.shape, y.shape))
            x, y = x[common], y[common]
        if x.tobytes() != y.tobytes():
            return False
    return True


def _check_shift(certify_prompts: str, shifted_prompts: str) -> None:
    if certify_prompts == shifted_prompts:
        raise UserError(f"prompt-shift: the certification set and the shifted set are both {certify_prompts}",
                        "pass two different prompt sets (--certify-prompts and --prompts)")


def _side(metrics: BlockMetrics, policy: Policy) -> ShiftSide:
    return ShiftSide(mae=metrics.mae, cov_act=metrics.cov_act, cov_loss=metrics.cov_loss,
                     certified=certified(metrics.cov_act, metrics.cov_loss, policy))


def _prompt_shift(session: _Session, certify_prompts: str) -> PromptShiftTable:
    from blockcert.artifacts.layout import block_dir

    shifted_prompts = session.settings.prompts
    a_info, a = session.get(_Need(certify_prompts))
    b_info, b = session.get(_Need(shifted_prompts))
    a_blocks, b_blocks = _blocks_by_index(a), _blocks_by_index(b)
    policy = session.settings.policy
    rows = tuple(
        ShiftBlock(block=i, certify=_side(a_blocks[i].metrics, policy), shifted=_side(b_blocks[i].metrics, policy),
                   same_extraction=_same_extraction(session.out / a_info.path / block_dir(i) / "ir",
                                                    session.out / b_info.path / block_dir(i) / "ir"))
        for i in session.blocks
    )
    return PromptShiftTable(schema_version=RESULTS_SCHEMA_VERSION, experiment="prompt-shift", setup=session.setup,
                            certify_prompts=certify_prompts, shifted_prompts=shifted_prompts, runs=(a_info, b_info), blocks=rows)


# -- public API ----------------------------------------------------------------------------------------

T = TypeVar("T")


def _experiment(name: str, settings: Settings, out: str | Path | None, needs: Sequence[_Need], loaded: LoadedModel | None, progress: bool,
                build: Callable[[_Session], T]) -> T:
    root = Path(out) if out is not None else OUT_ROOT / name
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} exists and is not a directory")
    session = _Session(settings, root, needs, loaded, progress)
    result = build(session)
    atomic_write_text(root / RESULTS, json.dumps(to_json(result), indent=2) + "\n")  # type: ignore[arg-type]
    return result


def table1(settings: Settings = Settings(), out: str | Path | None = None, *, loaded: LoadedModel | None = None,
           progress: bool = False) -> ExtractionTable:
    """Table 1: per block, the mean over prompts of cov_act and MAE (bootstrap intervals), min cov_act, cov_loss, ε."""
    return _experiment("table1", settings, out, [_Need(settings.prompts)], loaded, progress, _table1)


def table6(settings: Settings = Settings(), out: str | Path | None = None, *, loaded: LoadedModel | None = None,
           progress: bool = False) -> LipschitzTable:
    """Table 6: per block, ε and the Lipschitz bounds of the extraction (its run is made with ``bounds=True``)."""
    return _experiment("table6", settings, out, [_Need(settings.prompts, bounds=True)], loaded, progress, _table6)


def table2(settings: Settings = Settings(), out: str | Path | None = None, *, ranks: Sequence[int] = DEFAULT_RANKS,
           surrogates: Sequence[str] = DEFAULT_SURROGATES, loaded: LoadedModel | None = None, progress: bool = False) -> DerivedTable:
    """Table 2: the extraction vs rank-r truncated-SVD attention (``lowrank:r=R``) and ``surrogates`` (int8).

    ``loaded`` (a :class:`~blockcert.model.load.LoadedModel`) replaces loading ``settings.model`` in ``settings.dtype``.
    """
    derivations, labels = _table2_derivations(ranks, surrogates)
    return _experiment("table2", settings, out, _derived_needs(settings, derivations), loaded, progress,
                       lambda s: _derived_table(s, "table2", derivations, labels))


def table3(settings: Settings = Settings(), out: str | Path | None = None, *, ablations: Sequence[str] = DEFAULT_ABLATIONS,
           loaded: LoadedModel | None = None, progress: bool = False) -> DerivedTable:
    """Table 3: the extraction vs deliberately broken IRs (drop RoPE, invert the mask, zero W_V, noise on W_Q)."""
    derivations, labels = _table3_derivations(ablations)
    return _experiment("table3", settings, out, _derived_needs(settings, derivations), loaded, progress,
                       lambda s: _derived_table(s, "table3", derivations, labels))


def table4(settings: Settings = Settings(), out: str | Path | None = None, *, levels: Sequence[float] = DEFAULT_LEVELS,
           loss_level: float | None = None, loaded: LoadedModel | None = None, progress: bool = False) -> ThresholdTable:
    """Table 4: per block, prompts whose cov_act >= each level with cov_loss >= ``loss_level`` (default alpha_loss)."""
    _check_levels(levels, loss_level)
    return _experiment("table4", settings, out, [_Need(settings.prompts)], loaded, progress,
                       lambda s: _table4(s, levels, loss_level))


def table5(settings: Settings = Settings(), out: str | Path | None = None, *, sizes: Sequence[int] = DEFAULT_SIZES,
           loaded: LoadedModel | None = None, progress: bool = False) -> PromptSizeTable:
    """Table 5: per block, the minimum per-prompt cov_act over the first k prompts, for each k in ``sizes``."""
    _check_sizes(sizes, len(load_prompts(settings.prompts)), settings.prompts)
    return _experiment("table5", settings, out, [_Need(settings.prompts)], loaded, progress, lambda s: _table5(s, sizes))


def prompt_shift(settings: Settings = Settings(), out: str | Path | None = None, *,
                 certify_prompts: str = DEFAULT_CERTIFY_PROMPTS, loaded: LoadedModel | None = None, progress: bool = False) -> PromptShiftTable:
    """Prompt shift: certify on ``certify_prompts``, re-measure the same extraction on ``settings.prompts``."""
    _check_shift(certify_prompts, settings.prompts)
    needs = [_Need(certify_prompts), _Need(settings.prompts)]
    return _experiment("prompt-shift", settings, out, needs, loaded, progress, lambda s: _prompt_shift(s, certify_prompts))


def run_all(settings: Settings = Settings(), out: str | Path | None = None, *, ranks: Sequence[int] = DEFAULT_RANKS,
            surrogates: Sequence[str] = DEFAULT_SURROGATES, ablations: Sequence[str] = DEFAULT_ABLATIONS,
            levels: Sequence[float] = DEFAULT_LEVELS, loss_level: float | None = None, sizes: Sequence[int] = DEFAULT_SIZES,
            certify_prompts: str = DEFAULT_CERTIFY_PROMPTS, loaded: LoadedModel | None = None, progress: bool = False) -> AllResults:
    """Every experiment on one model, each run made once (the baseline stress run, with bounds, serves Tables 1-6)."""
    d2, l2 = _table2_derivations(ranks, surrogates)
    d3, l3 = _table3_derivations(ablations)
    _check_levels(levels, loss_level)
    _check_sizes(sizes, len(load_prompts(settings.prompts)), settings.prompts)
    _check_shift(certify_prompts, settings.prompts)
    needs = [_Need(settings.prompts, bounds=True), *_derived_needs(settings, d2), *_derived_needs(settings, d3), _Need(certify_prompts)]

    def build(s: _Session) -> AllResults:
        tables = {"table1": _table1(s), "table6": _table6(s), "table2": _derived_table(s, "table2", d2, l2), "table3": _derived_table(s, "table3", d3, l3),
                  "table4": _table4(s, levels, loss_level), "table5": _table5(s, sizes),
                  "prompt_shift": _prompt_shift(s, certify_prompts)}
        return AllResults(schema_version=RESULTS_SCHEMA_VERSION, experiment="all", setup=s.setup, runs=s.runs(), **tables)

    return _experiment("all", settings, out, needs, loaded, progress, build)
