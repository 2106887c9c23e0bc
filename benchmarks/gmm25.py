"""Wall time and memory of the full 25-GMM paper protocol (Sec. 4.1, App. C).

Measured, each seed count in its own subprocess (so peak memory is its own): the `paper`
config (10,000 outer iterations x 20 inner SGD steps, 100 samples) for 1 seed and for 16 seeds
in one jitted call (seeds mapped by `lax.map`, `--seeds_per_batch` of them side by side under
vmap; default: the config's, 1 = sequential): compile time (lower + compile of the chunk
program), steady-state run time (the compiled chunks, excluding compile), per-seed time and
the speed-up against the reference's ~360 s per seed, peak resident memory and, where the
backend reports it (GPU, TPU), the device allocator's peak.

  python -m benchmarks.gmm25                    # 1 and 16 seeds, appends to RESULTS.md
  python -m benchmarks.gmm25 --seeds 1 --no-write
  python -m benchmarks.gmm25 --seeds 16 --seeds_per_batch 16   # all seeds in one vmap
  python -m benchmarks.gmm25 --seeds 1 64 1024 --seeds_per_batch 1024 --no-write \
      --json /tmp/gmm25.json                    # a GPU: thousands of seeds side by side

How the seeds are mapped decides what runs (`experiments.gmm25.map_seeds`): with
seeds_per_batch = 1 a `lax.map` takes one seed at a time and the per-outer-iteration
`lax.switch` runs only the drawn task's branch; with seeds_per_batch > 1 the seeds of a batch
run under `vmap`, where the switch's index is batched and JAX turns it into a `select_n` over
the outputs of every branch, so every task's inner loop runs for every seed (both tasks of the
`paper` protocol: the joint and the marginal). Each row's `formulation` says which.

Each row also carries the fields of benchmarks/gpu_suite.py's schema (`experiment: "gmm25"`,
`device`, `config`, `batch_size` = seeds side by side, `dtype`, `step_seconds` = run seconds
per outer iteration of all seeds, `images_per_second` and `mfu` None, `peak_memory_bytes`,
`num_seeds`, `seconds_per_seed`, `speedup_vs_reference`: None for variants other than
`paper`); `--json PATH` writes them (one object for one seed count, else a list).
`--in_process` measures in this process instead.
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
REFERENCE_SECONDS = 360.0  # the reference code, one seed, same protocol (~6 minutes)


def formulation(num_seeds: int, seeds_per_batch: int) -> str:
  """What `experiments.gmm25.map_seeds` does for these numbers (see the module docstring)."""
  if seeds_per_batch == 1:
    return "lax.map, one seed at a time: lax.switch runs the drawn task only"
  side = min(seeds_per_batch, num_seeds)
  how = "one vmap" if seeds_per_batch >= num_seeds else f"lax.map over vmap batches of {side}"
  return f"{how}: lax.switch becomes select_n, every task's branch runs"


def worker(num_seeds: int, variant: str, seeds_per_batch: int | None) -> dict:
  from benchmarks import gan_step
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
  per_batch = int(config.seeds_per_batch)
  seconds_per_seed = out["seconds"] / num_seeds
  return dict(
      experiment="gmm25",
      config=f"gmm25:{variant}",
      variant=variant,
      num_seeds=num_seeds,
      seeds_per_batch=per_batch,
      batch_size=min(per_batch, num_seeds),
      dtype="float32",
      formulation=formulation(num_seeds, per_batch),
      num_outer_iterations=int(config.num_outer_iterations),
      inner_steps=int(config.inner_steps),
      num_samples=int(config.num_samples),
      compile_seconds=out["compile_seconds"],
      run_seconds=out["seconds"],
      seconds_per_seed=seconds_per_seed,
      step_seconds=out["seconds"] / int(config.num_outer_iterations),
      # The reference's time is for the `paper` protocol; other variants have none.
      speedup_vs_reference=(REFERENCE_SECONDS / seconds_per_seed if variant == "paper" else None),
      reference_seconds_per_seed=REFERENCE_SECONDS if variant == "paper" else None,
      images_per_second=None,
      mfu=None,
      peak_memory_bytes=gan_step.peak_memory_bytes(),
      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
      modes_recovered_median=float(np.median(modes)),
      machine_text=_machine(),
      **gan_step.machine(),
  )


def _machine() -> str:
  import jax

  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return (
      f"{cpu}, {os.cpu_count()} cores, {platform.platform()}, Python "
      f"{platform.python_version()}, jax {jax.__version__} ({jax.default_backend()})"
  )


def _subprocess_row(n: int, variant: str, seeds_per_batch: int | None) -> dict:
  extra = [] if seeds_per_batch is None else ["--seeds_per_batch", str(seeds_per_batch)]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  out = subprocess.run(
      [sys.executable, "-m", "benchmarks.gmm25", "--worker", str(n), "--variant", variant, *extra],
      cwd=REPO,
      capture_output=True,
      text=True,
      env=env,
  )
  if out.returncode:
    raise RuntimeError(
        f"the {n}-seed measurement failed (exit status {out.returncode}):\n" f"{out.stderr[-3000:]}"
    )
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[1, 16])
  parser.add_argument("--variant", default="paper")
  parser.add_argument(
      "--seeds_per_batch",
      "--seeds-per-batch",
      dest="seeds_per_batch",
      type=int,
      default=None,
      help="seeds side by side under vmap (default: the config's; 1 = " "sequential lax.map)",
  )
  parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
  parser.add_argument(
      "--json",
      default=None,
      metavar="PATH",
      help="also write the rows to PATH (one object, or a list of several)",
  )
  parser.add_argument(
      "--in_process",
      action="store_true",
      help="measure in this process (no isolation of peak memory)",
  )
  parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  from configs import gmm25 as config_lib

  if args.variant not in config_lib.VARIANTS:
    parser.error(
        f"unknown --variant {args.variant!r}; choose one of " f"{', '.join(config_lib.VARIANTS)}."
    )
  if any(n < 1 for n in args.seeds) or (
      args.seeds_per_batch is not None and args.seeds_per_batch < 1
  ):
    parser.error("--seeds and --seeds_per_batch must be positive.")
  if args.worker is not None:
    print(json.dumps(worker(args.worker, args.variant, args.seeds_per_batch)))
    return
  from benchmarks import gan_step  # jax-free, like this parent process

  rows = []
  for n in args.seeds:
    run = worker if args.in_process else _subprocess_row
    gan_step.report_row(run(n, args.variant, args.seeds_per_batch), rows, args.json)
  lines = [
      f"\n## 25-GMM reverse-KL exploration, `{args.variant}` protocol "
      f"({datetime.date.today().isoformat()})\n",
      f"Machine: {rows[0]['machine_text']}.\n",
      f"Command: `python -m benchmarks.gmm25 --variant {args.variant} --seeds "
      f"{' '.join(map(str, args.seeds))}"
      + ("" if args.seeds_per_batch is None else f" --seeds_per_batch {args.seeds_per_batch}")
      + "` "
      + ("(all rows in one process" if args.in_process else "(each row its own process")
      + "; float32; metrics every record_every outer iterations included in the run "
      "time).\n",
      "| seeds | seeds per vmap batch | compile s | run s (steady state) | s per seed | "
      "speed-up vs reference ~360 s / seed | peak RSS MB | median modes |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    speedup = "-" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.0f}x"
    lines.append(
        f"| {r['num_seeds']} | {r['batch_size']} | {r['compile_seconds']:.1f} | "
        f"{r['run_seconds']:.1f} | {r['seconds_per_seed']:.2f} | {speedup} | "
        f"{r['peak_rss_mb']:.0f} | {r['modes_recovered_median']:g} |"
    )
  text = "\n".join(lines) + "\n"
  print(text)
  if not args.no_write:
    with open(os.path.join(REPO, "benchmarks", "RESULTS.md"), "a") as f:
      f.write(text)


if __name__ == "__main__":
  main()
