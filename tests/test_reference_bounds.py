"""The independent reference for the Lipschitz bounds (blockcert/verifier/reference/bounds.py) and the verifier's check
against it (blockcert/verifier/bounds.py: recheck_lipschitz).

(a) On real IRs of random-init GPT-2 and Llama blocks the reference brackets the optimized bounds within the
    stated ratios (and a bound moved by a factor is caught, field by field).
(b) The reference's values equal values derived by hand from docs/bounds.md on tiny cases.
(c) A run whose bounds.json claims K_attn x 1000 (or halved), with every composition, summary and digest redone
    consistently, passes level hashes and fails `verify --level replay --reference numpy`, naming K_attn.
"""

from __future__ import annotations

import json
import math
import shutil
from fractions import Fraction
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

import blockcert
from blockcert.bounds import record as lipschitz
from blockcert.artifacts.bounds_record import UPPER_FIELDS, BoundSettings
from blockcert.verifier.checks import Checker
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR, Linear, Norm, Rope
from blockcert.verifier.reference import bounds as RB
from blockcert.verifier.core import verify
from blockcert.verifier.bounds import RATIOS, SOUND_DELTA, SPECTRAL_RATIO, _fdown, _fup, epsilon_seq, recheck_lipschitz
from irfactory import tiny_ir
from strategies import seeded_model

GOLDEN = Path(__file__).parent / "data" / "golden-run-v2"


# ---------------------------------------------------------------------------------------------------
# (a) real IRs
# ---------------------------------------------------------------------------------------------------


def _hf_blocks(config, seed: int, lengths=(12, 7)) -> list[tuple[BlockIR, list[np.ndarray]]]:
    """Every block's IR of a seeded random-init HF model, with its residual-stream inputs on random prompts."""
    model = seeded_model(config, seed)
    native = blockcert.wrap_model(model).native
    plugins = blockcert.get_plugins()
    gen = torch.Generator().manual_seed(seed)
    streams = []
    for t in lengths:
        with torch.no_grad():
            streams.append(native.residual_stream(torch.randint(0, config.vocab_size, (1, t), generator=gen)))
    return [(plugins.to_ir(native, i, 32), [s[i][0].double().numpy() for s in streams]) for i in range(native.n_blocks)]


def _configs() -> dict:
    from transformers import GPT2Config, LlamaConfig

    return {
        "gpt2": GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, activation_function="gelu_new"),
        "gpt2-gelu": GPT2Config(vocab_size=64, n_positions=64, n_embd=24, n_layer=1, n_head=2, activation_function="gelu", n_inner=40),
        "gpt2-relu": GPT2Config(vocab_size=64, n_positions=64, n_embd=24, n_layer=1, n_head=3, activation_function="relu"),
        "llama": LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, attention_bias=True),
        # matrices wider than 128 on both sides: the certified spectral norms take the Gram-Cholesky path (not exact)
        "llama-wide": LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=1, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=64),
    }


@pytest.fixture(scope="module")
def cases() -> list[tuple[str, BlockIR, list[np.ndarray]]]:
    out = []
    for name, config in _configs().items():
        for ir, inputs in _hf_blocks(config, 3):
            for residual in ("sequential", "parallel"):
                out.append((f"{name}/{ir.index}/{residual}", attrs.evolve(ir, residual=residual), inputs))
    return out


def _record(ir: BlockIR, inputs: list[np.ndarray], settings: BoundSettings) -> dict:
    """The bounds.json record's certified part as the producer writes it (JSON round trip: inf -> null)."""
    return {"settings": attrs.asdict(settings), "certified": json.loads(json.dumps(lipschitz.certified_part(ir, inputs, settings)))}


def test_cases_cover_the_architectures(cases):
    kinds = {(ir.norm1.kind, ir.mlp.activation, ir.mlp.gate is not None, ir.attn.rope is not None, ir.attn.n_kv_heads < ir.attn.n_heads,
              ir.residual) for _, ir, _ in cases}
    assert ("layernorm", "gelu_tanh", False, False, False, "sequential") in kinds  # GPT-2
    assert ("rmsnorm", "silu", True, True, True, "sequential") in kinds  # Llama: RMSNorm, RoPE, GQA, SwiGLU
    assert {"parallel", "sequential"} == {k[-1] for k in kinds}


