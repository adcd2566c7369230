"""The built-in surrogates and ablations (``blockcert_surrogates``): properties on random IRs.

IRs come from :func:`irfactory.tiny_ir` with drawn sizes, then optionally lose RoPE, the MLP gate or
the biases, switch to a parallel residual, and are cast to float16/32/64. Replays are the numpy
float64 reference interpreter on inputs covering every position, so a transform that changes the
block shows up in the output.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import blockcert_surrogates as bs
from blockcert.errors import UserError
from blockcert.interpreter import replay
from blockcert.ir import BlockIR, Linear, from_dict, load_ir, save_ir, to_dict
from blockcert.plugins import get_plugins
from blockcert.spec import Spec, parse_spec
from blockcert_surrogates.transforms import TARGETS
from irfactory import tiny_ir

ROOT = Path(__file__).resolve().parents[1]


def with_dtype(ir: BlockIR, dtype: type) -> BlockIR:
    """``ir`` with every float tensor cast to ``dtype``."""
    meta, tensors = to_dict(ir)
    return from_dict(meta, {k: v if v.dtype == np.bool_ else v.astype(dtype) for k, v in tensors.items()})


@st.composite
def block_irs(draw: st.DrawFn, rope: bool | None = None) -> BlockIR:
    n_kv, group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ir = tiny_ir(
        seed=draw(st.integers(0, 2**32 - 1)),
        d=draw(st.sampled_from([4, 6, 8, 12])),  # d >= 4: normed inputs at distinct positions differ
        n_heads=n_kv * group,
        n_kv=n_kv,
        hd=draw(st.sampled_from([2, 4, 6])),
        f=draw(st.integers(2, 16)),
        n_ctx=draw(st.integers(2, 8)),  # >= 2 positions: queries, keys and RoPE all matter
    )
    attn, mlp = ir.attn, ir.mlp
    if not (draw(st.booleans()) if rope is None else rope):
        attn = attrs.evolve(attn, rope=None)
    if draw(st.booleans()):
        mlp = attrs.evolve(mlp, gate=None)
    if draw(st.booleans()):
        attn = attrs.evolve(attn, **{n: attrs.evolve(getattr(attn, n), bias=None) for n in "qkv"})
        mlp = attrs.evolve(mlp, **{n: attrs.evolve(getattr(mlp, n), bias=None) for n in ("up", "gate", "down") if getattr(mlp, n)})
    residual = draw(st.sampled_from(["sequential", "parallel"]))
    ir = attrs.evolve(ir, attn=attn, mlp=mlp, residual=residual)
    return with_dtype(ir, draw(st.sampled_from([np.float16, np.float32, np.float64])))


def inputs(ir: BlockIR, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, ir.n_ctx, ir.d_model))  # [B, T=n_ctx, d] float64


def matrices(ir: BlockIR, targets: str = "all") -> dict[str, Linear]:
    found = {f"{part}.{name}": getattr(getattr(ir, part), name) for part, name in TARGETS[targets]}
    return {key: lin for key, lin in found.items() if lin is not None}


def underived(ir: BlockIR, like: BlockIR) -> BlockIR:
    """``ir`` with ``like``'s source: what is left to compare once the derivation record is set aside."""
    return attrs.evolve(ir, source=like.source)


def recorded(ir: BlockIR, key: str, matrix: str) -> float:
    return float(ir.source[f"derivation.{key}.{matrix}"])


# ---------------------------------------------------------------------------------------------------
# lowrank
# ---------------------------------------------------------------------------------------------------


@given(ir=block_irs(), targets=st.sampled_from(["attn", "mlp", "all"]), extra=st.integers(0, 100))
def test_full_rank_lowrank_replays_as_the_original(ir, targets, extra):
    r = max(min(lin.weight.shape) for lin in matrices(ir, targets).values()) + extra
    low = bs.derive(ir, f"lowrank:r={r},targets={targets}")
    for key, lin in matrices(ir, targets).items():
        assert recorded(low, "energy_kept", key) == 1.0
        assert int(low.source[f"derivation.rank.{key}"]) == min(lin.weight.shape)
    x = inputs(ir)
    want, got = replay(ir, x).output, replay(low, x).output
    assert np.max(np.abs(got - want)) <= 1e-10 * np.max(np.abs(want))


