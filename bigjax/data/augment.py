"""Data augmentation on device, as pure functions of an explicit `rng` (jit- and vmap-safe)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["random_shift"]


def random_shift(rng: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each image by an independent random offset of up to `max_shift` pixels along each
  axis, filling with background (-1).

  Args:
    rng: PRNG key.
    images: float [B, H, W] in [-1, 1].
    max_shift: the largest shift in pixels (0: the images unchanged).

  Returns:
    float [B, H, W].
  """
  if max_shift == 0:
    return images
  _, h, w = images.shape
  padded = jnp.pad(
      images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)), constant_values=-1.0
  )
  offsets = jax.random.randint(rng, (images.shape[0], 2), 0, 2 * max_shift + 1)
  return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1]), (h, w)))(padded, offsets)
