"""Bad inputs to the library's mixtures get clear errors (issue 27, item 12); good ones are
unchanged, and the checks stay out of traced code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax.mixtures import gmm


def _two_components():
  return gmm.create(np.array([[0.0, 0.0], [3.0, 1.0]]), np.stack([np.eye(2), 2 * np.eye(2)]))


def test_create_refuses_an_upper_triangular_scale_tril():
  upper = np.array([[[1.0, 0.5], [0.0, 1.0]]])  # was silently read as the identity
  with pytest.raises(ValueError, match=r"above the diagonal at \(0, 0, 1\).*swapaxes"):
    gmm.create(np.zeros((1, 2)), scale_tril=upper)
  g = gmm.create(np.zeros((1, 2)), scale_tril=np.swapaxes(upper, -1, -2))
  np.testing.assert_array_equal(g.scale_tril, np.swapaxes(upper, -1, -2))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_create_refuses_non_finite_scale_tril(bad):
  with pytest.raises(ValueError, match=r"scale_tril contains NaN or inf at \(0, 1, 0\)"):
    gmm.create(np.zeros((1, 2)), scale_tril=np.array([[[1.0, 0.0], [bad, 1.0]]]))


def test_scale_tril_checks_stay_out_of_jit():
  tril = np.array([[[1.0, 0.0], [0.5, 2.0]]])
  eager = gmm.create(np.zeros((1, 2)), scale_tril=tril)
  jitted = jax.jit(lambda t: gmm.create(jnp.zeros((1, 2)), scale_tril=t))(tril)
  np.testing.assert_array_equal(eager.scale_tril, jitted.scale_tril)


@pytest.mark.parametrize("covariances", [1.0, None])
def test_create_refuses_zero_dimensions(covariances):
  kw = dict(scale_tril=np.zeros((2, 0, 0))) if covariances is None else {}
  with pytest.raises(ValueError, match=r"D = 0 dimensions.*D >= 1"):
    gmm.create(np.zeros((2, 0)), covariances, **kw)


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e200])
def test_conditional_refuses_non_finite_values(value):
  with pytest.raises(ValueError, match=r"values contains NaN or inf at \(0,\)"):
    gmm.conditional(_two_components(), [0], [value])


def test_conditional_refuses_values_beyond_every_component():
  # Finite in float32, but its squared distance overflows: every evidence term is -inf.
  with pytest.raises(ValueError, match="so far from every component"):
    gmm.conditional(_two_components(), [0], [1e30])


def test_conditional_checks_do_not_change_good_results_or_jit():
  g = _two_components()
  eager = gmm.conditional(g, [0], [1.5])
  jitted = jax.jit(gmm.conditional, static_argnums=1)(g, (0,), jnp.array([1.5]))
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert np.all(np.isfinite(eager.log_weights))
  nan_in_jit = jax.jit(gmm.conditional, static_argnums=1)(g, (0,), jnp.array([np.nan]))
  assert np.all(np.isnan(nan_in_jit.log_weights))  # traced: unchecked, as documented
