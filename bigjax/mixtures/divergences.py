"""Divergences between Gaussian mixtures: KL and Jensen-Shannon, by quadrature or Monte Carlo.

`kl(p, q)` is KL[p || q] = E_p[log p(x) - log q(x)]; with p the model and q the data this is the
reverse KL that the paper's simulations minimise (Sec. 3.3, 4.1). Two estimators:

- `method="quadrature"`: deterministic Gauss-Hermite per component,
  E_p[f] = sum_k pi_k sum_n w_n f(mu_k + L_k u_n), on a tensor-product rule in the component's
  whitened coordinates. Nodes whose weights add up to less than 1e-14 are dropped, which keeps
  high-order rules cheap (a 1024-point 1-D rule keeps 158 nodes). High orders matter: log p and
  log q are log-sum-exps with near-kinks where two components cross, on which Gauss-Hermite
  converges slowly. Worst-case errors against scipy's adaptive quad on the paper's 2-GMM problem
  (`python -m benchmarks.quadrature_accuracy`, in benchmarks/RESULTS.md): 1-D, 1.3e-4 with 256
  points and 5e-8 with 1024 (the default) at sigma^2 = 0.02, 2e-8 with 256 at sigma^2 = 0.1; the
  2-D joint, 4.9e-6 with 512 points (the default) at sigma^2 = 0.02 and 2e-11 at 0.1, the worst
  case being a near-kink aligned with the node grid. Differentiable in both p and q.
- `method="mc"`: the reference code's estimator: `num_samples` reparameterised draws from p,
  the average of log p - log q over the draws of each component, weighted by pi_k. With
  `stick_the_landing=True`, log p is evaluated with stopped parameter gradients (the pathwise
  "sticking the landing" gradient, Roeder et al. 2017) as in the reference code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from bigjax.mixtures import gmm as gmm_lib
from bigjax.mixtures import linalg
from bigjax.mixtures.gmm import GMM

#: Default Gauss-Hermite order per dimension of the integration space.
DEFAULT_NUM_POINTS = {1: 1024, 2: 512, 3: 64}
_DROPPED_MASS = 1e-14
_METHODS = ("quadrature", "mc")


@functools.lru_cache(maxsize=64)
def gauss_hermite_rule(num_points: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Tensor-product Gauss-Hermite rule for E_{u ~ N(0, I_dim)}[f(u)].

  Nodes whose weights together hold less than 1e-14 of the mass are dropped.

  Returns:
    `(nodes [N, dim], weights [N])` as float64 numpy arrays; the weights sum to one.
  """
  if int(num_points) < 1 or int(dim) < 1:
    raise ValueError(f"num_points and dim must be positive, got {num_points}, {dim}.")
  t, w = scipy.special.roots_hermite(int(num_points))
  nodes_1d, weights_1d = np.sqrt(2.0) * t, w / np.sqrt(np.pi)
  grids = np.meshgrid(*([nodes_1d] * dim), indexing="ij")
  nodes = np.stack([g.ravel() for g in grids], -1)
  weights = functools.reduce(np.multiply.outer, [weights_1d] * dim).ravel()
  order = np.argsort(weights)
  dropped = np.searchsorted(np.cumsum(weights[order]), _DROPPED_MASS)
  keep = np.sort(order[dropped:])
  weights = weights[keep] / weights[keep].sum()
  return nodes[keep], weights


def _num_points(dim: int, num_points: int | None) -> int:
  if num_points is not None:
    return int(num_points)
  if dim not in DEFAULT_NUM_POINTS:
    raise ValueError(
        f"Quadrature in {dim} dimensions needs num_points**{dim} nodes per component; pass "
        "num_points explicitly if you mean it, or use method='mc'."
    )
  return DEFAULT_NUM_POINTS[dim]


def _quadrature_rows(p: GMM, num_points: int | None):
  """Nodes of every component of p as D row arrays `[*B, K*N]`, and weights `[N]`."""
  nodes, weights = gauss_hermite_rule(_num_points(p.dim, num_points), p.dim)
  dtype = p.means.dtype
  u = [jnp.asarray(nodes[:, j], dtype) for j in range(p.dim)]  # D x [N]
  rows = []
  for i in range(p.dim):
    # x_i = mu_i + sum_{j <= i} L_ij u_j per component, with the nodes on the last axis.
    xi = p.means[..., :, i, None] + sum(
        p.scale_tril[..., :, i, j, None] * u[j] for j in range(i + 1)
    )  # [*B, K, N]
    rows.append(xi.reshape(xi.shape[:-2] + (-1,)))
  return rows, jnp.asarray(weights, dtype)


def _weighted_sum(p: GMM, values: jax.Array, weights: jax.Array) -> jax.Array:
  """sum_k pi_k sum_n w_n values[..., k * N + n]."""
  per_component = values.reshape(values.shape[:-1] + (p.num_components, -1)) @ weights
  return jnp.sum(jnp.exp(p.log_weights) * per_component, axis=-1)


def quadrature_expectation(
    p: GMM, fn: Callable[[jax.Array], jax.Array], *, num_points: int | None = None
) -> jax.Array:
  """E_{x ~ p}[fn(x)] by Gauss-Hermite quadrature per component.

  Args:
    p: mixture with batch shape `B`.
    fn: maps points in column layout `[*B, D, N]` to values `[*B, N]` (e.g.
      `functools.partial(gmm.log_prob_columns, q)`).
    num_points: Gauss-Hermite order per dimension; default `DEFAULT_NUM_POINTS[D]`.

  Returns:
    `[*B]` expectations.
  """
  rows, weights = _quadrature_rows(p, num_points)
  return _weighted_sum(p, fn(jnp.stack(rows, -2)), weights)


