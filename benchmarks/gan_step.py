r"""Speed, FLOPs and memory of one BigLearn-GAN training iteration (D step + G step).

  python -m benchmarks.gan_step                                  # mnist:cpu at its own batch
  python -m benchmarks.gan_step --configs mnist:cpu mnist:paper celeba:paper \
      --batch_sizes 8 32 --dtypes float32 bfloat16 --steps 5
  python -m benchmarks.gan_step --configs mnist:paper --batch_sizes 256 --dtypes bfloat16 \
      --in_process --profile /tmp/prof --json /tmp/gan.json      # one row, with a profile

A config is `mnist:VARIANT` (configs/gan_mnist.py) or `celeba:VARIANT` (configs/gan_celeba.py).
For every config x batch size (default: the config's own) x dtype (default: the config's own
model.dtype), one measurement of the jitted train step (`experiments.biglearn_gan
.jit_train_step`, state replicated and donated, batch split over all devices). Each row holds
the fields of benchmarks/gpu_suite.py's schema and more:
  device                    jax's device kind ("cpu", "NVIDIA H200", ...), device_count;
  config, variant, batch_size (global), dtype (the models' computation dtype);
  lower_s, compile_s        tracing + lowering, and XLA compilation;
  step_seconds              median wall time of `--steps` steps after 2 warm-up steps
                            (step_seconds_min / _max);
  images_per_second         global batch / step_seconds;
  model_flops_per_step      analytic model FLOPs of the iteration
                            (experiments.gan_setup.train_step_flops, bigjax.evaluation.flops;
                            2 FLOPs per multiply-add, backward = 2x forward), and its breakdown;
  xla_flops_per_step        XLA's own count for the compiled program (per device; it also counts
                            elementwise work);
  achieved_tflops           model FLOPs / step_seconds / 1e12 (all devices together);
  precision                 the arithmetic the matmuls use (bigjax.evaluation.flops
                            .peak_precision: float32 inputs use TF32 under JAX's default
                            matmul precision);
  peak_tflops, mfu          the device's datasheet peak for that precision and achieved / (devices
                            x peak), when bigjax.evaluation.flops knows the device, else None;
  peak_memory_bytes         the device allocator's high-water mark (max over local devices),
                            where the backend reports it (GPU, TPU); None on CPU;
  compiled_arg_out_temp_bytes  per device: argument + output + temporary buffers of the compiled
                            executable (`memory_analysis()`; the donated state is both argument
                            and output, `compiled_memory.alias` counts that overlap);
  g_params, d_params        parameter counts; and the machine (backend, jax/jaxlib, Python, CPU
                            count, platform);
  profile                   with `--profile DIR`: `PROFILE_STEPS` more steps under
                            `jax.profiler.trace`, summarised by `profile_summary` (device time in
                            matmul kernels, other kernels and copies, the device's busy fraction,
                            the top kernels); the Perfetto trace is kept as
                            DIR/perfetto_trace.json.gz.
Data are random images in [-1, 1] of the config's shape (the step's cost does not depend on
them); no dataset is loaded, so the CelebA config needs no data.source.

By default every measurement runs in its own Python process (`--in_process` turns that off):
the allocator's peak is then that measurement's, and a batch that does not fit, whether XLA
reports RESOURCE_EXHAUSTED or the operating system kills the process, gives a JSON row with
an "error" and the next measurement still runs. Prints one JSON object per line, and with
`--json PATH` writes them to PATH too (one object for one measurement, else a list); the exit
status is 1 if a measurement failed for another reason than memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_MODULES = {"mnist": "configs.gan_mnist", "celeba": "configs.gan_celeba"}
DTYPES = ("float32", "bfloat16")
WARMUP_STEPS = 2
PROFILE_STEPS = 3
# "killed by signal 9": SIGKILL, presumably from the operating system's out-of-memory killer.
_OOM_MARKERS = (
    "RESOURCE_EXHAUSTED",
    "Out of memory",
    "out of memory",
    "MemoryError",
    "bad_alloc",
    "killed by signal 9",
)


def config_spec(text: str) -> str:
  """argparse type of a config: DATASET:VARIANT with a known dataset and variant."""
  import importlib  # pylint: disable=import-outside-toplevel

  dataset, _, variant = text.partition(":")
  if dataset not in CONFIG_MODULES or not variant:
    raise argparse.ArgumentTypeError(
        f"{text!r} is not DATASET:VARIANT with DATASET one of {sorted(CONFIG_MODULES)} (e.g. "
        f"mnist:cpu, celeba:paper)."
    )
  variants = importlib.import_module(CONFIG_MODULES[dataset]).VARIANTS
  if variant not in variants:
    raise argparse.ArgumentTypeError(
        f"unknown variant {variant!r} for {dataset}; choose one " f"of {', '.join(variants)}."
    )
  return text


def load_config(spec: str, batch_size: int | None, dtype: str | None):
  """The config `spec` names, with the batch size and model dtype overridden when given."""
  import importlib  # pylint: disable=import-outside-toplevel

  dataset, _, variant = spec.partition(":")
  config = importlib.import_module(CONFIG_MODULES[dataset]).get_config(variant)
  if batch_size:
    config.batch_size = int(batch_size)
  if dtype:
    config.model.dtype = dtype
  return config


def machine() -> dict[str, Any]:
  """The device (jax's device kind) and software this process runs on."""
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  return dict(
      device=devices[0].device_kind,
      device_count=len(devices),
      backend=jax.default_backend(),
      jax=jax.__version__,
      jaxlib=jaxlib.__version__,
      python=platform.python_version(),
      cpu_count=os.cpu_count(),
      platform=platform.platform(),
  )


def _is_oom(message: str) -> bool:
  return any(marker in message for marker in _OOM_MARKERS)


def _count(tree) -> int:
  import jax  # pylint: disable=import-outside-toplevel

  return int(sum(x.size for x in jax.tree.leaves(tree)))


def peak_memory_bytes() -> int | None:
  """The allocator's high-water mark, max over local devices; None where not reported."""
  import jax  # pylint: disable=import-outside-toplevel

  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def _compiled_memory(compiled) -> dict[str, int] | None:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  if isinstance(m, (list, tuple)):
    m = m[0]
  return dict(
      argument=int(m.argument_size_in_bytes),
      output=int(m.output_size_in_bytes),
      temp=int(m.temp_size_in_bytes),
      alias=int(m.alias_size_in_bytes),
      generated_code=int(m.generated_code_size_in_bytes),
  )


def _xla_flops(compiled) -> float | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


# Kernel names of matrix products (cuBLAS/cuBLASLt: "sm90_xmma_gemm_...", "nvjet_...", CUTLASS;
# XLA's Triton GEMM fusions: "gemm_fusion_..."; convolutions through cuDNN).
_MATMUL_KERNEL_MARKERS = (
    "gemm",
    "xmma",
    "nvjet",
    "cutlass",
    "cublas",
    "matmul",
    "wgmma",
    "conv",
    "cudnn",
)
_COPY_MARKERS = ("memcpy", "memset")


def profile_summary(
    trace_dir: str, steps: int, step_seconds: float, top: int = 12
) -> dict[str, Any]:
  """Device time per kernel class in a `jax.profiler.trace` of `steps` steps.

  Reads the Perfetto trace (perfetto_trace.json.gz) jax wrote under `trace_dir`; device
  events are those of processes named "/device:..." (GPU kernels and copies, from CUPTI), on
  their "Stream ..." threads where the trace names such threads. A CPU trace has none, and
  then only `device_events = 0` is reported.

  Returns:
    dict: device_events; per step, in milliseconds: matmul_ms (kernels whose name marks a matrix
    product or convolution), other_kernel_ms, copy_ms, busy_ms (the union of all device
    intervals) and step_ms (the timed step); busy_fraction = busy_ms / step_ms (below 1: the
    device waits for the host, e.g. on launches); matmul_fraction_of_busy; and the `top`
    kernels by time [{name, ms_per_step, calls_per_step, share_of_busy}].
  """
  import glob  # pylint: disable=import-outside-toplevel
  import gzip  # pylint: disable=import-outside-toplevel

  paths = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
  if not paths:
    return dict(device_events=0, note=f"no perfetto_trace.json.gz under {trace_dir}")
  with gzip.open(paths[-1], "rt") as f:
    trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  device_pids = {
      e["pid"]
      for e in events
      if e.get("ph") == "M"
      and e.get("name") == "process_name"
      and str(e.get("args", {}).get("name", "")).startswith("/device:")
  }
  threads = {
      (e["pid"], e.get("tid")): str(e.get("args", {}).get("name", ""))
      for e in events
      if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") in device_pids
  }
  # A device's "Stream #N" lines hold its kernels and copies; lines derived from them ("XLA
  # Ops", "XLA Modules", "Steps") would count the same time twice, so they are left out.
  streams = {key for key, name in threads.items() if name.startswith("Stream")}
  kernels = [
      e
      for e in events
      if e.get("ph") == "X"
      and e.get("pid") in device_pids
      and e.get("dur") is not None
      and (not streams or (e["pid"], e.get("tid")) in streams)
  ]
  if not kernels:
    return dict(device_events=0, device_threads=sorted(set(threads.values())))
  per_name: dict[str, list[float]] = {}
  intervals = []
  for e in kernels:
    per_name.setdefault(str(e.get("name", "")), []).append(float(e["dur"]))
    intervals.append((float(e["ts"]), float(e["ts"]) + float(e["dur"])))
  busy, end = 0.0, -float("inf")
  for start, stop in sorted(intervals):  # union of the intervals (streams overlap)
    if stop > end:
      busy += stop - max(start, end)
      end = stop
  classes = dict(matmul=0.0, copy=0.0, other=0.0)
  for name, durations in per_name.items():
    lower = name.lower()
    cls = (
        "copy"
        if any(m in lower for m in _COPY_MARKERS)
        else "matmul"
        if any(m in lower for m in _MATMUL_KERNEL_MARKERS)
        else "other"
    )
    classes[cls] += sum(durations)
  ranked = sorted(per_name.items(), key=lambda kv: -sum(kv[1]))[:top]
  us_to_ms = 1e-3 / steps
  return dict(
      device_events=len(kernels),
      steps=steps,
      device_threads=sorted(set(threads.values())),
      step_ms=round(step_seconds * 1e3, 4),
      busy_ms=round(busy * us_to_ms, 4),
      busy_fraction=round(busy * 1e-6 / (steps * step_seconds), 4),
      matmul_ms=round(classes["matmul"] * us_to_ms, 4),
      other_kernel_ms=round(classes["other"] * us_to_ms, 4),
      copy_ms=round(classes["copy"] * us_to_ms, 4),
      matmul_fraction_of_busy=round(classes["matmul"] / busy, 4) if busy else None,
      distinct_kernels=len(per_name),
      kernels_per_step=round(len(kernels) / steps, 1),
      top_kernels=[
          dict(
              name=name[:160],
              ms_per_step=round(sum(d) * us_to_ms, 4),
              calls_per_step=round(len(d) / steps, 2),
              share_of_busy=round(sum(d) / busy, 4) if busy else None,
          )
          for name, d in ranked
      ],
  )


def trace_steps(step, state, batch, steps: int, trace_dir: str, step_seconds: float):
  """Runs `steps` more steps under `jax.profiler.trace(trace_dir)`; keeps only the Perfetto
  trace (as trace_dir/perfetto_trace.json.gz) and returns (state, profile_summary(...))."""
  import jax  # pylint: disable=import-outside-toplevel

  raw = os.path.join(trace_dir, "raw")
  with jax.profiler.trace(raw, create_perfetto_trace=True):
    for _ in range(steps):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
  summary = profile_summary(raw, steps, step_seconds)
  import glob  # pylint: disable=import-outside-toplevel

  found = glob.glob(os.path.join(raw, "**", "perfetto_trace.json.gz"), recursive=True)
  if found:
    shutil.move(sorted(found)[-1], os.path.join(trace_dir, "perfetto_trace.json.gz"))
  shutil.rmtree(raw, ignore_errors=True)  # the xplane.pb can be tens of MB on a GPU
  return state, summary


def compile_and_time(step_fn, state, args: tuple, steps: int, *, warmup: int = 2):
  """Lowers and compiles the jitted `step_fn(state, *args) -> (state, metrics)`, takes `warmup`
  untimed steps, then times `steps` steps one by one (each waited for): the step benchmarks'
  one timer.

  Returns:
    (state, metrics, compiled, (lower_s, compile_s, seconds of each timed step)).
  """
  import jax  # pylint: disable=import-outside-toplevel

  start = time.perf_counter()
  lowered = step_fn.lower(state, *args)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  metrics = None
  for _ in range(warmup):
    state, metrics = compiled(state, *args)
  jax.block_until_ready((state, metrics))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, *args)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  return state, metrics, compiled, (lower_s, compile_s, times)


