"""Fuzzing the verifier: any change to any artifact or certificate of a valid run is reported as a failure
with a reason; the verifier never crashes and never says verified for changed bytes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockcert.pipeline.certify import run
from blockcert.verifier.core import verify
from test_run import make_model_dir

EXAMPLES = {"ci": 500, "fast": 40, "dev": 2000}.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), 500)


@pytest.fixture(scope="module")
def valid_run(tmp_path_factory, byte_tokenizer) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    model = make_model_dir(base / "model", byte_tokenizer, layers=2)
    run(model, prompts="builtin:default", out=base / "run")
    assert verify(base / "run").ok
    return base / "run"


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    yield path


def _parent(obj, path):
    """(the container holding the leaf at ``path``, the path)."""
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    return parent, path


json_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=12), st.just([]), st.just({}))


@st.composite
def mutations(draw, files: list[str], sizes: dict[str, int]):
    name = draw(st.sampled_from(files))
    kinds = ["flip", "truncate", "append", "delete"] + (["json-edit", "json-delete"] if name.endswith(".json") else [])
    kind = draw(st.sampled_from(kinds))
    size = sizes[name]
    if kind == "flip":
        return name, kind, (draw(st.integers(0, size - 1)), draw(st.integers(0, 7)))
    if kind == "truncate":
        return name, kind, draw(st.integers(0, size - 1))
    if kind == "append":
        return name, kind, draw(st.binary(min_size=1, max_size=16))
    if kind == "delete":
        return name, kind, None
    return name, kind, (draw(st.integers(0, 10**6)), draw(json_values))


def apply(root: Path, name: str, kind: str, arg) -> bool:
    """Mutate ``root/name``; False if the mutation happens to leave the bytes unchanged."""
    path = root / name
    before = path.read_bytes()
    if kind == "flip":
        pos, bit = arg
        data = bytearray(before)
        data[pos] ^= 1 << bit
        after = bytes(data)
    elif kind == "truncate":
        after = before[:arg]
    elif kind == "append":
        after = before + arg
    elif kind == "delete":
        path.unlink()
        return True
    else:
        obj = json.loads(before)
        leaves = [p for p in _leaves(obj) if p]
        if not leaves:
            return False
        pick, value = arg
        parent, target = _parent(obj, leaves[pick % len(leaves)])
        if kind == "json-delete":
            del parent[target[-1]]
        else:
            parent[target[-1]] = value
        canonical = before == rfc8785.dumps(json.loads(before))
        after = rfc8785.dumps(obj) if canonical else json.dumps(obj, indent=2).encode()
    if after == before:
        return False
    path.write_bytes(after)
    return True


@pytest.mark.slow
def test_fuzz_never_verifies_changed_bytes(valid_run):
    files = sorted(p.relative_to(valid_run).as_posix() for p in valid_run.rglob("*") if p.is_file())
    sizes = {f: (valid_run / f).stat().st_size for f in files}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(m=mutations(files, sizes), level=st.sampled_from(["hashes", "replay"]))
    def check(m, level):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "run"
            shutil.copytree(valid_run, root)
            if not apply(root, *m):
                return
            report = verify(root, level=level)
            assert not report.ok, f"{m} verified at level {level}"
            failed = [c for cert in report.certificates for c in cert.checks if not c.ok]
            assert failed and all(c.name for c in failed)

    check()


# ---------------------------------------------------------------------------------------------------
# Consistent mutations: after each one the adversary re-digests every certificate and rebuilds the run
# summary (tests/adversary.py), so SHA-256 alone catches nothing; only the verifier's semantics can.
# ---------------------------------------------------------------------------------------------------

#: ir.json leaves that are labels, not semantics (what the verifier shows but cannot check)
LABELS = {("source", "hf_class"), ("source", "model_type")}


@st.composite
def consistent_mutations(draw, json_files: list[str], tensor_files: list[str]):
    if draw(st.booleans()):
        name = draw(st.sampled_from(json_files))
        return name, "json", (draw(st.integers(0, 10**6)), draw(st.sampled_from(["change", "delete", "add"])))
    return name_and_tensor(draw, draw(st.sampled_from(tensor_files)))


def name_and_tensor(draw, name: str):
    return name, "tensor", (draw(st.integers(0, 10**6)), draw(st.integers(0, 10**9)))


def changed(value):
    """A value the verifier must notice: never a rounding-sized change."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return 1 if value is None else None


