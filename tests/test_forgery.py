"""The adversary (tests/adversary.py) forges consistent runs with our own modules: every derived file, digest
and summary recomputed. Each forgery must fail at the level that claims to catch it, naming the right check,
and pass every level below it: the line between the levels lies where docs/verification.md says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save

import blockcert
from adversary import edit_json, edit_traces, recertify, recertify_all, redigest, replay_into_trace, resummarize
from blockcert.metrics import Policy
from blockcert.pipeline.certify import run
from blockcert.pipeline.stitch import stitch
from blockcert.verifier.core import LEVELS, REFERENCES, verify
from test_run import make_model_dir


@pytest.fixture(scope="module")
def made(tmp_path_factory, byte_tokenizer) -> dict:
    """A 3-layer random Llama (blocks 0 and 1 certified, so x^(3) is used by no certificate), and a run of it
    under a policy that certifies nothing (for the flipped verdict)."""
    base = tmp_path_factory.mktemp("forgery")
    model = make_model_dir(base / "model", byte_tokenizer, layers=3, scale=40.0)
    loaded = blockcert.load_model(model)
    run(loaded=loaded, prompts="builtin:default", blocks="0,1", out=base / "run")
    run(loaded=loaded, prompts="builtin:default", blocks="0,1", out=base / "strict", policy=Policy(tau_act=1e-12))
    assert verify(base / "run").ok
    return {"base": base, "model": str(model), "loaded": loaded}


def fresh(made: dict, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(made["base"] / name, tmp_path / "run")
    return tmp_path / "run"


def failed(report) -> str:
    return "\n".join(f"{ch.name}: claimed={ch.claimed} actual={ch.actual} {ch.detail}"
                     for c in report.certificates for ch in c.checks if not ch.ok)


def assert_caught_at(root: Path, made: dict, level: str, needle: str, **kw) -> None:
    """Passes every level below ``level`` (the forgery is consistent there), fails at ``level`` naming ``needle``."""
    for below in LEVELS[: LEVELS.index(level)]:
        report = verify(root, level=below, **kw)
        assert report.ok, f"{below} should pass a forgery only {level} can catch:\n{failed(report)}"
    report = verify(root, level=level, model=made["model"] if level == "full" else None, **kw)
    assert not report.ok and needle in failed(report), failed(report)


def scale_wo(path: Path, factor: float) -> None:
    t = {k: np.array(v) for k, v in load_file(path).items()}
    t["attn.o.weight"] *= factor
    path.write_bytes(save(t))


@pytest.mark.parametrize("reference", REFERENCES)
def test_wrong_ir_with_forged_traces_is_caught_at_full(made, tmp_path, reference):
    """Block 1's W_O scaled: honestly it is not certified. The forger overwrites x^(2) in every trace with that
    IR's replay (and re-runs the suffix and losses with the real model), so the IR looks exact."""
    root = fresh(made, tmp_path)
    scale_wo(root / "block_001/ir.safetensors", 1.05)
    recertify_all(root, made["loaded"])
    honest = json.loads((root / "block_001/certificate.json").read_bytes())["predicate"]
    assert not honest["verdict"]["certified"] and honest["metrics"]["epsilon"] > 1e-2
    replay_into_trace(root, 1, root / "block_001/ir", made["loaded"])
    recertify_all(root, made["loaded"])
    forged = json.loads((root / "block_001/certificate.json").read_bytes())["predicate"]
    assert forged["verdict"]["certified"] and forged["metrics"]["epsilon"] < 1e-4
    assert_caught_at(root, made, "full", "re-captured residual", reference=reference)


@pytest.mark.parametrize("reference", REFERENCES)
def test_another_blocks_ir_is_caught_at_full(made, tmp_path, reference):
    """Block 0's IR passed off as block 1's (its index rewritten), with traces forged to match."""
    root = fresh(made, tmp_path)
    for ext in ("json", "safetensors"):
        shutil.copy(root / f"block_000/ir.{ext}", root / f"block_001/ir.{ext}")
    edit_json(root / "block_001/ir.json", lambda m: m.update(index=1))
    (root / "block_001/ir.json").write_text(json.dumps(json.loads((root / "block_001/ir.json").read_bytes()), indent=2))
    replay_into_trace(root, 1, root / "block_001/ir", made["loaded"])
    recertify_all(root, made["loaded"])
    assert json.loads((root / "block_001/certificate.json").read_bytes())["predicate"]["metrics"]["epsilon"] < 1e-4
    assert_caught_at(root, made, "full", "re-captured residual", reference=reference)


