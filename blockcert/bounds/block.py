"""A whole block's bounds from its IR and traced inputs (docs/bounds.md §5), and the attained Jacobian lower bound."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import attrs
import numpy as np

from blockcert.artifacts.bounds_record import UPPER_FIELDS
from blockcert.bounds.layers import attention_bound, norm_bound, scale_word
from blockcert.bounds.mlp import mlp_bound_with_norms, mlp_local_bound_with_norms, mlp_norms
from blockcert.bounds.rounding import F, f64, fdown, fup
from blockcert.ir import BlockIR, Norm


@attrs.frozen
class BlockBounds:
    """Per-block Lipschitz quantities (paper §6.7), each with the region it holds on (``regions``).

    ``K_attn``: :func:`attention_bound`; ``K_mlp``: :func:`mlp_bound` (analytic, norm2 region);
    ``K_mlp_local``: :func:`mlp_local_bound` on balls of ``radius`` around the traced norm2 inputs.
    ``analytic_upper_bound``: ``(1 + K_attn)(1 + K_mlp)`` (sequential) or ``1 + K_attn + K_mlp``
    (parallel). ``hybrid_upper_bound``: the same with ``K_mlp_local``; sound for sequences within
    ``hybrid_input_radius`` of a traced input (the paper's ``(1 + K_attn) K_MLP`` drops the MLP's
    residual identity and is not an upper bound in general).
    """

    index: int
    residual: str
    K_norm1: float
    K_attn: float
    K_mlp: float
    K_mlp_local: float
    analytic_upper_bound: float
    hybrid_upper_bound: float
    hybrid_input_radius: float
    min_scale1: float
    min_scale2: float
    radius: float
    seq_len: int
    tokens: int
    regions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for a certificate (floats may be inf: serialise with care)."""
        return attrs.asdict(self)


def _as_sequences(traces_inputs: Any, d: int) -> list[np.ndarray]:
    if isinstance(traces_inputs, (list, tuple)):
        seqs = [f64(_to_numpy(s)).reshape(-1, d) for s in traces_inputs]
    else:
        arr = f64(_to_numpy(traces_inputs))
        if arr.ndim == 2:
            seqs = [arr]
        elif arr.ndim == 3:
            seqs = list(arr)
        else:
            raise ValueError(f"traces_inputs must be [T, d], [B, T, d] or a list of [T, d], got shape {arr.shape}")
    if not seqs or any(s.shape[0] == 0 or s.shape[1] != d for s in seqs):
        raise ValueError(f"traces_inputs must be non-empty sequences of d={d} tokens")
    return seqs


def _to_numpy(a: Any) -> Any:
    if hasattr(a, "detach"):  # a torch tensor
        return a.detach().cpu().numpy()
    return a


def _scales(norm: Norm, X: np.ndarray) -> np.ndarray:
    if norm.kind == "layernorm":
        X = X - X.mean(axis=1, keepdims=True)
    return np.sqrt(np.einsum("ij,ij->i", X, X) / X.shape[1])


def _norm2_inputs(ir: BlockIR, seqs: list[np.ndarray]) -> list[np.ndarray]:
    """h = x + Attn(norm1(x)) (sequential) or x (parallel), replayed in float64 numpy."""
    if ir.residual == "parallel":
        return seqs
    from array_api_compat import array_namespace

    from blockcert import interpreter as itp

    out = []
    for x in seqs:
        x3 = x[None]
        xp = array_namespace(x3)
        T = x.shape[0]
        positions = np.broadcast_to(np.arange(T)[None, :], (1, T))
        a, _, _ = itp.attention(xp, itp.norm(xp, x3, ir.norm1), ir.attn, positions, None)
        out.append((x3 + a)[0])
    return out


