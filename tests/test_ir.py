"""IR records: validation, exact (de)serialisation, golden schema files, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from irfactory import extended_ir, tiny_ir

from blockcert.errors import IRFormatError
from blockcert.ir import SCHEMA_VERSION, Attention, Linear, from_dict, load_ir, read_n_ctx, save_ir, to_dict

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / f"ir-v{SCHEMA_VERSION}"


@given(seed=st.integers(0, 2**32 - 1), n_kv=st.sampled_from([1, 2, 4]), n_ctx=st.integers(1, 9))
def test_round_trip_is_exact(tmp_path_factory, seed, n_kv, n_ctx):
    ir = tiny_ir(seed, n_kv=n_kv, n_ctx=n_ctx)
    stem = tmp_path_factory.mktemp("rt") / "ir"
    save_ir(ir, stem)
    again = load_ir(stem)
    assert again == ir
    assert read_n_ctx(stem) == ir.n_ctx == n_ctx  # from the header alone
    for name, array in to_dict(again)[1].items():
        original = to_dict(ir)[1][name]
        assert array.dtype == original.dtype and array.tobytes() == original.tobytes(), name


def test_equality_is_bitwise():
    ir = tiny_ir()
    w = ir.attn.q.weight.copy()
    w[0, 0] = np.nextafter(w[0, 0], np.float32(np.inf))
    assert attrs.evolve(ir, attn=attrs.evolve(ir.attn, q=attrs.evolve(ir.attn.q, weight=w))) != ir


def test_golden_files_still_load_and_match():
    """The on-disk format of this schema is frozen: the golden files (every v2 operator on) load into the same record."""
    ir = load_ir(GOLDEN / "ir")
    assert ir == extended_ir()
    meta, _ = to_dict(ir)
    assert meta == json.loads((GOLDEN / "ir.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION


def test_v1_files_migrate_to_the_same_block():
    """A schema-v1 IR (before the optional operators) loads as the same block, with every extension absent, and
    replays bit for bit as it did: the migration adds absent fields and changes no tensor."""
    from blockcert.interpreter import replay

    v1 = json.loads((DATA / "ir-v1" / "ir.json").read_text())
    assert v1["schema_version"] == 1
    ir = load_ir(DATA / "ir-v1" / "ir")
    assert ir == tiny_ir() and ir.extensions == ()
    x = np.random.default_rng(0).standard_normal((2, 6, 8))
    assert np.array_equal(replay(ir, x).output, replay(tiny_ir(), x).output)


def test_extensions_round_trip_and_are_named():
    for whole in (False, True):
        ir = extended_ir(whole_qk=whole)
        meta, tensors = to_dict(ir)
        assert from_dict(json.loads(json.dumps(meta)), tensors) == ir
        assert ir.extensions == ("no norm1", "post_attn_norm", "post_mlp_norm", "q_norm", "k_norm", "softcap")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda ir: attrs.evolve(ir.attn, n_kv_heads=3), "must divide"),
        (lambda ir: attrs.evolve(ir.attn, head_gate=np.ones(3, np.float32)), "head_gate"),
        (lambda ir: attrs.evolve(ir.attn, mask=np.ones((6, 5), bool)), "square"),
        (lambda ir: attrs.evolve(ir.attn, mask=np.ones((6, 6), np.float32)), "bool"),
        (lambda ir: attrs.evolve(ir.attn, mask=np.ones((7, 7), bool)), "RoPE tables"),
        (lambda ir: Linear(np.ones((2, 3), np.float32), np.ones(2, np.float32)), "bias"),
        (lambda ir: Linear(np.ones((2, 3), np.int32)), "float"),
        (lambda ir: attrs.evolve(ir, d_model=9), "d_model"),
        (lambda ir: attrs.evolve(ir, schema_version=99), "schema_version"),
        (lambda ir: attrs.evolve(ir.norm1, bias=np.ones(8, np.float32)), "rmsnorm has no bias"),
        (lambda ir: attrs.evolve(ir.attn, q_norm=attrs.evolve(ir.norm1, weight=np.ones(3, np.float32))), "q_norm has 3 weights"),
        (lambda ir: attrs.evolve(ir.attn, softcap=0.0), "softcap"),
        (lambda ir: attrs.evolve(ir, residual="parallel", post_mlp_norm=ir.norm1), "parallel block has no post-norms"),
    ],
)
def test_inconsistent_records_cannot_be_built(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build(tiny_ir())


def _corrupt(tmp_path: Path, edit) -> Path:
    stem = tmp_path / "ir"
    save_ir(tiny_ir(), stem)
    meta = json.loads(stem.with_suffix(".json").read_text())
    edit(meta)
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return stem


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(extra=1), "extra"),
        (lambda m: m["attn"].update(q={"weight": "attn.k.weight", "bias": "attn.q.bias"}), "referenced twice"),
        (lambda m: m["attn"]["q"].update(weight="nope"), "nope"),
        (lambda m: m.update(schema_version=3), "schema_version"),
        (lambda m: m.update(schema_version=1), "extra"),  # a v1 record has no v2 fields: migrating one that does is an error
        (lambda m: m["attn"].update(n_heads=3), "must divide"),
        (lambda m: m["mlp"].pop("up"), "up"),
    ],
)
def test_malformed_json_is_a_clear_error(tmp_path, edit, message):
    stem = _corrupt(tmp_path, edit)
    with pytest.raises(IRFormatError, match=message) as info:
        load_ir(stem)
    assert "ir.json" in str(info.value)


def test_unreferenced_tensor_is_an_error():
    meta, tensors = to_dict(tiny_ir())
    tensors["smuggled"] = np.zeros(1, np.float32)
    with pytest.raises(IRFormatError, match="smuggled"):
        from_dict(meta, tensors)


def test_broken_tensor_file_and_missing_files(tmp_path):
    stem = tmp_path / "ir"
    save_ir(tiny_ir(), stem)
    blob = stem.with_suffix(".safetensors").read_bytes()
    stem.with_suffix(".safetensors").write_bytes(blob[:-7])
    with pytest.raises(IRFormatError, match="safetensors"):
        load_ir(stem)
    with pytest.raises(IRFormatError, match="not found"):
        load_ir(tmp_path / "missing")


def test_save_leaves_no_temp_files(tmp_path):
    save_ir(tiny_ir(), tmp_path / "ir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir.json", "ir.safetensors"]


def test_golden_regeneration_helper_is_stable(tmp_path):
    """Re-saving the golden IR reproduces the golden bytes (the format is deterministic)."""
    save_ir(extended_ir(), tmp_path / "ir")
    for suffix in (".json", ".safetensors"):
        assert (tmp_path / f"ir{suffix}").read_bytes() == (GOLDEN / f"ir{suffix}").read_bytes()


def test_attention_record_needs_matching_projections():
    ir = tiny_ir()
    with pytest.raises(ValueError, match="q projects"):
        Attention(**{**attrs.asdict(ir.attn, recurse=False), "q": Linear(np.ones((8, 5), np.float32))})


def test_ir_round_trip_keeps_no_weights_alive_in_reference_cycles():
    """to_dict / from_dict must not park a block's tensors in a reference cycle: a streamed run of a big
    model extracts one block after another, and each block's IR must be freed when it is dropped, not
    whenever the garbage collector next runs (a Llama-2-7B block is 0.8 GB)."""
    import gc
    import weakref

    from irfactory import tiny_ir

    from blockcert.ir import from_dict, to_dict

    enabled = gc.isenabled()
    gc.disable()
    try:
        meta, tensors = to_dict(tiny_ir())
        copies = {k: v.copy() for k, v in tensors.items()}
        probe = weakref.ref(next(iter(copies.values())))
        rebuilt = from_dict(meta, copies)
        del copies
        meta2, tensors2 = to_dict(rebuilt)
        probe2 = weakref.ref(next(iter(tensors2.values())))
        del rebuilt, tensors2, tensors
        assert probe() is None, "from_dict keeps the tensors alive"
        assert probe2() is None, "to_dict keeps the tensors alive"
    finally:
        if enabled:
            gc.enable()
