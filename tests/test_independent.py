"""Metrics of non-trivial surrogates and edits, derived independently in the test with plain HF forward
passes and forward hooks (no BlockCert staircase, stitch, or deviation code), and compared with what the
producer wrote. On an exact identity IR the ideal values are also what a broken pipeline gives (a block
never swapped in has cov_loss 1 and ΔPPL 0); here the surrogates really change the model, so a pipeline
that skips the swap, or an edit measured without the edit, fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import blockcert
from blockcert.edit.certify import Decoding, certify_edit, generate, load_corpus, prompt_texts
from blockcert.edit.sweep import sweep
from blockcert.interpreter import replay
from blockcert.ir import load_ir
from blockcert.pipeline.certify import run
from blockcert.pipeline.stitch import probe_items, stitch
from test_run import make_model_dir

TAU_LOSS = 1e-3
FAST = Decoding(max_new_tokens=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, byte_tokenizer):
    path = make_model_dir(tmp_path_factory.mktemp("independent") / "model", byte_tokenizer, layers=3)
    return path, blockcert.load_model(path)


@pytest.fixture(scope="module")
def lowrank(tiny, tmp_path_factory) -> Path:
    """Every block replaced by a rank-2 surrogate (far from exact), then all of them stitched."""
    out = tmp_path_factory.mktemp("lowrank") / "run"
    run(loaded=tiny[1], prompts="builtin:default", surrogate="lowrank:r=2", out=out)
    stitch(out, loaded=tiny[1])
    return out


def _swap(model, irs: dict[int, object]) -> list:
    """Forward hooks replacing layer l's output by the IR's replay of the input it actually received."""
    handles = []
    for ell, ir in irs.items():
        def hook(module, args, kwargs, output, ir=ir):
            x = args[0] if args else kwargs["hidden_states"]
            y = replay(ir, x.float()).output.to(x.dtype)
            return (y, *output[1:]) if isinstance(output, tuple) else y

        handles.append(model.model.layers[ell].register_forward_hook(hook, with_kwargs=True))
    return handles


@torch.no_grad()
def _nll(model, ids: np.ndarray, irs: dict[int, object]) -> np.ndarray:
    """[T-1] float64: -log p(token t+1 | tokens 0..t) of one prompt, with the given layers swapped."""
    handles = _swap(model, irs)
    try:
        logits = model(torch.from_numpy(ids)[None]).logits[0].double()
    finally:
        for h in handles:
            h.remove()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return -logp.gather(-1, torch.from_numpy(ids[1:])[:, None])[:, 0].numpy()


def _prompt_ids(run_dir: Path) -> list[np.ndarray]:
    index = json.loads((run_dir / "traces/index.json").read_text())
    return [load_file(run_dir / e["file"])["input_ids"] for e in index["entries"]]


def _irs(run_dir: Path, blocks) -> dict[int, object]:
    return {ell: load_ir(run_dir / f"block_{ell:03d}" / "ir") for ell in blocks}


def test_loss_coverage_of_a_real_surrogate_matches_a_hooked_forward(tiny, lowrank):
    model = tiny[1].model
    ids = _prompt_ids(lowrank)
    base = [_nll(model, a, {}) for a in ids]
    moved = 0
    for ell in range(3):
        stored = load_file(lowrank / f"block_{ell:03d}/errors.safetensors")
        swapped = [_nll(model, a, _irs(lowrank, [ell])) for a in ids]
        for k, s in enumerate(swapped):
            assert np.abs(stored[f"p{k:03d}.loss_stitched"] - s).max() < 1e-4, (ell, k)
        b, s = np.concatenate(base), np.concatenate(swapped)
        delta = np.abs(s - b)
        moved += int(np.sum(delta > TAU_LOSS))
        lo = float(np.sum(b[delta + 2e-4 <= TAU_LOSS]) / b.sum())
        hi = float(np.sum(b[delta - 2e-4 <= TAU_LOSS]) / b.sum())
        claimed = json.loads((lowrank / f"block_{ell:03d}/certificate.json").read_bytes())["predicate"]["metrics"]["cov_loss"]
        assert lo - 1e-12 <= claimed <= hi + 1e-12, (ell, claimed, lo, hi)
    assert moved > 0  # the surrogates really move losses: a pipeline that never swaps them in cannot pass


def test_stitched_perplexity_and_probe_match_a_hooked_forward(tiny, lowrank):
    model, tok = tiny[1].model, tiny[1].tokenizer
    ids = _prompt_ids(lowrank)
    irs = _irs(lowrank, range(3))
    base = np.concatenate([_nll(model, a, {}) for a in ids])
    stitched = np.concatenate([_nll(model, a, irs) for a in ids])
    metrics = json.loads((lowrank / "full/eval.json").read_bytes())["metrics"]
    assert metrics["ppl_baseline"] == pytest.approx(math.exp(base.mean()), rel=1e-5)
    assert metrics["ppl_stitched"] == pytest.approx(math.exp(stitched.mean()), rel=1e-5)
    assert abs(metrics["ppl_stitched"] - metrics["ppl_baseline"]) > 1e-3 * metrics["ppl_baseline"]  # stitching changed it
    probe = json.loads((lowrank / "full/eval.json").read_bytes())["probe"]
    differ = 0
    for item, stored in zip(probe_items(), probe):
        a = np.asarray(tok(item["prompt"])["input_ids"], np.int64)
        answers = {}
        for side, swapped in (("baseline", {}), ("stitched", irs)):
            handles = _swap(model, swapped)
            try:
                with torch.no_grad():
                    answers[side] = tok.decode([int(model(torch.from_numpy(a)[None]).logits[0, -1].argmax())])
            finally:
                for h in handles:
                    h.remove()
        assert stored["baseline"] == answers["baseline"] and stored["stitched"] == answers["stitched"], item["prompt"]
        differ += answers["baseline"] != answers["stitched"]
    assert differ > 0  # some probe answer changes: comparing the baseline with itself cannot pass


def _mlp_scaled(model, block: int, alpha: float):
    return model.model.layers[block].mlp.register_forward_hook(lambda m, i, o: o * alpha)


def _capture(model, layer: int):
    seen = {}

    def hook(module, args, kwargs, output):
        seen["out"] = (output[0] if isinstance(output, tuple) else output).detach().double()

    return seen, model.model.layers[layer].register_forward_hook(hook, with_kwargs=True)


@torch.no_grad()
def test_edit_deviations_match_a_hooked_forward(tiny, tmp_path):
    loaded = tiny[1]
    model, tok = loaded.model, loaded.tokenizer
    out = tmp_path / "E"
    certify_edit(loaded=loaded, spec="mlp-scale:block=1,alpha=0.5", out=out, decoding=FAST)
    metrics = json.loads((out / "metrics.json").read_bytes())
    items, _ = load_corpus("builtin:refusal")
    eps, fin = [], []
    for text in prompt_texts(loaded, items, FAST):
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"])[None]
        runs = []
        for alpha in (1.0, 0.5):
            local, h1 = _capture(model, 1)
            final, h2 = _capture(model, 2)
            h3 = _mlp_scaled(model, 1, alpha)
            try:
                model(ids)
            finally:
                for h in (h1, h2, h3):
                    h.remove()
            runs.append((local["out"][0], final["out"][0]))
        eps.append(float(torch.linalg.vector_norm(runs[1][0] - runs[0][0], dim=-1).max()))
        fin.append(float(torch.linalg.vector_norm(runs[1][1] - runs[0][1], dim=-1).max()))
    for entry, e, f in zip(metrics["per_prompt"], eps, fin):
        assert entry["epsilon_edit"] == pytest.approx(e, rel=1e-4) and entry["final_deviation"] == pytest.approx(f, rel=1e-4)
    assert metrics["epsilon_edit"] == pytest.approx(max(eps), rel=1e-4) and max(eps) > 0


def test_sweep_edited_completions_are_those_of_the_edited_model(tiny, tmp_path):
    loaded = tiny[1]
    items, _ = load_corpus("builtin:refusal")
    sweep(loaded=loaded, blocks=[1], alphas=[0.0], out=tmp_path / "S", decoding=FAST)
    stored = [json.loads(line)["completion"] for line in (tmp_path / "S/completions/001_0.0.jsonl").read_text().splitlines()]
    base = generate(loaded, items, FAST)
    handle = _mlp_scaled(loaded.model, 1, 0.0)  # the edit done by hand: block 1's MLP output times 0
    try:
        edited = generate(loaded, items, FAST)
    finally:
        handle.remove()
    assert stored == edited
    assert edited != base  # the edit changes some completion: a sweep that skips it cannot pass
