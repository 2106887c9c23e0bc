r"""Every GPU measurement, one process each, in one call: JSON per measurement + table.

  python -m benchmarks.gpu_suite --list                         # what runs, GPU and tiny
  python -m benchmarks.gpu_suite --out /tmp/suite               # the GPU suite
  python -m benchmarks.gpu_suite --tiny --out /tmp/suite_tiny   # tiny CPU shapes (a test)
  python -m benchmarks.gpu_suite --out /tmp/suite --only gan_mnist_paper_bf16_b256 matmul_bf16

On a machine with an NVIDIA GPU, after `pip install -e .` and JAX's CUDA build (e.g.
`pip install "jax[cuda12]"`), from the repository root:

  python -m benchmarks.gpu_suite --out /tmp/gpu_suite
  bash benchmarks/gpu_suite.sh          # the same, plus nvidia-smi's report, the log, an archive

benchmarks/gpu_suite.sh runs this module with `--out /tmp/gpu_suite --archive
$OUT/gpu_suite.tar.gz --resume` and copies summary.md and environment.json to $OUT (default
/tmp/gpu_suite_results). The archive holds every per-measurement file in one .tar.gz, rewritten
after every measurement, so a run stopped part-way still leaves what finished. `--budget_s`
bounds the whole suite; `--resume` makes a second run cheap (measurements with a result are
kept), so a suite cut short by its budget is finished by running it again with `--resume`.

What it does:
  * If `ml_collections` cannot be imported (a GPU machine without network access, set up
    without `pip install -e .`) and REPO/.whl holds wheels, installs them (`pip install
    --no-index --no-deps --target SITE .whl/*.whl`) and puts SITE on the measurements'
    PYTHONPATH; with no wheels it stops and prints the `pip download` command to run on a
    machine with network access.
  * environment.json: the device (jax's device kind and count, memory), driver and CUDA version
    (nvidia-smi, where present), jax/jaxlib/flax/optax/... versions, Python, platform, the git
    commit, this command line.
  * Runs the measurements of `measurements()` in their order (the issue's targets first), each
    as `python -m benchmarks.X ... --json PATH` in its own process group with its own timeout,
    so a failure, an out-of-memory or a hang of one leaves the others running. `--budget_s`
    bounds the whole suite: a measurement starts only with at least MIN_START_S left, and never
    runs past the budget; the rest are reported "skipped".
  * DIR/NAME.json per measurement: the benchmark's own row plus `measurement`, `status` ("ok",
    "failed", "out of memory", "timed out", "skipped", "not available"), `command`,
    `wall_seconds`, `returncode`, `tiny`, `log` (DIR/logs/NAME.log, its stdout and stderr) and
    `error` when it failed; every row has the fields of SCHEMA (None where a measurement has no
    such number) and `matmul_tflops` / `mfu_measured_matmul`: the rate of this suite's own
    matmul measurement in the row's matmul precision, and the row's achieved model FLOP/s over
    it (MFU against what the chip really does, beside `mfu` against its datasheet peak).
  * DIR/summary.md: one Markdown table of all of it.

`--tiny` swaps every measurement for its tiny CPU shape (smoke configs, 2 steps, a few seeds,
a 6x6 grid, 256x256 matmuls), runs the children with a shared persistent compilation cache
and XLA's cheapest backend optimisation level, and labels everything tiny: it checks the
suite end to end (tests/test_gpu_suite.py), its numbers measure nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any
from collections.abc import Sequence

from benchmarks import gan_step  # standard library only at import: no jax in this parent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = os.path.join(REPO, ".whl")
SITE = os.path.join(tempfile.gettempdir(), "bigjax_gpu_suite_site")
MIN_START_S = 30  # a measurement needs at least this much of the budget to start
TINY_TIMEOUT_S = 600  # per tiny measurement (a loaded 2-core CPU compiles slowly)
ARCHIVE_LIMIT_BYTES = 15 * 2**20  # small enough to copy off the machine or attach
NEEDED_MODULES = ("ml_collections",)  # imported by the configs; absent from some GPU images
PACKAGES = (
    "jax",
    "jaxlib",
    "jax-cuda13-plugin",
    "jax-cuda12-plugin",
    "flax",
    "optax",
    "orbax-checkpoint",
    "chex",
    "numpy",
    "ml_collections",
)

# Every row has these fields (None where a measurement has no such number), with these types.
NUMBER = (int, float)
SCHEMA: dict[str, tuple[type, ...]] = {
    "device": (str,),  # jax's device kind, e.g. "NVIDIA H200", "cpu"
    "config": (str,),  # what was measured, e.g. "mnist:paper", "gmm25:paper"
    "batch_size": (int, type(None)),  # global batch (gmm25: seeds side by side)
    "dtype": (str, type(None)),  # computation dtype
    "step_seconds": NUMBER + (type(None),),  # one step / one outer iteration / one call
    "images_per_second": NUMBER + (type(None),),
    "mfu": NUMBER + (type(None),),  # model FLOPs / (time x datasheet peak)
    "peak_memory_bytes": (int, type(None)),  # device allocator's peak (None on CPU)
    "matmul_tflops": NUMBER + (type(None),),  # this suite's matmul rate, same precision
    "mfu_measured_matmul": NUMBER + (type(None),),  # achieved model FLOP/s / matmul_tflops
}
GMM25_SCHEMA: dict[str, tuple[type, ...]] = {
    "experiment": (str,),
    "num_seeds": (int,),
    "seconds_per_seed": NUMBER,
    "speedup_vs_reference": NUMBER + (type(None),),
}


@dataclasses.dataclass(frozen=True)
class Measurement:
  """One measurement: `python -m <command...>` on the GPU, `python -m <tiny...>` with --tiny.

  `{dir}` in an argument is replaced by the output directory and `{name}` by the name."""

  name: str
  what: str  # one line for --list and the table
  command: tuple[str, ...]  # module and arguments (the suite adds --json PATH)
  tiny: tuple[str, ...] = ()  # the same at tiny CPU shapes
  timeout_s: int = 180  # on the GPU; tiny ones get TINY_TIMEOUT_S
  xla_dump: bool = False  # keep XLA's optimised HLO of the train step
  unavailable: str = ""  # why it cannot run yet; "" = it runs
  # config / batch_size / dtype of the row before the benchmark fills it in (failed, skipped
  # and unavailable rows keep these); config defaults to the name.
  facts: tuple[tuple[str, Any], ...] = ()
  tiny_facts: tuple[tuple[str, Any], ...] = ()


def _gan(name, spec, batch, dtype, tiny_spec, *, profile=False, timeout_s=180):
  extra = ("--profile", "{dir}/profile_{name}") if profile else ()
  base = ("benchmarks.gan_step", "--in_process", "--configs")
  return Measurement(
      name,
      f"BigLearn-GAN iteration (D+G step), {spec} {dtype} batch {batch}"
      + (", with a profile and XLA's optimised HLO" if profile else ""),
      base + (spec, "--batch_sizes", str(batch), "--dtypes", dtype, "--steps", "20") + extra,
      base + (tiny_spec, "--batch_sizes", "8", "--dtypes", dtype, "--steps", "2") + extra,
      timeout_s=timeout_s,
      xla_dump=profile,
      facts=(("config", spec), ("batch_size", batch), ("dtype", dtype)),
      tiny_facts=(("config", tiny_spec), ("batch_size", 8), ("dtype", dtype)),
  )


_GMM25_FACTS = (
    ("dtype", "float32"),
    ("experiment", "gmm25"),
    ("seconds_per_seed", None),
    ("speedup_vs_reference", None),
)


def _gmm25(name, seeds, per_batch, tiny_seeds, tiny_per_batch, *, timeout_s):
  base = ("benchmarks.gmm25", "--in_process", "--no-write", "--variant")
  how = "one lax.map, drawn task only" if per_batch == 1 else f"vmap of {per_batch}"
  return Measurement(
      name,
      f"25-GMM paper protocol, {seeds} seed{'s' if seeds > 1 else ''} in one call ({how})",
      base + ("paper", "--seeds", str(seeds), "--seeds_per_batch", str(per_batch)),
      base + ("smoke", "--seeds", str(tiny_seeds), "--seeds_per_batch", str(tiny_per_batch)),
      timeout_s=timeout_s,
      facts=(("config", "gmm25:paper"), ("batch_size", min(seeds, per_batch)), ("num_seeds", seeds))
      + _GMM25_FACTS,
      tiny_facts=(
          ("config", "gmm25:smoke"),
          ("batch_size", min(tiny_seeds, tiny_per_batch)),
          ("num_seeds", tiny_seeds),
      )
      + _GMM25_FACTS,
  )


def _plm(name, dtype):
  base = ("benchmarks.plm_step", "--in_process", "--variant")
  return Measurement(
      name,
      f"permutation model train step, configs/plm_mnist.py:paper, {dtype}",
      base + ("paper", "--dtypes", dtype, "--steps", "20"),
      base + ("smoke", "--dtypes", dtype, "--steps", "2"),
      timeout_s=150,
      facts=(("config", "plm_mnist:paper"), ("dtype", dtype)),
      tiny_facts=(("config", "plm_mnist:smoke"), ("dtype", dtype)),
  )


def _surfaces(name, mode):
  base = ("benchmarks.loss_surfaces", "--no-reference", "--no-write", "--modes", mode)
  return Measurement(
      name,
      f"Fig. 3 family of 62 loss surfaces on the 100x100 grid, {mode}",
      base,
      base + ("--grid_size", "6", "--repeats", "1"),
      timeout_s=120,
      facts=(("config", "loss_surfaces:fig3_family"), ("dtype", "float32")),
  )


def _matmul(name, dtype):
  base = ("benchmarks.gpu_suite", "--worker", "matmul", "--dtype", dtype, "--size")
  return Measurement(
      name,
      f"square matmul rate, {dtype} (JAX's default precision)",
      base + ("8192",),
      base + ("256",),
      timeout_s=90,
      facts=(("config", "matmul:8192x8192x8192"), ("dtype", dtype)),
      tiny_facts=(("config", "matmul:256x256x256"), ("dtype", dtype)),
  )


def measurements() -> list[Measurement]:
  """The suite, in the order it runs: the issue's two targets first, after the matmul rates
  the MFU columns need; then the rest of the scaling table, the permutation model, the loss
  surfaces, the question of lax.switch under vmap, and the slot still waiting for its code."""
  return [
      _matmul("matmul_bf16", "bfloat16"),
      _matmul("matmul_f32", "float32"),
      _gan(
          "gan_mnist_paper_bf16_b256",
          "mnist:paper",
          256,
          "bfloat16",
          "mnist:smoke",
          profile=True,
          timeout_s=240,
      ),
      _gmm25("gmm25_paper_1024_seeds", 1024, 1024, 2, 2, timeout_s=180),
      _gmm25("gmm25_paper_64_seeds", 64, 64, 2, 2, timeout_s=150),
      _gmm25("gmm25_paper_1_seed_map", 1, 1, 1, 1, timeout_s=150),
      _gan("gan_mnist_paper_f32_b256", "mnist:paper", 256, "float32", "mnist:smoke"),
      _gan("gan_mnist_paper_bf16_b1024", "mnist:paper", 1024, "bfloat16", "mnist:smoke"),
      _gan("gan_mnist_paper_f32_b1024", "mnist:paper", 1024, "float32", "mnist:smoke"),
      _gan("gan_celeba_paper_bf16_b128", "celeba:paper", 128, "bfloat16", "celeba:smoke"),
      _plm("plm_mnist_paper_f32", "float32"),
      _plm("plm_mnist_paper_bf16", "bfloat16"),
      _surfaces("loss_surfaces_quadrature_f32", "quadrature_f32"),
      _surfaces("loss_surfaces_mc2000_f32", "mc2000_f32"),
      # One seed under vmap (seeds_per_batch 2 > 1 seed): against gmm25_paper_1_seed_map,
      # the cost of lax.switch turned into select_n (every task's branch runs).
      _gmm25("gmm25_paper_1_seed_vmap", 1, 2, 1, 2, timeout_s=150),
      Measurement(
          "xlnet_base_ft_and_biglearn_L128_b32",
          "xlnet-base-sized fine-tuning and big-learn train steps, length 128, batch 32, "
          "float32 and bfloat16",
          (),
          unavailable="not available yet: benchmarks/finetune_step.py times the FT and "
          "big-learn train steps (CPU rows in benchmarks/RESULTS.md), but its "
          "rows lack this suite's schema (images_per_second, mfu, peak memory) "
          "and a bfloat16 model; not wired in",
          facts=(("config", "xlnet-base FT and big-learn, length 128"), ("batch_size", 32)),
      ),
  ]


# ----------------------------------------------------------------------------------------------
# Workers: measurements and facts that live in this module (run in their own process).


def matmul_worker(dtype: str, size: int, *, repeats: int = 10, rounds: int = 5) -> dict:
  """The rate of `size`^3 matmuls of random `dtype` matrices at JAX's default precision.

  Four input pairs in rotation (so repeated products do not read one pair from cache), each
  round `repeats` products dispatched back to back and waited for once; the median round gives
  seconds per product; 2 size^3 FLOPs each. One product is checked against float64 numpy on
  its first 64 rows (`relative_error`, a sanity check: bf16 inputs land near 1e-3..1e-2)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from bigjax.evaluation import flops  # pylint: disable=import-outside-toplevel

  keys = jax.random.split(jax.random.key(0), 8)
  a = [jax.random.normal(k, (size, size), jnp.float32).astype(dtype) for k in keys[:4]]
  b = [jax.random.normal(k, (size, size), jnp.float32).astype(dtype) for k in keys[4:]]
  product = jax.jit(jnp.matmul)
  for i in range(3):
    jax.block_until_ready(product(a[i % 4], b[i % 4]))
  per_product = []
  for _ in range(rounds):
    start = time.perf_counter()
    outs = [product(a[i % 4], b[i % 4]) for i in range(repeats)]
    jax.block_until_ready(outs)
    per_product.append((time.perf_counter() - start) / repeats)
  check = np.asarray(outs[0][:64], np.float64)
  del outs
  ref = np.asarray(a[0][:64], np.float64) @ np.asarray(b[0], np.float64)
  step = float(np.median(per_product))
  achieved = 2.0 * size**3 / step
  device = jax.devices()[0]
  peak = flops.peak_flops_per_second(device, dtype)
  return dict(
      experiment="matmul",
      config=f"matmul:{size}x{size}x{size}",
      size=size,
      dtype=dtype,
      batch_size=None,
      precision=flops.peak_precision(dtype),
      step_seconds=step,
      step_seconds_rounds=per_product,
      images_per_second=None,
      matmul_tflops=achieved / 1e12,
      achieved_tflops=achieved / 1e12,
      peak_tflops=None if peak is None else peak / 1e12,
      mfu=None if peak is None else achieved / peak,
      relative_error=float(np.linalg.norm(check - ref) / np.linalg.norm(ref)),
      peak_memory_bytes=gan_step.peak_memory_bytes(),
      **gan_step.machine(),
  )


