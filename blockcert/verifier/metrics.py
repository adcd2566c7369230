"""A block certificate's numbers, re-derived by the verifier with its own arithmetic.

Two stages, each claiming exactly what it checks (docs/verification.md, "Threat model"):

* :func:`check_stored` (every level, ``hashes`` included): the trace and per-token files have the shapes,
  dtypes and finite values the certificate implies, and every claimed metric and the verdict follow
  exactly from the stored per-token arrays (e, e/||x||, path matches, token losses). The metric formulas
  are written out here again, independently of :mod:`blockcert.metrics`; a verdict must hold under the
  verifier's own policy.
* :func:`check_recomputed` (``replay``/``full``): per-token errors recomputed by replaying the IR must
  match the stored ones within a band tied to that token (:class:`Tolerances`), and the claimed metrics
  must lie in the interval the recomputed errors allow. The verifier's verdict comes from its own numbers;
  a token within rounding of τ counts either way, so coverage is bounded from both sides.

No torch is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from blockcert.verifier.checks import Checker, short

#: unit roundoff of each dtype a model may run in (half the gap between 1 and the next number)
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
#: a trace file's tensors and their safetensors dtypes
TRACE_DTYPES = {"input_ids": "I64", "residual": "F32", "masks": "BOOL", "head_gates": "BOOL", "loss": "F32"}
#: errors.safetensors holds, per prompt p, ``p<ppp>.<kind>`` of these dtypes
ERROR_DTYPES = {"error": "F64", "rel_error": "F64", "path_match": "BOOL", "loss_stitched": "F32"}
#: the per-token floors a noise-floor certificate adds to errors.safetensors
FLOOR_DTYPES = {"floor_act": "F64", "floor_loss": "F64"}
LOSS_KINDS = ("loss_stitched", "floor_loss")  # one value per target token (T - 1), not per token
#: two float64 reductions of the same numbers in another order differ by a few ulps: the only slack between
#: a stored per-token array and the metric claimed from it
SUM_RTOL = 1e-12


@attrs.frozen
class Tolerances:
    """Every tolerance the verifier uses, each tied to the quantity it protects (docs/verification.md).

    None is scaled by a maximum over data: a band belongs to one token and is sized by that token's own
    norm, in units of the rounding of the arithmetic that computed it.

    * ``replay_units``: a per-token error e(p,t) recomputed by replaying the IR may differ from the stored
      one by ``replay_units * u32 * ||x_t|| + abs`` (u32 = 2^-24: the replay is float32, or float64 in the
      numpy reference, whatever the model's dtype; ``||x_t||`` the larger of the token's input and output
      norms). Metrics built from e (ε, MAE, relative errors) inherit the bands of the tokens they come from.
    * ``trace_units``, ``trace_tau_fraction``: at ``--level full`` every stored residual vector must equal
      the re-captured one within ``min(trace_units * u(model dtype) * ||x_t||, trace_tau_fraction * τ_act)``,
      with ``||x_t||`` from the re-captured (model-derived) stream.
    * ``loss_abs``: at ``--level full`` a stored token loss (baseline or stitched) may differ from the
      re-computed one by this many nats (τ_loss / 5 under the default policy).
    * ``tokens``: tokens whose path match may flip (default 0).
    """

    replay_units: float = attrs.field(default=64.0, converter=float)
    abs: float = attrs.field(default=1e-9, converter=float)
    trace_units: float = attrs.field(default=128.0, converter=float)
    trace_tau_fraction: float = attrs.field(default=0.125, converter=float)
    loss_abs: float = attrs.field(default=2e-4, converter=float)
    tokens: int = 0

    @classmethod
    def for_reference(cls, reference: str) -> Tolerances:
        """The defaults: 64 units for the torch reference, 128 for numpy float64 (benchmarks/verify_tolerances.py
        measured on SmolLM2 at most 3 units between torch replays with 1 and 2 threads, and 28 units between
        torch float32 and numpy float64: the producer's own float32 rounding, which float64 does not share).
        At level full the numpy reference compares float32 traces with its float64 ones: 512 trace units
        (129 measured on SmolLM2's stress prompts, at x^(10); the rounding of a float32 stack, not of one block)."""
        return cls(replay_units=128.0, trace_units=512.0) if reference == "numpy" else cls()

    def replay_band(self, norms: np.ndarray) -> np.ndarray:
        """[T] per-token band on a recomputed e(p,t) (float64)."""
        return self.abs + self.replay_units * UNIT_ROUNDOFF["float32"] * np.asarray(norms, np.float64)

    def trace_band(self, norms: np.ndarray, dtype: str, tau_act: float) -> np.ndarray:
        """[T] per-token band on ||x_stored - x_recaptured|| at level full (torch reference: the verdict then
        widens by the stored-vs-model gap, so that gap is capped at a fraction of τ_act)."""
        return np.minimum(self.trace_noise(norms, dtype), self.trace_tau_fraction * tau_act)

    def trace_noise(self, norms: np.ndarray, dtype: str) -> np.ndarray:
        """[T] the rounding a model running in ``dtype`` may leave in a residual vector of norm ``norms``
        (model-derived norms only): ``trace_units * u(dtype) * ||x_t|| + abs``."""
        u = UNIT_ROUNDOFF.get(dtype, UNIT_ROUNDOFF["bfloat16"])
        return self.abs + self.trace_units * u * np.asarray(norms, np.float64)

    def describe(self, reference: str = "torch") -> str:
        traces = (f"±{self.trace_units:g}·u(dtype)·‖x_t‖" if reference == "numpy" else
                  f"±min({self.trace_units:g}·u(dtype)·‖x_t‖, {self.trace_tau_fraction:g}·τ_act)")
        return (f"replay ±({self.replay_units:g}·u32·‖x_t‖ + {self.abs:g}) per token; stored traces {traces}; "
                f"token losses ±{self.loss_abs:g} nats; {self.tokens} path token(s)")


def norms(x: np.ndarray) -> np.ndarray:
    """[T, d] -> [T]: Euclidean norm of each token's vector, in float64."""
    x = np.asarray(x, np.float64)
    return np.sqrt(np.einsum("td,td->t", x, x))


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[T, d], [T, d] -> [T]: ||a_t - b_t|| in float64 (the paper's e(p,t) when a is the replay)."""
    return norms(np.asarray(a, np.float64) - np.asarray(b, np.float64))


# ---------------------------------------------------------------------------------------------------
# Artifact shapes (every level)
# ---------------------------------------------------------------------------------------------------


def check_trace(c: Checker, name: str, memo: dict[str, Any], tokens: int, L: int, d: int) -> dict[str, np.ndarray]:
    """A trace file holds exactly the five tensors, of the dtypes and shapes its index entry and the model imply."""
    t, dtypes = memo["tensors"], memo["dtypes"]
    want = {"input_ids": [tokens], "residual": [L + 1, tokens, d], "masks": [L, tokens, tokens], "loss": [tokens - 1]}
    bad = sorted(set(t) ^ set(TRACE_DTYPES))
    c.require(f"trace tensors {name}", not bad, ", ".join(sorted(TRACE_DTYPES)), ", ".join(sorted(t)), f"{name}: unexpected or missing {bad}")
    for key, code in TRACE_DTYPES.items():
        shape_ok = list(t[key].shape) == want[key] if key in want else t[key].ndim == 2 and t[key].shape[0] == L
        c.require(f"trace {key} {name}", dtypes[key] == code and shape_ok, f"{code} {want.get(key, f'[{L}, H]')}",
                  f"{dtypes[key]} {list(t[key].shape)}")
    ids = t["input_ids"]
    c.require(f"trace input_ids {name}", bool(np.all(ids >= 0)), "token ids >= 0", str(int(ids.min())) if ids.size else "")
    return t


def check_errors_file(c: Checker, name: str, memo: dict[str, Any], entries: Sequence[dict[str, Any]],
                      floors: bool = False) -> dict[str, np.ndarray]:
    """errors.safetensors: one array of each kind per prompt (the floors too under noise-floor), of its dtype and
    length; errors and floors >= 0."""
    t, dtypes = memo["tensors"], memo["dtypes"]
    kinds = {**ERROR_DTYPES, **FLOOR_DTYPES} if floors else ERROR_DTYPES
    expected = {f"p{e['index']:03d}.{kind}" for e in entries for kind in kinds}
    c.require(f"{name} tensors", set(t) == expected, f"{len(expected)} named arrays", ", ".join(sorted(set(t) ^ expected))[:80])
    for e in entries:
        n = e["tokens"]
        for kind, code in kinds.items():
            key = f"p{e['index']:03d}.{kind}"
            length = n - 1 if kind in LOSS_KINDS else n
            c.require(f"{name} {key}", dtypes[key] == code and list(t[key].shape) == [length], f"{code} [{length}]",
                      f"{dtypes[key]} {list(t[key].shape)}")
        for kind in ("error", "rel_error", *(FLOOR_DTYPES if floors else ())):
            key = f"p{e['index']:03d}.{kind}"
            c.require(f"{name} {key} >= 0", bool(np.all(t[key] >= 0)), ">= 0", f"{float(t[key].min()):.6g}" if t[key].size else "")
    return t


# ---------------------------------------------------------------------------------------------------
# The metrics, written out again (eq. 3-10 of the paper)
# ---------------------------------------------------------------------------------------------------


def thresholds(rule: Any, out_norms: Sequence[np.ndarray], loss_sizes: Sequence[int], floor_act: Sequence[np.ndarray] | None,
               floor_loss: Sequence[np.ndarray] | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per prompt: up to which error each token counts as covered, and up to which loss change each target token
    counts as unaffected, under ``rule`` (a policy: a dict or the verifier's own record). paper: τ_act and τ_loss;
    relative: τ_act·||x^(l+1)_t|| and τ_loss; noise-floor: k × the token's floors."""
    rule = rule if isinstance(rule, dict) else attrs.asdict(rule)
    name = rule["name"]
    if name == "noise-floor":
        if floor_act is None or floor_loss is None:
            raise ValueError("a noise-floor policy needs the floors")
        k = float(rule["k"])
        return [k * np.asarray(f, np.float64) for f in floor_act], [k * np.asarray(f, np.float64) for f in floor_loss]
    tau_act, tau_loss = float(rule["tau_act"]), float(rule["tau_loss"])
    if name == "relative":
        act = [tau_act * np.asarray(n, np.float64) for n in out_norms]
    else:
        act = [np.full(np.shape(n), tau_act) for n in out_norms]
    return act, [np.full(n, tau_loss) for n in loss_sizes]


def loss_share(base: np.ndarray, stitched: np.ndarray, tau_loss: Any, band: Any = 0.0, weight_band: float = 0.0) -> tuple[float, float]:
    """cov_loss bounds (lo, hi): the share of the baseline loss on tokens whose loss moves by at most τ_loss (a
    number or one per token).
    A token within ``band`` (a number or one per token) of τ_loss counts as uncovered for lo and as covered
    for hi; each baseline loss, the token's weight, is known to ±``weight_band``. 1 if the loss is 0."""
    base = np.asarray(base, np.float64)
    delta = np.abs(np.asarray(stitched, np.float64) - base)
    surely, maybe = delta + band <= tau_loss, delta - band <= tau_loss
    if weight_band == 0.0:
        total = float(base.sum())
        return (1.0, 1.0) if total == 0.0 else (float(base[surely].sum() / total), float(base[maybe].sum() / total))
    low, high = np.maximum(base - weight_band, 0.0), base + weight_band

    def share(covered: np.ndarray, w_in: np.ndarray, w_out: np.ndarray) -> float:
        num, den = float(w_in[covered].sum()), float(w_in[covered].sum() + w_out[~covered].sum())
        return num / den if den > 0 else 1.0

    return share(surely, low, high), share(maybe, high, low)


@attrs.frozen
class Intervals:
    """What per-token errors known up to ±band imply for each claimed number: (lo, hi) per metric."""

    epsilon: tuple[float, float]
    mae: tuple[float, float]
    rel_max: tuple[float, float]
    rel_mean: tuple[float, float]
    cov_act: tuple[float, float]
    per_prompt_cov_act: tuple[tuple[float, float], ...]
    per_prompt_mae: tuple[tuple[float, float], ...]

    @classmethod
    def of(cls, errors: Sequence[np.ndarray], bands: Sequence[np.ndarray], out_norms: Sequence[np.ndarray],
           limits: Sequence[np.ndarray]) -> Intervals:
        """``limits``: per prompt, the error up to which each token counts as covered (:func:`thresholds`)."""
        e, b, n, tau_act = (np.concatenate([np.asarray(a, np.float64) for a in arrays]) for arrays in (errors, bands, out_norms, limits))
        lo, hi = np.maximum(e - b, 0.0), e + b
        rlo, rhi = (np.divide(v, n, out=np.zeros_like(v), where=n > 0) for v in (lo, hi))
        return cls(
            epsilon=(float(lo.max()), float(hi.max())), mae=(float(lo.mean()), float(hi.mean())),
            rel_max=(float(rlo.max()), float(rhi.max())), rel_mean=(float(rlo.mean()), float(rhi.mean())),
            cov_act=(float(np.mean(hi <= tau_act)), float(np.mean(lo <= tau_act))),
            per_prompt_cov_act=tuple((float(np.mean(x + y <= t)), float(np.mean(np.maximum(x - y, 0) <= t)))
                                     for x, y, t in zip(errors, bands, limits)),
            per_prompt_mae=tuple((float(np.mean(np.maximum(x - y, 0))), float(np.mean(x + y))) for x, y in zip(errors, bands)),
        )


def within(value: float, interval: tuple[float, float], slack: float = 0.0) -> bool:
    lo, hi = interval
    pad = SUM_RTOL * max(1.0, abs(lo), abs(hi)) + slack
    return lo - pad <= value <= hi + pad


def best_prompt_ok(best: Any, iv: Intervals) -> bool:
    """The best prompt is an argmax (highest cov_act, then lowest MAE, then lowest index). Accept the claimed
    one unless another prompt beats it for every value the bands allow."""
    n = len(iv.per_prompt_cov_act)
    if not (isinstance(best, int) and not isinstance(best, bool) and 0 <= best < n):
        return False
    cov, mae = iv.per_prompt_cov_act, iv.per_prompt_mae
    for q in range(n):
        if q == best:
            continue
        if cov[q][0] > cov[best][1]:  # q has surely more coverage
            return False
        surely_tied = cov[q][0] == cov[q][1] == cov[best][0] == cov[best][1]
        if surely_tied and (mae[q][1] < mae[best][0] or (mae[q] == mae[best] and mae[q][0] == mae[q][1] and q < best)):
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# Stage 1: the claims follow from the stored per-token arrays (every level)
# ---------------------------------------------------------------------------------------------------


def stored_floors(stored: dict[str, np.ndarray], keys: Sequence[str]) -> tuple[list[np.ndarray] | None, list[np.ndarray] | None]:
    """The per-prompt floors of a noise-floor certificate's errors.safetensors (None, None for another policy)."""
    if not keys or f"{keys[0]}.floor_act" not in stored:
        return None, None
    return ([np.asarray(stored[f"{k}.floor_act"], np.float64) for k in keys],
            [np.asarray(stored[f"{k}.floor_loss"], np.float64) for k in keys])


def check_stored(c: Checker, pred: dict[str, Any], record: dict[str, Any], entries: Sequence[dict[str, Any]],
                 traces: Sequence[dict[str, np.ndarray]], stored: dict[str, np.ndarray], policy: Any) -> None:
    """Every claimed metric, per-prompt list and the verdict, from errors.safetensors and the traces."""
    ell = pred["block"]["index"]
    keys = [f"p{e['index']:03d}" for e in entries]
    errors = [np.asarray(stored[f"{k}.error"], np.float64) for k in keys]
    rel = [np.asarray(stored[f"{k}.rel_error"], np.float64) for k in keys]
    paths = [np.asarray(stored[f"{k}.path_match"], bool) for k in keys]
    base = [np.asarray(t["loss"], np.float64) for t in traces]
    stitched = [np.asarray(stored[f"{k}.loss_stitched"], np.float64) for k in keys]
    for k, e, r, t in zip(keys, errors, rel, traces):
        n = norms(t["residual"][ell + 1])
        want = np.divide(e, n, out=np.zeros_like(e), where=n > 0)
        c.require(f"stored {k}.rel_error = error / ||x||", bool(np.all(np.abs(r - want) <= SUM_RTOL * np.maximum(want, 1e-300))),
                  "e / ||x^(l+1)||", "differs", "errors.safetensors: relative errors are not the errors over the stored output norms")
    floor_act, floor_loss = stored_floors(stored, keys)
    out_norms = [norms(t["residual"][ell + 1]) for t in traces]
    act_thr, loss_thr = thresholds(pred["policy"], out_norms, [b.size for b in base], floor_act, floor_loss)
    tau_act, tau_loss = np.concatenate(act_thr), np.concatenate(loss_thr)
    e_all, r_all, p_all = np.concatenate(errors), np.concatenate(rel), np.concatenate(paths)
    mine = {
        "epsilon": float(e_all.max()), "mae": float(e_all.mean()), "rel_max": float(r_all.max()), "rel_mean": float(r_all.mean()),
        "cov_act": float(np.mean(e_all <= tau_act)), "cov_path": float(np.mean(p_all)),
        "cov_loss": loss_share(np.concatenate(base), np.concatenate(stitched), tau_loss)[0],
        "tokens": int(e_all.size), "loss_tokens": int(sum(b.size for b in base)),
    }
    per_cov = [float(np.mean(e <= t)) for e, t in zip(errors, act_thr)]
    per_mae = [float(e.mean()) for e in errors]
    mine["best_prompt"] = min(range(len(errors)), key=lambda p: (-per_cov[p], per_mae[p], p))
    per = {"per_prompt_cov_act": per_cov, "per_prompt_mae": per_mae,
           "per_prompt_cov_loss": [loss_share(b, s, t)[0] for b, s, t in zip(base, stitched, loss_thr)]}
    claimed = pred["metrics"]
    for key, value in mine.items():
        ok = claimed[key] == value if isinstance(value, int) else abs(claimed[key] - value) <= SUM_RTOL * max(1.0, abs(value))
        c.record(f"metric {key} from the stored per-token values", ok, claimed[key], value,
                 "" if ok else f"the certificate's {key} does not follow from errors.safetensors and the traces")
    for key, values in per.items():
        got = record["metrics"][key]
        ok = isinstance(got, list) and len(got) == len(values) and all(
            isinstance(g, (int, float)) and not isinstance(g, bool) and abs(g - v) <= SUM_RTOL * max(1.0, abs(v)) for g, v in zip(got, values))
        c.record(f"{key} from the stored per-token values", ok, short(got), short(values))
    verdict = pred["verdict"]
    cert_ok = (claimed["cov_act"] >= pred["policy"]["alpha_act"], claimed["cov_loss"] >= pred["policy"]["alpha_loss"])
    consistent = verdict["cov_act_ok"] == cert_ok[0] and verdict["cov_loss_ok"] == cert_ok[1] and verdict["certified"] == all(cert_ok)
    c.record("verdict consistent with its metrics", consistent, short(verdict),
             f"cov_act={claimed['cov_act']:.6g}, cov_loss={claimed['cov_loss']:.6g}",
             "" if consistent else "the claimed verdict does not follow from the claimed metrics under the certificate's policy")
    # under the verifier's own policy, from the stored values (its tau or k may be stricter than the certificate's)
    our_act, our_loss = thresholds(policy, out_norms, [b.size for b in base], floor_act, floor_loss)
    ours_act = float(np.mean(e_all <= np.concatenate(our_act)))
    ours_loss = loss_share(np.concatenate(base), np.concatenate(stitched), np.concatenate(our_loss))[0]
    holds = ours_act >= policy.alpha_act and ours_loss >= policy.alpha_loss
    c.record("verdict under the verifier's policy (stored values)", holds or not verdict["certified"], verdict["certified"], holds,
             "" if holds or not verdict["certified"] else
             f"claims certified but cov_act={ours_act:.6g}, cov_loss={ours_loss:.6g} fail the verifier's policy")


# ---------------------------------------------------------------------------------------------------
# Stage 2: the stored per-token values follow from the IR (replay) and from the model (full)
# ---------------------------------------------------------------------------------------------------


@attrs.define
class Recomputed:
    """Per prompt: the verifier's own e(p,t), its band, output norms, path matches and token losses."""

    errors: list[np.ndarray]
    bands: list[np.ndarray]
    out_norms: list[np.ndarray]
    paths: list[np.ndarray]
    base: list[np.ndarray]
    stitched: list[np.ndarray]
    loss_band: float  # how far each baseline token loss may sit from the truth (0: the stored ones are the inputs)
    #: per prompt, how far each stitched token loss may sit from the producer's (None: ``loss_band`` each)
    stitched_bands: list[np.ndarray] | None = None
    #: per prompt, the noise-floor policy's floors (stored at level replay, the model's own at level full)
    floor_act: list[np.ndarray] | None = None
    floor_loss: list[np.ndarray] | None = None

    def limits(self, rule: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per prompt: the act and loss thresholds of ``rule`` on these values (:func:`thresholds`)."""
        return thresholds(rule, self.out_norms, [np.size(b) for b in self.base], self.floor_act, self.floor_loss)

    def decision_bands(self) -> list[np.ndarray]:
        """Per prompt: how far |l_stitched - l_base| may sit from the producer's, per token."""
        if self.stitched_bands is None:
            return [np.full(np.shape(b), 2 * self.loss_band) for b in self.base]
        return [self.loss_band + np.asarray(s, np.float64) for s in self.stitched_bands]


def trace_problems(k: int, mine: Any, theirs: dict[str, np.ndarray], band_of: Any, loss_abs: float) -> list[tuple[str, str, str, str]]:
    """What stored trace file ``k`` gets wrong against the reference model's own trace of the prompt, as
    (check, claimed, actual, detail): the token ids exactly (nothing else is compared token by token when they
    differ), the attention patterns and head activity exactly, each residual vector within ``band_of(norms)``
    of the model's per token (the first layer that is off), each baseline token loss within ``loss_abs``."""
    where = f"traces/prompt_{k:03d}.safetensors"
    out = []
    ids = theirs["input_ids"]
    if ids.dtype != np.int64 or ids.shape != mine.input_ids.shape or not np.array_equal(ids, mine.input_ids):
        n = min(ids.size, mine.input_ids.size)
        first = next((t for t in range(n) if ids[t] != mine.input_ids[t]), n)
        return [(f"input_ids prompt {k}", f"{ids.size} ids", f"{mine.input_ids.size} ids",
                 f"{where}: token ids differ from the tokenizer's at position {first}")]
    for name in ("masks", "head_gates"):
        if not np.array_equal(np.asarray(theirs[name], bool), getattr(mine, name)):
            out.append((f"re-captured {name} prompt {k}", "stored", "observed", f"{where}: {name} differ from what the model applied"))
    res_s, res_m = theirs["residual"], mine.residual
    for layer in range(res_m.shape[0]):
        gap = distances(res_s[layer], res_m[layer])
        band = band_of(norms(res_m[layer]))
        off = np.flatnonzero(gap > band)
        if off.size:
            t = int(off[0])
            out.append((f"re-captured residual prompt {k}", f"x^({layer}) token {t}", f"|Δ| {gap[t]:.3g} > band {band[t]:.3g}",
                        f"{where}: the stored residual x^({layer}) differs from the model's at {off.size} token(s)"))
            break
    loss_gap = np.abs(np.asarray(theirs["loss"], np.float64) - np.asarray(mine.loss, np.float64))
    if loss_gap.size and float(loss_gap.max()) > loss_abs:
        out.append((f"re-computed baseline losses prompt {k}", "stored", f"max |Δ| {float(loss_gap.max()):.3g}",
                    f"{where}: baseline token losses differ from the model's by more than {loss_abs:g} nats"))
    return out


def record_trace_problems(c: Checker, k: int, problems: list[tuple[str, str, str, str]], source: str) -> None:
    """Report what :func:`trace_problems` found for prompt ``k``; a bad trace stops the certificate's checks."""
    for name, claimed, actual, detail in problems:
        c.record(name, False, claimed, actual, detail)
    if problems:
        c.require(f"re-captured trace prompt {k}", False, detail=f"traces/prompt_{k:03d}.safetensors is not what the model gives")
    c.record(f"re-captured trace prompt {k}", True, "ids, masks, gates, residuals, losses", f"as {source} gives")


def check_token_errors(c: Checker, where: str, prompt: int, stored: np.ndarray, mine: np.ndarray, band: np.ndarray) -> None:
    off = np.flatnonzero(np.abs(np.asarray(stored, np.float64) - mine) > band)
    if off.size:
        t = int(off[0])
        c.require(f"stored p{prompt:03d}.error", False, f"{float(stored[t]):.6g}", f"{float(mine[t]):.6g}",
                  f"{where}: per-token error of prompt {prompt} token {t} is not what the IR replay gives "
                  f"(|Δ| {abs(float(stored[t]) - float(mine[t])):.3g} > band {float(band[t]):.3g}; {off.size} token(s) off)")
    c.record(f"stored p{prompt:03d}.error", True, "replay", f"{stored.size} tokens within their bands")


def check_recomputed(c: Checker, pred: dict[str, Any], record: dict[str, Any], r: Recomputed, policy: Any, tol: Tolerances) -> bool | None:
    """The claimed metrics lie in the intervals the verifier's own per-token values allow; returns the
    verifier's verdict under its own policy (None when rounding leaves it undecided: then a claimed
    verdict either way is accepted, and the report says so)."""
    claimed = pred["metrics"]
    act_thr, loss_thr = r.limits(pred["policy"])
    tau_loss = np.concatenate(loss_thr)
    iv = Intervals.of(r.errors, r.bands, r.out_norms, act_thr)
    n_tokens = sum(e.size for e in r.errors)
    slack = tol.tokens / n_tokens
    for key in ("epsilon", "mae", "rel_max", "rel_mean"):
        c.record(f"metric {key}", within(claimed[key], getattr(iv, key)), claimed[key], "%.6g..%.6g" % getattr(iv, key))
    c.record("metric cov_act", within(claimed["cov_act"], iv.cov_act, slack), claimed["cov_act"], "%.6g..%.6g" % iv.cov_act)
    paths = np.concatenate(r.paths)
    c.record("metric cov_path", abs(claimed["cov_path"] - float(np.mean(paths))) * n_tokens <= tol.tokens + 1e-9, claimed["cov_path"],
             float(np.mean(paths)))
    base, stitched = np.concatenate(r.base), np.concatenate(r.stitched)
    decision = r.decision_bands()
    cov_loss = loss_share(base, stitched, tau_loss, np.concatenate(decision), r.loss_band)
    c.record("metric cov_loss", within(claimed["cov_loss"], cov_loss), claimed["cov_loss"], "%.6g..%.6g" % cov_loss)
    c.record("metric tokens", claimed["tokens"] == n_tokens and pred["prompts"]["tokens"] == n_tokens, claimed["tokens"], n_tokens)
    c.record("metric loss_tokens", claimed["loss_tokens"] == base.size, claimed["loss_tokens"], base.size)
    pm = record["metrics"]
    c.record("per_prompt_cov_act", len(pm["per_prompt_cov_act"]) == len(r.errors) and all(
        within(v, i, tol.tokens / e.size) for v, i, e in zip(pm["per_prompt_cov_act"], iv.per_prompt_cov_act, r.errors)),
        short(pm["per_prompt_cov_act"]), short([list(i) for i in iv.per_prompt_cov_act]))
    c.record("per_prompt_mae", len(pm["per_prompt_mae"]) == len(r.errors) and all(
        within(v, i) for v, i in zip(pm["per_prompt_mae"], iv.per_prompt_mae)), short(pm["per_prompt_mae"]),
        short([list(i) for i in iv.per_prompt_mae]))
    per_loss = [loss_share(b, s, t, d, r.loss_band) for b, s, t, d in zip(r.base, r.stitched, loss_thr, decision)]
    c.record("per_prompt_cov_loss", len(pm["per_prompt_cov_loss"]) == len(per_loss) and all(
        within(v, i) for v, i in zip(pm["per_prompt_cov_loss"], per_loss)), short(pm["per_prompt_cov_loss"]), short([list(i) for i in per_loss]))
    c.record("metric best_prompt", best_prompt_ok(claimed["best_prompt"], iv), claimed["best_prompt"], "an argmax within rounding")
    # the verdict under the verifier's own policy, from its own numbers, bounded from both sides
    our_act, our_loss = r.limits(policy)
    ours = Intervals.of(r.errors, r.bands, r.out_norms, our_act).cov_act
    ours_loss = loss_share(base, stitched, np.concatenate(our_loss), np.concatenate(decision), r.loss_band)
    surely = ours[0] >= policy.alpha_act and ours_loss[0] >= policy.alpha_loss
    maybe = ours[1] >= policy.alpha_act and ours_loss[1] >= policy.alpha_loss
    verdict = surely if surely == maybe else None
    claims = pred["verdict"]["certified"]
    detail = ""
    if claims and not maybe:
        detail = "claims certified but the recomputed metrics fail the verifier's policy"
    elif verdict is None:
        detail = (f"within rounding of the thresholds (cov_act {ours[0]:.6g}..{ours[1]:.6g}, cov_loss {ours_loss[0]:.6g}.."
                  f"{ours_loss[1]:.6g}): the claimed verdict is accepted either way")
    c.record("verdict", maybe or not claims, claims, "undecided" if verdict is None else verdict, detail)
    return verdict
