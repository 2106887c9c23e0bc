"""Tests for bigjax.losses: the Eq. (8) losses against hand-computed values, the R1 penalty against
analytic and finite-difference gradients (through a small Discriminator, also second order), and
the communication losses of Eq. (12)."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from bigjax import losses, tasks
from bigjax.models import Discriminator
from conftest import rbg_key as _key

_d_loss = jax.jit(losses.discriminator_loss)
_g_loss = jax.jit(losses.generator_loss, static_argnames="saturating")
_comm_d = jax.jit(losses.communication_discriminator_loss)
_comm_g = jax.jit(losses.communication_generator_loss, static_argnames="saturating")


def _softplus(x):
  """log(1 + e^x) in plain Python floats (the hand-computed reference)."""
  return math.log(1 + math.exp(x))


_LOGITS = [0.0, 1.5, -2.0, 0.3, -0.7, 4.0]


# ----------------------------------------------------------------------------------------------
# Eq. (8): discriminator and generator losses.


def test_discriminator_loss_at_zero_logits_is_two_log_two():
  got = np.asarray(_d_loss(jnp.zeros(3), jnp.zeros(3)))
  np.testing.assert_allclose(got, 2 * math.log(2), rtol=1e-6)


def test_discriminator_loss_matches_hand_computed_values():
  """-log sigma(f_real) - log sigma(-f_fake) = log(1 + e^-f_real) + log(1 + e^f_fake)."""
  real = np.array(_LOGITS, np.float32)
  fake = np.array(_LOGITS[::-1], np.float32)
  want = [_softplus(-r) + _softplus(f) for r, f in zip(_LOGITS, _LOGITS[::-1])]
  got = np.asarray(_d_loss(real, fake))
  assert got.shape == (len(_LOGITS),)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # Also through -log(sigmoid): a confident, correct discriminator has a small loss.
  np.testing.assert_allclose(
      float(_d_loss(jnp.array([3.0]), jnp.array([-3.0]))[0]),
      -2 * math.log(1 / (1 + math.exp(-3.0))),
      rtol=1e-6,
  )
  assert float(_d_loss(jnp.array([3.0]), jnp.array([-3.0]))[0]) < 0.1


def test_generator_losses_match_hand_computed_values():
  """saturating: log sigma(-f) = -log(1 + e^f); non-saturating: -log sigma(f) = log(1 + e^-f)."""
  fake = np.array(_LOGITS, np.float32)
  np.testing.assert_allclose(
      np.asarray(_g_loss(fake, saturating=True)), [-_softplus(f) for f in _LOGITS], rtol=1e-6
  )
  np.testing.assert_allclose(
      np.asarray(_g_loss(fake, saturating=False)), [_softplus(-f) for f in _LOGITS], rtol=1e-6
  )
  np.testing.assert_allclose(np.asarray(_g_loss(fake)), np.asarray(_g_loss(fake, saturating=False)))
  # Zero logits: -log 2 and log 2.
  np.testing.assert_allclose(
      float(_g_loss(jnp.zeros(1), saturating=True)[0]), -math.log(2), rtol=1e-6
  )
  np.testing.assert_allclose(float(_g_loss(jnp.zeros(1))[0]), math.log(2), rtol=1e-6)


def test_saturating_generator_loss_is_minus_the_fake_term_of_the_discriminator_loss():
  """Zero-sum: D loss = softplus(-f_real) + softplus(f_fake) = softplus(-f_real) - G_sat loss."""
  real = jnp.array([0.2, -1.0, 3.0])
  fake = jnp.array([-0.5, 2.0, 0.1])
  np.testing.assert_allclose(
      np.asarray(_d_loss(real, fake) + _g_loss(fake, saturating=True)),
      [_softplus(-0.2), _softplus(1.0), _softplus(-3.0)],
      rtol=1e-6,
  )


def test_generator_gradients_saturate_only_in_the_saturating_form():
  """At a very negative fake logit the saturating loss has a vanishing gradient and the
  non-saturating one a gradient near -1 (Goodfellow et al., 2014)."""
  grad_sat = jax.jit(jax.grad(lambda f: losses.generator_loss(f, saturating=True).sum()))
  grad_ns = jax.jit(jax.grad(lambda f: losses.generator_loss(f).sum()))
  f = jnp.array([-10.0, 0.0])
  np.testing.assert_allclose(np.asarray(grad_sat(f)), [-1 / (1 + math.exp(10)), -0.5], rtol=1e-5)
  np.testing.assert_allclose(np.asarray(grad_ns(f)), [-1 / (1 + math.exp(-10)), -0.5], rtol=1e-5)


def test_losses_are_finite_for_huge_logits_in_float32():
  """softplus keeps every loss and gradient finite at logits of +-1e4 (log(sigmoid) would give
  -inf), with the right asymptotics."""
  big = jnp.array([1e4, -1e4, 1e4, -1e4], jnp.float32)
  other = jnp.array([1e4, 1e4, -1e4, -1e4], jnp.float32)
  d = np.asarray(_d_loss(big, other))
  assert d.dtype == np.float32 and np.all(np.isfinite(d))
  np.testing.assert_allclose(d, [1e4, 2e4, 0.0, 1e4], rtol=1e-6)
  for sat in (True, False):
    g = np.asarray(_g_loss(big, saturating=sat))
    assert g.dtype == np.float32 and np.all(np.isfinite(g))
  np.testing.assert_allclose(np.asarray(_g_loss(big)), [0.0, 1e4, 0.0, 1e4], rtol=1e-6)
  np.testing.assert_allclose(
      np.asarray(_g_loss(big, saturating=True)), [-1e4, 0.0, -1e4, 0.0], rtol=1e-6
  )
  c = np.asarray(_comm_d(big, other, other, big))
  assert np.all(np.isfinite(c))
  np.testing.assert_allclose(c, [2 * math.log(2), 2e4, 2e4, 2 * math.log(2)], rtol=1e-6)
  grads = jax.jit(
      jax.grad(
          lambda r, f: (losses.discriminator_loss(r, f) + losses.generator_loss(f)).sum(),
          argnums=(0, 1),
      )
  )(big, other)
  chex.assert_tree_all_finite(grads)
  np.testing.assert_allclose(np.asarray(grads[0]), [0.0, -1.0, 0.0, -1.0], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Communication losses, Eq. (12).


def test_communication_discriminator_loss_matches_hand_computed_values():
  """softplus(own_1 - other_1) + softplus(own_2 - other_2) = -log sigma(other_1 - own_1) -
  log sigma(other_2 - own_2)."""
  own1, other1, own2, other2 = 0.5, -1.0, 2.0, 0.25
  want = _softplus(own1 - other1) + _softplus(own2 - other2)
  got = float(_comm_d(*(jnp.array([v]) for v in (own1, other1, own2, other2)))[0])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  sigma = lambda x: 1 / (1 + math.exp(-x))
  np.testing.assert_allclose(
      got, -math.log(sigma(other1 - own1)) - math.log(sigma(other2 - own2)), rtol=1e-6
  )
  # Equal logits: 2 log 2.
  np.testing.assert_allclose(
      np.asarray(_comm_d(*(jnp.full(3, 0.7),) * 4)), 2 * math.log(2), rtol=1e-6
  )


def _comm_logits(seed, b=7):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.normal(scale=2.0, size=b), jnp.float32) for _ in range(4)]


def test_communication_generator_loss_matches_hand_computed_values():
  own1, other1, own2, other2 = 0.5, -1.0, 2.0, 0.25
  args = [jnp.array([v]) for v in (own1, other1, own2, other2)]
  np.testing.assert_allclose(
      float(_comm_g(*args)[0]), _softplus(other1 - own1) + _softplus(other2 - own2), rtol=1e-6
  )
  np.testing.assert_allclose(
      float(_comm_g(*args, saturating=True)[0]),
      -_softplus(own1 - other1) - _softplus(own2 - other2),
      rtol=1e-6,
  )


def test_saturating_communication_generator_loss_is_minus_the_discriminator_loss():
  logits = _comm_logits(0)
  np.testing.assert_array_equal(
      np.asarray(_comm_g(*logits, saturating=True)), -np.asarray(_comm_d(*logits))
  )
  # The non-saturating form is not zero-sum; it swaps own and other instead:
  # D loss - G_ns loss = (own_1 - other_1) + (own_2 - other_2) since softplus(x) - softplus(-x) = x.
  own1, other1, own2, other2 = logits
  np.testing.assert_allclose(
      np.asarray(_comm_d(*logits) - _comm_g(*logits)),
      np.asarray(own1 - other1 + own2 - other2),
      rtol=1e-5,
      atol=1e-5,
  )
  np.testing.assert_allclose(
      np.asarray(_comm_g(*logits)), np.asarray(_comm_d(other1, own1, other2, own2)), rtol=1e-6
  )


def test_communication_losses_are_symmetric_in_the_two_samples():
  """Swapping the roles of (x1; S1, T1) and (x2; S2, T2) leaves both losses unchanged; swapping
  own and other logits (a different problem) changes them."""
  own1, other1, own2, other2 = _comm_logits(1)
  d = np.asarray(_comm_d(own1, other1, own2, other2))
  np.testing.assert_allclose(np.asarray(_comm_d(own2, other2, own1, other1)), d, rtol=1e-6)
  for sat in (True, False):
    np.testing.assert_allclose(
        np.asarray(_comm_g(own2, other2, own1, other1, saturating=sat)),
        np.asarray(_comm_g(own1, other1, own2, other2, saturating=sat)),
        rtol=1e-6,
    )
  assert not np.allclose(np.asarray(_comm_d(other1, own1, other2, own2)), d)


# ----------------------------------------------------------------------------------------------
# R1 penalty with an analytic logits function: f(x) = sum(sin(x) * w) per example.


def _sin_logits(w):
  return lambda x: jnp.sum(jnp.sin(x) * w, axis=(1, 2))


def _sin_problem():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(3, 5, 4)))
  w = jnp.asarray(rng.normal(size=(5, 4)))
  return x, w


@pytest.mark.usefixtures("x64")
def test_r1_penalty_of_an_analytic_function():
  """weight / 2 * ||cos(x) w||^2 per example, and the logits f(x) themselves."""
  x, w = _sin_problem()
  r1 = jax.jit(lambda x, w: losses.r1_penalty(_sin_logits(w), x, weight=10.0))
  penalty, logits = r1(x, w)
  xn, wn = np.asarray(x), np.asarray(w)
  assert penalty.shape == (3,) and penalty.dtype == jnp.float64
  np.testing.assert_allclose(
      np.asarray(penalty), 5.0 * np.sum((np.cos(xn) * wn) ** 2, axis=(1, 2)), rtol=1e-12
  )
  np.testing.assert_allclose(np.asarray(logits), np.sum(np.sin(xn) * wn, axis=(1, 2)), rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_r1_penalty_matches_central_finite_differences():
  """The squared norm of a central finite-difference gradient, coordinate by coordinate."""
  x, w = _sin_problem()
  f = _sin_logits(w)
  xn = np.asarray(x)
  eps = 1e-5
  fd = np.zeros_like(xn)
  for idx in np.ndindex(xn.shape[1:]):
    step = np.zeros_like(xn)
    step[(slice(None),) + idx] = eps
    fd[(slice(None),) + idx] = (np.asarray(f(xn + step)) - np.asarray(f(xn - step))) / (2 * eps)
  penalty, _ = jax.jit(lambda x: losses.r1_penalty(f, x, weight=2.0))(x)
  np.testing.assert_allclose(np.asarray(penalty), np.sum(fd**2, axis=(1, 2)), rtol=1e-8)


@pytest.mark.usefixtures("x64")
def test_r1_penalty_weight_factor_and_per_example_independence():
  """penalty = weight / 2 * ||grad||^2 (linear in weight, ||grad||^2 at weight 2); example i's
  penalty depends on example i only."""
  x, w = _sin_problem()
  r1 = jax.jit(lambda x, weight: losses.r1_penalty(_sin_logits(w), x, weight=weight)[0])
  sq_norm = np.asarray(r1(x, 2.0))
  np.testing.assert_allclose(np.asarray(r1(x, 50.0)), 25.0 * sq_norm, rtol=1e-12)
  np.testing.assert_allclose(np.asarray(r1(x, 0.0)), 0.0)
  moved = x.at[0].add(0.3)
  got = np.asarray(r1(moved, 2.0))
  assert abs(got[0] - sq_norm[0]) > 1e-3
  np.testing.assert_array_equal(got[1:], sq_norm[1:])
  # Each example alone gives the same penalty as in the batch.
  for i in range(3):
    np.testing.assert_allclose(np.asarray(r1(x[i : i + 1], 2.0)), sq_norm[i : i + 1], rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# R1 penalty through a small Discriminator (attention): first and second order.

_L, _P, _B = 16, 4, 2


@functools.cache
def _disc_problem():
  """A tiny float64 discriminator with random float64 parameters, inputs, (S, T) masks, and the
  jitted functions the tests share (each compiles once; call under the x64 fixture only).

  Returns (params, x, source, target, r1, logits_and_fd_grads): r1(params, x, weight) ->
  (penalty, logits); logits_and_fd_grads(params, x) -> (logits [B], central-difference input
  gradients [B, L, P]). The discriminator still rounds its attention logits and its output to
  float32, so the finite differences use steps and tolerances for float32 precision."""
  disc = Discriminator(_L, _P, dim=32, depth=1, num_heads=2, mlp_ratio=2.0, dtype=jnp.float64)
  key = _key(0)
  x = jax.random.uniform(key, (_B, _L, _P), jnp.float64, -1.0, 1.0)
  source, target = tasks.user_masks(
      np.array(
          [
              [1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
              [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
          ],
          bool,
      ),
      np.array(
          [
              [0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 1],
              [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1],
          ],
          bool,
      ),
  )
  # Random float64 parameters of init's shapes (compiling init would cost seconds): LayerNorm
  # scales 1 + N(0, 0.1^2), everything else N(0, 0.2^2).
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.asarray(
          (path[-1].key == "scale")
          + rng.normal(scale=0.1 if path[-1].key == "scale" else 0.2, size=leaf.shape)
      ),
      jax.eval_shape(disc.init, key, x, source, target),
  )

  @jax.jit
  def r1(p, x, weight):
    return losses.r1_penalty(lambda y: disc.apply(p, y, source, target), x, weight=weight)

  n, eps = _L * _P, _FD_EPS
  steps = eps * jnp.eye(n, dtype=x.dtype).reshape(n, _L, _P)

  @jax.jit
  def logits_and_fd_grads(p, x):
    plus = (x[:, None] + steps[None]).reshape(-1, _L, _P)
    minus = (x[:, None] - steps[None]).reshape(-1, _L, _P)
    s = jnp.concatenate([source] + [jnp.repeat(source, n, axis=0)] * 2)
    t = jnp.concatenate([target] + [jnp.repeat(target, n, axis=0)] * 2)
    out = disc.apply(p, jnp.concatenate([x, plus, minus]), s, t)
    logits, plus, minus = out[:_B], out[_B : _B + _B * n], out[_B + _B * n :]
    return logits, ((plus - minus) / (2 * eps)).reshape(_B, _L, _P)

  return params, x, source, target, r1, logits_and_fd_grads


_FD_EPS = 1e-3


@pytest.mark.usefixtures("x64")
def test_r1_penalty_through_discriminator_matches_finite_differences():
  """||d f / d x||^2 of a discriminator by central differences over every input coordinate;
  the logits returned are the discriminator's; positions outside S u T have zero gradient."""
  params, x, source, target, r1, logits_and_fd_grads = _disc_problem()
  penalty, logits = r1(params, x, 4.0)
  want_logits, grads = logits_and_fd_grads(params, x)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(want_logits), rtol=1e-6)
  grads = np.asarray(grads)
  outside = ~np.asarray(source | target)
  assert outside.any() and np.all(grads[outside] == 0)
  assert np.all(np.asarray(penalty) > 1e-3)
  np.testing.assert_allclose(np.asarray(penalty), 2.0 * np.sum(grads**2, axis=(1, 2)), rtol=2e-3)
  # The weight / 2 factor.
  np.testing.assert_allclose(
      np.asarray(r1(params, x, 10.0)[0]), 2.5 * np.asarray(penalty), rtol=1e-12
  )
  # Examples are independent: moving example 0 leaves example 1's penalty and logit unchanged.
  moved_penalty, moved_logits = r1(params, x.at[0].add(0.5), 4.0)
  assert abs(float(moved_penalty[0] - penalty[0])) > 1e-6
  np.testing.assert_allclose(np.asarray(moved_penalty[1]), np.asarray(penalty[1]), rtol=1e-12)
  np.testing.assert_allclose(np.asarray(moved_logits[1]), np.asarray(logits[1]), rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_r1_penalty_parameter_gradient_matches_finite_difference():
  """jax.grad of the mean penalty with respect to the discriminator's parameters (grad of grad
  through attention) is finite and matches a central difference along a random direction."""
  params, x, _, _, r1, _ = _disc_problem()
  grads = jax.jit(jax.grad(lambda p, x: r1(p, x, 10.0)[0].mean()))(params, x)
  chex.assert_tree_all_finite(grads)
  leaves = jax.tree_util.tree_leaves(grads)
  # Every parameter receives a gradient but the two biases that only shift f by a constant
  # (the head's and the final LayerNorm's, which feeds the head linearly): d f / d x ignores them.
  for g in (grads["params"]["head"]["bias"], grads["params"]["encoder"]["ln_final"]["bias"]):
    np.testing.assert_array_equal(np.asarray(g), 0.0)
  assert sum(float(jnp.abs(g).max()) > 0 for g in leaves) == len(leaves) - 2
  # A random unit direction over all parameters.
  flat, unravel = ravel_pytree(params)
  direction = jax.random.normal(_key(1), flat.shape, flat.dtype)
  direction = direction / jnp.linalg.norm(direction)
  directional = float(jnp.dot(ravel_pytree(grads)[0], direction))
  eps = 1e-2  # large enough that the float32 rounding noise of the penalty stays small
  plus = float(r1(unravel(flat + eps * direction), x, 10.0)[0].mean())
  minus = float(r1(unravel(flat - eps * direction), x, 10.0)[0].mean())
  assert abs(directional) > 1e-2
  np.testing.assert_allclose(directional, (plus - minus) / (2 * eps), rtol=1e-3)


def test_reconstruction_loss_counts_only_targets_of_examples_with_a_source():
  rng = np.random.default_rng(0)
  fake = rng.normal(size=(3, 4, 5)).astype(np.float32)
  real = rng.normal(size=(3, 4, 5)).astype(np.float32)
  source = np.array(
      [
          [True, False, False, True],  # 2 target patches
          [False, False, False, False],  # joint generation: not counted
          [True, True, True, False],
      ]
  )  # 1 target patch
  err = np.abs(fake - real).mean(-1)
  expected = (err[0, 1] + err[0, 2] + err[2, 3]) / 3
  fn = jax.jit(losses.reconstruction_loss)
  per_example = fn(fake, real, source)  # [B] sums over patches
  np.testing.assert_allclose(per_example, [err[0, 1] + err[0, 2], 0.0, err[2, 3]], rtol=1e-6)
  counts = losses.reconstruction_counts(source)
  np.testing.assert_array_equal(counts, [2, 0, 1])
  # The batch mean over every counted patch, as the trainer reduces it.
  np.testing.assert_allclose(np.sum(per_example) / np.sum(counts), expected, rtol=1e-6)
  assert np.all(np.asarray(fn(fake, real, np.zeros((3, 4), bool))) == 0.0)  # no source anywhere
  assert np.all(np.asarray(fn(real, real, source)) == 0.0)
  # The gradient reaches only the counted patches.
  g = np.asarray(
      jax.grad(lambda f: jnp.sum(losses.reconstruction_loss(f, real, source)))(jnp.asarray(fake))
  )
  counted = ~source & source.any(1, keepdims=True)
  assert np.all(g[~counted] == 0) and np.all(np.abs(g[counted]) > 0)
  with pytest.raises(ValueError, match="fake and real must be"):
    losses.reconstruction_loss(fake, real[:, :3], source)


def test_mode_seeking_loss_matches_hand_computed_values():
  """1 / (mean|a - b| / mean|z_a - z_b| + eps), over the masked positions when a mask is given;
  identical draws give the largest value 1 / eps."""
  a = jnp.zeros((2, 3, 2))
  b = jnp.ones((2, 3, 2)).at[:, 0].set(3.0)  # |a - b| = 3 on position 0, 1 elsewhere
  z_a, z_b = jnp.zeros((2, 4)), jnp.full((2, 4), 2.0)
  fn = jax.jit(losses.mode_seeking_loss, static_argnames="eps")
  np.testing.assert_allclose(fn(a, b, z_a, z_b), 1 / ((10 / 6) / 2 + 1e-5), rtol=1e-6)
  mask = jnp.array([[True, False, False], [True, True, False]])
  np.testing.assert_allclose(
      fn(a, b, z_a, z_b, mask=mask), 1 / ((6 + 6 + 2) / 6 / 2 + 1e-5), rtol=1e-6
  )
  np.testing.assert_allclose(fn(a, a, z_a, z_b, eps=1e-3), 1e3, rtol=1e-6)
  # The gradient pushes the two draws apart.
  g = jax.grad(lambda x: losses.mode_seeking_loss(x, b, z_a, z_b))(a + 0.5)
  assert np.all(np.asarray(g)[np.asarray(b > a + 0.5)] > 0)


# ----------------------------------------------------------------------------------------------
# The per-example losses under chex's variants: the same hand-computed references, eager and
# jitted, and vmapped over the batch where a loss is per example (chex's variants have no vmap
# of their own, so the vmapped function is what each variant wraps).


class LossVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_eq8_losses_match_hand_computed_values(self):
    real = np.array(_LOGITS, np.float32)
    fake = np.array(_LOGITS[::-1], np.float32)
    want_d = [_softplus(-r) + _softplus(f) for r, f in zip(_LOGITS, _LOGITS[::-1])]
    want_sat = [-_softplus(f) for f in _LOGITS[::-1]]
    want_non_sat = [_softplus(-f) for f in _LOGITS[::-1]]
    saturating = functools.partial(losses.generator_loss, saturating=True)
    for vmap in (False, True):
      wrap = jax.vmap if vmap else (lambda fn: fn)
      d_loss = self.variant(wrap(losses.discriminator_loss))
      np.testing.assert_allclose(d_loss(real, fake), want_d, rtol=1e-6)
      np.testing.assert_allclose(self.variant(wrap(saturating))(fake), want_sat, rtol=1e-6)
      g_loss = self.variant(wrap(losses.generator_loss))
      np.testing.assert_allclose(g_loss(fake), want_non_sat, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_communication_losses_match_hand_computed_values(self):
    own1, other1, own2, other2 = 0.5, -1.0, 2.0, 0.25
    args = [jnp.array([v, 0.7]) for v in (own1, other1, own2, other2)]
    for vmap in (False, True):
      wrap = jax.vmap if vmap else (lambda fn: fn)
      comm_d = self.variant(wrap(losses.communication_discriminator_loss))
      np.testing.assert_allclose(
          comm_d(*args), [_softplus(own1 - other1) + _softplus(own2 - other2), 2 * math.log(2)]
      )
      comm_g = self.variant(wrap(losses.communication_generator_loss))
      np.testing.assert_allclose(
          comm_g(*args),
          [_softplus(other1 - own1) + _softplus(other2 - own2), 2 * math.log(2)],
          rtol=1e-6,
      )

  @chex.variants(with_jit=True, without_jit=True)
  def test_reconstruction_and_mode_seeking_match_hand_computed_values(self):
    rng = np.random.default_rng(0)
    fake, real = rng.normal(size=(2, 2, 3, 2)).astype(np.float32)
    source = np.array([[True, False, False], [False, False, False]])
    err = np.abs(fake - real).mean(-1)
    chex.assert_shape(err, (2, 3))
    per_example = self.variant(losses.reconstruction_loss)(fake, real, source)
    np.testing.assert_allclose(per_example, [err[0, 1] + err[0, 2], 0.0], rtol=1e-6)
    np.testing.assert_array_equal(self.variant(losses.reconstruction_counts)(source), [2, 0])
    a = jnp.zeros((2, 3, 2))
    b = jnp.ones((2, 3, 2)).at[:, 0].set(3.0)
    z_a, z_b = jnp.zeros((2, 4)), jnp.full((2, 4), 2.0)
    ms = self.variant(losses.mode_seeking_loss)
    np.testing.assert_allclose(ms(a, b, z_a, z_b), 1 / ((10 / 6) / 2 + 1e-5), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Shape checks at the entry points: a wrong shape fails at once (at trace time under jit) with
# a message that names the function and the argument, instead of broadcasting silently or
# failing deep inside.

_B4, _B4x1, _B3 = jnp.zeros(4), jnp.zeros((4, 1)), jnp.zeros(3)


@pytest.mark.parametrize(
    "call, match",
    [
        # Before: a silent [4, 4] loss.
        (lambda: losses.discriminator_loss(_B4, _B4x1), r"discriminator_loss: real_logits and"),
        # Before: TypeError "add got incompatible shapes for broadcasting: (4,), (3,)".
        (lambda: losses.discriminator_loss(_B4, _B3), r"discriminator_loss: .*same shape \[B\]"),
        (
            lambda: losses.communication_discriminator_loss(_B4, _B4x1, _B4, _B4),
            r"communication_discriminator_loss: own_logits_1, other_logits_1",
        ),
        (
            lambda: losses.communication_generator_loss(_B4, _B4, _B3, _B4, saturating=True),
            r"communication_generator_loss: own_logits_1",
        ),
        # Before: a silent penalty of the whole batch's summed logit.
        (
            lambda: losses.r1_penalty(jnp.sum, jnp.ones((3, 2)), weight=1.0),
            r"r1_penalty: logits_fn must map real_inputs \[B, ...\] to per-example logits \[B\]",
        ),
        (
            lambda: losses.mode_seeking_loss(
                jnp.ones((3, 4, 2)), jnp.ones((3, 4)), jnp.ones((3, 5)), jnp.zeros((3, 5))
            ),
            r"mode_seeking_loss: samples_a and samples_b must have the same shape",
        ),
        (
            lambda: losses.mode_seeking_loss(
                jnp.ones((3, 4, 2)), jnp.ones((3, 4, 2)), jnp.ones((3, 5)), jnp.zeros((3, 6))
            ),
            r"mode_seeking_loss: z_a and z_b must have the same shape",
        ),
        # Before: a silent loss with noises of another batch.
        (
            lambda: losses.mode_seeking_loss(
                jnp.ones((3, 4, 2)), jnp.ones((3, 4, 2)), jnp.ones((2, 5)), jnp.zeros((2, 5))
            ),
            r"mode_seeking_loss: samples_a \[B, ...\] and z_a \[B, Z\] must have the same B",
        ),
        (
            lambda: losses.mode_seeking_loss(
                jnp.ones((3, 4, 2)),
                jnp.ones((3, 4, 2)),
                jnp.ones((3, 5)),
                jnp.zeros((3, 5)),
                mask=jnp.ones((3, 2), bool),
            ),
            r"mode_seeking_loss: mask must be \[B, L\] for samples \[B, L, P\]",
        ),
        # Before: ValueError "axis 1 is out of bounds for array of dimension 1".
        (
            lambda: losses.reconstruction_counts(jnp.ones(3, bool)),
            r"reconstruction_counts: source must be bool \[B, L\]",
        ),
        # Before: ValueError "indices and arr must have the same number of dimensions; 4 vs. 3".
        (
            lambda: losses.permutation_lm(
                jnp.zeros((2, 3, 5)), jnp.zeros((2, 3, 1), int), jnp.ones((2, 3), bool)
            ),
            r"permutation_lm: tokens must be int \[B, L\] for logits \[B, L, V\]",
        ),
        # Before: a silent broadcast of one mask over the batch.
        (
            lambda: losses.permutation_lm(
                jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), int), jnp.ones(3, bool)
            ),
            r"permutation_lm: target_mask must be bool \[B, L\], the shape of tokens",
        ),
        (
            lambda: losses.permutation_lm(
                jnp.zeros((2, 3, 5)),
                jnp.zeros((2, 3), int),
                jnp.ones((2, 3), bool),
                vocab_mask=jnp.ones((3, 4), bool),
            ),
            r"permutation_lm: vocab_mask must be bool \[L, V\] or \[B, L, V\]",
        ),
        # The checks hold at trace time, under jit too.
        (
            lambda: jax.jit(losses.discriminator_loss)(_B4, _B4x1),
            r"Arrays have different shapes: \[\(4,\), \(4, 1\)\]",
        ),
    ],
)
def test_wrong_shapes_fail_at_the_entry_point_with_a_clear_message(call, match):
  with pytest.raises(AssertionError, match=match):
    call()