def test_infinite_outlier_in_an_unused_layer_is_caught_at_hashes(made, tmp_path):
    root = fresh(made, tmp_path)

    def outlier(k: int, t: dict) -> None:
        if k == 0:
            t["residual"][3, 0, 0] = np.inf  # x^(3): no certificate of this run uses it

    edit_traces(root, outlier)
    resummarize(root)
    assert_caught_at(root, made, "hashes", "finite values traces/prompt_000.safetensors")


@pytest.mark.parametrize("reference", REFERENCES)
def test_huge_finite_outlier_in_an_unused_layer_is_caught_at_full(made, tmp_path, reference):
    """3e38 is finite, so only the model can say it is not x^(3); it must not widen any tolerance."""
    root = fresh(made, tmp_path)

    def outlier(k: int, t: dict) -> None:
        if k == 0:
            t["residual"][3, 0, 0] = 3e38

    edit_traces(root, outlier)
    resummarize(root)
    assert_caught_at(root, made, "full", "re-captured residual prompt 0", reference=reference)


@pytest.mark.parametrize("reference", REFERENCES)
def test_block_never_swapped_in_is_caught_at_full(made, tmp_path, reference):
    """The stitched losses are the baseline's (the block is never replaced): cov_loss looks perfect. Block 1's
    W_O is scaled so that replacing it does move the losses; every number recomputed consistently."""
    root = fresh(made, tmp_path)
    scale_wo(root / "block_001/ir.safetensors", 1.05)
    recertify(root, 1, made["loaded"], stitched=lambda losses, traces: [np.asarray(t.loss, np.float32) for t in traces])
    resummarize(root)
    assert json.loads((root / "block_001/certificate.json").read_bytes())["predicate"]["metrics"]["cov_loss"] == 1.0
    assert_caught_at(root, made, "full", "re-run suffix losses", reference=reference)


@pytest.mark.parametrize("reference", REFERENCES)
def test_stitched_perplexity_of_the_baseline_is_caught_at_full(made, tmp_path, reference):
    """The full-model certificate claims the baseline's perplexity for the stitched model (and the numbers that
    follow from it), eval.json and every digest consistent. Block 1's W_O is scaled so that stitching it in
    does change the perplexity (a random model predicts nearly uniformly: by 0.4%)."""
    root = fresh(made, tmp_path)
    scale_wo(root / "block_001/ir.safetensors", 2.0)
    recertify_all(root, made["loaded"])
    stitch(root, blocks=[0, 1], loaded=made["loaded"])
    m = json.loads((root / "full/eval.json").read_bytes())["metrics"]
    assert abs(m["rel_delta_ppl"]) > 2e-3  # ten times the numpy reference's perplexity band, 200 times the torch one's

    def same_ppl(m: dict) -> None:
        m.update(ppl_stitched=m["ppl_baseline"], delta_ppl=0.0, rel_delta_ppl=0.0)

    edit_json(root / "full/eval.json", lambda e: same_ppl(e["metrics"]))
    edit_json(root / "full/certificate.json", lambda c: same_ppl(c["predicate"]["metrics"]))
    redigest(root, "full/certificate.json")
    assert_caught_at(root, made, "full", "re-run ppl_stitched", reference=reference)


@pytest.mark.parametrize("reference", REFERENCES)
def test_a_changed_probe_answer_is_caught_at_full(made, tmp_path, reference):
    """One stitched probe answer rewritten (and the agreement rates that follow from it), all consistent."""
    root = fresh(made, tmp_path)
    stitch(root, loaded=made["loaded"])

    def change(e: dict) -> None:
        e["probe"][0]["stitched"] = "zebra" if e["probe"][0]["stitched"] != "zebra" else "yak"
        agree = [str(p["stitched"]).strip().lower() == str(p["baseline"]).strip().lower() for p in e["probe"]]
        human = [str(p["stitched"]).strip().lower() == str(p["label"]).strip().lower() for p in e["probe"]]
        e["metrics"].update(probe_stitched_vs_baseline=float(np.mean(agree)), probe_stitched_vs_human=float(np.mean(human)))

    edit_json(root / "full/eval.json", change)
    metrics = json.loads((root / "full/eval.json").read_bytes())["metrics"]
    edit_json(root / "full/certificate.json", lambda c: c["predicate"]["metrics"].update(metrics))
    redigest(root, "full/certificate.json")
    assert_caught_at(root, made, "full", "re-run probe", reference=reference)


