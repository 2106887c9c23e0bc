"""Tests for bigjax.mixtures.divergences against adaptive scipy integration and closed forms."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
from jax import test_util

from bigjax.mixtures import divergences
from bigjax.mixtures import gmm
from conftest import rbg_key as _key

pytestmark = pytest.mark.usefixtures("x64")


_kl = jax.jit(
    divergences.kl, static_argnames=("method", "num_points", "num_samples", "stick_the_landing")
)
_js = jax.jit(divergences.js, static_argnames=("method", "num_points", "num_samples"))


# ----------------------------------------------------------------------------------------------
# Independent references: scalar log densities for scipy.integrate.


def _logpdf_fn(weights, means, covs):
  """Scalar log density of one mixture, `f(*coords) -> float`, in plain Python math."""
  comps = []
  for w, m, c in zip(weights, np.asarray(means, float), np.asarray(covs, float)):
    inv = np.linalg.inv(c)
    const = math.log(w) - 0.5 * math.log(np.linalg.det(c)) - 0.5 * len(m) * math.log(2 * math.pi)
    # Plain floats: scipy calls this once per node, and numpy scalars are slow.
    comps.append((float(const), m.tolist(), inv.tolist()))

  def logpdf(*x):
    vals = []
    for const, m, inv in comps:
      diff = [xi - mi for xi, mi in zip(x, m)]
      maha = sum(di * sum(row_j * dj for row_j, dj in zip(row, diff)) for di, row in zip(diff, inv))
      vals.append(const - 0.5 * maha)
    top = max(vals)
    return top + math.log(sum(math.exp(v - top) for v in vals))

  return logpdf


def _bounds_1d(*mixtures):
  means = np.concatenate([np.ravel(m) for _, m, _ in mixtures])
  sd = max(math.sqrt(float(np.max(c))) for _, _, c in mixtures)
  lo, hi = means.min() - 15 * sd, means.max() + 15 * sd
  return lo, hi, sorted(set(np.round(means, 12)))


def _kl_quad_1d(p, q):
  """KL[p || q] of 1-D mixtures (weights, means [K, 1], covs [K, 1, 1]) by scipy quad."""
  lp, lq = _logpdf_fn(*p), _logpdf_fn(*q)
  lo, hi, pts = _bounds_1d(p, q)
  f = lambda x: math.exp(lp(x)) * (lp(x) - lq(x))
  return scipy.integrate.quad(f, lo, hi, points=pts, limit=400, epsabs=1e-13, epsrel=1e-12)[0]


def _js_quad_1d(p, q):
  lp, lq = _logpdf_fn(*p), _logpdf_fn(*q)
  lo, hi, pts = _bounds_1d(p, q)

  def f(x):
    a, b = lp(x), lq(x)
    lm = math.log(0.5) + max(a, b) + math.log1p(math.exp(-abs(a - b)))
    return 0.5 * (math.exp(a) * (a - lm) + math.exp(b) * (b - lm))

  return scipy.integrate.quad(f, lo, hi, points=pts, limit=400, epsabs=1e-13, epsrel=1e-12)[0]


def _kl_dblquad_2d(p, q):
  lp, lq = _logpdf_fn(*p), _logpdf_fn(*q)
  means = np.concatenate([p[1], q[1]])
  sd = math.sqrt(max(float(np.max(p[2])), float(np.max(q[2]))))
  lo, hi = means.min(0) - 10 * sd, means.max(0) + 10 * sd
  f = lambda y, x: math.exp(lp(x, y)) * (lp(x, y) - lq(x, y))
  return scipy.integrate.dblquad(f, lo[0], hi[0], lo[1], hi[1], epsabs=1e-9, epsrel=1e-9)[0]


def _gauss_kl(m0, c0, m1, c1):
  """Closed-form KL[N(m0, c0) || N(m1, c1)]."""
  inv1 = np.linalg.inv(c1)
  diff = m1 - m0
  return 0.5 * (
      np.trace(inv1 @ c0)
      + diff @ inv1 @ diff
      - len(m0)
      + np.linalg.slogdet(c1)[1]
      - np.linalg.slogdet(c0)[1]
  )


# ----------------------------------------------------------------------------------------------
# Mixture builders (numpy parameters -> GMM; gmm.create is tested in test_gmm.py).


def _gmm(weights, means, covs):
  return gmm.GMM(
      jnp.asarray(np.log(weights)), jnp.asarray(means), jnp.asarray(np.linalg.cholesky(covs))
  )


def _stack(params):
  """A batch of mixtures with the same K and D, from a list of (weights, means, covs)."""
  return _gmm(*(np.stack(x) for x in zip(*params)))


def _random_params(seed, k, d, scale=1.0):
  rng = np.random.default_rng(seed)
  w = rng.dirichlet(np.ones(k) * 2.0)
  m = rng.standard_normal((k, d)) * scale
  a = rng.standard_normal((k, d, d)) * 0.5
  return w, m, a @ np.swapaxes(a, -1, -2) + 0.3 * np.eye(d)


def _two_gmm_1d(mu1, mu2, sigma2):
  """The first coordinate of the paper's 2-GMM (Eq. (7)): 1/2 N(mu1, s2) + 1/2 N(mu2, s2)."""
  return np.array([0.5, 0.5]), np.array([[mu1], [mu2]], float), np.full((2, 1, 1), sigma2)