def environment_worker() -> dict:
  """The device and the software as this interpreter's jax sees them."""
  import jax  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  try:
    stats = devices[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    stats = {}
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return dict(
      device=devices[0].device_kind,
      device_count=len(devices),
      platform=devices[0].platform,
      backend=jax.default_backend(),
      device_memory_bytes=stats.get("bytes_limit"),
      default_matmul_precision=str(jax.config.jax_default_matmul_precision),
      packages=versions,
  )


# ----------------------------------------------------------------------------------------------
# The host side (never imports jax: a device client here would hold GPU memory the
# measurements need).


def _nvidia_smi() -> dict[str, Any] | None:
  if shutil.which("nvidia-smi") is None:
    return None
  out: dict[str, Any] = {}
  try:
    query = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
            "power.limit,pstate,temperature.gpu",
            "--format=csv,noheader",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out["gpus"] = [line.strip() for line in query.stdout.splitlines() if line.strip()]
    out["query"] = (
        "name, driver_version, memory.total, clocks.max.sm, power.limit, pstate, " "temperature.gpu"
    )
    header = subprocess.run(
        ["nvidia-smi"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    for token in ("Driver Version:", "CUDA Version:"):
      if token in header:
        out[token.rstrip(":").lower().replace(" ", "_")] = header.split(token, 1)[1].split()[0]
  except (OSError, subprocess.SubprocessError) as e:
    out["error"] = f"{type(e).__name__}: {e}"
  return out


def _git_commit() -> str | None:
  try:
    proc = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
  except (OSError, subprocess.SubprocessError):
    return None
  return proc.stdout.strip() or None


def _missing_modules(pythonpath: str) -> list[str]:
  """Modules of NEEDED_MODULES this interpreter cannot import with `pythonpath`."""
  code = (
      "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] "
      "if importlib.util.find_spec(m) is None))"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code, *NEEDED_MODULES],
      capture_output=True,
      text=True,
      env=dict(os.environ, PYTHONPATH=pythonpath),
      check=True,
  )
  return proc.stdout.split()


def download_command() -> str:
  """The command that downloads the missing wheels (for this interpreter's Python version, x86_64
  Linux) into .whl/ on a machine with network access."""
  version = f"{sys.version_info.major}.{sys.version_info.minor}"
  return (
      f"python3 -m pip download --no-deps --only-binary=:all: --python-version {version} "
      "--implementation cp --platform manylinux_2_28_x86_64 --platform "
      "manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0 "
      "tensorboardX==2.6.5   # in the repository root"
  )


def ensure_packages(pythonpath: str, log=print) -> tuple[str, str]:
  """Makes NEEDED_MODULES importable for the measurements; returns (pythonpath, how).

  Raises:
    SystemExit: a module is missing and REPO/.whl has no wheels to install it from.
  """
  missing = _missing_modules(pythonpath)
  if not missing:
    return pythonpath, "present"
  wheels = sorted(glob.glob(os.path.join(WHEELS, "*.whl")))
  if not wheels:
    raise SystemExit(
        f"gpu_suite: {', '.join(missing)} cannot be imported and {WHEELS} holds no "
        f"wheels. Download them on a machine with pip access:\n  "
        f"{download_command()}\nand copy the .whl folder into this repository, or run "
        f"`pip install -e .` here."
    )
  command = [
      sys.executable,
      "-m",
      "pip",
      "install",
      "-q",
      "--no-index",
      "--no-deps",
      "--no-compile",
      "--no-cache-dir",
      "--upgrade",
      "--target",
      SITE,
      *wheels,
  ]
  log(
      f"gpu_suite: {', '.join(missing)} missing; installing {len(wheels)} wheel(s): "
      f"{shlex.join(command)}"
  )
  proc = subprocess.run(command, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise SystemExit(
        f"gpu_suite: installing the wheels failed ({proc.returncode}):\n" f"{proc.stderr[-2000:]}"
    )
  pythonpath = SITE + os.pathsep + pythonpath
  still = _missing_modules(pythonpath)
  if still:
    raise SystemExit(f"gpu_suite: {', '.join(still)} still missing after installing {wheels}.")
  return pythonpath, f"installed from {', '.join(os.path.basename(w) for w in wheels)}"


def child_env(
    pythonpath: str, *, tiny: bool, cache_dir: str | None, xla_dump_dir: str | None = None
) -> dict[str, str]:
  env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONUNBUFFERED="1")
  flags = [env.get("XLA_FLAGS", "")]
  if tiny:
    # Compile time is nearly all of a tiny measurement: the cheapest backend optimisation.
    flags += ["--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]
  if xla_dump_dir:
    flags += [
        f"--xla_dump_to={xla_dump_dir}",
        "--xla_dump_hlo_as_text",
        "--xla_dump_hlo_module_re=.*train_step.*",
    ]
  env["XLA_FLAGS"] = " ".join(f for f in flags if f)
  if cache_dir:
    env.update(
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
  return env


def run_child(
    command: Sequence[str], env: dict[str, str], log_path: str, timeout_s: float
) -> tuple[int | None, float]:
  """Runs `command` in its own process group; returns (exit status or None if it was killed at
  `timeout_s`, wall seconds). The whole group is killed on timeout."""
  start = time.perf_counter()
  with open(log_path, "w") as log:
    log.write(f"$ {shlex.join(command)}\n")
    log.flush()
    proc = subprocess.Popen(
        list(command),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
      returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      proc.wait()
      returncode = None
  return returncode, time.perf_counter() - start


def _tail(path: str, chars: int = 1500) -> str:
  try:
    with open(path, errors="replace") as f:
      return f.read()[-chars:]
  except OSError:
    return ""


def schema_problems(row: dict[str, Any]) -> list[str]:
  """Fields of SCHEMA (and GMM25_SCHEMA for gmm25 rows) missing or of the wrong type."""
  problems = []
  schema = dict(SCHEMA, **(GMM25_SCHEMA if row.get("experiment") == "gmm25" else {}))
  for field, types in schema.items():
    if field not in row:
      problems.append(f"{field} missing")
    elif not isinstance(row[field], types) or isinstance(row[field], bool):
      problems.append(f"{field}={row[field]!r} is not {'/'.join(t.__name__ for t in types)}")
  return problems


def _result_row(
    child: Any, returncode: int | None, log_path: str
) -> tuple[str, dict[str, Any], str]:
  """(status, the benchmark's row or {}, error) from what the child left."""
  if returncode is None:
    return "timed out", child if isinstance(child, dict) else {}, "killed at its timeout"
  if isinstance(child, list):
    return "failed", {}, f"expected one JSON object, got a list of {len(child)}"
  if not isinstance(child, dict):
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return "failed", {}, f"no result ({how}): {_tail(log_path)}"
  if "error" in child:
    return ("out of memory" if child.get("out_of_memory") else "failed", child, str(child["error"]))
  if returncode:
    return "failed", child, f"exit status {returncode}: {_tail(log_path)}"
  child.setdefault("matmul_tflops", None)  # annotate_matmul fills these in
  child.setdefault("mfu_measured_matmul", None)
  problems = schema_problems(child)
  if problems:
    return "failed", child, "the result lacks the schema: " + "; ".join(problems)
  return "ok", child, ""


def annotate_matmul(row: dict[str, Any], rates: dict[str, float]) -> None:
  """Sets matmul_tflops / mfu_measured_matmul from this suite's matmul rates by precision."""
  if row.get("experiment") == "matmul":  # its own rate: nothing to compare
    row["mfu_measured_matmul"] = None
    return
  rate = rates.get(row.get("precision")) if row.get("achieved_tflops") is not None else None
  row["matmul_tflops"] = rate
  row["mfu_measured_matmul"] = (
      None if rate is None or row.get("status") != "ok" else row["achieved_tflops"] / rate
  )


def _prune_xla_dump(directory: str) -> None:
  """Keeps the optimised HLO and the memory-usage report of a dump; drops PTX, LLVM IR, buffer
  assignments and the rest (tens of MB for a large step), and the folders left empty."""
  for root, dirs, files in os.walk(directory, topdown=False):
    for name in files:
      if not (name.endswith("after_optimizations.txt") or name.endswith("memory-usage-report.txt")):
        os.remove(os.path.join(root, name))
    for name in dirs:
      path = os.path.join(root, name)
      if not os.listdir(path):
        os.rmdir(path)


def write_archive(out_dir: str, path: str) -> list[str]:
  """A .tar.gz of out_dir at `path` (atomically), under ARCHIVE_LIMIT_BYTES: XLA dumps, then
  profiles, are left out when the whole does not fit; returns what was left out."""
  left_out: list[str] = []
  for skip in ((), ("xla_dump_",), ("xla_dump_", "profile_")):
    tmp = path + ".partial"
    with tarfile.open(tmp, "w:gz") as tar:
      for name in sorted(os.listdir(out_dir)):
        if not any(name.startswith(s) for s in skip):
          tar.add(os.path.join(out_dir, name), arcname=os.path.join("gpu_suite", name))
    left_out = [n for n in sorted(os.listdir(out_dir)) if any(n.startswith(s) for s in skip)]
    if os.path.getsize(tmp) <= ARCHIVE_LIMIT_BYTES:
      break
  os.replace(tmp, path)
  return left_out


def _fmt(value, spec: str, scale: float | None = None, suffix: str = "") -> str:
  if value is None:
    return "-"
  try:
    return f"{value if scale is None else value * scale:{spec}}{suffix}"
  except (TypeError, ValueError):
    return str(value)


def _notes(row: dict[str, Any]) -> str:
  try:
    return _notes_of(row)
  except (KeyError, TypeError, ValueError) as e:  # a table cell never stops the suite
    return f"(notes unavailable: {type(e).__name__}: {e})"


def _notes_of(row: dict[str, Any]) -> str:
  status = row.get("status")
  if status == "not available":
    return row.get("reason", "")
  if status == "skipped":
    return row.get("reason", "")
  if status != "ok":
    return str(row.get("error", "")).replace("\n", " ").replace("|", "/")[:160]
  kind = row.get("experiment")
  if kind == "matmul":
    datasheet = (
        ""
        if row.get("mfu") is None
        else f", {row['mfu']:.0%} of the datasheet's {row['peak_tflops']:.0f}"
    )
    return (
        f"{row['matmul_tflops']:.2f} TFLOP/s {row['precision']}{datasheet}; rel. error "
        f"{row['relative_error']:.1e}"
    )
  if kind == "gmm25":
    speedup = (
        ""
        if row.get("speedup_vs_reference") is None
        else f", {row['speedup_vs_reference']:.0f}x the reference per seed"
    )
    seeds = f"{row['num_seeds']} seed" + ("s" if row["num_seeds"] > 1 else "")
    return (
        f"{seeds}: {row['run_seconds']:.2f} s, "
        f"{row['seconds_per_seed']:.4g} s per seed{speedup}; compile "
        f"{row['compile_seconds']:.1f} s; {row['formulation']}"
    )
  if row.get("method"):  # loss surfaces
    return (
        f"{row['num_surfaces']} surfaces, {row['grid_size']}x{row['grid_size']} grid, "
        f"compile {_fmt(row.get('compile_s'), '.1f')} s"
    )
  parts = []
  if "compile_s" in row:
    parts.append(f"compile {_fmt(row['compile_s'], '.1f')} s")
  if row.get("achieved_tflops") is not None:
    parts.append(f"{row['achieved_tflops']:.3g} model TFLOP/s ({row.get('precision')})")
  if row.get("tokens_per_second"):
    parts.append(f"{row['tokens_per_second']:.0f} tokens/s")
  profile = row.get("profile")
  if profile and profile.get("device_events"):
    parts.append(
        f"profile: device busy {profile['busy_fraction']:.0%} of the step, matmul "
        f"kernels {profile['matmul_fraction_of_busy']:.0%} of busy time, "
        f"{profile['kernels_per_step']:.0f} kernels per step"
    )
  elif profile and profile.get("error"):
    parts.append(f"profile failed: {profile['error'][:80]}")
  elif profile is not None:
    parts.append("profile: no device kernels in the trace")
  return "; ".join(parts)


def summary_table(
    rows: list[dict[str, Any]], environment: dict[str, Any], *, tiny: bool, command: str
) -> str:
  env = environment
  smi = env.get("nvidia_smi") or {}
  lines = [
      "# GPU suite (issue 19)" + (" - tiny CPU shapes, not measurements" if tiny else ""),
      "",
      f"Device: {env.get('device', '?')} x {env.get('device_count', '?')} "
      f"({env.get('backend', '?')}); driver {smi.get('driver_version', '-')}, CUDA "
      f"{smi.get('cuda_version', '-')}; jax {env.get('packages', {}).get('jax', '?')}, "
      f"jaxlib {env.get('packages', {}).get('jaxlib', '?')}; Python {env.get('python')}; "
      f"{env.get('date_utc', '')}; commit {env.get('git_commit') or '-'}.",
      "",
      f"Command: `{command}`; every row's own command is in its JSON.",
      "",
      "| measurement | status | config | batch | dtype | step s | images/s | MFU (datasheet) "
      "| MFU (measured matmul) | peak memory | wall s | notes |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    lines.append(
        f"| {r['measurement']} | {r['status']} | {r.get('config') or '-'} | "
        f"{_fmt(r.get('batch_size'), 'd')} | {r.get('dtype') or '-'} | "
        f"{_fmt(r.get('step_seconds'), '.4g')} | {_fmt(r.get('images_per_second'), '.4g')} | "
        f"{_fmt(r.get('mfu'), '.1%')} | {_fmt(r.get('mfu_measured_matmul'), '.1%')} | "
        f"{_fmt(r.get('peak_memory_bytes'), '.2f', 2.0 ** -30, ' GiB')} | "
        f"{_fmt(r.get('wall_seconds'), '.0f')} | {_notes(r)} |"
    )
  return "\n".join(lines) + "\n"


def gather_environment(
    out_dir: str, env: dict[str, str], *, tiny: bool, command: str, packages_how: str
) -> dict[str, Any]:
  path = os.path.join(out_dir, "logs", "environment.child.json")
  returncode, _ = run_child(
      [sys.executable, "-m", "benchmarks.gpu_suite", "--worker", "environment", "--json", path],
      env,
      os.path.join(out_dir, "logs", "environment.log"),
      timeout_s=180,
  )
  facts: dict[str, Any] = {}
  try:
    with open(path) as f:
      facts = json.load(f)
    os.remove(path)
  except (OSError, ValueError):
    facts = dict(
        error=f"the environment worker gave no result (exit status {returncode}): "
        f"{_tail(os.path.join(out_dir, 'logs', 'environment.log'))}"
    )
  import platform  # pylint: disable=import-outside-toplevel

  facts.update(
      nvidia_smi=_nvidia_smi(),
      python=platform.python_version(),
      python_executable=sys.executable,
      platform=platform.platform(),
      cpu_count=os.cpu_count(),
      git_commit=_git_commit(),
      date_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      suite_command=command,
      tiny=tiny,
      needed_modules=packages_how,
      xla_flags=env.get("XLA_FLAGS", ""),
  )
  return facts


def run_suite(
    selected: Sequence[Measurement],
    out_dir: str,
    *,
    tiny: bool,
    budget_s: float | None = None,
    timeout_s: float | None = None,
    resume: bool = False,
    archive: str | None = None,
    cache_dir: str | None = None,
    command: str = "",
    log=print,
) -> list[dict]:
  """Runs `selected` in order into out_dir; returns the rows (also DIR/NAME.json, summary.md)."""
  deadline = None if budget_s is None else time.monotonic() + budget_s
  os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
  pythonpath = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
  pythonpath, how = ensure_packages(pythonpath, log=log)
  own_cache = None
  if tiny and cache_dir is None:
    own_cache = cache_dir = tempfile.mkdtemp(prefix="gpu_suite_tiny_cache_")
  try:
    env = child_env(pythonpath, tiny=tiny, cache_dir=cache_dir)
    environment = gather_environment(out_dir, env, tiny=tiny, command=command, packages_how=how)
    gan_step.dump_json(os.path.join(out_dir, "environment.json"), environment, default=str)
    log(
        f"gpu_suite: {environment.get('device')} x {environment.get('device_count')}, jax "
        f"{environment.get('packages', {}).get('jax')}; {len(selected)} measurement(s)"
        + (" (tiny)" if tiny else "")
    )
    rates: dict[str, float] = {}
    rows = []
    for m in selected:
      path = os.path.join(out_dir, f"{m.name}.json")
      row = None
      if resume and os.path.isfile(path):
        with open(path) as f:
          previous = json.load(f)
        if previous.get("status") == "ok" and previous.get("tiny") == tiny:
          row = previous
          log(f"  {m.name}: ok before, kept (--resume)")
      if row is None:
        try:
          row = _measure(
              m,
              out_dir,
              env,
              tiny=tiny,
              deadline=deadline,
              timeout_s=timeout_s,
              pythonpath=pythonpath,
              cache_dir=cache_dir,
              log=log,
          )
        except Exception as e:  # pylint: disable=broad-except
          # A fault of the suite itself fails this measurement only.
          row = dict(
              {field: None for field in SCHEMA},
              config=m.name,
              measurement=m.name,
              what=m.what,
              tiny=tiny,
              status="failed",
              command=None,
              error=f"gpu_suite: {type(e).__name__}: {e}",
          )
          log(f"  {m.name}: failed ({row['error']})")
      if row.get("device") is None:
        row["device"] = environment.get("device")
      if row.get("experiment") == "matmul" and row["status"] == "ok":
        rates[row["precision"]] = row["matmul_tflops"]
      annotate_matmul(row, rates)
      gan_step.dump_json(path, row, default=str)
      rows.append(row)
      with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(summary_table(rows, environment, tiny=tiny, command=command))
      if archive:
        left_out = write_archive(out_dir, archive)
        if left_out:
          log(
              f"  (archive: left out {', '.join(left_out)} to stay under "
              f"{ARCHIVE_LIMIT_BYTES // 2**20} MiB)"
          )
  finally:
    if own_cache:
      shutil.rmtree(own_cache, ignore_errors=True)
  return rows


def _measure(
    m: Measurement,
    out_dir: str,
    env: dict[str, str],
    *,
    tiny: bool,
    deadline: float | None,
    timeout_s: float | None,
    pythonpath: str,
    cache_dir: str | None,
    log,
) -> dict[str, Any]:
  base = {field: None for field in SCHEMA}
  facts = dict(m.tiny_facts if tiny and m.tiny_facts else m.facts)
  base["config"] = m.name
  base.update(facts)
  base.update(measurement=m.name, what=m.what, tiny=tiny)
  if m.unavailable:
    log(f"  {m.name}: not available ({m.unavailable})")
    return dict(base, status="not available", reason=m.unavailable, command=None)
  limit = timeout_s or (TINY_TIMEOUT_S if tiny else m.timeout_s)
  if deadline is not None:
    left = deadline - time.monotonic()
    if left < min(MIN_START_S, limit):
      log(f"  {m.name}: skipped ({left:.0f} s of the budget left)")
      return dict(
          base,
          status="skipped",
          command=None,
          reason=f"suite budget spent ({max(left, 0):.0f} s left)",
      )
    limit = min(limit, left)
  args = [a.format(dir=out_dir, name=m.name) for a in (m.tiny if tiny else m.command)]
  child_json = os.path.join(out_dir, "logs", f"{m.name}.child.json")
  if os.path.exists(child_json):
    os.remove(child_json)
  command = [sys.executable, "-m", *args, "--json", child_json]
  dump_dir = os.path.join(out_dir, f"xla_dump_{m.name}") if m.xla_dump else None
  if dump_dir:
    env = child_env(pythonpath, tiny=tiny, cache_dir=cache_dir, xla_dump_dir=dump_dir)
  log_path = os.path.join(out_dir, "logs", f"{m.name}.log")
  log(f"  {m.name}: running (limit {limit:.0f} s) ...")
  returncode, wall = run_child(command, env, log_path, limit)
  child = None
  try:
    with open(child_json) as f:
      child = json.load(f)
    os.remove(child_json)
  except (OSError, ValueError):
    pass
  if dump_dir and os.path.isdir(dump_dir):
    _prune_xla_dump(dump_dir)
  status, result, error = _result_row(child, returncode, log_path)
  row = dict(base, **result)
  row.update(
      measurement=m.name,
      what=m.what,
      tiny=tiny,
      status=status,
      benchmark=args[0],
      command="python -m " + shlex.join(args + ["--json", "PATH"]),
      returncode=returncode,
      wall_seconds=round(wall, 2),
      log=os.path.relpath(log_path, out_dir),
  )
  if error:
    row["error"] = error
  log(f"  {m.name}: {status} in {wall:.0f} s" + (f" ({error[:200]})" if error else ""))
  return row


def _list(selected: Sequence[Measurement]) -> str:
  lines = []
  for m in selected:
    lines.append(f"{m.name}\n    {m.what}")
    if m.unavailable:
      lines.append(f"    {m.unavailable}")
      continue
    for label, args in ((f"GPU  (limit {m.timeout_s} s)", m.command), ("tiny", m.tiny)):
      args = [a.format(dir="DIR", name=m.name) for a in args]
      lines.append(f"    {label}: python -m {shlex.join(args)} --json DIR/logs/{m.name}.child.json")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--out",
      help="directory for the JSON rows, summary.md and "
      "environment.json (created; its parent must exist)",
  )
  parser.add_argument(
      "--tiny", action="store_true", help="tiny CPU shapes: a check of the suite, not measurements"
  )
  parser.add_argument("--only", nargs="+", metavar="NAME", help="run these measurements only")
  parser.add_argument("--list", action="store_true", help="list the measurements and exit")
  parser.add_argument(
      "--budget_s", type=float, default=None, help="seconds for the whole suite (default: none)"
  )
  parser.add_argument(
      "--timeout_s",
      type=float,
      default=None,
      help="per-measurement limit (default: each measurement's own)",
  )
  parser.add_argument(
      "--resume",
      action="store_true",
      help="keep measurements that already have an ok result in --out",
  )
  parser.add_argument(
      "--archive",
      metavar="PATH.tar.gz",
      help="rewrite a .tar.gz of --out here after every measurement",
  )
  parser.add_argument(
      "--cache_dir",
      help="persistent XLA compilation cache for the " "measurements (--tiny: a temporary one)",
  )
  parser.add_argument("--worker", choices=("matmul", "environment"), help=argparse.SUPPRESS)
  parser.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
  parser.add_argument("--size", type=int, default=8192, help=argparse.SUPPRESS)
  parser.add_argument("--json", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker:
    row = matmul_worker(args.dtype, args.size) if args.worker == "matmul" else environment_worker()
    print(json.dumps(row), flush=True)
    if args.json:
      gan_step.dump_json(args.json, row, default=str)
    return 0

  everything = measurements()
  names = [m.name for m in everything]
  if args.only:
    unknown = [n for n in args.only if n not in names]
    if unknown:
      parser.error(
          f"unknown measurement(s) {', '.join(unknown)}; the measurements are: "
          f"{', '.join(names)} (see --list)."
      )
  selected = [m for m in everything if not args.only or m.name in args.only]
  if args.list:
    print(_list(selected))
    return 0
  if not args.out:
    parser.error("--out DIR is required (or --list).")
  out_dir = os.path.abspath(args.out)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    parser.error(f"--out {args.out} exists and is not a directory.")
  if not os.path.isdir(os.path.dirname(out_dir)):
    parser.error(
        f"--out {args.out}: its parent directory {os.path.dirname(out_dir)} does not " "exist."
    )
  if args.budget_s is not None and args.budget_s <= 0:
    parser.error(f"--budget_s must be > 0, got {args.budget_s}.")
  if args.timeout_s is not None and args.timeout_s <= 0:
    parser.error(f"--timeout_s must be > 0, got {args.timeout_s}.")
  if args.archive and not os.path.isdir(os.path.dirname(os.path.abspath(args.archive))):
    parser.error(f"--archive {args.archive}: its directory does not exist.")
  command = "python -m benchmarks.gpu_suite " + shlex.join(sys.argv[1:] if argv is None else argv)
  rows = run_suite(
      selected,
      out_dir,
      tiny=args.tiny,
      budget_s=args.budget_s,
      timeout_s=args.timeout_s,
      resume=args.resume,
      archive=args.archive,
      cache_dir=args.cache_dir,
      command=command,
  )
  with open(os.path.join(out_dir, "summary.md")) as f:
    print(f.read())
  failed = [r["measurement"] for r in rows if r["status"] not in ("ok", "not available")]
  print(
      f"gpu_suite: {len(rows) - len(failed)} of {len(rows)} ok or not available"
      + (f"; not ok: {', '.join(failed)}" if failed else "")
  )
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