def test_flipped_verdict_is_caught_at_hashes(made, tmp_path):
    root = fresh(made, tmp_path, "strict")

    def claim(obj: dict) -> None:
        pred = obj.get("predicate", obj)
        if "verdict" in pred:
            pred["verdict"] = {"certified": True, "cov_act_ok": True, "cov_loss_ok": True}
        else:
            obj["certified"] = True

    for d in ("block_000", "block_001"):
        edit_json(root / d / "certificate.json", claim)
        edit_json(root / d / "metrics.json", claim)
    resummarize(root)
    report = verify(root, level="hashes", policy=Policy(tau_act=1e-12))
    assert not report.ok and "verdict consistent with its metrics" in failed(report)
    # ... and with the claimed coverage raised to match, the stored per-token errors still say otherwise
    for d in ("block_000", "block_001"):
        for name in ("certificate.json", "metrics.json"):
            edit_json(root / d / name, lambda o: o.get("predicate", o)["metrics"].update(cov_act=1.0))
    resummarize(root)
    report = verify(root, level="hashes", policy=Policy(tau_act=1e-12))
    assert not report.ok and "metric cov_act from the stored per-token values" in failed(report)


def test_understated_errors_are_caught_at_replay(made, tmp_path):
    root = fresh(made, tmp_path)
    scale_wo(root / "block_001/ir.safetensors", 1.05)
    recertify(root, 1, made["loaded"], errors=lambda errs: [e * 0.1 for e in errs])  # ε understated 10x, consistently
    resummarize(root)
    assert_caught_at(root, made, "replay", "is not what the IR replay gives")


def test_forged_path_matches_are_caught_at_replay(made, tmp_path):
    """Every stored path match flipped to False and cov_path recomputed to 0 consistently: only the replay's
    own decisions say otherwise."""
    root = fresh(made, tmp_path)
    path = root / "block_000/errors.safetensors"
    t = {k: np.array(v) for k, v in load_file(path).items()}
    for k in t:
        if k.endswith(".path_match"):
            t[k][:] = False
    path.write_bytes(save(t))
    for name in ("certificate.json", "metrics.json"):
        edit_json(root / "block_000" / name, lambda o: o.get("predicate", o)["metrics"].update(cov_path=0.0))
    resummarize(root)
    assert_caught_at(root, made, "replay", "stored p000.path_match")


@pytest.mark.parametrize("reference", REFERENCES)
def test_swapped_input_ids_are_caught_at_full(made, tmp_path, reference):
    root = fresh(made, tmp_path)
    edit_traces(root, lambda k, t: t.update(input_ids=np.full_like(t["input_ids"], 66)))
    recertify_all(root, made["loaded"])
    assert_caught_at(root, made, "full", "input_ids prompt 0", reference=reference)


@pytest.mark.parametrize("reference", ["torch", "numpy"])
def test_input_ids_outside_the_vocabulary_are_a_failure_not_a_crash(made, tmp_path, reference):
    root = fresh(made, tmp_path)
    vocab = made["loaded"].model.config.vocab_size
    edit_traces(root, lambda k, t: t.update(input_ids=np.full_like(t["input_ids"], vocab + 7)))
    resummarize(root)
    assert_caught_at(root, made, "full", "input_ids prompt 0", reference=reference)


def test_input_ids_of_another_dtype_are_caught_at_hashes(made, tmp_path):
    root = fresh(made, tmp_path)
    edit_traces(root, lambda k, t: t.update(input_ids=t["input_ids"].astype(np.int32)))
    resummarize(root)
    assert_caught_at(root, made, "hashes", "trace input_ids")