# ----------------------------------------------------------------------------------------------
# Quadrature rule.


def test_gauss_hermite_rule_moments():
  nodes, weights = divergences.gauss_hermite_rule(10, 1)
  assert nodes.shape == (10, 1) and weights.shape == (10,)
  u = nodes[:, 0]
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-14)
  np.testing.assert_allclose(
      [weights @ u, weights @ u**2, weights @ u**3, weights @ u**4, weights @ u**6],
      [0.0, 1.0, 0.0, 3.0, 15.0],
      atol=1e-12,
  )
  nodes, weights = divergences.gauss_hermite_rule(6, 2)
  assert nodes.shape == (36, 2)
  u1, u2 = nodes.T
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-14)
  np.testing.assert_allclose(
      [
          weights @ (u1**2 * u2**2),
          weights @ (u1 * u2),
          weights @ u1**2,
          weights @ u2**4,
          weights @ (u1**4 * u2**2),
      ],
      [1.0, 0.0, 1.0, 3.0, 3.0],
      atol=1e-12,
  )


def test_gauss_hermite_rule_drops_negligible_nodes():
  nodes, weights = divergences.gauss_hermite_rule(1024, 1)
  assert 50 < len(weights) < 1024
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-14)
  u = nodes[:, 0]
  np.testing.assert_allclose([weights @ u**2, weights @ u**4], [1.0, 3.0], rtol=1e-9)
  nodes3, weights3 = divergences.gauss_hermite_rule(8, 3)
  np.testing.assert_allclose(
      weights3 @ (nodes3[:, 0] ** 2 * nodes3[:, 1] ** 2 * nodes3[:, 2] ** 2), 1.0, rtol=1e-10
  )
  with pytest.raises(ValueError, match="positive"):
    divergences.gauss_hermite_rule(0, 1)


def test_quadrature_expectation_of_moments():
  w, m, c = _random_params(0, 3, 2)
  p = _gmm(w, m, c)
  fn = jax.jit(
      lambda p: divergences.quadrature_expectation(
          p, lambda x: x[..., 0, :] ** 2 + x[..., 0, :] * x[..., 1, :] + x[..., 1, :], num_points=8
      )
  )
  second = c + m[:, :, None] * m[:, None, :]
  expected = w @ (second[:, 0, 0] + second[:, 0, 1] + m[:, 1])
  np.testing.assert_allclose(float(fn(p)), expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# KL by quadrature against scipy.


@pytest.mark.parametrize("sigma2", (0.1, 0.02))
def test_kl_paper_two_gmm_1d_matches_quad(sigma2):
  thetas = [(0.0, 0.0), (-0.5, 1.5), (1.2, -0.3), (-1.7, -0.6), (0.9, 1.1), (-1.0, 1.0)]
  q = _two_gmm_1d(-1.0, 1.0, sigma2)
  p = _stack([_two_gmm_1d(a, b, sigma2) for a, b in thetas])
  out = np.asarray(_kl(p, _gmm(*q)))
  expected = [_kl_quad_1d(_two_gmm_1d(a, b, sigma2), q) for a, b in thetas]
  np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)
  assert abs(out[-1]) < 1e-10  # the global optimum (-1, 1)


