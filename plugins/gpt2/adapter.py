"""``GPT2LMHeadModel`` <-> BlockCert: where the blocks live, how to call one, block -> IR."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from blockcert import native as hf
from blockcert.errors import UserError
from blockcert.ir import MLP, SCHEMA_VERSION, Attention, BlockIR


class GPT2Native(hf.NativeModel):
    arch = "gpt2"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        if getattr(model.config, "add_cross_attention", False):
            raise UserError("GPT-2 with cross-attention is an encoder-decoder block; BlockCert certifies decoder-only models")

    @property
    def base(self) -> torch.nn.Module:
        return self.model.transformer  # GPT2Model: wte, wpe, h, ln_f

    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        return self.base.h

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.base.wte(input_ids) + self.base.wpe(positions)  # embedding dropout is off in eval()

    def call_block(
        self, index: int, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mask = hf.additive_mask(self.attention_allowed(index, positions, key_mask), x.dtype)
        out = self.blocks[index](x, attention_mask=mask)
        return out[0] if isinstance(out, tuple) else out

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.base.ln_f(x))


def to_ir(native: GPT2Native, index: int, n_ctx: int) -> BlockIR:
    block = native.blocks[index]
    attn, mlp = block.attn, block.mlp
    d = native.d_model
    n_heads = int(attn.num_heads)
    # c_attn is one fused Conv1D [d, 3d]: columns [0:d] are Q, [d:2d] K, [2d:3d] V.
    w, b = attn.c_attn.weight, attn.c_attn.bias
    q, k, v = (hf.from_conv1d(w[:, i * d : (i + 1) * d], b[i * d : (i + 1) * d]) for i in range(3))
    return BlockIR(
        schema_version=SCHEMA_VERSION,
        arch="gpt2",
        index=index,
        d_model=d,
        residual="sequential",
        norm1=hf.layer_norm(block.ln_1),
        attn=Attention(
            q=q,
            k=k,
            v=v,
            o=hf.from_conv1d(attn.c_proj.weight, attn.c_proj.bias),
            n_heads=n_heads,
            n_kv_heads=n_heads,
            head_dim=int(attn.head_dim),
            scale=float(attn.scaling),  # head_dim**-0.5 and/or 1/(layer+1), exactly as configured
            mask=hf.causal_mask_table(n_ctx),
            head_gate=hf.head_gate(n_heads),
            rope=None,
        ),
        norm2=hf.layer_norm(block.ln_2),
        mlp=MLP(
            activation=hf.activation_name(native.model.config.activation_function),
            up=hf.from_conv1d(mlp.c_fc.weight, mlp.c_fc.bias),
            down=hf.from_conv1d(mlp.c_proj.weight, mlp.c_proj.bias),
        ),
        source={"hf_class": type(block).__name__, "model_type": "gpt2"},
    )
