"""``verify --level full --reference numpy``: every number re-derived with the float64 numpy model of
:mod:`blockcert.verifier.reference.model`, no torch and no producer code.

* The traces: token ids from the model's ``tokenizer.json`` (the ``tokenizers`` library), the residual
  stream, attention masks, head activity and baseline token losses from the numpy forward. A stored
  residual may differ from it by the rounding of the model's own dtype (``Tolerances.trace_noise``, sized by
  the model-derived norm); a stored loss by ``loss_abs``.
* The verdict rests on the numpy model's trace only: each token's error is the float64 one, and its band is
  the rounding the producer's float32 replay and its traces may carry (model-derived norms), never a gap
  the stored files could widen.
* The stitched token losses (block ℓ replaced by its IR, then the native suffix and head in float64).
* A full-model certificate: the chain of stitched IRs from x^(0), each layer's MAE and max, both
  perplexities and every probe answer (a greedy token counts as the same answer when its logit is within
  ``PROBE_TIE`` of the best one: float32 and float64 may break a near-tie differently).
* An edit certificate (``mlp-scale`` or a directional edit): ε_edit and the final-state deviation per prompt. The completions are not
  regenerated here (greedy decoding over 48 steps in float64 numpy is slow and may break float32
  near-ties): ``--reference torch`` regenerates them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from blockcert.artifacts.safeio import read_safetensors, strict_json
from blockcert.errors import UserError
from blockcert.interpreter import replay
from blockcert.ir import BlockIR, from_dict
from blockcert.model.paths import hf_directory
from blockcert.prompts import probe_items
from blockcert.verifier.metrics import UNIT_ROUNDOFF, Tolerances, distances, norms, record_trace_problems, trace_problems, within
from blockcert.verifier.reference.model import Edit, Model

#: a re-run token loss further than ``loss_abs`` from the stored one is allowed this many times the distance
#: between the float64 loss and the float32 shadow's (two float32 computations in different orders each sit
#: about that far from the float64 value)
SHADOW_FACTOR = 4.0
#: float32 shadow runs behind one such estimate (see :meth:`FullCheck._shadow_spread`)
SHADOWS = 3
#: a probe answer (greedy next token) is accepted when its logit is within this of the best one
PROBE_TIE = 1e-3
#: relative band of a re-measured edit deviation (as the torch reference), plus the dtype's rounding of the norms
DEVIATION_RTOL = 1e-4


class Trace(NamedTuple):
    input_ids: np.ndarray  # [T] int64
    residual: np.ndarray  # [L+1, T, d] float64
    masks: np.ndarray  # [L, T, T] bool
    head_gates: np.ndarray  # [L, H] bool
    loss: np.ndarray  # [T-1] float64


def replay_one(ir: BlockIR, x_in: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output [T, d], mask [T, T], head activity [H]) of the IR on x^(l), in float64."""
    out = replay(ir, np.asarray(x_in, np.float64)[None])
    return out.output[0], np.asarray(out.mask[0], bool), np.asarray(out.head_active, bool)