def test_kl_random_1d_mixtures_match_quad():
  ps = [_random_params(s, 3, 1, scale=1.5) for s in range(3)]
  qs = [_random_params(10 + s, 2, 1, scale=1.5) for s in range(3)]
  out = np.asarray(_kl(_stack(ps), _stack(qs)))
  expected = [_kl_quad_1d(p, q) for p, q in zip(ps, qs)]
  np.testing.assert_allclose(out, expected, atol=1e-7, rtol=0)


def _pairs_2d():
  """Four random 2-D (p, q) pairs, as numpy parameters and as batched GMMs."""
  ps = [_random_params(70 + s, 2, 2) for s in range(4)]
  qs = [_random_params(80 + s, 2, 2) for s in range(4)]
  return ps, qs, _stack(ps), _stack(qs)


def test_kl_2d_mixtures_match_dblquad():
  ps, qs, p, q = _pairs_2d()
  out = np.asarray(_kl(p, q))  # the default 2-D rule
  expected = [_kl_dblquad_2d(ps[i], qs[i]) for i in range(2)]  # about a second each
  np.testing.assert_allclose(out[:2], expected, atol=1e-6, rtol=0)


def test_kl_3d_product_mixture_matches_quad_plus_dblquad():
  # p = p1(x1) p23(x2, x3) and q likewise, so KL[p || q] = KL[p1 || q1] + KL[p23 || q23]. The
  # product of a K1- and a K2-component mixture is a K1*K2 mixture with block covariances; a
  # random rotation of both sides then makes the covariances full.
  def product(a, b):
    wa, ma, ca = a
    wb, mb, cb = b
    w, m, c = [], [], []
    for i in range(len(wa)):
      for j in range(len(wb)):
        w.append(wa[i] * wb[j])
        m.append(np.concatenate([ma[i], mb[j]]))
        block = np.zeros((3, 3))
        block[:1, :1], block[1:, 1:] = ca[i], cb[j]
        c.append(block)
    return np.array(w), np.array(m), np.array(c)

  p1, q1 = _random_params(40, 2, 1), _random_params(41, 2, 1)
  p23, q23 = _random_params(42, 2, 2), _random_params(43, 1, 2)
  rot = np.linalg.qr(np.random.default_rng(44).standard_normal((3, 3)))[0]

  def rotated(params):
    w, m, c = params
    return _gmm(w, m @ rot.T, rot @ c @ rot.T)

  out = float(_kl(rotated(product(p1, p23)), rotated(product(q1, q23))))
  expected = _kl_quad_1d(p1, q1) + _kl_dblquad_2d(p23, q23)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("d, num_points", [(3, 2), (9, 2)])
