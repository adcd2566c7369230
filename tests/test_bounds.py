"""blockcert.bounds: certified upper bounds never land below the truth, lower bounds never above it.

References are independent of the code under test: exact singular values from mpmath (60 digits) or a
float64 SVD (for larger matrices, where our margins dwarf the SVD's rounding), Jacobians from torch
autograd or central finite differences, and Theorem 1 checked against deviations computed in exact
rational arithmetic.
"""

from __future__ import annotations

import math
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import attrs
import mpmath
import numpy as np
import pytest
import torch
from array_api_compat import array_namespace
from hypothesis import assume, given
from hypothesis import strategies as st
from irfactory import tiny_ir

import blockcert.bounds as B
from blockcert import interpreter as itp
from blockcert.bounds import mlp as Bmlp
from blockcert.bounds import rounding as Bround
from blockcert.ir import MLP, Linear, Norm

# ---------------------------------------------------------------------------------------------------
# Spectral norm
# ---------------------------------------------------------------------------------------------------


@st.composite
def matrices(draw: st.DrawFn, max_dim: int) -> np.ndarray:
    m, n = draw(st.integers(1, max_dim)), draw(st.integers(1, max_dim))
    kind = draw(st.sampled_from(["gaussian", "flat", "rank1", "lowrank", "heavy", "sparse", "int", "clustered"]))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
    log_scale = draw(st.integers(-8, 8) if dtype == np.float16 else st.integers(-60, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "gaussian":
        W = rng.standard_normal((m, n))
    elif kind == "flat":  # all singular values equal: the worst case for the Frobenius/Gram bound
        Q, _ = np.linalg.qr(rng.standard_normal((max(m, n), min(m, n))))
        W = Q if m >= n else Q.T
    elif kind == "rank1":
        W = np.outer(rng.standard_normal(m), rng.standard_normal(n))
    elif kind == "lowrank":
        W = rng.standard_normal((m, 2)) @ rng.standard_normal((2, n))
    elif kind == "heavy":
        W = rng.standard_cauchy((m, n))
    elif kind == "sparse":
        W = rng.standard_normal((m, n)) * (rng.random((m, n)) < 0.2)
    elif kind == "int":
        W = rng.integers(-3, 4, (m, n)).astype(np.float64)
    else:  # two nearly equal top singular values
        U, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
        V, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
        s = np.linspace(1.0, 0.1, min(m, n))
        if s.size > 1:
            s[1] = 1.0 - 1e-9
        W = (U * s) @ V.T
    W = (W * 2.0**log_scale).astype(dtype)
    assume(np.all(np.isfinite(W)))
    return W


def exact_sigma(W: np.ndarray) -> mpmath.mpf:
    """sigma_max to ~55 digits: eigenvalues of W^T W formed exactly at 60 digits (floats are exact)."""
    with mpmath.workdps(60):
        A = mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in np.asarray(W, np.float64)])
        G = A.T * A if A.cols <= A.rows else A * A.T
        ev = mpmath.eigsy(G, eigvals_only=True)
        return mpmath.sqrt(max(max(ev), mpmath.mpf(0)))


METHODS = ["svd", "gram", "gram-cholesky", "auto"]


@given(matrices(max_dim=9))
def test_spectral_bound_never_below_exact_sigma(W: np.ndarray) -> None:
    sigma = exact_sigma(W)
    for method in METHODS:
        b = B.spectral_upper_bound(W, method)
        with mpmath.workdps(60):
            assert mpmath.mpf(b.value) >= sigma, (method, b, sigma)
            assert mpmath.mpf(b.lower) <= sigma, (method, b, sigma)
        if method in ("gram", "gram-cholesky") and sigma > 0:
            assert b.value <= 1.01 * float(sigma), (method, b, float(sigma))
    with mpmath.workdps(60):
        assert mpmath.mpf(B.power_iteration_lower_bound(W)) <= sigma


@given(matrices(max_dim=60))
def test_spectral_bound_brackets_float64_svd(W: np.ndarray) -> None:
    sigma = float(np.linalg.svd(W.astype(np.float64), compute_uv=False)[0])
    lower = B.power_iteration_lower_bound(W)
    assert lower <= sigma
    for method in METHODS:
        b = B.spectral_upper_bound(W, method)
        assert b.lower <= sigma <= b.value, (method, b, sigma)
        if method != "svd" and sigma > 0:
            assert b.value <= 1.01 * sigma, (method, b, sigma)  # default iterations: <= (1 + 2 rtol) sigma