def _clean_up(text: str) -> str:
    """The tokenization-space clean-up a Hugging Face tokenizer applies on decode when its config asks."""
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"),
                 (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


class FullCheck:
    """Opens the model once (numpy), compares the stored traces with its own, re-runs what the certificates claim."""

    def __init__(self, root: Path, model: str | None, tol: Tolerances, stream: bool = False, loaded: Any = None,
                 device: str = "cpu") -> None:  # ``device``: the numpy reference always runs on the CPU
        self.root, self.model_spec, self.tol = root, model, tol
        self.model: Model | None = None
        self.dtype = "float32"
        self.traces: list[Trace] | None = None
        self._shadow: Model | None = None
        self._stored_in: list[np.ndarray] = []
        self._problems: dict[int, list[tuple[str, str, str, str]]] = {}

    # -- the model ------------------------------------------------------------------------------------
    def _model(self, pred: dict[str, Any], c: Any) -> Model:
        if self.model is None:
            name, directory = hf_directory(self.model_spec if self.model_spec is not None else pred["model"]["name"])
            self.model = Model(directory)
            self.spec_name = name
        digest = self.model.weights_sha256(pred["model"]["dtype"])
        c.require("model weights digest", digest == pred["model"]["weights_sha256"], pred["model"]["weights_sha256"][:16], digest[:16],
                  f"{self.spec_name} is not the certified model")
        c.require("model blocks", self.model.n_blocks == pred["model"]["n_blocks"], pred["model"]["n_blocks"], self.model.n_blocks)
        self.dtype = pred["model"]["dtype"]
        return self.model

    def _tokenize(self, text: str) -> np.ndarray:
        assert self.model is not None
        return self.model.encode(text)

    def _trace(self, ids: np.ndarray) -> Trace:
        assert self.model is not None
        res, masks, gates = self.model.stream(ids)
        return Trace(ids, res, masks, gates, self.model.token_losses(res[-1], ids))

    # -- block certificates ---------------------------------------------------------------------------
    def recaptured(self, pred: dict[str, Any], entries: Sequence[dict[str, Any]], stored: Sequence[dict[str, np.ndarray]], c: Any,
                   tau_act: float) -> list[Trace]:
        """The numpy model's traces of the certified prompts, after checking that the stored ones are them."""
        self._model(pred, c)
        self._stored_in = [t["residual"] for t in stored]
        if self.traces is None:
            self.traces = [self._trace(self._tokenize(e["text"])) for e in entries]
        c.require("re-captured prompt count", len(self.traces) == len(stored), len(stored), len(self.traces))
        for k, (mine, theirs) in enumerate(zip(self.traces, stored)):
            if k not in self._problems:  # not capped: the verdict here never rests on the stored residuals' values
                self._problems[k] = trace_problems(k, mine, theirs, lambda n: self.tol.trace_noise(n, self.dtype), self.tol.loss_abs)
            record_trace_problems(c, k, self._problems[k], "the numpy model")
        return list(self.traces)

    def block_io(self, k: int, ell: int, stored_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block ``ell``'s input, the stored x^(l) (checked to be the model's within its rounding), and the
        model's own float64 block output from exactly that input. The producer's x^(l+1) is its float32 block
        on the same stored input, so a per-token error taken here differs from the producer's by the rounding
        of one block and one replay, not by the rounding accumulated up the stack."""
        assert self.model is not None
        x_in = np.asarray(stored_in, np.float64)
        return x_in, self.model.block(ell, x_in)[0]

    def error_band(self, stored_band: np.ndarray, e_stored: np.ndarray, e_model: np.ndarray, x_in: np.ndarray, x_out: np.ndarray) -> np.ndarray:
        """The band of a per-token error of :meth:`block_io`: the replay band (the producer's float32 replay of
        the IR and of its float32 block, against float64: at most 19 units measured on SmolLM2, 128 allowed),
        plus, for a model in half precision, ``replay_units`` units of its dtype on the output norm. Norms
        are model-derived only: the stored files cannot widen it."""
        n_in, n_out = norms(x_in), norms(x_out)
        band = self.tol.replay_band(np.maximum(n_in, n_out))
        if self.dtype != "float32":
            band = band + self.tol.replay_units * UNIT_ROUNDOFF.get(self.dtype, UNIT_ROUNDOFF["bfloat16"]) * n_out
        return band

    def floors(self, ell: int, stored_act: Any, stored_loss: Any, c: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """A noise-floor certificate's floors need the native block run in the model's own dtype (bfloat16, float16
        or float32 kernels), which a float64 numpy reference does not have: say so and stop."""
        c.require("noise-floor floors re-measured", False, "the model's own floors", "not with --reference numpy",
                  f"block_{ell:03d}: the noise-floor policy's floors are the native block's rounding in the model's dtype, "
                  "which the float64 numpy reference cannot run; verify at --level full with --reference torch")
        raise AssertionError("unreachable")  # c.require(False) stops the certificate's checks

    def stitched(self, ir: BlockIR, ell: int, stored: Sequence[np.ndarray], c: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Block ``ell`` replaced by ``ir`` on the stored x^(l) (the model's within its rounding): the float64
        suffix token losses and each one's band, every stored one within its band.

        A token's band is ``loss_abs``, or, where the float64 loss is further than that from the stored one,
        ``loss_abs + SHADOW_FACTOR x`` how far float32 shadows (:meth:`_shadow_spread`) move it: a suffix from a
        badly perturbed stream can be ill-conditioned (SmolLM2 with a rank-64 block 1: torch float32 and
        float64 differ by up to 1.5e-3 nats), and this is how much float32 rounding alone moves that token's
        loss, measured on the model, never read from the files."""
        assert self.model is not None and self.traces is not None
        losses, bands = [], []
        for k, (t, old) in enumerate(zip(self.traces, stored)):
            x_in = np.asarray(self._stored_in[k][ell], np.float64)
            new = self.model.token_losses(self.model.suffix(ell + 1, replay_one(ir, x_in)[0]), t.input_ids)
            old = np.asarray(old, np.float64)
            band = np.full(new.shape, self.tol.loss_abs)
            if new.size and float(np.abs(new - old).max()) > self.tol.loss_abs:
                band = band + SHADOW_FACTOR * self._shadow_spread(ir, x_in, ell, t.input_ids, new)
            off = np.flatnonzero(np.abs(new - old) > band)
            detail = "" if not off.size else (f"block_{ell:03d}/errors.safetensors: stitched loss of prompt {k} token {int(off[0])} is "
                                              f"{float(abs(new - old)[off[0]]):.3g} nats from the model's (band {float(band[off[0]]):.3g})")
            c.record(f"re-run suffix losses prompt {k}", not off.size, "stored l_stitched",
                     f"max |Δ| {float(np.abs(new - old).max()) if new.size else 0.0:.3g}", detail)
            losses.append(new)
            bands.append(band)
        return losses, bands

    def _shadow_spread(self, ir: BlockIR, x_in: np.ndarray, ell: int, ids: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """Per token, how far float32 rounding moves the stitched loss on this input: the largest distance from
        the float64 ``losses`` over ``SHADOWS`` float32 shadow runs, the first on x^(l) as stored, the others on
        x^(l) dithered by one unit of float32 rounding (fixed seed: the verifier's numbers are reproducible)."""
        assert self.model is not None
        if self._shadow is None:
            self._shadow = self.model.shadow()
        rng = np.random.default_rng(0)
        spread = np.zeros_like(losses)
        for k in range(SHADOWS):
            x = x_in if k == 0 else x_in * (1 + UNIT_ROUNDOFF["float32"] * rng.uniform(-1, 1, x_in.shape))
            y = replay(ir, np.asarray(x, np.float32)[None]).output[0]
            spread = np.maximum(spread, np.abs(losses - self._shadow.token_losses(self._shadow.suffix(ell + 1, y), ids)))
        return spread

    # -- full-model certificates ----------------------------------------------------------------------
    def check_full_model(self, root: Path, pred: dict[str, Any], evaluation: dict[str, Any], stored: Sequence[dict[str, np.ndarray]],
                         ir_at: Any, c: Any) -> None:
        """Re-run the stitched evaluation: the IR chain on every prompt, layer errors, perplexities, probe."""
        assert self.model is not None and self.traces is not None
        model, L = self.model, self.model.n_blocks
        chosen = set(pred["stitched_blocks"])
        m = pred["metrics"]
        xs = [np.asarray(t.residual[0], np.float64) for t in self.traces]
        probe = evaluation["probe"]
        items = probe_items()
        c.require("probe prompts = the built-in probe", [(i["prompt"], i["label"], i.get("kind", "")) for i in items]
                  == [(p["prompt"], p["label"], p["kind"]) for p in probe], f"{len(items)} prompts", f"{len(probe)} in eval.json")
        probe_ids = [model.encode(i["prompt"]) for i in items]
        px = [model.embed(a) for a in probe_ids]
        pbase = [model.embed(a) for a in probe_ids]
        errs: list[list[np.ndarray]] = [[] for _ in range(L)]
        for ell in range(L):
            ir = ir_at(ell) if ell in chosen else None

            def step(x: np.ndarray, ir: BlockIR | None = ir, i: int = ell) -> np.ndarray:
                return replay_one(ir, x)[0] if ir is not None else model.block(i, x)[0]

            xs = [step(x) for x in xs]
            px = [step(x) for x in px]
            pbase = [model.block(ell, x)[0] for x in pbase]
            errs[ell] = [distances(x, s["residual"][ell + 1]) for x, s in zip(xs, stored)]
            del ir
        # each layer's claim: the chain's per-token errors, each within (ℓ+1) replay bands + the rounding of the
        # stored (model's dtype) residual it is compared with; norms from the numpy model's own trace
        ok_mae = ok_max = True
        for ell in range(L):
            e = np.concatenate(errs[ell])
            n = np.concatenate([norms(t.residual[ell + 1]) for t in self.traces])
            b = (ell + 1) * self.tol.replay_band(n) + self.tol.trace_noise(n, self.dtype)
            ok_mae &= within(m["layer_mae"][ell], (float(np.maximum(e - b, 0).mean()), float((e + b).mean())))
            ok_max &= within(m["layer_max"][ell], (float(np.maximum(e - b, 0).max()), float((e + b).max())))
        c.record("re-run layer_mae", ok_mae, str(m["layer_mae"])[:60], str([float(np.mean(np.concatenate(e))) for e in errs])[:60])
        c.record("re-run layer_max", ok_max, str(m["layer_max"])[:60], str([float(np.max(np.concatenate(e))) for e in errs])[:60])
        # perplexities: every token loss is known to ±loss_abs, so exp(mean) to a factor exp(±loss_abs)
        base = np.concatenate([t.loss for t in self.traces])
        stitched = np.concatenate([model.token_losses(x, t.input_ids) for x, t in zip(xs, self.traces)])
        for key, losses in (("ppl_baseline", base), ("ppl_stitched", stitched)):
            mine = math.exp(float(np.mean(losses)))
            lo, hi = mine * math.exp(-self.tol.loss_abs), mine * math.exp(self.tol.loss_abs)
            c.record(f"re-run {key}", within(m[key], (lo, hi)), m[key], f"{mine:.9g} (±{self.tol.loss_abs:g} nats per token)")
        clean = bool(json.loads((model.directory / "tokenizer_config.json").read_text()).get("clean_up_tokenization_spaces", False)) \
            if (model.directory / "tokenizer_config.json").is_file() else False
        for item, claimed, xb, xs_ in zip(items, probe, pbase, px):
            for side, x in (("baseline", xb), ("stitched", xs_)):
                z = model.logits(x[-1:])[0]
                near = np.flatnonzero(z >= z.max() - PROBE_TIE)
                answers = [model.decode([int(t)]) for t in near]
                answers = [_clean_up(a) for a in answers] if clean else answers
                c.record(f"re-run probe {side} {item['prompt'][:30]!r}", claimed[side] in answers, claimed[side], " | ".join(answers)[:60])

    # -- edit certificates ----------------------------------------------------------------------------
    def remeasure_edit(self, c: Any, pred: dict[str, Any], rows: list[dict[str, Any]], metrics: dict[str, Any],
                       root: Path | None = None) -> None:
        """ε_edit and the final-state deviation of every prompt, with the edit applied in the numpy forward:
        ``mlp-scale``, or a directional edit with the edit directory's own copy of its direction."""
        model = self._model(pred, c)
        edit = _edit_of(pred["edit"]["spec"], root, model)
        texts = _prompt_texts(model, [r["prompt"] for r in rows], pred["decoding"], c)
        c.record("completions regenerated", True, "not with --reference numpy", "",
                 "greedy decoding is regenerated by --reference torch; the stored completions were re-classified at hashes")
        if metrics.get("locality") is not None:
            c.record("locality re-measured", True, "not with --reference numpy", "",
                     "--reference torch re-measures the KL divergences and losses; their arithmetic was checked at hashes")
        for entry, text in zip(metrics["per_prompt"], texts):
            ids = model.encode(text, special=False)
            res, _, _ = model.stream(ids)
            # each edited block fed the unedited stream (layers=all: block 0's input without r, as the producer's
            # pre-hook on block 0 does), and the edited model from the embedding on
            first = edit.entry(res[0])
            eps_t = max((distances(model.block(ell, first if ell == 0 else res[ell], edit.scale(ell), edit.at(ell))[0], res[ell + 1]).max()
                         for ell in edit.blocks), default=0.0)
            x = first
            for ell in range(model.n_blocks):
                x = model.block(ell, x, edit.scale(ell), edit.at(ell))[0]
            fin_t = float(distances(x, res[-1]).max())
            # the producer subtracts two float tensors of the model's dtype: each may carry its rounding
            slack_eps = max(float(np.max(2 * self.tol.trace_noise(norms(res[ell + 1]), self.dtype))) for ell in edit.blocks)
            slack_fin = float(np.max(2 * self.tol.trace_noise(norms(res[-1]), self.dtype)))
            for key, mine, slack in (("epsilon_edit", float(eps_t), slack_eps), ("final_deviation", fin_t, slack_fin)):
                band = DEVIATION_RTOL * max(abs(mine), 1e-6) + slack
                c.record(f"re-measured {entry['id']} {key}", abs(entry[key] - mine) <= band, entry[key], f"{mine:.6g} ±{band:.2g}")


def recheck_bounds(c: Any, rec: dict[str, Any], ir: BlockIR, inputs: list[np.ndarray], *, with_lower: bool) -> None:
    """Nothing beyond the independent check of :mod:`blockcert.verifier.bounds` (done for every reference): the
    empirical lower bound is an attained Jacobian norm found by autograd, which only ``--reference torch``
    re-derives; here it is held to ``lower <= certified upper`` (level hashes)."""
    if with_lower:
        c.record("empirical lower bound", True, rec["empirical_lower_bound"]["value"], "not re-derived (numpy reference)",
                 "an attained Jacobian norm needs autograd: --reference torch --level full re-derives it")


def remeasure_edit(c: Any, pred: dict[str, Any], rows: list[dict[str, Any]], metrics: dict[str, Any], model: str | None,
                   tol: Tolerances, device: str = "cpu", *, root: Path | None = None, level: str = "replay") -> None:
    """An edit certificate at level replay/full with the numpy reference (see :meth:`FullCheck.remeasure_edit`)."""
    FullCheck(Path("."), model, tol).remeasure_edit(c, pred, rows, metrics, root)


class _EditPlan:
    """Which blocks an edit changes and how, in this reference's terms (:class:`~blockcert.verifier.reference.model.Edit`)."""

    def __init__(self, blocks: Sequence[int], mlp_scale: float = 1.0, edit: Edit | None = None, embedding: np.ndarray | None = None):
        self.blocks, self._scale, self._edit, self._embedding = tuple(blocks), mlp_scale, edit, embedding

    def scale(self, ell: int) -> float:
        return self._scale if ell in self.blocks else 1.0

    def at(self, ell: int) -> Edit | None:
        return self._edit if ell in self.blocks else None

    def entry(self, x0: np.ndarray) -> np.ndarray:
        """x^(0) as block 0 receives it: without r for ``direction-ablate:layers=all``."""
        r = self._embedding
        return x0 if r is None else x0 - (x0 @ r)[:, None] * r


def _edit_of(text: str, root: Path | None, model: Model) -> _EditPlan:
    """The built-in edits this reference runs: ``mlp-scale:block=<int>,alpha=<float>``, and
    ``direction-ablate:layer=<int>|layers=all`` / ``direction-add:layer=<int>,alpha=<float>`` with
    ``direction=direction`` (the edit directory's copy, whose digest, width and norm the hashes level checked)."""
    kind, _, params = str(text).partition(":")
    values = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
    try:
        if kind == "mlp-scale":
            return _EditPlan((int(values["block"]),), float(values["alpha"]))
        if kind not in ("direction-ablate", "direction-add"):
            raise UserError(f"the numpy reference re-measures mlp-scale and direction edits only, not {kind!r}",
                            "verify with --reference torch")
        if root is None or values.get("direction") != "direction":
            raise UserError(f"edit {text!r}: the numpy reference reads the edit directory's own copy of the direction "
                            "(direction=direction)", "verify with --reference torch")
        r = read_safetensors((root / "direction" / "direction.safetensors").read_bytes(), "direction/direction.safetensors")["direction"]
        r = np.asarray(r, np.float64).reshape(-1)
        everywhere = values.get("layers") == "all"
        blocks = range(model.n_blocks) if everywhere else (int(values["layer"]),)
        if kind == "direction-ablate":
            return _EditPlan(blocks, edit=Edit(ablate=r), embedding=r if everywhere else None)
        return _EditPlan(blocks, edit=Edit(add=float(values["alpha"]) * r))
    except (KeyError, ValueError) as exc:
        raise UserError(f"malformed edit spec {text!r}", "mlp-scale:block=<int>,alpha=<float> or direction-…:layer=<int>,…") from exc


def _prompt_texts(model: Model, prompts: list[str], decoding: dict[str, Any], c: Any) -> list[str]:
    """The prompts as the edit's generation saw them: through the model's chat template when the certificate
    records one (its digest must match the template on disk)."""
    recorded = decoding.get("chat_template_sha256")
    if not decoding.get("chat_template") or recorded is None:
        return prompts
    template = _chat_template(model.directory)
    from blockcert.artifacts.digest import json_sha256

    c.require("chat template = certified", template is not None and json_sha256(template) == recorded, str(recorded)[:16],
              json_sha256(template)[:16] if template else "none on disk")
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def fail(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = fail
    tpl = env.from_string(template)
    cfg = json.loads((model.directory / "tokenizer_config.json").read_text()) if (model.directory / "tokenizer_config.json").is_file() else {}
    special = {k: cfg.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    return [tpl.render(messages=[{"role": "user", "content": p}], add_generation_prompt=True, **special) for p in prompts]


def _chat_template(directory: Path) -> str | None:
    path = directory / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    cfg = directory / "tokenizer_config.json"
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("chat_template")
        return value if isinstance(value, str) else None
    return None


def load_ir(meta: bytes, tensors: bytes, where: str) -> BlockIR:
    """An IR from the bytes of its two files (already read through their digests)."""
    arrays = read_safetensors(tensors, f"{where}.safetensors")
    return from_dict(strict_json(meta, f"{where}.json"), {k: np.array(v) for k, v in arrays.items()})
