"""The certification policy: thresholds τ and levels α (paper eq. 6-10). Shared by the producer and the
verifier as part of the certificate format (``predicate.policy``); no metric code here."""

from __future__ import annotations

import attrs
import numpy as np


def _finite_nonneg(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def _unit(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not np.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


@attrs.frozen
class Policy:
    """Thresholds (tau) and certification levels (alpha). Defaults are the paper's."""

    tau_act: float = attrs.field(default=1e-2, converter=float, validator=_finite_nonneg)
    tau_loss: float = attrs.field(default=1e-3, converter=float, validator=_finite_nonneg)
    alpha_act: float = attrs.field(default=0.94, converter=float, validator=_unit)
    alpha_loss: float = attrs.field(default=0.9, converter=float, validator=_unit)
