"""Fixed inputs and draws for the BigLearn-GAN sample grids written during training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bigjax import tasks
from bigjax.data import mnist
from bigjax.evaluation.chunked import by_value
from bigjax.models import Generator, patchify, unpatchify


@by_value
def make_sampler(gen: Generator, shape: tuple[int, int], p: int):
  """jitted (g_params, patches [B, L, P], source_mask [B, L], z [B, Z]) -> images [B, H, W] of
  `shape`, for the generator `gen` with patch size `p`; one function per (gen, shape, p) in a
  process (`by_value`), so another run or figure of the same generator traces nothing again."""

  @jax.jit
  def sample(g_params, patches, source, z):
    return unpatchify(gen.apply(g_params, patches, source, z), shape, p)

  return sample


def source_masks(
    seed, num_images: int, length: int, num_source, *, initial: bool = False
) -> np.ndarray:
  """bool [num_images, length] patch masks with `num_source` source patches per image: the
  first ones in raster order (initial portion) or a random set per image, drawn by
  `bigjax.tasks.source_sets` from `seed` (an int or a sequence of ints)."""
  key = jax.random.key(0)
  for part in np.atleast_1d(seed):
    key = jax.random.fold_in(key, int(part))
  return np.asarray(tasks.source_sets(key, num_images, length, num_source, initial_portion=initial))


def eval_inputs(gen: Generator, images: np.ndarray, config) -> dict[str, np.ndarray]:
  """Fixed digits, masks and noise for the sample grids (the same at every step): config.seed
  and config.eval (num_images, num_completions, num_joint) choose them."""
  e = config.eval
  rng = np.random.default_rng([int(config.seed), 7])
  idx = rng.choice(len(images), e.num_images, replace=False)
  length = gen.num_patches
  half = source_masks([config.seed, 7], e.num_images, length, length // 2)
  top = source_masks([config.seed, 7], e.num_images, length, length // 2, initial=True)
  return dict(
      images=images[idx],
      random_half=half,
      top_half=top,
      z_completion=rng.standard_normal((e.num_completions, e.num_images, gen.noise_dim)).astype(
          np.float32
      ),
      z_joint=rng.standard_normal((e.num_joint, gen.noise_dim)).astype(np.float32),
  )


def draw_samples(sample_fn, params, config, ev) -> dict[str, np.ndarray]:
  """Joint generations [num_joint, H, W] and completions [num_completions, num_images, H, W] for
  both source masks, uint8."""
  p = config.model.patch_size
  real = patchify(jnp.asarray(mnist.to_unit_range(ev["images"])), p)
  joint = sample_fn(
      params,
      jnp.zeros((len(ev["z_joint"]),) + real.shape[1:]),
      jnp.zeros((len(ev["z_joint"]), real.shape[1]), bool),
      ev["z_joint"],
  )
  out = dict(joint=mnist.from_unit_range(np.asarray(joint)))
  for name in ("random_half", "top_half"):
    out[name] = np.stack(
        [
            mnist.from_unit_range(np.asarray(sample_fn(params, real, ev[name], z)))
            for z in ev["z_completion"]
        ]
    )
  return out
