"""``blockcert minimize``: the smallest certified mechanism of a block (docs/minimize.md).

For block l, find a small ``minimize`` surrogate (kept query heads, kept MLP hidden units, a rank per matrix;
the transform is ``blockcert_surrogates.transforms.minimize``) that still certifies under the policy, then
certify it with the ordinary pipeline (``--surrogate minimize:...``), so that ``blockcert verify`` re-derives
it from the base IR and the masks in the spec and re-measures it like any other surrogate.

The search, per block, on traces captured once (the cached prefix x^(l) of every prompt):

1. **Scores** (``attribution``): attribution patching with zero ablation. Every query head h gets a gate g_h
   on its output and every hidden unit j a gate on its row of W_down, all 1 (the base block). For each prompt
   p, one backward pass of L_p = Σ_t ℓ_p,t (the stitched model's token losses: the IR replay of block l, then
   the native suffix and head, the quantity loss coverage compares) gives ∂L_p/∂g, the first-order change of
   the prompt's loss when the component is removed (activation × gradient, summed over the prompt's tokens).
   A component's score is Σ_p |∂L_p/∂g_c|. Ranks have no score: a matrix's rank-r truncation keeps its r
   largest singular values (Eckart-Young).
2. **Binary search** on the number kept, in score order (highest first; ties broken by a permutation drawn
   from ``seed``): the smallest k whose top-k set certifies, assuming that keeping more never hurts. For
   ranks, the smallest rank of each matrix in turn (attn.q ... mlp.down), the others as found so far.
3. **Greedy refinement**: each kept head or unit, lowest score first (at most ``refine`` of each), is dropped
   if the result still certifies, since the score order is only an estimate.

Every candidate is measured by the code that certifies (:func:`blockcert.derive.apply` to build it, the
pipeline's replay, :func:`~blockcert.pipeline.staircase.suffix_losses` and
:func:`~blockcert.metrics.block_metrics`). A candidate that cannot certify on activations is rejected early:
its prompts are replayed one at a time, and once so many tokens are uncovered that cov_act < α_act even if every
remaining token were covered, it stops (its logged cov_act is that upper bound, with the prompts it replayed);
its loss suffix never runs. Every candidate and its metrics go to the search log, whose
SHA-256 is a parameter of the certified spec, so the certificate names the exact search that produced it.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from blockcert.artifacts.digest import canonical_json, json_sha256
from blockcert.errors import UserError
from blockcert.metrics import BlockMetrics, Policy, block_metrics, certified, cov_act
from blockcert.metrics import act_thresholds as _act_thresholds

BUDGETS = ("heads", "neurons", "rank", "all")
SCORE_METHODS = {
    "attribution": "attribution patching with zero ablation: per component, the sum over prompts of |dL_p/dg| at g = 1, where g "
                   "gates the component's output (a query head's output before W_O; a hidden unit's row of W_down) and L_p is "
                   "the sum of the prompt's token losses with block l replaced by its IR replay (native suffix and head)",
}
PLACEHOLDER_LOG = "0" * 64  # the log digest of a candidate during the search (it changes nothing in the IR)
SEARCH_SCHEMA_VERSION = 1


@attrs.frozen
class Candidate:
    """One point of the search space: which heads and units are kept, and each matrix's rank."""

    heads: np.ndarray = attrs.field(eq=False)  # [H] bool
    neurons: np.ndarray = attrs.field(eq=False)  # [F] bool
    rank: tuple[tuple[str, int], ...]  # (matrix, rank) in RANK_KEYS order

    def spec(self, score: str, log: str = PLACEHOLDER_LOG) -> str:
        from blockcert_surrogates.transforms import pack_mask

        ranks = "+".join(f"{k}:{r}" for k, r in self.rank)
        return f"minimize:heads={pack_mask(self.heads)},neurons={pack_mask(self.neurons)},rank={ranks},score={score},log={log}"

    def key(self) -> tuple[Any, ...]:
        return (self.heads.tobytes(), self.neurons.tobytes(), self.rank)

    def kept(self) -> dict[str, Any]:
        return {"heads": int(self.heads.sum()), "neurons": int(self.neurons.sum()), "rank": dict(self.rank)}