@given(ir=block_irs(), targets=st.sampled_from(["attn", "mlp", "all"]))
def test_lowrank_energy_is_monotone_and_the_rank_bounded(ir, targets):
    full = max(min(lin.weight.shape) for lin in matrices(ir, targets).values())
    before = {key: 0.0 for key in matrices(ir, targets)}
    for r in range(1, full + 1):
        low = bs.derive(ir, f"lowrank:r={r},targets={targets}")
        assert set(matrices(low, "all")) == set(matrices(ir, "all"))
        for key, lin in matrices(low, targets).items():
            old = matrices(ir, targets)[key].weight
            p, eps = min(old.shape), float(np.finfo(old.dtype).eps)
            energy = recorded(low, "energy_kept", key)
            assert before[key] <= energy <= 1.0
            assert (energy < 1.0) == (r < p)  # random weights are full rank
            before[key] = energy
            assert int(low.source[f"derivation.rank.{key}"]) == min(r, p)
            w = lin.weight.astype(np.float64)
            s = np.linalg.svd(w, compute_uv=False)
            assert np.linalg.matrix_rank(w, tol=s[0] * max(w.shape) * eps) <= r
            # Eckart-Young: the squared relative Frobenius error is the energy dropped
            rel = np.linalg.norm(w - old.astype(np.float64)) / np.linalg.norm(old.astype(np.float64))
            assert abs(rel**2 - (1 - energy)) <= 4 * eps
            assert lin.weight.dtype == old.dtype and lin.bias is matrices(ir, targets)[key].bias
        untouched = set(matrices(ir, "all")) - set(matrices(ir, targets))
        assert all(matrices(low)[k] is matrices(ir)[k] for k in untouched)


# ---------------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------------


@given(ir=block_irs(), targets=st.sampled_from(["attn", "mlp", "all"]))
def test_int8_error_is_half_a_step_per_channel_and_requantising_is_exact(ir, targets):
    q8 = bs.derive(ir, f"int8:targets={targets}")
    for key, lin in matrices(q8, targets).items():
        old = matrices(ir, targets)[key].weight.astype(np.float64)  # [d_in, d_out]
        new = lin.weight.astype(np.float64)
        assert lin.weight.dtype == matrices(ir)[key].weight.dtype
        scale = np.max(np.abs(old), axis=0) / 127  # [d_out]
        err = np.abs(new - old)
        assert np.all(err <= scale / 2 * (1 + 1e-12) + np.spacing(np.abs(lin.weight)).astype(np.float64))
        levels = new / scale  # within the final cast's rounding of an integer in [-127, 127]
        assert np.all(np.abs(levels - np.rint(levels)) <= 128 * np.finfo(lin.weight.dtype).eps) and np.max(np.abs(np.rint(levels))) == 127
        assert recorded(q8, "max_abs_error", key) == np.max(err)
        rel = recorded(q8, "rel_error", key)
        assert rel == np.linalg.norm(new - old) / np.linalg.norm(old)
        assert 0 < rel <= np.sqrt(old.shape[0]) / 254 + 2 * np.finfo(lin.weight.dtype).eps
    again = bs.derive(underived(q8, ir), f"int8:targets={targets}")
    assert underived(again, q8) == q8  # requantising a quantised IR changes no bit


def test_int8_keeps_a_zero_column_zero():
    ir = tiny_ir()
    w = ir.attn.q.weight.copy()
    w[:, 2] = 0
    ir = attrs.evolve(ir, attn=attrs.evolve(ir.attn, q=attrs.evolve(ir.attn.q, weight=w)))
    q = bs.derive(ir, "int8:targets=attn").attn.q.weight
    assert np.all(np.isfinite(q)) and not np.any(q[:, 2]) and np.any(q[:, 3] != w[:, 3])


# ---------------------------------------------------------------------------------------------------
# noise-wq
# ---------------------------------------------------------------------------------------------------


