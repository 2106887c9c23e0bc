"""Time, memory and accuracy of the paper's Fig. 3 family of loss surfaces.

The family (the reference code's): the joint surface, the 12 rotated y1-marginals (0..165 deg)
and the 7x7 rotated conditionals y1 | y2 = v, 62 surfaces on the 100x100 grid. Measured:

- quadrature (float32, the default; and float64) and Monte Carlo with 2,000 samples per grid
  point (the reference's estimator): compile time (first call minus steady state), steady-state
  time (best of repeats), peak resident memory of the process and its growth over a process
  that only imported JAX and ran one op;
- errors against a high-precision reference: float64 quadrature with 4x the default orders,
  itself checked against scipy's adaptive quad on random grid points of every panel kind.

  python -m benchmarks.loss_surfaces                  # all, appends to benchmarks/RESULTS.md
  python -m benchmarks.loss_surfaces --no-write       # print only
  python -m benchmarks.loss_surfaces --modes quadrature_f32 --no-reference --no-write \
      --json /tmp/surfaces.json                       # one mode's time, no error columns

Each measurement runs in its own subprocess so that peak memory is its own. `--grid_size N`
uses an N x N grid instead of 100 x 100 and `--repeats N` overrides the steady-state repeats
(the tests' tiny shapes); `--no-reference` skips the float64 reference, and with it the errors
and the scipy check. `--json PATH` writes one row per mode (one object for one mode, else a
list) with the fields of benchmarks/gpu_suite.py's schema: `device`, `config`, `batch_size`
(loss values per call: surfaces x grid points), `dtype`, `step_seconds` (steady-state seconds
of the whole family), `images_per_second` and `mfu` (None), `peak_memory_bytes` (the device
allocator's peak where the backend reports it).
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
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIGMA2 = 0.1
MODES = {
    # name: (method, x64, num_points multiplier, repeats)
    "quadrature_f32": ("quadrature", False, 1, 5),
    "quadrature_f64": ("quadrature", True, 1, 3),
    "mc2000_f32": ("mc", False, 1, 2),
    "reference_f64": ("quadrature", True, 4, 1),
}


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def family_tasks():
  from bigjax.mixtures import surfaces, two_gmm

  tasks = [surfaces.MatchingTask("joint")]
  tasks += [
      surfaces.MatchingTask("marginal", (0,), transform=two_gmm.rotation_deg(a))
      for a in range(0, 180, 15)
  ]
  tasks += [
      surfaces.MatchingTask("conditional", (0,), (1,), (v,), transform=two_gmm.rotation_deg(a))
      for a in range(0, 91, 15)
      for v in two_gmm.conditional_values(a, SIGMA2)
  ]
  return tasks


def worker(mode: str, out_path: str | None, grid_size: int = 100, repeats: int | None = None):
  """Runs one measurement in this process; writes its surfaces to `out_path` (.npy, unless
  None) and returns its facts."""
  import jax

  method, x64, multiplier, default_repeats = MODES[mode]
  repeats = default_repeats if repeats is None else repeats
  jax.numpy.zeros(1).block_until_ready()
  baseline = _peak_rss_mb()
  from bigjax.mixtures import divergences, surfaces, two_gmm

  with jax.enable_x64(x64):
    axis = np.linspace(-2, 2, grid_size)
    target, model_fn = two_gmm.target(SIGMA2), two_gmm.model_fn(SIGMA2)
    thetas = surfaces.grid_2d(axis, axis)
    tasks = family_tasks()
    kwargs = dict(method=method)
    if method == "mc":
      kwargs.update(rng=jax.random.key(0), num_samples=2000)
    if multiplier != 1:
      # One order for the whole call: the 1-D tasks dominate, the joint gets its own run.
      kwargs["num_points"] = divergences.DEFAULT_NUM_POINTS[1] * multiplier

    def compute(tasks_, **kw):
      return np.asarray(
          jax.block_until_ready(surfaces.loss_surfaces(target, model_fn, thetas, tasks_, **kw))
      )

    start = time.perf_counter()
    if multiplier != 1:
      joint = compute(
          tasks[:1], method="quadrature", num_points=divergences.DEFAULT_NUM_POINTS[2] * multiplier
      )
      rest = compute(tasks[1:], **kwargs)
      values = np.concatenate([joint, rest])
      first = time.perf_counter() - start
      times = [first]
    else:
      values = compute(tasks, **kwargs)
      first = time.perf_counter() - start
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        compute(tasks, **kwargs)
        times.append(time.perf_counter() - start)
  steady = min(times)
  if out_path:
    np.save(out_path, values.reshape(len(tasks), grid_size, grid_size))
  from benchmarks import gan_step

  return dict(
      mode=mode,
      config="loss_surfaces:fig3_family",
      method=method,
      dtype="float64" if x64 else "float32",
      grid_size=grid_size,
      num_samples=2000 if method == "mc" else None,
      batch_size=len(tasks) * grid_size * grid_size,
      first_call_s=first,
      steady_s=steady,
      step_seconds=steady,
      compile_s=max(first - steady, 0.0),
      images_per_second=None,
      mfu=None,
      peak_memory_bytes=gan_step.peak_memory_bytes(),
      peak_rss_mb=_peak_rss_mb(),
      baseline_rss_mb=baseline,
      num_surfaces=len(tasks),
      finite=bool(np.all(np.isfinite(values))),
      **gan_step.machine(),
  )


def scipy_check(reference: np.ndarray, num_points: int = 40, seed: int = 0) -> dict:
  """Max |reference - scipy.integrate.quad| on random grid points of each panel kind.

  The 1-D task densities are built here in numpy from the closed forms (rotated means A mu,
  variance sigma^2; exact Gaussian conditioning with posterior weights). The joint surface
  equals the 1-D KL of the x1 marginals (x2 is an independent, identical factor on both sides).
  """
  from scipy import integrate
  from scipy.special import logsumexp
  from bigjax.mixtures import two_gmm

  rng = np.random.default_rng(seed)
  grid_size = reference.shape[1]
  axis = np.linspace(-2, 2, grid_size)
  s2 = SIGMA2

  def log_mix(x, means, log_w, var):
    x = np.asarray(x)[..., None]
    return logsumexp(log_w - 0.5 * (x - means) ** 2 / var - 0.5 * np.log(2 * np.pi * var), -1)

  def kl_1d(pm, pw, qm, qw, var):
    pts = sorted(set(np.round(np.concatenate([pm, qm]), 12)))
    lo, hi = min(pts) - 12 * np.sqrt(var), max(pts) + 12 * np.sqrt(var)
    f = lambda x: np.exp(log_mix(x, pm, pw, var)) * (
        log_mix(x, pm, pw, var) - log_mix(x, qm, qw, var)
    )
    return integrate.quad(f, lo, hi, points=pts, limit=400, epsabs=1e-12, epsrel=1e-12)[0]

  def task_1d(theta, kind, angle, v):
    a = np.deg2rad(angle)
    rows = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    out = []
    for means in (
        np.array([[theta[0], 0.0], [theta[1], 0.0]]),
        np.array([[-1.0, 0.0], [1.0, 0.0]]),
    ):
      y = means @ rows.T
      log_w = np.log([0.5, 0.5])
      if kind == "conditional":
        # Isotropic components stay isotropic under rotation: y1 and y2 are independent
        # within a component, so conditioning only reweights by N(v | y2-mean, s2).
        log_w = log_w - 0.5 * (v - y[:, 1]) ** 2 / s2
        log_w = log_w - logsumexp(log_w)
      out.append((y[:, 0], log_w))
    return out

  errors = {"joint": 0.0, "marginal": 0.0, "conditional": 0.0}
  tasks = (
      [("joint", 0.0, 0.0)]
      + [("marginal", a, 0.0) for a in range(0, 180, 15)]
      + [("conditional", a, v) for a in range(0, 91, 15) for v in two_gmm.conditional_values(a, s2)]
  )
  for t_index, (kind, angle, v) in enumerate(tasks):
    picks = num_points if kind == "joint" else max(2, num_points // 10)
    for _ in range(picks):
      i, j = rng.integers(0, grid_size, 2)
      (pm, pw), (qm, qw) = task_1d(
          (axis[i], axis[j]), "marginal" if kind == "joint" else kind, angle, v
      )
      ref = kl_1d(pm, pw, qm, qw, s2)
      errors[kind] = max(errors[kind], abs(reference[t_index, i, j] - ref))
  return errors


def machine_facts() -> dict:
  import jax

  cpu = ""
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return dict(
      cpu=cpu,
      cores=os.cpu_count(),
      python=platform.python_version(),
      jax=jax.__version__,
      backend=jax.default_backend(),
      devices=[str(d) for d in jax.devices()],
  )


def main(argv: list[str] | None = None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  parser.add_argument(
      "--modes", default=",".join(MODES), help=f"comma-separated modes, of {', '.join(MODES)}"
  )
  parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
  parser.add_argument(
      "--no-reference",
      action="store_true",
      help="skip the float64 reference (no errors, no scipy check)",
  )
  parser.add_argument("--grid_size", type=int, default=100, help="N of the N x N grid")
  parser.add_argument(
      "--repeats", type=int, default=None, help="steady-state repeats (default: each mode's own)"
  )
  parser.add_argument(
      "--json",
      default=None,
      metavar="PATH",
      help="also write the rows to PATH (one object, or a list of several)",
  )
  args = parser.parse_args(argv)
  if args.grid_size < 2 or (args.repeats is not None and args.repeats < 1):
    parser.error("--grid_size must be >= 2 and --repeats >= 1.")
  if args.worker:
    print(json.dumps(worker(args.worker, args.out, args.grid_size, args.repeats)))
    return

  modes = args.modes.split(",")
  unknown = [m for m in modes if m not in MODES]
  if unknown:
    parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}.")
  if args.no_reference and not args.no_write:
    parser.error("--no-reference leaves the error columns empty: give --no-write too.")
  if "reference_f64" not in modes and not args.no_reference:
    modes.append("reference_f64")
  results, arrays = {}, {}
  extra = ["--grid_size", str(args.grid_size)]
  if args.repeats is not None:
    extra += ["--repeats", str(args.repeats)]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  with tempfile.TemporaryDirectory() as tmp:
    for mode in modes:
      out = os.path.join(tmp, mode + ".npy")
      proc = subprocess.run(
          [
              sys.executable,
              "-m",
              "benchmarks.loss_surfaces",
              "--worker",
              mode,
              "--out",
              out,
              *extra,
          ],
          cwd=REPO,
          capture_output=True,
          text=True,
          env=env,
      )
      if proc.returncode:
        raise RuntimeError(f"worker {mode} failed:\n{proc.stderr[-3000:]}")
      results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
      arrays[mode] = np.load(out)
      print(json.dumps(results[mode]), flush=True)
  if args.no_reference:
    if args.json:
      from benchmarks import gan_step

      gan_step.write_json(args.json, [results[m] for m in modes])
    return
  reference = arrays["reference_f64"]
  kinds = np.array(["joint"] + ["marginal"] * 12 + ["conditional"] * 49)
  for mode, values in arrays.items():
    if mode == "reference_f64":
      continue
    err = np.abs(values - reference)
    results[mode]["max_abs_error"] = {
        k: float(err[kinds == k].max()) for k in ("joint", "marginal", "conditional")
    }
    results[mode]["mean_abs_error"] = float(err.mean())
  check = scipy_check(reference)
  results["reference_f64"]["max_abs_error_vs_scipy_quad"] = check
  print(json.dumps(check))
  if args.json:
    from benchmarks import gan_step

    gan_step.write_json(args.json, [results[m] for m in modes])
  facts = machine_facts()

  lines = [
      f"\n## Fig. 3 family of loss surfaces ({datetime.date.today().isoformat()})\n",
      f"Machine: {facts['cpu']}, {facts['cores']} cores, Python {facts['python']}, "
      f"jax {facts['jax']} ({facts['backend']}). Command: "
      "`python -m benchmarks.loss_surfaces`.\n",
      "62 surfaces (joint, 12 rotated marginals, 49 rotated conditionals) on the "
      f"{args.grid_size}x{args.grid_size} grid, sigma^2 = 0.1, computed in one `surfaces.loss_surfaces` call. Errors are "
      "against float64 quadrature with 4x the default orders (reference row: that "
      "reference against scipy's adaptive quad on random grid points).\n",
      "| mode | compile s | steady s | peak RSS MB (JAX baseline) | max abs error joint / "
      "marginal / conditional |",
      "|---|---|---|---|---|",
  ]
  for mode in modes:
    r = results[mode]
    err = r.get("max_abs_error") or r.get("max_abs_error_vs_scipy_quad")
    err_s = " / ".join(f"{err[k]:.1e}" for k in ("joint", "marginal", "conditional"))
    compile_s = f"{r['compile_s']:.2f}" if mode != "reference_f64" else "-"
    steady = (
        f"{r['steady_s']:.2f}"
        if mode != "reference_f64"
        else f"{r['first_call_s']:.1f} (first call)"
    )
    lines.append(
        f"| {mode} | {compile_s} | {steady} | {r['peak_rss_mb']:.0f} "
        f"({r['baseline_rss_mb']:.0f}) | {err_s} |"
    )
  text = "\n".join(lines) + "\n"
  print(text)
  if not args.no_write:
    path = os.path.join(REPO, "benchmarks", "RESULTS.md")
    if not os.path.exists(path):
      with open(path, "w") as f:
        f.write(
            "# Benchmark results\n\nEvery number below was measured by the command given "
            "with it, on the machine named with it.\n"
        )
    with open(path, "a") as f:
      f.write(text)


if __name__ == "__main__":
  main()