def _hadamard(n: int) -> np.ndarray:
    H = np.ones((1, 1))
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return H


@pytest.mark.parametrize(
    "W, sigma",
    [
        (np.random.default_rng(1).standard_normal((200, 500)).astype(np.float32), None),
        (np.random.default_rng(2).standard_normal((500, 200)), None),
        (np.random.default_rng(3).standard_normal((520, 800)).astype(np.float32), None),  # 520 > 512: float32 Lanczos
        # orthogonal columns of a Hadamard matrix: every singular value is exactly sqrt(rows) (flat: Gram's worst case)
        (_hadamard(512)[:, :200], math.sqrt(512)),
        (_hadamard(512)[:, :200].T.copy(), math.sqrt(512)),
        (_hadamard(1024)[:, :520] * 0.125, 4.0),
    ],
    ids=["gauss-200x500", "gauss-500x200", "gauss-520x800", "hadamard-512x200", "hadamard-200x512", "hadamard-1024x520"],
)
def test_spectral_bound_larger_matrices(W: np.ndarray, sigma: float | None) -> None:
    if sigma is None:
        sigma = float(np.linalg.svd(W.astype(np.float64), compute_uv=False)[0])
        lo, hi = sigma, sigma
    else:  # sqrt(512) is irrational: bracket it by the floats around it
        lo, hi = math.nextafter(sigma, 0), math.nextafter(sigma, math.inf)
    for method in ("gram", "gram-cholesky", "auto"):
        b = B.spectral_upper_bound(W, method)
        assert b.lower <= lo and hi <= b.value <= 1.01 * lo, (method, b, sigma)
    assert B.spectral_upper_bound(W).method == "gram-cholesky"  # auto picks the fast path here
    assert B.power_iteration_lower_bound(W, iterations=20) <= lo


def test_gram_fixed_iterations_are_sound_and_tighten() -> None:
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((200, 80)))  # flat spectrum: sigma = 1, rank 80
    values = [B.spectral_upper_bound(Q, "gram", iterations=t).value for t in range(1, 10)]
    assert all(v >= 1.0 for v in values)
    assert all(a >= b for a, b in zip(values, values[1:]))
    for t, v in enumerate(values, start=1):  # no rounding: exactly rank^(1/2^(t+1))
        assert v == pytest.approx(80 ** (1 / 2 ** (t + 1)), rel=1e-9)


