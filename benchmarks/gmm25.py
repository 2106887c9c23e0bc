"""Wall time and memory of the full 25-GMM paper protocol (Sec. 4.1, App. C).

Measured, each in its own subprocess (so peak memory is its own): the `paper` config (10,000
outer iterations x 20 inner SGD steps, 100 samples) for 1 seed and for 16 seeds in one jitted
call (seeds mapped by `lax.map`, `--seeds-per-batch` of them side by side under vmap; default:
the config's, 1 = sequential): compile time (lower + compile of the chunk program), steady-
state run time (the compiled chunks, excluding compile), per-seed time, peak resident memory.

  python -m benchmarks.gmm25                    # 1 and 16 seeds, appends to RESULTS.md
  python -m benchmarks.gmm25 --seeds 1 --no-write
  python -m benchmarks.gmm25 --seeds 16 --seeds-per-batch 16   # all seeds in one vmap
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_SECONDS = 360.0   # the reference code, one seed, same protocol (~6 minutes)


def worker(num_seeds: int, variant: str, seeds_per_batch: int | None) -> dict:
  from configs import gmm25 as config_lib
  from experiments import gmm25
  import numpy as np
  config = config_lib.get_config(variant)
  config.num_seeds = num_seeds
  if seeds_per_batch is not None:
    config.seeds_per_batch = seeds_per_batch
  config.plots = False
  out = gmm25.run(config, progress=False)
  modes = out["metrics"][f"modes_recovered_r{config.recover_radii[0]}"][:, -1]
  return dict(variant=variant, num_seeds=num_seeds,
              seeds_per_batch=min(int(config.seeds_per_batch), num_seeds),
              compile_seconds=out["compile_seconds"],
              run_seconds=out["seconds"], seconds_per_seed=out["seconds"] / num_seeds,
              peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              modes_recovered_median=float(np.median(modes)))


def _machine() -> str:
  import jax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return (f"{cpu}, {os.cpu_count()} cores, {platform.platform()}, Python "
          f"{platform.python_version()}, jax {jax.__version__} ({jax.default_backend()})")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 16])
  parser.add_argument("--variant", default="paper")
  parser.add_argument("--seeds-per-batch", type=int, default=None,
                      help="seeds side by side under vmap (default: the config's)")
  parser.add_argument("--no-write", action="store_true")
  parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker is not None:
    print(json.dumps(worker(args.worker, args.variant, args.seeds_per_batch)))
    return
  rows = []
  for n in args.seeds:
    extra = ([] if args.seeds_per_batch is None
             else ["--seeds-per-batch", str(args.seeds_per_batch)])
    out = subprocess.run([sys.executable, "-m", "benchmarks.gmm25", "--worker", str(n),
                          "--variant", args.variant, *extra], cwd=REPO,
                         capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=REPO))
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(rows[-1], flush=True)
  lines = [f"\n## 25-GMM reverse-KL exploration, `{args.variant}` protocol "
           f"({datetime.date.today().isoformat()})\n",
           f"Machine: {_machine()}.\n",
           f"Command: `python -m benchmarks.gmm25 --variant {args.variant} --seeds "
           f"{' '.join(map(str, args.seeds))}"
           + ("" if args.seeds_per_batch is None
              else f" --seeds-per-batch {args.seeds_per_batch}") + "` "
           "(each row its own process; float32; 10,000 outer x 20 inner SGD steps, 100 "
           "samples; metrics every 100 outer iterations included in the run time).\n",
           "| seeds | seeds per vmap batch | compile s | run s (steady state) | s per seed | "
           "speed-up vs reference ~360 s / seed | peak RSS MB | median modes |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['num_seeds']} | {r['seeds_per_batch']} | {r['compile_seconds']:.1f} | "
                 f"{r['run_seconds']:.1f} | "
                 f"{r['seconds_per_seed']:.2f} | {REFERENCE_SECONDS / r['seconds_per_seed']:.0f}x"
                 f" | {r['peak_rss_mb']:.0f} | {r['modes_recovered_median']:g} |")
  text = "\n".join(lines) + "\n"
  print(text)
  if not args.no_write:
    with open(os.path.join(REPO, "benchmarks", "RESULTS.md"), "a") as f:
      f.write(text)


if __name__ == "__main__":
  main()