def measure(
    spec: str, batch_size: int | None, dtype: str | None, steps: int, profile_dir: str | None = None
) -> dict[str, Any]:
  """One measurement (see the module docstring); raises on failure."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from bigjax.evaluation import flops  # pylint: disable=import-outside-toplevel
  from bigjax.training import sharding  # pylint: disable=import-outside-toplevel
  from experiments import biglearn_gan  # pylint: disable=import-outside-toplevel
  from experiments import gan_setup  # pylint: disable=import-outside-toplevel

  config = load_config(spec, batch_size, dtype)
  dtype = config.model.get("dtype", "float32")
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  state_sharding = sharding.replicated(mesh)
  state = jax.jit(lambda k: gan_setup.init_state(config, k), out_shardings=state_sharding)(
      jax.random.key(0)
  )
  counts = dict(g_params=_count(state.g_params), d_params=_count(state.d_params))
  shape = gan_setup.image_shape(config)
  images = np.random.default_rng(0).uniform(-1, 1, (config.batch_size,) + shape)
  batch = sharding.global_batch(images.astype(np.float32), mesh)

  step_fn = biglearn_gan.jit_train_step(config, mesh, state_sharding)
  state, metrics, compiled, (lower_s, compile_s, times) = compile_and_time(
      step_fn, state, (batch,), steps
  )
  step_s = float(np.median(times))
  losses = {k: float(v) for k, v in jax.device_get(metrics).items() if k in ("d_loss", "g_loss")}
  profile = None
  if profile_dir:
    try:  # the timing above stands whether or not the profiler works on this machine
      state, profile = trace_steps(compiled, state, batch, PROFILE_STEPS, profile_dir, step_s)
    except Exception as e:  # pylint: disable=broad-except
      profile = dict(error=f"{type(e).__name__}: {e}"[-1000:])

  model_flops = gan_setup.train_step_flops(config)
  num_devices = mesh.devices.size
  device = mesh.devices.flat[0]
  peak = flops.peak_flops_per_second(device, dtype)
  memory = _compiled_memory(compiled)
  row = dict(
      config=spec,
      variant=config.variant,
      batch_size=config.batch_size,
      dtype=dtype,
      image_shape=list(shape),
      steps=steps,
      lower_s=round(lower_s, 2),
      compile_s=round(compile_s, 2),
      step_seconds=round(step_s, 6),
      step_seconds_min=round(min(times), 6),
      step_seconds_max=round(max(times), 6),
      steps_per_second=round(1 / step_s, 3),
      images_per_second=round(config.batch_size / step_s, 2),
      model_flops_per_step=model_flops["total"],
      model_flops={k: v for k, v in model_flops.items() if k not in ("total", "batch_size")},
      xla_flops_per_step=_xla_flops(compiled),
      achieved_tflops=round(model_flops["total"] / step_s / 1e12, 4),
      precision=flops.peak_precision(dtype),
      peak_tflops=None if peak is None else peak / 1e12,
      mfu=None
      if peak is None
      else round(flops.mfu(model_flops["total"], step_s, num_devices, peak), 4),
      peak_memory_bytes=peak_memory_bytes(),
      compiled_arg_out_temp_bytes=(
          None if memory is None else memory["argument"] + memory["output"] + memory["temp"]
      ),
      compiled_memory=memory,
      final_losses=losses,
      **counts,
      **machine(),
  )
  if profile_dir:
    row["profile"] = profile
  del state, metrics, compiled
  return row


def _error_row(spec, batch_size, dtype, steps, message: str) -> dict[str, Any]:
  row = dict(
      config=spec,
      batch_size=batch_size,
      dtype=dtype,
      steps=steps,
      error=message[-2000:],
      out_of_memory=_is_oom(message),
  )
  try:
    row.update(machine())
  except Exception:  # pylint: disable=broad-except
    pass
  return row


def run_in_process(spec, batch_size, dtype, steps, profile_dir=None) -> dict[str, Any]:
  try:
    row = measure(spec, batch_size, dtype, steps, profile_dir)
  except Exception as e:  # pylint: disable=broad-except
    row = _error_row(spec, batch_size, dtype, steps, f"{type(e).__name__}: {e}")
  gc.collect()
  return row


def run_in_subprocess(spec, batch_size, dtype, steps, profile_dir=None) -> dict[str, Any]:
  """The same measurement in a fresh `python -m benchmarks.gan_step --in_process`."""
  command = [
      sys.executable,
      "-m",
      "benchmarks.gan_step",
      "--in_process",
      "--configs",
      spec,
      "--steps",
      str(steps),
  ]
  if batch_size:
    command += ["--batch_sizes", str(batch_size)]
  if dtype:
    command += ["--dtypes", dtype]
  if profile_dir:
    command += ["--profile", profile_dir]
  # Not _error_row on failure: its machine() would start this process's own device client.
  return subprocess_row(command, dict(config=spec, batch_size=batch_size, dtype=dtype, steps=steps))


def subprocess_row(command: list[str], row: dict[str, Any]) -> dict[str, Any]:
  """Runs a benchmark's `--in_process` command from the repository; returns the JSON row it
  printed last, or `row` with `error` (how it ended, its stderr's end) and `out_of_memory`."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  how = (
      f"killed by signal {-proc.returncode}"
      if proc.returncode < 0
      else f"exit status {proc.returncode}"
  )
  return dict(
      row,
      error=(
          f"the measurement process ended without a result ({how}): "
          f"{proc.stderr.strip()[-1500:]}"
      ),
      out_of_memory=_is_oom(how if proc.returncode < 0 else proc.stderr),
  )


