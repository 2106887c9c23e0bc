"""uint8 pixels <-> the [-1, 1] floats the models work in, and bilinear resizing of a batch.

`to_unit_range` maps uint8 pixels to [-1, 1] as x / 127.5 - 1, `from_unit_range` maps model
outputs back (clipping to [-1, 1]), and `resize` makes larger or smaller square images (64 x 64
MNIST digits for the paper's GAN configuration) exactly as PIL's bilinear filter would, for a
whole batch at once. `bigjax.data.mnist` re-exports all three.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """The [size_out, size_in] matrix of PIL's bilinear resize along one axis.

  PIL's BILINEAR resize is separable and linear (a triangle filter whose support widens by the
  scale factor when downsizing, i.e. antialiased); resizing the rows of an identity image along
  one axis gives its weights exactly.
  """
  eye = Image.fromarray(np.eye(size_in, dtype=np.float32))
  return np.asarray(eye.resize((size_out, size_in), Image.Resampling.BILINEAR)).T


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes square digits with bilinear interpolation, antialiased when downsizing.

  Computes what PIL's `Image.resize(..., BILINEAR)` computes on float images, as two matrix
  products over the whole batch, then rounds to uint8.

  Args:
    images: uint8 [N, H, W], e.g. MNIST's [N, 28, 28].
    size: the output side, a positive int.

  Returns:
    uint8 [N, size, size]; `images` itself when it already has that shape.
  """
  images = np.asarray(images)
  if images.ndim != 3:
    raise ValueError(
        f"images must have shape [N, H, W], got {images.shape} (for one image " "pass image[None])."
    )
  if images.dtype != np.uint8:
    raise TypeError(
        f"images must be uint8 pixels, got dtype {images.dtype} (from [-1, 1] "
        "floats use from_unit_range first)."
    )
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"size must be a positive int, got {size!r}.")
  size = int(size)
  if images.shape[1:] == (size, size):
    return images
  rows = _resize_matrix(images.shape[1], size)
  cols = _resize_matrix(images.shape[2], size)
  out = np.empty((len(images), size, size), np.uint8)
  for start in range(0, len(images), 4096):  # bounds the float32 temporaries (~67 MB at 64)
    chunk = images[start : start + 4096].astype(np.float32)
    resized = np.einsum("oh,nhw,pw->nop", rows, chunk, cols, optimize=True)
    out[start : start + 4096] = np.clip(np.round(resized), 0, 255)
  return out


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 pixels [...] in [0, 255] -> float32 [...] in [-1, 1], as x / 127.5 - 1."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"images must be uint8 pixels, got dtype {images.dtype}.")
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def from_unit_range(x) -> np.ndarray:
  """Floats [...] in [-1, 1] (e.g. generator samples) -> uint8 pixels [...], the inverse of
  `to_unit_range`; values outside [-1, 1] are clipped, NaN or inf raise a ValueError."""
  x = np.asarray(x, np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError("from_unit_range got NaN or inf values (did training diverge?).")
  return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
