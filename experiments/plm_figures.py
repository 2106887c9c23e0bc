"""Figures of a permutation-model run: Fig. 17 (joint, label-conditioned samples and
classified real digits) and PNG grids of generated or completed digits."""

from __future__ import annotations

import numpy as np

from experiments import plm_setup
from experiments.plm_run import Run, classify, generate_rows

_PAD = 4  # white pixels between digits


def figure(
    run: Run, path: str, *, seed: int = 0, per_row: int = 10, guidance: float | None = None
) -> None:
  """Fig. 17 in our terms: a row of joint samples (their sampled labels above), a row per label
  of label-conditioned samples, and real held-out digits with p(y | x') (permutation runs); a
  cross-entropy run draws only the classification row."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  from experiments import gan_plots  # pylint: disable=import-outside-toplevel

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
  # One axes per row, its digits one mosaic (120 axes of one digit each took seconds to lay out
  # and draw): captions above each digit, the row's name on its left.
  h, w = real.shape[1:3]
  fig, axes = plt.subplots(len(rows), 1, figsize=(per_row * 0.9, len(rows) * 1.05), squeeze=False)
  for ax, (name, images, captions) in zip(axes[:, 0], rows):
    gan_plots.show(ax, gan_plots.mosaic(np.asarray(images[:per_row]), 1, per_row, pad=_PAD))
    for c, caption in enumerate(captions or ()):
      x = _PAD + c * (w + _PAD) + w / 2
      ax.text(x, -1, caption, fontsize=6, ha="center", va="bottom")
    ax.text(-2, _PAD + h / 2, name, fontsize=7, ha="right", va="center")
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

  from experiments import gan_plots  # pylint: disable=import-outside-toplevel

  if images.ndim == 4:  # one row per digit
    rows, cols = images.shape[:2]
  else:
    cols = min(10, len(images))
    rows = -(-len(images) // cols)
  fig, ax = plt.subplots(figsize=(cols * 0.8, rows * 0.8 + 0.3))
  gan_plots.show(ax, gan_plots.mosaic(images.reshape(-1, *images.shape[-2:]), rows, cols, pad=_PAD))
  ax.set_title(title, fontsize=8)
  fig.savefig(path, dpi=120)
  plt.close(fig)