def test_reference_brackets_the_optimized_bounds(cases):
    settings = BoundSettings()
    worst = dict.fromkeys([*UPPER_FIELDS, "spectral"], 1.0)
    for name, ir, inputs in cases:
        ref = RB.certified_part(ir, inputs, settings)
        opt = lipschitz.certified_part(ir, inputs, settings)
        for key in UPPER_FIELDS:
            r, o = ref["upper"][key], opt["upper"][key]
            assert math.isfinite(r) and o is not None, (name, key)
            assert r * (1 - SOUND_DELTA) <= o <= r * RATIOS[key], (name, key, o / r)
            worst[key] = max(worst[key], o / r)
        for m, s in ref["spectral"].items():
            sp = opt["spectral"][m]
            assert sp["lower"] <= s["sigma"] * (1 + SOUND_DELTA) and s["sigma"] * (1 - SOUND_DELTA) <= sp["upper"] <= s["sigma"] * SPECTRAL_RATIO
            worst["spectral"] = max(worst["spectral"], sp["upper"] / s["sigma"])
        for key in ("min_scale1", "min_scale2"):
            assert opt[key] == pytest.approx(ref[key], rel=1e-9), (name, key)
        assert (opt["seq_len"], opt["tokens"], opt["residual"]) == (ref["seq_len"], ref["tokens"], ref["residual"])
        # the verifier's own check, on the producer's record, passes
        c = Checker()
        recheck_lipschitz(c, _record(ir, inputs, settings), ir, inputs)
        assert all(ch.ok for ch in c.checks), (name, [ch for ch in c.checks if not ch.ok])
    # the measured worst cases documented next to RATIOS (1.0013 / 1.0025 / 1.0025 / 1.0038 / 1.0038, spectral 1.0013)
    assert worst["K_attn"] > 1.0005 and worst["spectral"] > 1.0005, worst  # the Gram-Cholesky case is really exercised
    assert all(worst[k] < 1.01 for k in worst), worst


@pytest.mark.parametrize("field", UPPER_FIELDS)
@pytest.mark.parametrize("factor", [1000.0, 0.5, 1.1, 0.9])
def test_check_names_a_bound_moved_by_a_factor(cases, field, factor):
    name, ir, inputs = next(c for c in cases if c[0].startswith("llama/0/sequential"))
    rec = _record(ir, inputs, BoundSettings())
    rec["certified"]["upper"][field] *= factor
    c = Checker()
    recheck_lipschitz(c, rec, ir, inputs)
    failed = [ch.name for ch in c.checks if not ch.ok]
    assert failed and all(field in n for n in failed), failed
    assert ("(sound)" if factor < 1 else "(tight)") in failed[0]


def test_check_catches_spectral_scale_and_null_claims(cases):
    name, ir, inputs = next(c for c in cases if c[0].startswith("gpt2/0/sequential"))
    settings = BoundSettings()

    def failed(edit) -> list[str]:
        rec = _record(ir, inputs, settings)
        edit(rec["certified"])
        c = Checker()
        recheck_lipschitz(c, rec, ir, inputs)
        return [ch.name for ch in c.checks if not ch.ok]

    assert failed(lambda r: r["spectral"]["attn.o"].update(upper=r["spectral"]["attn.o"]["upper"] * 0.99)) == [
        "independent spectral attn.o upper >= sigma_max (sound)"]
    assert failed(lambda r: r["spectral"]["attn.o"].update(lower=r["spectral"]["attn.o"]["lower"] * 1.001)) == [
        "independent spectral attn.o lower <= sigma_max"]
    assert failed(lambda r: r["spectral"]["mlp.up"].update(upper=r["spectral"]["mlp.up"]["upper"] * 1.05))[0].startswith("independent spectral mlp.up")
    assert failed(lambda r: r.update(min_scale2=r["min_scale2"] * 1.001)) == ["independent min_scale2"]
    assert failed(lambda r: r.update(hybrid_input_radius=r["hybrid_input_radius"] * 2)) == ["independent hybrid_input_radius"]
    assert failed(lambda r: r.update(tokens=r["tokens"] + 1)) == ["independent tokens"]
    assert failed(lambda r: r["upper"].update(K_mlp=None)) == ["independent K_mlp: a finite bound"]


# ---------------------------------------------------------------------------------------------------
# (b) hand-derived values (docs/bounds.md §2-§5)
# ---------------------------------------------------------------------------------------------------


def _lin(W, b=None) -> Linear:
    return Linear(np.asarray(W, np.float64), None if b is None else np.asarray(b, np.float64))


