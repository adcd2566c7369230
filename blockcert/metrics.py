"""The paper's metrics, eq. (3)-(10), as pure numpy functions. No torch here.

Per-token error e(p,t) = ||x_hat_t - x_t||_2 (eq. 3); epsilon = max e (4); MAE = mean e (5);
cov_act = fraction of tokens with e <= tau_act (6); cov_path = fraction of tokens whose every discrete
decision (attention-mask row, head gates) matches the recorded one; cov_loss = share of the baseline
loss carried by tokens whose loss moves by at most tau_loss when the block is replaced (7)-(8);
certified iff cov_act >= alpha_act and cov_loss >= alpha_loss (9)-(10).

The policy's name says which per-token threshold τ stands for (:func:`act_thresholds`, :func:`loss_thresholds`):
the paper's constant, τ_act·||x_t|| (``relative``), or k times the native block's own precision noise on
that token (``noise-floor``; the floors are measured by :mod:`blockcert.pipeline.floor`).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from blockcert.policy import Policy

__all__ = ["BlockMetrics", "Policy", "act_thresholds", "block_metrics", "certified", "cov_act", "cov_loss", "cov_path", "epsilon",
           "loss_thresholds", "mae", "path_matches", "token_errors", "token_norms"]


@attrs.frozen
class BlockMetrics:
    """One block's metrics over all traced prompts and tokens."""

    epsilon: float  # eq. (4): max_(p,t) e(p,t)
    mae: float  # eq. (5): mean_(p,t) e(p,t)
    cov_act: float  # eq. (6)
    cov_path: float  # fraction of tokens whose discrete decisions all match
    cov_loss: float  # eq. (8)
    rel_max: float  # max_(p,t) e(p,t) / ||x_t||
    rel_mean: float  # mean_(p,t) e(p,t) / ||x_t||
    tokens: int  # |D_l|: traced tokens
    loss_tokens: int  # tokens with a next-token target (loss coverage runs over these)
    best_prompt: int  # prompt with the highest cov_act (ties: lowest MAE, then lowest index)
    per_prompt_cov_act: tuple[float, ...]
    per_prompt_mae: tuple[float, ...]
    per_prompt_cov_loss: tuple[float, ...]


