"""Llama shapes for ``blockcert synth`` (TinyLlama-1.1B, Llama-2-7B, and a tiny one for tests).

The writer (:mod:`blockcert.model.synthetic`) is architecture-free; this module says what a Llama of each
shape is: its Hugging Face config and which tensors write back into the residual stream.
"""

from __future__ import annotations

from typing import Any

import attrs

from blockcert.catalog import SyntheticShape


@attrs.frozen
class LlamaShape:
    """The numbers that make a Llama shape (the tokenizer is the synthetic byte-level one)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int = 32000
    max_positions: int = 2048
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5

    def config(self, layers: int, dtype: str) -> Any:
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.intermediate,
            num_hidden_layers=layers, num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            max_position_embeddings=self.max_positions, rope_theta=self.rope_theta, rms_norm_eps=self.rms_eps,
            hidden_act="silu", tie_word_embeddings=False, bos_token_id=256, eos_token_id=257,
            architectures=["LlamaForCausalLM"], dtype=dtype,
        )

    def synthetic(self, name: str, description: str) -> SyntheticShape:
        """This shape as the catalogue record ``blockcert synth --shape NAME`` finds."""
        return SyntheticShape(name=name, description=description, layers=self.layers, max_positions=self.max_positions,
                              config=self.config, residual_writers=("o_proj.weight", "down_proj.weight"),
                              embeddings=("embed_tokens.weight",))


SHAPES = (
    LlamaShape(layers=22, hidden=2048, intermediate=5632, heads=32, kv_heads=4).synthetic(
        "tinyllama", "TinyLlama-1.1B: 22 layers, d=2048, MLP 5632, GQA 32/4, vocab 32000"),
    LlamaShape(layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32, max_positions=4096).synthetic(
        "llama2-7b", "Llama-2-7B: 32 layers, d=4096, MLP 11008, 32/32 heads, vocab 32000"),
    LlamaShape(layers=4, hidden=256, intermediate=688, heads=8, kv_heads=2, vocab=512, max_positions=512).synthetic(
        "tiny", "4 layers, d=256, GQA 8/2, vocab 512 (for tests)"),
)