def _one_head_ir(a: float, b: float, scale: float, T: int, *, rope_scale: float | None = None, mlp: MLP | None = None) -> BlockIR:
    """d = head_dim = 2, one head, W_Q = aI, W_K = bI, W_V = W_O = I, no biases; RMSNorms with unit weights, eps 0.25."""
    d = 2
    I = np.eye(d)
    rope = None
    if rope_scale is not None:
        angles = np.outer(np.arange(T), [1.0, 1.0])
        rope = Rope(rope_scale * np.cos(angles), rope_scale * np.sin(angles))
    attn = Attention(q=_lin(a * I), k=_lin(b * I), v=_lin(I), o=_lin(I), n_heads=1, n_kv_heads=1, head_dim=d, scale=scale,
                     mask=np.tril(np.ones((T, T), bool)), head_gate=np.ones(1), rope=rope)
    norm = Norm("rmsnorm", np.ones(d), eps=0.25)
    mlp = mlp or MLP("relu", up=_lin(I), down=_lin(I))
    return BlockIR(schema_version=SCHEMA_VERSION, arch="llama", index=0, d_model=d, residual="sequential", norm1=norm, attn=attn,
                   norm2=norm, mlp=mlp)


def test_norm_bound_hand_values():
    n = Norm("rmsnorm", np.ones(6), eps=0.25)
    assert RB.norm_bound(n, 0.0) == pytest.approx(2.0, rel=1e-15)  # 1 / sqrt(0 + 0.25)
    assert RB.norm_bound(n, 0.5) == pytest.approx(1 / math.sqrt(0.5), rel=1e-15)
    assert RB.norm_bound(Norm("layernorm", np.array([1.0, -3.0, 2.0]), eps=0.0), 1.5) == pytest.approx(2.0, rel=1e-15)  # 3 / 1.5
    assert RB.norm_bound(Norm("rmsnorm", np.ones(2), eps=0.0), 0.0) == math.inf
    assert RB.norm_output_radius(Norm("layernorm", np.array([1.0, -2.0, 0.5, 1.0]), eps=0.0, bias=np.array([3.0, 4.0, 0.0, 0.0]))) == 2 * 2 + 5


@pytest.mark.parametrize("T", [1, 4, 6])
def test_attention_value_path_alone_is_sqrt_c(T):
    """W_Q = W_K = 0: no softmax path, the value path is sqrt(c) ||W_V||, c = T for a causal mask (column 0)."""
    ir = _one_head_ir(0.0, 0.0, 1.0, T)
    assert RB.column_count(ir.attn.mask, T) == T
    assert RB.attention_on_normed(ir, T) == pytest.approx(math.sqrt(T), rel=1e-12)
    assert RB.attention_bound(ir, 0.0, T) == pytest.approx(2 * math.sqrt(T), rel=1e-12)  # times norm1's 2


def test_attention_softmax_path_hand_value():
    """R = sqrt(2) (unit weights, d = 2), R_q = a R, R_k = b R: L = sqrt(c) + |s| R (b R a + sqrt(c) a R b) = sqrt(c) + 2|s|ab(1 + sqrt(c))."""
    a, b, s, T = 0.7, 1.3, -0.4, 5
    c = T
    want = math.sqrt(c) + 2 * abs(s) * a * b * (1 + math.sqrt(c))
    assert RB.attention_on_normed(_one_head_ir(a, b, s, T), T) == pytest.approx(want, rel=1e-12)
    # RoPE (an exact rotation, rho = 1): R_k = rho (||W_K|| R + ||b_k||) = b R, the same value
    assert RB.rope_factor(_one_head_ir(a, b, s, T, rope_scale=1.0).attn) == pytest.approx(1.0, rel=1e-15)
    assert RB.attention_on_normed(_one_head_ir(a, b, s, T, rope_scale=1.0), T) == pytest.approx(want, rel=1e-12)
    # tables scaled by 2: rho = 2; R_q = rho a R and R_k = rho b R (RoPE), each softmax term gains rho^2
    rho = 2.0
    want2 = math.sqrt(c) + abs(s) * math.sqrt(2) * (rho * b * math.sqrt(2) * rho * a + math.sqrt(c) * rho * a * math.sqrt(2) * rho * b)
    assert RB.rope_factor(_one_head_ir(a, b, s, T, rope_scale=rho).attn) == pytest.approx(rho, rel=1e-15)
    assert RB.attention_on_normed(_one_head_ir(a, b, s, T, rope_scale=rho), T) == pytest.approx(want2, rel=1e-12)


