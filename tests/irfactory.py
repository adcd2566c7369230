"""A tiny deterministic IR built without torch (for schema and serialisation tests)."""

from __future__ import annotations

import numpy as np

from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR, Linear, Norm, Rope


def tiny_ir(seed: int = 0, d: int = 8, n_heads: int = 4, n_kv: int = 2, hd: int = 2, f: int = 12, n_ctx: int = 6) -> BlockIR:
    rng = np.random.default_rng(seed)

    def lin(i: int, o: int, bias: bool = True) -> Linear:
        return Linear(rng.standard_normal((i, o)).astype(np.float32), rng.standard_normal(o).astype(np.float32) if bias else None)

    freqs = np.outer(np.arange(n_ctx), 1.0 / 10000 ** (np.arange(0, hd, 2) / hd))
    angles = np.concatenate([freqs, freqs], axis=1).astype(np.float32)
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch="llama",
        index=3,
        d_model=d,
        residual="sequential",
        norm1=Norm("rmsnorm", rng.standard_normal(d).astype(np.float32), eps=1e-5),
        attn=Attention(
            q=lin(d, n_heads * hd), k=lin(d, n_kv * hd), v=lin(d, n_kv * hd), o=lin(n_heads * hd, d, bias=False),
            n_heads=n_heads, n_kv_heads=n_kv, head_dim=hd, scale=hd**-0.5,
            mask=np.tril(np.ones((n_ctx, n_ctx), dtype=bool)), head_gate=np.ones(n_heads, np.float32),
            rope=Rope(np.cos(angles), np.sin(angles)),
        ),
        norm2=Norm("layernorm", rng.standard_normal(d).astype(np.float32), eps=1e-6, bias=rng.standard_normal(d).astype(np.float32)),
        mlp=MLP("silu", up=lin(d, f), gate=lin(d, f), down=lin(f, d)),
        source={"hf_class": "tiny"},
    )