def block_bounds(
    ir: BlockIR,
    traces_inputs: Any,
    *,
    margin: float = 0.5,
    radius: float = 1.0,
    seq_len: int | None = None,
) -> BlockBounds:
    """Analytic and hybrid Lipschitz upper bounds for one block, each with its region.

    ``traces_inputs``: the block inputs ``x^(l)`` of the traced prompts (``[T, d]``, ``[B, T, d]`` or a
    list of ``[T_p, d]``; positions ``0..T_p-1``). ``min_scale1 = margin * min_t scale(x_t)`` and
    ``min_scale2 = margin * min_t scale(h_t)`` define the norm regions (the smallest traced RMS/std,
    shrunk by ``margin``); ``seq_len`` defaults to the longest traced sequence.

    Sequential block ``B(x) = h + M(h)``, ``h = x + A(x)``: ``Lip(B) <= (1 + Lip(M)) (1 + Lip(A))``;
    parallel ``B(x) = x + A(x) + M(x)``: ``Lip(B) <= 1 + Lip(A) + Lip(M)``.

    * ``analytic_upper_bound`` holds on {sequences of ``T <= seq_len`` tokens with every
      ``scale(x_t) >= min_scale1`` and every ``scale(h_t) >= min_scale2``}.
    * ``hybrid_upper_bound`` uses ``K_mlp_local`` (balls of ``radius`` around the traced ``h_t``); it holds
      for ``X'`` within ``hybrid_input_radius = radius / (1 + K_attn)`` (Frobenius) of a traced input
      sequence ``X`` and in the attention region: then every ``h'_t`` is within ``radius`` of ``h_t``.
      For parallel blocks ``hybrid_input_radius = radius``.
    """
    if not 0 < margin <= 1:
        raise ValueError(f"margin must be in (0, 1], got {margin}")
    seqs = _as_sequences(traces_inputs, ir.d_model)
    T = max(s.shape[0] for s in seqs) if seq_len is None else int(seq_len)
    X = np.concatenate(seqs)
    unbounded = UNBOUNDED_EXTENSIONS.intersection(ir.extensions)
    if unbounded:
        return _unavailable(ir, sorted(unbounded), T, int(X.shape[0]), float(radius))
    hs = _norm2_inputs(ir, seqs)
    H = np.concatenate(hs)
    s1 = fdown(F(margin) * F(float(np.min(_scales(ir.norm1, X)))) * (1 - Fraction(1, 10**6)))
    s2 = fdown(F(margin) * F(float(np.min(_scales(ir.norm2, H)))) * (1 - Fraction(1, 10**6)))
    attn = attention_bound(ir, min_scale=s1, seq_len=T)
    norms = mlp_norms(ir.mlp)  # spectral norms shared by the analytic and the local MLP bound
    mlp_a = mlp_bound_with_norms(ir, s2, None, norms)
    mlp_l = mlp_local_bound_with_norms(ir, H, radius, 256, norms)
    one = Fraction(1)

    def combine(ka: float, km: float) -> float:
        if not (math.isfinite(ka) and math.isfinite(km)):
            return math.inf
        if ir.residual == "sequential":
            return fup((one + F(ka)) * (one + F(km)))
        return fup(one + F(ka) + F(km))

    analytic = combine(attn.value, mlp_a.value)
    hybrid = combine(attn.value, mlp_l.value)
    if ir.residual == "sequential":
        r_in = fdown(F(radius) / (one + F(attn.value))) if math.isfinite(attn.value) else 0.0
    else:
        r_in = float(radius)
    regions = {
        "K_norm1": norm_bound(ir.norm1, s1).region,
        "K_attn": attn.region,
        "K_mlp": mlp_a.region,
        "K_mlp_local": mlp_l.region,
        "analytic_upper_bound": f"sequences of T <= {T} tokens with every {scale_word(ir.norm1)} >= {s1!r} (norm1) "
        f"and every norm2 input with {scale_word(ir.norm2)} >= {s2!r}",
        "hybrid_upper_bound": f"sequences X' with ||X' - X||_F <= {r_in!r} for a traced input X, inside the K_attn region",
    }
    return BlockBounds(
        index=ir.index,
        residual=ir.residual,
        K_norm1=attn.parts["norm1"],
        K_attn=attn.value,
        K_mlp=mlp_a.value,
        K_mlp_local=mlp_l.value,
        analytic_upper_bound=analytic,
        hybrid_upper_bound=hybrid,
        hybrid_input_radius=r_in,
        min_scale1=s1,
        min_scale2=s2,
        radius=float(radius),
        seq_len=T,
        tokens=int(X.shape[0]),
        regions=regions,
    )


