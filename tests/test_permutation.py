"""bigjax.permutation (orders, XLNet masks), losses.permutation_lm (Eq. (15)) and
bigjax.multimodal (image tokens + label, classification and sampling with one model)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from bigjax import losses
from bigjax import multimodal
from bigjax import permutation
from bigjax.models.two_stream import TwoStreamTransformer
from conftest import rbg_key


def test_random_ranks_are_permutations_and_force_last():
  ranks = np.asarray(jax.jit(lambda k: permutation.random_ranks(k, 400, 6))(rbg_key(0)))
  assert ranks.dtype == np.int32
  np.testing.assert_array_equal(np.sort(ranks, axis=1), np.tile(np.arange(6), (400, 1)))
  # every position is first about equally often (uniform orders): chi-square, 5 dof
  counts = np.bincount(ranks.argmin(1), minlength=6)
  assert scipy.stats.chisquare(counts).pvalue > 1e-3
  forced = np.asarray(permutation.random_ranks(rbg_key(1), 200, 6, last_position=5, last_prob=1.0))
  assert np.all(forced[:, 5] == 5)
  half = np.asarray(permutation.random_ranks(rbg_key(2), 4000, 6, last_position=2, last_prob=0.5))
  # P(last) = 0.5 + 0.5 / 6 with a uniform order otherwise
  assert abs(np.mean(half[:, 2] == 5) - (0.5 + 0.5 / 6)) < 0.03
  with pytest.raises(ValueError, match="last_prob"):
    permutation.random_ranks(rbg_key(0), 2, 3, last_position=0, last_prob=1.5)
  with pytest.raises(ValueError, match="last_position"):
    permutation.random_ranks(rbg_key(0), 2, 3, last_position=3, last_prob=0.5)


def test_order_and_ranks_are_inverse():
  order = np.array([[2, 0, 3, 1]])
  ranks = np.asarray(permutation.ranks_from_order(order))
  np.testing.assert_array_equal(ranks, [[1, 3, 0, 2]])
  np.testing.assert_array_equal(np.asarray(permutation.order_from_ranks(ranks)), order)


class PermutationVariantsTest(chex.TestCase):
  """The masks and Eq. (15)'s loss against hand-computed values, eager and jitted
  (permutation_lm also vmapped over the batch: it is per example)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_permutation_mask_by_hand(self):
    mask_fn = self.variant(permutation.permutation_mask)
    # order z = (2, 0, 3, 1); targets {0, 3, 1} (2 is context)
    ranks = np.array([[1, 3, 0, 2]])
    target = np.array([[True, True, False, True]])
    got = np.asarray(mask_fn(ranks, target))[0].astype(int)
    expected = np.array(
        [
            [1, 1, 0, 1],  # 0 sees the context 2 only
            [0, 1, 0, 0],  # 1 (last) sees 2, 0, 3
            [1, 1, 0, 1],  # context sees no target
            [0, 1, 0, 1],
        ]
    )  # 3 sees 2, 0
    np.testing.assert_array_equal(got, expected)
    hidden = np.array([[False, False, False, True]])
    got = np.asarray(mask_fn(ranks, target, hidden_mask=hidden))[0]
    assert np.all(got[:, 3])

  @chex.variants(with_jit=True, without_jit=True)
  def test_permutation_lm_hand_value(self):
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]]]))
    tokens = np.array([[1, 2]])
    for vmap in (False, True):
      plm = self.variant(jax.vmap(losses.permutation_lm) if vmap else losses.permutation_lm)
      both = plm(logits, tokens, np.array([[True, True]]))
      np.testing.assert_allclose(np.asarray(both), [-np.log(0.25) - np.log(0.3)], rtol=1e-6)
      only_second = plm(logits, tokens, np.array([[False, True]]))
      np.testing.assert_allclose(np.asarray(only_second), [-np.log(0.3)], rtol=1e-6)
    # the vocabulary mask renormalises over the allowed ids: position 1 may take {1, 2}
    vocab = np.array([[True, True, True], [False, True, True]])
    masked = self.variant(functools.partial(losses.permutation_lm, vocab_mask=vocab))(
        logits, tokens, np.array([[True, True]])
    )
    np.testing.assert_allclose(np.asarray(masked), [-np.log(0.25) - np.log(0.3 / 0.9)], rtol=1e-6)
    grads = jax.grad(
        lambda l: losses.permutation_lm(l, tokens, np.array([[True, True]]), vocab_mask=vocab).sum()
    )(jnp.asarray(logits))
    assert np.all(np.isfinite(np.asarray(grads))) and np.asarray(grads)[0, 1, 0] == 0.0