@given(ir=block_irs(), seed=st.integers(0, 2**63))
def test_noise_wq_with_sigma_zero_is_bit_identical(ir, seed):
    w = ir.attn.q.weight.copy()
    w.flat[0] = -0.0  # a negative zero survives too
    ir = attrs.evolve(ir, attn=attrs.evolve(ir.attn, q=attrs.evolve(ir.attn.q, weight=w)))
    assert underived(bs.derive(ir, f"noise-wq:sigma=0,seed={seed}"), ir) == ir


@given(ir=block_irs(), sigma=st.sampled_from([1e-3, 0.1, 2.0]), seeds=st.lists(st.integers(0, 2**32), min_size=2, max_size=2, unique=True))
def test_noise_wq_is_absolute_gaussian_noise_reproducible_by_seed(ir, sigma, seeds):
    a, b = (bs.derive(ir, f"noise-wq:sigma={sigma},seed={s}") for s in seeds)
    assert bs.derive(ir, f"noise-wq:sigma={sigma},seed={seeds[0]}") == a
    assert not np.array_equal(a.attn.q.weight, b.attn.q.weight)
    assert not np.array_equal(a.attn.q.weight, ir.attn.q.weight)
    everything_else = attrs.evolve(a.attn, q=ir.attn.q)
    assert underived(attrs.evolve(a, attn=everything_else), ir) == ir and a.attn.q.bias is ir.attn.q.bias
    if ir.attn.q.weight.dtype == np.float64:
        noise = (a.attn.q.weight - ir.attn.q.weight) / sigma
        want = np.random.default_rng(seeds[0]).standard_normal(ir.attn.q.weight.shape)
        np.testing.assert_allclose(noise, want, rtol=0, atol=1e-12 * (1 + np.max(np.abs(ir.attn.q.weight)) / sigma))


# ---------------------------------------------------------------------------------------------------
# Every transform changes the block; invert-mask and prune-heads change the decisions too
# ---------------------------------------------------------------------------------------------------


@given(ir=block_irs(), data=st.data())
def test_every_transform_changes_the_replay(ir, data):
    heads = data.draw(st.lists(st.integers(0, ir.attn.n_heads - 1), min_size=1, unique=True))
    specs = [
        "lowrank:r=1,targets=all",  # every target is at least 2 x 2 and full rank
        "lowrank:r=1,targets=mlp",
        "int8",
        f"prune-heads:heads={'+'.join(map(str, heads))}",  # the gate was 1, W_O and W_V are random
        "invert-mask",  # query 0 now sees every key
        "zero-wv",
        "noise-wq:sigma=0.5,seed=3",  # query 1 weighs keys 0 and 1 differently
    ] + (["drop-rope"] if ir.attn.rope is not None else [])  # position 1 is rotated by 1 rad
    x = inputs(ir)
    base = replay(ir, x)
    for spec in specs:
        got = replay(bs.derive(ir, spec), x)
        # invert-mask, noise on W_Q and drop-rope act only through the softmax over keys: by as little as the values
        # differ or the softmax is saturated, which a random block can make small (hypothesis found 8e-5 of 167 for
        # invert-mask, 3e-11 for noise-wq and 3e-8 for drop-rope, seed 377948602); any change shows they acted
        through_softmax = ("invert-mask", "noise-wq:sigma=0.5,seed=3", "drop-rope")
        floor = 0.0 if spec in through_softmax else 1e-6 * np.max(np.abs(base.output))
        assert np.max(np.abs(got.output - base.output)) > floor, spec
        assert np.array_equal(got.mask, base.mask) == (spec != "invert-mask"), spec
        active = np.ones(ir.attn.n_heads, dtype=bool)
        if spec.startswith("prune-heads"):
            active[heads] = False
        if spec == "zero-wv":  # every head now outputs exactly zero: inactive, as the native observation would see it
            active[:] = False
        assert np.array_equal(got.head_active, active), spec


