r"""The paper's BigLearn-GAN figures from any checkpoint: Fig. 5, Fig. 13/14 and Fig. 16.

  python -m experiments.gan_figures --workdir /tmp/gan_cpu --out_dir /tmp/gan_cpu/figures

Writes into --out_dir (PNG, plus the uint8 arrays of each figure in figures.npz):
  fig5a_random.png    completion from random S (--ratio of the patches): the given pixels in the
                      first row, one row per noise draw, the real images in the last row
  fig5b_initial.png   the same with the first patches in raster order as S (initial portion)
  fig13_ratios.png    source ratio 0.0 (joint generation), 0.1, ..., 0.9 across the columns,
                      the same noise along each row, the real image in the last column; the
                      first row shows each column's S (white) and T (black). The sources are
                      nested: each column's S contains the previous one.
  fig16a_sources.png  one image x, several source sets S (row 1: the given pixels, row 2: a
                      completion), for a few x
  fig16b_noise.png    one x_S, several noises z: one row per image, the given pixels first
Images come from --images IN.npz (`images` uint8 [N, H, W] or [N, H, W, 3]) or, by default, the
held-out split of the run's data (MNIST's `test` split, CelebA's `test` partition).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from bigjax.data import mnist
from bigjax.models import patch_masks_to_pixels, patchify
from experiments import cli
from experiments import gan_samples
from experiments import gan_setup

FIGURES = ("fig5a_random", "fig5b_initial", "fig13_ratios", "fig16a_sources", "fig16b_noise")


class Drawer:
  """Completions x_T ~ p(x_T | x_S) of fixed images with the run's generator (one jit)."""

  def __init__(self, config, g_params, images: np.ndarray):
    shape = gan_setup.image_shape(config)
    if images.shape[1:] != shape or images.dtype != np.uint8:
      raise ValueError(
          f"images must be uint8 {('N',) + shape} for this run, got "
          f"{images.dtype} {images.shape}."
      )
    self.gen, _ = gan_setup.build_models(config)
    self.p, self.shape, self.params = config.model.patch_size, shape, g_params
    self.images = images
    self.patches = np.asarray(patchify(jnp.asarray(mnist.to_unit_range(images)), self.p))
    self.length = self.gen.num_patches
    self._sample = gan_samples.make_sampler(self.gen, shape, self.p)

  def __call__(self, index: np.ndarray, source: np.ndarray, z: np.ndarray) -> np.ndarray:
    """uint8 images of `self.images[index]` completed from patch masks `source` [N, L] with
    noise `z` [N, Z]."""
    out = self._sample(self.params, self.patches[index], source, z)
    return mnist.from_unit_range(np.asarray(out))

  def pixels(self, source: np.ndarray) -> np.ndarray:
    return np.asarray(patch_masks_to_pixels(jnp.asarray(source), self.shape[:2], self.p))

  def noise(self, rng: np.random.Generator, *shape) -> np.ndarray:
    return rng.standard_normal(shape + (self.gen.noise_dim,)).astype(np.float32)


def _mask_tile(pixels: np.ndarray, like: np.ndarray) -> np.ndarray:
  """A white (S) / black (T) picture of a pixel mask, with the channels of `like`."""
  tile = np.where(pixels, 255, 0).astype(np.uint8)
  return np.repeat(tile[..., None], like.shape[-1], -1) if like.ndim == 4 else tile


def figures(
    config, g_params, images: np.ndarray, *, ratio: float = 0.5, num_noise: int = 6, seed: int = 0
) -> dict[str, np.ndarray]:
  """The figures as uint8 mosaics (grayscale [h, w] or RGB [h, w, 3]), keyed by FIGURES."""
  from experiments import gan_plots  # pylint: disable=import-outside-toplevel

  draw = Drawer(config, g_params, images)
  n, length = len(images), draw.length
  rng = np.random.default_rng([seed, 5])
  idx = np.arange(n)
  k = int(round(ratio * length))
  out = {}

  # Fig. 5a / 5b: one column per image; given row, num_noise rows of draws, the real row.
  for name, initial in (("fig5a_random", False), ("fig5b_initial", True)):
    source = gan_samples.source_masks([seed, 5, initial], n, length, k, initial=initial)
    z = draw.noise(rng, num_noise, n)
    rows = [gan_plots.shown_source(images, draw.pixels(source))]
    rows += [draw(idx, source, z[i]) for i in range(num_noise)] + [images]
    out[name] = gan_plots.mosaic(np.concatenate(rows), len(rows), n)

  # Fig. 13 / 14: columns = ratios 0.0 ... 0.9 (nested random S), the same z along each row.
  ratios = [round(0.1 * i, 1) for i in range(10)]
  order = rng.permutation(length)
  z = draw.noise(rng, n)
  tiles = []
  for r in ratios:
    source = np.zeros((n, length), bool)
    source[:, order[: int(round(r * length))]] = True
    tiles.append((source, draw(idx, source, z)))
  header = [_mask_tile(draw.pixels(s[:1])[0], images) for s, _ in tiles]
  header.append(np.full_like(images[0], 255))
  cells = [header] + [[c[i] for _, c in tiles] + [images[i]] for i in range(n)]
  out["fig13_ratios"] = gan_plots.mosaic(
      np.stack([c for row in cells for c in row]), n + 1, len(ratios) + 1
  )

  # Fig. 16a: for each image, num_noise source sets of random ratios in [0.1, 0.7]; row 1 the
  # given pixels, row 2 a completion. Images along the mosaic's rows in pairs of rows.
  cells = []
  for i in range(n):
    counts = np.round(rng.uniform(0.1, 0.7, num_noise) * length).astype(np.int32)
    source = gan_samples.source_masks([seed, 16, i], num_noise, length, counts)
    rep = np.full(num_noise, i)
    given = gan_plots.shown_source(images[rep], draw.pixels(source))
    done = draw(rep, source, draw.noise(rng, num_noise))
    cells += [list(given) + [images[i]], list(done) + [np.full_like(images[i], 255)]]
  out["fig16a_sources"] = gan_plots.mosaic(
      np.stack([c for row in cells for c in row]), 2 * n, num_noise + 1
  )

  # Fig. 16b: one x_S per row (random S at `ratio`), num_noise different z.
  cells = []
  for i in range(n):
    source = gan_samples.source_masks([seed, 17, i], 1, length, k)
    rep, reps = np.full(num_noise, i), np.repeat(source, num_noise, 0)
    done = draw(rep, reps, draw.noise(rng, num_noise))
    cells.append([gan_plots.shown_source(images[i : i + 1], draw.pixels(source))[0]] + list(done))
  out["fig16b_noise"] = gan_plots.mosaic(
      np.stack([c for row in cells for c in row]), n, num_noise + 1
  )
  return out


