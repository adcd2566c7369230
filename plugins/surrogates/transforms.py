"""The transforms: pure numpy functions from a :class:`~blockcert.ir.BlockIR` to a derived one.

Each takes the IR and already-parsed parameters and returns ``(derived_ir, info)``; ``info`` maps a
key such as ``"energy_kept.attn.q"`` to a string, recorded by the caller as ``source["derivation.<key>"]``.
Spec strings, parameter parsing and the ``source`` bookkeeping live in ``blockcert_surrogates``.

Every computation runs in float64 and is cast back to the weight's own dtype; nothing is modified in
place (arrays are copied or rebuilt, records are ``attrs.evolve``-d). No torch.
"""

from __future__ import annotations

import attrs
import numpy as np

from blockcert.ir import BlockIR, Linear

Info = dict[str, str]

#: The matrices each ``targets`` value names, as (block part, field) pairs; ``mlp.gate`` only if gated.
TARGETS: dict[str, tuple[tuple[str, str], ...]] = {
    "attn": (("attn", "q"), ("attn", "k"), ("attn", "v"), ("attn", "o")),
    "mlp": (("mlp", "up"), ("mlp", "gate"), ("mlp", "down")),
}
TARGETS["all"] = TARGETS["attn"] + TARGETS["mlp"]


class Inapplicable(Exception):
    """The transform does not apply to this IR (e.g. ``drop-rope`` on a block without RoPE)."""


def _linears(ir: BlockIR, targets: str) -> list[tuple[str, Linear]]:
    """``[("attn.q", Linear), ...]`` for the matrices ``targets`` names that this block has."""
    found = [(f"{part}.{name}", getattr(getattr(ir, part), name)) for part, name in TARGETS[targets]]
    return [(key, lin) for key, lin in found if lin is not None]


def _replace(ir: BlockIR, new: dict[str, Linear]) -> BlockIR:
    """``ir`` with the Linear at each ``"part.name"`` key of ``new`` swapped in."""
    parts = {part: {k.split(".")[1]: v for k, v in new.items() if k.startswith(part + ".")} for part in ("attn", "mlp")}
    return attrs.evolve(ir, attn=attrs.evolve(ir.attn, **parts["attn"]), mlp=attrs.evolve(ir.mlp, **parts["mlp"]))


def _rel_error(new: np.ndarray, old: np.ndarray) -> float:
    """``||new - old||_F / ||old||_F`` in float64 (0 for an all-zero ``old``)."""
    ref = np.linalg.norm(old.astype(np.float64))
    return float(np.linalg.norm(new.astype(np.float64) - old.astype(np.float64)) / ref) if ref > 0 else 0.0


# ---------------------------------------------------------------------------------------------------
# Surrogates
# ---------------------------------------------------------------------------------------------------


