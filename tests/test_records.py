"""The artifact contract (blockcert/artifacts/records.py): every JSON file a real run writes loads into its
record and dumps back to the same object; an unknown key is refused; docs/certificate.md names every field;
the verifier enforces exactly the records' keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import cattrs
import pytest

from blockcert.artifacts import records as R

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = sorted((ROOT / "tests/data").glob("golden-run-v*"), key=lambda p: int(p.name.rsplit("v", 1)[1]))[-1]  # the newest


def _nested(cls: type) -> list[type]:
    out, todo = [], [cls]
    while todo:
        c = todo.pop()
        if c in out:
            continue
        out.append(c)
        attrs.resolve_types(c)  # the annotations are strings until resolved (whether cattrs ran first must not matter)
        for f in attrs.fields(c):
            for t in (f.type, *getattr(f.type, "__args__", ())):
                if attrs.has(t):
                    todo.append(t)
    return out


def test_every_record_field_is_documented():
    doc = (ROOT / "docs/certificate.md").read_text()
    missing = [f"{c.__name__}.{f.name}" for cls in R.RECORDS for c in _nested(cls) for f in attrs.fields(c)
               if not re.search(r"`(?:[\w.]*\.)?" + re.escape(f.name) + r"`", doc)]
    assert not missing, f"docs/certificate.md does not name: {missing}"


def test_schema_version_comes_first():
    for cls in R.RECORDS:
        names = [f.name for f in attrs.fields(cls)]
        assert "schema_version" not in names or names[0] == "schema_version", cls.__name__


@pytest.mark.parametrize(("cls", "rel"), [
    (R.RunManifest, "run.json"), (R.BlockMetricsRecord, "block_000/metrics.json"), (R.BoundsRecord, "block_000/bounds.json"),
])
def test_golden_artifacts_round_trip(cls, rel):
    data = json.loads((GOLDEN / rel).read_text())
    assert R.dump(R.load(cls, data)) == data


def test_golden_predicate_round_trips_and_extra_keys_are_refused():
    pred = json.loads((GOLDEN / "block_000/certificate.json").read_text())["predicate"]
    assert R.dump(R.load(R.BlockPredicate, pred)) == pred
    with pytest.raises(cattrs.errors.ClassValidationError):
        R.load(R.BlockPredicate, {**pred, "certified_forever": True})
    with pytest.raises(cattrs.errors.ClassValidationError):
        R.load(R.BlockPredicate, {k: v for k, v in pred.items() if k != "verdict"})


def test_the_verifier_enforces_the_records_keys():
    from blockcert.verifier import blocks, bounds, edit, full_model

    assert blocks.PREDICATE_FIELDS == R.keys(R.BlockPredicate)
    assert blocks.MODEL_FIELDS == R.keys(R.ModelIdentity)
    assert blocks.PROMPT_FIELDS == R.keys(R.CertifiedPrompts)
    assert set(blocks.METRIC_FIELDS) == R.keys(R.ClaimedMetrics)
    assert blocks.VERDICT_FIELDS == R.keys(R.Verdict)
    assert blocks.REPLAY_FIELDS == R.keys(R.Replay)
    assert blocks.RUN_FIELDS == R.keys(R.RunManifest) - {"derivation"}
    assert full_model.FULL_FIELDS == R.keys(R.FullPredicate) and full_model.FULL_METRICS == R.keys(R.FullMetrics)
    assert bounds.RECORD_FIELDS == R.keys(R.BoundsRecord) and bounds.CERTIFIED_FIELDS == R.keys(R.CertifiedBounds)
    assert edit.METRICS_FIELDS == R.keys(R.EditMetrics) and set(edit.MANIFEST_FIELDS) == R.keys(R.EditManifest)


def test_a_reader_names_the_file_that_does_not_match(tmp_path):
    """The producer's readers load records: a run.json of another shape is a usage error naming the file."""
    import shutil

    from blockcert.bounds.compose import bound
    from blockcert.errors import UserError

    root = tmp_path / "run"
    shutil.copytree(GOLDEN, root)
    manifest = json.loads((root / "run.json").read_text())
    (root / "run.json").write_text(json.dumps({**manifest, "n_ctx": "forty"}))
    with pytest.raises(UserError, match="run.json is not a BlockCert RunManifest record"):
        R.read(R.RunManifest, json.loads((root / "run.json").read_text()), str(root / "run.json"))
    with pytest.raises(UserError):
        bound(root)  # verifies at hashes first: the edited run.json no longer matches its digest
