"""Property: for any small GPT-2 / Llama config, replaying the IR equals the native HF block.

torch float32 replay: max|Δ| / max|h| ≤ 1e-5; numpy float64 replay vs native float32: ≤ 1e-5.
The IR written to disk and read back replays bit-identically.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import DECODER_FAMILIES, gpt2_configs, llama_configs, qwen2_configs, seeded_model, token_batches

import blockcert
from blockcert.interpreter import replay
from blockcert.ir import load_ir, save_ir
from blockcert.native import default_positions

TOL = 1e-5


def _check(config, batch, tmp_path_factory) -> None:
    B, T, seed = batch
    model = seeded_model(config, seed)
    loaded = blockcert.wrap_model(model)
    native = loaded.native
    ids = torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))
    xs = native.residual_stream(ids)
    native64 = blockcert.wrap_model(copy.deepcopy(model).double()).native  # the same HF blocks, in float64
    positions = default_positions(ids)
    plugins = blockcert.get_plugins()
    n_ctx = T + (seed % 5)  # tables may be longer than the replayed sequence
    for index in range(native.n_blocks):
        ir = plugins.to_ir(native, index, n_ctx)
        x_in, x_out = xs[index], xs[index + 1]
        peak = float(x_out.abs().max())
        y = plugins.replay(ir, x_in).output
        assert y.dtype == torch.float32
        y64 = replay(ir, x_in.double().numpy()).output
        assert y64.dtype == np.float64
        with torch.no_grad():
            native_f64 = native64.call_block(index, x_in.double(), positions).numpy()
        # float32: TOL of the output's peak, or 4x the float32 rounding of either side on these inputs (the IR's float32
        # replay against its float64 one, the HF block's float32 output against its float64 one), whichever is larger:
        # large sublayer outputs that nearly cancel (hypothesis found hidden_size=2, seed 1214275203: 7.8e-6 between the
        # IR's own replays at peak 1.87), or a sandwich norm rescaling a small sublayer output (gemma2, seed 3028668624:
        # 1.5e-4 at peak 7.1), round more than 1e-5 of the peak in float32
        band = max(TOL * peak, 4 * float(np.abs(y.double().numpy() - y64).max()),
                   4 * float(np.abs(x_out.double().numpy() - native_f64).max()))
        assert float((y - x_out).abs().max()) <= band, f"torch replay, block {index}"
        assert float(np.abs(y64 - x_out.double().numpy()).max()) <= band, f"numpy replay, block {index}"
        # disk round trip: identical record, bit-identical replay
        stem = tmp_path_factory.mktemp("ir") / "ir"
        save_ir(ir, stem)
        again = load_ir(stem)
        assert again == ir
        assert torch.equal(plugins.replay(again, x_in).output, y)


@given(config=llama_configs(), batch=token_batches)
def test_llama_ir_replays_native_block(config, batch, tmp_path_factory):
    _check(config, batch, tmp_path_factory)


@given(config=gpt2_configs(), batch=token_batches)
def test_gpt2_ir_replays_native_block(config, batch, tmp_path_factory):
    _check(config, batch, tmp_path_factory)


@given(config=qwen2_configs(), batch=token_batches)
def test_qwen2_ir_replays_native_block(config, batch, tmp_path_factory):
    assert blockcert.wrap_model(seeded_model(config, 0)).arch == "qwen2"
    _check(config, batch, tmp_path_factory)


@pytest.mark.parametrize("arch", sorted(DECODER_FAMILIES))
@given(data=st.data())
def test_decoder_family_ir_replays_native_block(arch, data, tmp_path_factory):
    """Mistral, Qwen3, OLMo 2, Gemma 2 and Gemma 3: the plugin is the one picked, and every block's IR replays it."""
    config = data.draw(DECODER_FAMILIES[arch]())
    assert blockcert.wrap_model(seeded_model(config, 0)).arch == arch
    _check(config, data.draw(token_batches), tmp_path_factory)


FAMILIES = {"llama": llama_configs, "gpt2": gpt2_configs, "qwen2": qwen2_configs, **DECODER_FAMILIES}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@given(data=st.data())
def test_native_pipeline_equals_hf_forward(family, data):
    """embed -> call_block* -> head is the HF model's own forward: the adapters trace the real model."""
    config = data.draw(FAMILIES[family]())
    B, T, seed = data.draw(token_batches)
    model = seeded_model(config, seed)
    ids = torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = model(ids).logits
    got = blockcert.wrap_model(model).native.forward(ids)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
