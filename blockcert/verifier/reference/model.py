"""A float64 numpy forward of a causal language model, read straight from its Hugging Face directory.

This is the verifier's own model: it shares no code with the producer (no torch, no transformers, no
adapter, no ``to_ir``, no interpreter). It is written from the published architectures:

* ``llama`` (also ``mistral``/``qwen2`` layouts without sliding windows): RMSNorm, rotary embeddings
  (the "rotate half" layout, default scaling only), grouped-query attention, optional q/k/v biases,
  SwiGLU MLP, final RMSNorm, tied or separate unembedding;
* ``gpt2``: LayerNorm, learned positions, fused ``c_attn`` (Conv1D, ``[in, out]``), GELU (tanh), tied
  unembedding.

Anything else (another ``model_type``, RoPE scaling, sliding windows, soft-capping) is refused with an
error that names it, never approximated. Weights are read with :mod:`blockcert.artifacts.safeio`; a model's
identity is the same tensor digest the producer writes (name, dtype, shape, little-endian bytes of every
weight as loaded, tied weights under both names).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from blockcert.artifacts.digest import tensors_sha256
from blockcert.artifacts.safeio import read_safetensors_typed
from blockcert.errors import UserError

#: model_type -> architecture family this module implements
FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "gpt2": "gpt2"}
DTYPES = ("float32", "bfloat16", "float16")


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly (bfloat16 is the top half of a float32)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even (NaN kept quiet), as torch's ``.to(bfloat16)``."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(x)
    return np.where(nan, (bits >> 16) | 0x40, rounded).astype(np.uint16)


class Weights:
    """Every tensor of a model directory's safetensors (one file or an index of shards), kept as stored."""

    def __init__(self, directory: Path) -> None:
        self.raw: dict[str, np.ndarray] = {}
        self.codes: dict[str, str] = {}
        self._wide: dict[tuple[str, Any], np.ndarray] = {}
        index = directory / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        elif (directory / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            raise UserError(f"{directory} holds no model.safetensors (the numpy reference reads safetensors only)",
                            "convert the checkpoint to safetensors, or verify with --reference torch")
        for name in files:
            path = directory / name
            tensors, codes = read_safetensors_typed(path.read_bytes(), str(path))
            self.raw.update(tensors)
            self.codes.update(codes)

    def get(self, name: str, dt: Any = np.float64) -> np.ndarray:
        """A weight in the compute dtype ``dt`` (float64: exact from float32, bfloat16 and float16)."""
        if name not in self.raw:
            raise UserError(f"the model has no weight {name!r}", "the numpy reference supports the standard HF layouts only")
        if (name, dt) not in self._wide:  # converted once: the forward reads every weight many times
            a, code = self.raw[name], self.codes[name]
            self._wide[(name, dt)] = (_bf16_to_f32(a) if code == "BF16" else a).astype(dt)
        return self._wide[(name, dt)]

    def has(self, name: str) -> bool:
        return name in self.raw

    def as_dtype(self, name: str, dtype: str) -> np.ndarray:
        """The weight as the certified model held it: cast to ``dtype`` (bfloat16 as uint16 bit patterns)."""
        a, code = self.raw[name], self.codes[name]
        if dtype == "bfloat16":
            if code == "BF16":
                return a
            return _f32_to_bf16_bits(a.astype(np.float32))
        if code == "BF16":
            a = _bf16_to_f32(a)
        return np.asarray(a, {"float32": np.float32, "float16": np.float16}[dtype])


class Model:
    """One model directory: ``config.json``, its safetensors and (when present) its ``tokenizer.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        cfg_path = self.directory / "config.json"
        if not cfg_path.is_file():
            raise UserError(f"{self.directory} is not a Hugging Face model directory (no config.json)")
        self.config: dict[str, Any] = json.loads(cfg_path.read_text())
        model_type = self.config.get("model_type")
        if model_type not in FAMILIES:
            raise UserError(f"the numpy reference has no forward for model_type {model_type!r}",
                            f"it implements {', '.join(sorted(FAMILIES))}; verify with --reference torch")
        self.family = FAMILIES[model_type]
        self.weights = Weights(self.directory)
        self.arch: Any = (_Llama if self.family == "llama" else _GPT2)(self.config, self.weights, np.float64)
        self.n_blocks, self.d_model, self.n_heads = self.arch.n_blocks, self.arch.d_model, self.arch.n_heads
        self._tokenizer: Any = None
        self._digests: dict[str, str] = {}

    def shadow(self) -> Model:
        """The same model computing in float32 (numpy's own summation order): run next to the float64 forward,
        it shows how far float32 rounding moves a number on this input (a condition estimate the verifier
        derives from the model, never from the files it checks)."""
        twin = object.__new__(Model)
        twin.__dict__.update(self.__dict__)
        twin.arch = (_Llama if self.family == "llama" else _GPT2)(self.config, self.weights, np.float32)
        return twin

    # -- identity -------------------------------------------------------------------------------------
    def weights_sha256(self, dtype: str) -> str:
        """The digest of every weight as a model loaded in ``dtype`` holds it (tied weights under both names)."""
        if dtype not in DTYPES:
            raise UserError(f"unknown model dtype {dtype!r}")
        if dtype not in self._digests:  # once per dtype: every certificate of a run asks
            sources = {name: name for name in self.weights.raw} | self.arch.tied()
            tensors = {name: self.weights.as_dtype(source, dtype) for name, source in sources.items()}
            # bfloat16 is held as its bit patterns (uint16): hash them under torch's dtype name
            self._digests[dtype] = tensors_sha256(tensors, dtype_names=dict.fromkeys(tensors, "bfloat16") if dtype == "bfloat16" else None)
        return self._digests[dtype]

    # -- tokenizer ------------------------------------------------------------------------------------
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            path = self.directory / "tokenizer.json"
            if not path.is_file():
                raise UserError(f"{self.directory} has no tokenizer.json", "the numpy reference tokenizes with the `tokenizers` library")
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(path))
        return self._tokenizer

    def encode(self, text: str, *, special: bool = True) -> np.ndarray:
        return np.asarray(self.tokenizer().encode(text, add_special_tokens=special).ids, dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer().decode([int(i) for i in ids], skip_special_tokens=False))

    # -- forward --------------------------------------------------------------------------------------
    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.arch.embed(np.asarray(ids, np.int64))

    def block(self, index: int, x: np.ndarray, mlp_scale: float = 1.0, edit: Edit | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x^(l+1) from x^(l) [T, d], with the causal mask [T, T] it applied and which heads wrote anything [H];
        ``mlp_scale`` scales the MLP's output, ``edit`` is a directional edit of what the block writes."""
        return self.arch.block(index, np.asarray(x, self.arch.dt), mlp_scale, edit or NO_EDIT)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.arch.logits(np.asarray(x, self.arch.dt))

    def token_losses(self, x_final: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Next-token cross-entropy of each position but the last, from the final residual stream [T, d] -> [T-1]."""
        rows, targets = x_final[:-1], np.asarray(ids, np.int64)[1:]
        out = np.empty(targets.size, np.float64)
        for start in range(0, targets.size, 256):  # never a [T, V] matrix for long prompts
            z = self.logits(rows[start : start + 256])
            m = z.max(axis=-1, keepdims=True)
            lse = (m[:, 0] + np.log(np.exp(z - m).sum(axis=-1)))
            out[start : start + 256] = lse - z[np.arange(z.shape[0]), targets[start : start + 256]]
        return out

    def stream(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The residual stream x^(0..L) [L+1, T, d] of one prompt, its masks [L, T, T] and head activity [L, H]."""
        x = self.embed(ids)
        T = x.shape[0]
        res = np.empty((self.n_blocks + 1, T, self.d_model), self.arch.dt)
        masks = np.empty((self.n_blocks, T, T), bool)
        gates = np.empty((self.n_blocks, self.n_heads), bool)
        res[0] = x
        for i in range(self.n_blocks):
            x, masks[i], gates[i] = self.block(i, x)
            res[i + 1] = x
        return res, masks, gates

    def suffix(self, start: int, x: np.ndarray) -> np.ndarray:
        """x^(L) from x^(start) [T, d]: the native blocks start..L-1."""
        for i in range(start, self.n_blocks):
            x = self.block(i, x)[0]
        return x


class Edit:
    """A directional edit of what one block writes (docs/edits.md, "Directional edits"), as this reference reads
    it: ``ablate`` a unit vector r removed from the attention output and the MLP output (y − (y·r) r), ``add`` a
    vector added to the block's output. The default changes nothing."""

    def __init__(self, ablate: np.ndarray | None = None, add: np.ndarray | None = None) -> None:
        self.ablate, self.add = ablate, add

    def writes(self, y: np.ndarray) -> np.ndarray:
        r = self.ablate
        return y if r is None else y - (y @ r)[:, None] * r

    def output(self, x: np.ndarray) -> np.ndarray:
        return x if self.add is None else x + self.add


NO_EDIT = Edit()


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    m = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - m)
    return e / e.sum(axis=-1, keepdims=True)


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Causal attention of one head: q, k [T, hd], v [T, hd] -> output [T, hd], mask [T, T]."""
    T = q.shape[0]
    allowed = np.tril(np.ones((T, T), bool))
    scores = np.where(allowed, (q @ k.T) * scale, -np.inf)
    return _softmax_rows(scores) @ v, allowed


class _Llama:
    def __init__(self, cfg: dict[str, Any], w: Weights, dt: Any) -> None:
        self.w, self.dt = w, dt
        self.n_blocks = int(cfg["num_hidden_layers"])
        self.d_model = int(cfg["hidden_size"])
        self.n_heads = int(cfg["num_attention_heads"])
        self.n_kv = int(cfg.get("num_key_value_heads") or self.n_heads)
        self.head_dim = int(cfg.get("head_dim") or self.d_model // self.n_heads)
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise UserError(f"the numpy reference's llama forward uses SiLU, not {act!r}", "verify with --reference torch")
        rope = cfg.get("rope_parameters") or {}
        for record in (rope, cfg.get("rope_scaling") or {}):  # transformers 5 writes the first, older configs the second
            kind = record.get("rope_type", record.get("type", "default"))
            if kind != "default":
                raise UserError(f"the numpy reference implements unscaled RoPE only, not {kind!r}", "verify with --reference torch")
        self.theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
        partial = float(cfg.get("partial_rotary_factor", 1.0))
        if partial != 1.0:
            raise UserError("the numpy reference implements full-width RoPE only", "verify with --reference torch")
        if cfg.get("sliding_window") and cfg.get("use_sliding_window", cfg.get("model_type") == "mistral"):
            raise UserError("the numpy reference has no sliding-window attention", "verify with --reference torch")
        self.tied_head = not w.has("lm_head.weight")

    def tied(self) -> dict[str, str]:
        return {"lm_head.weight": "model.embed_tokens.weight"} if self.tied_head else {}

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.w.get("model.embed_tokens.weight", self.dt)[ids]

    def _rms(self, x: np.ndarray, name: str) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.w.get(name, self.dt)

    def _lin(self, x: np.ndarray, name: str) -> np.ndarray:
        y = x @ self.w.get(f"{name}.weight", self.dt).T  # HF Linear stores [out, in]
        return y + self.w.get(f"{name}.bias", self.dt) if self.w.has(f"{name}.bias") else y

    def _rotate(self, x: np.ndarray) -> np.ndarray:
        """RoPE on [T, heads, hd], positions 0..T-1, the "rotate half" pairing (i, i + hd/2)."""
        T, hd = x.shape[0], x.shape[-1]
        inv = 1.0 / self.theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)  # [hd/2]
        ang = np.arange(T, dtype=np.float64)[:, None] * inv[None]  # [T, hd/2]
        cos, sin = np.cos(ang)[:, None].astype(self.dt), np.sin(ang)[:, None].astype(self.dt)  # [T, 1, hd/2]
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    def block(self, i: int, x: np.ndarray, mlp_scale: float, edit: Edit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = f"model.layers.{i}"
        T, hd = x.shape[0], self.head_dim
        h = self._rms(x, f"{p}.input_layernorm.weight")
        q = self._rotate(self._lin(h, f"{p}.self_attn.q_proj").reshape(T, self.n_heads, hd))
        k = self._rotate(self._lin(h, f"{p}.self_attn.k_proj").reshape(T, self.n_kv, hd))
        v = self._lin(h, f"{p}.self_attn.v_proj").reshape(T, self.n_kv, hd)
        group = self.n_heads // self.n_kv
        heads = np.empty((T, self.n_heads, hd), self.dt)
        mask = np.zeros((T, T), bool)
        for j in range(self.n_heads):
            heads[:, j], mask = _attend(q[:, j], k[:, j // group], v[:, j // group], 1.0 / math.sqrt(hd))
        active = (heads != 0).any(axis=(0, 2))
        x = x + edit.writes(self._lin(heads.reshape(T, self.n_heads * hd), f"{p}.self_attn.o_proj"))
        h = self._rms(x, f"{p}.post_attention_layernorm.weight")
        g = self._lin(h, f"{p}.mlp.gate_proj")
        mlp = edit.writes(self._lin(g / (1.0 + np.exp(-g)) * self._lin(h, f"{p}.mlp.up_proj"), f"{p}.mlp.down_proj"))
        return edit.output(x + (mlp if mlp_scale == 1.0 else mlp_scale * mlp)), mask, active

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = self._rms(x, "model.norm.weight")
        return h @ self.w.get("model.embed_tokens.weight" if self.tied_head else "lm_head.weight", self.dt).T


class _GPT2:
    def __init__(self, cfg: dict[str, Any], w: Weights, dt: Any) -> None:
        self.w, self.dt = w, dt
        self.n_blocks = int(cfg["n_layer"])
        self.d_model = int(cfg["n_embd"])
        self.n_heads = int(cfg["n_head"])
        self.eps = float(cfg.get("layer_norm_epsilon", 1e-5))
        act = cfg.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise UserError(f"the numpy reference's gpt2 forward uses tanh-GELU, not {act!r}", "verify with --reference torch")
        for key, default in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False)):
            if bool(cfg.get(key, default)) != default:
                raise UserError(f"the numpy reference's gpt2 forward has {key}={default} only", "verify with --reference torch")
        self.tied_head = not w.has("lm_head.weight")

    def tied(self) -> dict[str, str]:
        return {"lm_head.weight": "transformer.wte.weight"} if self.tied_head else {}

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.w.get("transformer.wte.weight", self.dt)[ids] + self.w.get("transformer.wpe.weight", self.dt)[: ids.size]

    def _ln(self, x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w.get(f"{name}.weight", self.dt) + self.w.get(f"{name}.bias", self.dt)

    def _conv(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w.get(f"{name}.weight", self.dt) + self.w.get(f"{name}.bias", self.dt)  # Conv1D stores [in, out]

    def block(self, i: int, x: np.ndarray, mlp_scale: float, edit: Edit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = f"transformer.h.{i}"
        T, H = x.shape[0], self.n_heads
        hd = self.d_model // H
        qkv = self._conv(self._ln(x, f"{p}.ln_1"), f"{p}.attn.c_attn")
        q, k, v = (qkv[:, n * self.d_model : (n + 1) * self.d_model].reshape(T, H, hd) for n in range(3))
        heads = np.empty((T, H, hd), self.dt)
        mask = np.zeros((T, T), bool)
        for j in range(H):
            heads[:, j], mask = _attend(q[:, j], k[:, j], v[:, j], 1.0 / math.sqrt(hd))
        active = (heads != 0).any(axis=(0, 2))
        x = x + edit.writes(self._conv(heads.reshape(T, self.d_model), f"{p}.attn.c_proj"))
        u = self._conv(self._ln(x, f"{p}.ln_2"), f"{p}.mlp.c_fc")
        gelu = 0.5 * u * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u**3)))
        mlp = edit.writes(self._conv(gelu, f"{p}.mlp.c_proj"))
        return edit.output(x + (mlp if mlp_scale == 1.0 else mlp_scale * mlp)), mask, active

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._ln(x, "transformer.ln_f") @ self.w.get("transformer.wte.weight" if self.tied_head else "lm_head.weight", self.dt).T
