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


def extended_ir(seed: int = 1, whole_qk: bool = False, n_ctx: int = 6) -> BlockIR:
    """:func:`tiny_ir` with every schema-v2 operator on: QK-norm (per head, or over the whole projection with
    ``whole_qk``), post-attention and post-MLP norms, a logit soft-cap, and no norm1 (the identity)."""
    import attrs

    ir = tiny_ir(seed, n_ctx=n_ctx)
    rng = np.random.default_rng(seed + 1000)
    a = ir.attn

    def rms(n: int) -> Norm:
        return Norm("rmsnorm", (1 + 0.1 * rng.standard_normal(n)).astype(np.float32), eps=1e-6)

    q_size, k_size = (a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim) if whole_qk else (a.head_dim, a.head_dim)
    attn = attrs.evolve(a, q_norm=rms(q_size), k_norm=rms(k_size), softcap=2.5)
    return attrs.evolve(ir, norm1=None, attn=attn, post_attn_norm=rms(ir.d_model), post_mlp_norm=rms(ir.d_model))
