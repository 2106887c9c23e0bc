"""Argument checks of `bigjax.mixtures` (gmm, matching): static index sets always, values only
when concrete (skipped under jit/vmap).

Each function raises an error naming the argument, what is wrong, and how to fix it; traced
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


def check_dims(dims, dim: int, name: str) -> tuple[int, ...]:
  """Validates a static index set into a mixture of dimension `dim`."""
  if isinstance(dims, (int, np.integer)):
    dims = (dims,)
  try:
    dims = tuple(dims)
  except TypeError as e:
    raise TypeError(f"{name} must be a sequence of ints, got {dims!r}.") from e
  if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
    raise TypeError(f"{name} must hold integer dimensions (0.5 names none), got {dims!r}.")
  dims = tuple(int(d) for d in dims)
  if not dims:
    raise ValueError(f"{name} is empty: name at least one dimension of the {dim}-D mixture.")
  if len(set(dims)) != len(dims):
    raise ValueError(f"{name}={dims} repeats a dimension; each dimension may appear once.")
  bad = [d for d in dims if not 0 <= d < dim]
  if bad:
    raise ValueError(
        f"{name}={dims} has dimensions {bad} outside the mixture's range " f"0..{dim - 1}."
    )
  return dims


PD_HINT = (
    "Covariances must be symmetric positive definite (add a small multiple of the "
    "identity, or pass `scale_tril` with a positive diagonal)."
)


def check_positive_definite(covariances, name: str, hint: str = PD_HINT):
  if not is_concrete(covariances):
    return
  dtype = np.asarray(covariances).dtype
  eps = np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64).eps
  cov = np.asarray(covariances, dtype=np.float64)
  if not np.all(np.isfinite(cov)):
    raise ValueError(f"{name} contains NaN or inf.")
  if not np.allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-5, atol=1e-8):
    raise ValueError(f"{name} is not symmetric; pass symmetric covariance matrices.")
  if not cov.size:
    return
  eigs = np.linalg.eigvalsh(cov.reshape((-1,) + cov.shape[-2:]))  # [M, D], M >= 1
  eig_min, eig_max = eigs.min(axis=-1), np.abs(eigs).max(axis=-1)
  # Relative to the largest eigenvalue and the input's precision: a matrix that is singular
  # up to rounding would give a Cholesky factor of noise (or NaN) in that precision.
  bad = np.flatnonzero(eig_min <= cov.shape[-1] * eps * eig_max)
  if bad.size:
    idx = np.unravel_index(bad[0], cov.shape[:-2]) if cov.ndim > 2 else ()
    raise ValueError(
        f"{name} is not positive definite: matrix {tuple(int(i) for i in idx)} has smallest "
        f"eigenvalue {eig_min[bad[0]]:.3g} against largest {eig_max[bad[0]]:.3g} (singular in "
        f"{np.dtype(dtype).name} precision). {hint}"
    )


def _first(mask: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])
