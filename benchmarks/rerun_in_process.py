r"""Seconds of the same GAN smoke run trained again and again in one process, with the jitted
programs reused (`bigjax.training.programs.by_config`, and the sampler's `by_value`) and without
(their caches emptied before each run, as every run built new ones before).

  python -m benchmarks.rerun_in_process --runs 4

Each run trains `configs/gan_mnist.py:smoke` into a new temporary directory. The first run of a
process also pays for everything else it is the first to use (imports, the sampler's programs,
the persistent compilation cache's reads); the runs after it show what a rerun costs. Prints one
JSON object per run (mode, run, seconds, compile_seconds: the first step's time).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from bigjax.training import programs
from configs import gan_mnist
from experiments import biglearn_gan
from experiments import gan_samples


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=4, help="runs per mode (>= 2)")
  args = parser.parse_args()
  if args.runs < 2:
    parser.error(
        f"--runs must be at least 2 (the first run of a mode is not a rerun), got {args.runs}."
    )
  config = gan_mnist.get_config("smoke")
  for mode in ("new programs per run", "programs reused"):
    for i in range(args.runs):
      if mode == "new programs per run":
        biglearn_gan.jit_train_step.cache_clear()
        programs.jit_init.cache_clear()
        gan_samples.make_sampler.cache_clear()
      with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = biglearn_gan.train_and_evaluate(config, f"{tmp}/run", progress=False)
        seconds = time.perf_counter() - t0
      print(
          json.dumps(
              dict(
                  mode=mode,
                  run=i,
                  seconds=round(seconds, 2),
                  compile_seconds=round(summary["compile_seconds"], 3),
              )
          ),
          flush=True,
      )


if __name__ == "__main__":
  main()