def _check_method(method, rng, num_samples):
  if method not in _METHODS:
    raise ValueError(f"method={method!r} is unknown; choose one of {_METHODS}.")
  if method == "mc":
    if rng is None:
      raise ValueError("method='mc' needs an explicit PRNG key: pass rng=jax.random.key(...).")
    if num_samples is None or int(num_samples) < 1:
      raise ValueError(f"method='mc' needs num_samples >= 1, got {num_samples}.")


def _kl_mc(p: GMM, q: GMM, rng, num_samples: int, stick_the_landing: bool) -> jax.Array:
  p_eval = jax.tree.map(jax.lax.stop_gradient, p) if stick_the_landing else p
  k, d, s = p.num_components, p.dim, int(num_samples)
  if d > linalg.UNROLL_MAX_DIM or k > gmm_lib._UNROLL_MAX_COMPONENTS:
    x, comps = gmm_lib.sample(p, rng=rng, sample_shape=(s,), return_components=True)
    log_ratio = gmm_lib.log_prob(p_eval, x) - gmm_lib.log_prob(q, x)  # [S, *B]
    onehot = jnp.moveaxis(comps[..., None] == jnp.arange(k), 0, -1)  # [*B, K, S]
    log_ratio = jnp.moveaxis(log_ratio, 0, -1)[..., None, :]
  else:
    # Samples on the last axis, one array per coordinate, components picked by masks: the
    # same draws as `gmm.sample` in distribution, without gathers (slow on XLA:CPU).
    rng_c, rng_e = jax.random.split(rng)
    batch = p.batch_shape
    # Component by inverse CDF: one uniform per sample instead of K Gumbels and an argmax.
    u = jax.random.uniform(rng_c, batch + (s,), p.means.dtype)
    cdf = jnp.cumsum(jnp.exp(p.log_weights), axis=-1)
    above = [(u >= cdf[..., c, None]).astype(p.means.dtype) for c in range(k - 1)]
    masks = [1.0 - above[0]] if k > 1 else [jnp.ones_like(u)]
    masks += [above[c - 1] - above[c] for c in range(1, k - 1)]
    masks += [above[k - 2]] if k > 1 else []
    eps = jax.random.normal(rng_e, (d,) + batch + (s,), p.means.dtype)
    rows = []
    for i in range(d):
      rows.append(
          sum(
              masks[c]
              * (
                  p.means[..., c, i, None]
                  + sum(p.scale_tril[..., c, i, j, None] * eps[j] for j in range(i + 1))
              )
              for c in range(k)
          )
      )
    log_ratio = (gmm_lib.log_prob_rows(p_eval, rows) - gmm_lib.log_prob_rows(q, rows))[..., None, :]
    onehot = jnp.stack(masks, -2)  # [*B, K, S]
  onehot = onehot.astype(p.means.dtype)
  sums = jnp.sum(onehot * log_ratio, axis=-1)  # [*B, K]
  counts = jnp.sum(onehot, axis=-1)
  # A component that drew no sample contributes nothing, as in the reference estimator.
  return jnp.sum(jnp.exp(p.log_weights) * sums / jnp.maximum(counts, 1.0), axis=-1)


def kl(
    p: GMM,
    q: GMM,
    *,
    method: str = "quadrature",
    num_points: int | None = None,
    rng: jax.Array | None = None,
    num_samples: int | None = None,
    stick_the_landing: bool = False,
) -> jax.Array:
  """KL[p || q] between two mixtures (reverse KL when p is the model, paper Sec. 3.3).

  Args:
    p, q: mixtures of the same dimension; their batch shapes broadcast.
    method: "quadrature" (deterministic) or "mc" (Monte Carlo, the reference estimator).
    num_points: quadrature order per dimension (default `DEFAULT_NUM_POINTS[D]`).
    rng: PRNG key, required for "mc".
    num_samples: samples from p per KL, required for "mc".
    stick_the_landing: for "mc", stop the parameter gradient of log p (pathwise gradient).

  Returns:
    `[*broadcast(B_p, B_q)]` divergences in nats.
  """
  _check_method(method, rng, num_samples)
  p, q = gmm_lib.broadcast_pair(p, q)
  if method == "mc":
    return _kl_mc(p, q, rng, num_samples, stick_the_landing)
  rows, weights = _quadrature_rows(p, num_points)
  if p.dim <= linalg.UNROLL_MAX_DIM:
    log_ratio = gmm_lib.log_prob_rows(p, rows) - gmm_lib.log_prob_rows(q, rows)
  else:
    x = jnp.stack(rows, -2)
    log_ratio = gmm_lib.log_prob_columns(p, x) - gmm_lib.log_prob_columns(q, x)
  return _weighted_sum(p, log_ratio, weights)


def js(
    p: GMM,
    q: GMM,
    *,
    method: str = "quadrature",
    num_points: int | None = None,
    rng: jax.Array | None = None,
    num_samples: int | None = None,
) -> jax.Array:
  """Jensen-Shannon divergence 0.5 KL[p || m] + 0.5 KL[q || m], m = (p + q) / 2, in nats.

  The midpoint m is itself a mixture with K_p + K_q components, so both halves reuse `kl`.
  Arguments as for `kl` (for "mc", `num_samples` is drawn from each of p and q).

  Returns:
    `[*broadcast(B_p, B_q)]` divergences, between 0 and log 2.
  """
  _check_method(method, rng, num_samples)
  p, q = gmm_lib.broadcast_pair(p, q)
  m = gmm_lib.mixture_of(p, q)
  rng_p, rng_q = jax.random.split(rng) if method == "mc" else (None, None)
  return 0.5 * (
      kl(p, m, method=method, num_points=num_points, rng=rng_p, num_samples=num_samples)
      + kl(q, m, method=method, num_points=num_points, rng=rng_q, num_samples=num_samples)
  )