def test_column_count_of_a_sliding_window():
    n = 8
    i, j = np.indices((n, n))
    window = (j <= i) & (i - j < 3)  # each key is seen by itself and the next 2 queries
    assert RB.column_count(window, n) == 3 and RB.column_count(window, 2) == 2


def test_plain_mlp_hand_value():
    """relu, W_up = W_down = I: sup|relu'| = 1 on the ball, so the MLP on normed tokens is 1; times norm2's bound."""
    ir = _one_head_ir(0.0, 0.0, 1.0, 3)
    assert RB.mlp_bound(ir, 0.0) == pytest.approx(2.0, rel=1e-15)
    assert RB.mlp_bound(ir, 0.5) == pytest.approx(1 / math.sqrt(0.5), rel=1e-15)


def test_gated_mlp_hand_value():
    """d = f = 1, gate = up = down = 1, silu, unit RMSNorm weight: z in [-1, 1], so g = u = z in [-1, 1]; t* = 2.40 and
    t_min = -1.28 lie outside, D1 = silu'(1) * 1, D2 = silu(1); the bound is min(D1 + D2, sqrt(2) sqrt(D1^2 + D2^2))."""
    one = np.ones((1, 1))
    m = MLP("silu", up=_lin(one), down=_lin(one), gate=_lin(one))
    sig = 1 / (1 + math.exp(-1))
    D1, D2 = sig * (1 + (1 - sig)), sig
    z = RB.mlp_jacobian_sup(m, np.zeros((1, 1)), np.array([1.0]))[0]
    assert z == pytest.approx(min(D1 + D2, math.sqrt(2) * math.hypot(D1, D2)), rel=1e-12)


def test_activation_critical_points_match_the_table():
    """docs/bounds.md §4: t* and t_min of silu, gelu and gelu_tanh."""
    assert RB._CRITICAL["silu"] == pytest.approx((2.39936, -1.27846), abs=1e-5)
    assert RB._CRITICAL["gelu"] == pytest.approx((math.sqrt(2), -0.75179), abs=1e-5)
    assert RB._CRITICAL["gelu_tanh"] == pytest.approx((1.41850, -0.75246), abs=1e-5)
    for kind, max_d, neg_d, amin in (("silu", 1.09984, 0.09984, 0.27846), ("gelu", 1.12890, 0.12890, 0.16997),
                                     ("gelu_tanh", 1.12899, 0.12899, 0.17004)):
        t_star, t_min = RB._CRITICAL[kind]
        assert RB.dact_sup(kind, np.array([0.0]), np.array([5.0]))[0] == pytest.approx(max_d, abs=1e-5)
        assert RB.dact_sup(kind, np.array([-5.0]), np.array([-1.0]))[0] == pytest.approx(neg_d, abs=1e-5)
        assert RB.act_sup(kind, np.array([-1.5]), np.array([-0.2]))[0] == pytest.approx(amin, abs=1e-5)


def test_block_composition_and_radius_hand_values():
    ir = _one_head_ir(0.0, 0.0, 1.0, 4)
    X = [np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [2.0, 2.0]])]
    ref = RB.certified_part(ir, X, BoundSettings(margin=0.5, radius=2.0))
    up = ref["upper"]
    assert up["K_attn"] == pytest.approx(math.sqrt(4) * up["K_norm1"], rel=1e-12)
    assert up["analytic_upper_bound"] == pytest.approx((1 + up["K_attn"]) * (1 + up["K_mlp"]), rel=1e-15)
    assert ref["hybrid_input_radius"] == pytest.approx(2.0 / (1 + up["K_attn"]), rel=1e-15)
    # margin x the smallest rms (the token (0.5, 0.5): rms 0.5), shrunk by the documented 1e-6
    assert ref["min_scale1"] == pytest.approx(0.5 * 0.5 * (1 - RB.MIN_SCALE_SHRINK), rel=1e-12)
    par = RB.certified_part(attrs.evolve(ir, residual="parallel"), X, BoundSettings(margin=0.5, radius=2.0))
    assert par["upper"]["analytic_upper_bound"] == pytest.approx(1 + par["upper"]["K_attn"] + par["upper"]["K_mlp"], rel=1e-15)
    assert par["hybrid_input_radius"] == 2.0


