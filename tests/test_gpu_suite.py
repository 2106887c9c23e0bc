"""benchmarks/gpu_suite.py on CPU at tiny shapes: the rows' schema, the table, failures.

No timing assertions: the tiny numbers measure nothing; what is checked is that every
measurement runs end to end, writes its row with the schema's fields and types, and that a
failing one is reported without stopping the others.
"""

import gzip
import json
import os
import subprocess
import sys
import tarfile
import zipfile

import jax
import jax.numpy as jnp
import pytest

import conftest
from benchmarks import gan_step
from benchmarks import gpu_suite
from benchmarks import plm_step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = {  # the schema, checked here independently of gpu_suite.SCHEMA
    "device": (str,),
    "config": (str,),
    "batch_size": (int, type(None)),
    "dtype": (str, type(None)),
    "step_seconds": (int, float, type(None)),
    "images_per_second": (int, float, type(None)),
    "mfu": (int, float, type(None)),
    "peak_memory_bytes": (int, type(None)),
}
# One measurement of every benchmark module (the others differ from these only in their
# arguments), the profiled GAN step among them, and the slot without code yet; with
# BIGJAX_FULL_GPU_SUITE=1 the whole suite (419 s on 2 cores at load average 4-5).
END_TO_END = (
    tuple(m.name for m in gpu_suite.measurements())
    if os.environ.get("BIGJAX_FULL_GPU_SUITE") == "1"
    else (
        "matmul_bf16",
        "gan_mnist_paper_bf16_b256",
        "gmm25_paper_1_seed_map",
        "plm_mnist_paper_f32",
        "loss_surfaces_quadrature_f32",
        "xlnet_base_ft_and_biglearn_L128_b32",
    )
)


def _suite(*args, cwd=REPO):
  return subprocess.run(
      [sys.executable, "-m", "benchmarks.gpu_suite", *args],
      cwd=cwd,
      env=conftest.subprocess_env(),
      capture_output=True,
      text=True,
      check=False,
  )