_TITLES = dict(
    fig5a_random="completion from random S (row 1 given, last row real)",
    fig5b_initial="completion from the initial portion (row 1 given, last row real)",
    fig13_ratios="source ratio 0.0 to 0.9 (row 1: S white, T black; same z per row; "
    "last column real)",
    fig16a_sources="various S for one x (odd rows given, even rows completed; real at right)",
    fig16b_noise="various z for one x_S (given pixels first)",
)


def write(figs: dict[str, np.ndarray], out_dir: str, *, step: int, variant: str) -> list[str]:
  """One PNG per figure and figures.npz; returns the PNG paths."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from experiments import gan_plots  # pylint: disable=import-outside-toplevel

  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for name, img in figs.items():
    h, w = img.shape[:2]
    fig, ax = plt.subplots(figsize=(max(3.0, w / 40), max(2.0, h / 40) + 0.5))
    gan_plots.show(ax, img)
    ax.set_title(f"BigLearn-GAN {variant}, step {step}: {_TITLES[name]}", fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, name + ".png")
    fig.savefig(path + ".tmp.png", dpi=150)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)
    paths.append(path)
  np.savez(os.path.join(out_dir, "figures.npz"), **figs)
  return paths


def run(
    workdir: str,
    out_dir: str | None = None,
    *,
    images_path: str | None = None,
    num_images: int = 8,
    ratio: float = 0.5,
    num_noise: int = 6,
    seed: int = 0,
    params: str = "auto",
) -> dict[str, Any]:
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f"--ratio must be in [0, 1), got {ratio}.")
  if num_images < 1 or num_noise < 1:
    raise ValueError("--num_images and --num_noise must be >= 1.")
  config, g_params, step = gan_setup.load_run(workdir, params=params)
  if images_path:
    images = cli.read_images(images_path)[0][:num_images]
  else:
    images = gan_setup.heldout_images(config, num_images)
  out_dir = out_dir or os.path.join(workdir, "figures")
  paths = write(
      figures(config, g_params, images, ratio=ratio, num_noise=num_noise, seed=seed),
      out_dir,
      step=step,
      variant=config.variant,
  )
  return dict(step=step, figures=paths)


def main(argv):
  from absl import app  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel

  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = {k: v.value for k, v in _FLAGS.items()}
  if not f["workdir"]:
    raise app.UsageError("--workdir is required.")
  print(
      json.dumps(
          run(
              f["workdir"],
              f["out_dir"],
              images_path=f["images"],
              num_images=f["num_images"],
              ratio=f["ratio"],
              num_noise=f["num_noise"],
              seed=f["seed"],
              params=f["params"],
          ),
          indent=1,
      )
  )


if __name__ == "__main__":
  from absl import app as _app  # pylint: disable=import-outside-toplevel
  from absl import flags as _flags  # pylint: disable=import-outside-toplevel

  _FLAGS = dict(
      workdir=_flags.DEFINE_string("workdir", None, "A BigLearn-GAN run directory."),
      out_dir=_flags.DEFINE_string("out_dir", None, "Default <workdir>/figures."),
      images=_flags.DEFINE_string("images", None, "An .npz with `images` (default: held-out)."),
      num_images=_flags.DEFINE_integer("num_images", 8, "Images per figure."),
      ratio=_flags.DEFINE_float("ratio", 0.5, "Source ratio of Fig. 5a and 16b."),
      num_noise=_flags.DEFINE_integer("num_noise", 6, "Noise draws / source sets per image."),
      seed=_flags.DEFINE_integer("seed", 0, "Seed of the source sets and the noise."),
      params=_flags.DEFINE_enum(
          "params",
          "auto",
          list(gan_setup.PARAMS),
          "Generator parameters: EMA, trained, or EMA when kept.",
      ),
  )
  _app.run(main)
