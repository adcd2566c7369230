"""The interpreter is sensitive: a wrong IR is caught; decisions are reported; numpy needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import attrs
import numpy as np
import pytest
import torch

import blockcert
from blockcert.interpreter import replay
from blockcert.ir import save_ir
from strategies import seeded_model

TOL = 1e-5


@pytest.fixture(scope="module")
def llama_case():
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=40, num_hidden_layers=1,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    loaded = blockcert.wrap_model(seeded_model(config, 7))
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    xs = loaded.native.residual_stream(ids)
    ir = blockcert.get_plugins().to_ir(loaded.native, 0, 16)
    return ir, xs[0], xs[1]


def _rel(ir, x_in, x_out) -> float:
    return float((replay(ir, x_in).output - x_out).abs().max() / x_out.abs().max())


def test_correct_ir_matches(llama_case):
    ir, x_in, x_out = llama_case
    assert _rel(ir, x_in, x_out) <= TOL


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda ir: attrs.evolve(ir, attn=attrs.evolve(ir.attn, rope=attrs.evolve(ir.attn.rope, style="interleaved"))), id="rope-style"),
        pytest.param(lambda ir: attrs.evolve(ir, attn=attrs.evolve(ir.attn, rope=None)), id="drop-rope"),
        pytest.param(lambda ir: attrs.evolve(ir, attn=attrs.evolve(ir.attn, scale=ir.attn.scale * 1.001)), id="scale"),
        pytest.param(lambda ir: attrs.evolve(ir, attn=attrs.evolve(ir.attn, mask=np.ones_like(ir.attn.mask))), id="no-causal-mask"),
        pytest.param(lambda ir: attrs.evolve(ir, norm1=attrs.evolve(ir.norm1, kind="layernorm")), id="norm-kind"),
        pytest.param(lambda ir: attrs.evolve(ir, mlp=attrs.evolve(ir.mlp, activation="gelu")), id="activation"),
        pytest.param(lambda ir: attrs.evolve(ir, residual="parallel"), id="parallel-residual"),
        pytest.param(lambda ir: attrs.evolve(ir, attn=attrs.evolve(ir.attn, head_gate=np.array([1, 1, 1, 1, 1, 0], np.float32))), id="head-gate"),
    ],
)
def test_wrong_ir_is_caught(llama_case, mutate):
    """The equivalence check can fail: each of these small IR mistakes exceeds the tolerance."""
    ir, x_in, x_out = llama_case
    assert _rel(mutate(ir), x_in, x_out) > TOL


def test_decisions_report_mask_and_gates(llama_case):
    ir, x_in, _ = llama_case
    gated = attrs.evolve(ir, attn=attrs.evolve(ir.attn, head_gate=np.array([1, 0, 1, 1, 1, 1], np.float32)))
    out = replay(gated, x_in)
    B, T = x_in.shape[:2]
    assert out.mask.shape == (B, T, T) and out.mask.dtype == torch.bool
    assert torch.equal(out.mask[0], torch.tril(torch.ones(T, T, dtype=torch.bool)))
    assert out.head_active.tolist() == [True, False, True, True, True, True]


def test_positions_index_rope_and_mask(llama_case):
    """Replaying a suffix at its true positions (keys before it are absent) differs from positions 0..T-1."""
    ir, x_in, _ = llama_case
    pos = torch.arange(3, 3 + x_in.shape[1] - 3)[None].expand(2, -1)
    shifted = replay(ir, x_in[:, 3:], positions=pos).output
    plain = replay(ir, x_in[:, 3:]).output
    assert not torch.allclose(shifted, plain)


def test_position_beyond_tables_is_an_error(llama_case):
    ir, x_in, _ = llama_case
    with pytest.raises(ValueError, match="n_ctx"):
        replay(ir, x_in, positions=torch.full(x_in.shape[:2], ir.n_ctx))


def test_numpy_reference_never_imports_torch(llama_case, tmp_path):
    ir, x_in, x_out = llama_case
    save_ir(ir, tmp_path / "ir")
    np.save(tmp_path / "x.npy", x_in.double().numpy())
    script = f"""
import sys, json, numpy as np
from blockcert.ir import load_ir
from blockcert.interpreter import replay
ir = load_ir({str(tmp_path / 'ir')!r})
y = replay(ir, np.load({str(tmp_path / 'x.npy')!r})).output
np.save({str(tmp_path / 'y.npy')!r}, y)
print(json.dumps({{"torch": "torch" in sys.modules, "dtype": str(y.dtype)}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report == {"torch": False, "dtype": "float64"}
    y = np.load(tmp_path / "y.npy")
    assert np.abs(y - x_out.double().numpy()).max() / float(x_out.abs().max()) <= TOL


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_a_query_that_may_attend_to_no_key_replays_as_hf_gives_it(backend):
    """Left padding with a key mask: the padding queries at the start may attend to no key. HF's additive mask
    gives every key the same score there (a uniform average of all values); the replay must too, not NaN."""
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=64, hidden_size=24, intermediate_size=40, num_hidden_layers=1,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    config._attn_implementation = "eager"
    loaded = blockcert.wrap_model(seeded_model(config, 3))
    x = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(1))
    positions = torch.arange(7)[None].expand(2, 7)
    key_mask = torch.ones(2, 7, dtype=torch.bool)
    key_mask[0, :3] = False  # prompt 0 is left-padded by 3: its queries 0..2 may attend to nothing
    with torch.no_grad():
        native = loaded.native.call_block(0, x, positions, key_mask)
    ir = blockcert.get_plugins().to_ir(loaded.native, 0, 8)
    if backend == "torch":
        got = replay(ir, x, positions, key_mask).output
    else:
        got = torch.from_numpy(replay(ir, x.double().numpy(), positions.numpy(), key_mask.numpy()).output).float()
    assert torch.isfinite(got).all()
    assert float((got - native).abs().max() / native.abs().max()) <= 1e-5
