"""Tests for bigjax.mixtures.linalg against numpy, on the unrolled (D <= 8) and fori_loop
(D > 8) paths."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import test_util

from bigjax.mixtures import linalg

# D <= UNROLL_MAX_DIM runs the unrolled code, D = 12 the lax.fori_loop code.
DIMS = (1, 2, 3, 8, 12)


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _spd(rng, shape, d):
  """Random symmetric positive definite matrices `[*shape, d, d]` (numpy float64)."""
  a = rng.standard_normal(shape + (d, d))
  return a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)


def _lower(rng, shape, d):
  """Random well-conditioned lower-triangular matrices with positive diagonal."""
  l = np.tril(rng.standard_normal(shape + (d, d)), -1) * 0.3
  idx = np.arange(d)
  l[..., idx, idx] = rng.uniform(0.5, 2.0, shape + (d,))
  return l


def test_unroll_threshold_is_covered():
  assert min(DIMS) <= linalg.UNROLL_MAX_DIM < max(DIMS)


@pytest.mark.parametrize("d", DIMS)
def test_cholesky_matches_numpy_with_batch_axes(d):
  rng = np.random.default_rng(d)
  a = _spd(rng, (2, 3), d)
  l = np.asarray(jax.jit(linalg.cholesky)(jnp.asarray(a)))
  assert l.shape == (2, 3, d, d)
  np.testing.assert_allclose(l, np.linalg.cholesky(a), rtol=1e-10, atol=1e-10)
  np.testing.assert_array_equal(np.triu(l, 1), 0.0)
  np.testing.assert_allclose(l @ np.swapaxes(l, -1, -2), a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", (3, 12))
def test_cholesky_reads_only_the_lower_triangle(d):
  rng = np.random.default_rng(10 + d)
  a = _spd(rng, (4,), d)
  garbage = a + np.triu(rng.standard_normal(a.shape) * 100.0, 1)
  l = np.asarray(jax.jit(linalg.cholesky)(jnp.asarray(garbage)))
  np.testing.assert_allclose(l, np.linalg.cholesky(a), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", (3,))
def test_cholesky_under_vmap(d):
  rng = np.random.default_rng(20 + d)
  a = _spd(rng, (5,), d)
  l = jax.jit(jax.vmap(linalg.cholesky))(jnp.asarray(a))
  np.testing.assert_allclose(np.asarray(l), np.linalg.cholesky(a), rtol=1e-10, atol=1e-10)


def test_cholesky_of_indefinite_matrix_is_nan():
  a = jnp.asarray([[1.0, 2.0], [2.0, 1.0]])
  assert np.isnan(np.asarray(jax.jit(linalg.cholesky)(a))).any()


@pytest.mark.parametrize("d", DIMS)
def test_solve_lower_matches_numpy_with_broadcast_batch(d):
  rng = np.random.default_rng(30 + d)
  l = _lower(rng, (3,), d)  # batch (3,)
  b = rng.standard_normal((2, 1, d, 4))  # batch (2, 1): broadcasts to (2, 3)
  z = np.asarray(jax.jit(linalg.solve_lower)(jnp.asarray(l), jnp.asarray(b)))
  assert z.shape == (2, 3, d, 4)
  expected = np.linalg.solve(np.broadcast_to(l, (2, 3, d, d)), np.broadcast_to(b, (2, 3, d, 4)))
  np.testing.assert_allclose(z, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", (2,))
def test_solve_lower_under_vmap(d):
  rng = np.random.default_rng(40 + d)
  l = _lower(rng, (6,), d)
  b = rng.standard_normal((6, d, 3))
  z = jax.jit(jax.vmap(linalg.solve_lower))(jnp.asarray(l), jnp.asarray(b))
  np.testing.assert_allclose(np.asarray(z), np.linalg.solve(l, b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", DIMS)
def test_orthonormalize_matches_numpy_qr_with_positive_r(d):
  rng = np.random.default_rng(50 + d)
  a = rng.standard_normal((2, 3, d, d))
  q = np.asarray(jax.jit(linalg.orthonormalize)(jnp.asarray(a)))
  q_np, r_np = np.linalg.qr(a)
  signs = np.sign(np.diagonal(r_np, axis1=-2, axis2=-1))
  q_np = q_np * signs[..., None, :]  # flip columns so that diag(R) > 0
  np.testing.assert_allclose(q, q_np, rtol=1e-8, atol=1e-8)
  np.testing.assert_allclose(
      np.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(d), q.shape), atol=1e-10
  )
  r = np.swapaxes(q, -1, -2) @ a  # R = Q^T a is upper triangular, positive diag
  np.testing.assert_allclose(np.tril(r, -1), 0.0, atol=1e-9)
  assert np.all(np.diagonal(r, axis1=-2, axis2=-1) > 0)


@pytest.mark.parametrize("d", (3, 12))
def test_cholesky_gradients(d):
  a = jnp.asarray(_spd(np.random.default_rng(70 + d), (2,), d))
  # Symmetrise inside so that the finite-difference perturbations stay on SPD matrices.
  fn = jax.jit(lambda m: linalg.cholesky(0.5 * (m + jnp.swapaxes(m, -1, -2))))
  test_util.check_grads(fn, (a,), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("d", (12,))  # the unrolled path's gradients: test_gmm's conditional
def test_solve_lower_gradients(d):
  rng = np.random.default_rng(80 + d)
  l, b = jnp.asarray(_lower(rng, (), d)), jnp.asarray(rng.standard_normal((d, 2)))
  test_util.check_grads(
      jax.jit(linalg.solve_lower), (l, b), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
  )


# ----------------------------------------------------------------------------------------------
# chex variants: per-matrix functions, so also vmapped over a batch of matrices, against numpy.


class LinalgVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_cholesky_and_solve_lower_match_numpy(self):
    rng = np.random.default_rng(3)
    a, b = _spd(rng, (2,), 3), rng.standard_normal((2, 3, 2))
    for vmap in (False, True):
      wrap = jax.vmap if vmap else (lambda fn: fn)
      l = np.asarray(self.variant(wrap(linalg.cholesky))(jnp.asarray(a)))
      np.testing.assert_allclose(l, np.linalg.cholesky(a), rtol=1e-10, atol=1e-10)
      x = self.variant(wrap(linalg.solve_lower))(jnp.asarray(l), jnp.asarray(b))
      np.testing.assert_allclose(np.asarray(x), np.linalg.solve(l, b), rtol=1e-10, atol=1e-10)
