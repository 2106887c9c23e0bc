"""Tests for bigjax.tasks: the (S, T) samplers' shapes, validity and laws, and the mask checks."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from bigjax import tasks
from conftest import rbg_key as _key

# The samplers as they are meant to be used: jitted, batch_size and length static.
_JITTED = {name: jax.jit(fn, static_argnums=(1, 2)) for name, fn in tasks.SAMPLERS.items()}
_biglearn = _JITTED["biglearn"]

# Compiling a Beta sampler costs seconds on a small CPU, once per shape and, under jit, per Beta
# parameter. So the jitted samplers run at one shape [_BIG_B, _BIG_L] (shared by the validity, jit
# and law tests), and the other calls are eager with batch size _BIG_B: eager calls reuse one
# compiled jax.random.beta for every (a, b) at that batch size.
_BIG_B, _BIG_L = 10000, 32
_NO_BETA = ("joint", "mask_and_predict", "next_token", "permutation")

# Samplers whose masks depend on the key (joint ignores it).
_RANDOM_SAMPLERS = ("biglearn", "mask_and_predict", "next_token", "permutation", "initial_portion")


def _np(masks):
  return tuple(np.asarray(m) for m in masks)


def _assert_valid(source, target, batch_size, length):
  """bool [B, L], disjoint, T non-empty in every row."""
  chex.assert_type((source, target), bool)
  chex.assert_shape((source, target), (batch_size, length))
  assert not np.any(source & target)
  assert np.all(target.any(-1))


def _chi_square_pvalue(observed, expected_probs, min_expected=5.0):
  """p-value of a chi-square goodness-of-fit test, pooling adjacent bins until each expects at
  least `min_expected` counts (the last pool is merged into its predecessor if too small)."""
  observed = np.asarray(observed, float)
  expected = np.asarray(expected_probs, float) * observed.sum()
  assert abs(np.sum(expected_probs) - 1) < 1e-9
  obs_pools, exp_pools, o, e = [], [], 0.0, 0.0
  for oi, ei in zip(observed, expected):
    o, e = o + oi, e + ei
    if e >= min_expected:
      obs_pools.append(o)
      exp_pools.append(e)
      o, e = 0.0, 0.0
  if e > 0 or o > 0:
    obs_pools[-1] += o
    exp_pools[-1] += e
  assert len(obs_pools) >= 3
  return scipy.stats.chisquare(obs_pools, exp_pools).pvalue


def _floor_pmf(length, a, b, size=None):
  """Exact pmf of min(floor(r n), n - 1) on 0..n-1 for r ~ Beta(a, b), n = `size` (default L)."""
  n = length if size is None else size
  # floor(r n) = k for r in [k/n, (k+1)/n); r = 1 (the cap) has probability 0.
  return np.diff(scipy.stats.beta(a, b).cdf(np.arange(n + 1) / n))


def _ceil_pmf(n, a, b):
  """Exact pmf of ceil(r n) on 1..n (index k - 1) for r ~ Beta(a, b) (r = 0 has measure 0)."""
  return np.diff(scipy.stats.beta(a, b).cdf(np.arange(n + 1) / n))


def _biglearn_laws(length, sa, sb, ta, tb):
  """Exact pmf of |S| [L], of the leftover |L minus (S u T)| [L], and E[|T| / |L minus S|]."""
  p_s = _floor_pmf(length, sa, sb)
  p_left = np.zeros(length)
  mean_ratio = 0.0
  for s, ps in enumerate(p_s):
    n = length - s
    p_t = _ceil_pmf(n, ta, tb)  # |T| = k with prob p_t[k - 1]
    k = np.arange(1, n + 1)
    p_left[n - k] += ps * p_t
    mean_ratio += ps * np.sum(p_t * k / n)
  return p_s, p_left, mean_ratio


# ----------------------------------------------------------------------------------------------
# Every sampler: shapes, validity, jit.

_VALIDITY_CASES = (
    [(name, _BIG_B, _BIG_L, "jit") for name in sorted(tasks.SAMPLERS)]
    + [(name, _BIG_B, 1, "eager") for name in sorted(tasks.SAMPLERS)]
    + [(name, b, length, "jit") for name in _NO_BETA for b, length in ((1, 1), (1, 3), (3, 5))]
)


@pytest.mark.parametrize("name, batch_size, length, mode", _VALIDITY_CASES)
def test_sampler_masks_are_valid(name, batch_size, length, mode):
  """bool [B, L] masks, S and T disjoint, T non-empty in every row, also at L = 1 and B = 1."""
  fn = _JITTED[name] if mode == "jit" else tasks.SAMPLERS[name]
  source, target = _np(fn(_key(batch_size + 10 * length), batch_size, length))
  _assert_valid(source, target, batch_size, length)
  if length == 1:  # the only valid task at L = 1: nothing given, the one position drawn
    assert not source.any() and target.all()


@pytest.mark.parametrize("name", sorted(tasks.SAMPLERS))
def test_sampler_jit_matches_eager(name):
  """Jitted (static B, L) and eager calls give identical masks for the same key."""
  key = _key(3)
  eager = _np(tasks.SAMPLERS[name](key, _BIG_B, _BIG_L))
  jitted = _np(_JITTED[name](key, _BIG_B, _BIG_L))
  chex.assert_trees_all_equal(eager, jitted)


@pytest.mark.parametrize("name", ["next_token", "mask_and_predict"])
def test_sampler_jit_with_partial_bound_sizes(name):
  """batch_size and length bound by functools.partial are static as well."""
  bound = jax.jit(functools.partial(tasks.SAMPLERS[name], batch_size=_BIG_B, length=_BIG_L))
  chex.assert_trees_all_equal(_np(_JITTED[name](_key(3), _BIG_B, _BIG_L)), _np(bound(_key(3))))


@pytest.mark.parametrize("name", _RANDOM_SAMPLERS)
def test_sampler_keys_determine_masks(name):
  """The same key gives the same masks; different keys give different masks."""
  a = _np(_JITTED[name](_key(0), _BIG_B, _BIG_L))
  b = _np(_JITTED[name](_key(0), _BIG_B, _BIG_L))
  c = _np(_JITTED[name](_key(1), _BIG_B, _BIG_L))
  chex.assert_trees_all_equal(a, b)
  assert any(not np.array_equal(x, y) for x, y in zip(a, c))
  # Rows of one batch are different tasks, not copies of one.
  assert any(len(np.unique(m, axis=0)) > 1 for m in a)


def test_joint_is_the_full_generation_task():
  """joint: S empty and T every position, whatever the key."""
  source, target = _np(_JITTED["joint"](_key(5), _BIG_B, _BIG_L))
  assert not source.any() and target.all()


def test_samplers_work_under_vmap():
  """vmap over keys gives [K, B, L] masks, each slice the unbatched call for its key
  (threefry keys: the "rbg" implementation does not promise vmap-invariant bits)."""
  keys = jax.random.split(jax.random.key(4), 3)
  batched = _np(jax.jit(jax.vmap(lambda k: tasks.next_token(k, 5, 16)))(keys))
  chex.assert_shape(batched, (3, 5, 16))
  for i, k in enumerate(keys):
    chex.assert_trees_all_equal(tuple(m[i] for m in batched), _np(_JITTED["next_token"](k, 5, 16)))


# ----------------------------------------------------------------------------------------------
# biglearn: the laws of |S|, |T| and the positions.


@functools.cache
def _biglearn_sample(sa, sb, ta, tb):
  if (sa, sb, ta, tb) == (0.5, 3.0, 3.0, 0.5):  # the defaults: the jitted sampler
    return _np(_biglearn(_key(2024), _BIG_B, _BIG_L))
  return _np(
      tasks.biglearn(
          _key(2024),
          _BIG_B,
          _BIG_L,
          source_alpha=sa,
          source_beta=sb,
          target_alpha=ta,
          target_beta=tb,
      )
  )


@pytest.mark.parametrize(
    "params", [(0.5, 3.0, 3.0, 0.5), (2.0, 2.0, 1.0, 1.0)], ids=["table2", "custom"]
)
def test_biglearn_source_size_follows_floored_beta(params):
  """|S| = min(floor(r L), L - 1), r ~ Beta(source_alpha, source_beta): the exact pmf (chi-square)
  and its mean, computed from scipy.stats.beta; non-default parameters are honoured."""
  source, target = _biglearn_sample(*params)
  _assert_valid(source, target, _BIG_B, _BIG_L)
  sizes = source.sum(-1)
  p_s, _, _ = _biglearn_laws(_BIG_L, *params)
  counts = np.bincount(sizes, minlength=_BIG_L)
  assert counts.size == _BIG_L  # |S| <= L - 1
  assert _chi_square_pvalue(counts, p_s) > 1e-3
  exact_mean = np.sum(p_s * np.arange(_BIG_L)) / _BIG_L
  std = np.sqrt(np.sum(p_s * (np.arange(_BIG_L) / _BIG_L - exact_mean) ** 2) / _BIG_B)
  assert abs(sizes.mean() / _BIG_L - exact_mean) < 4 * std
  if params[:2] == (0.5, 3.0):
    # About the Beta(0.5, 3) mean 1/7 (Table 2), less the floor's half position.
    assert abs(exact_mean - (1 / 7 - 0.5 / _BIG_L)) < 0.003


@pytest.mark.parametrize(
    "params", [(0.5, 3.0, 3.0, 0.5), (2.0, 2.0, 1.0, 1.0)], ids=["table2", "custom"]
)
def test_biglearn_target_size_follows_ceiled_beta(params):
  """|T| = ceil(r |L minus S|), r ~ Beta(target_alpha, target_beta): the exact law of the leftover
  |L minus (S u T)| (chi-square) and the mean of |T| / |L minus S|."""
  source, target = _biglearn_sample(*params)
  rest = _BIG_L - source.sum(-1)
  num_target = target.sum(-1)
  assert np.all((num_target >= 1) & (num_target <= rest))
  _, p_left, mean_ratio = _biglearn_laws(_BIG_L, *params)
  counts = np.bincount(rest - num_target, minlength=_BIG_L)
  assert counts.size == _BIG_L
  assert _chi_square_pvalue(counts, p_left) > 1e-3
  ratio = num_target / rest
  assert abs(ratio.mean() - mean_ratio) < 4 * ratio.std() / np.sqrt(_BIG_B)
  if params[2:] == (3.0, 0.5):
    # About the Beta(3, 0.5) mean 6/7 (Table 2), raised by the ceiling.
    assert 6 / 7 < mean_ratio < 6 / 7 + 0.05


def test_biglearn_positions_are_uniform():
  """Every position is in S (and in T) with about equal frequency, and S is not a prefix."""
  source, target = _biglearn_sample(0.5, 3.0, 3.0, 0.5)
  for m in (source, target):
    freq = m.sum(0)
    np.testing.assert_allclose(freq / freq.mean(), 1.0, atol=5 / np.sqrt(freq.mean()))
  prefix = np.arange(_BIG_L)[None, :] < source.sum(-1, keepdims=True)
  assert np.mean(np.all(source == prefix, -1)) < 0.5


# ----------------------------------------------------------------------------------------------
# The special cases of Table 1.


@pytest.mark.parametrize(
    "ratio, length", [(0.75, 16), (0.5, 7), (0.1, 16), (1.0, 7), (0.75, 1), (0.5, 1), (0.05, 7)]
)
def test_mask_and_predict_has_a_fixed_number_of_targets(ratio, length):
  """T has exactly max(1, round(ratio L)) positions in every row, and S is its complement."""
  sampler = jax.jit(
      functools.partial(tasks.mask_and_predict, mask_ratio=ratio), static_argnums=(1, 2)
  )
  source, target = _np(sampler(_key(7), 50, length))
  _assert_valid(source, target, 50, length)
  np.testing.assert_array_equal(target.sum(-1), max(1, round(ratio * length)))
  np.testing.assert_array_equal(source, ~target)


def test_mask_and_predict_positions_are_uniform():
  """The default ratio 0.75: round(0.75 L) = 24 targets, every position equally often a target, and
  the target sets differ between rows."""
  source, target = _np(_JITTED["mask_and_predict"](_key(8), _BIG_B, _BIG_L))
  np.testing.assert_array_equal(target.sum(-1), 24)
  freq = target.sum(0)
  np.testing.assert_allclose(freq / (_BIG_B * 0.75), 1.0, atol=0.03)
  assert len(np.unique(target, axis=0)) > 0.9 * _BIG_B


def test_next_token_is_prefix_then_one_target():
  """S = {< t}, T = {t}, with t uniform on 0..L-1 (chi-square)."""
  source, target = _np(_JITTED["next_token"](_key(9), _BIG_B, _BIG_L))
  _assert_valid(source, target, _BIG_B, _BIG_L)
  np.testing.assert_array_equal(target.sum(-1), 1)
  t = target.argmax(-1)
  np.testing.assert_array_equal(source, np.arange(_BIG_L)[None, :] < t[:, None])
  uniform = np.full(_BIG_L, 1 / _BIG_L)
  assert _chi_square_pvalue(np.bincount(t, minlength=_BIG_L), uniform) > 1e-3


def test_permutation_has_one_target_and_uniform_source_size():
  """|T| = 1; |S| uniform on 0..L-1 (chi-square); S and T positions uniform."""
  source, target = _np(_JITTED["permutation"](_key(10), _BIG_B, _BIG_L))
  _assert_valid(source, target, _BIG_B, _BIG_L)
  np.testing.assert_array_equal(target.sum(-1), 1)
  uniform = np.full(_BIG_L, 1 / _BIG_L)
  sizes = np.bincount(source.sum(-1), minlength=_BIG_L)
  assert sizes.size == _BIG_L
  assert _chi_square_pvalue(sizes, uniform) > 1e-3
  t_pos = np.bincount(target.argmax(-1), minlength=_BIG_L)
  assert _chi_square_pvalue(t_pos, uniform) > 1e-3
  freq = source.sum(0)
  np.testing.assert_allclose(freq / freq.mean(), 1.0, atol=5 / np.sqrt(freq.mean()))
  # A random order, not raster order: S is not always a prefix.
  prefix = np.arange(_BIG_L)[None, :] < source.sum(-1, keepdims=True)
  assert np.mean(np.all(source == prefix, -1)) < 0.5


def test_initial_portion_is_a_prefix_with_floored_beta_size():
  """S = the first |S| positions, T all the others; |S| follows the floored Beta(0.5, 3)."""
  source, target = _np(_JITTED["initial_portion"](_key(11), _BIG_B, _BIG_L))
  _assert_valid(source, target, _BIG_B, _BIG_L)
  sizes = source.sum(-1)
  np.testing.assert_array_equal(source, np.arange(_BIG_L)[None, :] < sizes[:, None])
  np.testing.assert_array_equal(target, ~source)
  counts = np.bincount(sizes, minlength=_BIG_L)
  assert counts.size == _BIG_L
  assert _chi_square_pvalue(counts, _floor_pmf(_BIG_L, 0.5, 3.0)) > 1e-3


@pytest.mark.parametrize(
    "ratio, length, expected",
    [(0.0, 16, 0), (0.3, 16, 4), (0.5, 16, 8), (0.99, 16, 15), (0.5, 1, 0), (0.375, 64, 24)],
)
def test_initial_portion_fixed_ratio_gives_floor(ratio, length, expected):
  """A fixed source_ratio gives exactly min(floor(r L), L - 1) source positions in every row."""
  sampler = jax.jit(
      functools.partial(tasks.initial_portion, source_ratio=ratio), static_argnums=(1, 2)
  )
  source, target = _np(sampler(_key(12), 3, length))
  _assert_valid(source, target, 3, length)
  np.testing.assert_array_equal(source.sum(-1), expected)
  np.testing.assert_array_equal(source, np.broadcast_to(np.arange(length) < expected, (3, length)))
  np.testing.assert_array_equal(target, ~source)


# ----------------------------------------------------------------------------------------------
# resplit.
#
# One input batch [_BIG_B, 16] built in numpy, resplit eagerly (see _BIG_B above):
#   rows 0..1999      random disjoint (S, T) with positions outside S u T,
#   rows 2000..2003   a single-position union,
#   rows 2004..       U = the first 10 positions (S empty), for the law of |S2|.

_RS_B, _RS_L, _RS_U, _RS_RANDOM, _RS_SINGLE = _BIG_B, 16, 10, 2000, 4


@functools.cache
def _resplit_sample():
  rng = np.random.default_rng(0)
  source = np.zeros((_RS_B, _RS_L), bool)
  target = np.zeros((_RS_B, _RS_L), bool)
  labels = rng.integers(0, 3, (_RS_RANDOM, _RS_L))  # 0: outside, 1: S, 2: T
  labels[np.arange(_RS_RANDOM), rng.integers(0, _RS_L, _RS_RANDOM)] = 2  # T non-empty
  source[:_RS_RANDOM] = labels == 1
  target[:_RS_RANDOM] = labels == 2
  target[np.arange(_RS_RANDOM, _RS_RANDOM + _RS_SINGLE), [0, 5, 15, 7]] = True
  target[_RS_RANDOM + _RS_SINGLE :, :_RS_U] = True
  s2, t2 = _np(tasks.resplit(_key(14), jnp.asarray(source), jnp.asarray(target)))
  return source, target, s2, t2


def test_resplit_keeps_the_union():
  """S2 u T2 == S u T, S2 and T2 disjoint, T2 non-empty, nothing outside the union."""
  source, target, s2, t2 = _resplit_sample()
  _assert_valid(s2, t2, _RS_B, _RS_L)
  union = source | target
  np.testing.assert_array_equal(s2 | t2, union)
  assert (~union).any()  # the test really has positions outside the union
  # A new split, not the old one.
  assert not np.array_equal(s2[:_RS_RANDOM], source[:_RS_RANDOM])


def test_resplit_of_a_single_position_union():
  """|S u T| = 1: S2 is empty and T2 is that position."""
  _, target, s2, t2 = _resplit_sample()
  rows = slice(_RS_RANDOM, _RS_RANDOM + _RS_SINGLE)
  assert not s2[rows].any()
  np.testing.assert_array_equal(t2[rows], target[rows])


def test_resplit_source_size_law_and_positions():
  """|S2| = min(floor(r |U|), |U| - 1), r ~ Beta(0.5, 3) (chi-square), S2 uniform inside U."""
  _, _, s2, t2 = _resplit_sample()
  rows = slice(_RS_RANDOM + _RS_SINGLE, None)
  assert not (s2 | t2)[rows, _RS_U:].any()
  counts = np.bincount(s2[rows].sum(-1), minlength=_RS_U)
  assert counts.size == _RS_U
  assert _chi_square_pvalue(counts, _floor_pmf(_RS_L, 0.5, 3.0, size=_RS_U)) > 1e-3
  freq = s2[rows, :_RS_U].sum(0)
  np.testing.assert_allclose(freq / freq.mean(), 1.0, atol=5 / np.sqrt(freq.mean()))


# ----------------------------------------------------------------------------------------------
# Argument errors.


@pytest.mark.parametrize(
    "call, match",
    [
        pytest.param(
            lambda: tasks.biglearn(_key(0), 2, 4, source_alpha=0.0),
            r"source Beta parameters must both be > 0, got \(0.0, 3.0\)",
            id="source-alpha",
        ),
        pytest.param(
            lambda: tasks.biglearn(_key(0), 2, 4, target_beta=-1.0),
            r"target Beta parameters must both be > 0",
            id="target-beta",
        ),
        pytest.param(
            lambda: tasks.biglearn(_key(0), 2, 4, source_beta=float("nan")),
            r"source Beta parameters",
            id="nan-beta",
        ),
        pytest.param(
            lambda: tasks.initial_portion(_key(0), 2, 4, source_alpha=-0.5),
            r"source Beta parameters",
            id="initial-portion-beta",
        ),
        pytest.param(
            lambda: tasks.resplit(
                _key(0), jnp.zeros((1, 2), bool), jnp.ones((1, 2), bool), source_beta=0.0
            ),
            r"source Beta parameters",
            id="resplit-beta",
        ),
        *[
            pytest.param(
                lambda r=r: tasks.mask_and_predict(_key(0), 2, 4, mask_ratio=r),
                rf"mask_ratio must be in \(0, 1\], got {r}",
                id=f"mask-ratio-{r}",
            )
            for r in (0.0, 1.5, -0.2)
        ],
        *[
            pytest.param(
                lambda r=r: tasks.initial_portion(_key(0), 2, 4, source_ratio=r),
                rf"source_ratio must be in \[0, 1\).* got {r}",
                id=f"source-ratio-{r}",
            )
            for r in (1.0, 1.2, -0.1)
        ],
        pytest.param(
            lambda: tasks.biglearn(_key(0), 0, 4),
            r"batch_size and length must be positive",
            id="zero-batch",
        ),
        pytest.param(
            lambda: tasks.next_token(_key(0), 2, 0),
            r"batch_size and length must be positive",
            id="zero-length",
        ),
    ],
)
def test_sampler_arguments_are_checked(call, match):
  """Invalid Beta parameters, ratios and sizes raise ValueError with an informative message."""
  with pytest.raises(ValueError, match=match):
    call()


# ----------------------------------------------------------------------------------------------
# check_masks and user_masks.


def _bad_masks():
  s = np.zeros((2, 4), bool)
  t = np.ones((2, 4), bool)
  overlap = s.copy()
  overlap[1, 2] = True
  empty = t.copy()
  empty[1] = False
  return [
      pytest.param(
          overlap,
          t,
          r"S and T overlap at 1 position\(s\), the first at index " r"\(1, 2\)",
          id="overlap",
      ),
      pytest.param(
          s,
          empty,
          r"T is empty in 1 row\(s\), the first at batch index \(1,\)",
          id="empty-target-row",
      ),
      pytest.param(
          s.astype(np.int32),
          t.astype(np.int32),
          r"must be boolean arrays, got int32",
          id="int-masks",
      ),
      pytest.param(
          s,
          t.astype(np.float32),
          r"must be boolean arrays, got bool and float32",
          id="float-target",
      ),
      pytest.param(
          s, t[:, :3], r"same shape \[\.\.\., L\], got \(2, 4\) and \(2, 3\)", id="shape-mismatch"
      ),
      pytest.param(np.array(False), np.array(True), r"same shape", id="scalar-masks"),
  ]


@pytest.mark.parametrize("source, target, match", _bad_masks())
def test_check_masks_rejects_invalid_masks(source, target, match):
  """Overlap, an empty T row, non-boolean and mismatched masks: ValueError naming the problem."""
  with pytest.raises(ValueError, match=match):
    tasks.check_masks(source, target)


@pytest.mark.parametrize("source, target, match", _bad_masks())
def test_user_masks_rejects_invalid_masks(source, target, match):
  """user_masks runs the same checks."""
  with pytest.raises(ValueError, match=match):
    tasks.user_masks(source, target)


def test_check_masks_accepts_valid_masks():
  """Sampled masks pass, as numpy or jax arrays, [B, L] or [L]."""
  source, target = _np(_biglearn(_key(18), _BIG_B, _BIG_L))
  source, target = source[:8], target[:8]
  tasks.check_masks(source, target)
  tasks.check_masks(jnp.asarray(source), jnp.asarray(target))
  tasks.check_masks(source[0], target[0])


def test_user_masks_broadcasts_and_defaults_target_to_complement():
  """[L] masks broadcast to [B, L]; T defaults to the complement of S; [B, L] masks keep B."""
  source = np.array([True, False, False, True, False])
  s, t = tasks.user_masks(source, batch_size=3)
  assert isinstance(s, jax.Array) and s.dtype == jnp.bool_ and s.shape == (3, 5)
  np.testing.assert_array_equal(np.asarray(s), np.broadcast_to(source, (3, 5)))
  np.testing.assert_array_equal(np.asarray(t), np.broadcast_to(~source, (3, 5)))
  # Without batch_size an [L] mask becomes one row; an explicit T is kept.
  target = np.array([False, True, False, False, False])
  s, t = _np(tasks.user_masks(source, target))
  np.testing.assert_array_equal(s, source[None])
  np.testing.assert_array_equal(t, target[None])
  # [B, L] masks keep their rows; [1, L] broadcast; Python lists are accepted.
  rows = np.array([[True, False, False], [False, False, True]])
  s, t = _np(tasks.user_masks(rows))
  np.testing.assert_array_equal(s, rows)
  np.testing.assert_array_equal(t, ~rows)
  s, t = _np(tasks.user_masks([[False, True, False]], batch_size=4))
  np.testing.assert_array_equal(s, np.broadcast_to([False, True, False], (4, 3)))
  np.testing.assert_array_equal(t, np.broadcast_to([True, False, True], (4, 3)))


def test_user_masks_rejects_bad_batch_and_rank():
  """Masks with B rows cannot broadcast to another batch size; masks must be [L] or [B, L]."""
  rows = np.array([[True, False, False], [False, False, True]])
  with pytest.raises(ValueError, match=r"masks have 2 rows, cannot broadcast to batch_size=3"):
    tasks.user_masks(rows, batch_size=3)
  with pytest.raises(
      ValueError, match=r"masks must be \[L\] or \[B, L\], got shape " r"\(1, 2, 3\)"
  ):
    tasks.user_masks(rows[None])


def test_check_masks_rejects_empty_target_of_one_dimensional_masks():
  """An [L] mask whose T is empty (e.g. user_masks(all-True S) with the default complement)
  must be rejected like an empty [B, L] row."""
  with pytest.raises(ValueError, match="T is empty"):
    tasks.check_masks(np.zeros(4, bool), np.zeros(4, bool))
  with pytest.raises(ValueError, match="T is empty"):
    tasks.user_masks(np.ones(4, bool))


def test_user_masks_rejects_float_source_with_default_target():
  """A non-boolean S is rejected with the same ValueError whether or not T is given."""
  with pytest.raises(ValueError, match="must be boolean"):
    tasks.user_masks(np.array([0.0, 1.0, 0.0]))


def test_source_sets_have_the_asked_sizes_random_or_initial():
  # Random sets: every position equally likely (2,000 rows of 3 given out of 8).
  many = np.asarray(tasks.source_sets(_key(1), 2000, 8, 3))
  assert (many.sum(1) == 3).all()
  np.testing.assert_allclose(many.mean(0), 3 / 8, atol=0.04)
  assert len({r.tobytes() for r in many}) > 40  # of the 56 possible sets
  with pytest.raises(ValueError, match=r"num_source must be in \[0, 8\], got 9"):
    tasks.source_sets(_key(0), 2, 8, 9)


# ----------------------------------------------------------------------------------------------
# chex variants: the samplers whose masks are fixed by their arguments give the same masks eager
# and jitted (B, L static), at tiny shapes. They make batches, so there is no per-example vmap;
# vmap over keys is test_samplers_work_under_vmap. The Beta samplers (biglearn, resplit) are left
# out: compiling jax.random.beta costs seconds per shape (see _BIG_B above).


class SamplerVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_source_sets_have_the_asked_sizes(self):
    counts = jnp.array([0, 3, 8, 5])
    initial = jnp.array([False, True, False, False])
    s = np.asarray(
        self.variant(tasks.source_sets, static_argnums=(1, 2))(
            _key(0), 4, 8, counts, initial_portion=initial
        )
    )
    assert s.dtype == bool and s.shape == (4, 8)
    np.testing.assert_array_equal(s.sum(1), counts)
    np.testing.assert_array_equal(s[1], np.arange(8) < 3)  # the initial portion

  @chex.variants(with_jit=True, without_jit=True)
  def test_samplers_with_fixed_laws(self):
    """joint: S empty, T all; next_token: S = {< t}, T = {t}; initial_portion at r = 0.5: the
    first 3 of 6 positions; mask_and_predict at 0.5: 3 targets, S their complement."""
    source, target = _np(self.variant(tasks.joint, static_argnums=(1, 2))(_key(1), 3, 6))
    chex.assert_trees_all_equal((source, target), (np.zeros((3, 6), bool), np.ones((3, 6), bool)))
    source, target = _np(self.variant(tasks.next_token, static_argnums=(1, 2))(_key(2), 3, 6))
    _assert_valid(source, target, 3, 6)
    t = np.argmax(target, -1)
    np.testing.assert_array_equal(target.sum(-1), 1)
    np.testing.assert_array_equal(source, np.arange(6)[None] < t[:, None])
    initial = functools.partial(tasks.initial_portion, source_ratio=0.5)
    source, target = _np(self.variant(initial, static_argnums=(1, 2))(_key(3), 3, 6))
    np.testing.assert_array_equal(source, np.broadcast_to(np.arange(6) < 3, (3, 6)))
    np.testing.assert_array_equal(target, ~source)
    masked = functools.partial(tasks.mask_and_predict, mask_ratio=0.5)
    source, target = _np(self.variant(masked, static_argnums=(1, 2))(_key(4), 3, 6))
    np.testing.assert_array_equal(target.sum(-1), 3)
    np.testing.assert_array_equal(source, ~target)


@pytest.mark.parametrize(
    "call, match",
    [
        # Before: ValueError "not enough values to unpack (expected 2, got 1)".
        (
            lambda: tasks.resplit(_key(0), np.zeros(4, bool), np.ones(4, bool)),
            r"resplit: source_mask and target_mask must be bool \[B, L\]",
        ),
        # Before: TypeError "or got incompatible shapes for broadcasting: (2, 4), (2, 5)".
        (
            lambda: tasks.resplit(_key(0), np.zeros((2, 4), bool), np.ones((2, 5), bool)),
            r"resplit: source_mask and target_mask must have the same shape \[B, L\]",
        ),
        # Before: ValueError "Incompatible types for broadcasting: input type=int32[4] and
        # requested type=int32[3]".
        (
            lambda: tasks.source_sets(_key(0), 3, 4, jnp.array([1, 2, 3, 1])),
            r"source_sets: num_source must be a scalar or \[B\] = \[3\]",
        ),
        (
            lambda: tasks.source_sets(_key(0), 3, 4, 1, initial_portion=jnp.array([True, False])),
            r"source_sets: initial_portion must be a scalar or \[B\] = \[3\]",
        ),
        (
            lambda: jax.jit(tasks.resplit)(_key(0), np.zeros((2, 4), bool), np.ones((2, 5), bool)),
            r"Arrays have different shapes: \[\(2, 4\), \(2, 5\)\]",
        ),
    ],
)
def test_wrong_shapes_fail_at_the_entry_point_with_a_clear_message(call, match):
  with pytest.raises(AssertionError, match=match):
    call()
