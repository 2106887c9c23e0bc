r"""Step time of a trainer run as 1 and as N processes on this machine (bigjax.launch).

  python -m benchmarks.multiprocess                                  # GAN `cpu`, 1 and 2 processes
  python -m benchmarks.multiprocess --config configs/gan_mnist.py:cpu --steps 60 \
      --processes 1 2 --json /tmp/mp.json

Each measurement is a whole `python -m experiments.biglearn_gan` run started by
`python -m bigjax.launch --num_processes N` (N = 1 is a plain one-process run), with the same
global batch; `steps_per_sec` is the median over the metrics rows after the first (the first
window holds the compilation), `wall_s` the launcher's whole run (start-up, compilation, the
steps, the final checkpoint and sample grid). Processes on one machine share its cores: this
measures what the multi-process path costs here, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(config: str, steps: int, processes: int, log_every: int) -> dict:
  """One run of `config` for `steps` steps as `processes` processes; its timings."""
  with tempfile.TemporaryDirectory(prefix="bigjax_mp_") as tmp:
    workdir = os.path.join(tmp, "run")
    command = [
        sys.executable,
        "-m",
        "bigjax.launch",
        f"--num_processes={processes}",
        "--",
        sys.executable,
        "-m",
        "experiments.biglearn_gan",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.num_steps={steps}",
        f"--config.log_every={log_every}",
        f"--config.checkpoint_every={steps}",
        f"--config.sample_every={steps}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
      raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f]
    with open(os.path.join(workdir, "run.json")) as f:
      run = json.load(f)
    rates = [r["steps_per_sec"] for r in rows[1:]]
    with open(os.path.join(workdir, "config.json")) as f:
      batch = json.load(f)["batch_size"]
  return dict(
      config=config,
      processes=processes,
      devices=len(run["devices"]),
      batch_size=batch,
      steps=steps,
      steps_per_sec=float(np.median(rates)),
      step_seconds=float(1 / np.median(rates)),
      images_per_sec=float(np.median(rates) * batch),
      compile_seconds=run["compile_seconds"],
      wall_s=wall,
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/gan_mnist.py:cpu")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--log_every", type=int, default=10)
  parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  rows = [measure(args.config, args.steps, n, args.log_every) for n in args.processes]
  print("| processes | devices | global batch | step | images/s | compile | whole run |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(
        f"| {r['processes']} | {r['devices']} | {r['batch_size']} | {r['step_seconds']:.3f} s "
        f"| {r['images_per_sec']:.0f} | {r['compile_seconds']:.1f} s | {r['wall_s']:.1f} s |"
    )
  print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
