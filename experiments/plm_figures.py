"""Figures of a permutation-model run: Fig. 17 (joint, label-conditioned samples and
classified real digits) and PNG grids of generated or completed digits."""

from __future__ import annotations

import numpy as np

from experiments import plm_setup
from experiments.plm_run import Run, classify, generate_rows


def figure(
    run: Run, path: str, *, seed: int = 0, per_row: int = 10, guidance: float | None = None
) -> None:
  """Fig. 17 in our terms: a row of joint samples (their sampled labels above), a row per label
  of label-conditioned samples, and real held-out digits with p(y | x') (permutation runs); a
  cross-entropy run draws only the classification row."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  rows = []
  if run.config.plm.objective == "permutation":
    c = run.layout.num_classes
    wanted = np.repeat(np.arange(-1, c), per_row).astype(np.int32)  # joint row first
    images, labels = generate_rows(run, wanted, seed=seed, guidance=guidance)
    images, labels = images.reshape(c + 1, per_row, *images.shape[1:]), labels[:per_row]
    rows.append(("joint p(x', y)", images[0], [f"y={int(l)}" for l in labels]))
    w = run.config.eval.guidance if guidance is None else guidance
    t = float(run.config.eval.temperature)
    rows[0] = (rows[0][0] + (f", T={t:g}" if t != 1 else ""),) + rows[0][1:]
    rows += [
        (
            f"p(x' | y={y})" + (f", w={w:g}" if w else "") + (f", T={t:g}" if t != 1 else ""),
            images[y + 1],
            None,
        )
        for y in range(c)
    ]
  test_images, test_labels = plm_setup.load_split(run.config, run.config.data.test_split)
  real = test_images[:per_row]
  labels, probs = classify(run, real, seed=seed)
  rows.append(
      (
          "p(y | x')",
          real,
          [
              f"{int(l)} ({probs[i, l]:.2f}), true {int(test_labels[i])}"
              for i, l in enumerate(labels)
          ],
      )
  )
  fig, axes = plt.subplots(
      len(rows), per_row, figsize=(per_row * 0.9, len(rows) * 1.05), squeeze=False
  )
  for r, (name, images, captions) in enumerate(rows):
    for c in range(per_row):
      ax = axes[r, c]
      ax.imshow(images[c], cmap="gray", vmin=0, vmax=255)
      ax.set_xticks([])
      ax.set_yticks([])
      if captions:
        ax.set_title(captions[c], fontsize=6, pad=2)
    axes[r, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
  fig.suptitle(
      f"one permutation model ({run.config.variant}): joint, label-conditioned, " "classification",
      fontsize=8,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)


def save_grid(path: str, images: np.ndarray, title: str) -> None:
  """A PNG grid of uint8 images [N, (S,) 28, 28] (one row per digit when S is given)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  grid = images if images.ndim == 4 else images[:, None]
  if images.ndim == 3:
    cols = min(10, len(images))
    grid = np.concatenate(
        [images, np.zeros((-len(images) % cols,) + images.shape[1:], np.uint8)]
    ).reshape(-1, cols, *images.shape[1:])
  n, s = grid.shape[:2]
  fig, axes = plt.subplots(n, s, figsize=(s * 0.8, n * 0.8), squeeze=False)
  for i in range(n):
    for j in range(s):
      axes[i, j].imshow(grid[i, j], cmap="gray", vmin=0, vmax=255)
      axes[i, j].axis("off")
  fig.suptitle(title, fontsize=8)
  fig.savefig(path, dpi=120)
  plt.close(fig)
