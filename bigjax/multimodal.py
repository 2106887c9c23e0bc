"""Image tokens + label as one sequence, and what one permutation model does with it (App. E.1).

An image is vector-quantised into L - 1 codes (bigjax.models.vq); its label is token L. With a
codebook of K codes and C classes the vocabulary is [0, K) for image codes and [K, K + C) for
labels, and segment ids mark the two modalities (0 image, 1 label), so each has its own
embeddings. One two-stream model (bigjax.models.two_stream) trained with Eq. (15) then answers
every (S, T) by the choice of order and mask:

  classification    p(y | x')       S = all image tokens, T = {label}   `label_log_probs`
  joint generation  p(x', y)        S empty, T = all                    `sample`
  label-conditioned p(x' | y)       S = {label}, T = image tokens       `sample`
  completion        p(x'_T | x'_S[, y])                                 `sample`

`all_targets` states the convention the model was trained with: True for Eq. (15) over all
positions (every position predicted from those before it in the order; the given ones then see
only their predecessors too, as in training), False for a model trained with T = {label} only
(the cross-entropy baseline, whose image tokens see each other in both directions).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bigjax import permutation

__all__ = [
    "Layout",
    "IMAGE_SEGMENT",
    "LABEL_SEGMENT",
    "check_image_tokens",
    "check_labels",
    "join",
    "segment_ids",
    "vocab_mask",
    "label_log_probs",
    "sample",
    "given_ranks",
]

IMAGE_SEGMENT, LABEL_SEGMENT = 0, 1


class Layout(NamedTuple):
  """Sizes of the multi-modal sequence.

  Attributes:
    num_codes: K, the quantiser's codebook size.
    num_image_tokens: L - 1, the codes per image (e.g. 49 for a 7x7 grid).
    num_classes: C (10 for MNIST).
  """

  num_codes: int
  num_image_tokens: int
  num_classes: int = 10

  @property
  def length(self) -> int:
    return self.num_image_tokens + 1

  @property
  def label_position(self) -> int:
    return self.num_image_tokens

  @property
  def vocab_size(self) -> int:
    return self.num_codes + self.num_classes


def check_image_tokens(image_tokens, layout: Layout) -> np.ndarray:
  """Host-side check; returns int32 [B, L - 1] (a [B, h, w] grid is flattened in raster order).

  Raises:
    TypeError: non-integer ids.
    ValueError: the wrong number of tokens, or an id outside [0, K).
  """
  image_tokens = np.asarray(image_tokens)
  if not np.issubdtype(image_tokens.dtype, np.integer):
    raise TypeError(f"image tokens must be integer code ids, got dtype {image_tokens.dtype}.")
  if image_tokens.ndim < 2:
    raise ValueError(
        f"image tokens must be [B, L-1] or [B, h, w], got shape " f"{image_tokens.shape}."
    )
  flat = image_tokens.reshape(image_tokens.shape[0], -1)
  if flat.shape[1] != layout.num_image_tokens:
    raise ValueError(
        f"each image must have {layout.num_image_tokens} tokens, got "
        f"{flat.shape[1]} (shape {image_tokens.shape})."
    )
  bad = (flat < 0) | (flat >= layout.num_codes)
  if bad.any():
    raise ValueError(
        f"image token {int(flat[bad][0])} is outside the codebook [0, "
        f"{layout.num_codes}) ({int(bad.sum())} such tokens)."
    )
  return flat.astype(np.int32)


def check_labels(labels, layout: Layout) -> np.ndarray:
  """Host-side check; returns int32 [B]. Raises ValueError for labels outside [0, C)."""
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"labels must be integers, got dtype {labels.dtype}.")
  bad = (labels < 0) | (labels >= layout.num_classes)
  if bad.any():
    raise ValueError(f"label {int(labels[bad][0])} is outside 0..{layout.num_classes - 1}.")
  return labels.astype(np.int32).reshape(-1)


def join(image_tokens, labels, layout: Layout) -> jax.Array:
  """int [B, L - 1] codes and int [B] labels -> int32 [B, L] tokens (label id K + y last).
  Jittable; check untrusted input with `check_image_tokens` / `check_labels` first."""
  image_tokens = jnp.asarray(image_tokens, jnp.int32).reshape(-1, layout.num_image_tokens)
  labels = jnp.asarray(labels, jnp.int32).reshape(-1, 1)
  return jnp.concatenate([image_tokens, labels + layout.num_codes], axis=1)


def segment_ids(layout: Layout, batch_size: int) -> jax.Array:
  """int32 [B, L]: IMAGE_SEGMENT for the image codes, LABEL_SEGMENT for the label."""
  row = jnp.full((layout.length,), IMAGE_SEGMENT, jnp.int32).at[-1].set(LABEL_SEGMENT)
  return jnp.broadcast_to(row, (batch_size, layout.length))


def vocab_mask(layout: Layout) -> jax.Array:
  """bool [L, V]: image positions take codes [0, K), the label position takes [K, K + C)."""
  is_label_id = jnp.arange(layout.vocab_size) >= layout.num_codes
  is_label_pos = jnp.arange(layout.length) == layout.label_position
  return is_label_pos[:, None] == is_label_id[None, :]


ApplyFn = Callable[..., tuple[jax.Array, dict]]


def label_log_probs(
    apply_fn: ApplyFn,
    params,
    image_tokens,
    rng,
    *,
    layout: Layout,
    all_targets: bool,
    num_orders: int = 1,
) -> jax.Array:
  """Classification p(y | x') (S = all image tokens, T = {label}), averaged over orders.

  Args:
    apply_fn: `model.apply` of a TwoStreamTransformer with layout.vocab_size ids.
    params: its parameters ({"params": ...}).
    image_tokens: int [B, L - 1].
    rng: PRNG key for the orders of the image tokens (the label is always last).
    layout: the sequence layout.
    all_targets: the model's training convention (module docstring).
    num_orders: average p(y | x') over this many random orders of the image tokens (with
      all_targets=False the order does not matter, so one suffices).

  Returns:
    float32 [B, C]: log p(y | x') (log of the mean probability over the orders).
  """
  b = image_tokens.shape[0]
  tokens = join(image_tokens, jnp.zeros((b,), jnp.int32), layout)  # the label is never seen
  segments = segment_ids(layout, b)
  target = (
      jnp.ones((b, layout.length), bool)
      if all_targets
      else jnp.zeros((b, layout.length), bool).at[:, -1].set(True)
  )

  def one(key):
    ranks = permutation.random_ranks(
        key, b, layout.length, last_position=layout.label_position, last_prob=1.0
    )
    logits, _ = apply_fn(params, tokens, segments, permutation.permutation_mask(ranks, target))
    return jax.nn.log_softmax(logits[:, -1, layout.num_codes :], axis=-1)  # the label ids

  log_probs = jax.lax.map(one, jax.random.split(rng, num_orders))  # [O, B, C]
  return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(num_orders)


def given_ranks(rng, given_mask, *, order: str = "random", label_first: bool = True) -> jax.Array:
  """An order for sampling: the given positions first, then the others.

  Args:
    rng: PRNG key.
    given_mask: bool [B, L] (the label position last).
    order: "random" (the rest in uniformly random order) or "raster" (the rest in raster
      order of the image, then the label).
    label_first: among the given positions, put the label first (its value then conditions
      the image tokens' states from the start, as in label-conditioned training orders).

  Returns:
    int32 ranks [B, L].
  """
  if order not in ("random", "raster"):
    raise ValueError(f"order must be 'random' or 'raster', got {order!r}.")
  b, length = given_mask.shape
  given = jnp.asarray(given_mask, bool)
  u = jax.random.uniform(rng, (b, length))
  if order == "raster":
    u = jnp.broadcast_to(jnp.arange(length) / length, (b, length))
  label = jnp.arange(length) == length - 1
  within = jnp.where(given & label & label_first, -1.0, u)
  scores = jnp.where(given, 0.0, 2.0) + within
  return jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1).astype(jnp.int32)


def sample(
    apply_fn: ApplyFn,
    params,
    tokens,
    given_mask,
    rng,
    *,
    layout: Layout,
    all_targets: bool = True,
    order: str = "random",
    temperature: float = 1.0,
    guidance: float = 0.0,
) -> jax.Array:
  """Samples every position not given, one at a time along an order (the given ones first).

  Each step runs the model once and draws the token at the next position of the order from its
  query-stream logits (restricted to the position's modality), so the result is a draw from
  p(x_T | x_S) as the model factorises it. The label, if not given, is drawn too (last when
  order="raster").

  Args:
    apply_fn, params: as for `label_log_probs`.
    tokens: int [B, L] (as `join` builds them); values at positions not given are ignored.
    given_mask: bool [B, L], the source S (e.g. only the label: label-conditioned generation;
      nothing: joint generation).
    rng: PRNG key.
    layout: the sequence layout.
    all_targets: the model's training convention (module docstring).
    order: "random" or "raster" order of the positions drawn (`given_ranks`).
    temperature: divides the logits (1: the model's distribution).
    guidance: w >= 0, label guidance (classifier-free guidance, Ho & Salimans 2022) for rows
      whose label is given: each token is drawn from log p(x_t | x_<t, y) + w (log p(x_t |
      x_<t, y) - log p(x_t | x_<t)), both read from the one model, the second with the label
      hidden from every position. This sharpens p(x' | y) towards images the model itself
      classifies as y, roughly p(x' | y) p(y | x')^w; w = 0 samples the model's p(x' | y).
      Costs a second forward pass per token. Rows without a given label are unaffected.

  Returns:
    int32 [B, L]: the given tokens unchanged, the others sampled.
  """
  if not guidance >= 0:
    raise ValueError(f"guidance must be >= 0, got {guidance}.")
  if isinstance(temperature, numbers.Real) and not temperature > 0:  # a traced one passes
    raise ValueError(
        f"temperature must be > 0 (1: the model's distribution), got " f"{temperature}."
    )
  tokens = jnp.asarray(tokens, jnp.int32)
  given = jnp.asarray(given_mask, bool)
  b, length = tokens.shape
  k_order, k_draw = jax.random.split(rng)
  ranks = given_ranks(k_order, given, order=order)
  target = jnp.ones_like(given) if all_targets else ~given
  perm_mask = permutation.permutation_mask(ranks, target)
  allowed = vocab_mask(layout)
  num_given = jnp.sum(given, axis=1)
  positions = permutation.order_from_ranks(ranks)
  if guidance:
    # The same order with the given label hidden from everything: p(x_t | x_<t) without y.
    label_given = given & (jnp.arange(length) == layout.label_position)
    perm_mask = jnp.concatenate([perm_mask, perm_mask | label_given[:, None, :]])
  segments = segment_ids(layout, perm_mask.shape[0])

  def log_probs(logits):
    return jax.nn.log_softmax(jnp.where(allowed, logits, -jnp.inf), axis=-1)

  def step(t, tokens):
    logits, _ = apply_fn(
        params, jnp.concatenate([tokens, tokens]) if guidance else tokens, segments, perm_mask
    )
    if guidance:
      cond, uncond = log_probs(logits[:b]), log_probs(logits[b:])
      logits = cond + guidance * (cond - jnp.where(allowed, uncond, 0.0))
    pos = positions[:, t]
    row = jnp.take_along_axis(logits, pos[:, None, None], axis=1)[:, 0]  # [B, V]
    row = jnp.where(allowed[pos], row / temperature, -jnp.inf)
    draw = jax.random.categorical(jax.random.fold_in(k_draw, t), row, axis=-1)
    update = t >= num_given  # given positions keep their token
    current = jnp.take_along_axis(tokens, pos[:, None], axis=1)[:, 0]
    new = jnp.where(update, draw, current).astype(jnp.int32)
    return tokens.at[jnp.arange(b), pos].set(new)

  start = jnp.min(num_given)
  return jax.lax.fori_loop(start, length, step, tokens)