_RANKS = np.array([[1, 3, 0, 2], [0, 1, 2, 3]])


@pytest.mark.parametrize(
    "call, match",
    [
        # Before: IndexError "Too many indices: array is 1-dimensional, but 2 were indexed".
        (
            lambda: permutation.permutation_mask(_RANKS[0], np.ones(4, bool)),
            r"permutation_mask: ranks must be int \[B, L\]",
        ),
        # Before: TypeError "or got incompatible shapes for broadcasting: (2, 4, 4), (2, 5, 1)".
        (
            lambda: permutation.permutation_mask(_RANKS, np.ones((2, 5), bool)),
            r"permutation_mask: target_mask must be bool \[B, L\], the shape of ranks",
        ),
        (
            lambda: permutation.permutation_mask(
                _RANKS, np.ones((2, 4), bool), hidden_mask=np.ones((2, 3), bool)
            ),
            r"permutation_mask: hidden_mask must be bool \[B, L\], the shape of ranks",
        ),
        # Before: ValueError "Incompatible shapes for broadcasting: shapes=[(2, 4), (), (2, 5)]".
        (
            lambda: permutation.task_ranks(
                jax.random.key(0), np.ones((2, 4), bool), np.ones((2, 5), bool)
            ),
            r"task_ranks: source_mask and target_mask must have the same shape",
        ),
        (
            lambda: permutation.task_permutation_mask(
                jax.random.key(0), np.zeros(4, bool), np.ones(4, bool)
            ),
            r"task_permutation_mask: source_mask and target_mask must be bool \[B, L\]",
        ),
        (
            lambda: jax.jit(permutation.permutation_mask)(_RANKS, np.ones((2, 5), bool)),
            r"Arrays have different shapes: \[\(2, 4\), \(2, 5\)\]",
        ),
    ],
)
def test_wrong_shapes_fail_at_the_entry_point_with_a_clear_message(call, match):
  with pytest.raises(AssertionError, match=match):
    call()


def test_check_permutation_mask():
  ranks = np.array([[1, 3, 0, 2]])
  target = np.array([[True, True, False, True]])
  good = np.asarray(permutation.permutation_mask(ranks, target))
  permutation.check_permutation_mask(good, target, length=4)
  permutation.check_permutation_mask(good.astype(np.int32), target)
  leaky = good.copy()
  leaky[0, 3, 3] = False
  with pytest.raises(ValueError, match=r"target position 3 of example 0 attend to itself"):
    permutation.check_permutation_mask(leaky, target)
  with pytest.raises(ValueError, match=r"\[B, L, L\]"):
    permutation.check_permutation_mask(good[:, :3], target)
  with pytest.raises(ValueError, match="0/1"):
    permutation.check_permutation_mask(good * 2, target)
  with pytest.raises(ValueError, match="expects 5"):
    permutation.check_permutation_mask(good, target, length=5)


def test_permutation_lm_on_a_tiny_model_is_the_chain_rule(x64):
  """Summed over all targets of one order, Eq. (15)'s terms give log p(x) of the model's own
  autoregressive factorisation along that order, computed here by hand from logits of L
  separate calls that each reveal only the prefix."""
  L, V = 5, 4
  model = TwoStreamTransformer(
      vocab_size=V, num_segments=1, max_length=L, width=8, depth=2, num_heads=2, dtype=jnp.float64
  )
  tokens = np.array([[3, 1, 0, 2, 1]])
  segments = np.zeros_like(tokens)
  ranks = np.array([[2, 0, 4, 1, 3]])  # order z = (1, 3, 0, 4, 2)
  target = np.ones_like(tokens, bool)
  perm = permutation.permutation_mask(ranks, target)
  params = jax.jit(model.init)(rbg_key(0), tokens, segments, perm)
  apply = jax.jit(model.apply)  # one wrapper: each new jax.jit traces the model again
  logits, _ = apply(params, tokens, segments, perm)
  got = float(losses.permutation_lm(logits, tokens, target)[0])
  by_hand = 0.0
  for pos in [1, 3, 0, 4, 2]:
    lp = scipy.special.log_softmax(np.asarray(logits)[0, pos])
    by_hand -= lp[tokens[0, pos]]
  np.testing.assert_allclose(got, by_hand, rtol=1e-12)
  # and each term only reads the prefix: scrambling everything at rank >= t leaves it unchanged
  for t, pos in enumerate([1, 3, 0, 4, 2]):
    scrambled = np.where(ranks >= t, (tokens + 1) % V, tokens)
    other, _ = apply(params, scrambled, segments, perm)
    np.testing.assert_allclose(np.asarray(other)[0, pos], np.asarray(logits)[0, pos], rtol=1e-12)