def test_spectral_bound_edge_cases() -> None:
    assert B.spectral_upper_bound(np.zeros((3, 4))).value == 0.0
    assert B.spectral_upper_bound(np.zeros((0, 4))).value == 0.0
    assert B.spectral_upper_bound(np.array([[-2.5]]), "gram").value >= 2.5
    tiny = np.full((3, 3), 1e-300)
    for method in METHODS:
        assert B.spectral_upper_bound(tiny, method).value >= 3e-300
    huge = np.full((3, 3), 1e300)
    for method in METHODS:
        assert B.spectral_upper_bound(huge, method).value >= 3e300
    with pytest.raises(ValueError):
        B.spectral_upper_bound(np.ones(3))
    with pytest.raises(ValueError):
        B.spectral_upper_bound(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        B.spectral_upper_bound(np.eye(2), "lanczos")


# ---------------------------------------------------------------------------------------------------
# Theorem 1 (global bound)
# ---------------------------------------------------------------------------------------------------


def _frac_matrix(a: np.ndarray) -> list[list[Fraction]]:
    return [[Fraction(float(v)) for v in row] for row in a]


def _apply(A: list[list[Fraction]], x: list[Fraction], b: list[Fraction] | None = None) -> list[Fraction]:
    y = [sum((aij * xj for aij, xj in zip(row, x)), Fraction(0)) for row in A]
    return y if b is None else [yi + bi for yi, bi in zip(y, b)]


def _dist2(x: list[Fraction], y: list[Fraction]) -> Fraction:
    return sum(((a - b) ** 2 for a, b in zip(x, y)), Fraction(0))


def _norm_up(v: np.ndarray) -> float:
    return float(np.nextafter(np.linalg.norm(v) * (1 + 1e-13), np.inf))


@given(st.integers(1, 6), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_global_bound_dominates_exact_deviation_affine(n_layers: int, dim: int, seed: int) -> None:
    """B_i(x) = A_i x + b_i, B^_i(x) = B_i(x) + e_i: eps_i = ||e_i||, both L_i = ||A_i||-Lipschitz."""
    rng = np.random.default_rng(seed)
    A = [rng.standard_normal((dim, dim)) * rng.uniform(0.2, 2.0) for _ in range(n_layers)]
    b = [rng.standard_normal(dim) for _ in range(n_layers)]
    e = [rng.standard_normal(dim) * 10.0 ** rng.uniform(-6, 0) for _ in range(n_layers)]
    eps = [_norm_up(ei) for ei in e]
    lips = [B.spectral_upper_bound(Ai).value for Ai in A]
    bound = B.global_bound(eps, lips)
    Af, bf, ef = [_frac_matrix(a) for a in A], [[Fraction(float(v)) for v in bi] for bi in b], [[Fraction(float(v)) for v in ei] for ei in e]
    for _ in range(3):
        x = [Fraction(float(v)) for v in rng.standard_normal(dim) * 3]
        y, y_hat = x, x
        for Ai, bi, ei in zip(Af, bf, ef):
            y = _apply(Ai, y, bi)
            y_hat = [v + w for v, w in zip(_apply(Ai, y_hat, bi), ei)]
        assert _dist2(y_hat, y) <= bound.exact**2
        assert _dist2(y_hat, y) <= Fraction(bound.upper) ** 2


@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_global_bound_linear_perturbations_on_a_ball(n_layers: int, dim: int, seed: int) -> None:
    """B_i = A_i, B^_i = A_i + E_i on ||x|| <= 1: eps_i = ||E_i|| prod_{j<i} ||A_j||, L_i = max(||A_i||, ||A_i + E_i||)."""
    rng = np.random.default_rng(seed)
    A = [rng.standard_normal((dim, dim)) * rng.uniform(0.2, 2.0) for _ in range(n_layers)]
    E = [rng.standard_normal((dim, dim)) * 10.0 ** rng.uniform(-5, -1) for _ in range(n_layers)]
    normA = [B.spectral_upper_bound(a).value for a in A]
    eps, radius = [], Fraction(1)
    for a_norm, Ei in zip(normA, E):
        eps.append(float(Bround.fup(Fraction(B.spectral_upper_bound(Ei).value) * radius)))
        radius *= Fraction(a_norm)
    lips = [max(B.spectral_upper_bound(a).value, B.spectral_upper_bound(a + e).value) for a, e in zip(A, E)]
    bound = B.global_bound(eps, lips)
    Af, Ahf = [_frac_matrix(a) for a in A], [_frac_matrix(a + e) for a, e in zip(A, E)]
    for _ in range(3):
        v = rng.standard_normal(dim)
        x = [Fraction(float(t)) for t in v / (np.linalg.norm(v) * 1.0000001)]
        y, y_hat = x, x
        for Ai, Ahi in zip(Af, Ahf):
            y, y_hat = _apply(Ai, y), _apply(Ahi, y_hat)
        assert _dist2(y_hat, y) <= bound.exact**2


@given(st.lists(st.tuples(st.floats(0.0, 10.0), st.floats(0.1, 4.0)), min_size=1, max_size=8))
def test_global_bound_is_tight_for_scaled_identities(layers: list[tuple[float, float]]) -> None:
    """A_i = s_i I, e_i = eps_i u (same direction): the deviation equals sum eps_i prod_{j>i} s_j exactly."""
    eps = [e for e, _ in layers]
    s = [v for _, v in layers]
    dev = Fraction(0)  # 1-D state along u: x^_i - x_i evolves as dev <- s_i dev + eps_i
    for ei, si in zip(eps, s):
        dev = Fraction(si) * dev + Fraction(ei)
    bound = B.global_bound(eps, s)
    assert bound.exact == dev
    assert Fraction(bound.upper) >= dev


@given(st.lists(st.floats(0.0, 1e6, allow_subnormal=True), min_size=0, max_size=10))
def test_global_bound_with_unit_lipschitz_is_sum_of_eps(eps: list[float]) -> None:
    bound = B.global_bound(eps, [1.0] * len(eps))
    total = sum((Fraction(e) for e in eps), Fraction(0))
    assert bound.exact == bound.sum_eps_exact == total
    assert bound.lips_le_one
    assert Fraction(bound.sum_eps_upper) >= total


floats_nonneg = st.floats(0.0, 1e300, allow_subnormal=True)


@given(st.lists(st.tuples(floats_nonneg, st.floats(0.0, 1e3, allow_subnormal=True)), min_size=1, max_size=8), st.integers(1, 30))
def test_global_bound_outward_rounding(layers: list[tuple[float, float]], digits: int) -> None:
    eps = [e for e, _ in layers]
    lips = [v for _, v in layers]
    bound = B.global_bound(eps, lips, digits=digits)
    exact = Fraction(0)
    for e, lip in zip(eps, lips):
        exact = exact * Fraction(lip) + Fraction(e)
    assert bound.exact == exact
    for upper, decimal, q in ((bound.upper, bound.decimal, exact), (bound.sum_eps_upper, bound.sum_eps_decimal, bound.sum_eps_exact)):
        if math.isinf(upper):
            assert q > Fraction(sys.float_info.max)
        else:
            assert Fraction(upper) >= q  # never below the exact rational
            if q > 0:
                assert Fraction(math.nextafter(upper, -math.inf)) < q  # ... and the tightest such float
        assert Fraction(Decimal(decimal)) >= q
        assert len(Decimal(decimal).as_tuple().digits) <= digits


def test_global_bound_rounds_up_where_nearest_rounds_down() -> None:
    bound = B.global_bound([0.1, 0.2], [1.0, 1.0])  # 0.1 + 0.2 as exact rationals, just below float 0.30000000000000004
    assert Fraction(bound.upper) >= Fraction(0.1) + Fraction(0.2)
    assert B.global_bound([1e300], [1e300]).upper == 1e300  # L_0 never enters
    assert math.isinf(B.global_bound([1e300, 1e300], [1.0, 1e300]).upper)


@given(st.floats(1e-150, 1e150), st.integers(0, 2**40))
def test_sqrt_up_is_the_tightest_float(root: float, below: int) -> None:
    """sqrt_up(x) is the smallest float whose square is >= x: the verifier recomputes epsilon_seq with its own code and
    compares exactly (a run's block 29 once certified sqrt of the rounded-up sum, one ulp above, and failed verification).
    x sits at or just below a float's exact square, where sqrt of the rounded-up x can round to the next float."""
    x = Fraction(root) ** 2 * (1 - Fraction(below, 2**100))
    s = Bround.sqrt_up(x)
    assert Fraction(s) ** 2 >= x
    assert Fraction(math.nextafter(s, 0.0)) ** 2 < x


def test_global_bound_validation() -> None:
    with pytest.raises(ValueError):
        B.global_bound([0.1], [1.0, 2.0])
    with pytest.raises(ValueError):
        B.global_bound([-0.1], [1.0])
    with pytest.raises(ValueError):
        B.global_bound([math.nan], [1.0])
    with pytest.raises(ValueError):
        B.global_bound([0.1], [math.inf])
    assert B.global_bound([np.float32(0.1), Fraction(1, 3), 2], [1, 1, 1]).exact == Fraction(float(np.float32(0.1))) + Fraction(1, 3) + 2


# ---------------------------------------------------------------------------------------------------
# Norm layers
# ---------------------------------------------------------------------------------------------------


def _norm_np(norm: Norm, x: np.ndarray) -> np.ndarray:
    return itp.norm(array_namespace(x), x, norm)


def _fd_jacobian_norm(f, x: np.ndarray, h: float) -> float:
    d = x.shape[0]
    J = np.empty((d, d))
    for k in range(d):
        e = np.zeros(d)
        e[k] = h
        J[:, k] = (f(x + e) - f(x - e)) / (2 * h)
    return float(np.linalg.norm(J, 2))


def _scale(kind: str, x: np.ndarray) -> float:
    if kind == "layernorm":
        x = x - x.mean()
    return float(np.sqrt(np.mean(x * x)))


def _point_with_scale(kind: str, rng: np.random.Generator, d: int, s: float) -> np.ndarray:
    v = rng.standard_normal(d)
    if kind == "layernorm":
        v = v - v.mean()
    x = v / _scale(kind, v) * s
    if kind == "layernorm":
        x = x + rng.standard_normal() * 3  # a mean shift does not change std
    return x


@given(st.sampled_from(["rmsnorm", "layernorm"]), st.integers(2, 12), st.sampled_from([0.0, 1e-6, 1e-2, 0.5]), st.floats(0.05, 3.0), st.integers(0, 2**32 - 1))
def test_norm_bound_dominates_jacobians_and_pairs(kind: str, d: int, eps: float, s: float, seed: int) -> None:
    assume(kind == "rmsnorm" or d >= 2)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d) * rng.uniform(0.1, 3.0)
    norm = Norm(kind, w, eps=eps, bias=rng.standard_normal(d) if kind == "layernorm" else None)
    bound = B.norm_bound(norm, s).value
    f = lambda x: _norm_np(norm, x)  # noqa: E731
    points = [_point_with_scale(kind, rng, d, s * t) for t in (1.0, 1.0, 1.0, 1.5, 4.0)]
    for x in points:  # the region's boundary (scale == s) is the worst case
        assert _fd_jacobian_norm(f, x, 1e-6 * max(s, 1e-3)) <= bound * (1 + 1e-5)
    for x in points:  # pairs, including ones whose segment leaves the (non-convex) region
        for y in points + [-x, 2 * np.mean(x) - x if kind == "layernorm" else -x]:
            if _scale(kind, y) < s * (1 - 1e-12) or np.allclose(x, y):
                continue
            assert np.linalg.norm(f(x) - f(y)) <= bound * np.linalg.norm(x - y) * (1 + 1e-12)


def test_norm_bound_is_tight_and_region_dependent() -> None:
    d, s = 6, 0.7
    norm = Norm("rmsnorm", np.ones(d), eps=0.0)
    x = _point_with_scale("rmsnorm", np.random.default_rng(0), d, s)
    emp = _fd_jacobian_norm(lambda v: _norm_np(norm, v), x, 1e-7)
    assert B.norm_bound(norm, s).value == pytest.approx(1 / s, rel=1e-15)
    assert emp == pytest.approx(1 / s, rel=1e-6)
    assert math.isinf(B.norm_bound(norm, 0.0).value)  # no eps: not Lipschitz near 0
    assert B.norm_bound(Norm("rmsnorm", np.ones(d), eps=0.25), 0.0).value == pytest.approx(2.0)  # global with eps
    with pytest.raises(ValueError):
        B.norm_bound(norm, -1.0)


# ---------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------


def _attn_map(ir):
    def f(X):  # [T, d] -> [T, d]
        xp = array_namespace(X)
        T = X.shape[0]
        out, _, _ = itp.attention(xp, itp.norm(xp, X[None], ir.norm1), ir.attn, torch.arange(T)[None], None)
        return out[0]

    return f


def _jac_norm(f, X: torch.Tensor) -> float:
    J = torch.autograd.functional.jacobian(f, X)
    n = X.numel()
    return float(torch.linalg.matrix_norm(J.reshape(J.shape[0] * J.shape[1] if J.dim() == 4 else J.shape[0], n), 2))


def _scaled_linear(lin: Linear, factor: float) -> Linear:
    return Linear(lin.weight * np.float32(factor), None if lin.bias is None else lin.bias * np.float32(factor))


@given(st.integers(0, 10_000), st.sampled_from([0.1, 1.0, 4.0]), st.booleans(), st.booleans(), st.sampled_from(["rmsnorm", "layernorm"]), st.integers(1, 6),
       st.sampled_from([None, None, 0.3, 3.0]))
def test_attention_bound_dominates_jacobian(seed: int, qk_scale: float, rope: bool, sliding: bool, norm_kind: str, T: int,
                                            softcap: float | None) -> None:
    ir = tiny_ir(seed)
    rng = np.random.default_rng(seed)
    a = ir.attn
    mask = a.mask & ~np.tril(np.ones_like(a.mask), -3) if sliding else a.mask
    a = attrs.evolve(a, q=_scaled_linear(a.q, qk_scale), k=_scaled_linear(a.k, qk_scale), rope=a.rope if rope else None, mask=mask,
                     head_gate=np.array([1.0, 0.5, 0.0, 2.0], np.float32), softcap=softcap)
    d = ir.d_model
    norm1 = Norm(norm_kind, rng.standard_normal(d).astype(np.float32), eps=1e-5, bias=rng.standard_normal(d).astype(np.float32) if norm_kind == "layernorm" else None)
    ir = attrs.evolve(ir, attn=a, norm1=norm1)
    X = rng.standard_normal((T, d)) * rng.uniform(0.2, 3.0)
    s = min(_scale(norm_kind, x) for x in X)
    bound = B.attention_bound(ir, min_scale=s, seq_len=T)
    emp = _jac_norm(_attn_map(ir), torch.tensor(X))
    assert emp <= bound.value, (emp, bound)


def test_softcap_without_rope_needs_the_unshifted_key_radius() -> None:
    """A soft-capped logit is not linear in k_j, so the b_k shift of the no-RoPE bound is not free: the bound
    uses ``||W_K|| R + ||b_k||``. A large key bias makes the difference (and the shifted bound would still be
    checked by the hypothesis test above)."""
    ir = tiny_ir(3)
    a = attrs.evolve(ir.attn, rope=None, k=Linear(ir.attn.k.weight, ir.attn.k.bias * np.float32(50)))
    plain = B.attention_bound(attrs.evolve(ir, attn=a), min_scale=0.5, seq_len=6).value
    capped = B.attention_bound(attrs.evolve(ir, attn=attrs.evolve(a, softcap=5.0)), min_scale=0.5, seq_len=6).value
    assert capped > plain


def test_blocks_with_uncovered_operators_claim_no_finite_bound() -> None:
    """QK-norm, post-norms and a missing pre-norm have no bound here: every constant is infinite, the region says why,
    and the verifier's reference agrees (no finite bound either)."""
    from irfactory import extended_ir

    from blockcert.artifacts.bounds_record import BoundSettings
    from blockcert.verifier.reference.bounds import certified_part

    for ir in (extended_ir(), attrs.evolve(tiny_ir(), post_mlp_norm=tiny_ir().norm1), attrs.evolve(tiny_ir(), attn=attrs.evolve(
            tiny_ir().attn, q_norm=Norm("rmsnorm", np.ones(2, np.float32), eps=1e-6)))):
        X = np.random.default_rng(0).standard_normal((5, ir.d_model))
        bb = B.block_bounds(ir, [X])
        assert math.isinf(bb.analytic_upper_bound) and math.isinf(bb.hybrid_upper_bound) and math.isinf(bb.K_attn)
        assert all(r.startswith("unavailable: the bounds do not cover") for r in bb.regions.values())
        ref = certified_part(ir, [X], BoundSettings())
        assert all(math.isinf(v) for v in ref["upper"].values())
    softcapped = attrs.evolve(tiny_ir(), attn=attrs.evolve(tiny_ir().attn, softcap=4.0))
    assert math.isfinite(B.block_bounds(softcapped, [np.random.default_rng(0).standard_normal((5, 8))]).analytic_upper_bound)


def test_attention_value_path_needs_the_column_factor() -> None:
    """Uniform causal attention (W_Q = W_K = 0), W_V = W_O = I, one head: the Jacobian on normed inputs is
    ||P||_2 > 1, so the usual ||W_V|| ||W_O|| value-path bound (= 1) is not sound; ours (sqrt(c)) is."""
    d, T = 4, 6
    ir = tiny_ir(0, d=d, n_heads=1, n_kv=1, hd=d, n_ctx=T)
    eye, zero = np.eye(d, dtype=np.float32), np.zeros((d, d), np.float32)
    ir = attrs.evolve(ir, attn=attrs.evolve(ir.attn, q=Linear(zero), k=Linear(zero), v=Linear(eye), o=Linear(eye), rope=None))
    Z = torch.tensor(np.random.default_rng(0).standard_normal((T, d)))

    def on_normed(Zt):
        out, _, _ = itp.attention(array_namespace(Zt), Zt[None], ir.attn, torch.arange(T)[None], None)
        return out[0]

    emp = _jac_norm(on_normed, Z)
    bound = B.attention_bound(ir, min_scale=0.0, seq_len=T)
    assert emp > 1.0 + 1e-3  # the naive value-path bound ||W_V|| ||W_O|| = 1 fails
    assert emp <= bound.parts["attention_on_normed"] == pytest.approx(math.sqrt(T))


# ---------------------------------------------------------------------------------------------------
# MLP: activation shapes, local and analytic bounds
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["silu", "gelu", "gelu_tanh"])
def test_activation_shape_assumptions(kind: str) -> None:
    """The interval bounds rely on a' having exactly two critical points +-t_star and a one minimum t_min."""
    c = Bmlp.ACT_CONSTANTS[kind]
    t = np.linspace(-40, 40, 800_001)
    da = Bmlp.dact(kind, t)
    a = Bmlp.act(kind, t)
    assert da.max() <= c.dmax and -da.min() <= c.dmin_abs and -a.min() <= c.amin_abs
    dd = np.diff(da)
    sig = np.sign(dd[np.abs(dd) > 1e-13])
    changes = t[1:][np.abs(dd) > 1e-13][1:][np.diff(sig) != 0]
    assert len(changes) == 2 and np.allclose(changes, [-c.t_star, c.t_star], atol=1e-3)
    sa = np.sign(np.diff(a)[np.abs(np.diff(a)) > 1e-13])
    assert np.count_nonzero(np.diff(sa)) == 1
    itp_act = itp.activation(np, t, kind)
    assert np.allclose(itp_act, a, rtol=1e-12, atol=1e-15)  # the interpreter's (1 + erf) loses the far left tail