def token_errors(x_hat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """eq. (3): [T, d], [T, d] -> [T]; computed in float64."""
    diff = np.asarray(x_hat, dtype=np.float64) - np.asarray(x, dtype=np.float64)
    return np.sqrt(np.sum(diff * diff, axis=-1))


def token_norms(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(np.sum(x * x, axis=-1))


def epsilon(errors: np.ndarray) -> float:
    return float(np.max(errors))


def mae(errors: np.ndarray) -> float:
    return float(np.mean(errors))


def cov_act(errors: np.ndarray, tau_act: float | np.ndarray) -> float:
    """eq. (6); ``tau_act`` is one threshold or one per token."""
    return float(np.mean(errors <= tau_act))


def act_thresholds(policy: Policy, norms: np.ndarray, floor: np.ndarray | None = None) -> np.ndarray:
    """[T] the error up to which each token counts as covered: τ_act (paper), τ_act·||x_t|| (relative, ``norms``
    the native output's), or k·f(p,t) (noise-floor, ``floor`` the native block's precision noise)."""
    norms = np.asarray(norms, np.float64)
    if policy.name == "relative":
        return policy.tau_act * norms
    if policy.name == "noise-floor":
        if floor is None:
            raise ValueError("the noise-floor policy needs the measured floors")
        return policy.k * np.asarray(floor, np.float64)
    return np.full(norms.shape, policy.tau_act)


def loss_thresholds(policy: Policy, n: int, floor: np.ndarray | None = None) -> np.ndarray:
    """[n] the loss change up to which each target token counts as unaffected: τ_loss, or k·(the loss change the
    native block's own precision noise causes) under noise-floor."""
    if policy.name == "noise-floor":
        if floor is None:
            raise ValueError("the noise-floor policy needs the measured floors")
        return policy.k * np.asarray(floor, np.float64)
    return np.full(n, policy.tau_loss)


def path_matches(replay_mask: np.ndarray, recorded_mask: np.ndarray, replay_gates: np.ndarray, recorded_gates: np.ndarray) -> np.ndarray:
    """Per query token: does every mask entry of its row and every head gate match? [T, T] x2, [H] x2 -> [T] bool."""
    rows = np.all(np.asarray(replay_mask, bool) == np.asarray(recorded_mask, bool), axis=-1)  # [T]
    gates = bool(np.array_equal(np.asarray(replay_gates, bool), np.asarray(recorded_gates, bool)))
    return rows & gates


def cov_path(matches: np.ndarray) -> float:
    return float(np.mean(matches))


def cov_loss(loss_base: np.ndarray, loss_stitched: np.ndarray, tau_loss: float | np.ndarray) -> float:
    """eq. (7)-(8); ``tau_loss`` is one threshold or one per token. If the baseline loss is zero everywhere the
    covered share is defined as 1."""
    base = np.asarray(loss_base, dtype=np.float64)
    delta = np.abs(np.asarray(loss_stitched, dtype=np.float64) - base)
    total = float(np.sum(base))
    if total == 0.0:
        return 1.0
    return float(np.sum(base * (delta <= tau_loss)) / total)


def certified(metrics_cov_act: float, metrics_cov_loss: float, policy: Policy) -> bool:
    """eq. (9)-(10)."""
    return metrics_cov_act >= policy.alpha_act and metrics_cov_loss >= policy.alpha_loss


def block_metrics(
    errors: Sequence[np.ndarray],
    norms: Sequence[np.ndarray],
    path: Sequence[np.ndarray],
    loss_base: Sequence[np.ndarray],
    loss_stitched: Sequence[np.ndarray],
    policy: Policy,
    floor_act: Sequence[np.ndarray] | None = None,
    floor_loss: Sequence[np.ndarray] | None = None,
) -> BlockMetrics:
    """Aggregate per-prompt arrays ([T_p] errors, norms, path matches, act floors; [T_p - 1] losses, loss floors)
    into one block's metrics under ``policy`` (the floors only under noise-floor)."""
    n_p = len(errors)
    act_thr = [act_thresholds(policy, norms[p], None if floor_act is None else floor_act[p]) for p in range(n_p)]
    loss_thr = [loss_thresholds(policy, np.size(loss_base[p]), None if floor_loss is None else floor_loss[p]) for p in range(n_p)]
    e = np.concatenate([np.asarray(a, np.float64) for a in errors])
    n = np.concatenate([np.asarray(a, np.float64) for a in norms])
    rel = np.divide(e, n, out=np.zeros_like(e), where=n > 0)
    lb = np.concatenate([np.asarray(a, np.float64) for a in loss_base])
    ls = np.concatenate([np.asarray(a, np.float64) for a in loss_stitched])
    per_cov = tuple(cov_act(a, t) for a, t in zip(errors, act_thr))
    per_mae = tuple(mae(a) for a in errors)
    per_loss = tuple(cov_loss(b, s, t) for b, s, t in zip(loss_base, loss_stitched, loss_thr))
    best = min(range(len(errors)), key=lambda p: (-per_cov[p], per_mae[p], p))
    return BlockMetrics(
        epsilon=epsilon(e),
        mae=mae(e),
        cov_act=cov_act(e, np.concatenate(act_thr)),
        cov_path=cov_path(np.concatenate([np.asarray(a, bool) for a in path])),
        cov_loss=cov_loss(lb, ls, np.concatenate(loss_thr)),
        rel_max=float(np.max(rel)),
        rel_mean=float(np.mean(rel)),
        tokens=int(e.size),
        loss_tokens=int(lb.size),
        best_prompt=best,
        per_prompt_cov_act=per_cov,
        per_prompt_mae=per_mae,
        per_prompt_cov_loss=per_loss,
    )
