r"""Speed of one BigLearn-GAN training iteration (D step + G step), per config variant.

  python -m benchmarks.gan_step --variants cpu paper --steps 20
  python -m benchmarks.gan_step --variants paper --batch_size 32 --steps 5   # paper model, small batch

For each variant: compile time of the jitted step, then the median wall time per step over
`--steps` steps (after 2 warm-up steps), images per second, and the parameter counts. Data are
random patches in [-1, 1] (the step's cost does not depend on them). Prints one JSON object per
variant; results are written down in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from bigjax import sharding
from configs import gan_mnist
from experiments import biglearn_gan


def measure(variant: str, steps: int, batch_size: int | None) -> dict:
  config = gan_mnist.get_config(variant)
  if batch_size:
    config.batch_size = batch_size
  mesh = sharding.data_mesh()
  state_sharding = sharding.replicated(mesh)
  state = jax.jit(lambda k: biglearn_gan.init_state(config, k),
                  out_shardings=state_sharding)(jax.random.key(0))
  counts = {name: int(sum(x.size for x in jax.tree.leaves(getattr(state, name))))
            for name in ("g_params", "d_params")}
  step_fn = biglearn_gan.jit_train_step(config, mesh, state_sharding)
  size = config.data.image_size
  rng = np.random.default_rng(0)
  batch = sharding.global_batch(
      rng.uniform(-1, 1, (config.batch_size, size, size)).astype(np.float32), mesh)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  for _ in range(2):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  per_step = float(np.median(times))
  return dict(variant=variant, batch_size=config.batch_size, image_size=size,
              compile_s=round(compile_s, 2), step_s=round(per_step, 4),
              steps_per_s=round(1 / per_step, 2),
              images_per_s=round(config.batch_size / per_step, 1), **counts,
              devices=[str(d) for d in jax.devices()], backend=jax.default_backend(),
              jax=jax.__version__, cpu_count=os.cpu_count(), platform=platform.platform())


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variants", nargs="+", default=["cpu"], choices=gan_mnist.VARIANTS)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=None,
                      help="override the variant's batch size")
  args = parser.parse_args()
  for variant in args.variants:
    print(json.dumps(measure(variant, args.steps, args.batch_size)), flush=True)


if __name__ == "__main__":
  main()
