"""bigjax.data.augment: random shifts move whole images and fill with background."""

import jax
import numpy as np

from bigjax.data import augment


def test_random_shift_moves_each_image_by_at_most_max_shift():
  images = -np.ones((64, 9, 9), np.float32)
  images[:, 4, 4] = 1.0  # one bright pixel in the centre
  shifted = np.asarray(
      jax.jit(augment.random_shift, static_argnums=2)(jax.random.key(0), images, 2)
  )
  rows, cols = np.nonzero(shifted == 1.0)[1:]
  assert len(rows) == 64  # nothing falls off a 9x9 image
  assert np.abs(rows - 4).max() == 2 and np.abs(cols - 4).max() == 2
  assert len(set(zip(rows, cols))) > 10  # independent offsets per image
  assert ((shifted == 1.0) | (shifted == -1.0)).all()  # filled with background
  assert augment.random_shift(jax.random.key(0), images, 0) is images
