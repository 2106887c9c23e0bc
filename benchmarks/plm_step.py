r"""Step time, FLOPs and memory of the permutation model's training step (paper App. E.1).

  python -m benchmarks.plm_step                                  # configs/plm_mnist.py:cpu
  python -m benchmarks.plm_step --variant paper --dtypes float32 bfloat16 --steps 20
  python -m benchmarks.plm_step --variant smoke --steps 2 --json /tmp/plm.json

One measurement per dtype, each in its own process unless `--in_process`: the jitted step of
`experiments.plm_train.make_train_step` (task and order sampling, random shifts, the frozen
quantiser's encoding, the two-stream transformer's forward and backward pass, AdamW), jitted
as `plm_train.train_and_evaluate` jits it (state replicated and donated, batch split over a 1-D
device mesh). The quantiser is freshly initialised, not trained (`experiments.vq_setup
.init_state` with the config's `vq` settings), and the digits and labels are random: the step's
cost depends on the shapes only, so no data or trained quantiser is needed. `--dtypes
bfloat16` computes the transformer in bfloat16 (`TwoStreamTransformer.dtype`; parameters,
softmax and logits stay float32); the config has no dtype field, so this is a benchmark knob.

Each row holds the fields of benchmarks/gpu_suite.py's schema and more:
  device, config ("plm_mnist:VARIANT"), batch_size, dtype, sequence_length, params;
  lower_s, compile_s; step_seconds (median of `--steps` after 2 warm-up; _min / _max);
  images_per_second (digits per second: one example is one digit and its label) and
  tokens_per_second;
  model_flops_per_step      3x the forward matmul FLOPs of the transformer, counted from its
                            jaxpr (every dot_general, 2 FLOPs per multiply-add; backward = 2x
                            forward, the convention of bigjax.evaluation.flops); the quantiser's
                            encoding and elementwise work are not counted;
  xla_flops_per_step        XLA's own count of the compiled step (per device);
  achieved_tflops, precision, peak_tflops, mfu (None where the device's peak is not tabulated);
  peak_memory_bytes (the device allocator's peak; None on CPU), compiled_memory, final_loss.
Prints one JSON object per line; `--json PATH` also writes them (one object, or a list).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from benchmarks import gan_step

DTYPES = ("float32", "bfloat16")
WARMUP_STEPS = 2


def _sub_jaxprs(params: dict[str, Any]):
  for value in params.values():
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(v, "eqns"):
        yield v
      elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
        yield v.jaxpr


def dot_flops(jaxpr) -> int:
  """Matmul FLOPs of a jaxpr: 2 x (lhs size) x (rhs free size) for every dot_general, through
  nested jaxprs (jit, custom_jvp/vjp, remat; a scan's body times its length; the largest branch
  of a cond). Raises ValueError for a while loop (its trip count is not static)."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      lhs, rhs = (tuple(v.aval.shape) for v in eqn.invars[:2])
      (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
      rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
      total += 2 * math.prod(lhs) * math.prod(rhs_free)
    elif name == "while":
      raise ValueError("dot_flops cannot count a while loop (no static trip count).")
    elif name == "cond":
      total += max(dot_flops(b.jaxpr) for b in eqn.params["branches"])
    else:
      times = int(eqn.params["length"]) if name == "scan" else 1
      total += times * sum(dot_flops(sub) for sub in _sub_jaxprs(eqn.params))
  return total


def load_config(variant: str):
  from configs import plm_mnist  # pylint: disable=import-outside-toplevel

  if variant not in plm_mnist.VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(plm_mnist.VARIANTS)}.")
  return plm_mnist.get_config(variant)