def apply_consistent(root: Path, name: str, kind: str, arg, short_len: int) -> bool:
    from safetensors.numpy import load_file, save

    path = root / name
    if kind == "json":
        pick, how = arg
        obj = json.loads(path.read_bytes())
        leaves = [p for p in _leaves(obj) if p and (name.endswith("ir.json") is False or p[:2] not in LABELS)
                  and not (name.endswith("certificate.json") and "subject" in p)]  # subject digests are redone anyway
        if not leaves:
            return False
        parent, target = _parent(obj, leaves[pick % len(leaves)])
        if how == "delete":
            del parent[target[-1]]
        elif how == "add" and isinstance(parent, dict):
            parent["certified_safe"] = True
        else:
            parent[target[-1]] = changed(parent[target[-1]])
        before = path.read_bytes()
        canonical = before == rfc8785.dumps(json.loads(before))
        path.write_bytes(rfc8785.dumps(obj) if canonical else json.dumps(obj, indent=2).encode())
        return True
    tensors = {k: np.array(v) for k, v in load_file(path).items()}
    names = sorted(k for k in tensors if k != "input_ids")  # token ids are checked against the tokenizer at full only
    key = names[arg[0] % len(names)]
    t = tensors[key]
    if t.size == 0:
        return False
    if "rope" in key or key.endswith("mask"):  # only the rows the prompts use matter
        row, col = (arg[1] % short_len), (arg[1] // short_len) % short_len
        if key.endswith("mask"):
            col = min(col, row)
        index = (row, col % t.shape[1])
    else:
        index = np.unravel_index(arg[1] % t.size, t.shape)
    if t.dtype == bool:
        t[index] = not t[index]
    else:
        t[index] = t[index] + 1
    path.write_bytes(save(tensors))
    return True


@pytest.mark.slow
def test_consistent_mutations_never_verify_at_replay(valid_run):
    from adversary import resummarize

    files = sorted(p.relative_to(valid_run).as_posix() for p in valid_run.rglob("*") if p.is_file())
    json_files = [f for f in files if f.endswith(".json") and f != "metrics.json"]  # the summary is rebuilt
    tensor_files = [f for f in files if f.endswith(".safetensors")]
    index = json.loads((valid_run / "traces/index.json").read_text())
    short_len = min(e["tokens"] for e in index["entries"])
    seen = {"verified": 0, "rejected": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(m=consistent_mutations(json_files, tensor_files))
    def check(m):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "run"
            shutil.copytree(valid_run, root)
            if not apply_consistent(root, *m, short_len=short_len):
                return
            try:
                resummarize(root)
            except Exception:  # a mutation that breaks even the adversary's own readers: plain tampering
                pass
            report = verify(root, level="replay")
            seen["verified" if report.ok else "rejected"] += 1
            assert not report.ok, f"{m} verified at level replay after a consistent re-digest"

    check()
    assert seen["rejected"] >= EXAMPLES // 2, seen


@pytest.mark.parametrize("edit", [
    lambda m: m["replay"].pop("device"),  # found by the fuzzer above (CI seed): a v3 run.json read as a v2 one
    lambda m: m["policy"].pop("name"),
    lambda m: m["policy"].pop("k"),
])
def test_a_current_run_json_is_not_read_in_an_older_form(valid_run, tmp_path, edit):
    """run.json's policy and replay copies are migrated only for a certificate that was itself migrated: dropping a v3
    field from the run.json of a v3 run, then re-digesting consistently, does not verify as an older run's would."""
    from adversary import edit_json, resummarize

    root = tmp_path / "run"
    shutil.copytree(valid_run, root)
    edit_json(root / "run.json", edit)
    resummarize(root)
    report = verify(root, level="replay")
    assert not report.ok
    assert any(ch.name.endswith("= run.json") and not ch.ok for c in report.certificates for ch in c.checks)
