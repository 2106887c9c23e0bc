"""Images <-> sequences of flattened patches (raster order), and patch masks <-> pixel masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["patchify", "unpatchify", "patch_masks_to_pixels", "check_patch_size"]


def check_patch_size(height: int, width: int, patch_size: int) -> None:
  """Raises ValueError unless patch_size divides both image sides."""
  if int(patch_size) < 1 or height % patch_size or width % patch_size:
    raise ValueError(
        f"image size {height}x{width} is not divisible by patch_size={patch_size}: choose a "
        f"patch size that divides both sides (e.g. 7 or 4 for 28x28, 8 for 64x64), or resize "
        f"the images."
    )


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """Splits images into non-overlapping patches in raster order.

  Args:
    images: [B, H, W] or [B, H, W, C].
    patch_size: p, dividing H and W.

  Returns:
    [B, L, p * p * C] with L = (H / p) (W / p); patch l covers rows (l // (W/p)) p ... and
    columns (l % (W/p)) p ...; inside a patch, pixels in (row, column, channel) order.
  """
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W] or [B, H, W, C], got shape {images.shape}.")
  b, h, w, c = images.shape
  check_patch_size(h, w, patch_size)
  p = patch_size
  x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, image_shape: tuple[int, ...], patch_size: int) -> jax.Array:
  """Inverse of `patchify`.

  Args:
    patches: [B, L, p * p * C].
    image_shape: (H, W) or (H, W, C) of one image; the output drops C when it is not given.
    patch_size: p.

  Returns:
    [B, H, W] or [B, H, W, C].
  """
  h, w = image_shape[:2]
  c = image_shape[2] if len(image_shape) == 3 else 1
  check_patch_size(h, w, patch_size)
  p = patch_size
  b, length, dim = patches.shape
  if length != (h // p) * (w // p) or dim != p * p * c:
    raise ValueError(
        f"patches {patches.shape} do not tile an image of shape {image_shape} with "
        f"patch_size={patch_size} (expected [B, {(h // p) * (w // p)}, {p * p * c}])."
    )
  x = patches.reshape(b, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(b, h, w, c)
  return x if len(image_shape) == 3 else x[..., 0]


def patch_masks_to_pixels(
    mask: jax.Array, image_size: tuple[int, int], patch_size: int
) -> jax.Array:
  """Patch mask [B, L] -> pixel mask [B, H, W], True on every pixel of a True patch."""
  h, w = image_size
  check_patch_size(h, w, patch_size)
  grid = mask.reshape(mask.shape[0], h // patch_size, w // patch_size)
  return jnp.repeat(jnp.repeat(grid, patch_size, axis=1), patch_size, axis=2)
