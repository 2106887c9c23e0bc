r"""Train-step throughput of FT (Eq. (16)) and big-learn (Eq. (17)) fine-tuning (paper App. E.2).

  python -m benchmarks.finetune_step                        # base size, length 128, batch 8
  python -m benchmarks.finetune_step --size wordnet --length 32 --batch_size 32
  python -m benchmarks.finetune_step --steps 2 --size tiny --json /tmp/ft.json

The step is `experiments.finetune_step.compiled_step`, the one the trainer and the sweep run (the
state replicated and donated, the batch split over a 1-D device mesh, AdamW with the rate as an
argument): FT computes Eq. (16) (the content stream and the summary head); big-learn adds
Eq. (15) (both streams over every position, the LM head over the vocabulary, the label in its
slot) on `--plm_batch` examples of the batch (0: all, as configs/finetune.py's GLUE variants;
8 of 32 in its WordNet variants). Random weights and tokens (the cost depends on the shapes
only): every row is full length, `--length` tokens with `<sep>` and `<cls>` at the end.

Sizes: base (xlnet-base-cased: 12 layers, d_model 768, 12 heads, d_inner 3,072, vocab 32,000),
wordnet (configs/finetune.py:pretrain's model: 2 layers, d 128, 2 heads, d_inner 512, vocab
4,000), tiny (tests). Rows: size, method, batch_size, length, plm_batch, dtype, compile_s,
step_seconds (median of --steps after 2 warm-up; _min), sequences_per_second, and for big-learn
cost_vs_ft (its step time / FT's). Prints one JSON object per row; --json also writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from benchmarks import gan_step

SIZES = {
    "base": dict(vocab_size=32000, d_model=768, n_layer=12, n_head=12, d_inner=3072),
    "wordnet": dict(vocab_size=4000, d_model=128, n_layer=2, n_head=2, d_inner=512),
    "tiny": dict(vocab_size=64, d_model=16, n_layer=1, n_head=2, d_inner=24),
}
WARMUP_STEPS = 2


def measure(
    size: str,
    beta: float,
    *,
    batch_size: int,
    length: int,
    plm_batch: int,
    steps: int,
    dtype: str = "float32",
) -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from bigjax import finetuning  # pylint: disable=import-outside-toplevel
  from bigjax.training import sharding  # pylint: disable=import-outside-toplevel
  from experiments import finetune_setup, finetune_step  # pylint: disable=import-outside-toplevel

  hf_config = dict(model_type="xlnet", **SIZES[size], dropout=0.1)
  num_labels = 2
  mesh = sharding.data_mesh()
  step = finetune_step.compiled_step(
      json.dumps(hf_config, sort_keys=True),
      num_labels,
      pretrain=False,
      plm=beta > 0,
      target_fraction=1.0,
      label_last_prob=0.0,
      plm_batch=plm_batch,
      weight_decay=0.0,
      grad_clip=1.0,
      mesh=mesh,
  )
  models = finetune_setup.build_models(hf_config, num_labels)
  rng = np.random.default_rng(0)
  ids = rng.integers(9, SIZES[size]["vocab_size"], (batch_size, length)).astype(np.int32)
  ids[:, -2], ids[:, -1] = 4, 3
  types = np.zeros_like(ids)
  types[:, -1] = 2
  mask = np.ones_like(ids)
  labels = rng.integers(0, num_labels, batch_size).astype(np.int32)
  key = jax.random.key(0)
  params = jax.jit(lambda k: dict(xlnet=models.lm.init(k, jnp.zeros((2, 4), jnp.int32))))(key)
  params["label_embedding"] = finetuning.init_label_embedding(
      params["xlnet"]["params"]["transformer"]["word_embedding"]["embedding"], num_labels, key
  )
  config = argparse.Namespace(weight_decay=0.0, grad_clip=1.0)
  state = finetune_step.init_state(config, params, key)
  state = jax.device_put(state, sharding.replicated(mesh))
  batch = [sharding.global_batch(a, mesh) for a in (ids, types, mask, labels)]
  args = batch + [np.float32(1e-5), np.float32(beta)]
  state, metrics, _, (_, compile_s, times) = gan_step.compile_and_time(
      step, state, tuple(args), steps, warmup=WARMUP_STEPS
  )
  median = float(np.median(times))
  return dict(
      size=size,
      method="big-learn" if beta > 0 else "FT",
      batch_size=batch_size,
      length=length,
      plm_batch=plm_batch or batch_size,
      dtype=dtype,
      device=str(jax.devices()[0].device_kind),
      compile_s=compile_s,
      step_seconds=median,
      step_seconds_min=float(min(times)),
      sequences_per_second=batch_size / median,
      loss=float(metrics["loss"]),
  )


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", choices=sorted(SIZES), default="base")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument(
      "--plm_batch", type=int, default=0, help="examples of each batch in Eq. (15)'s term (0: all)"
  )
  parser.add_argument("--beta", type=float, default=0.4, help="big-learn's beta (> 0)")
  gan_step.add_measurement_flags(parser)
  parser.add_argument("--only", type=float, default=None, help=argparse.SUPPRESS)  # one beta
  args = parser.parse_args(argv)
  if args.steps < 1 or not args.beta > 0:
    parser.error("--steps must be >= 1 and --beta > 0.")
  rows, failed = [], False
  for beta in (0.0, args.beta) if args.only is None else (args.only,):
    kw = dict(
        batch_size=args.batch_size, length=args.length, plm_batch=args.plm_batch, steps=args.steps
    )
    if args.in_process:
      row = measure(args.size, beta, **kw)
    else:
      command = [
          sys.executable,
          "-m",
          "benchmarks.finetune_step",
          "--in_process",
          "--size",
          args.size,
          "--batch_size",
          str(args.batch_size),
          "--length",
          str(args.length),
          "--plm_batch",
          str(args.plm_batch),
          "--steps",
          str(args.steps),
          "--beta",
          str(args.beta),
          "--only",
          str(beta),
      ]
      row = gan_step.subprocess_row(command, dict(size=args.size, beta=beta))
    if beta > 0 and rows and "error" not in row and "error" not in rows[0]:
      row["cost_vs_ft"] = row["step_seconds"] / rows[0]["step_seconds"]
    failed |= gan_step.report_row(row, rows, args.json)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
