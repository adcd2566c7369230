"""The helpers a plugin author builds an adapter from (blockcert.native), and the errors a misfit gets:
what the third-party authors of GPT-NeoX, Phi and GPT-J adapters tripped over (#19 item 4)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from blockcert.errors import UserError
from blockcert.native import linear_from_tensors, rope_from_rotary_embedding, split_fused_qkv


def apply(lin, x: np.ndarray) -> np.ndarray:
    y = x @ lin.weight
    return y if lin.bias is None else y + lin.bias


@given(d_in=st.integers(1, 9), d_out=st.integers(1, 9), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_from_tensors_computes_what_torch_linear_does(d_in, d_out, bias, seed):
    torch.manual_seed(seed)
    module = torch.nn.Linear(d_in, d_out, bias=bias)
    x = torch.randn(3, d_in)
    want = module(x).detach().numpy()
    got = apply(linear_from_tensors(module.weight, module.bias), x.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    conv_style = apply(linear_from_tensors(module.weight.T, module.bias, layout="in_out"), x.numpy())
    np.testing.assert_allclose(conv_style, want, rtol=1e-5, atol=1e-6)


@given(h=st.integers(1, 4), h_kv=st.integers(1, 4), hd=st.integers(1, 4), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_split_fused_qkv_concatenated(h, h_kv, hd, bias, seed):
    torch.manual_seed(seed)
    sizes = [h * hd, h_kv * hd, h_kv * hd]
    fused = torch.nn.Linear(5, sum(sizes), bias=bias)
    x = torch.randn(2, 5)
    y = fused(x).detach().numpy()
    q, k, v = split_fused_qkv(fused.weight, fused.bias, sizes)
    np.testing.assert_allclose(np.concatenate([apply(p, x.numpy()) for p in (q, k, v)], -1), y, rtol=1e-5, atol=1e-6)


@given(h=st.integers(1, 4), hd=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_split_fused_qkv_interleaved_by_head_as_gpt_neox_lays_it_out(h, hd, seed):
    torch.manual_seed(seed)
    fused = torch.nn.Linear(6, 3 * h * hd)
    x = torch.randn(2, 6)
    per_head = fused(x).detach().numpy().reshape(2, h, 3 * hd)  # GPT-NeoX: view(..., H, 3*hd), then chunk(3)
    want = [per_head[..., i * hd : (i + 1) * hd].reshape(2, h * hd) for i in range(3)]
    parts = split_fused_qkv(fused.weight, fused.bias, [h * hd] * 3, interleaved_heads=h)
    for part, w in zip(parts, want):
        np.testing.assert_allclose(apply(part, x.numpy()), w, rtol=1e-5, atol=1e-6)


def test_split_fused_qkv_says_what_does_not_add_up():
    w = torch.zeros(12, 4)
    with pytest.raises(ValueError, match="sum to 10, not the fused width 12"):
        split_fused_qkv(w, None, [4, 3, 3])
    with pytest.raises(ValueError, match="does not divide"):
        split_fused_qkv(w, None, [4, 4, 4], interleaved_heads=3)


class ZeroRotary(torch.nn.Module):
    """GPT-J's rotary module called the HF way gave all-zero tables: a silent wrong RoPE."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("inv_freq", torch.ones(4))

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (*position_ids.shape, 8)
        return torch.zeros(shape), torch.zeros(shape)


def test_a_rotary_module_that_gives_no_rotation_is_refused():
    with pytest.raises(UserError, match="gave no rotation table"):
        rope_from_rotary_embedding(ZeroRotary(), 4)


def test_a_real_rotary_table_passes_the_check():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rope = rope_from_rotary_embedding(LlamaRotaryEmbedding(LlamaConfig(hidden_size=32, num_attention_heads=4)), 6)
    assert np.allclose(rope.cos[0], 1.0) and np.allclose(rope.sin[0], 0.0)


@pytest.mark.slow  # spawns the CLI
def test_a_wrong_arch_is_one_line_not_a_traceback(tmp_path, byte_tokenizer):
    from test_run import make_model_dir

    model = make_model_dir(tmp_path / "m", byte_tokenizer, layers=1)
    proc = subprocess.run([sys.executable, "-m", "blockcert", "run", "--model", str(model), "--arch", "gpt2", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--arch gpt2: the gpt2 adapter cannot read this model (LlamaForCausalLM" in proc.stderr
    assert "the detected architecture is 'llama': drop --arch" in proc.stderr


@pytest.mark.slow  # spawns the CLI
def test_a_model_directory_without_a_tokenizer_gets_one_from_synth(tmp_path):
    from strategies import seeded_model
    from transformers import LlamaConfig

    model = tmp_path / "m"
    seeded_model(LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             num_key_value_heads=1, max_position_embeddings=512), 0).save_pretrained(model)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blockcert", *args], capture_output=True, text=True)

    first = cli("run", "--model", str(model), "--prompts", "builtin:default", "--out", str(tmp_path / "o"))
    assert first.returncode == 2 and "blockcert synth --tokenizer-only --out MODEL_DIR" in first.stderr
    assert cli("synth", "--tokenizer-only", "--out", str(model)).returncode == 0
    again = cli("run", "--model", str(model), "--prompts", "builtin:default", "--out", str(tmp_path / "o"))
    assert again.returncode == 0, again.stderr
    assert cli("synth", "--tokenizer-only", "--out", str(model)).returncode == 2  # it would replace one: --force


def test_an_adapter_maps_checkpoint_names_for_stream(tmp_path, byte_tokenizer, monkeypatch):
    """A checkpoint that stores a parameter under another name (GPT-NeoX saved by transformers 5 stores
    lm_head.weight as embed_out.weight): --stream says which parameter and where to declare the alias, and
    with the alias declared it reads the same weights as the in-memory model."""
    import shutil

    from blockcert_llama.adapter import LlamaNative
    from safetensors.numpy import load_file, save_file
    from test_run import make_model_dir

    import blockcert

    model = make_model_dir(tmp_path / "m", byte_tokenizer, layers=1)
    renamed = tmp_path / "renamed"
    shutil.copytree(model, renamed)
    tensors = load_file(renamed / "model.safetensors")
    tensors["output_head.weight"] = tensors.pop("lm_head.weight")
    save_file(tensors, renamed / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError) as info:
        blockcert.load_model(str(renamed), stream=True)
    assert "no checkpoint tensor holds the model's parameter lm_head.weight" in info.value.message
    assert "checkpoint_aliases" in str(info.value)
    monkeypatch.setattr(LlamaNative, "checkpoint_aliases", {"lm_head.weight": "output_head.weight"})
    streamed = blockcert.load_model(str(renamed), stream=True)
    assert streamed.weights_sha256() == blockcert.load_model(str(model)).weights_sha256()