def test_kl_of_single_gaussians_is_exact(d, num_points):
  # log p - log q is quadratic for single Gaussians, so 2 Gauss-Hermite points per dimension
  # integrate it exactly. D = 9 exercises the general (non-unrolled) path.
  p, q = _random_params(50 + d, 1, d), _random_params(60 + d, 1, d)
  out = float(_kl(_gmm(*p), _gmm(*q), num_points=num_points))
  np.testing.assert_allclose(out, _gauss_kl(p[1][0], p[2][0], q[1][0], q[2][0]), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Identities.


def test_kl_identities():
  ps, qs, p, q = _pairs_2d()
  np.testing.assert_allclose(np.asarray(_kl(p, p)), 0.0, atol=1e-12)
  pq = np.asarray(_kl(p, q))
  assert np.all(pq > 1e-3)
  # Rotating both sides leaves the KL unchanged.
  rotate = jax.jit(lambda g, a: gmm.transform(g, a))
  a = gmm.rotation(jnp.asarray(0.7))
  # (Not exactly: the whitened nodes of the rotated components differ. The tolerance allows for
  # the default 2-D rule's error on this problem: 4e-7 with 256 points, 5e-10 with 512.)
  np.testing.assert_allclose(np.asarray(_kl(rotate(p, a), rotate(q, a))), pq, rtol=0, atol=2e-6)
  # Batch shapes broadcast: p [4] against q [2, 1] gives [2, 4].
  out = np.asarray(_kl(p, jax.tree.map(lambda t: t[:2, None], q)))
  assert out.shape == (2, 4)
  np.testing.assert_allclose(out[1, 1], pq[1], rtol=1e-12)
  np.testing.assert_allclose(out[0, 3], float(_kl(_gmm(*ps[3]), _gmm(*qs[0]))), rtol=1e-12)


def test_kl_vmap_matches_batch():
  ps = [_random_params(90 + s, 2, 1) for s in range(3)]
  q = _gmm(*_random_params(95, 3, 1))
  p = _stack(ps)
  vm = jax.jit(jax.vmap(lambda p: divergences.kl(p, q)))(p)
  np.testing.assert_allclose(np.asarray(vm), np.asarray(_kl(p, q)), rtol=1e-12)


def test_kl_rejects_bad_arguments():
  p2, p1 = _gmm(*_random_params(0, 2, 2)), _gmm(*_random_params(1, 2, 1))
  with pytest.raises(ValueError, match="dimension"):
    divergences.kl(p2, p1)
  with pytest.raises(ValueError, match=r"quadrature.*mc"):
    divergences.kl(p2, p2, method="simpson")
  with pytest.raises(ValueError, match="rng"):
    divergences.kl(p2, p2, method="mc", num_samples=10)
  with pytest.raises(ValueError, match="num_samples"):
    divergences.kl(p2, p2, method="mc", rng=_key(0))
  with pytest.raises(ValueError, match="rng"):
    divergences.js(p2, p2, method="mc", num_samples=10)
  p4 = _gmm(*_random_params(2, 1, 4))
  with pytest.raises(ValueError, match="num_points"):
    divergences.kl(p4, p4)
  batch3 = _stack([_random_params(s, 2, 2) for s in range(3)])
  batch2 = _stack([_random_params(s, 2, 2) for s in range(2)])
  with pytest.raises(ValueError, match="broadcast"):
    divergences.kl(batch3, batch2)


def test_js_bounds_symmetry_and_quad():
  ps = [_random_params(100 + s, 2, 1, scale=2.0) for s in range(3)] + [
      _two_gmm_1d(-20.0, -18.0, 0.1)
  ]
  qs = [_random_params(110 + s, 2, 1, scale=2.0) for s in range(3)] + [_two_gmm_1d(18.0, 20.0, 0.1)]
  p, q = _stack(ps), _stack(qs)
  pq, qp = np.asarray(_js(p, q)), np.asarray(_js(q, p))
  assert np.all(pq >= 0) and np.all(pq <= math.log(2) + 1e-12)
  np.testing.assert_allclose(pq, qp, atol=1e-8)
  np.testing.assert_allclose(pq[-1], math.log(2), rtol=1e-10)  # disjoint supports
  np.testing.assert_allclose(np.asarray(_js(p, p)), 0.0, atol=1e-12)
  expected = [_js_quad_1d(a, b) for a, b in zip(ps[:3], qs[:3])]
  np.testing.assert_allclose(pq[:3], expected, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Monte Carlo.


def test_kl_mc_is_unbiased_for_quadrature():
  # Two models in one batch: the paper's 1-D 2-GMM padded with a zero-weight third component,
  # and a 3-component mixture with unequal weights (every branch of the component draw).
  paper = _two_gmm_1d(-0.3, 0.8, 0.1)
  with np.errstate(divide="ignore"):
    p = _stack(
        [
            (
                np.array([0.5, 0.5, 0.0]),
                np.concatenate([paper[1], [[0.0]]]),
                np.concatenate([paper[2], [[[1.0]]]]),
            ),
            (
                np.array([0.2, 0.5, 0.3]),
                np.array([[-1.5], [0.2], [1.4]]),
                np.array([[[0.2]], [[0.1]], [[0.4]]]),
            ),
        ]
    )
  q = _gmm(*_two_gmm_1d(-1.0, 1.0, 0.1))
  exact = np.asarray(_kl(p, q))
  estimate = jax.jit(jax.vmap(lambda r: divergences.kl(p, q, method="mc", rng=r, num_samples=50)))
  keys = jax.random.split(_key(0), 400)
  estimates = np.asarray(estimate(keys))  # [400, 2]
  se = estimates.std(0, ddof=1) / math.sqrt(len(estimates))
  assert np.all(se > 0)
  assert np.all(np.abs(estimates.mean(0) - exact) < 4 * se), (estimates.mean(0), exact, se)
  # Deterministic for a fixed key, different for different keys.
  np.testing.assert_array_equal(np.asarray(estimate(keys)), estimates)
  assert len(np.unique(estimates[:, 0])) > 350


def test_kl_mc_general_path_is_unbiased():
  # D > 8 takes the sample / log_prob path of the estimator; single Gaussians have a closed form.
  d = 9
  p = _random_params(130, 1, d)
  shift = np.random.default_rng(131).standard_normal(d) * 0.3
  q = (p[0], p[1] + shift, p[2] * 1.3)  # close to p, so the estimates vary little
  exact = _gauss_kl(p[1][0], p[2][0], q[1][0], q[2][0])
  estimate = jax.jit(
      jax.vmap(lambda r: divergences.kl(_gmm(*p), _gmm(*q), method="mc", rng=r, num_samples=50))
  )
  estimates = np.asarray(estimate(jax.random.split(_key(1), 200)))
  se = estimates.std(ddof=1) / math.sqrt(len(estimates))
  assert se < 0.02 * exact
  assert abs(estimates.mean() - exact) < 4 * se


def test_stick_the_landing_value_and_unbiased_gradient():
  q = _gmm(*_two_gmm_1d(-1.0, 1.0, 0.1))
  p = _gmm(*_two_gmm_1d(-0.4, 0.6, 0.1))

  def loss(means, rng, stl):
    return divergences.kl(
        p._replace(means=means), q, method="mc", rng=rng, num_samples=200, stick_the_landing=stl
    )

  @jax.jit
  def estimates(means, keys):
    stl = jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0, None))(means, keys, True)
    plain = jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0, None))(means, keys, False)
    exact = jax.grad(lambda m: divergences.kl(p._replace(means=m), q))(means)
    return stl, plain, exact

  (v_stl, g_stl), (v_plain, g_plain), exact = jax.tree.map(
      np.asarray, estimates(p.means, jax.random.split(_key(2), 50))
  )
  np.testing.assert_allclose(v_stl, v_plain, rtol=1e-12)
  assert not np.allclose(g_stl, g_plain)
  assert g_stl.shape == (50, 2, 1) and np.all(np.abs(exact) > 0.1)
  for g in (g_stl, g_plain):
    se = g.std(0, ddof=1) / math.sqrt(len(g))
    assert np.all(np.abs(g.mean(0) - exact) < 4 * se), (g.mean(0), exact, se)


