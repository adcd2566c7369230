"""Tightness of the certified bounds, not only their soundness (tests/test_bounds.py): on fixed small cases
each bound stays within a stated ratio of what is actually reached (the largest Jacobian norm found, or
an exact value derived by hand), so a bound that drifts 1000x looser fails here even though it is still
"sound". The ratios below were measured once on these seeds and are asserted with a margin of about 4x."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import blockcert.bounds as B
from blockcert.ir import Norm
from irfactory import tiny_ir
from test_bounds import _attn_map, _jac_norm, _mlp_map, _scale

SEEDS = range(6)
# measured on these seeds: attention 327-1284x, analytic MLP 19-70x, local MLP (radius 0.1) 9-15x
ATTENTION_RATIO, MLP_RATIO, LOCAL_MLP_RATIO = 5_000.0, 300.0, 60.0


def _inputs(seed: int, d: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("seed", SEEDS)
def test_attention_bound_within_a_stated_ratio_of_the_reached_jacobian(seed: int) -> None:
    ir = tiny_ir(seed)
    rng = np.random.default_rng(seed)
    Xs = [rng.standard_normal((4, ir.d_model)) for _ in range(20)]
    s = min(_scale(ir.norm1.kind, x) for X in Xs for x in X)
    bound = B.attention_bound(ir, min_scale=s, seq_len=4).value
    reached = max(_jac_norm(_attn_map(ir), torch.tensor(X)) for X in Xs)
    assert reached <= bound <= ATTENTION_RATIO * reached, (bound, reached, bound / reached)


@pytest.mark.parametrize("seed", SEEDS)
def test_mlp_bounds_within_a_stated_ratio_of_the_reached_jacobian(seed: int) -> None:
    ir = tiny_ir(seed)
    Xs = _inputs(seed, ir.d_model, 40)
    g = _mlp_map(ir)
    reached = max(_jac_norm(g, torch.tensor(x)) for x in Xs)
    bound = B.mlp_bound(ir, min_scale=min(_scale(ir.norm2.kind, x) for x in Xs)).value
    assert reached <= bound <= MLP_RATIO * reached, (bound / reached)
    local = B.mlp_local_bound(ir, Xs[:3], 0.1).value
    reached_local = max(_jac_norm(g, torch.tensor(x)) for x in Xs[:3])
    assert reached_local <= local <= LOCAL_MLP_RATIO * reached_local, (local / reached_local)


def test_norm_bound_equals_the_hand_derived_value() -> None:
    """RMSNorm with unit weights: the Jacobian at scale s has norm 1/sqrt(s^2 + eps) at most (reached for a
    direction orthogonal to x), so on scale >= s the bound is exactly that; with eps = 0.25 and s = 0 it is 2."""
    d = 6
    for s in (0.0, 0.5, 2.0):
        value = B.norm_bound(Norm("rmsnorm", np.ones(d), eps=0.25), s).value
        assert value == pytest.approx(1 / math.sqrt(s * s + 0.25), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_spectral_upper_bound_is_within_a_hair_of_the_exact_norm(seed: int) -> None:
    W = np.random.default_rng(seed).standard_normal((24, 40))
    exact = float(np.linalg.norm(W, 2))
    assert exact <= B.spectral_upper_bound(W, "svd").value <= exact * (1 + 1e-9)  # only the rounding margin
    assert exact <= B.spectral_upper_bound(W).value <= exact * (1 + 0.01)  # the default asks for rtol 0.005