@given(ir=block_irs(rope=True), data=st.data())
def test_ablations_and_pruning_change_exactly_their_target(ir, data):
    heads = data.draw(st.lists(st.integers(0, ir.attn.n_heads - 1), min_size=1, unique=True))
    v = ir.attn.v
    gate = ir.attn.head_gate.copy()
    gate[heads] = 0
    expected = {
        "drop-rope": {"rope": None},
        "zero-wv": {"v": Linear(np.zeros_like(v.weight), None if v.bias is None else np.zeros_like(v.bias))},
        "invert-mask": {"mask": ~ir.attn.mask | np.eye(ir.n_ctx, dtype=bool)},
        f"prune-heads:heads={'+'.join(map(str, heads))}": {"head_gate": gate},
    }
    for spec, changes in expected.items():
        derived = bs.derive(ir, spec)
        assert underived(derived, ir) == attrs.evolve(ir, attn=attrs.evolve(ir.attn, **changes)), spec


@given(ir=block_irs())
def test_invert_mask_keeps_the_diagonal_and_every_replay_finite(ir):
    inverted = bs.derive(ir, "invert-mask")
    n = ir.n_ctx
    causal = np.tril(np.ones((n, n), dtype=bool))
    assert np.array_equal(ir.attn.mask, causal)
    assert np.array_equal(inverted.attn.mask, ~causal | np.eye(n, dtype=bool))  # self and the future
    x = inputs(ir)
    for t in range(1, n + 1):  # a replay shorter than n_ctx uses the table's top-left corner
        out = replay(inverted, x[:, :t])
        assert np.all(np.isfinite(out.output))
        assert np.array_equal(out.mask[0], np.triu(np.ones((t, t), dtype=bool)))


# ---------------------------------------------------------------------------------------------------
# Canonical specs, re-derivation, round trip, dispatch
# ---------------------------------------------------------------------------------------------------

CANONICAL = [
    ("lowrank", "lowrank:r=64,targets=attn"),
    ("lowrank:targets=all,r=3", "lowrank:r=3,targets=all"),
    ("lowrank:r=002,targets=mlp", "lowrank:r=2,targets=mlp"),
    ("int8", "int8:targets=all"),
    ("int8:targets=attn", "int8:targets=attn"),
    ("prune-heads:heads={hi}+0", "prune-heads:heads=0+{hi}"),
    ("drop-rope", "drop-rope"),
    ("invert-mask", "invert-mask"),
    ("zero-wv", "zero-wv"),
    ("noise-wq", "noise-wq:sigma=0.01,seed=0"),
    ("noise-wq:seed=7,sigma=1e-1", "noise-wq:sigma=0.1,seed=7"),
    ("noise-wq:sigma=-0", "noise-wq:sigma=0.0,seed=0"),
]


@given(ir=block_irs(rope=True), case=st.sampled_from(CANONICAL))
def test_the_canonical_spec_rederives_the_identical_ir(tmp_path_factory, ir, case):
    hi = ir.attn.n_heads - 1
    assume(hi > 0 or "{hi}" not in case[0])
    text, canonical = (s.format(hi=hi) for s in case)
    snapshot = copy.deepcopy(ir)
    derived = bs.derive(ir, text)
    assert ir == snapshot  # the original is untouched
    name = parse_spec(text).name
    kind = "surrogate" if name in bs.SURROGATES else "ablation"
    assert derived.source["derivation"] == canonical and derived.source["derivation.kind"] == kind
    assert derived.source["hf_class"] == "tiny" and all(isinstance(v, str) for v in derived.source.values())
    again = bs.derive(ir, derived.source["derivation"])
    assert again == derived and again.source == derived.source
    facade = get_plugins().surrogate if kind == "surrogate" else get_plugins().perturb
    assert facade(ir, parse_spec(canonical)) == derived
    stem = tmp_path_factory.mktemp("derived") / "ir"
    save_ir(derived, stem)
    loaded = load_ir(stem)
    assert loaded == derived and loaded.source == derived.source


