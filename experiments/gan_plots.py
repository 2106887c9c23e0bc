"""Sample grids of the BigLearn-GAN runs (styled after the paper's Fig. 5 and Fig. 16)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bigjax.models import patch_masks_to_pixels

# Pixels outside the given patches are shown in this grey in the "given" row.
_HIDDEN = 96


def mosaic(images: np.ndarray, rows: int, cols: int, pad: int = 1) -> np.ndarray:
  """uint8 [rows * cols, H, W(, C)] -> one uint8 [rows (H + pad) + pad, cols (W + pad) + pad(,
  C)] image, row-major, separated by white lines."""
  h, w = images.shape[1:3]
  out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad) + images.shape[3:], 255, np.uint8)
  for i, img in enumerate(images[: rows * cols]):
    r, c = divmod(i, cols)
    top, left = pad + r * (h + pad), pad + c * (w + pad)
    out[top : top + h, left : left + w] = img
  return out


def shown_source(images: np.ndarray, source_pixels: np.ndarray) -> np.ndarray:
  """The given pixels as they are, the rest grey: what the generator is conditioned on.
  source_pixels: bool [N, H, W] (broadcast over the channels of [N, H, W, C] images)."""
  if images.ndim == 4:
    source_pixels = source_pixels[..., None]
  return np.where(source_pixels, images, _HIDDEN).astype(np.uint8)


def show(ax, img: np.ndarray) -> None:
  """imshow of a uint8 mosaic, grayscale or RGB, pixel-exact, no axes."""
  ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
  ax.axis("off")


def completion_panel(
    real: np.ndarray, source_pixels: np.ndarray, completions: np.ndarray
) -> np.ndarray:
  """One mosaic: a row of given pixels, rows of completions (one per noise draw), then the real
  digits; one column per digit (Fig. 5a layout). completions: [N, num_images, H, W]."""
  rows = [shown_source(real, source_pixels)] + list(completions) + [real]
  return mosaic(np.concatenate(rows), len(rows), len(real))


def sample_grid(
    samples: dict[str, np.ndarray],
    real: np.ndarray,
    random_half: np.ndarray,
    top_half: np.ndarray,
    config,
    path: str,
    *,
    step: int,
) -> dict[str, np.ndarray]:
  """Writes one PNG: joint generations and completions from random-half and top-half sources;
  returns its panels (uint8 mosaics, keyed samples/joint, samples/random_half,
  samples/top_half) for TensorBoard.

  Args:
    samples: `joint` [J, H, W], `random_half` / `top_half` [N, num_images, H, W] (uint8).
    real: [num_images, H, W] uint8 digits being completed.
    random_half, top_half: bool [num_images, L] patch masks of the given patches.
    config: the run's config (patch size, variant).
    path: output PNG.
    step: training step, for the title.
  """
  size = real.shape[1:3]
  p = config.model.patch_size
  joint = samples["joint"]
  cols = min(8, len(joint))
  panels = [("joint", "joint generation (S empty)", mosaic(joint, -(-len(joint) // cols), cols))]
  for name, masks, title in (
      ("random_half", random_half, "random half of patches given"),
      ("top_half", top_half, "top half given (initial portion)"),
  ):
    pixels = np.asarray(patch_masks_to_pixels(masks, size, p))
    panels.append(
        (
            name,
            f"completion, {title}\nrow 1 given, last row real",
            completion_panel(real, pixels, samples[name]),
        )
    )
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
  for ax, (_, title, img) in zip(axes, panels):
    show(ax, img)
    ax.set_title(title, fontsize=9)
  fig.suptitle(f"BigLearn-GAN ({config.variant}), step {step}", fontsize=11)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=150)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)
  return {f"samples/{name}": img for name, _, img in panels}


def completion_figure(
    real: np.ndarray, source_pixels: np.ndarray, completions: np.ndarray, path: str, *, title: str
) -> None:
  """Writes a Fig. 5 / Fig. 16 style PNG: the given pixels (first row), one row per noise draw,
  the real digits (last row); one column per digit.

  Args:
    real: uint8 [N, H, W]; source_pixels: bool [N, H, W]; completions: uint8 [N, S, H, W].
  """
  img = completion_panel(real, source_pixels, np.swapaxes(completions, 0, 1))
  fig, ax = plt.subplots(
      figsize=(max(3.0, 0.45 * real.shape[0] + 1), 0.45 * (completions.shape[1] + 2) + 0.8)
  )
  show(ax, img)
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=150)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)