def dump_json(path: str, obj: Any, *, default=None) -> None:
  """Writes `obj` as JSON to `path` atomically (a temporary file, then a rename), creating its
  folder. Without jax, for the benchmarks' parent processes, which must not start a device
  client (the library's writer, `bigjax.training.checkpoint.write_json`, asks jax for the
  process index)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, default=default)
  os.replace(tmp, path)


def write_json(path: str, rows: list[dict[str, Any]]) -> None:
  """Writes one object (a single row) or a list of rows to `path`, atomically."""
  dump_json(path, rows[0] if len(rows) == 1 else rows)


def add_measurement_flags(parser: argparse.ArgumentParser) -> None:
  """--steps, --in_process and --json, as every step benchmark takes them."""
  parser.add_argument("--steps", type=int, default=20, help="timed steps (after 2 warm-up)")
  parser.add_argument(
      "--in_process",
      action="store_true",
      help="run every measurement in this process (no isolation)",
  )
  parser.add_argument(
      "--json",
      default=None,
      metavar="PATH",
      help="also write the rows to PATH (one object, or a list of several)",
  )


def report_row(row: dict[str, Any], rows: list[dict[str, Any]], json_path: str | None) -> bool:
  """Appends `row` to `rows`, prints it as one JSON line and rewrites `json_path` (if given);
  returns whether it failed other than by running out of memory (the exit status's concern)."""
  rows.append(row)
  print(json.dumps(row), flush=True)
  if json_path:
    write_json(json_path, rows)
  return "error" in row and not row.get("out_of_memory")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--configs",
      nargs="+",
      type=config_spec,
      default=None,
      help="DATASET:VARIANT, e.g. mnist:cpu mnist:paper celeba:paper " "(default mnist:cpu)",
  )
  parser.add_argument(
      "--batch_sizes",
      nargs="+",
      type=int,
      default=None,
      help="global batch sizes (default: each config's own)",
  )
  parser.add_argument(
      "--dtypes",
      nargs="+",
      choices=DTYPES,
      default=None,
      help="model computation dtypes (default: each config's model.dtype)",
  )
  add_measurement_flags(parser)
  parser.add_argument(
      "--profile",
      default=None,
      metavar="DIR",
      help=f"trace {PROFILE_STEPS} more steps with jax.profiler and summarise "
      "the device time per kernel (one measurement only)",
  )
  # The flags of the first version, kept so that older commands still run.
  parser.add_argument("--variants", nargs="+", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--batch_size", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.steps < 1:
    parser.error(f"--steps must be >= 1, got {args.steps}.")
  if any(b < 1 for b in args.batch_sizes or []):
    parser.error(f"--batch_sizes must be positive, got {args.batch_sizes}.")
  configs = list(args.configs or [])
  try:
    configs += [config_spec(f"mnist:{v}") for v in args.variants or []]
  except argparse.ArgumentTypeError as e:
    parser.error(f"argument --variants: {e}")
  configs = configs or ["mnist:cpu"]
  batch_sizes = args.batch_sizes or ([args.batch_size] if args.batch_size else [None])
  dtypes = args.dtypes or [None]
  if args.profile and len(configs) * len(batch_sizes) * len(dtypes) > 1:
    parser.error("--profile traces one measurement: give one config, batch size and dtype.")

  run = run_in_process if args.in_process else run_in_subprocess
  failed = False
  rows = []
  for spec in configs:
    for batch_size in batch_sizes:
      for dtype in dtypes:
        failed |= report_row(
            run(spec, batch_size, dtype, args.steps, args.profile), rows, args.json
        )
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