LAYOUT = multimodal.Layout(num_codes=6, num_image_tokens=4, num_classes=3)


def test_layout_join_segments_vocab():
  assert (LAYOUT.length, LAYOUT.label_position, LAYOUT.vocab_size) == (5, 4, 9)
  tokens = np.asarray(multimodal.join(np.array([[0, 5, 2, 1]]), np.array([2]), LAYOUT))
  np.testing.assert_array_equal(tokens, [[0, 5, 2, 1, 8]])
  np.testing.assert_array_equal(np.asarray(multimodal.segment_ids(LAYOUT, 1)), [[0, 0, 0, 0, 1]])
  mask = np.asarray(multimodal.vocab_mask(LAYOUT))
  assert mask.shape == (5, 9)
  assert np.all(mask[:4, :6]) and not mask[:4, 6:].any()
  assert np.all(mask[4, 6:]) and not mask[4, :6].any()


def test_bad_tokens_and_labels():
  np.testing.assert_array_equal(
      multimodal.check_image_tokens(np.zeros((2, 2, 2), np.int64), LAYOUT), np.zeros((2, 4))
  )
  with pytest.raises(ValueError, match=r"image token 6 is outside the codebook \[0, 6\)"):
    multimodal.check_image_tokens(np.array([[0, 6, 1, 2]]), LAYOUT)
  with pytest.raises(ValueError, match="must have 4 tokens"):
    multimodal.check_image_tokens(np.zeros((1, 5), np.int32), LAYOUT)
  with pytest.raises(TypeError, match="integer"):
    multimodal.check_image_tokens(np.zeros((1, 4)), LAYOUT)
  with pytest.raises(ValueError, match=r"label 3 is outside 0..2"):
    multimodal.check_labels(np.array([0, 3]), LAYOUT)
  with pytest.raises(ValueError, match=r"label -1"):
    multimodal.check_labels(np.array([-1]), LAYOUT)


def _tiny_model():
  model = TwoStreamTransformer(
      vocab_size=LAYOUT.vocab_size,
      num_segments=2,
      max_length=LAYOUT.length,
      width=16,
      depth=1,
      num_heads=2,
  )
  tokens = jnp.zeros((2, LAYOUT.length), jnp.int32)
  params = jax.jit(model.init)(
      rbg_key(0),
      tokens,
      multimodal.segment_ids(LAYOUT, 2),
      jnp.zeros((2, LAYOUT.length, LAYOUT.length), bool),
  )
  return model, params