def test_reference_forward_equals_the_interpreter():
    """The reference's own float64 attention (for the norm2 inputs h = x + Attn(norm1(x))) agrees with the IR
    interpreter: h plus the interpreter's MLP half is the interpreter's block output."""
    from array_api_compat import array_namespace

    from blockcert import interpreter as itp

    ir = tiny_ir(5)
    X = np.random.default_rng(5).standard_normal((ir.n_ctx, ir.d_model))
    h = RB.norm2_inputs(ir, [X])[0]
    xp = array_namespace(X)
    y = h + itp.mlp(xp, itp.norm(xp, h[None], ir.norm2), ir.mlp)[0]
    assert np.allclose(y, itp.replay(ir, X[None]).output[0], rtol=1e-12, atol=1e-12)
    assert np.allclose(RB.norm_forward(ir.norm2, h), itp.norm(xp, h, ir.norm2), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# (c) a forged bounds.json with every digest consistent
# ---------------------------------------------------------------------------------------------------


def _forge_k_attn(root: Path, factor: float) -> None:
    """K_attn of block 0 times ``factor``, the compositions, radius and summary redone in exact rationals, the
    certificate and the run summary re-digested: level hashes cannot tell."""
    from adversary import edit_json, resummarize

    path = root / "block_000/bounds.json"
    rec = json.loads(path.read_bytes())
    up = rec["certified"]["upper"]
    one = Fraction(1)
    up["K_attn"] = up["K_attn"] * factor
    ka = Fraction(up["K_attn"])
    up["analytic_upper_bound"] = _fup((one + ka) * (one + Fraction(up["K_mlp"])))
    up["hybrid_upper_bound"] = _fup((one + ka) * (one + Fraction(up["K_mlp_local"])))
    rec["certified"]["hybrid_input_radius"] = _fdown(Fraction(rec["settings"]["radius"]) / (one + ka))
    edit_json(path, lambda r: r.update(rec))

    def summary(cert: dict) -> None:
        s = cert["predicate"]["lipschitz"]
        s["analytic_upper_bound"], s["hybrid_upper_bound"] = up["analytic_upper_bound"], up["hybrid_upper_bound"]
        s["hybrid_input_radius"] = rec["certified"]["hybrid_input_radius"]

    edit_json(root / "block_000/certificate.json", summary)
    resummarize(root)


def test_golden_bounds_pass_the_independent_check():
    report = verify(GOLDEN, level="replay", reference="numpy")
    names = [ch.name for cert in report.certificates for ch in cert.checks]
    assert report.ok, [ch for cert in report.certificates for ch in cert.checks if not ch.ok]
    assert "independent K_attn >= reference (sound)" in names and any(n.startswith("independent K_attn <= ") for n in names)


def test_epsilon_seq_reproduces_the_stored_value_exactly():
    from safetensors.numpy import load_file

    for block in ("block_000", "block_001"):
        rec = json.loads((GOLDEN / block / "bounds.json").read_bytes())
        errors = [v for k, v in sorted(load_file(GOLDEN / block / "errors.safetensors").items()) if k.endswith(".error")]
        assert epsilon_seq(errors) == rec["epsilon_seq"] == lipschitz.epsilon_seq(errors)
    third = Fraction(1, 3)
    assert Fraction(_fdown(third)) < third < Fraction(_fup(third)) and _fup(Fraction(1, 4)) == _fdown(Fraction(1, 4)) == 0.25
    assert math.nextafter(_fdown(Fraction(1, 3)), 1) == _fup(Fraction(1, 3))
    assert _fup(Fraction(10) ** 400) == math.inf and _fdown(-(Fraction(10) ** 400)) == -math.inf


@pytest.mark.parametrize("factor", [1000.0, 0.5])
def test_forged_k_attn_fails_replay_numpy(tmp_path, factor):
    root = tmp_path / "run"
    shutil.copytree(GOLDEN, root)
    _forge_k_attn(root, factor)
    assert verify(root, level="hashes").ok  # consistent: only recomputation can catch it
    report = verify(root, level="replay", reference="numpy")
    failed = [ch.name for cert in report.certificates for ch in cert.checks if not ch.ok]
    assert not report.ok
    want = "independent K_attn >= reference (sound)" if factor < 1 else "independent K_attn <= "
    assert any(n.startswith(want) for n in failed), failed
    assert "independent hybrid_input_radius" in failed