def test_nan_in_a_stored_stitched_loss_is_caught_at_hashes(made, tmp_path):
    root = fresh(made, tmp_path)
    path = root / "block_000/errors.safetensors"
    t = {k: np.array(v) for k, v in load_file(path).items()}
    t["p001.loss_stitched"][2] = np.nan
    path.write_bytes(save(t))
    resummarize(root)
    assert_caught_at(root, made, "hashes", "finite values block_000/errors.safetensors")


def test_unknown_run_json_field_is_caught_at_hashes(made, tmp_path):
    root = fresh(made, tmp_path)
    manifest = json.loads((root / "run.json").read_text())
    manifest["certified_safe"] = True
    (root / "run.json").write_text(json.dumps(manifest, indent=2))
    resummarize(root)
    assert_caught_at(root, made, "hashes", "schema run.json")


def test_ir_source_claiming_a_derivation_is_caught_at_hashes(made, tmp_path):
    root = fresh(made, tmp_path)
    edit_json(root / "block_000/ir.json", lambda m: m["source"].update({"derivation": "lowrank:r=2"}))
    resummarize(root)
    assert_caught_at(root, made, "hashes", "ir.json source derivation")


def test_stray_file_under_full_is_caught(made, tmp_path):
    root = fresh(made, tmp_path)
    (root / "full").mkdir()
    (root / "full/eval.json").write_text("{}")
    report = verify(root, level="hashes")
    assert not report.ok and "full" in failed(report)


# ---------------------------------------------------------------------------------------------------
# Edit certificates: every number recomputed at the level that claims it
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edit_cert(made, tmp_path_factory) -> Path:
    from blockcert.edit.certify import Decoding, certify_edit

    out = tmp_path_factory.mktemp("forged-edit") / "E"
    certify_edit(loaded=made["loaded"], spec="mlp-scale:block=1,alpha=0.33", out=out, decoding=Decoding(max_new_tokens=4))
    return out


def _reissue_edit(root: Path, fn) -> None:
    """Rewrite metrics.json with ``fn`` and mirror it into the certificate, digests redone."""
    edit_json(root / "metrics.json", fn)
    metrics = json.loads((root / "metrics.json").read_bytes())
    edit_json(root / "certificate.json", lambda c: c["predicate"]["metrics"].update(
        {k: metrics[k] for k in c["predicate"]["metrics"]}))
    redigest(root, "certificate.json")


def test_edited_amplification_is_caught_at_hashes(edit_cert, made, tmp_path):
    root = tmp_path / "E"
    shutil.copytree(edit_cert, root)
    _reissue_edit(root, lambda m: m.update(amplification=1.0))
    report = verify(root, level="hashes")
    assert not report.ok and "amplification = final deviation / epsilon_edit" in failed(report)


@pytest.mark.parametrize("reference", REFERENCES)
def test_zeroed_per_prompt_deviations_are_caught_at_replay(edit_cert, made, tmp_path, reference):
    root = tmp_path / "E"
    shutil.copytree(edit_cert, root)

    def zero(m: dict) -> None:
        for entry in m["per_prompt"]:
            entry["epsilon_edit"] = entry["final_deviation"] = 0.0
        m.update(epsilon_edit=0.0, max_final_deviation=0.0, amplification=None)

    _reissue_edit(root, zero)
    assert verify(root, level="hashes").ok  # consistent arithmetic ...
    report = verify(root, level="replay", model=made["model"], reference=reference)
    assert not report.ok and "re-measured" in failed(report)  # ... but not what the model does


def test_unknown_key_in_edit_metrics_is_caught_at_hashes(edit_cert, tmp_path):
    root = tmp_path / "E"
    shutil.copytree(edit_cert, root)
    _reissue_edit(root, lambda m: m.update(certified_safe=True))
    report = verify(root, level="hashes")
    assert not report.ok and "schema metrics.json" in failed(report)


def test_deeply_nested_completion_line_is_one_failure(edit_cert, tmp_path):
    root = tmp_path / "E"
    shutil.copytree(edit_cert, root)
    with open(root / "completions.jsonl", "ab") as fh:
        fh.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    redigest(root, "certificate.json")
    report = verify(root, level="hashes")
    assert not report.ok and "invalid JSON" in failed(report)
