"""Reverse-KL matching losses of big learning for Gaussian mixtures (paper Sec. 3.3, 4.1, App. C).

Every loss is KL[p_theta' || q'] between a model mixture `model` (p_theta) and a data mixture
`data` (q), where ' is one of the paper's matching tasks:

  joint        p(x) vs q(x)                                         (the usual reverse KL)
  marginal     p(y_S) vs q(y_S), y = A x, A orthogonal, S the chosen output dims
  conditional  p(y_T | y_G = v) vs q(y_T | y_G = v), y = A x, v drawn from data or model
  noised       any of the above after x -> x + eps, eps ~ N(0, s I) (multi-scale noising, Fig. 10)

Default estimator (the reference code's): `num_samples` reparameterised draws from p', the
average of log p' - log q' over the draws of each component, weighted by pi_k, with log p'
evaluated under stopped parameter gradients ("sticking the landing", a pathwise gradient).
`method="quadrature"` gives the exact value instead. All functions are pure, take explicit
`rng` keys and work under `jit`, `vmap` and `grad`; none calls LAPACK (see
`bigjax.mixtures.linalg`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from bigjax.mixtures import checks
from bigjax.mixtures import divergences
from bigjax.mixtures import gmm as gmm_lib
from bigjax.mixtures.gmm import GMM

#: The kinds of matching task of Eq. (6) (`task_loss` here, `surfaces.MatchingTask`).
KINDS = ("joint", "marginal", "conditional")
_LOG_2PI = math.log(2.0 * math.pi)


def dense_log_prob(gmm: GMM, x: jax.Array) -> jax.Array:
  """log p(x) for an unbatched mixture at points `x` `[N, D]` -> `[N]`, in an `[N, K]` layout.

  The same density as `gmm.log_prob`, laid out for the training loop: the forward substitution
  is unrolled over the (small) dimension D but vectorised over points and components, so one
  evaluation is a handful of fused `[N, K]` ops instead of K unrolled per-component chains,
  which on XLA:CPU is what dominates a small SGD step inside `lax.scan`.
  """
  d = gmm.dim
  const = (
      jnp.sum(jnp.log(jnp.diagonal(gmm.scale_tril, axis1=-2, axis2=-1)), -1) + 0.5 * d * _LOG_2PI
  )  # [K]
  z, maha = [], 0.0
  for i in range(d):
    zi = x[:, i, None] - gmm.means[None, :, i]  # [N, K]
    for j in range(i):
      zi = zi - gmm.scale_tril[None, :, i, j] * z[j]
    zi = zi / gmm.scale_tril[None, :, i, i]
    z.append(zi)
    maha = maha + zi * zi
  return jax.nn.logsumexp(-0.5 * maha + (gmm.log_weights - const)[None, :], axis=-1)


def dense_kl_mc(
    p: GMM, q: GMM, *, rng: jax.Array, num_samples: int = 100, stick_the_landing: bool = True
) -> jax.Array:
  """The reference reverse-KL estimator for unbatched mixtures (vmap for batches).

  The estimator of `divergences.kl(p, q, method="mc", ...)` (draws as `gmm.sample`: component
  c ~ pi, x = mu_c + L_c eps): per component k the average of log p - log q over the draws
  from k, weighted by pi_k; a component without draws adds 0.
  With `stick_the_landing`, log p sees stopped parameter gradients (Roeder et al. 2017).

  Returns:
    A scalar estimate of KL[p || q] in nats.
  """
  if p.batch_shape or q.batch_shape:
    raise ValueError(
        f"dense_kl_mc takes unbatched mixtures (vmap over batches), got batch "
        f"shapes {p.batch_shape} and {q.batch_shape}."
    )
  rng_c, rng_e = jax.random.split(rng)
  s, k = int(num_samples), p.num_components
  # Component by inverse CDF: one uniform per sample instead of K Gumbels (random bits are
  # the costliest part of a small step on CPU); the same categorical distribution.
  u = jax.random.uniform(rng_c, (s, 1), p.means.dtype)
  cdf = jnp.cumsum(jnp.exp(jax.lax.stop_gradient(p.log_weights)))
  cdf = cdf.at[-1].set(jnp.inf)  # rounding must never drop the last component
  lower = jnp.concatenate([jnp.zeros((1,), cdf.dtype), cdf[:-1]])
  onehot = ((u >= lower) & (u < cdf)).astype(p.means.dtype)  # [S, K]
  eps = jax.random.normal(rng_e, (s, p.dim), p.means.dtype)
  # x = mu_c + L_c eps, with the gathers written as one-hot products (cheap, differentiable).
  tril = onehot @ p.scale_tril.reshape(k, -1)  # [S, D*D]
  d = p.dim
  x = onehot @ p.means + jnp.stack(
      [sum(tril[:, i * d + j] * eps[:, j] for j in range(i + 1)) for i in range(d)], -1
  )
  p_eval = jax.tree.map(jax.lax.stop_gradient, p) if stick_the_landing else p
  log_ratio = dense_log_prob(p_eval, x) - dense_log_prob(q, x)  # [S]
  sums = log_ratio @ onehot  # [K]
  counts = jnp.sum(onehot, axis=0)
  return jnp.sum(jnp.exp(p.log_weights) * sums / jnp.maximum(counts, 1.0))


def _kl(p: GMM, q: GMM, *, rng, method: str, num_samples: int, num_points: int | None):
  if method == "mc":
    if not p.batch_shape and not q.batch_shape:
      return dense_kl_mc(p, q, rng=rng, num_samples=num_samples)
    return divergences.kl(
        p, q, method="mc", rng=rng, num_samples=num_samples, stick_the_landing=True
    )
  return divergences.kl(p, q, method=method, num_points=num_points)


def _noised(model: GMM, data: GMM, noise_var):
  if noise_var is None:
    return model, data
  return gmm_lib.add_noise(model, noise_var), gmm_lib.add_noise(data, noise_var)


def joint_loss(
    model: GMM,
    data: GMM,
    *,
    rng: jax.Array | None = None,
    noise_var=None,
    method: str = "mc",
    num_samples: int = 100,
    num_points: int | None = None,
) -> jax.Array:
  """Reverse KL of the joint, KL[p_theta(x) || q(x)] (Eq. (4) with S = empty, T = all).

  Args:
    model: model mixture p_theta, `D`-D, batch shape `B`.
    data: data mixture q, `D`-D, batch shape broadcasting against `B`.
    rng: PRNG key (required for `method="mc"`).
    noise_var: optional scalar or `[*B]` noise variance added to both sides (noised joint).
    method: "mc" (reference estimator, default) or "quadrature" (exact).
    num_samples: samples from p_theta per loss for "mc" (reference: 100).
    num_points: quadrature order per dimension (library default when None).

  Returns:
    `[*B]` losses in nats.
  """
  model, data = _noised(model, data, noise_var)
  return _kl(model, data, rng=rng, method=method, num_samples=num_samples, num_points=num_points)


def marginal_loss(
    model: GMM,
    data: GMM,
    transform: jax.Array,
    *,
    dims: Sequence[int] = (0,),
    rng: jax.Array | None = None,
    noise_var=None,
    method: str = "mc",
    num_samples: int = 100,
    num_points: int | None = None,
) -> jax.Array:
  """Reverse KL of a transformed marginal, KL[p_theta(y_S) || q(y_S)] with y = A x.

  The reference's "marginal matching": A is Haar-random orthogonal (`gmm.random_orthogonal`)
  and S = (0,), a 1-D reverse KL.

  Args:
    model, data: `D`-D mixtures (see `joint_loss`).
    transform: `[*B', D, D]` orthogonal (or any invertible) map A.
    dims: static output dimensions S to match.
    rng, noise_var, method, num_samples, num_points: as for `joint_loss`.

  Returns:
    `[*B]` losses in nats.
  """
  dims = checks.check_dims(dims, model.dim, "dims")
  model, data = _noised(model, data, noise_var)
  rows = jnp.asarray(transform)[..., dims, :]
  return _kl(
      gmm_lib.transform(model, rows),
      gmm_lib.transform(data, rows),
      rng=rng,
      method=method,
      num_samples=num_samples,
      num_points=num_points,
  )


def conditional_loss(
    model: GMM,
    data: GMM,
    transform: jax.Array,
    given_values,
    *,
    given_dims: Sequence[int] = (1,),
    target_dims: Sequence[int] | None = None,
    rng: jax.Array | None = None,
    noise_var=None,
    method: str = "mc",
    num_samples: int = 100,
    num_points: int | None = None,
) -> jax.Array:
  """Reverse KL of a transformed conditional, KL[p_theta(y_T | y_G = v) || q(y_T | y_G = v)].

  y = A x; both conditionals are exact mixtures (`gmm.conditional`) whose weights are the
  components' responsibilities for v, so the model's gradient reaches its means through the
  weights as well as through the samples.

  Args:
    model, data: `D`-D mixtures (see `joint_loss`).
    transform: `[*B', D, D]` invertible map A (orthogonal in the experiments).
    given_values: `[*B', len(given_dims)]` values v of the observed output dims (drawn from
      the data or the model by `draw_given_values`; treated as constants).
    given_dims: static observed output dims G.
    target_dims: static output dims T to match, a subset of the unobserved ones (default: all
      unobserved dims).
    rng, noise_var, method, num_samples, num_points: as for `joint_loss`.

  Returns:
    `[*broadcast(B, B')]` losses in nats.
  """
  given_dims = checks.check_dims(given_dims, model.dim, "given_dims")
  rest = tuple(d for d in range(model.dim) if d not in given_dims)
  if target_dims is None:
    target_dims = rest
  target_dims = checks.check_dims(target_dims, model.dim, "target_dims")
  if any(d not in rest for d in target_dims):
    raise ValueError(f"target_dims={target_dims} overlaps given_dims={given_dims}.")
  model, data = _noised(model, data, noise_var)
  given_values = jax.lax.stop_gradient(jnp.asarray(given_values, model.means.dtype))
  p = gmm_lib.conditional(gmm_lib.transform(model, transform), given_dims, given_values)
  q = gmm_lib.conditional(gmm_lib.transform(data, transform), given_dims, given_values)
  if tuple(target_dims) != rest:
    positions = tuple(rest.index(d) for d in target_dims)
    p, q = gmm_lib.marginal(p, positions), gmm_lib.marginal(q, positions)
  return _kl(p, q, rng=rng, method=method, num_samples=num_samples, num_points=num_points)


def draw_given_values(
    source: GMM,
    transform: jax.Array,
    *,
    given_dims: Sequence[int] = (1,),
    rng: jax.Array,
    noise_var=None,
) -> jax.Array:
  """Draws the conditioning value v ~ source(y_G), y = A (x + eps), with no gradient.

  Args:
    source: the mixture v comes from (the data q, or the model p_theta).
    transform: `[*B', D, D]` map A.
    given_dims: static observed output dims G.
    rng: PRNG key.
    noise_var: optional noise variance (for noised conditionals).

  Returns:
    `[*B, len(given_dims)]` values.
  """
  given_dims = checks.check_dims(given_dims, source.dim, "given_dims")
  source = jax.tree.map(jax.lax.stop_gradient, source)
  if noise_var is not None:
    source = gmm_lib.add_noise(source, noise_var)
  rows = jnp.asarray(transform)[..., given_dims, :]
  return gmm_lib.sample(gmm_lib.transform(source, rows), rng=rng)


def task_loss(
    kind: str,
    model: GMM,
    data: GMM,
    *,
    transform=None,
    dims=(0,),
    given_dims=(1,),
    given_values=None,
    rng=None,
    noise_var=None,
    method: str = "mc",
    num_samples: int = 100,
    num_points: int | None = None,
) -> jax.Array:
  """Dispatches to `joint_loss`, `marginal_loss` or `conditional_loss` by `kind` (static)."""
  common = dict(
      rng=rng, noise_var=noise_var, method=method, num_samples=num_samples, num_points=num_points
  )
  if kind == "joint":
    return joint_loss(model, data, **common)
  if kind == "marginal":
    return marginal_loss(model, data, transform, dims=dims, **common)
  if kind == "conditional":
    return conditional_loss(model, data, transform, given_values, given_dims=given_dims, **common)
  raise ValueError(f"Unknown matching task kind {kind!r}; choose one of {KINDS}.")