def test_label_log_probs_is_the_label_query_after_all_images():
  model, params = _tiny_model()
  apply = jax.jit(model.apply)
  images = np.array([[0, 1, 2, 3], [5, 4, 3, 2]])
  for all_targets in (True, False):
    got = np.asarray(
        multimodal.label_log_probs(
            model.apply, params, images, rbg_key(1), layout=LAYOUT, all_targets=all_targets
        )
    )
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-5)
    # by hand: one order (the same key split) with the label last
    key = jax.random.split(rbg_key(1), 1)[0]
    ranks = permutation.random_ranks(key, 2, 5, last_position=4, last_prob=1.0)
    target = np.ones((2, 5), bool) if all_targets else np.arange(5) == 4
    target = np.broadcast_to(target, (2, 5))
    tokens = multimodal.join(images, np.zeros(2, np.int32), LAYOUT)
    logits, _ = apply(
        params,
        tokens,
        multimodal.segment_ids(LAYOUT, 2),
        permutation.permutation_mask(ranks, target),
    )
    expected = scipy.special.log_softmax(np.asarray(logits)[:, 4, 6:], axis=-1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # with T = {label} the image tokens are bidirectional context: the order does not matter
  a = multimodal.label_log_probs(
      model.apply, params, images, rbg_key(2), layout=LAYOUT, all_targets=False, num_orders=3
  )
  np.testing.assert_allclose(np.asarray(a), got, rtol=1e-5, atol=1e-6)


def test_sample_keeps_given_tokens_and_respects_modalities():
  model, params = _tiny_model()
  tokens = np.asarray(multimodal.join(np.array([[1, 2, 3, 4]] * 6), np.array([2] * 6), LAYOUT))
  given = np.zeros((6, 5), bool)
  given[:2, 4] = True  # label-conditioned
  given[2:4, :2] = True  # completion of the first two tokens
  fn = jax.jit(lambda p, t, g, k: multimodal.sample(model.apply, p, t, g, k, layout=LAYOUT))
  out = np.asarray(fn(params, tokens, given, rbg_key(3)))
  np.testing.assert_array_equal(out[given], tokens[given])
  assert np.all(out[:, :4] < 6) and np.all(out[:, 4] >= 6)
  again = np.asarray(fn(params, tokens, given, rbg_key(3)))
  np.testing.assert_array_equal(out, again)
  raster = np.asarray(
      multimodal.sample(
          model.apply,
          params,
          tokens,
          given,
          rbg_key(3),
          layout=LAYOUT,
          order="raster",
          temperature=0.5,
      )
  )
  np.testing.assert_array_equal(raster[given], tokens[given])
  for bad in (0.0, -0.5, float("nan")):  # not a NaN draw later
    with pytest.raises(ValueError, match="temperature must be > 0"):
      multimodal.sample(
          model.apply, params, tokens, given, rbg_key(3), layout=LAYOUT, temperature=bad
      )


def test_sample_draws_from_the_model_distribution():
  """One free position: the empirical frequencies of many draws match the model's softmax."""
  model, params = _tiny_model()
  n = 3000
  tokens = np.tile(
      np.asarray(multimodal.join(np.array([[1, 2, 3, 4]]), np.array([1]), LAYOUT)), (n, 1)
  )
  given = np.ones((n, 5), bool)
  given[:, 2] = False
  out = np.asarray(
      jax.jit(lambda p, t, g, k: multimodal.sample(model.apply, p, t, g, k, layout=LAYOUT))(
          params, tokens, given, rbg_key(4)
      )
  )
  ranks = multimodal.given_ranks(rbg_key(0), given[:1])
  logits, _ = jax.jit(model.apply)(
      params,
      tokens[:1],
      multimodal.segment_ids(LAYOUT, 1),
      permutation.permutation_mask(ranks, np.ones((1, 5), bool)),
  )
  probs = scipy.special.softmax(np.asarray(logits, np.float64)[0, 2, :6])
  probs /= probs.sum()
  counts = np.bincount(out[:, 2], minlength=6)
  assert scipy.stats.chisquare(counts, probs * n).pvalue > 1e-3


def test_sample_with_label_guidance_draws_from_the_guided_distribution():
  """One free position with the label given: draws follow softmax((1 + w) log p(x | rest, y)
  - w log p(x | rest)), the second read with the label hidden; without a given label, guidance
  changes nothing."""
  model, params = _tiny_model()
  n, w = 3000, 2.0
  tokens = np.tile(
      np.asarray(multimodal.join(np.array([[1, 2, 3, 4]]), np.array([1]), LAYOUT)), (n, 1)
  )
  given = np.ones((n, 5), bool)
  given[:, 2] = False
  fn = jax.jit(
      lambda p, t, g, k: multimodal.sample(model.apply, p, t, g, k, layout=LAYOUT, guidance=w)
  )
  out = np.asarray(fn(params, tokens, given, rbg_key(4)))
  ranks = multimodal.given_ranks(rbg_key(0), given[:1])
  mask = permutation.permutation_mask(ranks, np.ones((1, 5), bool))
  hidden = np.asarray(mask) | (np.arange(5) == 4)[None, None, :]
  segments = multimodal.segment_ids(LAYOUT, 1)
  apply = jax.jit(model.apply)
  cond = scipy.special.log_softmax(
      np.asarray(apply(params, tokens[:1], segments, mask)[0], np.float64)[0, 2, :6]
  )
  uncond = scipy.special.log_softmax(
      np.asarray(apply(params, tokens[:1], segments, hidden)[0], np.float64)[0, 2, :6]
  )
  assert np.abs(cond - uncond).max() > 0.05  # the label matters to this position
  probs = scipy.special.softmax((1 + w) * cond - w * uncond)
  counts = np.bincount(out[:, 2], minlength=6)
  assert scipy.stats.chisquare(counts, probs * n).pvalue > 1e-3
  # no given label: identical draws with and without guidance
  free = np.zeros((4, 5), bool)
  plain = multimodal.sample(model.apply, params, tokens[:4], free, rbg_key(5), layout=LAYOUT)
  guided = multimodal.sample(
      model.apply, params, tokens[:4], free, rbg_key(5), layout=LAYOUT, guidance=w
  )
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(guided))
  with pytest.raises(ValueError, match="guidance"):
    multimodal.sample(
        model.apply, params, tokens[:4], free, rbg_key(5), layout=LAYOUT, guidance=-1.0
    )