def measure(variant: str, dtype: str, steps: int, batch_size: int | None = None) -> dict[str, Any]:
  """One measurement (see the module docstring); raises on failure."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from bigjax import multimodal  # pylint: disable=import-outside-toplevel
  from bigjax.evaluation import flops  # pylint: disable=import-outside-toplevel
  from bigjax.training import sharding  # pylint: disable=import-outside-toplevel
  from experiments import plm_setup, plm_train, vq_setup  # pylint: disable=import-outside-toplevel

  config = load_config(variant)
  if batch_size:
    config.batch_size = int(batch_size)
  plm_setup.validate_config(config)
  b = int(config.batch_size)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (b, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, (b,)).astype(np.int32)

  vq_state = jax.jit(lambda k, x: vq_setup.init_state(config.vq, k, x))(
      jax.random.key(1), jnp.asarray(images, jnp.float32) / 127.5 - 1.0
  )
  encoder, decoder = vq_setup.build_models(config.vq)
  quantiser = plm_setup.Quantiser(
      encoder, decoder, vq_state.params, vq_state.codebook.vectors, info={}
  )
  layout = plm_setup.layout_of(quantiser)
  model = plm_setup.build_model(config, layout).clone(dtype=jnp.dtype(dtype))

  mesh = sharding.data_mesh()
  sharding.check_batch_size(b, mesh)
  replicated, batch_sharded = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  state = jax.jit(
      lambda key: plm_setup.init_state(config, model, layout, key), out_shardings=replicated
  )(jax.random.key(0))
  params = int(sum(x.size for x in jax.tree.leaves(state.params)))
  step_fn = jax.jit(
      plm_train.make_train_step(config, model, layout, quantiser),
      in_shardings=(replicated, batch_sharded, batch_sharded, replicated, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
  )
  args = (
      sharding.global_batch(images, mesh),
      sharding.global_batch(labels, mesh),
      jax.device_put(quantiser.params, replicated),
      jax.device_put(quantiser.vectors, replicated),
  )

  state, metrics, compiled, (lower_s, compile_s, times) = gan_step.compile_and_time(
      step_fn, state, args, steps, warmup=WARMUP_STEPS
  )
  step_s = float(np.median(times))

  # Model FLOPs: the transformer's forward matmuls on the step's shapes, x3 (forward+backward).
  tokens = jnp.zeros((b, layout.length), jnp.int32)
  segments = multimodal.segment_ids(layout, b)
  mask = jnp.zeros((b, layout.length, layout.length), bool)
  forward = jax.make_jaxpr(
      lambda p: model.apply(
          p, tokens, segments, mask, train=True, rngs={"dropout": jax.random.key(0)}
      )
  )
  model_flops = 3 * dot_flops(forward(state.params).jaxpr)
  peak = flops.peak_flops_per_second(mesh.devices.flat[0], dtype)
  memory = gan_step._compiled_memory(compiled)  # pylint: disable=protected-access
  m = config.model
  row = dict(
      config=f"plm_mnist:{variant}",
      variant=variant,
      batch_size=b,
      dtype=dtype,
      sequence_length=layout.length,
      vocab_size=layout.vocab_size,
      width=int(m.width),
      depth=int(m.depth),
      num_heads=int(m.num_heads),
      mlp_ratio=float(m.mlp_ratio),
      params=params,
      steps=steps,
      lower_s=round(lower_s, 2),
      compile_s=round(compile_s, 2),
      step_seconds=round(step_s, 6),
      step_seconds_min=round(min(times), 6),
      step_seconds_max=round(max(times), 6),
      images_per_second=round(b / step_s, 2),
      tokens_per_second=round(b * layout.length / step_s, 1),
      model_flops_per_step=model_flops,
      xla_flops_per_step=gan_step._xla_flops(compiled),  # pylint: disable=protected-access
      achieved_tflops=round(model_flops / step_s / 1e12, 4),
      precision=flops.peak_precision(dtype),
      peak_tflops=None if peak is None else peak / 1e12,
      mfu=None
      if peak is None
      else round(flops.mfu(model_flops, step_s, mesh.devices.size, peak), 4),
      peak_memory_bytes=gan_step.peak_memory_bytes(),
      compiled_arg_out_temp_bytes=(
          None if memory is None else memory["argument"] + memory["output"] + memory["temp"]
      ),
      compiled_memory=memory,
      final_loss=float(metrics["loss"]),
      **gan_step.machine(),
  )
  return row


def run_in_process(variant, dtype, steps, batch_size) -> dict[str, Any]:
  try:
    return measure(variant, dtype, steps, batch_size)
  except Exception as e:  # pylint: disable=broad-except
    message = f"{type(e).__name__}: {e}"
    return dict(
        config=f"plm_mnist:{variant}",
        batch_size=batch_size,
        dtype=dtype,
        steps=steps,
        error=message[-2000:],
        out_of_memory=gan_step._is_oom(message),
    )  # pylint: disable=protected-access


def run_in_subprocess(variant, dtype, steps, batch_size) -> dict[str, Any]:
  """The same measurement in a fresh `python -m benchmarks.plm_step --in_process`."""
  command = [
      sys.executable,
      "-m",
      "benchmarks.plm_step",
      "--in_process",
      "--variant",
      variant,
      "--dtypes",
      dtype,
      "--steps",
      str(steps),
  ]
  if batch_size:
    command += ["--batch_size", str(batch_size)]
  return gan_step.subprocess_row(
      command, dict(config=f"plm_mnist:{variant}", batch_size=batch_size, dtype=dtype, steps=steps)
  )


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variant", default="cpu", help="a configs/plm_mnist.py variant")
  parser.add_argument(
      "--dtypes",
      nargs="+",
      choices=DTYPES,
      default=["float32"],
      help="the transformer's computation dtypes",
  )
  parser.add_argument(
      "--batch_size", type=int, default=None, help="global batch (default: the config's)"
  )
  gan_step.add_measurement_flags(parser)
  args = parser.parse_args(argv)
  try:
    load_config(args.variant)
  except ValueError as e:
    parser.error(str(e))
  if args.steps < 1 or (args.batch_size is not None and args.batch_size < 1):
    parser.error("--steps and --batch_size must be positive.")
  run = run_in_process if args.in_process else run_in_subprocess
  rows, failed = [], False
  for dtype in args.dtypes:
    failed |= gan_step.report_row(
        run(args.variant, dtype, args.steps, args.batch_size), rows, args.json
    )
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