@pytest.mark.parametrize("kind", ["silu", "gelu", "gelu_tanh", "relu"])
def test_activation_interval_bounds(kind: str) -> None:
    rng = np.random.default_rng(1)
    lo = rng.uniform(-8, 8, 300)
    hi = lo + rng.exponential(2.0, 300) * (rng.random(300) < 0.9)
    lo[:3], hi[:3] = -2.4, -2.39  # around -t_star, t_min, t_star
    dmax = Bmlp.dact_absmax(kind, lo, hi)
    amax = Bmlp.act_absmax(kind, lo, hi)
    for i in range(lo.size):
        t = np.linspace(lo[i], hi[i], 2001)
        assert np.max(np.abs(Bmlp.dact(kind, t))) <= dmax[i]
        assert np.max(np.abs(Bmlp.act(kind, t))) <= amax[i]


def _mlp_ir(seed: int, activation: str, gated: bool, norm_kind: str, d: int, f: int, wscale: float):
    rng = np.random.default_rng(seed)
    ir = tiny_ir(seed, d=d, f=f, n_heads=2, n_kv=1, hd=2)

    def lin(i: int, o: int) -> Linear:
        return Linear((rng.standard_normal((i, o)) * wscale).astype(np.float32), rng.standard_normal(o).astype(np.float32))

    mlp = MLP(activation, up=lin(d, f), down=lin(f, d), gate=lin(d, f) if gated else None)
    norm2 = Norm(norm_kind, rng.standard_normal(d).astype(np.float32), eps=1e-5, bias=rng.standard_normal(d).astype(np.float32) if norm_kind == "layernorm" else None)
    return attrs.evolve(ir, mlp=mlp, norm2=norm2)