#: the last few SVDs, by the matrix's dtype, shape and bytes: ``blockcert minimize`` truncates the same matrices
#: at many ranks. A hit returns the factors LAPACK returned for those very bytes, so results are unchanged.
_SVD_CACHE: dict[tuple[str, tuple[int, ...], bytes], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_SVD_CACHE_SIZE = 8


def _svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import hashlib

    key = (w.dtype.str, w.shape, hashlib.sha256(np.ascontiguousarray(w).tobytes()).digest())
    hit = _SVD_CACHE.get(key)
    if hit is None:
        hit = np.linalg.svd(w.astype(np.float64), full_matrices=False)
        for u in hit:
            u.setflags(write=False)  # shared between callers: never modified in place
        if len(_SVD_CACHE) >= _SVD_CACHE_SIZE:
            _SVD_CACHE.pop(next(iter(_SVD_CACHE)))
        _SVD_CACHE[key] = hit
    return hit


def truncated_svd(w: np.ndarray, r: int) -> tuple[np.ndarray, int, float]:
    """Best rank-``min(r, min(w.shape))`` approximation of ``w`` (Eckart-Young), its rank, and the energy kept.

    The energy kept is ``sum_{i<k} s_i^2 / sum_i s_i^2`` from sequential prefix sums, so it is monotone
    in ``r`` and exactly 1.0 at full rank (1.0 for an all-zero matrix).
    """
    u, s, vt = _svd(w)  # [m,n] -> [m,p], [p], [p,n]
    k = min(r, s.size)
    energy = np.cumsum(s**2)  # [p]
    kept = float(energy[k - 1] / energy[-1]) if energy[-1] > 0 else 1.0
    approx = (u[:, :k] * s[:k]) @ vt[:k]  # [m,k] @ [k,n] -> [m,n], rank <= k
    return approx.astype(w.dtype), k, kept


def lowrank(ir: BlockIR, *, r: int, targets: str) -> tuple[BlockIR, Info]:
    """Every target weight replaced by its truncated SVD; biases untouched."""
    new: dict[str, Linear] = {}
    info: Info = {}
    for key, lin in _linears(ir, targets):
        weight, k, kept = truncated_svd(lin.weight, r)
        new[key] = attrs.evolve(lin, weight=weight)
        info[f"rank.{key}"] = str(k)
        info[f"energy_kept.{key}"] = repr(kept)
    return _replace(ir, new), info


def int8_roundtrip(w: np.ndarray) -> np.ndarray:
    """Symmetric per-output-channel int8 quantisation of ``w`` [d_in, d_out], dequantised to ``w.dtype``.

    ``scale_j = max_i |w_ij| / 127`` (1 for an all-zero column), ``q = clip(rint(w / scale), -127, 127)``,
    result ``q * scale``: within ``scale_j / 2`` of ``w`` in column ``j`` (plus the final cast's rounding).
    """
    w64 = w.astype(np.float64)  # [d_in, d_out]
    peak = np.max(np.abs(w64), axis=0)  # [d_out]
    scale = np.where(peak > 0, peak / 127.0, 1.0)  # [d_out]
    q = np.clip(np.rint(w64 / scale), -127, 127)  # [d_in, d_out], integers
    return (q * scale).astype(w.dtype)


def int8(ir: BlockIR, *, targets: str) -> tuple[BlockIR, Info]:
    """Every target weight int8-quantised per output channel and stored dequantised; biases untouched."""
    new: dict[str, Linear] = {}
    info: Info = {}
    for key, lin in _linears(ir, targets):
        weight = int8_roundtrip(lin.weight)
        new[key] = attrs.evolve(lin, weight=weight)
        info[f"max_abs_error.{key}"] = repr(float(np.max(np.abs(weight.astype(np.float64) - lin.weight.astype(np.float64)))))
        info[f"rel_error.{key}"] = repr(_rel_error(weight, lin.weight))
    return _replace(ir, new), info


def prune_heads(ir: BlockIR, *, heads: tuple[int, ...]) -> tuple[BlockIR, Info]:
    """``head_gate[h] = 0`` for every listed query head."""
    n = ir.attn.n_heads
    missing = [h for h in heads if h >= n]
    if missing:
        raise Inapplicable(f"parameter 'heads': query head {missing[0]} does not exist (block {ir.index} has heads 0-{n - 1})")
    gate = ir.attn.head_gate.copy()  # [H]
    gate[list(heads)] = 0
    return attrs.evolve(ir, attn=attrs.evolve(ir.attn, head_gate=gate)), {}


# ---------------------------------------------------------------------------------------------------
# Ablations
# ---------------------------------------------------------------------------------------------------


def drop_rope(ir: BlockIR) -> tuple[BlockIR, Info]:
    """Attention without its rotary embedding."""
    if ir.attn.rope is None:
        raise Inapplicable(f"block {ir.index} has no RoPE to drop")
    return attrs.evolve(ir, attn=attrs.evolve(ir.attn, rope=None)), {}


def invert_mask(ir: BlockIR) -> tuple[BlockIR, Info]:
    """``allowed' = NOT allowed``, with every position's own key (the diagonal) kept allowed.

    The diagonal keeps every softmax row finite in *every* replay, including those shorter than
    ``n_ctx`` (a replay of ``T`` tokens uses the table's top-left ``T x T`` corner, where a query
    row's only allowed keys could otherwise all lie beyond ``T``). For a causal mask this makes every
    position attend to itself and all later positions.
    """
    mask = ~ir.attn.mask | np.eye(ir.n_ctx, dtype=bool)  # [n_ctx, n_ctx]
    return attrs.evolve(ir, attn=attrs.evolve(ir.attn, mask=mask)), {}


def zero_wv(ir: BlockIR) -> tuple[BlockIR, Info]:
    """``W_V = 0`` and ``b_V = 0``: every head reads zero values (the attention output is ``b_O``)."""
    v = ir.attn.v
    zero = Linear(np.zeros_like(v.weight), None if v.bias is None else np.zeros_like(v.bias))
    return attrs.evolve(ir, attn=attrs.evolve(ir.attn, v=zero)), {}


def noise_wq(ir: BlockIR, *, sigma: float, seed: int) -> tuple[BlockIR, Info]:
    """``W_Q += sigma * N(0, 1)``, absolute noise from ``np.random.default_rng(seed)`` in float64.

    ``sigma = 0`` keeps ``W_Q`` bit for bit (adding ``0 * N`` would turn ``-0.0`` entries into ``+0.0``).
    """
    q = ir.attn.q
    if sigma == 0:
        weight = q.weight.copy()
    else:
        noise = np.random.default_rng(seed).standard_normal(q.weight.shape)  # [d, H*hd] float64
        weight = (q.weight.astype(np.float64) + sigma * noise).astype(q.weight.dtype)
    info = {"rel_error.attn.q": repr(_rel_error(weight, q.weight))}
    return attrs.evolve(ir, attn=attrs.evolve(ir.attn, q=attrs.evolve(q, weight=weight))), info


# ---------------------------------------------------------------------------------------------------
# The minimize family: what `blockcert minimize` searches over (docs/minimize.md)
# ---------------------------------------------------------------------------------------------------

#: the matrices a ``minimize`` rank vector covers, in order (``mlp.gate`` only in a gated MLP)
RANK_KEYS: tuple[str, ...] = tuple(f"{part}.{name}" for part, name in TARGETS["all"])


def pack_mask(keep: np.ndarray) -> str:
    """A keep-vector as hex: bit ``i`` (little-endian within each byte) is unit ``i``; padding bits are 0."""
    return np.packbits(np.asarray(keep, bool), bitorder="little").tobytes().hex()


def unpack_mask(text: str, n: int, what: str) -> np.ndarray:
    """The inverse of :func:`pack_mask` for ``n`` units; a wrong length or a set padding bit is refused."""
    if len(text) != 2 * (-(-n // 8)):
        raise Inapplicable(f"parameter {what!r}: {len(text)} hex digits, expected {2 * (-(-n // 8))} for {n} units")
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8), bitorder="little")
    if bits[n:].any():
        raise Inapplicable(f"parameter {what!r}: bits beyond unit {n - 1} are set")
    return bits[:n].astype(bool)


def full_ranks(ir: BlockIR) -> dict[str, int]:
    """Every matrix of the block and its full rank ``min(shape)``, in :data:`RANK_KEYS` order."""
    return {key: min(lin.weight.shape) for key, lin in _linears(ir, "all")}


def minimize(ir: BlockIR, *, heads: str, neurons: str, rank: dict[str, int], score: str, log: str) -> tuple[BlockIR, Info]:
    """Keep the query heads and MLP hidden units whose bits are set, then truncate each matrix to its rank.

    * heads: ``head_gate[h] = 0`` for every head whose bit is clear (kept heads keep their gate).
    * neurons: hidden unit ``j`` cleared zeroes column ``j`` of W_up and W_gate (and their biases' entry ``j``)
      and row ``j`` of W_down (the IR stores weights ``[d_in, d_out]``), so the unit contributes nothing.
    * rank: each listed matrix (after the neuron mask) becomes its truncated SVD at that rank; a rank equal to
      the full rank leaves the matrix untouched (no SVD), so an all-on candidate is the base IR bit for bit.

    ``score`` and ``log`` (the search's score method and the SHA-256 of its log) change nothing in the IR:
    they ride in the canonical spec so the certificate ties the search to the surrogate.
    """
    n_heads, width = ir.attn.n_heads, ir.mlp.up.weight.shape[1]
    head_keep = unpack_mask(heads, n_heads, "heads")
    unit_keep = unpack_mask(neurons, width, "neurons")
    full = full_ranks(ir)
    if set(rank) != set(full):
        raise Inapplicable(f"parameter 'rank': gives {', '.join(sorted(rank))}; block {ir.index} has {', '.join(full)}")
    too_big = [k for k in full if rank[k] > full[k]]
    if too_big:
        raise Inapplicable(f"parameter 'rank': {too_big[0]} has full rank {full[too_big[0]]}, asked for {rank[too_big[0]]}")
    gate = ir.attn.head_gate.copy()  # [H]
    gate[~head_keep] = 0
    new: dict[str, Linear] = {}
    for key, lin in _linears(ir, "mlp"):
        weight, bias = lin.weight.copy(), None if lin.bias is None else lin.bias.copy()
        if key == "mlp.down":
            weight[~unit_keep, :] = 0  # [f, d]: the cleared units' output rows
        else:
            weight[:, ~unit_keep] = 0  # [d, f]: the cleared units' input columns
            if bias is not None:
                bias[~unit_keep] = 0
        new[key] = Linear(weight, bias)
    import hashlib

    info: Info = {"kept.heads": f"{int(head_keep.sum())}/{n_heads}", "kept.neurons": f"{int(unit_keep.sum())}/{width}",
                  "mask_sha256.heads": hashlib.sha256(bytes.fromhex(heads)).hexdigest(),
                  "mask_sha256.neurons": hashlib.sha256(bytes.fromhex(neurons)).hexdigest()}
    for key, lin in _linears(ir, "all"):
        lin = new.get(key, lin)
        if rank[key] < full[key]:
            weight, _, kept = truncated_svd(lin.weight, rank[key])
            lin = attrs.evolve(lin, weight=weight)
            info[f"energy_kept.{key}"] = repr(kept)
        new[key] = lin
        info[f"rank.{key}"] = f"{rank[key]}/{full[key]}"
    derived = _replace(ir, new)
    return attrs.evolve(derived, attn=attrs.evolve(derived.attn, head_gate=gate)), info
