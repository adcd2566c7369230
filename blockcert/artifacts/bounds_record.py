"""The record format of ``block_<idx>/bounds.json``: its names, labels and settings.

Shared by the producer (:mod:`blockcert.bounds.record`) and the verifier (:mod:`blockcert.verifier.bounds`,
:mod:`blockcert.verifier.reference.bounds`), so the verifier can read the record without importing the producer's
bound computations. Imports only the standard library, attrs, numpy and :mod:`blockcert.errors`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

LIPSCHITZ_FORMAT = "blockcert-lipschitz/v1"
NORM = "sequences: Frobenius norm over tokens, each token Euclidean"
UPPER_FIELDS = ("K_norm1", "K_attn", "K_mlp", "K_mlp_local", "analytic_upper_bound", "hybrid_upper_bound")
SPECTRAL_MATRICES = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")
LOWER_LABEL = ("attained lower bound on the local Lipschitz constant: ||J v|| / ||v|| at the traced input of this prompt, "
               "v from power iteration on JᵀJ (torch.func jvp/vjp); never above the true Jacobian norm")
LABELS = {
    "certified": "upper bounds on the IR block's Lipschitz constant (and its parts), outward-rounded, each valid on "
                 "the region in certified.regions; null = no finite bound",
    "epsilon_seq": "measured: max over prompts of the Frobenius norm of the replay error over the sequence "
                   "(sqrt of the sum of the per-token e(p,t)^2), rounded up",
    "empirical_lower_bound": "attained, not certified: a lower bound, so the gap to the upper bounds is visible",
}
SUMMARY_FIELDS = ("bounds", "analytic_upper_bound", "hybrid_upper_bound", "hybrid_input_radius", "empirical_lower_bound",
                  "epsilon_seq")


@attrs.frozen
class BoundSettings:
    """How ``run --bounds`` computes the bounds (recorded in every bounds.json).

    ``margin``: the norm regions are ``scale >= margin x`` the smallest traced RMS/std (0 < margin <= 1).
    ``radius``: the ℓ2 radius of the balls around the traced norm2 inputs for the local MLP bound.
    ``lower_iterations``: power-iteration steps of the empirical (Jacobian) lower bound.
    """

    margin: float = 0.5
    radius: float = 1.0
    lower_iterations: int = 10

    def __attrs_post_init__(self) -> None:
        from blockcert.errors import UserError

        if not (0 < self.margin <= 1):
            raise UserError(f"--bound-margin must be in (0, 1], got {self.margin}")
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise UserError(f"--bound-radius must be a positive number, got {self.radius}")
        if self.lower_iterations < 1:
            raise UserError(f"--bound-iterations must be >= 1, got {self.lower_iterations}")


def lower_bound_input(inputs: Sequence[Any]) -> int:
    """Which prompt the empirical lower bound is taken on: the longest (the first of equals)."""
    return max(range(len(inputs)), key=lambda k: (inputs[k].shape[0], -k))
