"""Factorisation orders and XLNet permutation masks for Eq. (15) (paper App. E.1).

Permutation language modelling (Yang et al. 2019, XLNet) factorises p(x) along a random order z
of the L positions: log p(x) = sum_t log p(x_(z_t) | x_(z_<t)). Each term is a big-learning task
with S = {z_<t} and T = {z_t} (Eq. (15)). An order is stored as `ranks [B, L]`: ranks[b, i] is the
place of position i in example b's order (each row a permutation of 0..L-1), so that masks are
elementwise comparisons and no gather depends on the order.

A two-stream transformer (bigjax.models.two_stream) reads one dense mask per example:

  perm_mask[b, i, j] = True   means position i may NOT attend to position j

with XLNet's semantics (`_local_perm` in the original code): position j is hidden from i when j
is a target no earlier than i in the order (rank_i <= rank_j), or j is a target and i is not. Non-target positions are context:
they see each other in both directions and never see a target. A target sees the context and the
targets before it. So a target is hidden from itself: the query stream that predicts it never
sees its content, while the content stream always sees its own position.

All functions here are pure jax.numpy and work under jit and vmap; `check_permutation_mask` is the
host-side check for masks a user builds.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "random_ranks",
    "raster_ranks",
    "mixed_orders",
    "ranks_from_order",
    "order_from_ranks",
    "permutation_mask",
    "task_ranks",
    "task_permutation_mask",
    "check_permutation_mask",
]


def random_ranks(
    rng, batch_size: int, length: int, *, last_position: int | None = None, last_prob: float = 0.0
) -> jax.Array:
  """Uniformly random factorisation orders, optionally with one position forced last.

  Args:
    rng: PRNG key.
    batch_size: B.
    length: L.
    last_position: a position (e.g. the label token) that is put last in the order with
      probability `last_prob` (the other positions stay in uniformly random order); None: all
      orders uniform.
    last_prob: probability in [0, 1] of forcing `last_position` last, per example.

  Returns:
    int32 ranks [B, L]; each row a permutation of 0..L-1.
  """
  if int(batch_size) < 1 or int(length) < 1:
    raise ValueError(f"batch_size and length must be positive, got {batch_size}, {length}.")
  if not 0.0 <= float(last_prob) <= 1.0:
    raise ValueError(f"last_prob must be in [0, 1], got {last_prob}.")
  if last_position is not None and not 0 <= int(last_position) < length:
    raise ValueError(f"last_position must be in [0, {length}), got {last_position}.")
  k_order, k_last = jax.random.split(rng)
  scores = jax.random.uniform(k_order, (batch_size, length))
  if last_position is not None and last_prob > 0:
    forced = jax.random.bernoulli(k_last, last_prob, (batch_size,))
    # Uniform scores are < 1, so a score of 2 sorts last; the others keep a uniform order.
    scores = scores.at[:, int(last_position)].set(
        jnp.where(forced, 2.0, scores[:, int(last_position)])
    )
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1).astype(jnp.int32)


def raster_ranks(length: int, position: int, *, first: bool) -> jax.Array:
  """The raster order 0, 1, ..., L-1 with one position (e.g. the label token) moved first or
  last, the others keeping their raster order: int32 ranks [L]."""
  pos = jnp.arange(length)
  if first:
    return jnp.where(pos == position, 0, pos + (pos < position)).astype(jnp.int32)
  return jnp.where(pos == position, length - 1, pos - (pos > position)).astype(jnp.int32)


def mixed_orders(
    rng,
    batch_size: int,
    length: int,
    *,
    label_position: int,
    classify_prob: float,
    label_last_prob: float = 0.0,
    raster_prob: float = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A batch of Eq. (15) tasks mixing classification and permutation LM (App. E.1's q(z, t)).

  Per example, with probability `classify_prob` the classification task: S = every position
  but the label, T = {label} (the cut t = L of Eq. (15), the label last in the order).
  Otherwise a permutation LM task: every position a target, predicted from those before it in
  an order z that is uniformly random with the label forced last with probability
  `label_last_prob`, or, with probability `raster_prob`, the raster order with the label last
  (probability `label_last_prob`) or first.

  Args:
    rng: PRNG key.
    batch_size, length: B, L.
    label_position: the label token's position.
    classify_prob: the share of classification tasks (1: all, the cross-entropy baseline).
    label_last_prob: probability of the label last in an LM task's order.
    raster_prob: probability of the raster order in an LM task.

  Returns:
    (ranks int32 [B, L], target_mask bool [B, L], classify bool [B]).
  """
  for name, p in (
      ("classify_prob", classify_prob),
      ("label_last_prob", label_last_prob),
      ("raster_prob", raster_prob),
  ):
    if not 0.0 <= float(p) <= 1.0:
      raise ValueError(f"{name} must be in [0, 1], got {p}.")
  k_lm, k_cls, k_pick = jax.random.split(rng, 3)
  label_only = jnp.broadcast_to(jnp.arange(length) == label_position, (batch_size, length))
  label_last = random_ranks(k_cls, batch_size, length, last_position=label_position, last_prob=1.0)
  if classify_prob == 1.0:
    return label_last, label_only, jnp.ones((batch_size,), bool)
  lm = random_ranks(
      k_lm, batch_size, length, last_position=label_position, last_prob=label_last_prob
  )
  if raster_prob > 0:
    k_raster, k_first = jax.random.split(jax.random.fold_in(k_lm, 1))
    label_first = ~jax.random.bernoulli(k_first, label_last_prob, (batch_size,))
    raster = jnp.where(
        label_first[:, None],
        raster_ranks(length, label_position, first=True),
        raster_ranks(length, label_position, first=False),
    )
    use_raster = jax.random.bernoulli(k_raster, raster_prob, (batch_size,))
    lm = jnp.where(use_raster[:, None], raster, lm).astype(jnp.int32)
  classify = jax.random.bernoulli(k_pick, classify_prob, (batch_size,))
  ranks = jnp.where(classify[:, None], label_last, lm)
  target = jnp.where(classify[:, None], label_only, True)
  return ranks, target, classify