def _check_schema(row):
  for field, types in REQUIRED.items():
    assert field in row, (row["measurement"], field)
    assert isinstance(row[field], types) and not isinstance(row[field], bool), (
        row["measurement"],
        field,
        row[field],
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("gpu_suite")
  out, archive = tmp / "suite", tmp / "suite.tar.gz"
  # The suite's compilation cache, not --tiny's own temporary one: warm from the second run on.
  cache = ["--cache_dir", conftest.JAX_CACHE_DIR] if conftest.JAX_CACHE_DIR else []
  proc = _suite(
      "--tiny", "--out", str(out), "--archive", str(archive), *cache, "--only", *END_TO_END
  )
  rows = {}
  for name in END_TO_END:
    with open(out / f"{name}.json") as f:
      rows[name] = json.load(f)
  return proc, out, archive, rows


# Slow: one fresh process per benchmark module, each importing JAX and compiling its program;
# the tiny shapes are already the smallest the benchmarks take.
@pytest.mark.slow
def test_tiny_suite_runs_every_benchmark_end_to_end(tiny_run):
  proc, out, archive, rows = tiny_run
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  for name, row in rows.items():
    _check_schema(row)
    assert row["measurement"] == name and row["tiny"] is True
    expected = "not available" if name.startswith("xlnet") else "ok"
    assert row["status"] == expected, (name, row.get("error"))
    if expected == "ok":
      assert row["device"] == jax.devices()[0].device_kind
      assert row["step_seconds"] > 0 and row["command"].startswith("python -m benchmarks.")
  # The schema's numbers where they exist, None where a CPU has none.
  gan = rows["gan_mnist_paper_bf16_b256"]
  assert (gan["config"], gan["batch_size"], gan["dtype"]) == ("mnist:smoke", 8, "bfloat16")
  assert gan["images_per_second"] > 0 and gan["mfu"] is None
  assert gan["peak_memory_bytes"] is None  # the CPU allocator reports none
  assert gan["profile"]["device_events"] == 0  # a CPU trace has no device kernels
  assert os.path.isfile(out / "profile_gan_mnist_paper_bf16_b256" / "perfetto_trace.json.gz")
  # MFU against this suite's own matmul rate in the same precision.
  matmul = rows["matmul_bf16"]
  assert matmul["precision"] == gan["precision"] == "bfloat16"
  assert gan["matmul_tflops"] == matmul["matmul_tflops"] > 0
  assert gan["mfu_measured_matmul"] == pytest.approx(
      gan["achieved_tflops"] / matmul["matmul_tflops"], rel=1e-3
  )
  assert matmul["relative_error"] < 3e-2  # bf16 inputs, float64 reference
  gmm = rows["gmm25_paper_1_seed_map"]
  assert gmm["experiment"] == "gmm25" and gmm["num_seeds"] == 1
  assert gmm["seconds_per_seed"] > 0 and gmm["batch_size"] == 1
  assert gmm["speedup_vs_reference"] is None  # the reference timed `paper` only
  assert "drawn task only" in gmm["formulation"]
  plm = rows["plm_mnist_paper_f32"]
  assert plm["config"] == "plm_mnist:smoke" and plm["model_flops_per_step"] > 0
  surfaces = rows["loss_surfaces_quadrature_f32"]
  assert surfaces["batch_size"] == 62 * 6 * 6 and surfaces["finite"]
  slot = rows["xlnet_base_ft_and_biglearn_L128_b32"]
  assert "not available yet" in slot["reason"] and slot["step_seconds"] is None
  # The table and the environment.
  summary = (out / "summary.md").read_text()
  for name, row in rows.items():
    assert f"| {name} | {row['status']} |" in summary
  environment = json.loads((out / "environment.json").read_text())
  assert environment["device"] == jax.devices()[0].device_kind
  assert environment["packages"]["jax"] == jax.__version__
  with tarfile.open(archive) as tar:
    names = set(tar.getnames())
  assert {f"gpu_suite/{n}.json" for n in END_TO_END} <= names
  assert "gpu_suite/summary.md" in names


def test_a_failing_measurement_is_reported_and_the_others_run(tmp_path):
  broken = ("benchmarks.gpu_suite", "--worker", "no_such_worker")
  matmul = ("benchmarks.gpu_suite", "--worker", "matmul", "--size", "32", "--dtype", "float32")
  selected = [
      gpu_suite.Measurement("broken", "exits 2", broken, broken),
      gpu_suite.Measurement("after", "ok", matmul, matmul),
  ]
  rows = gpu_suite.run_suite(selected, str(tmp_path), tiny=True, log=lambda *_: None)
  assert [r["status"] for r in rows] == ["failed", "ok"]
  failed = json.loads((tmp_path / "broken.json").read_text())
  assert failed["status"] == "failed" and "invalid choice" in failed["error"]
  assert failed["returncode"] == 2
  _check_schema(failed)  # the fields are there, as None
  assert failed["step_seconds"] is None and failed["device"] == jax.devices()[0].device_kind
  assert "| broken | failed |" in (tmp_path / "summary.md").read_text()
  after = json.loads((tmp_path / "after.json").read_text())
  assert after["matmul_tflops"] > 0 and after["relative_error"] < 1e-3


def test_budget_skips_what_does_not_fit_and_resume_keeps_what_is_ok(tmp_path):
  matmul = ("benchmarks.gpu_suite", "--worker", "matmul", "--size", "32", "--dtype", "float32")
  earlier = dict(
      {field: None for field in gpu_suite.SCHEMA},
      measurement="m",
      status="ok",
      tiny=True,
      device="cpu",
      config="matmul:32x32x32",
  )
  (tmp_path / "m.json").write_text(json.dumps(earlier))
  selected = [
      gpu_suite.Measurement("m", "done before", matmul, matmul),
      gpu_suite.Measurement("n", "not started", matmul, matmul),
  ]
  rows = gpu_suite.run_suite(
      selected, str(tmp_path), tiny=True, resume=True, budget_s=1e-3, log=lambda *_: None
  )
  assert [r["status"] for r in rows] == ["ok", "skipped"]
  assert rows[0]["config"] == "matmul:32x32x32"  # kept, not measured again
  assert "budget" in rows[1]["reason"] and not os.path.exists(tmp_path / "logs" / "n.log")


def test_run_child_kills_a_hung_measurement(tmp_path):
  returncode, _ = gpu_suite.run_child(
      [sys.executable, "-c", "import signal; signal.pause()"],
      dict(os.environ),
      str(tmp_path / "log"),
      timeout_s=1,
  )
  assert returncode is None


def test_bad_arguments_get_clear_errors(tmp_path):
  proc = _suite("--only", "no_such_measurement", "--out", str(tmp_path / "x"))
  assert proc.returncode == 2 and "unknown measurement(s) no_such_measurement" in proc.stderr
  assert "gan_mnist_paper_bf16_b256" in proc.stderr  # the known names are listed
  proc = _suite("--out", str(tmp_path / "missing" / "out"))
  assert proc.returncode == 2 and "does not exist" in proc.stderr
  proc = _suite("--list")
  assert proc.returncode == 0
  for m in gpu_suite.measurements():
    assert m.name in proc.stdout
  assert "not available yet" in proc.stdout


def test_missing_module_is_installed_from_wheels_or_named(tmp_path, monkeypatch):
  name = "bigjax_suite_probe"
  monkeypatch.setattr(gpu_suite, "NEEDED_MODULES", (name,))
  monkeypatch.setattr(gpu_suite, "WHEELS", str(tmp_path / "empty"))
  with pytest.raises(SystemExit, match="pip download"):
    gpu_suite.ensure_packages(REPO, log=lambda *_: None)
  wheels = tmp_path / "whl"
  wheels.mkdir()
  with zipfile.ZipFile(wheels / f"{name}-0.1-py3-none-any.whl", "w") as z:
    z.writestr(f"{name}/__init__.py", "")
    z.writestr(
        f"{name}-0.1.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: bigjax-suite-probe\nVersion: 0.1\n",
    )
    z.writestr(
        f"{name}-0.1.dist-info/WHEEL",
        "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    )
    z.writestr(f"{name}-0.1.dist-info/RECORD", "")
  monkeypatch.setattr(gpu_suite, "WHEELS", str(wheels))
  monkeypatch.setattr(gpu_suite, "SITE", str(tmp_path / "site"))
  pythonpath, how = gpu_suite.ensure_packages(REPO, log=lambda *_: None)
  assert pythonpath.split(os.pathsep)[0] == str(tmp_path / "site")
  assert "installed from" in how and os.path.isdir(tmp_path / "site" / name)


def test_profile_summary_of_a_gpu_trace(tmp_path):
  """Two steps of 10 ms: per step a 4 ms gemm and, overlapping it by 1 ms on another stream, a
  3 ms fusion; an "XLA Ops" line repeats them (and must not be counted twice)."""
  pid = 7
  meta = [
      dict(ph="M", pid=pid, name="process_name", args=dict(name="/device:GPU:0")),
      dict(ph="M", pid=pid, tid=1, name="thread_name", args=dict(name="Stream #13(Compute)")),
      dict(ph="M", pid=pid, tid=2, name="thread_name", args=dict(name="Stream #14(Compute)")),
      dict(ph="M", pid=pid, tid=3, name="thread_name", args=dict(name="XLA Ops")),
      dict(ph="M", pid=1, name="process_name", args=dict(name="/host:CPU")),
  ]
  events = []
  for step in range(2):
    t0 = step * 10_000.0
    events += [
        dict(ph="X", pid=pid, tid=1, ts=t0, dur=4000.0, name="sm90_xmma_gemm_bf16"),
        dict(ph="X", pid=pid, tid=2, ts=t0 + 3000, dur=3000.0, name="loop_add_fusion"),
        dict(ph="X", pid=pid, tid=3, ts=t0, dur=6000.0, name="fusion.1"),
        dict(ph="X", pid=1, tid=9, ts=t0, dur=9000.0, name="PjitFunction"),
    ]
  directory = tmp_path / "plugins" / "profile" / "run"
  directory.mkdir(parents=True)
  with gzip.open(directory / "perfetto_trace.json.gz", "wt") as f:
    json.dump(dict(traceEvents=meta + events), f)
  s = gan_step.profile_summary(str(tmp_path), steps=2, step_seconds=0.010)
  assert s["device_events"] == 4 and s["kernels_per_step"] == 2
  assert s["matmul_ms"] == pytest.approx(4.0) and s["other_kernel_ms"] == pytest.approx(3.0)
  assert s["busy_ms"] == pytest.approx(6.0)  # the union: 0-4 and 3-6 ms
  assert s["busy_fraction"] == pytest.approx(0.6)
  assert s["matmul_fraction_of_busy"] == pytest.approx(4 / 6, abs=1e-4)
  assert s["top_kernels"][0]["name"] == "sm90_xmma_gemm_bf16"
  assert s["top_kernels"][0]["calls_per_step"] == 1


def test_dot_flops_counts_matmuls_through_nested_jaxprs():
  a, b = jnp.ones((3, 4)), jnp.ones((4, 5))
  batched = jnp.ones((2, 3, 4))

  def fn(a, b, batched):
    x = jax.jit(jnp.dot)(a, b)  # 2*3*4*5
    y = jnp.einsum("bij,jk->bik", batched, b)  # 2*2*3*4*5
    z, _ = jax.lax.scan(lambda c, _: (c @ jnp.ones((5, 5)), None), x, None, length=3)
    return x.sum() + y.sum() + z.sum()  # 3 * 2*3*5*5

  jaxpr = jax.make_jaxpr(fn)(a, b, batched).jaxpr
  assert plm_step.dot_flops(jaxpr) == 120 + 240 + 3 * 150


def test_xla_dump_keeps_the_optimised_hlo_only(tmp_path):
  keep = (
      "module_0009.jit_train_step.sm_9.0_gpu_after_optimizations.txt",
      "module_0009.jit_train_step.sm_9.0_gpu_after_optimizations-memory-usage-report.txt",
  )
  drop = (
      "module_0009.jit_train_step.before_optimizations.txt",
      "module_0009.ptx",
      "module_0009.jit_train_step.sm_9.0_gpu_after_optimizations-buffer-assignment.txt",
      "module_0006.jit__lambda/fusion.ll",
  )
  for name in keep + drop:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("x")
  gpu_suite._prune_xla_dump(str(tmp_path))  # pylint: disable=protected-access
  assert sorted(os.listdir(tmp_path)) == sorted(keep)
