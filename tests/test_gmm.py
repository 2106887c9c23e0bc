"""Tests for bigjax.mixtures.gmm against scipy.stats, numpy conditioning and brute-force
sampling."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from jax import test_util

from bigjax.mixtures import gmm
from conftest import numpy_conditional as _np_conditional
from conftest import rbg_key as _key

pytestmark = pytest.mark.usefixtures("x64")


# The library functions as they are meant to be used: under jit (eager dispatch would also
# compile every small op separately and dominate the suite's runtime).
_log_prob = jax.jit(gmm.log_prob)
_marginal = jax.jit(gmm.marginal, static_argnums=1)
_conditional = jax.jit(gmm.conditional, static_argnums=1)
_transform = jax.jit(gmm.transform)
_add_noise = jax.jit(gmm.add_noise)


# ----------------------------------------------------------------------------------------------
# Numpy references.


def _random_params(seed, k, d, batch=()):
  """Random weights `[*batch, K]`, means `[*batch, K, D]`, SPD covariances `[*batch, K, D, D]`."""
  rng = np.random.default_rng(seed)
  weights = rng.dirichlet(np.ones(k) * 2.0, size=batch)
  means = rng.standard_normal(batch + (k, d)) * 1.5
  a = rng.standard_normal(batch + (k, d, d)) * 0.6
  covs = a @ np.swapaxes(a, -1, -2) + 0.4 * np.eye(d)
  return weights, means, covs


def _scipy_logpdf(x, weights, means, covs):
  """log sum_k w_k N(x | m_k, C_k) for one mixture, x `[..., D]` -> `[...]`, by scipy."""
  x = np.asarray(x, np.float64)
  d = means.shape[-1]
  flat = x.reshape(-1, d)
  comps = [
      np.log(weights[k])
      + np.atleast_1d(scipy.stats.multivariate_normal(means[k], covs[k]).logpdf(flat)).reshape(-1)
      for k in range(len(weights))
  ]
  return scipy.special.logsumexp(np.stack(comps), axis=0).reshape(x.shape[:-1])


def _mixture_moments(weights, means, covs):
  mean = np.einsum("k,kd->d", weights, means)
  second = np.einsum("k,kij->ij", weights, covs + means[:, :, None] * means[:, None, :])
  return mean, second - np.outer(mean, mean)


def _np(g: gmm.GMM):
  """(weights, means, covariances) of a GMM as numpy arrays, computed in numpy."""
  l = np.asarray(g.scale_tril)
  return np.exp(np.asarray(g.log_weights)), np.asarray(g.means), l @ np.swapaxes(l, -1, -2)


def _create(seed, k, d, batch=()):
  """A random mixture and its numpy parameters.

  The GMM is assembled from numpy's Cholesky factors rather than by `gmm.create` (tested on its
  own below): eager `create` dispatches op by op and would dominate the suite's runtime.
  """
  w, m, c = _random_params(seed, k, d, batch)
  return gmm.GMM(jnp.asarray(np.log(w)), jnp.asarray(m), jnp.asarray(np.linalg.cholesky(c))), (
      w,
      m,
      c,
  )


# ----------------------------------------------------------------------------------------------
# create.

_I2 = np.eye(2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=np.array([_I2, [[1.0, 2.0], [2.0, 1.0]]])),
            "covariances is not positive definite: matrix \\(1,\\)",
            id="indefinite",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=np.array([_I2, -_I2])),
            "covariances is not positive definite",
            id="negative-definite",
        ),
        pytest.param(
            dict(means=np.zeros((2, 3)), covariances=np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0]])),
            "covariances is not positive definite",
            id="zero-diagonal-variance",
        ),
        pytest.param(
            dict(means=np.zeros((1, 2)), covariances=np.array([[[1.0, 0.5], [0.0, 1.0]]])),
            "covariances is not symmetric",
            id="non-symmetric",
        ),
        pytest.param(
            dict(
                means=np.zeros((2, 2)), covariances=np.array([[[1.0, np.nan], [np.nan, 1.0]], _I2])
            ),
            "covariances contains NaN",
            id="nan-covariance",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=1.0, weights=np.array([0.5, -0.1])),
            "weights must be finite, non-negative",
            id="negative-weight",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=1.0, weights=np.zeros(2)),
            "weights must be finite, non-negative and not all zero",
            id="zero-weights",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=1.0, weights=np.array([0.2, 0.3, 0.5])),
            "weights must have shape \\[..., 2\\]",
            id="weight-shape",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=1.0, log_weights=np.zeros(3)),
            "weights must have shape",
            id="log-weight-shape",
        ),
        pytest.param(
            dict(
                means=np.zeros((2, 2)), covariances=1.0, weights=np.ones(2), log_weights=np.zeros(2)
            ),
            "weights",
            id="weights-and-log-weights",
        ),
        pytest.param(
            dict(means=np.zeros(3), covariances=np.ones(3)),
            "means must have shape",
            id="rank-1-means",
        ),
        pytest.param(
            dict(means=np.zeros((2, 3)), covariances=np.ones((2, 3, 4))),
            "covariances of shape \\(2, 3, 4\\)",
            id="full-covariance-shape",
        ),
        pytest.param(
            dict(means=np.zeros((2, 3)), covariances=np.ones((2, 4))),
            "covariances of shape",
            id="diagonal-covariance-shape",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), scale_tril=np.array([_I2, -_I2])),
            "scale_tril must have a strictly positive diagonal",
            id="scale-tril-sign",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), scale_tril=np.ones((2, 3, 3))),
            "scale_tril must have shape",
            id="scale-tril-shape",
        ),
        pytest.param(dict(means=np.zeros((2, 2))), "covariances", id="no-covariance"),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=1.0, scale_tril=np.ones((2, 2, 2))),
            "covariances",
            id="both-covariance-forms",
        ),
        pytest.param(
            dict(means=np.zeros((3, 2, 2)), covariances=1.0, weights=np.ones((2, 2))),
            "Batch shapes do not broadcast",
            id="batch-mismatch",
        ),
        # A single-number covariance skipped the positive-definite check (NaN parameters), and
        # NaN or inf means and log-weights were not checked at all.
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=-1.0),
            "not positive definite",
            id="negative-scalar-covariance",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=0.0),
            "not positive definite",
            id="zero-scalar-covariance",
        ),
        pytest.param(
            dict(means=np.array([[0.0, np.nan], [1.0, 0.0]]), covariances=1.0),
            "means contain NaN or inf",
            id="nan-means",
        ),
        pytest.param(
            dict(means=np.array([[0.0, np.inf], [1.0, 0.0]]), covariances=1.0),
            "means contain NaN or inf",
            id="inf-means",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=1.0, log_weights=np.array([0.0, np.nan])),
            "log_weights must be finite or -inf",
            id="nan-log-weights",
        ),
        pytest.param(
            dict(means=np.zeros((2, 2)), covariances=1.0, log_weights=np.full(2, -np.inf)),
            "not -inf for every component",
            id="all-minus-inf-log-weights",
        ),
    ],
)
def test_create_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    gmm.create(**kwargs)


def test_create_covariance_forms_are_equal():
  means = np.array([[0.0, 1.0, 2.0], [1.0, -1.0, 0.5]])
  variances = np.array([0.5, 2.0])
  iso = gmm.create(means, variances, weights=[1.0, 3.0])
  diag = gmm.create(means, np.repeat(variances[:, None], 3, 1), weights=[1.0, 3.0])
  full = gmm.create(means, variances[:, None, None] * np.eye(3), weights=[1.0, 3.0])
  tril = gmm.create(
      means,
      scale_tril=np.sqrt(variances)[:, None, None] * np.eye(3),
      log_weights=np.log([2.0, 6.0]),
  )
  for other in (diag, full, tril):
    chex.assert_trees_all_close(iso, other, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(np.asarray(iso.weights), [0.25, 0.75], rtol=1e-12)
  scalar = gmm.create(means, 0.5)
  np.testing.assert_allclose(
      np.asarray(scalar.covariances), 0.5 * np.broadcast_to(np.eye(3), (2, 3, 3))
  )
  np.testing.assert_allclose(np.asarray(scalar.weights), [0.5, 0.5])


def test_create_full_covariance_gives_its_cholesky_factor():
  w, m, c = _random_params(0, 3, 3)
  g = gmm.create(m, c, weights=w)
  np.testing.assert_allclose(np.asarray(g.scale_tril), np.linalg.cholesky(c), rtol=1e-10)
  np.testing.assert_allclose(np.asarray(g.covariances), c, rtol=1e-10)
  assert (g.dim, g.num_components, g.batch_shape) == (3, 3, ())


def test_create_broadcasts_batch_axes():
  _, m, c = _random_params(1, 2, 2, batch=(4,))
  g = gmm.create(m, c, weights=[0.3, 0.7])  # weights shared across the batch
  assert g.batch_shape == (4,)
  np.testing.assert_allclose(np.asarray(g.weights), np.broadcast_to([0.3, 0.7], (4, 2)))
  np.testing.assert_allclose(np.asarray(g.covariances), c, rtol=1e-10)


def test_create_broadcasts_shared_full_covariances_over_batched_means():
  means = np.random.default_rng(2).standard_normal((2, 2, 2))  # batch 2, K = 2, D = 2
  cov = np.array([[[1.0, 0.5], [0.5, 1.0]], [[2.0, 0.3], [0.3, 0.5]]])  # [K, D, D], shared
  g = gmm.create(means, cov)
  np.testing.assert_allclose(
      np.asarray(g.covariances), np.broadcast_to(cov, (2, 2, 2, 2)), rtol=1e-10
  )


def test_create_broadcasts_shared_covariance_forms_over_batched_means():
  means = np.random.default_rng(3).standard_normal((4, 2, 3))  # batch 4, K = 2, D = 3
  diag = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 4.0]])  # [K, D], shared
  g = gmm.create(means, diag)
  np.testing.assert_allclose(
      np.asarray(g.covariances), np.broadcast_to(diag[:, :, None] * np.eye(3), (4, 2, 3, 3))
  )
  iso = np.array([[1.0, 2.0]] * 4) * np.arange(1, 5)[:, None]  # [B, K]
  g = gmm.create(means, iso)
  np.testing.assert_allclose(np.asarray(g.covariances), iso[:, :, None, None] * np.eye(3))
  # With K == D a [K, D] array fits both a diagonal and a batch of isotropic variances; the
  # documented order reads it as diagonal.
  g = gmm.create(np.zeros((2, 2)), np.array([[1.0, 2.0], [3.0, 4.0]]))
  np.testing.assert_allclose(np.asarray(g.covariances), [np.diag([1.0, 2.0]), np.diag([3.0, 4.0])])


def test_create_broadcasts_batched_covariances_over_shared_means():
  means = np.array([[0.0, 1.0], [2.0, -1.0]])  # K = 2, D = 2, no batch
  scales = np.array([0.5, 1.0, 2.0])
  cov = scales[:, None, None, None] * np.array(
      [[[1.0, 0.5], [0.5, 1.0]], [[2.0, 0.3], [0.3, 0.5]]]
  )  # [3, K, D, D]
  by_tril = gmm.create(means, scale_tril=np.linalg.cholesky(cov))
  assert by_tril.batch_shape == (3,)
  g = gmm.create(means, cov)
  np.testing.assert_allclose(np.asarray(g.covariances), cov, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# log_prob.


@pytest.mark.parametrize("d", (1, 2, 3))
def test_log_prob_matches_scipy(d):
  g, (w, m, c) = _create(10 + d, 3, d)
  x = np.random.default_rng(d).standard_normal((5, 4, d)) * 2.0  # sample axes [5, 4]
  out = _log_prob(g, jnp.asarray(x))
  assert out.shape == (5, 4)
  np.testing.assert_allclose(np.asarray(out), _scipy_logpdf(x, w, m, c), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", (1, 3))
def test_log_prob_batch_of_mixtures_at_batch_of_points(d):
  g, (w, m, c) = _create(20 + d, 3, d, batch=(2, 3))
  x = np.random.default_rng(d).standard_normal((4, 2, 3, d))  # sample axis 4 leads
  out = np.asarray(_log_prob(g, jnp.asarray(x)))
  assert out.shape == (4, 2, 3)
  for i in range(2):
    for j in range(3):
      np.testing.assert_allclose(
          out[:, i, j], _scipy_logpdf(x[:, i, j], w[i, j], m[i, j], c[i, j]), rtol=1e-10, atol=1e-10
      )
  # Points without a batch axis broadcast against the mixtures' batch.
  y = np.random.default_rng(5).standard_normal((6, 1, 1, d))
  out = np.asarray(_log_prob(g, jnp.asarray(y)))
  assert out.shape == (6, 2, 3)
  np.testing.assert_allclose(
      out[:, 1, 2], _scipy_logpdf(y[:, 0, 0], w[1, 2], m[1, 2], c[1, 2]), rtol=1e-10
  )
  # vmap over the batch gives the same numbers.
  vm = jax.jit(
      jax.vmap(jax.vmap(gmm.log_prob, in_axes=(0, 1), out_axes=1), in_axes=(0, 1), out_axes=1)
  )(g, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(vm), np.asarray(_log_prob(g, jnp.asarray(x))), rtol=1e-12)


@pytest.mark.parametrize("k, d", [(3, 10), (70, 2)])
def test_log_prob_general_path_matches_scipy(k, d):
  # D > 8 or K > 64 takes the columns path with solve_lower instead of the unrolled rows.
  g, (w, m, c) = _create(30, k, d)
  x = np.random.default_rng(3).standard_normal((7, d))
  out = _log_prob(g, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(out), _scipy_logpdf(x, w, m, c), rtol=1e-10, atol=1e-10)


def test_log_prob_rejects_wrong_dimension():
  g, _ = _create(0, 2, 3)
  with pytest.raises(ValueError, match="x must have shape"):
    gmm.log_prob(g, np.zeros((4, 2)))


def test_log_prob_zero_weight_component_is_ignored():
  g = gmm.create(np.array([[0.0], [3.0]]), np.array([1.0, 2.0]), weights=[1.0, 0.0])
  x = np.linspace(-2, 5, 7)[:, None]
  np.testing.assert_allclose(
      np.asarray(_log_prob(g, jnp.asarray(x))),
      scipy.stats.norm(0.0, 1.0).logpdf(x[:, 0]),
      rtol=1e-12,
  )


# ----------------------------------------------------------------------------------------------
# marginal and conditional.


@pytest.mark.parametrize("dims", [(0, 1), (2,), (2, 0), (2, 1, 0)])
def test_marginal_matches_scipy(dims):
  g, (w, m, c) = _create(40, 3, 3, batch=(2,))
  marg = _marginal(g, dims)
  assert marg.dim == len(dims) and marg.batch_shape == (2,)
  x = np.random.default_rng(4).standard_normal((5, 2, len(dims)))
  out = np.asarray(_log_prob(marg, jnp.asarray(x)))
  idx = list(dims)
  for b in range(2):
    np.testing.assert_allclose(
        out[:, b], _scipy_logpdf(x[:, b], w[b], m[b][:, idx], c[b][:, idx][:, :, idx]), rtol=1e-10
    )
  np.testing.assert_allclose(_np(marg)[2], c[..., idx, :][..., idx], rtol=1e-10)


def test_marginal_rejects_bad_dims():
  g, _ = _create(0, 2, 3)
  for dims, msg in [((), "dims is empty"), ((0, 0), "repeats"), ((3,), "outside")]:
    with pytest.raises(ValueError, match=msg):
      gmm.marginal(g, dims)
  with pytest.raises(TypeError, match="integer dimensions"):  # used to take dim 0
    gmm.marginal(g, (0.5,))
  # -inf log-weights (a component of weight 0) stay allowed.
  q = gmm.create(np.zeros((2, 2)), 1.0, log_weights=np.array([0.0, -np.inf]))
  np.testing.assert_allclose(np.exp(q.log_weights), [1.0, 0.0])


@pytest.mark.parametrize("obs", [(0,), (1,), (0, 2)])
def test_chain_rule_joint_equals_marginal_times_conditional(obs):
  g, _ = _create(50, 3, 3)
  rest = [i for i in range(3) if i not in obs]
  x = np.random.default_rng(5).standard_normal((6, 3)) * 1.5
  values = x[:, list(obs)]

  @jax.jit
  def chain(g, x, values):
    cond = gmm.conditional(g, obs, values)  # batch (6,): one conditional per point
    return gmm.log_prob(gmm.marginal(g, obs), values) + gmm.log_prob(cond, x[:, rest])

  np.testing.assert_allclose(
      np.asarray(chain(g, jnp.asarray(x), jnp.asarray(values))),
      np.asarray(_log_prob(g, jnp.asarray(x))),
      rtol=1e-10,
      atol=1e-10,
  )


@pytest.mark.parametrize("obs", [(1,), (0, 2), (2, 0)])
def test_conditional_matches_numpy_schur_complement(obs):
  g, (w, m, c) = _create(60, 3, 3)
  values = np.random.default_rng(6).standard_normal((4, len(obs)))
  cond = _conditional(g, obs, jnp.asarray(values))
  assert cond.batch_shape == (4,) and cond.dim == 3 - len(obs)
  cw, cm, cc = _np(cond)
  np.testing.assert_allclose(cw.sum(-1), 1.0, rtol=1e-12)
  for i in range(4):
    rw, rm, rc = _np_conditional(w, m, c, obs, values[i])
    np.testing.assert_allclose(cw[i], rw, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cm[i], rm, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cc[i], rc, rtol=1e-9, atol=1e-12)


def test_conditional_of_a_batch_of_mixtures():
  g, (w, m, c) = _create(61, 2, 3, batch=(3,))
  values = np.array([0.3, -0.7])
  cond = _conditional(g, (1, 2), jnp.asarray(values))
  assert cond.batch_shape == (3,)
  cw, cm, cc = _np(cond)
  for b in range(3):
    rw, rm, rc = _np_conditional(w[b], m[b], c[b], (1, 2), values)
    np.testing.assert_allclose(cw[b], rw, rtol=1e-9)
    np.testing.assert_allclose(cm[b], rm, rtol=1e-9)
    np.testing.assert_allclose(cc[b], rc, rtol=1e-9)


def test_conditional_rejects_bad_arguments():
  g, _ = _create(0, 2, 3)
  with pytest.raises(ValueError, match="obs_dims"):
    gmm.conditional(g, (0, 0), [1.0, 2.0])
  with pytest.raises(ValueError, match="obs_dims"):
    gmm.conditional(g, (3,), [1.0])
  with pytest.raises(ValueError, match="obs_dims"):
    gmm.conditional(g, (0, 1, 2), [1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="obs_dims"):
    gmm.conditional(g, (), [])
  with pytest.raises(ValueError, match="values"):
    gmm.conditional(g, (0, 1), [1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="values"):
    gmm.conditional(g, (0,), 1.0)


# ----------------------------------------------------------------------------------------------
# transform and add_noise.


def test_transform_orthogonal_then_marginal_matches_scipy():
  g, (w, m, c) = _create(70, 3, 3)
  rng = np.random.default_rng(7)
  a = np.linalg.qr(rng.standard_normal((3, 3)))[0]
  b = rng.standard_normal(3)
  y = _transform(g, jnp.asarray(a), jnp.asarray(b))
  tm, tc = m @ a.T + b, a @ c @ a.T
  pts = rng.standard_normal((5, 3))
  np.testing.assert_allclose(
      np.asarray(_log_prob(y, pts)), _scipy_logpdf(pts, w, tm, tc), rtol=1e-10
  )
  marg = _marginal(y, (2, 0))
  pts2 = rng.standard_normal((5, 2))
  np.testing.assert_allclose(
      np.asarray(_log_prob(marg, pts2)),
      _scipy_logpdf(pts2, w, tm[:, [2, 0]], tc[:, [2, 0]][:, :, [2, 0]]),
      rtol=1e-10,
  )
  # An orthogonal map leaves densities unchanged up to the change of variables (|det A| = 1).
  np.testing.assert_allclose(
      np.asarray(_log_prob(y, pts @ a.T + b)), np.asarray(_log_prob(g, pts)), rtol=1e-10
  )


def test_transform_wide_matrix_matches_scipy():
  g, (w, m, c) = _create(71, 3, 3, batch=(2,))
  rng = np.random.default_rng(8)
  a = rng.standard_normal((2, 3))  # full row rank
  b = rng.standard_normal(2)
  y = _transform(g, jnp.asarray(a), jnp.asarray(b))
  assert y.dim == 2 and y.batch_shape == (2,)
  pts = rng.standard_normal((5, 2, 2))
  out = np.asarray(_log_prob(y, pts))
  for i in range(2):
    np.testing.assert_allclose(
        out[:, i], _scipy_logpdf(pts[:, i], w[i], m[i] @ a.T + b, a @ c[i] @ a.T), rtol=1e-10
    )
  marg = _marginal(y, (1,))
  np.testing.assert_allclose(
      _np(marg)[2][..., 0, 0], np.einsum("j,bkjl,l->bk", a[1], c, a[1]), rtol=1e-10
  )


def test_transform_batch_of_maps_under_vmap():
  g, (w, m, c) = _create(72, 2, 2)
  angles = np.array([0.1, 0.7, 2.0])
  a = np.asarray(gmm.rotation(angles))
  y = jax.jit(jax.vmap(gmm.transform, in_axes=(None, 0)))(g, jnp.asarray(a))
  assert y.batch_shape == (3,)
  np.testing.assert_allclose(np.asarray(y.means), np.einsum("bij,kj->bki", a, m), rtol=1e-10)
  np.testing.assert_allclose(_np(y)[2], np.einsum("bij,kjl,bml->bkim", a, c, a), rtol=1e-10)


def test_transform_rejects_bad_arguments():
  g, _ = _create(0, 2, 3)
  with pytest.raises(ValueError, match="A has shape \\(2, 2\\): its last axis"):
    gmm.transform(g, np.eye(2))  # square, wrong width
  with pytest.raises(ValueError, match="A has shape \\(3, 2\\): its last axis"):
    gmm.transform(g, np.ones((3, 2)))  # wrong width
  with pytest.raises(ValueError, match="A has shape \\(4, 3\\).*M > D"):
    gmm.transform(g, np.ones((4, 3)))
  with pytest.raises(ValueError, match="A must be a matrix"):
    gmm.transform(g, np.ones(3))
  with pytest.raises(ValueError, match="full row rank"):
    gmm.transform(g, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
  with pytest.raises(ValueError, match="full row rank"):
    gmm.transform(g, np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
  with pytest.raises(ValueError, match="b must have shape"):
    gmm.transform(g, np.eye(3), np.zeros(2))


def test_create_rejects_rank_deficient_covariances():
  rng = np.random.default_rng(0)
  accepted = 0
  for _ in range(20):
    v = rng.standard_normal((3, 2))
    try:
      gmm.create(np.zeros((1, 3)), (v @ v.T)[None])  # rank 2 of 3
      accepted += 1
    except ValueError:
      pass
  assert accepted == 0, f"{accepted} of 20 singular covariances accepted"


def test_transform_rejects_singular_square_maps():
  g, _ = _create(0, 2, 3)
  rng = np.random.default_rng(1)
  accepted = 0
  for _ in range(20):
    a = rng.standard_normal((3, 2)) @ rng.standard_normal((2, 3))  # rank 2 of 3
    try:
      gmm.transform(g, a)
      accepted += 1
    except ValueError:
      pass
  assert accepted == 0, f"{accepted} of 20 singular maps accepted"


def test_add_noise_matches_sampling():
  g, (w, m, c) = _create(80, 3, 2)
  noise_var = 0.3
  noised = _add_noise(g, noise_var)
  np.testing.assert_allclose(_np(noised)[2], c + noise_var * np.eye(2), rtol=1e-10)
  np.testing.assert_allclose(_np(noised)[1], m, rtol=1e-12)
  rng = np.random.default_rng(9)
  n = 200_000
  comps = rng.choice(3, size=n, p=w)
  eps = rng.standard_normal((n, 2))
  x = m[comps] + np.einsum("nij,nj->ni", np.linalg.cholesky(c)[comps], eps)
  x = x + np.sqrt(noise_var) * rng.standard_normal((n, 2))
  mean, cov = _mixture_moments(*_np(noised))
  # Standard errors are about sqrt(var / n) < 0.01 here.
  np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.06, rtol=0.02)
  # Without the noise the sample moments would be off by the noise variance.
  assert np.abs(np.cov(x.T) - _mixture_moments(w, m, c)[1])[0, 0] > 0.2


def test_add_noise_batched_variance_and_errors():
  g, (_, _, c) = _create(81, 2, 2)
  noised = _add_noise(g, np.array([0.0, 0.5, 1.0]))
  assert noised.batch_shape == (3,)
  np.testing.assert_allclose(
      _np(noised)[2], c + np.array([0.0, 0.5, 1.0])[:, None, None, None] * np.eye(2), rtol=1e-10
  )
  with pytest.raises(ValueError, match="variance"):
    gmm.add_noise(g, -1.0)
  with pytest.raises(ValueError, match="variance"):
    gmm.add_noise(g, np.nan)


# ----------------------------------------------------------------------------------------------
# sample.


def test_sample_moments_and_component_frequencies():
  g, (w, m, c) = _create(90, 3, 2)
  n = 100_000
  x, comps = jax.jit(lambda g, r: gmm.sample(g, rng=r, sample_shape=(n,), return_components=True))(
      g, _key(0)
  )
  x, comps = np.asarray(x), np.asarray(comps)
  assert x.shape == (n, 2) and comps.shape == (n,)
  freq = np.bincount(comps, minlength=3) / n
  np.testing.assert_allclose(freq, w, atol=4 * np.sqrt(0.25 / n))
  mean, cov = _mixture_moments(w, m, c)
  np.testing.assert_allclose(x.mean(0), mean, atol=0.04)
  np.testing.assert_allclose(np.cov(x.T), cov, atol=0.08, rtol=0.03)
  for k in range(3):  # each component's samples have that component's moments
    np.testing.assert_allclose(x[comps == k].mean(0), m[k], atol=0.06)
    np.testing.assert_allclose(np.cov(x[comps == k].T), c[k], atol=0.12, rtol=0.05)


def test_sample_with_batch_axes_and_determinism():
  g, (w, m, c) = _create(91, 2, 3, batch=(2,))
  fn = jax.jit(lambda g, r: gmm.sample(g, rng=r, sample_shape=(4000, 3)))
  x1, x2 = fn(g, _key(1)), fn(g, _key(1))
  assert x1.shape == (4000, 3, 2, 3)
  np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
  assert not np.allclose(np.asarray(x1), np.asarray(fn(g, _key(2))))
  x = np.asarray(x1).reshape(-1, 2, 3)
  for b in range(2):
    np.testing.assert_allclose(x[:, b].mean(0), _mixture_moments(w[b], m[b], c[b])[0], atol=0.1)


def test_sample_reparameterised_gradient_wrt_means_is_the_component_fraction():
  g, (w, _, _) = _create(92, 3, 2)
  rng = _key(3)
  n = 20_000

  def mean_first_coordinate(means):
    x = gmm.sample(g._replace(means=means), rng=rng, sample_shape=(n,))
    return jnp.mean(x[:, 0])

  grad = np.asarray(jax.jit(jax.grad(mean_first_coordinate))(g.means))
  _, comps = jax.jit(lambda g: gmm.sample(g, rng=rng, sample_shape=(n,), return_components=True))(g)
  frac = np.bincount(np.asarray(comps), minlength=3) / n
  np.testing.assert_allclose(grad[:, 0], frac, rtol=1e-10)
  np.testing.assert_allclose(grad[:, 1], 0.0, atol=1e-12)
  np.testing.assert_allclose(grad[:, 0], w, atol=0.015)


# ----------------------------------------------------------------------------------------------
# rotation and random_orthogonal.


def test_rotation_matrix():
  angles = np.array([0.0, 0.3, -1.2, np.pi / 2, 3.0])
  a = np.asarray(jax.jit(gmm.rotation)(jnp.asarray(angles)))
  assert a.shape == (5, 2, 2)
  c, s = np.cos(angles), np.sin(angles)
  np.testing.assert_allclose(
      a, np.stack([np.stack([c, s], -1), np.stack([-s, c], -1)], -2), atol=1e-15
  )
  np.testing.assert_allclose(
      a @ np.swapaxes(a, -1, -2), np.broadcast_to(np.eye(2), a.shape), atol=1e-14
  )
  np.testing.assert_allclose(np.linalg.det(a), 1.0, rtol=1e-14)
  # y = A x: a positive angle turns (1, 0) to (cos a, -sin a).
  np.testing.assert_allclose(
      np.asarray(gmm.rotation(0.3)) @ [1.0, 0.0], [math.cos(0.3), -math.sin(0.3)], atol=1e-15
  )


@pytest.mark.parametrize("dim", (1, 4))
def test_random_orthogonal_is_orthogonal_with_batch_shape(dim):
  q = jax.jit(lambda r: gmm.random_orthogonal(r, dim, shape=(4, 2)))(_key(dim))
  q = np.asarray(q)
  assert q.shape == (4, 2, dim, dim)
  np.testing.assert_allclose(
      np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(dim), q.shape), atol=1e-12
  )
  np.testing.assert_allclose(np.abs(np.linalg.det(q)), 1.0, rtol=1e-12)
  # Every matrix of the batch is its own draw (for dim 1 there are only +-1).
  assert len({q[i, j].round(12).tobytes() for i in range(4) for j in range(2)}) == (
      2 if dim == 1 else 8
  )


def test_random_orthogonal_is_haar():
  n = 2000
  draw = jax.jit(gmm.random_orthogonal, static_argnames=("dim", "shape"))
  q = np.asarray(draw(_key(11), dim=2, shape=(n,)))
  det = np.linalg.det(q)
  rot = q[det > 0]
  assert abs(len(rot) / n - 0.5) < 4 * np.sqrt(0.25 / n)
  angle = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])
  assert scipy.stats.kstest(angle, "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-3
  np.testing.assert_allclose(q.mean(0), 0.0, atol=4 * np.sqrt(0.5 / n))
  # In 3-D every entry of a Haar matrix is uniform on [-1, 1] (a coordinate of a uniform point
  # on the sphere).
  q3 = np.asarray(draw(_key(12), dim=3, shape=(n,)))
  for i, j in [(0, 0), (2, 1)]:
    assert scipy.stats.kstest(q3[:, i, j], "uniform", args=(-1.0, 2.0)).pvalue > 1e-3
  np.testing.assert_allclose((q3**2).mean(0), np.full((3, 3), 1 / 3), atol=0.03)
  # QR without the sign fix (R's diagonal of either sign) biases the signs of the diagonal.
  assert np.all(
      np.abs((np.diagonal(q3, axis1=1, axis2=2) > 0).mean(0) - 0.5) < 4 * np.sqrt(0.25 / n)
  )


def test_random_orthogonal_rejects_bad_dim():
  with pytest.raises(ValueError, match="dim"):
    gmm.random_orthogonal(_key(0), 0)


# ----------------------------------------------------------------------------------------------
# Gradients.


def test_log_prob_gradients():
  g, _ = _create(100, 3, 2)
  x = jnp.asarray(np.random.default_rng(10).standard_normal((4, 2)))
  # With respect to the means, the Cholesky factors and the points, all at once.
  fn = jax.jit(lambda means, l, x: gmm.log_prob(g._replace(means=means, scale_tril=l), x))
  test_util.check_grads(
      fn, (g.means, g.scale_tril, x), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
  )
  # d/dmu_k log p(x) = r_k(x) Sigma_k^{-1} (x - mu_k), with r_k the responsibilities.
  w, m, c = _np(g)
  xs = np.asarray(x)
  grad = np.asarray(jax.grad(lambda means: fn(means, g.scale_tril, x)[0])(g.means))
  log_r = np.array(
      [np.log(w[k]) + scipy.stats.multivariate_normal(m[k], c[k]).logpdf(xs[0]) for k in range(3)]
  )
  r = np.exp(log_r - scipy.special.logsumexp(log_r))
  expected = np.stack([r[k] * np.linalg.solve(c[k], xs[0] - m[k]) for k in range(3)])
  np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-12)


def test_conditional_gradients_wrt_values():
  g, _ = _create(101, 3, 3)
  values = jnp.asarray([0.4, -0.2])
  fn = jax.jit(lambda v: gmm.conditional(g, (0, 2), v).means)
  test_util.check_grads(fn, (values,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)
  # The conditional mean of each component is linear in the values, with slope
  # Sigma_ro Sigma_oo^{-1}.
  c = _np(g)[2]
  jac = np.asarray(jax.jacrev(fn)(values))  # [K, 1, 2]
  for k in range(3):
    slope = c[k][np.ix_([1], [0, 2])] @ np.linalg.inv(c[k][np.ix_([0, 2], [0, 2])])
    np.testing.assert_allclose(jac[k], slope, rtol=1e-10)
  fn_w = jax.jit(lambda v: gmm.conditional(g, (0, 2), v).log_weights)
  test_util.check_grads(fn_w, (values,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# chex variants: log_prob (per point, so also vmapped over points) against scipy, eager and
# jitted, on a tiny 2-D mixture (one test: eager GMM code dispatches op by op and costs seconds).


class GmmVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_log_prob_matches_scipy(self):
    g, (w, m, c) = _create(12, 3, 2)
    x = np.random.default_rng(2).standard_normal((5, 2)) * 2.0
    expected = _scipy_logpdf(x, w, m, c)
    for fn in (gmm.log_prob, jax.vmap(gmm.log_prob, in_axes=(None, 0))):
      out = self.variant(fn)(g, jnp.asarray(x))
      chex.assert_shape(out, (5,))
      np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-10, atol=1e-10)
