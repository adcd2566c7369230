"""Certified Lipschitz bounds for BlockIR blocks, and the exact-rational global bound (paper §5, §6.7).

Everything here is a pure numpy function (``import blockcert.bounds`` never imports torch; only
:func:`empirical_lower_bound` imports it, lazily). Conventions used throughout:

* **Norms.** A token is a vector in ``R^d`` with the Euclidean norm. A sequence ``X`` is a ``[T, d]``
  array with the Frobenius norm (the Euclidean norm of the flattened sequence). Every Lipschitz constant
  below is with respect to these norms: ``||f(X) - f(Y)||_F <= L ||X - Y||_F``.
* **Upper bounds are certified.** Every quantity called an *upper bound* is rounded outward: it is an
  upper bound on the exact real-number quantity, including the rounding error of the float64
  computation that produced it. Scalars are combined in exact rational arithmetic
  (:class:`fractions.Fraction`) and converted to the next float up; array quantities are rounded up
  with :func:`numpy.nextafter`; activations are evaluated with cancellation-free formulas (exp,
  erfc) and get a slack of ``1e-12`` times the magnitude of their terms (far above the few-ulp error). Matrix products rely on the standard error bound of
  *conventional* (non-Strassen) matrix multiplication in IEEE binary64 with round-to-nearest,
  ``|fl(AB) - AB| <= gamma_k |A| |B|`` elementwise, ``gamma_k = k u / (1 - k u)``, ``u = 2^-53``
  (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.5), which every BLAS satisfies.
* **Regions.** Softmax attention, gated MLPs and normalisation layers are not globally Lipschitz, so
  each bound states the region on which it holds (``region`` field). A bound is only meaningful on
  its region; the certificate must carry the region with the number.
* **Lower bounds** (:func:`power_iteration_lower_bound`, :func:`empirical_lower_bound`) are values
  actually attained (``||J v|| / ||v||`` for a concrete ``v``), so ``lower <= true <= upper``.

Public API: :func:`spectral_upper_bound`, :func:`power_iteration_lower_bound`, :func:`norm_bound`,
:func:`attention_bound`, :func:`mlp_bound`, :func:`mlp_local_bound`, :func:`block_bounds`,
:func:`empirical_lower_bound`, :func:`global_bound`. The derivations are in ``docs/bounds.md``.
"""

from __future__ import annotations

from blockcert.bounds.block import BlockBounds, block_bounds, empirical_lower_bound
from blockcert.bounds.layers import LipschitzBound, attention_bound, norm_bound
from blockcert.bounds.mlp import LocalMLPBound, mlp_bound, mlp_local_bound
from blockcert.bounds.spectral import SpectralBound, power_iteration_lower_bound, spectral_upper_bound
from blockcert.bounds.theorem import GlobalBound, global_bound

__all__ = [
    "SpectralBound",
    "LipschitzBound",
    "LocalMLPBound",
    "BlockBounds",
    "GlobalBound",
    "spectral_upper_bound",
    "power_iteration_lower_bound",
    "norm_bound",
    "attention_bound",
    "mlp_bound",
    "mlp_local_bound",
    "block_bounds",
    "empirical_lower_bound",
    "global_bound",
]
