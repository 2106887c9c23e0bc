r"""Complete digits with a trained BigLearn-GAN: x_T ~ p_theta(x_T | x_S), for sources you choose.

  python -m experiments.gan_complete --workdir /tmp/gan_cpu --images IN.npz --source_ratio 0.5 \
      --num_samples 8 --seed 0 --out /tmp/completions.npz
  ... --initial_portion          S = the first round(R L) patches in raster order (Fig. 5b)
  ... --mask MASK.npz            S (and optionally T) given per patch, see below

Loads the run's config (`config.json`) and the newest restorable checkpoint in --workdir (the
generator's EMA parameters when the run kept them). `IN.npz` holds `images` [num_images, 28, 28]
uint8 as in MNIST. Each image gets its own random source set of round(R L) patches (seeded by
--seed), or the patches of MASK.npz: `source_mask` (and optionally `target_mask`, default the
complement of S) as bool [L], [num_images, L], [Hp, Wp] or [num_images, Hp, Wp] patch grids
(Hp = image_size / patch_size).

Writes OUT.npz:
  completions   uint8 [num_images, num_samples, H, W] at the input's resolution; equal to the
                input wherever source_mask is true
  source_mask   bool [num_images, H, W], true on the pixels of source patches
  target_mask   bool [num_images, H, W], true on the pixels of target patches
  patch_source_mask, patch_target_mask   bool [num_images, L], the same per patch
and OUT.png, a Fig. 5 / Fig. 16 style grid: the given pixels in the first row, one row per noise
draw, the real digits in the last row (at most 16 digits are drawn).
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from bigjax import tasks
from bigjax.data import mnist
from bigjax.models import patch_masks_to_pixels, patchify
from experiments import cli
from experiments import gan_samples
from experiments import gan_setup

MAX_PNG_IMAGES = 16


def read_images(path: str) -> np.ndarray:
  """uint8 [num_images, H, W] from the `images` entry of an .npz file."""
  images, _ = cli.read_images(path)
  if images.ndim != 3 or images.shape[1] != images.shape[2]:
    raise ValueError(
        f"`images` in {path} must be uint8 [num_images, H, H] like MNIST's "
        f"[N, 28, 28], got {images.dtype} {images.shape}."
    )
  return images


def _patch_mask(mask: np.ndarray, num_images: int, grid: tuple[int, int], name: str):
  length = grid[0] * grid[1]
  mask = np.asarray(mask)
  if mask.dtype != bool:
    if not np.isin(mask, (0, 1)).all():
      raise ValueError(f"{name} must be boolean (or 0/1), got {mask.dtype}.")
    mask = mask.astype(bool)
  if mask.shape in ((length,), grid):
    mask = np.broadcast_to(mask.reshape(1, length), (num_images, length))
  elif mask.shape in ((num_images, length), (num_images,) + grid):
    mask = mask.reshape(num_images, length)
  else:
    raise ValueError(
        f"{name} has shape {mask.shape}; use [L] = ({length},), {grid}, "
        f"({num_images}, {length}) or {(num_images,) + grid} (one entry per patch "
        f"of the model's {grid[0]}x{grid[1]} patch grid)."
    )
  return np.array(mask)


def source_target_masks(
    num_images: int,
    config,
    *,
    source_ratio: float | None,
    seed: int,
    initial_portion: bool = False,
    mask_file: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Patch masks (S, T), bool [num_images, L], checked: disjoint, T non-empty."""
  p = config.model.patch_size
  grid = (config.data.image_size // p, config.data.image_size // p)
  length = grid[0] * grid[1]
  if mask_file is not None:
    with np.load(mask_file) as data:
      if "source_mask" not in data:
        raise ValueError(f"{mask_file} has no `source_mask` (found {sorted(data.keys())}).")
      source = _patch_mask(data["source_mask"], num_images, grid, "source_mask")
      target = (
          _patch_mask(data["target_mask"], num_images, grid, "target_mask")
          if "target_mask" in data
          else ~source
      )
  else:
    if source_ratio is None or not 0.0 <= source_ratio < 1.0:
      raise ValueError(
          f"--source_ratio must be in [0, 1) (the fraction of patches given), got "
          f"{source_ratio}."
      )
    num_source = int(round(source_ratio * length))
    if num_source >= length:
      raise ValueError(f"--source_ratio {source_ratio} leaves no target patch of {length}.")
    source = gan_samples.source_masks(seed, num_images, length, num_source, initial=initial_portion)
    target = ~source
  tasks.check_masks(source, target)
  return source, target


def pixel_masks(patch_mask: np.ndarray, config, size: int) -> np.ndarray:
  """Patch mask [N, L] -> bool [N, size, size]: a pixel is in a patch when its centre is."""
  res = int(config.data.image_size)
  full = np.asarray(
      patch_masks_to_pixels(jnp.asarray(patch_mask), (res, res), config.model.patch_size)
  )
  centres = ((np.arange(size) + 0.5) * res / size).astype(int)
  return full[:, centres][:, :, centres]


def complete(
    config, g_params, images: np.ndarray, source: np.ndarray, *, num_samples: int, rng
) -> np.ndarray:
  """Completions uint8 [num_images, num_samples, H, W] of `images` uint8 [num_images, H, W] from
  patch sources `source` bool [num_images, L], at the input's resolution; source pixels are
  the input's own."""
  gen, _ = gan_setup.build_models(config)
  res, p = int(config.data.image_size), config.model.patch_size
  size = images.shape[1]
  model_images = images if size == res else mnist.resize(images, res)
  patches = patchify(jnp.asarray(mnist.to_unit_range(model_images)), p)
  sample_fn = gan_samples.make_sampler(gen, (res, res), p)
  draw = lambda key: sample_fn(
      g_params, patches, jnp.asarray(source), jax.random.normal(key, (len(images), gen.noise_dim))
  )
  out = np.stack(
      [mnist.from_unit_range(np.asarray(draw(k))) for k in jax.random.split(rng, num_samples)],
      axis=1,
  )
  if size != res:
    out = mnist.resize(out.reshape((-1, res, res)), size).reshape(
        (len(images), num_samples, size, size)
    )
  given = pixel_masks(source, config, size)
  return np.where(given[:, None], images[:, None], out)


def run(
    workdir: str,
    images_path: str,
    out_path: str,
    *,
    source_ratio: float | None,
    num_samples: int,
    seed: int,
    initial_portion: bool = False,
    mask_file: str | None = None,
) -> dict[str, Any]:
  """The entry point's work; returns a summary (paths, step, shapes)."""
  if num_samples < 1:
    raise ValueError(f"--num_samples must be >= 1, got {num_samples}.")
  config, params, step = gan_setup.load_run(workdir)
  images = read_images(images_path)
  source, target = source_target_masks(
      len(images),
      config,
      source_ratio=source_ratio,
      seed=seed,
      initial_portion=initial_portion,
      mask_file=mask_file,
  )
  completions = complete(
      config, params, images, source, num_samples=num_samples, rng=jax.random.key(seed)
  )
  size = images.shape[1]
  source_px, target_px = pixel_masks(source, config, size), pixel_masks(target, config, size)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  np.savez(
      out_path,
      completions=completions,
      source_mask=source_px,
      target_mask=target_px,
      patch_source_mask=source,
      patch_target_mask=target,
  )
  png = os.path.splitext(out_path)[0] + ".png"
  from experiments import gan_plots  # matplotlib only when drawing

  n = min(len(images), MAX_PNG_IMAGES)
  gan_plots.completion_figure(
      images[:n],
      source_px[:n],
      completions[:n],
      png,
      title=f"BigLearn-GAN completions (step {step}, "
      f"{int(source[0].sum())}/{source.shape[1]} patches given)",
  )
  return dict(out=out_path, png=png, step=step, completions=list(completions.shape))


def define_flags() -> dict[str, Any]:
  """Defines the flags (only when run as a program, so that tests can import this module next
  to the other experiments without duplicate absl flags)."""
  return dict(
      workdir=flags.DEFINE_string("workdir", None, "A BigLearn-GAN run directory."),
      images=flags.DEFINE_string("images", None, "An .npz with `images` uint8 [N, 28, 28]."),
      source_ratio=flags.DEFINE_float(
          "source_ratio", None, "Fraction of patches given (ignored with --mask)."
      ),
      mask=flags.DEFINE_string(
          "mask", None, "An .npz with `source_mask` (and optionally `target_mask`)."
      ),
      initial_portion=flags.DEFINE_bool(
          "initial_portion", False, "Give the first patches in raster order instead of random ones."
      ),
      num_samples=flags.DEFINE_integer("num_samples", 8, "Noise draws per image."),
      seed=flags.DEFINE_integer("seed", 0, "Seed of the source sets and the noise."),
      out=flags.DEFINE_string("out", None, "Output .npz (a .png is written next to it)."),
  )


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = {k: v.value for k, v in _FLAGS.items()}
  for name in ("workdir", "images", "out"):
    if not f[name]:
      raise app.UsageError(f"--{name} is required.")
  if f["mask"] is None and f["source_ratio"] is None:
    raise app.UsageError("give --source_ratio R (or --mask MASK.npz).")
  summary = run(
      f["workdir"],
      f["images"],
      f["out"],
      source_ratio=f["source_ratio"],
      num_samples=f["num_samples"],
      seed=f["seed"],
      initial_portion=f["initial_portion"],
      mask_file=f["mask"],
  )
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  _FLAGS = define_flags()
  app.run(main)