def ranks_from_order(order) -> jax.Array:
  """order [B, L] (order[b, t] = the position at step t) -> ranks [B, L] (its inverse)."""
  return jnp.argsort(order, axis=-1).astype(jnp.int32)


def order_from_ranks(ranks) -> jax.Array:
  """ranks [B, L] -> order [B, L] (order[b, t] = the position with rank t)."""
  return jnp.argsort(ranks, axis=-1).astype(jnp.int32)


def permutation_mask(ranks, target_mask, *, hidden_mask=None) -> jax.Array:
  """XLNet's permutation mask for an order and a target set.

  Args:
    ranks: int [B, L], each row a permutation of 0..L-1.
    target_mask: bool [B, L], the positions predicted (T). All True gives full permutation LM
      (every position predicted from those before it); the label alone gives classification.
    hidden_mask: optional bool [B, L], positions hidden from every position (neither S nor T of
      a big-learning task: their tokens must not influence anything).

  Returns:
    bool [B, L, L]: True where position i may not attend to position j, i.e. j is a target
    and i is a context position or comes no earlier than j (so every target is hidden from
    itself), or j is hidden.
  """
  ranks = jnp.asarray(ranks)
  target_mask = jnp.asarray(target_mask, bool)
  chex.assert_rank(
      ranks, 2, custom_message="permutation_mask: ranks must be int [B, L] (vmap for one example)"
  )
  chex.assert_equal_shape(
      [ranks, target_mask],
      custom_message="permutation_mask: target_mask must be bool [B, L], the shape of ranks",
  )
  if hidden_mask is not None:
    hidden_mask = jnp.asarray(hidden_mask, bool)
    chex.assert_shape(
        hidden_mask,
        ranks.shape,
        custom_message="permutation_mask: hidden_mask must be bool [B, L], the shape of ranks",
    )
  later = ranks[:, :, None] <= ranks[:, None, :]
  # A context position never sees a target, even one earlier in the order (XLNet puts the
  # targets last, where the two rules agree); otherwise a target could read itself through it.
  mask = target_mask[:, None, :] & (later | ~target_mask[:, :, None])
  if hidden_mask is not None:
    mask = mask | hidden_mask[:, None, :]
  return mask


