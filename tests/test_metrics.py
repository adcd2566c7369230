"""Every metric of eq. (3)-(10) on hand-computed cases, and the verdict at its boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from blockcert.metrics import (
    Policy, block_metrics, certified, cov_act, cov_loss, cov_path, epsilon, mae, path_matches, token_errors, token_norms,
)


def test_token_error_is_l2_norm_per_token():
    x = np.zeros((3, 2))
    x_hat = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    assert token_errors(x_hat, x).tolist() == [5.0, 0.0, 1.0]
    assert token_norms(x_hat).tolist() == [5.0, 0.0, 1.0]


def test_epsilon_mae_cov_act():
    e = np.array([5.0, 0.0, 1.0, 0.01])
    assert epsilon(e) == 5.0
    assert mae(e) == pytest.approx(6.01 / 4)
    assert cov_act(e, 1.0) == 0.75  # 0, 1 (boundary: <= counts) and 0.01
    assert cov_act(e, 0.01) == 0.5
    assert cov_act(e, 0.0) == 0.25


def test_cov_loss_weights_tokens_by_baseline_loss():
    base = np.array([1.0, 2.0, 3.0])
    stitched = np.array([1.0, 2.0005, 4.0])  # |Δ| = 0, 5e-4, 1
    assert cov_loss(base, stitched, 1e-3) == pytest.approx(3.0 / 6.0)
    assert cov_loss(base, stitched, 1.0) == 1.0  # boundary: |Δ| == τ counts
    assert cov_loss(base, stitched, 0.0) == pytest.approx(1.0 / 6.0)
    assert cov_loss(np.zeros(2), np.ones(2), 1e-3) == 1.0  # no baseline loss to account for


def test_cov_loss_uses_absolute_difference():
    assert cov_loss(np.array([2.0]), np.array([1.5]), 0.25) == 0.0
    assert cov_loss(np.array([2.0]), np.array([1.75]), 0.25) == 1.0


def test_path_coverage_compares_every_decision():
    recorded = np.tril(np.ones((3, 3), bool))
    replayed = recorded.copy()
    replayed[1, 2] = True  # token 1 attends to the future in the replay
    gates = np.ones(4, bool)
    m = path_matches(replayed, recorded, gates, gates)
    assert m.tolist() == [True, False, True]
    assert cov_path(m) == pytest.approx(2 / 3)
    off = gates.copy()
    off[2] = False  # a head gated off: every token's decisions differ
    assert path_matches(recorded, recorded, off, gates).tolist() == [False, False, False]


@pytest.mark.parametrize(
    "act, loss, expected",
    [(0.94, 0.9, True), (0.9399999, 0.9, False), (0.94, 0.8999999, False), (1.0, 1.0, True), (0.0, 1.0, False)],
)
def test_verdict_at_the_boundaries(act, loss, expected):
    assert certified(act, loss, Policy()) is expected


def test_policy_defaults_are_the_papers_and_are_validated():
    p = Policy()
    assert (p.tau_act, p.tau_loss, p.alpha_act, p.alpha_loss) == (1e-2, 1e-3, 0.94, 0.9)
    for bad in ({"tau_act": -1}, {"alpha_act": 1.5}, {"alpha_loss": float("nan")}, {"tau_loss": float("inf")}):
        with pytest.raises(ValueError):
            Policy(**bad)


def test_block_metrics_aggregates_over_prompts():
    policy = Policy(tau_act=0.5, tau_loss=0.1)
    errors = [np.array([0.0, 1.0]), np.array([0.2, 0.3, 0.4])]
    norms = [np.array([1.0, 2.0]), np.array([2.0, 3.0, 4.0])]
    path = [np.array([True, True]), np.array([True, False, True])]
    base = [np.array([1.0]), np.array([1.0, 3.0])]
    stitched = [np.array([1.5]), np.array([1.0, 3.05])]
    m = block_metrics(errors, norms, path, base, stitched, policy)
    assert m.epsilon == 1.0
    assert m.mae == pytest.approx(1.9 / 5)
    assert m.cov_act == pytest.approx(4 / 5)
    assert m.cov_path == pytest.approx(4 / 5)
    assert m.cov_loss == pytest.approx(4 / 5)  # covered: 1.0 + 3.0 of 5.0
    assert m.rel_max == pytest.approx(0.5) and m.rel_mean == pytest.approx((0 + 0.5 + 0.1 + 0.1 + 0.1) / 5)
    assert (m.tokens, m.loss_tokens) == (5, 3)
    assert m.per_prompt_cov_act == (0.5, 1.0) and m.best_prompt == 1
    assert m.per_prompt_cov_loss == (0.0, 1.0)


def test_best_prompt_ties_break_on_mae_then_index():
    policy = Policy(tau_act=1.0)
    errors = [np.array([0.5]), np.array([0.1]), np.array([0.1])]
    ones = [np.ones(1)] * 3
    m = block_metrics(errors, ones, [np.ones(1, bool)] * 3, [np.ones(0)] * 3, [np.ones(0)] * 3, policy)
    assert m.best_prompt == 1
