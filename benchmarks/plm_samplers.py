r"""Label agreement of one trained permutation model's label-conditioned samples, per sampler.

  python -m benchmarks.plm_samplers --workdir /tmp/plm_cpu
  python -m benchmarks.plm_samplers --workdir /tmp/plm_cpu --samplers 1,0 0.7,0 1,1 0.7,3 \
      --samples_per_label 50

A sampler is TEMPERATURE,GUIDANCE (bigjax.multimodal.sample): 1,0 is the model's own p(x' | y);
a temperature below 1 sharpens every token; guidance w > 0 sharpens p(x' | y) with the same
model's p(x'). For each, `samples_per_label` samples of every label are drawn in the run's
eval.order with the seed and batching `evaluate` uses, so 1,0 and the run's own eval.* sampler
draw the very samples behind eval.json's label_agreement and label_agreement_guided (at equal
samples_per_label), and judged by the run's MNIST classifier (eval.classifier_dir, or the one in
<workdir>/classifier). Prints one JSON object per sampler (agreement, per-label agreement,
seconds) and writes them all to <workdir>/samplers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bigjax.training import checkpoint as ckpt_lib
from experiments import plm_eval, plm_run


def sampler_spec(text: str) -> tuple[float, float]:
  """argparse type of a sampler: TEMPERATURE,GUIDANCE with temperature > 0 and guidance >= 0."""
  try:
    temperature, guidance = (float(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"a sampler is TEMPERATURE,GUIDANCE (e.g. 1,0 or 0.7,3), " f"got {text!r}."
    ) from None
  if not (temperature > 0 and guidance >= 0):
    raise argparse.ArgumentTypeError(
        f"a sampler needs temperature > 0 and guidance >= 0, got " f"{text!r}."
    )
  return temperature, guidance


def measure(workdir: str, samplers, *, samples_per_label: int = 50) -> list[dict]:
  """One row per (temperature, guidance) of `samplers` for the run in `workdir`."""
  if samples_per_label < 1:
    raise ValueError(f"samples_per_label must be >= 1, got {samples_per_label}.")
  run = plm_run.load_run(workdir)
  judge, _ = plm_eval.load_judge(run.config, workdir, progress=False)
  rows = []
  for temperature, guidance in samplers:
    t0 = time.perf_counter()
    agreement, per_label = plm_eval.sampler_agreement(
        run,
        judge,
        samples_per_label,
        seed=int(run.config.seed) + 100,
        temperature=temperature,
        guidance=guidance,
    )
    rows.append(
        dict(
            temperature=temperature,
            guidance=guidance,
            order=run.config.eval.order,
            samples_per_label=samples_per_label,
            agreement=agreement,
            per_label=per_label,
            seconds=time.perf_counter() - t0,
        )
    )
  return rows


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="A trained plm_mnist run.")
  parser.add_argument(
      "--samplers",
      nargs="+",
      type=sampler_spec,
      default=[(1.0, 0.0), (0.7, 0.0), (1.0, 1.0), (0.7, 3.0)],
      help="TEMPERATURE,GUIDANCE pairs (default: 1,0 0.7,0 1,1 0.7,3).",
  )
  parser.add_argument("--samples_per_label", type=int, default=50)
  args = parser.parse_args(argv)
  rows = measure(args.workdir, args.samplers, samples_per_label=args.samples_per_label)
  for row in rows:
    print(json.dumps(row))
  ckpt_lib.write_json(os.path.join(os.path.abspath(args.workdir), "samplers.json"), rows)
  return 0


if __name__ == "__main__":
  sys.exit(main())