def task_ranks(rng, source_mask, target_mask) -> jax.Array:
  """An order for a big-learning task (S, T), e.g. from bigjax.tasks: the positions of S first,
  then those of T, then the rest, each group in uniformly random order.

  With `task_permutation_mask`, the targets are then predicted autoregressively in that random
  order, so the summed log-likelihood of T is log p(x_T | x_S) (the chain rule), Eq. (15).

  Args:
    rng: PRNG key.
    source_mask, target_mask: bool [B, L], disjoint.

  Returns:
    int32 ranks [B, L].
  """
  source_mask = jnp.asarray(source_mask, bool)
  target_mask = jnp.asarray(target_mask, bool)
  # Masks of different shapes would broadcast into an order over positions that do not exist.
  chex.assert_equal_shape(
      [source_mask, target_mask],
      custom_message="task_ranks: source_mask and target_mask must have the same shape [B, L]",
  )
  group = jnp.where(source_mask, 0.0, jnp.where(target_mask, 1.0, 2.0))
  scores = group + jax.random.uniform(rng, source_mask.shape)
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1).astype(jnp.int32)


def task_permutation_mask(rng, source_mask, target_mask) -> tuple[jax.Array, jax.Array]:
  """The (ranks, perm_mask) that make a two-stream model compute p(x_T | x_S) for any (S, T).

  S is context (its positions see each other), T is predicted in a random order, and positions
  outside S u T are hidden from everything.

  Args:
    rng: PRNG key (the order within S and within T).
    source_mask, target_mask: bool [B, L], disjoint.

  Returns:
    (ranks int32 [B, L], perm_mask bool [B, L, L]).
  """
  source_mask = jnp.asarray(source_mask, bool)
  target_mask = jnp.asarray(target_mask, bool)
  chex.assert_rank(
      [source_mask, target_mask],
      2,
      custom_message="task_permutation_mask: source_mask and target_mask must be bool [B, L]",
  )
  ranks = task_ranks(rng, source_mask, target_mask)
  return ranks, permutation_mask(ranks, target_mask, hidden_mask=~(source_mask | target_mask))


def check_permutation_mask(perm_mask, target_mask, *, length: int | None = None) -> None:
  """Host-side check of a permutation mask a user built; raises ValueError if it is malformed.

  Args:
    perm_mask: [B, L, L] bool or 0/1 (True: i may not attend to j).
    target_mask: [B, L] bool, the predicted positions.
    length: the expected L, if known.

  Raises:
    ValueError: wrong shapes, values other than 0/1, or a target that may attend to itself
      (its query stream would then read the token it predicts).
  """
  perm_mask = np.asarray(perm_mask)
  target_mask = np.asarray(target_mask)
  if perm_mask.ndim != 3 or perm_mask.shape[1] != perm_mask.shape[2]:
    raise ValueError(f"perm_mask must be [B, L, L], got shape {perm_mask.shape}.")
  if target_mask.shape != perm_mask.shape[:2]:
    raise ValueError(
        f"target_mask must be [B, L] = {perm_mask.shape[:2]} to match perm_mask, "
        f"got shape {target_mask.shape}."
    )
  if length is not None and perm_mask.shape[1] != length:
    raise ValueError(
        f"perm_mask has L={perm_mask.shape[1]} positions, the model expects " f"{length}."
    )
  if perm_mask.dtype != bool:
    if not np.all((perm_mask == 0) | (perm_mask == 1)):
      raise ValueError("perm_mask must be boolean or 0/1 (1: position i may not attend to j).")
    perm_mask = perm_mask.astype(bool)
  target_mask = target_mask.astype(bool)
  diagonal = np.diagonal(perm_mask, axis1=1, axis2=2)
  leaks = target_mask & ~diagonal
  if leaks.any():
    b, i = np.argwhere(leaks)[0]
    raise ValueError(
        f"perm_mask lets target position {i} of example {b} attend to itself "
        f"(perm_mask[{b}, {i}, {i}] = 0; {int(leaks.sum())} such targets): its prediction would "
        "read the token it predicts. Set perm_mask[b, i, i] = 1 for every target, as "
        "bigjax.permutation.permutation_mask does."
    )