#: IR operators (:attr:`BlockIR.extensions`) no bound here covers: a norm's Lipschitz constant needs a floor on its
#: input's scale, which a post-norm's or QK-norm's input (an attention / MLP output, a projected query) does not
#: have, and a missing pre-norm leaves the attention logits unbounded. A logit soft-cap is covered (docs/bounds.md).
UNBOUNDED_EXTENSIONS = frozenset({"no norm1", "no norm2", "post_attn_norm", "post_mlp_norm", "q_norm", "k_norm"})


def _unavailable(ir: BlockIR, why: list[str], T: int, tokens: int, radius: float) -> BlockBounds:
    """No finite bound: every constant infinite, every region saying which operators are not covered."""
    region = f"unavailable: the bounds do not cover {', '.join(why)} (docs/bounds.md); no finite bound is claimed"
    return BlockBounds(
        index=ir.index, residual=ir.residual, **dict.fromkeys(UPPER_FIELDS, math.inf),
        hybrid_input_radius=0.0 if ir.residual == "sequential" else radius,
        min_scale1=0.0, min_scale2=0.0, radius=radius, seq_len=T, tokens=tokens, regions=dict.fromkeys(UPPER_FIELDS, region))


def empirical_lower_bound(replay_fn: Callable[[Any], Any], x: Any, *, iterations: int = 30, seed: int = 0) -> float:
    """A LOWER bound on the block's local Lipschitz constant at ``x``: ``||J v|| / ||v||`` for a power-iteration ``v``.

    ``replay_fn`` maps a torch tensor ``[B, T, d]`` to the block output (a tensor, or anything with an
    ``.output`` attribute such as :class:`blockcert.interpreter.Replay`); ``x`` is a numpy array or torch
    tensor of that shape, evaluated in float64. Power iteration on ``J^T J`` with ``torch.func.jvp`` /
    ``vjp`` (never forming ``J``); the returned value is attained, so it is ``<= ||J(x)||_2`` which is
    ``<=`` the Lipschitz constant on any neighbourhood of ``x`` (batch elements are independent, so the
    value bounds the largest per-sequence Jacobian norm from below).
    """
    import torch
    from torch.func import jvp, vjp

    xt = torch.as_tensor(_to_numpy(x), dtype=torch.float64)

    def f(inp: Any) -> Any:
        out = replay_fn(inp)
        return getattr(out, "output", out)

    with warnings.catch_warnings():  # torch's forward-AD decompositions still use torch.jit.script on first use
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(xt.shape, generator=gen, dtype=torch.float64)
        v = v / torch.linalg.vector_norm(v)
        _, pullback = vjp(f, xt)
        best = 0.0
        for _ in range(max(1, iterations)):
            _, jv = jvp(f, (xt,), (v,))
            best = max(best, float(torch.linalg.vector_norm(jv)))  # ||J v||, ||v|| = 1
            (w,) = pullback(jv)
            nrm = float(torch.linalg.vector_norm(w))
            if not (nrm > 0 and math.isfinite(nrm)):
                break
            v = w / nrm
        _, jv = jvp(f, (xt,), (v,))
        best = max(best, float(torch.linalg.vector_norm(jv)))
    return best * (1 - 1e-12)  # float64 rounding of J v, well below this margin at these sizes