def _mlp_map(ir):
    def g(y):  # [d] -> [d]
        xp = array_namespace(y)
        return itp.mlp(xp, itp.norm(xp, y[None], ir.norm2), ir.mlp)[0]

    return g


@given(
    st.integers(0, 10_000),
    st.sampled_from([("silu", True), ("gelu", False), ("gelu_tanh", False), ("gelu_tanh", True), ("relu", False), ("gelu", True)]),
    st.sampled_from(["rmsnorm", "layernorm"]),
    st.integers(3, 8),
    st.integers(2, 12),
    st.sampled_from([0.3, 1.0, 3.0]),
    st.sampled_from([0.05, 0.5, 2.0]),
)
def test_mlp_local_bound_dominates_jacobians_in_the_balls(seed, act, norm_kind, d, f, wscale, radius) -> None:
    activation, gated = act
    ir = _mlp_ir(seed, activation, gated, norm_kind, d, f, wscale)
    rng = np.random.default_rng(seed + 1)
    centers = rng.standard_normal((3, d)) * rng.uniform(0.5, 3.0, (3, 1)) + rng.standard_normal((3, 1))
    lb = B.mlp_local_bound(ir, centers, radius)
    assert lb.value == max(lb.per_center)
    g = _mlp_map(ir)
    for k, c in enumerate(centers):
        pts = [c]
        for _ in range(4):
            v = rng.standard_normal(d)
            v /= np.linalg.norm(v)
            pts += [c + radius * v, c + radius * v * rng.random() ** (1 / d)]
        for p in pts:
            emp = _jac_norm(g, torch.tensor(p))
            assert emp <= lb.per_center[k] * (1 + 1e-9), (k, emp, lb.per_center[k])
        outs = [g(torch.tensor(p)).numpy() for p in pts]
        for i in range(len(pts)):
            for j in range(i):
                assert np.linalg.norm(outs[i] - outs[j]) <= lb.per_center[k] * np.linalg.norm(pts[i] - pts[j]) * (1 + 1e-9)
    # the analytic bound holds wherever scale(x) >= min_scale
    s = min(_scale(norm_kind, c) for c in centers)
    ab = B.mlp_bound(ir, min_scale=s)
    for c in centers:
        assert _jac_norm(g, torch.tensor(c)) <= ab.value * (1 + 1e-9)