@attrs.frozen
class Measured:
    """A candidate's metrics (``metrics`` None: rejected on cov_act before its loss suffix ran; the replay stops at the
    first prompt after which cov_act cannot reach α_act, and ``cov_act`` is then the upper bound that decided it)."""

    cov_act: float  # exact when every prompt was replayed; else an upper bound (the rest counted as covered)
    metrics: BlockMetrics | None
    certified: bool
    seconds: float
    prompts_replayed: int


@attrs.frozen
class BlockSearch:
    """The search's outcome for one block."""

    index: int
    final: Candidate
    final_metrics: BlockMetrics | None
    certified: bool
    totals: dict[str, int]  # heads, neurons and full ranks of the base block
    log: dict[str, Any]  # the search log (written canonical; its SHA-256 goes into the spec)
    log_sha256: str
    seconds: float
    candidates: int


# ---------------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------------


def attribution_scores(loaded: Any, traces: Sequence[Any], base: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(head scores [H], unit scores [F]): Σ_p |∂L_p/∂g| at g = 1 (the module doc), float64."""
    from blockcert.interpreter import replay
    from blockcert.ir import Linear

    native = loaded.native
    n_heads, width = base.attn.n_heads, base.mlp.up.weight.shape[1]
    g_heads = torch.ones(n_heads, dtype=torch.float32, requires_grad=True)
    g_units = torch.ones(width, dtype=torch.float32, requires_grad=True)
    head_scores, unit_scores = np.zeros(n_heads), np.zeros(width)
    for t in traces:
        with attrs.validators.disabled(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.asarray on a tensor that requires grad: the graph is what we want
            gate = g_heads * torch.from_numpy(base.attn.head_gate.astype(np.float32))
            down = base.mlp.down
            weight = g_units[:, None] * torch.from_numpy(down.weight.astype(np.float32))  # [f, d], unit j's row scaled by g_j
            gated = attrs.evolve(base, attn=attrs.evolve(base.attn, head_gate=gate),
                                 mlp=attrs.evolve(base.mlp, down=Linear(weight, down.bias)))  # type: ignore[arg-type]
            x = torch.from_numpy(t.residual[index])[None].to(native.device)  # [1, T, d] float32
            y = replay(gated, x).output.to(native.dtype)  # [1, T, d]
        positions = torch.arange(x.shape[1], device=native.device)[None]
        for j in range(index + 1, native.n_blocks):
            y = native.call_block(j, y, positions)
        logits = native.head(y[0, :-1]).float()  # [T-1, V]
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(t.input_ids[1:]).to(native.device), reduction="sum")
        d_heads, d_units = torch.autograd.grad(loss, [g_heads, g_units])
        head_scores += np.abs(d_heads.double().cpu().numpy())
        unit_scores += np.abs(d_units.double().cpu().numpy())
    return head_scores, unit_scores


def score_order(scores: np.ndarray, seed: int) -> np.ndarray:
    """Component indices, highest score first; equal scores in the order of a permutation drawn from ``seed``."""
    tie = np.random.default_rng(seed).permutation(scores.size)
    return np.lexsort((tie, -scores))


# ---------------------------------------------------------------------------------------------------
# Measuring a candidate (the pipeline's own code)
# ---------------------------------------------------------------------------------------------------


@attrs.define
class Meter:
    """Measures candidates of block ``index`` on ``traces`` under ``policy``, as the pipeline certifies them."""

    loaded: Any
    traces: Sequence[Any]
    base: Any
    index: int
    policy: Policy
    batch_size: int
    score: str
    floor_act: list[np.ndarray] | None = None
    floor_loss: list[np.ndarray] | None = None
    cache: dict[tuple[Any, ...], Measured] = attrs.field(factory=dict)
    log: list[dict[str, Any]] = attrs.field(factory=list)
    phase: str = "base"

    def derive(self, c: Candidate) -> Any:
        from blockcert import derive

        return derive.apply(derive.Derivation("surrogate", c.spec(self.score)), self.base)

    def measure(self, c: Candidate) -> Measured:
        from blockcert.pipeline.certify import replay_all
        from blockcert.pipeline.staircase import suffix_losses

        hit = self.cache.get(c.key())
        if hit is not None:
            return hit
        start = time.perf_counter()
        ir = self.derive(c)
        total = sum(t.n_tokens for t in self.traces)
        outputs, errors, norms, paths, thresholds = [], [], [], [], []
        uncovered = 0
        for p, t in enumerate(self.traces):  # prompt by prompt, so that a hopeless candidate stops early
            o, e, n, q = replay_all(ir, [t], self.index, self.loaded.native.device)
            outputs += o
            errors += e
            norms += n
            paths += q
            thresholds.append(_act_thresholds(self.policy, n[0], None if self.floor_act is None else self.floor_act[p]))
            uncovered += int(np.sum(~(np.asarray(e[0], np.float64) <= thresholds[-1])))
            if (total - uncovered) / total < self.policy.alpha_act:  # cov_act < α_act even if every other token is covered
                break
        metrics = None
        if len(errors) < len(self.traces):
            act = (total - uncovered) / total  # an upper bound: the prompts not replayed counted as covered
        else:
            act = cov_act(np.concatenate([np.asarray(e, np.float64) for e in errors]), np.concatenate(thresholds))
            if act >= self.policy.alpha_act:
                stitched = suffix_losses(self.loaded, self.traces, [self.index], lambda _: outputs, self.batch_size)[self.index]
                metrics = block_metrics(errors, norms, paths, [t.loss for t in self.traces], stitched, self.policy, self.floor_act,
                                        self.floor_loss)
        replayed = len(errors)
        ok = metrics is not None and certified(metrics.cov_act, metrics.cov_loss, self.policy)
        m = Measured(act, metrics, ok, time.perf_counter() - start, replayed)
        self.cache[c.key()] = m
        self.log.append(log_entry(len(self.log), self.phase, c, m))
        return m


def log_entry(step: int, phase: str, c: Candidate, m: Measured) -> dict[str, Any]:
    from blockcert_surrogates.transforms import pack_mask

    metrics = None if m.metrics is None else {k: getattr(m.metrics, k) for k in ("cov_act", "cov_loss", "cov_path", "mae", "epsilon")}
    return {"step": step, "phase": phase, "heads": pack_mask(c.heads), "neurons": pack_mask(c.neurons), "rank": dict(c.rank),
            "kept": c.kept(), "cov_act": m.cov_act, "metrics": metrics, "certified": m.certified,
            "rejected_before_loss": m.metrics is None, "prompts_replayed": m.prompts_replayed}


# ---------------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------------


def _smallest(n: int, passes: Callable[[int], bool]) -> int:
    """The smallest k in [0, n] with ``passes(k)``, given ``passes(n)`` (binary search; assumes monotone)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _keep_top(order: np.ndarray, k: int, size: int) -> np.ndarray:
    keep = np.zeros(size, bool)
    keep[order[:k]] = True
    return keep


def search_block(meter: Meter, budget: str, *, seed: int = 0, refine: int = 16, head_scores: np.ndarray | None = None,
                 unit_scores: np.ndarray | None = None, on_candidate: Callable[[], None] | None = None) -> tuple[Candidate, Measured]:
    """Binary search then greedy refinement over ``budget`` (heads, neurons, rank or all) from the all-on candidate."""
    from blockcert_surrogates.transforms import full_ranks

    base = meter.base
    full = full_ranks(base)
    current = Candidate(np.ones(base.attn.n_heads, bool), np.ones(base.mlp.up.weight.shape[1], bool), tuple(full.items()))

    def check(c: Candidate) -> bool:
        m = meter.measure(c)
        if on_candidate is not None:
            on_candidate()
        return m.certified

    meter.phase = "base"
    if not check(current):
        return current, meter.measure(current)
    parts = ("heads", "neurons", "rank") if budget == "all" else (budget,)
    for part in parts:
        if part in ("heads", "neurons"):
            scores = head_scores if part == "heads" else unit_scores
            assert scores is not None
            order = score_order(scores, seed)

            def with_keep(keep: np.ndarray, part: str = part) -> Candidate:
                return attrs.evolve(current, **{part: keep})

            # only components the current candidate keeps are candidates for removal
            kept_order = np.array([i for i in order if getattr(current, part)[i]], dtype=np.int64)
            size = getattr(current, part).size
            meter.phase = f"{part}: binary search"
            k = _smallest(kept_order.size, lambda k: check(with_keep(_keep_top(kept_order, k, size))))
            current = with_keep(_keep_top(kept_order, k, size))
            meter.phase = f"{part}: refinement"
            for c in kept_order[:k][::-1][:refine]:  # lowest score first
                keep = getattr(current, part).copy()
                keep[c] = False
                trial = with_keep(keep)
                if check(trial):
                    current = trial
        else:
            ranks = dict(current.rank)
            for key in ranks:
                meter.phase = f"rank {key}: binary search"

                def with_rank(r: int, key: str = key) -> Candidate:
                    return attrs.evolve(current, rank=tuple((k, r if k == key else v) for k, v in ranks.items()))

                ranks[key] = _smallest(full[key], lambda r: check(with_rank(r)))
                current = with_rank(ranks[key])
    return current, meter.measure(current)




# ---------------------------------------------------------------------------------------------------
# The command: search every block, then certify each result with the ordinary pipeline
# ---------------------------------------------------------------------------------------------------

SEARCH_DIR = "search"  # <out>/search/block_<idx>.json: the search logs
RUNS_DIR = "runs"  # <out>/runs/block_<idx>/: one ordinary run directory per block (blockcert verify reads it)
HELDOUT_DIR = "heldout"  # <out>/heldout/block_<idx>/: the same surrogate certified on the held-out prompts
SUMMARY_NAME = "minimize.json"


@attrs.frozen
class MinimizeResult:
    out: Path
    model: str
    dtype: str
    budget: str
    blocks: tuple[dict[str, Any], ...]  # per block: kept counts, metrics, certified, paths, seconds

    @property
    def certified_all(self) -> bool:
        return all(b["certified"] for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SEARCH_SCHEMA_VERSION, "model": self.model, "dtype": self.dtype, "budget": self.budget,
                "blocks": list(self.blocks)}


def _metrics_record(m: BlockMetrics | None) -> dict[str, Any] | None:
    if m is None:
        return None
    return {k: getattr(m, k) for k in ("cov_act", "cov_loss", "cov_path", "mae", "epsilon", "tokens")}


def minimize(model: str | Path | None = None, *, blocks: str | Sequence[int] = "5,15", budget: str = "all",
             prompts: str = "builtin:stress", policy: Policy | None = None, dtype: str = "float32", out: str | Path = "blockcert-minimize",
             seed: int = 0, refine: int = 16, score: str = "attribution", batch_size: int = 8, loaded: Any = None,
             force: bool = False, progress: bool = False, held_out: str | None = None) -> MinimizeResult:
    """Search the smallest certified ``minimize`` surrogate of each block and certify it (see the module doc).

    Writes ``out/search/block_<idx>.json`` (the search log), ``out/runs/block_<idx>/`` (an ordinary run directory
    certifying the result: ``blockcert verify`` it) and ``out/minimize.json`` (the summary). ``held_out`` (a prompt
    set) also certifies each result, unchanged, on those prompts (``out/heldout/block_<idx>/``) and records the shift."""
    from blockcert_surrogates.transforms import full_ranks
    from rich.console import Console
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from blockcert import derive
    from blockcert.artifacts.digest import tensors_sha256
    from blockcert.artifacts.fsutil import atomic_write_bytes, atomic_write_text
    from blockcert.ir import to_dict
    from blockcert.model.load import load_model
    from blockcert.pipeline.certify import RunSettings, run
    from blockcert.pipeline.floor import act_floors, loss_floor_passes
    from blockcert.pipeline.promptsets import load_prompts
    from blockcert.pipeline.trace import capture, tokenize_prompts
    from blockcert.plugins import get_plugins
    from blockcert.spec import parse_blocks

    if budget not in BUDGETS:
        raise UserError(f"--budget {budget!r} is not a budget", f"choose one of: {', '.join(BUDGETS)}")
    if score not in SCORE_METHODS:
        raise UserError(f"--score {score!r} is not a score method", f"choose one of: {', '.join(SCORE_METHODS)}")
    if refine < 0 or batch_size < 1:
        raise UserError("--refine must be >= 0 and --batch-size >= 1")
    policy = policy or Policy()
    texts = load_prompts(prompts)
    if held_out is not None:
        load_prompts(held_out)  # a bad prompt set fails before the model loads
    loaded = loaded or load_model(model, dtype=dtype)
    chosen = parse_blocks(blocks, loaded.native.n_blocks)
    root = Path(out)
    if (root / SUMMARY_NAME).exists() and not force:
        raise UserError(f"{root / SUMMARY_NAME} exists: this directory holds a finished minimize run", "pass --force to redo it, or another --out")
    n_ctx = max(ids.size for ids in tokenize_prompts(loaded, texts))
    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), TextColumn("{task.completed} candidates"), TimeElapsedColumn(),
                   console=console, disable=not progress)
    summaries: list[dict[str, Any]] = []
    with bar:
        task = bar.add_task("Capturing traces", total=None)
        traces = capture(loaded, texts, batch_size=batch_size)
        for index in chosen:
            start = time.perf_counter()
            bar.update(task, description=f"Block {index}: scores", completed=0)
            base = get_plugins().to_ir(loaded.native, index, n_ctx)
            floor_act = floor_loss = None
            if policy.uses_floor:
                floor_act, reference = act_floors(loaded, traces, index)
                floor_loss = loss_floor_passes(loaded, traces, [index], {index: reference}, batch_size)[index]
            head_scores, unit_scores = attribution_scores(loaded, traces, base, index)
            meter = Meter(loaded, traces, base, index, policy, batch_size, score, floor_act, floor_loss)
            bar.update(task, description=f"Block {index}: search ({budget})")
            final, measured = search_block(meter, budget, seed=seed, refine=refine, head_scores=head_scores, unit_scores=unit_scores,
                                           on_candidate=lambda: bar.advance(task))
            search_seconds = time.perf_counter() - start
            log = {
                "schema_version": SEARCH_SCHEMA_VERSION, "block": index, "model": loaded.name, "dtype": loaded.dtype,
                "prompts": prompts, "base_ir_tensors_sha256": tensors_sha256(to_dict(base)[1]),
                "policy": attrs.asdict(policy), "budget": budget, "seed": seed, "refine": refine,
                "score": {"method": score, "definition": SCORE_METHODS[score],
                          "heads": [float(v) for v in head_scores], "neurons": [float(v) for v in unit_scores]},
                "candidates": meter.log, "final": log_entry(len(meter.log), "final", final, measured),
            }
            data = canonical_json(log)
            digest = json_sha256(log)
            atomic_write_bytes(root / SEARCH_DIR / f"block_{index:03d}.json", data)
            spec = final.spec(score, digest)
            bar.update(task, description=f"Block {index}: certifying")
            run_dir = root / RUNS_DIR / f"block_{index:03d}"
            result = run(loaded=loaded, settings=RunSettings(prompts=prompts, blocks=[index], policy=policy, dtype=loaded.dtype,
                                                             out=run_dir, force=True, batch_size=batch_size, surrogate=spec))
            block = result.blocks[0]
            shifted = None
            if held_out is not None:
                bar.update(task, description=f"Block {index}: held-out prompts")
                other = run(loaded=loaded, settings=RunSettings(prompts=held_out, blocks=[index], policy=policy, dtype=loaded.dtype,
                                                                out=root / HELDOUT_DIR / f"block_{index:03d}", force=True,
                                                                batch_size=batch_size, surrogate=spec)).blocks[0]
                shifted = {"prompts": held_out, "run": f"{HELDOUT_DIR}/block_{index:03d}", "certified": bool(other.certified),
                           "metrics": _metrics_record(other.metrics)}
            derived = derive.apply(derive.Derivation("surrogate", spec), base)
            summaries.append({
                "block": index, "certified": bool(block.certified), "kept": final.kept(),
                "totals": {"heads": int(base.attn.n_heads), "neurons": int(base.mlp.up.weight.shape[1]), "rank": full_ranks(base)},
                "notes": derive.notes(derived), "metrics": _metrics_record(block.metrics), "search_metrics": _metrics_record(measured.metrics),
                "candidates": len(meter.log), "search_seconds": search_seconds, "seconds": time.perf_counter() - start,
                "run": f"{RUNS_DIR}/block_{index:03d}", "search_log": f"{SEARCH_DIR}/block_{index:03d}.json", "search_log_sha256": digest,
                "held_out": shifted,
            })
    result = MinimizeResult(root, loaded.name, loaded.dtype, budget, tuple(summaries))
    atomic_write_text(root / SUMMARY_NAME, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