# ----------------------------------------------------------------------------------------------
# Gradients.


def test_kl_quadrature_gradients():
  p, q = _gmm(*_random_params(120, 2, 2)), _gmm(*_random_params(121, 2, 2))

  def fn(p_means, p_tril, q_means):
    return divergences.kl(
        p._replace(means=p_means, scale_tril=p_tril), q._replace(means=q_means), num_points=32
    )

  test_util.check_grads(
      jax.jit(fn), (p.means, p.scale_tril, q.means), order=1, modes=["rev"], atol=1e-6, rtol=1e-6
  )


def test_kl_quadrature_gradient_matches_quad_1d():
  # d/dmu1 of KL for the paper's 1-D problem, against a central difference of scipy quad.
  sigma2, theta, h = 0.1, (-0.4, 0.6), 1e-4
  q = _two_gmm_1d(-1.0, 1.0, sigma2)
  grad = jax.jit(
      jax.grad(
          lambda m: divergences.kl(
              _gmm(*_two_gmm_1d(-0.4, 0.6, sigma2))._replace(means=m), _gmm(*q)
          )
      )
  )
  g = np.asarray(grad(jnp.asarray([[theta[0]], [theta[1]]])))
  fd = (
      _kl_quad_1d(_two_gmm_1d(theta[0] + h, theta[1], sigma2), q)
      - _kl_quad_1d(_two_gmm_1d(theta[0] - h, theta[1], sigma2), q)
  ) / (2 * h)
  np.testing.assert_allclose(g[0, 0], fd, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# chex variants: the quadrature KL of single Gaussians against the closed form, eager and jitted.


class DivergenceVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_of_single_gaussians_is_exact(self):
    p, q = _random_params(52, 1, 2), _random_params(62, 1, 2)
    kl = self.variant(functools.partial(divergences.kl, num_points=2))
    np.testing.assert_allclose(
        float(kl(_gmm(*p), _gmm(*q))), _gauss_kl(p[1][0], p[2][0], q[1][0], q[2][0]), rtol=1e-10
    )
    np.testing.assert_allclose(float(kl(_gmm(*p), _gmm(*p))), 0.0, atol=1e-12)