# ---------------------------------------------------------------------------------------------------
# Whole blocks
# ---------------------------------------------------------------------------------------------------


def _replay_output(ir):
    return lambda x: itp.replay(ir, x).output


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("residual", ["sequential", "parallel"])
def test_block_empirical_lower_below_certified_upper(seed: int, residual: str) -> None:
    ir = attrs.evolve(tiny_ir(seed), residual=residual)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2, ir.n_ctx, ir.d_model)) * 2.0
    bb = B.block_bounds(ir, X)
    lower = B.empirical_lower_bound(_replay_output(ir), X)
    assert 0 < lower <= bb.hybrid_upper_bound <= bb.analytic_upper_bound or bb.K_mlp_local > bb.K_mlp
    assert lower <= bb.analytic_upper_bound and lower <= bb.hybrid_upper_bound
    # the power iteration is a genuine lower bound on, and close to, the Jacobian norm of one sequence
    x0 = torch.tensor(X[:1])
    true = _jac_norm(lambda t: itp.replay(ir, t[None]).output[0], x0[0])
    lower0 = B.empirical_lower_bound(_replay_output(ir), X[:1], iterations=60)
    assert lower0 <= true * (1 + 1e-9) and lower0 >= 0.9 * true
    # the hybrid bound on its stated region: X' within hybrid_input_radius of a traced X
    delta = rng.standard_normal(X[:1].shape)
    delta *= bb.hybrid_input_radius / np.linalg.norm(delta)
    out = lambda z: itp.replay(ir, z).output  # noqa: E731
    dev = np.linalg.norm(out(X[:1] + delta) - out(X[:1]))
    assert dev <= bb.hybrid_upper_bound * np.linalg.norm(delta) * (1 + 1e-9)
    record = bb.to_dict()
    assert set(record["regions"]) == {"K_norm1", "K_attn", "K_mlp", "K_mlp_local", "analytic_upper_bound", "hybrid_upper_bound"}


def test_block_bounds_accepts_prompt_lists_and_torch() -> None:
    ir = tiny_ir(4)
    rng = np.random.default_rng(4)
    seqs = [rng.standard_normal((t, ir.d_model)) for t in (2, 6)]
    bb = B.block_bounds(ir, seqs)
    assert bb.tokens == 8 and bb.seq_len == 6
    bb2 = B.block_bounds(ir, torch.tensor(seqs[1]))
    assert bb2.tokens == 6 and math.isfinite(bb2.analytic_upper_bound)
    with pytest.raises(ValueError):
        B.block_bounds(ir, np.zeros((2, 3)))


def test_bounds_module_does_not_import_torch() -> None:
    code = (
        "import sys; sys.path.insert(0, 'tests'); import numpy as np\n"
        "import blockcert.bounds as B\n"
        "from irfactory import tiny_ir\n"
        "ir = tiny_ir(); B.block_bounds(ir, np.random.default_rng(0).standard_normal((6, 8))); B.global_bound([0.1], [2.0])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
