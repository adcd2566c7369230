"""The native side: a loaded HF model seen as ``embed -> block_0 .. block_{L-1} -> head``.

Adapters (``blockcert_trace`` hook) subclass :class:`NativeModel`; the helpers below are the shared
HF -> IR maths every adapter needs (a plugin never imports another plugin). Imports torch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from blockcert.errors import UserError
from blockcert.ir import Linear, Norm, Rope


class NativeModel(abc.ABC):
    """How to run one architecture's blocks natively, one at a time.

    ``x^(0) = embed(ids)``, ``x^(l+1) = call_block(l, x^(l))``, ``logits = head(x^(L))`` reproduces the
    HF model's forward pass; the residual stream between calls is what BlockCert traces.
    """

    arch: str = ""

    #: parameter name -> another name a checkpoint may store it under, for ``--stream`` (which reads tensors by
    #: name); e.g. ``{"lm_head.weight": "embed_out.weight"}`` for GPT-NeoX checkpoints saved by transformers 5
    checkpoint_aliases: dict[str, str] = {}

    def __init__(self, model: Any) -> None:
        self.model = model.eval()

    @property
    @abc.abstractmethod
    def blocks(self) -> Sequence[torch.nn.Module]:
        """The native residual blocks, index = layer."""

    @abc.abstractmethod
    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input ids [B, T] -> x^(0) [B, T, d] (token + any learned position embedding)."""

    @abc.abstractmethod
    def call_block(
        self, index: int, x: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x^(index) [B, T, d] -> x^(index+1) [B, T, d] by calling the HF block itself."""

    @abc.abstractmethod
    def head(self, x: torch.Tensor) -> torch.Tensor:
        """x^(L) [B, T, d] -> logits [B, T, vocab] (final norm + LM head)."""

    def attention_allowed(
        self, index: int, positions: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The attention pattern block ``index`` uses: bool [B, T(query), T(key)]. Default: causal."""
        allowed = positions[:, None, :] <= positions[:, :, None]  # [B, T, T]
        if key_mask is not None:
            allowed = allowed & key_mask[:, None, :].bool()
        return allowed

    def mlp_module(self, index: int) -> torch.nn.Module:
        """The MLP sublayer of block ``index`` (whose output is added to the residual stream).

        Edits such as ``mlp-scale`` hook its output. Default: the block's ``mlp`` attribute, which is where
        GPT-2, Llama, Mistral, Qwen2 and most HF decoders keep it; override for other layouts.
        """
        mlp = getattr(self.blocks[index], "mlp", None)
        if not isinstance(mlp, torch.nn.Module):
            from blockcert.errors import UserError

            raise UserError(f"{self.arch} block {index} has no `mlp` submodule", "its plugin must override NativeModel.mlp_module")
        return mlp

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (``--device``); every tensor handed to it must be there too. A streamed
        model keeps its parameters on the meta device until a block is installed, on the CPU."""
        device = next(self.model.parameters()).device
        return torch.device("cpu") if device.type == "meta" else device

    @torch.no_grad()
    def residual_stream(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[x^(0), ..., x^(L)] for input ids [B, T]: L+1 snapshots, each [B, T, d]."""
        positions = default_positions(input_ids) if positions is None else positions
        xs = [self.embed(input_ids, positions)]
        for index in range(self.n_blocks):
            xs.append(self.call_block(index, xs[-1], positions))
        return xs

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits via embed -> blocks -> head (equals the HF model's own forward)."""
        return self.head(self.residual_stream(input_ids)[-1])


# ---------------------------------------------------------------------------------------------------
# Shared HF -> IR helpers
# ---------------------------------------------------------------------------------------------------


def default_positions(input_ids: torch.Tensor) -> torch.Tensor:
    B, T = input_ids.shape[:2]
    return torch.arange(T, device=input_ids.device)[None, :].expand(B, T)  # [B, T]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool [B, T, T] -> the additive float mask HF attention takes: [B, 1, T, T], 0 or dtype-min."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, blocked)[:, None]


def causal_mask_table(n_ctx: int, window: int | None = None) -> np.ndarray:
    """mask[i, j] = j <= i (and i - j < window for sliding-window attention): bool [n_ctx, n_ctx]."""
    i = np.arange(n_ctx)[:, None]
    j = np.arange(n_ctx)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= (i - j) < window
    return np.ascontiguousarray(allowed)


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    """A float32 copy of a weight (bf16/fp16 weights are widened exactly; the IR replays in float32)."""
    if t is None:
        return None
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().copy()


def from_nn_linear(module: torch.nn.Linear) -> Linear:
    """torch Linear stores weight [out, in] and computes x @ W.T: transpose into the IR's [in, out]."""
    return Linear(weight=np.ascontiguousarray(_numpy(module.weight).T), bias=_numpy(module.bias))


def from_conv1d(weight: torch.Tensor, bias: torch.Tensor | None) -> Linear:
    """HF Conv1D (GPT-2) already stores weight [in, out] and computes x @ W: no transpose."""
    return Linear(weight=_numpy(weight), bias=_numpy(bias))


def linear_from_tensors(weight: torch.Tensor, bias: torch.Tensor | None = None, *, layout: str = "out_in") -> Linear:
    """A Linear from raw tensors: ``layout="out_in"`` for a torch ``nn.Linear``-style weight [out, in] (x @ W.T),
    ``"in_out"`` for a Conv1D-style one [in, out] (x @ W). ``bias`` [out] or None."""
    if layout not in ("out_in", "in_out"):
        raise ValueError(f"layout must be 'out_in' or 'in_out', got {layout!r}")
    w = _numpy(weight)
    if w is None or w.ndim != 2:
        raise ValueError(f"a Linear weight is a matrix, got shape {None if w is None else w.shape}")
    w = np.ascontiguousarray(w.T) if layout == "out_in" else w
    b = _numpy(bias)
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"bias of shape {b.shape} for a Linear with {w.shape[1]} outputs")
    return Linear(weight=w, bias=b)


def split_fused_qkv(weight: torch.Tensor, bias: torch.Tensor | None, sizes: Sequence[int], *, layout: str = "out_in",
                    interleaved_heads: int | None = None) -> tuple[Linear, ...]:
    """Split a fused projection (e.g. GPT-NeoX ``query_key_value``, Phi-3 ``qkv_proj``) into one Linear per part.

    ``sizes``: the output width of each part, in order (q, k, v: ``[H*hd, H_kv*hd, H_kv*hd]``); they must sum
    to the fused output width. ``interleaved_heads=H``: the outputs are laid out head by head, each head's
    q, k, v slices of ``sizes[i] // H`` in turn (GPT-NeoX's layout), instead of all q, then all k, then all v.
    """
    fused = linear_from_tensors(weight, bias, layout=layout)  # weight [in, out_total]
    total = fused.weight.shape[1]
    if sum(sizes) != total:
        raise ValueError(f"the parts' widths {list(sizes)} sum to {sum(sizes)}, not the fused width {total}")
    columns = np.arange(total)
    if interleaved_heads is None:
        bounds = np.cumsum([0, *sizes])
        parts = [columns[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]
    else:
        H = interleaved_heads
        if any(n % H for n in sizes):
            raise ValueError(f"interleaved_heads={H} does not divide the parts' widths {list(sizes)}")
        per_head = [n // H for n in sizes]
        grid = columns.reshape(H, sum(per_head))  # [H, q_hd + k_hd + v_hd]
        bounds = np.cumsum([0, *per_head])
        parts = [grid[:, bounds[i] : bounds[i + 1]].reshape(-1) for i in range(len(sizes))]
    return tuple(Linear(weight=np.ascontiguousarray(fused.weight[:, idx]),
                        bias=None if fused.bias is None else np.ascontiguousarray(fused.bias[idx])) for idx in parts)


def rms_norm(weight: torch.Tensor, eps: float, *, offset: float = 0.0) -> Norm:
    """An RMSNorm. ``offset=1``: a norm that multiplies by ``1 + weight`` (Gemma), folded here into the IR's weight
    in float32, as the model computes ``1.0 + weight.float()``."""
    w = weight.detach().to(device="cpu", dtype=torch.float32)
    return Norm(kind="rmsnorm", weight=_numpy(w + offset if offset else w), eps=float(eps))


def norm_module(module: torch.nn.Module, *, offset: float = 0.0) -> Norm:
    """An HF norm module as IR: ``torch.nn.LayerNorm`` (weight, bias, eps) or an RMSNorm whose epsilon is
    ``variance_epsilon`` (Llama family) or ``eps`` (Gemma, ...); ``offset`` as in :func:`rms_norm`."""
    if isinstance(module, torch.nn.LayerNorm):
        if offset:
            raise ValueError("a LayerNorm has no (1 + weight) form")
        return layer_norm(module)
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    if eps is None or getattr(module, "weight", None) is None:
        raise UserError(f"{type(module).__name__} is neither a LayerNorm nor an RMSNorm with a weight and an epsilon",
                        "build the Norm record directly (blockcert.ir.Norm)")
    return rms_norm(module.weight, eps, offset=offset)


def layer_norm(module: torch.nn.LayerNorm) -> Norm:
    return Norm(kind="layernorm", weight=_numpy(module.weight), bias=_numpy(module.bias), eps=float(module.eps))


def rope_from_rotary_embedding(rotary_emb: torch.nn.Module, n_ctx: int, rotary_dim: int | None = None, **call_kwargs: Any) -> Rope:
    """Tabulate an HF rotary embedding (``forward(x, position_ids, **call_kwargs) -> (cos, sin)``) for positions
    0..n_ctx-1. ``call_kwargs``: what else the module takes, e.g. ``layer_type="sliding_attention"`` for Gemma 3's
    per-layer-type tables (a local θ for sliding layers, a global one for full-attention layers).

    The tables come from the model's own module, so RoPE scaling variants (linear, llama3, yarn, ...)
    and ``attention_scaling`` are captured exactly as the model computes them, in float32.
    """
    device = next(iter(rotary_emb.buffers()), torch.zeros(())).device  # the model's device (--device)
    positions = torch.arange(n_ctx, device=device)[None, :]  # [1, n_ctx]
    probe = torch.zeros(1, dtype=torch.float32, device=device)
    with torch.no_grad():
        cos, sin = rotary_emb(probe, position_ids=positions, **call_kwargs)  # [1, n_ctx, rotary_dim] each
    cos, sin = cos[0].float(), sin[0].float()
    if rotary_dim is not None:
        cos, sin = cos[:, :rotary_dim], sin[:, :rotary_dim]
    scale = float(cos[0].abs().max())  # position 0 rotates by 0: cos = attention_scaling (1 unless a scaled RoPE), sin = 0
    if not (scale > 0 and torch.allclose(cos[0], torch.full_like(cos[0], scale)) and float(sin[0].abs().max()) == 0.0):
        raise UserError(f"{type(rotary_emb).__name__} gave no rotation table (cos at position 0 is {cos[0][:4].tolist()}..., "
                        "not constant and non-zero): it is not an HF rotary embedding returning (cos, sin) for the positions",
                        "build the Rope tables directly (docs/plugins.md, 'RoPE tables') instead of rope_from_rotary_embedding")
    return Rope(cos=_numpy(cos), sin=_numpy(sin), style="half")


_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": None,  # a different tanh approximation; not representable exactly
    "gelu": "gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def activation_name(hf_name: str) -> str:
    """HF ``hidden_act`` / ``activation_function`` -> IR activation kind."""
    kind = _ACTIVATIONS.get(hf_name)
    if kind is None:
        raise UserError(f"activation {hf_name!r} has no exact IR equivalent", "supported: gelu_new, gelu_pytorch_tanh, gelu, relu, silu")
    return kind


def head_gate(n_heads: int) -> np.ndarray:
    """All heads on."""
    return np.ones(n_heads, dtype=np.float32)
