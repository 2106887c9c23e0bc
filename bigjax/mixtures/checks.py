"""Argument checks of `bigjax.mixtures.gmm` on concrete values (skipped under jit/vmap).

Each function raises ValueError naming the argument, what is wrong, and how to fix it; traced
arguments pass unchecked, so the mixture functions stay traceable (see gmm's module docstring).
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(*xs) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in xs)


def check_dim(d: int, name: str = "means") -> None:
  """A mixture needs at least one dimension (D = 0 would fail later as an IndexError)."""
  if d == 0:
    raise ValueError(
        f"{name} has D = 0 dimensions (shape [..., K, 0]); a mixture needs at least one "
        "dimension: give means of shape [..., K, D] with D >= 1."
    )


def check_scale_tril(scale_tril) -> None:
  """Finite, lower triangular (nothing above the diagonal), positive diagonal."""
  if not is_concrete(scale_tril):
    return
  tril = np.asarray(scale_tril)
  if not np.all(np.isfinite(tril)):
    raise ValueError(f"scale_tril contains NaN or inf at {_first(~np.isfinite(tril))}.")
  upper = np.triu(np.ones(tril.shape[-2:], bool), k=1)
  above = (tril != 0) & upper
  if np.any(above):
    raise ValueError(
        f"scale_tril has a nonzero entry above the diagonal at {_first(above)}: it must be the "
        "lower-triangular factor L of Sigma = L L^T. For an upper factor U (Sigma = U^T U) pass "
        "its transpose np.swapaxes(U, -1, -2), or pass covariances= instead."
    )
  if not np.all(np.diagonal(tril, axis1=-2, axis2=-1) > 0):
    raise ValueError(
        "scale_tril must have a strictly positive diagonal (it is the "
        "Cholesky factor of a positive definite covariance)."
    )


def check_finite_values(values, name: str) -> None:
  """Observed values (already cast to the mixture's dtype, so an overflow shows as inf)."""
  if is_concrete(values) and not np.all(np.isfinite(np.asarray(values))):
    bad = _first(~np.isfinite(np.asarray(values)))
    raise ValueError(
        f"{name} contains NaN or inf at {bad} (a value beyond the mixture's dtype range reads "
        "as inf); condition on finite values."
    )


def check_responsibilities(log_weights, name: str) -> None:
  """The conditional's weights: NaN when the values are so far from every component that every
  component's evidence underflows to zero."""
  if is_concrete(log_weights) and np.any(np.isnan(np.asarray(log_weights))):
    raise ValueError(
        f"{name} are so far from every component that every component's likelihood underflows "
        "(the responsibilities are 0/0); condition on values within the mixture's range, or "
        "rescale the data."
    )


def _first(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])