def test_given_ranks():
  given = np.array([[True, False, False, True, True]])
  ranks = np.asarray(multimodal.given_ranks(rbg_key(0), given))
  assert ranks[0, 4] == 0  # the label first among the given
  assert set(ranks[0, [0, 3]]) == {1, 2} and set(ranks[0, [1, 2]]) == {3, 4}
  raster = np.asarray(multimodal.given_ranks(rbg_key(0), given, order="raster"))
  np.testing.assert_array_equal(raster, [[1, 3, 4, 2, 0]])
  with pytest.raises(ValueError, match="order"):
    multimodal.given_ranks(rbg_key(0), given, order="zigzag")


def test_raster_ranks_move_one_position_first_or_last():
  np.testing.assert_array_equal(permutation.raster_ranks(5, 4, first=True), [1, 2, 3, 4, 0])
  np.testing.assert_array_equal(permutation.raster_ranks(5, 4, first=False), [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(permutation.raster_ranks(5, 1, first=True), [1, 0, 2, 3, 4])
  np.testing.assert_array_equal(permutation.raster_ranks(5, 1, first=False), [0, 4, 1, 2, 3])


def test_mixed_orders_mix_classification_and_lm_tasks():
  length, label = 6, 5
  ranks, target, classify = permutation.mixed_orders(
      rbg_key(0),
      4000,
      length,
      label_position=label,
      classify_prob=0.3,
      label_last_prob=0.5,
      raster_prob=0.5,
  )
  ranks, target, classify = (np.asarray(a) for a in (ranks, target, classify))
  assert (np.sort(ranks, 1) == np.arange(length)).all()  # every row an order
  np.testing.assert_allclose(classify.mean(), 0.3, atol=0.03)
  # Classification: the label alone is a target, last in the order; LM tasks: all targets.
  assert (target[classify] == (np.arange(length) == label)).all()
  assert (ranks[classify, label] == length - 1).all() and target[~classify].all()
  lm = ranks[~classify]
  np.testing.assert_allclose(np.mean(lm[:, label] == length - 1), 0.5 + 0.5 / length / 2, atol=0.04)
  raster = np.delete(lm, label, 1) == np.arange(length - 1)[None] + (lm[:, label] == 0)[:, None]
  assert 0.45 < raster.all(1).mean() < 0.6  # raster_prob, plus chance
  # classify_prob 1: the cross-entropy baseline, every example a classification task.
  _, target, classify = permutation.mixed_orders(
      rbg_key(1), 8, length, label_position=label, classify_prob=1.0
  )
  assert np.asarray(classify).all() and (np.asarray(target) == (np.arange(length) == label)).all()
  with pytest.raises(ValueError, match="raster_prob must be in"):
    permutation.mixed_orders(
        rbg_key(0), 2, length, label_position=label, classify_prob=0.5, raster_prob=1.5
    )
