"""(S, T) samplers: which positions are given (source S) and which are matched (target T).

Big learning (paper Eq. (6)) matches p(x_T | x_S) to q(x_T | x_S) for many pairs (S, T) of
disjoint index sets over the L positions of a sequence (patches of an image, tokens of a text).
Every sampler here returns per-example boolean masks

  source_mask [B, L]   True on S
  target_mask [B, L]   True on T,   S and T disjoint, T non-empty in every row

so one batch mixes many tasks, and the masks keep the full length L: a new ratio never changes
an array shape, so nothing recompiles (MAE's JAX port gathers the kept patches and must fix the
ratio for that reason). All samplers are pure functions of an explicit `rng`, work under `jit`
and `vmap`, and express the special cases of the paper's Table 1 with one interface:

  biglearn          |S|/L ~ Beta(0.5, 3), |T|/|L minus S| ~ Beta(3, 0.5)   (App. D.3, Table 2)
  joint             S empty, T all                        (joint generation, a standard GAN)
  mask_and_predict  T a random subset of fixed ratio, S its complement             (BERT, MAE)
  next_token        S = {< t}, T = {t}                                             (GPT)
  permutation       S = {z_<t}, T = {z_t} for a random order z                     (XLNet)
  initial_portion   S = the first |S| positions in raster order, T the rest   (Fig. 5b)
  user_masks        masks a user gives, checked and broadcast to the batch

`source_sets` draws S alone, of a given size, random or an initial portion: the source sets of
evaluation (Fig. 5a/b, 13), completion tools and partial-input classifiers.

`resplit` draws a second pair (S2, T2) with the same union S u T, for the "communication"
matchings of Eq. (12).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "biglearn",
    "joint",
    "mask_and_predict",
    "next_token",
    "permutation",
    "initial_portion",
    "user_masks",
    "resplit",
    "source_sets",
    "check_masks",
    "SAMPLERS",
]


def _check_sizes(batch_size: int, length: int) -> None:
  if int(batch_size) < 1 or int(length) < 1:
    raise ValueError(
        f"batch_size and length must be positive integers, got batch_size="
        f"{batch_size}, length={length}."
    )


def _check_beta(name: str, a: float, b: float) -> None:
  if not (float(a) > 0 and float(b) > 0):
    raise ValueError(f"{name} Beta parameters must both be > 0, got ({a}, {b}).")


def _random_ranks(rng, batch_size: int, length: int) -> jax.Array:
  """Per-row uniformly random permutation ranks [B, L] (int32, each row a permutation of L)."""
  scores = jax.random.uniform(rng, (batch_size, length))
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)


def _masks_from_ranks(ranks, num_source, num_target):
  """S = the num_source lowest ranks, T = the next num_target ones; counts are [B] ints."""
  source = ranks < num_source[:, None]
  target = (ranks >= num_source[:, None]) & (ranks < (num_source + num_target)[:, None])
  return source, target


def biglearn(
    rng,
    batch_size: int,
    length: int,
    *,
    source_alpha: float = 0.5,
    source_beta: float = 3.0,
    target_alpha: float = 3.0,
    target_beta: float = 0.5,
) -> tuple[jax.Array, jax.Array]:
  """The BigLearn-GAN sampler q(S, T) of App. D.3: random S, then random T outside S.

  Per example: r_S ~ Beta(source_alpha, source_beta), |S| = floor(r_S L) capped at L - 1 so that
  a target position remains; r_T ~ Beta(target_alpha, target_beta), |T| = ceil(r_T |L minus S|)
  (at least 1). The positions of S and T are uniformly random among the L positions. With the
  defaults E|S|/L ~ 0.143 and E|T|/|L minus S| ~ 0.857 (Table 2).

  Args:
    rng: PRNG key.
    batch_size: B.
    length: L, the number of positions (patches).
    source_alpha, source_beta: Beta law of the source ratio |S| / L.
    target_alpha, target_beta: Beta law of the target ratio |T| / |L minus S|.

  Returns:
    (source_mask, target_mask), bool [B, L], disjoint, every target row non-empty.
  """
  _check_sizes(batch_size, length)
  _check_beta("source", source_alpha, source_beta)
  _check_beta("target", target_alpha, target_beta)
  k_order, k_s, k_t = jax.random.split(rng, 3)
  r_s = jax.random.beta(k_s, source_alpha, source_beta, (batch_size,))
  r_t = jax.random.beta(k_t, target_alpha, target_beta, (batch_size,))
  num_source = jnp.clip(jnp.floor(r_s * length).astype(jnp.int32), 0, length - 1)
  rest = length - num_source
  num_target = jnp.clip(jnp.ceil(r_t * rest).astype(jnp.int32), 1, rest)
  return _masks_from_ranks(_random_ranks(k_order, batch_size, length), num_source, num_target)


def joint(rng, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
  """Joint generation (a standard GAN; Table 1 first row): S empty, T = all L positions.

  `rng` is unused (kept so every sampler has the same signature). Returns bool [B, L] masks.
  """
  del rng
  _check_sizes(batch_size, length)
  return (jnp.zeros((batch_size, length), bool), jnp.ones((batch_size, length), bool))


def mask_and_predict(
    rng, batch_size: int, length: int, *, mask_ratio: float = 0.75
) -> tuple[jax.Array, jax.Array]:
  """Masked modelling (BERT/MAE): T a uniformly random subset of round(mask_ratio L) positions
  (at least 1), S its complement. Returns bool [B, L] masks."""
  _check_sizes(batch_size, length)
  if not 0.0 < float(mask_ratio) <= 1.0:
    raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}.")
  num_target = max(1, int(round(float(mask_ratio) * length)))
  ranks = _random_ranks(rng, batch_size, length)
  target = ranks < num_target
  return ~target, target


def next_token(rng, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
  """Autoregressive (GPT) tasks: t uniform in {0..L-1} per example, S = {0..t-1}, T = {t}.

  Returns bool [B, L] masks (S empty when t = 0: the first token's marginal)."""
  _check_sizes(batch_size, length)
  t = jax.random.randint(rng, (batch_size, 1), 0, length)
  pos = jnp.arange(length)[None, :]
  return pos < t, pos == t


def permutation(rng, batch_size: int, length: int) -> tuple[jax.Array, jax.Array]:
  """Permutation language modelling (XLNet): a random order z of the L positions and a random
  step t per example; S = {z_1..z_(t-1)}, T = {z_t}. Returns bool [B, L] masks."""
  _check_sizes(batch_size, length)
  k_order, k_t = jax.random.split(rng)
  t = jax.random.randint(k_t, (batch_size,), 0, length)
  return _masks_from_ranks(_random_ranks(k_order, batch_size, length), t, jnp.ones_like(t))


def initial_portion(
    rng,
    batch_size: int,
    length: int,
    *,
    source_alpha: float = 0.5,
    source_beta: float = 3.0,
    source_ratio: float | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Completion from an initial portion (Fig. 5b): S = the first |S| positions in raster
  order, T = all the others.

  |S| = floor(r L) capped at L - 1, with r = `source_ratio` when given, else r ~
  Beta(source_alpha, source_beta) per example. Returns bool [B, L] masks.
  """
  _check_sizes(batch_size, length)
  if source_ratio is None:
    _check_beta("source", source_alpha, source_beta)
    r = jax.random.beta(rng, source_alpha, source_beta, (batch_size,))
  else:
    if not 0.0 <= float(source_ratio) < 1.0:
      raise ValueError(
          f"source_ratio must be in [0, 1) so that a target remains, got " f"{source_ratio}."
      )
    r = jnp.full((batch_size,), float(source_ratio))
  num_source = jnp.clip(jnp.floor(r * length).astype(jnp.int32), 0, length - 1)
  source = jnp.arange(length)[None, :] < num_source[:, None]
  return source, ~source


def source_sets(
    rng, batch_size: int, length: int, num_source, *, initial_portion=False
) -> jax.Array:
  """Source sets S of given sizes: uniformly random positions, or the first ones in raster
  order (an initial portion, Fig. 5b), per example.

  Args:
    rng: PRNG key (the random sets; unused by initial portions).
    batch_size: B.
    length: L.
    num_source: |S|, an int or int [B] (0 <= |S| <= L).
    initial_portion: bool, or bool [B]: which examples get the first |S| positions instead of
      random ones.

  Returns:
    bool [B, L] source masks with num_source[b] True entries in row b.
  """
  _check_sizes(batch_size, length)
  if isinstance(num_source, (int, np.integer)) and not 0 <= int(num_source) <= length:
    raise ValueError(f"num_source must be in [0, {length}], got {num_source}.")
  for name, value in (("num_source", num_source), ("initial_portion", initial_portion)):
    chex.assert_is_broadcastable(
        jnp.shape(value),
        (batch_size,),
        custom_message=f"source_sets: {name} must be a scalar or [B] = [{batch_size}]",
    )
  ranks = _random_ranks(rng, batch_size, length)
  initial = jnp.broadcast_to(jnp.asarray(initial_portion, bool), (batch_size,))
  ranks = jnp.where(initial[:, None], jnp.arange(length)[None], ranks)
  count = jnp.broadcast_to(jnp.asarray(num_source, jnp.int32), (batch_size,))
  return ranks < count[:, None]


def check_masks(source_mask, target_mask) -> None:
  """Raises ValueError unless (source_mask, target_mask) are valid concrete (S, T) masks:
  boolean, the same shape [..., L], disjoint, with a non-empty target in every row.

  Host-side (numpy): call it on user input before tracing, not inside `jit`.
  """
  s, t = np.asarray(source_mask), np.asarray(target_mask)
  if s.dtype != bool or t.dtype != bool:
    raise ValueError(
        f"(S, T) masks must be boolean arrays, got {s.dtype} and {t.dtype}; "
        "use mask.astype(bool) for 0/1 masks."
    )
  if s.shape != t.shape or s.ndim < 1:
    raise ValueError(
        f"source and target masks must have the same shape [..., L], got "
        f"{s.shape} and {t.shape}."
    )
  overlap = np.argwhere(s & t)
  if overlap.size:
    raise ValueError(
        f"S and T overlap at {len(overlap)} position(s), the first at index "
        f"{tuple(int(i) for i in overlap[0])}; a position is either given (S) or "
        "generated (T), never both."
    )
  empty = np.argwhere(np.atleast_1d(~t.any(axis=-1)))
  if empty.size:
    raise ValueError(
        f"T is empty in {len(empty)} row(s), the first at batch index "
        f"{tuple(int(i) for i in empty[0])}; every task needs at least one "
        "target position."
    )


def user_masks(
    source_mask, target_mask=None, *, batch_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """A user-given (S, T), checked and broadcast to [B, L].

  Args:
    source_mask: bool [L] or [B, L].
    target_mask: bool [L] or [B, L]; default: the complement of `source_mask`.
    batch_size: B to broadcast [L] masks to (default: the masks' own leading size, or 1).

  Returns:
    (source_mask, target_mask), bool [B, L].

  Raises:
    ValueError: overlapping S and T, an empty T, non-boolean or mismatched masks.
  """
  s = np.asarray(source_mask)
  t = np.logical_not(s) if target_mask is None else np.asarray(target_mask)
  check_masks(s, t)
  if s.ndim == 1:
    s, t = s[None], t[None]
  if s.ndim != 2:
    raise ValueError(f"masks must be [L] or [B, L], got shape {s.shape}.")
  if batch_size is not None:
    if int(batch_size) < 1:
      raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    if s.shape[0] not in (1, batch_size):
      raise ValueError(
          f"masks have {s.shape[0]} rows, cannot broadcast to batch_size=" f"{batch_size}."
      )
    s = np.broadcast_to(s, (batch_size, s.shape[1]))
    t = np.broadcast_to(t, (batch_size, t.shape[1]))
  return jnp.asarray(s), jnp.asarray(t)


def resplit(
    rng, source_mask, target_mask, *, source_alpha: float = 0.5, source_beta: float = 3.0
) -> tuple[jax.Array, jax.Array]:
  """A second pair (S2, T2) with S2 u T2 = S u T, for the communication matchings of Eq. (12).

  Per example, |S2| = floor(r |U|) with r ~ Beta(source_alpha, source_beta), capped at |U| - 1,
  S2 a uniformly random subset of U = S u T of that size, and T2 = U minus S2 (non-empty).

  Args:
    rng: PRNG key.
    source_mask, target_mask: bool [B, L], the first pair (T non-empty).

  Returns:
    (source_mask_2, target_mask_2), bool [B, L].
  """
  _check_beta("source", source_alpha, source_beta)
  source_mask, target_mask = jnp.asarray(source_mask), jnp.asarray(target_mask)
  chex.assert_rank(
      [source_mask, target_mask],
      2,
      custom_message="resplit: source_mask and target_mask must be bool [B, L] (vmap for one row)",
  )
  chex.assert_equal_shape(
      [source_mask, target_mask],
      custom_message="resplit: source_mask and target_mask must have the same shape [B, L]",
  )
  union = source_mask | target_mask
  batch_size, length = union.shape
  k_order, k_s = jax.random.split(rng)
  size = union.sum(-1).astype(jnp.int32)
  r = jax.random.beta(k_s, source_alpha, source_beta, (batch_size,))
  num_source = jnp.clip(jnp.floor(r * size).astype(jnp.int32), 0, jnp.maximum(size - 1, 0))
  # Positions outside U get scores above every position inside, so ranks < |U| are U itself.
  scores = jax.random.uniform(k_order, (batch_size, length)) + jnp.where(union, 0.0, 2.0)
  ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  source = ranks < num_source[:, None]
  return source, union & ~source


# Name -> sampler, for configs (`config.tasks.sampler`); each is f(rng, B, L, **kwargs).
SAMPLERS = {
    "biglearn": biglearn,
    "joint": joint,
    "mask_and_predict": mask_and_predict,
    "next_token": next_token,
    "permutation": permutation,
    "initial_portion": initial_portion,
}
