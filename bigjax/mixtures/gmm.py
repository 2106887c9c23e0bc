"""Full-covariance Gaussian mixtures as pure functions (paper Sec. 3.3, App. B).

A mixture is an immutable pytree (`GMM`) whose fields carry optional leading batch axes, so a
whole grid of mixtures is one object and `vmap` over it is free:

  log_weights  [..., K]        normalised log mixture weights
  means        [..., K, D]
  scale_tril   [..., K, D, D]  lower-triangular Cholesky factors, Sigma_k = L_k L_k^T

The component axis is the last batch axis (as in distrax's MixtureSameFamily). Everything works
in log space with Cholesky factors and triangular solves; no explicit inverse or determinant is
ever formed. Every function is pure and safe under `jit`, `vmap` and `grad`.

Argument checks: shapes and index sets are checked always (they are static under `jit`); values
(positive definiteness, non-negative weights, non-negative noise) are checked whenever they are
concrete, i.e. outside of `jit`/`vmap`. Build mixtures with `create` outside the traced code and
the checks catch bad input before it can turn into NaNs.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bigjax.mixtures import checks
from bigjax.mixtures import linalg
from bigjax.mixtures.linalg import random_orthogonal, rotation  # noqa: F401 (public here too)

_LOG_2PI = math.log(2.0 * math.pi)


class GMM(NamedTuple):
  """A Gaussian mixture with optional leading batch axes (see module docstring)."""

  log_weights: jax.Array
  means: jax.Array
  scale_tril: jax.Array

  @property
  def dim(self) -> int:
    return self.means.shape[-1]

  @property
  def num_components(self) -> int:
    return self.means.shape[-2]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return self.means.shape[:-2]

  @property
  def weights(self) -> jax.Array:
    return jnp.exp(self.log_weights)

  @property
  def covariances(self) -> jax.Array:
    return self.scale_tril @ jnp.swapaxes(self.scale_tril, -1, -2)


# ----------------------------------------------------------------------------------------------
# Construction.


def create(means, covariances=None, *, weights=None, log_weights=None, scale_tril=None) -> GMM:
  """Builds a mixture, checking every argument.

  Args:
    means: `[..., K, D]` component means.
    covariances: `[..., K, D, D]` symmetric positive definite covariances, or `[..., K, D]`
      diagonals, or `[..., K]` / scalar isotropic variances (read in that order when a shape
      fits several, e.g. K == D); leading axes broadcast against the means'. Exactly one of `covariances` and
      `scale_tril` is given.
    weights: `[..., K]` non-negative mixture weights (normalised here). Default: uniform.
    log_weights: `[..., K]` unnormalised log weights, instead of `weights`.
    scale_tril: `[..., K, D, D]` lower-triangular factors with positive diagonal.

  Returns:
    A `GMM` whose fields are broadcast to one common batch shape.
  """
  means = jnp.asarray(means)
  if means.ndim < 2:
    raise ValueError(f"means must have shape [..., K, D], got shape {means.shape}.")
  if not jnp.issubdtype(means.dtype, jnp.floating):
    means = means.astype(jnp.result_type(float))
  k, d = means.shape[-2:]
  checks.check_dim(d)
  dtype = means.dtype
  if checks.is_concrete(means) and not np.all(np.isfinite(np.asarray(means))):
    raise ValueError("means contain NaN or inf.")
  if (covariances is None) == (scale_tril is None):
    raise ValueError("Give exactly one of `covariances` and `scale_tril`.")
  if covariances is not None:
    cov = jnp.asarray(covariances, dtype)
    # Read by shape, in this order (a shape that fits several reads takes the first):
    # full [..., K, D, D], diagonal [..., K, D], isotropic [..., K] or scalar; leading batch
    # axes broadcast against the means' (shared covariances with batched means included).
    if cov.ndim >= 3 and cov.shape[-3:] == (k, d, d):
      pass
    elif cov.ndim >= 2 and cov.shape[-2:] == (k, d):
      cov = cov[..., :, None] * jnp.eye(d, dtype=dtype)
    elif cov.ndim == 0 or cov.shape[-1] == k:
      cov = cov[..., None, None] * jnp.eye(d, dtype=dtype)
    else:
      raise ValueError(
          f"covariances of shape {cov.shape} do not fit means of shape "
          f"{means.shape}: expected [..., {k}, {d}, {d}] (full), [..., {k}, {d}] "
          f"(diagonal), [..., {k}] (isotropic) or a scalar."
      )
    checks.check_positive_definite(cov, "covariances")
    scale_tril = _cholesky(cov)
  else:
    scale_tril = jnp.asarray(scale_tril, dtype)
    if scale_tril.ndim < 2 or scale_tril.shape[-2:] != (d, d):
      raise ValueError(
          f"scale_tril must have shape [..., {k}, {d}, {d}], got " f"{scale_tril.shape}."
      )
    checks.check_scale_tril(scale_tril)
    scale_tril = jnp.tril(scale_tril)
  if weights is not None and log_weights is not None:
    raise ValueError("Give at most one of `weights` and `log_weights`.")
  if log_weights is None:
    if weights is None:
      log_weights = jnp.zeros(means.shape[:-1], dtype)
    else:
      weights = jnp.asarray(weights, dtype)
      if checks.is_concrete(weights) and (
          np.any(np.asarray(weights) < 0)
          or not np.all(np.isfinite(np.asarray(weights)))
          or np.any(np.asarray(weights).sum(-1) <= 0)
      ):
        raise ValueError(
            "weights must be finite, non-negative and not all zero; got " f"{np.asarray(weights)}."
        )
      log_weights = jnp.log(weights)
  log_weights = jnp.asarray(log_weights, dtype)
  if log_weights.shape[-1:] != (k,):
    raise ValueError(
        f"weights must have shape [..., {k}] to match means {means.shape}, got "
        f"{log_weights.shape}."
    )
  if checks.is_concrete(log_weights):
    lw = np.asarray(log_weights)
    if np.any(np.isnan(lw) | (lw == np.inf)) or np.any(np.all(lw == -np.inf, axis=-1)):
      raise ValueError(
          "log_weights must be finite or -inf (a weight of 0), and not -inf for "
          f"every component of a mixture; got {lw}."
      )
  log_weights = jax.nn.log_softmax(log_weights, axis=-1)
  try:
    batch = jnp.broadcast_shapes(log_weights.shape[:-1], means.shape[:-2], scale_tril.shape[:-3])
  except ValueError as e:
    raise ValueError(
        f"Batch shapes do not broadcast: weights {log_weights.shape}, means "
        f"{means.shape}, scale_tril {scale_tril.shape}."
    ) from e
  return GMM(
      jnp.broadcast_to(log_weights, batch + (k,)),
      jnp.broadcast_to(means, batch + (k, d)),
      jnp.broadcast_to(scale_tril, batch + (k, d, d)),
  )


def _symmetrize(m):
  return 0.5 * (m + jnp.swapaxes(m, -1, -2))


def _cholesky(cov):
  return linalg.cholesky(_symmetrize(cov))


def _half_log_det(scale_tril):
  return jnp.sum(jnp.log(jnp.diagonal(scale_tril, axis1=-2, axis2=-1)), axis=-1)


# ----------------------------------------------------------------------------------------------
# Densities and sampling.


def log_prob_columns(gmm: GMM, x_columns) -> jax.Array:
  """Log density at points stored as columns: `x_columns` `[*batch, D, N]` -> `[*batch, N]`.

  The layout (points last) lets every component handle all N points at once; `log_prob` and
  the quadrature rules in `bigjax.mixtures.divergences` use it.
  """
  if gmm.dim <= linalg.UNROLL_MAX_DIM and gmm.num_components <= _UNROLL_MAX_COMPONENTS:
    return log_prob_rows(gmm, [x_columns[..., i, :] for i in range(gmm.dim)])
  const = _half_log_det(gmm.scale_tril) + 0.5 * gmm.dim * _LOG_2PI  # [*b, K]
  diff = x_columns[..., None, :, :] - gmm.means[..., :, :, None]  # [*b, K, D, N]
  z = linalg.solve_lower(gmm.scale_tril, diff)
  comp = -0.5 * jnp.sum(z * z, axis=-2) + (gmm.log_weights - const)[..., None]
  return jax.nn.logsumexp(comp, axis=-2)


def log_prob_rows(gmm: GMM, rows: Sequence[jax.Array]) -> jax.Array:
  """Log density at points given as D coordinate arrays `rows[i]` `[*batch, N]` -> `[*batch, N]`.

  The fast path for small mixtures: on XLA:CPU a reduction over a short axis (D coordinates,
  K components) is about ten times slower than the same sum written as elementwise terms
  (benchmarks/RESULTS.md), and this is the innermost work of every quadrature rule. So the
  forward substitution, the squared Mahalanobis distance and the log-sum-exp over components
  are all unrolled into elementwise ops on `[*batch, N]` arrays.
  """
  d, k = gmm.dim, gmm.num_components
  const = _half_log_det(gmm.scale_tril) + 0.5 * d * _LOG_2PI  # [*b, K]
  terms = []
  for c in range(k):
    tril = gmm.scale_tril[..., c, :, :, None]  # [*b, D, D, 1]
    mean = gmm.means[..., c, :, None]
    z, maha = [], 0.0
    for i in range(d):
      zi = rows[i] - mean[..., i, :]
      for j in range(i):
        zi = zi - tril[..., i, j, :] * z[j]
      zi = zi / tril[..., i, i, :]
      z.append(zi)
      maha = maha + zi * zi
    terms.append(-0.5 * maha + (gmm.log_weights[..., c] - const[..., c])[..., None])
  return _logsumexp_terms(terms)


_UNROLL_MAX_COMPONENTS = 64


def _logsumexp_terms(terms: list[jax.Array]) -> jax.Array:
  """log sum_k exp(terms[k]) for a list of same-shaped arrays."""
  m = functools.reduce(jnp.maximum, terms)
  # Stopping the gradient of the shift is exact (the result does not depend on it), and the
  # guard keeps all -inf terms (zero-weight components) from making inf - inf.
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
  total = functools.reduce(jnp.add, [jnp.exp(t - m) for t in terms])
  return jnp.log(total) + m


def log_prob(gmm: GMM, x) -> jax.Array:
  """log p(x) of the mixture: log sum_k pi_k N(x | mu_k, Sigma_k).

  Args:
    gmm: mixture with batch shape `B`.
    x: `[*S, *B', D]` points, where `B'` broadcasts against `B` (sample axes `S` lead).

  Returns:
    `[*S, *broadcast(B', B)]` log densities.
  """
  x = jnp.asarray(x)
  if x.ndim == 0 or x.shape[-1] != gmm.dim:
    raise ValueError(
        f"x must have shape [..., {gmm.dim}] for this {gmm.dim}-D mixture, got " f"{x.shape}."
    )
  nb = len(gmm.batch_shape)
  if x.ndim - 1 < nb:
    x = x.reshape((1,) * (nb + 1 - x.ndim) + x.shape)
  sample_shape = x.shape[: x.ndim - 1 - nb]
  try:
    batch = jnp.broadcast_shapes(x.shape[x.ndim - 1 - nb : -1], gmm.batch_shape)
  except ValueError as e:
    raise ValueError(
        f"x of shape {x.shape} does not broadcast against the mixture's batch "
        f"shape {gmm.batch_shape}."
    ) from e
  n = math.prod(sample_shape)
  x = jnp.broadcast_to(x.reshape((n,) + x.shape[len(sample_shape) :]), (n,) + batch + (gmm.dim,))
  out = log_prob_columns(broadcast_batch(gmm, batch), jnp.moveaxis(x, 0, -1))  # [*batch, n]
  return jnp.moveaxis(out, -1, 0).reshape(sample_shape + batch)


def sample(
    gmm: GMM, *, rng: jax.Array, sample_shape: Sequence[int] = (), return_components: bool = False
):
  """Draws reparameterised samples: x = mu_c + L_c eps with c ~ Categorical(pi), eps ~ N(0, I).

  Gradients flow to means and Cholesky factors (pathwise); the discrete component draw carries
  no gradient to the weights.

  Args:
    gmm: mixture with batch shape `B`.
    rng: a PRNG key.
    sample_shape: leading sample axes `S`.
    return_components: also return the component index of every sample.

  Returns:
    `[*S, *B, D]` samples, and with `return_components` also `[*S, *B]` int32 indices.
  """
  sample_shape = tuple(sample_shape)
  rng_c, rng_e = jax.random.split(rng)
  shape = sample_shape + gmm.batch_shape
  comps = jax.random.categorical(rng_c, gmm.log_weights, shape=shape)
  eps = jax.random.normal(rng_e, shape + (gmm.dim,), gmm.means.dtype)
  mean = jnp.take_along_axis(
      jnp.broadcast_to(gmm.means, shape + gmm.means.shape[-2:]), comps[..., None, None], axis=-2
  )[..., 0, :]
  tril = jnp.take_along_axis(
      jnp.broadcast_to(gmm.scale_tril, shape + gmm.scale_tril.shape[-3:]),
      comps[..., None, None, None],
      axis=-3,
  )[..., 0, :, :]
  x = mean + jnp.einsum("...ij,...j->...i", tril, eps)
  return (x, comps) if return_components else x


# ----------------------------------------------------------------------------------------------
# Marginals, conditionals, transforms, noising.


def marginal(gmm: GMM, dims) -> GMM:
  """The mixture's marginal over `dims` (static ints, in the order given).

  The marginal of a mixture is the mixture of the components' marginals with the same weights.

  Returns:
    A `len(dims)`-D mixture with the same batch shape and weights.
  """
  dims = checks.check_dims(dims, gmm.dim, "dims")
  if dims == tuple(range(len(dims))):
    # The leading block of a Cholesky factor is the Cholesky factor of the leading block.
    tril = gmm.scale_tril[..., : len(dims), : len(dims)]
  else:
    rows = gmm.scale_tril[..., dims, :]
    tril = _cholesky(rows @ jnp.swapaxes(rows, -1, -2))
  return GMM(gmm.log_weights, gmm.means[..., dims], tril)


def conditional(gmm: GMM, obs_dims, values) -> GMM:
  """The exact conditional p(x_rest | x_obs = values) of a mixture.

  Each component is conditioned by its Schur complement, and the weights become the posterior
  responsibilities pi_k N(values | mu_k,obs, Sigma_k,obs) / sum_j (...). With the covariance
  permuted to [obs, rest] and its Cholesky factor [[L11, 0], [L21, L22]], the conditional mean
  is mu_rest + L21 L11^{-1} (values - mu_obs) and L22 is exactly the Cholesky factor of the
  Schur complement, so no inverse is formed.

  Args:
    gmm: a D-D mixture with batch shape `B`.
    obs_dims: static ints, the observed dimensions (at least one, fewer than D).
    values: `[*B', len(obs_dims)]` observed values, `B'` broadcasting against `B`.

  Returns:
    A mixture over the remaining dimensions, in increasing order, with batch shape
    `broadcast(B', B)`.
  """
  obs_dims = checks.check_dims(obs_dims, gmm.dim, "obs_dims")
  rest = tuple(d for d in range(gmm.dim) if d not in obs_dims)
  if not rest:
    raise ValueError(
        f"obs_dims={obs_dims} observes every dimension; leave at least one "
        "dimension to condition on."
    )
  values = jnp.asarray(values, gmm.means.dtype)
  if values.ndim == 0 or values.shape[-1] != len(obs_dims):
    raise ValueError(
        f"values must have shape [..., {len(obs_dims)}] to match "
        f"obs_dims={obs_dims}, got {values.shape}."
    )
  checks.check_finite_values(values, "values")
  o = len(obs_dims)
  perm = obs_dims + rest
  rows = gmm.scale_tril[..., perm, :]
  tril = _cholesky(rows @ jnp.swapaxes(rows, -1, -2))
  l11, l21, l22 = tril[..., :o, :o], tril[..., o:, :o], tril[..., o:, o:]
  means = gmm.means[..., perm]
  diff = values[..., None, :] - means[..., :o]  # [*b, K, o]
  w = linalg.solve_lower(l11, diff[..., None])[..., 0]
  cond_means = means[..., o:] + jnp.einsum("...ij,...j->...i", l21, w)
  log_evidence = -0.5 * jnp.sum(w * w, -1) - _half_log_det(l11) - 0.5 * o * _LOG_2PI
  log_weights = jax.nn.log_softmax(gmm.log_weights + log_evidence, axis=-1)
  checks.check_responsibilities(log_weights, "values")
  k = gmm.num_components
  return GMM(
      log_weights,
      cond_means,
      jnp.broadcast_to(l22, log_weights.shape[:-1] + (k, len(rest), len(rest))),
  )


def transform(gmm: GMM, A, b=None) -> GMM:
  """The mixture of y = A x + b: means A mu_k + b, covariances A Sigma_k A^T.

  Args:
    gmm: a D-D mixture with batch shape `B`.
    A: `[*B', M, D]` linear map with M <= D and full row rank (orthogonal maps in particular);
      `B'` broadcasts against `B`.
    b: optional `[*B', M]` offset.

  Returns:
    An M-D mixture with the same weights.
  """
  A = jnp.asarray(A, gmm.means.dtype)
  if A.ndim < 2:
    raise ValueError(f"A must be a matrix of shape [M, {gmm.dim}], got shape {A.shape}.")
  m, d = A.shape[-2:]
  if d != gmm.dim:
    raise ValueError(
        f"A has shape {A.shape}: its last axis must equal the mixture's " f"dimension {gmm.dim}."
    )
  if m > d:
    raise ValueError(
        f"A has shape {A.shape}: it maps R^{d} into R^{m} with M > D, which "
        "gives a degenerate (singular) mixture; use M <= D."
    )
  if checks.is_concrete(A) and not np.all(np.isfinite(np.asarray(A))):
    raise ValueError("A contains NaN or inf.")
  means = jnp.einsum("...ij,...kj->...ki", A, gmm.means)
  if b is not None:
    b = jnp.asarray(b, gmm.means.dtype)
    if b.ndim == 0 or b.shape[-1] != m:
      raise ValueError(f"b must have shape [..., {m}] to match A {A.shape}, got {b.shape}.")
    means = means + b[..., None, :]
  factor = A[..., None, :, :] @ gmm.scale_tril  # [*b, K, M, D]
  cov = factor @ jnp.swapaxes(factor, -1, -2)
  if checks.is_concrete(cov):
    checks.check_positive_definite(
        cov,
        "A Sigma A^T",
        f"A of shape {A.shape} must have full row "
        "rank (an orthogonal matrix, for instance); this one is singular.",
    )
  tril = _cholesky(cov)
  log_weights = jnp.broadcast_to(gmm.log_weights, means.shape[:-1])
  return GMM(log_weights, means, tril)


def add_noise(gmm: GMM, variance) -> GMM:
  """The mixture convolved with isotropic Gaussian noise: x + eps, eps ~ N(0, variance I).

  Each component's covariance grows by `variance * I` (paper Fig. 10, multi-scale noising).

  Args:
    gmm: mixture with batch shape `B`.
    variance: scalar or `[*B']` non-negative noise variance, `B'` broadcasting against `B`.
  """
  variance = jnp.asarray(variance, gmm.means.dtype)
  if checks.is_concrete(variance):
    v = np.asarray(variance)
    if not np.all(np.isfinite(v)) or np.any(v < 0):
      raise ValueError(f"noise variance must be finite and >= 0, got {v}.")
  cov = gmm.covariances + variance[..., None, None, None] * jnp.eye(gmm.dim, dtype=gmm.means.dtype)
  tril = _cholesky(cov)
  batch = tril.shape[:-3]
  return GMM(
      jnp.broadcast_to(gmm.log_weights, batch + gmm.log_weights.shape[-1:]),
      jnp.broadcast_to(gmm.means, batch + gmm.means.shape[-2:]),
      tril,
  )


def broadcast_batch(gmm: GMM, batch_shape: Sequence[int]) -> GMM:
  """The mixture with its fields broadcast to batch shape `batch_shape` (a view, no copy)."""
  batch = tuple(batch_shape)
  return GMM(
      jnp.broadcast_to(gmm.log_weights, batch + gmm.log_weights.shape[-1:]),
      jnp.broadcast_to(gmm.means, batch + gmm.means.shape[-2:]),
      jnp.broadcast_to(gmm.scale_tril, batch + gmm.scale_tril.shape[-3:]),
  )


def broadcast_pair(p: GMM, q: GMM) -> tuple[GMM, GMM]:
  """Two mixtures of the same dimension broadcast to their common batch shape."""
  if p.dim != q.dim:
    raise ValueError(f"p is {p.dim}-D and q is {q.dim}-D; they must have the same dimension.")
  try:
    batch = jnp.broadcast_shapes(p.batch_shape, q.batch_shape)
  except ValueError as e:
    raise ValueError(
        f"Batch shapes of p {p.batch_shape} and q {q.batch_shape} do not " "broadcast."
    ) from e
  return broadcast_batch(p, batch), broadcast_batch(q, batch)


def mixture_of(p: GMM, q: GMM, *, weight=0.5) -> GMM:
  """The two-part mixture weight * p + (1 - weight) * q, as one GMM with K_p + K_q components."""
  p, q = broadcast_pair(p, q)
  weight = jnp.asarray(weight, p.means.dtype)
  return GMM(
      jnp.concatenate([p.log_weights + jnp.log(weight), q.log_weights + jnp.log1p(-weight)], -1),
      jnp.concatenate([p.means, q.means], -2),
      jnp.concatenate([p.scale_tril, q.scale_tril], -3),
  )


def grid_mixture(grid, variance: float) -> GMM:
  """Equal-weight isotropic components on the Cartesian grid `grid` x `grid` (2-D), each with
  covariance `variance` I: the 25-GMM data of Sec. 4.1 for grid = (-4, -2, 0, 2, 4)."""
  g = np.asarray(grid, np.float32)
  means = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  return create(means, np.full(len(means), float(variance), np.float32))
