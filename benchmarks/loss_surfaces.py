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

Each measurement runs in its own subprocess so that peak memory is its own.
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
  tasks += [surfaces.MatchingTask("marginal", (0,), transform=two_gmm.rotation_deg(a))
            for a in range(0, 180, 15)]
  tasks += [surfaces.MatchingTask("conditional", (0,), (1,), (v,),
                                  transform=two_gmm.rotation_deg(a))
            for a in range(0, 91, 15) for v in two_gmm.conditional_values(a, SIGMA2)]
  return tasks


def worker(mode: str, out_path: str):
  """Runs one measurement in this process and writes its surfaces and facts."""
  import jax
  method, x64, multiplier, repeats = MODES[mode]
  jax.numpy.zeros(1).block_until_ready()
  baseline = _peak_rss_mb()
  from bigjax.mixtures import divergences, surfaces, two_gmm
  with jax.enable_x64(x64):
    axis = np.linspace(-2, 2, 100)
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
      return np.asarray(jax.block_until_ready(
          surfaces.loss_surfaces(target, model_fn, thetas, tasks_, **kw)))
    start = time.perf_counter()
    if multiplier != 1:
      joint = compute(tasks[:1], method="quadrature",
                      num_points=divergences.DEFAULT_NUM_POINTS[2] * multiplier)
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
  np.save(out_path, values.reshape(len(tasks), 100, 100))
  return dict(mode=mode, first_call_s=first, steady_s=steady,
              compile_s=max(first - steady, 0.0), peak_rss_mb=_peak_rss_mb(),
              baseline_rss_mb=baseline, num_surfaces=len(tasks),
              finite=bool(np.all(np.isfinite(values))))


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
  axis = np.linspace(-2, 2, 100)
  s2 = SIGMA2

  def log_mix(x, means, log_w, var):
    x = np.asarray(x)[..., None]
    return logsumexp(log_w - 0.5 * (x - means) ** 2 / var - 0.5 * np.log(2 * np.pi * var), -1)

  def kl_1d(pm, pw, qm, qw, var):
    pts = sorted(set(np.round(np.concatenate([pm, qm]), 12)))
    lo, hi = min(pts) - 12 * np.sqrt(var), max(pts) + 12 * np.sqrt(var)
    f = lambda x: np.exp(log_mix(x, pm, pw, var)) * (log_mix(x, pm, pw, var)
                                                      - log_mix(x, qm, qw, var))
    return integrate.quad(f, lo, hi, points=pts, limit=400, epsabs=1e-12, epsrel=1e-12)[0]

  def task_1d(theta, kind, angle, v):
    a = np.deg2rad(angle)
    rows = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    out = []
    for means in (np.array([[theta[0], 0.0], [theta[1], 0.0]]),
                  np.array([[-1.0, 0.0], [1.0, 0.0]])):
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
  tasks = [("joint", 0.0, 0.0)] + [("marginal", a, 0.0) for a in range(0, 180, 15)] + [
      ("conditional", a, v) for a in range(0, 91, 15) for v in two_gmm.conditional_values(a, s2)]
  for t_index, (kind, angle, v) in enumerate(tasks):
    picks = num_points if kind == "joint" else max(2, num_points // 10)
    for _ in range(picks):
      i, j = rng.integers(0, 100, 2)
      (pm, pw), (qm, qw) = task_1d((axis[i], axis[j]), "marginal" if kind == "joint" else kind,
                                   angle, v)
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
  return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(),
              jax=jax.__version__, backend=jax.default_backend(),
              devices=[str(d) for d in jax.devices()])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
  parser.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args.worker, args.out)))
    return

  modes = args.modes.split(",")
  if "reference_f64" not in modes:
    modes.append("reference_f64")
  results, arrays = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    for mode in modes:
      out = os.path.join(tmp, mode + ".npy")
      proc = subprocess.run([sys.executable, "-m", "benchmarks.loss_surfaces", "--worker", mode,
                             "--out", out], cwd=REPO, capture_output=True, text=True)
      if proc.returncode:
        raise RuntimeError(f"worker {mode} failed:\n{proc.stderr[-3000:]}")
      results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
      arrays[mode] = np.load(out)
      print(json.dumps(results[mode]), flush=True)
  reference = arrays["reference_f64"]
  kinds = np.array(["joint"] + ["marginal"] * 12 + ["conditional"] * 49)
  for mode, values in arrays.items():
    if mode == "reference_f64":
      continue
    err = np.abs(values - reference)
    results[mode]["max_abs_error"] = {k: float(err[kinds == k].max()) for k in
                                      ("joint", "marginal", "conditional")}
    results[mode]["mean_abs_error"] = float(err.mean())
  check = scipy_check(reference)
  results["reference_f64"]["max_abs_error_vs_scipy_quad"] = check
  print(json.dumps(check))
  facts = machine_facts()

  lines = [f"\n## Fig. 3 family of loss surfaces ({datetime.date.today().isoformat()})\n",
           f"Machine: {facts['cpu']}, {facts['cores']} cores, Python {facts['python']}, "
           f"jax {facts['jax']} ({facts['backend']}). Command: "
           "`python -m benchmarks.loss_surfaces`.\n",
           "62 surfaces (joint, 12 rotated marginals, 49 rotated conditionals) on the 100x100 "
           "grid, sigma^2 = 0.1, computed in one `surfaces.loss_surfaces` call. Errors are "
           "against float64 quadrature with 4x the default orders (reference row: that "
           "reference against scipy's adaptive quad on random grid points).\n",
           "| mode | compile s | steady s | peak RSS MB (JAX baseline) | max abs error joint / "
           "marginal / conditional |", "|---|---|---|---|---|"]
  for mode in modes:
    r = results[mode]
    err = r.get("max_abs_error") or r.get("max_abs_error_vs_scipy_quad")
    err_s = " / ".join(f"{err[k]:.1e}" for k in ("joint", "marginal", "conditional"))
    compile_s = f"{r['compile_s']:.2f}" if mode != "reference_f64" else "-"
    steady = f"{r['steady_s']:.2f}" if mode != "reference_f64" else f"{r['first_call_s']:.1f} (first call)"
    lines.append(f"| {mode} | {compile_s} | {steady} | {r['peak_rss_mb']:.0f} "
                 f"({r['baseline_rss_mb']:.0f}) | {err_s} |")
  text = "\n".join(lines) + "\n"
  print(text)
  if not args.no_write:
    path = os.path.join(REPO, "benchmarks", "RESULTS.md")
    if not os.path.exists(path):
      with open(path, "w") as f:
        f.write("# Benchmark results\n\nEvery number below was measured by the command given "
                "with it, on the machine named with it.\n")
    with open(path, "a") as f:
      f.write(text)


if __name__ == "__main__":
  main()