def test_hooks_answer_only_their_own_names():
    ir = tiny_ir()
    assert set(bs.SURROGATES).isdisjoint(bs.ABLATIONS)
    for name in bs.ABLATIONS:
        assert bs.blockcert_surrogate(ir=ir, spec=Spec(name), traces=None) is None
    for name in bs.SURROGATES:
        assert bs.blockcert_perturb(ir=ir, spec=Spec(name, {"heads": "0"})) is None
    assert bs.blockcert_surrogate(ir=ir, spec=Spec("not-ours"), traces=None) is None
    assert bs.blockcert_perturb(ir=ir, spec=Spec("not-ours")) is None
    assert bs.blockcert_surrogate(ir=ir, spec=Spec("lowrank", {"r": "2"}), traces=[inputs(ir)]) == bs.derive(ir, "lowrank:r=2")


NO_ROPE = attrs.evolve(tiny_ir(), attn=attrs.evolve(tiny_ir().attn, rope=None))

BAD = [
    ("no-such-thing", "'no-such-thing'"),
    ("lowrank:rank=4", "unknown parameter 'rank' (lowrank takes r, targets)"),
    ("lowrank:r=0", "parameter 'r' must be an integer >= 1, got '0'"),
    ("lowrank:r=abc", "parameter 'r' must be an integer >= 1, got 'abc'"),
    ("lowrank:r=-2", "parameter 'r'"),
    ("lowrank:targets=attention", "parameter 'targets' must be one of attn, mlp, all"),
    ("int8:r=4", "unknown parameter 'r' (int8 takes targets)"),
    ("prune-heads", "parameter 'heads' is required"),
    ("prune-heads:heads=99", "parameter 'heads': query head 99 does not exist (block 3 has heads 0-3)"),
    ("prune-heads:heads=", "'heads='"),
    ("prune-heads:heads=1+1", "parameter 'heads' must be distinct"),
    ("prune-heads:heads=1+", "parameter 'heads'"),
    ("prune-heads:heads=-1", "parameter 'heads'"),
    ("noise-wq:sigma=-1", "parameter 'sigma' must be a finite number >= 0, got '-1'"),
    ("noise-wq:sigma=nan", "parameter 'sigma'"),
    ("noise-wq:sigma=inf", "parameter 'sigma'"),
    ("noise-wq:seed=1.5", "parameter 'seed' must be an integer >= 0"),
    ("drop-rope:x=1", "unknown parameter 'x' (drop-rope takes no parameters)"),
    ("zero-wv:sigma=1", "unknown parameter 'sigma' (zero-wv takes no parameters)"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_specs_are_user_errors_naming_the_parameter(text, fragment):
    with pytest.raises(UserError) as info:
        bs.derive(tiny_ir(), text)
    assert fragment in info.value.message and repr(text) in info.value.message
    assert "\n" not in info.value.message


def test_misapplied_specs_are_user_errors():
    with pytest.raises(UserError, match=r"ablation 'drop-rope': block 3 has no RoPE to drop"):
        bs.derive(NO_ROPE, "drop-rope")
    with pytest.raises(UserError, match=r"surrogate 'prune-heads:heads=': parameter 'heads' must be"):
        bs.blockcert_surrogate(ir=tiny_ir(), spec=Spec("prune-heads", {"heads": ""}), traces=None)
    with pytest.raises(UserError, match=r"already derived \('zero-wv'\)"):
        bs.derive(bs.derive(tiny_ir(), "zero-wv"), "int8")
    with pytest.raises(UserError, match=r"surrogates: lowrank, int8, prune-heads, minimize; ablations: drop-rope, invert-mask, zero-wv, noise-wq"):
        bs.derive(tiny_ir(), "lowrank-ish")


def test_the_plugin_never_imports_torch():
    code = (
        "import sys\n"
        "import blockcert_surrogates as bs\n"
        "from irfactory import tiny_ir\n"
        "from blockcert_surrogates.transforms import full_ranks\n"
        "ranks = '+'.join(f'{k}:{v}' for k, v in full_ranks(tiny_ir()).items())\n"
        "extra = {'prune-heads': ':heads=1', 'minimize': f':heads=0f,neurons=ff0f,rank={ranks},score=attribution,log={64 * \"0\"}'}\n"
        "for spec in bs.SURROGATES + bs.ABLATIONS:\n"
        "    bs.derive(tiny_ir(), spec + extra.get(spec, ''))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "tests", timeout=120)
