"""The directional-edit sweep (issue #23, `blockcert edit direction-sweep`): its rows are the certified numbers,
the unedited completions it generates once are those of the model, it resumes an interrupted sweep without
redoing finished configurations, and it refuses to mix sweeps."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_run import make_model_dir

import blockcert
from blockcert.edit import dirsweep
from blockcert.edit.certify import Decoding, certify_edit, generate
from blockcert.edit.direction import load_direction
from blockcert.edit.refusal import load_corpus
from blockcert.errors import UserError
from blockcert.verifier.core import verify

FAST = Decoding(max_new_tokens=4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, byte_tokenizer):
    path = make_model_dir(tmp_path_factory.mktemp("dsweep") / "model", byte_tokenizer, layers=3)
    return path, blockcert.load_model(path)


@pytest.fixture(scope="module")
def swept(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "S"
    return out, dirsweep.direction_sweep(loaded=tiny[1], layers=[1, 2], scales=[1.0, 2.5], out=out, decoding=FAST)


def test_rows_are_the_certified_numbers(tiny, swept):
    out, result = swept
    items, _ = load_corpus("builtin:refusal")
    base = generate(tiny[1], items, FAST)  # the unedited completions, generated afresh
    assert [(r.layer, r.edit, r.scale) for r in result.rows] == [(ell, e, s) for ell in (1, 2)
                                                                  for e, s in (("ablate", None), ("add", 1.0), ("add", 2.5))]
    for r in result.rows:
        edit_dir = out / "edits" / dirsweep.edit_name(r.layer, r.scale)
        metrics = json.loads((edit_dir / "metrics.json").read_text())
        manifest = json.loads((edit_dir / "edit.json").read_text())
        rows = [json.loads(line) for line in (edit_dir / "completions.jsonl").read_text().splitlines()]
        assert [row["base"] for row in rows] == base  # the shared base completions are the model's own
        assert (r.answer_correct, r.refuse_correct) == (metrics["after"]["answer_correct"], metrics["after"]["refuse_correct"])
        assert r.kl_mean == metrics["locality"]["neutral"]["kl_mean"] and r.epsilon_edit == metrics["epsilon_edit"]
        assert r.spec == manifest["edit"]["spec"] and r.spec.endswith("direction=direction")
        d = load_direction(out / "directions" / f"L{r.layer:02d}")
        assert manifest["edit"]["direction"]["sha256"] == d.sha256 == r.direction_sha256
        if r.edit == "add":
            assert r.alpha == pytest.approx(r.scale * d.meta["norm_before_normalising"], abs=1e-4)
            assert f"layer={r.layer},alpha={r.alpha!r}" in r.spec
        else:
            assert r.spec.startswith("direction-ablate:layers=all")
        assert not r.resumed and r.seconds > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] is True and len(saved["rows"]) == 6
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "results.md").read_text().count("\n| ") == 7  # header and six rows


def test_every_sweep_edit_verifies(tiny, swept):
    out, result = swept
    for r in result.rows[:2]:
        report = verify(r.out, model=str(tiny[0]), level="replay")
        assert report.ok, [(ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]


def test_interrupted_sweep_resumes(tiny, swept, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "S"
    shutil.copytree(swept[0], out)
    (out / "edits" / "L02-add-x2.5" / "certificate.json").unlink()  # as if killed before its certificate was written
    shutil.rmtree(out / "edits" / "L01-add-x2.5")  # a complete certificate of another configuration in its place
    shutil.copytree(out / "edits" / "L01-add-x1", out / "edits" / "L01-add-x2.5")
    calls = []
    real = dirsweep.certify_edit
    monkeypatch.setattr(dirsweep, "certify_edit", lambda **kw: calls.append(kw["out"]) or real(**kw))
    result = dirsweep.direction_sweep(loaded=tiny[1], layers=[1, 2], scales=[1.0, 2.5], out=out, decoding=FAST)
    assert calls == [out / "edits" / "L01-add-x2.5", out / "edits" / "L02-add-x2.5"]
    assert [r.resumed for r in result.rows] == [True, True, False, True, True, False]
    fresh = {(r.layer, r.scale): (r.answer_correct, r.refuse_correct, r.kl_mean) for r in swept[1].rows}
    assert {(r.layer, r.scale): (r.answer_correct, r.refuse_correct, r.kl_mean) for r in result.rows} == fresh
    # another decoding is another sweep: refused, unless --force starts over
    with pytest.raises(UserError, match="--force"):
        dirsweep.direction_sweep(loaded=tiny[1], layers=[1], scales=[1.0], out=out, decoding=Decoding(max_new_tokens=3))
    calls.clear()
    result = dirsweep.direction_sweep(loaded=tiny[1], layers=[1], scales=[], out=out, decoding=Decoding(max_new_tokens=3), force=True)
    assert len(calls) == 1 and not (out / "edits" / "L02-ablate").exists() and not result.rows[0].resumed


def test_bad_sweeps_are_refused(tiny, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("not a sweep")
    for kwargs, needle in ((dict(layers=[3]), "blocks 0-2"), (dict(layers=[1], scales=[-1.0]), "positive"),
                           (dict(layers=[1], scales=[], ablate=False), "at least one"),
                           (dict(layers=[1], out=tmp_path / "other"), "not a sweep of this kind")):
        with pytest.raises(UserError, match=needle):
            dirsweep.direction_sweep(loaded=tiny[1], decoding=FAST, **{"out": tmp_path / "S", **kwargs})


def test_base_completions_must_match_the_corpus(tiny, tmp_path):
    with pytest.raises(ValueError, match="2 completions for 60"):
        certify_edit(loaded=tiny[1], spec="mlp-scale:block=1,alpha=0.5", out=tmp_path / "E", decoding=FAST, base_completions=["a", "b"])


def test_cli_direction_sweep(tiny, tmp_path):
    path, _ = tiny

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blockcert", "edit", "direction-sweep", "--model", str(path), *args],
                              capture_output=True, text=True, timeout=600)

    res = cli("--layers", "2", "--scales", "1", "--max-new-tokens", "3", "--out", str(tmp_path / "S"))
    assert res.returncode == 0, res.stderr
    assert "L02-ablate" in res.stdout and "L02-add-x1" in res.stdout
    res = cli("--layers", "2", "--scales", "1", "--max-new-tokens", "3", "--out", str(tmp_path / "S"), "--json")
    assert res.returncode == 0 and all(r["resumed"] for r in json.loads(res.stdout)["rows"])
    for args, needle in ((("--layers", "7"), "--layers '7'"), (("--scales", "x"), "--scales")):
        res = cli(*args, "--out", str(tmp_path / "S2"))
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_example_script_runs(tiny, tmp_path):
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "direction_sweep.py"
    res = subprocess.run([sys.executable, str(script), "--model", str(tiny[0]), "--layers", "2", "--scales", "1",
                          "--max-new-tokens", "3", "--out", str(tmp_path / "S")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "layer 2: ablating everywhere loses" in res.stdout and (tmp_path / "S" / "edits" / "L02-add-x1" / "certificate.json").is_file()


def test_auto_layers_are_evenly_spaced():
    assert dirsweep.auto_layers(30) == [5, 10, 15, 20, 25]
    assert dirsweep.auto_layers(24) == [4, 8, 12, 16, 20]
    assert dirsweep.auto_layers(28) == [5, 9, 14, 19, 23]
    assert dirsweep.auto_layers(3) == [0, 1, 2]


def test_corpus_folds_are_disjoint_and_balanced():
    items, _ = load_corpus("builtin:refusal")
    folds = [load_corpus(f"builtin:refusal[{k}/3]") for k in (1, 2, 3)]
    assert [desc for _, desc in folds] == ["builtin:refusal[1/3]", "builtin:refusal[2/3]", "builtin:refusal[3/3]"]
    ids = [[i.id for i in fold] for fold, _ in folds]
    assert sorted(sum(ids, [])) == sorted(i.id for i in items) and not set(ids[0]) & set(ids[1])
    for fold, _ in folds:
        assert sum(i.label == "answer" for i in fold) == sum(i.label == "refuse" for i in fold) == 10
    first_refuse = next(i for i in items if i.label == "refuse")
    assert first_refuse in folds[0][0]  # the first prompt of each label is in fold 1
    for bad in ("builtin:refusal[0/2]", "builtin:refusal[3/2]"):
        with pytest.raises(UserError, match="does not exist"):
            load_corpus(bad)


def test_held_out_sweep_computes_directions_on_the_other_fold(tiny, tmp_path):
    path, loaded = tiny
    result = dirsweep.direction_sweep(loaded=loaded, layers=[2], scales=[], out=tmp_path / "S", decoding=FAST,
                                      corpus="builtin:refusal[2/2]", direction_corpus="builtin:refusal[1/2]")
    r = result.rows[0]
    assert (r.n_answer, r.n_refuse) == (15, 15) and result.direction_corpus == "builtin:refusal[1/2]"
    d = load_direction(tmp_path / "S" / "directions" / "L02")
    assert d.meta["corpus"]["description"] == "builtin:refusal[1/2]" and d.meta["corpus"]["refuse"] == 15
    assert "directions from builtin:refusal[1/2]" in (tmp_path / "S" / "results.md").read_text()
    report = verify(r.out, model=str(path), level="full")  # the direction is recomputed from its own fold
    assert report.ok, [(ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
    assert any(ch.name == "direction recomputed from its corpus" and ch.ok for c in report.certificates for ch in c.checks)


def test_verify_a_sweep_directory(tiny, swept, tmp_path):
    """`blockcert verify DS` verifies every edit certificate of the sweep and results.json against them."""
    import shutil

    out, result = swept
    report = verify(out, level="hashes")
    assert report.ok, [(c.path, ch.name, ch.detail) for c in report.certificates for ch in c.checks if not ch.ok]
    assert sorted(c.path for c in report.certificates) == sorted(
        [f"edits/{dirsweep.edit_name(r.layer, r.scale)}/certificate.json" for r in result.rows] + ["results.json"])
    forged = tmp_path / "S"
    shutil.copytree(out, forged)
    results = json.loads((forged / "results.json").read_text())
    results["rows"][1]["refuse_correct"] += 1  # a better-looking table than the certificates
    results["rows"][2]["refuse_change"]["lost"] += 1
    results["rows"][3]["answer_change"]["p_value"] /= 100  # a significance the paired counts do not give
    results["rows"][4]["refuse_interval"][0] += 0.01
    results["base"]["refuse_correct"] += 1  # another unedited model than the certificates'
    (forged / "results.json").write_text(json.dumps(results))
    bad = {ch.name for c in verify(forged, level="hashes").certificates for ch in c.checks if not ch.ok}
    assert bad == {"L01-add-x1: results.json row = its certificate", "L01-add-x1: refuse Wilson interval",
                   "L01-add-x2.5: refuse gained/lost = the completions'", "L02-ablate: answer McNemar p",
                   "L02-add-x1: refuse Wilson interval", "unedited refuse: Wilson interval"} | {
                       f"{dirsweep.edit_name(r.layer, r.scale)}: unedited refuse = the sweep's" for r in result.rows}
    results["complete"] = False
    (forged / "results.json").write_text(json.dumps(results))
    assert "the sweep is complete" in {ch.name for c in verify(forged, level="hashes").certificates for ch in c.checks if not ch.ok}
    res = subprocess.run([sys.executable, "-m", "blockcert", "verify", str(out), "--level", "hashes"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0 and "verified" in res.stdout, res.stdout + res.stderr
