r"""Loss surfaces of the paper's 2-D simulation (Sec. 3.3, App. B), computed exactly in one call.

  python -m experiments.loss_surfaces --config configs/loss_surfaces.py:fig3 --workdir /tmp/fig3
  python -m experiments.loss_surfaces --workdir /tmp/surfaces      # all figures (default)

Overrides: --config.plots=False (arrays and tables only), --config.method=mc (Monte Carlo, as the
reference), --config.x64=True, --config.grid_num=50, --config.trajectories.num_steps=800, ...

Writes into --workdir (per figure; variant `all` writes one sub-directory per figure):
  surfaces.npz   grid axes `mu1`, `mu2` and one [len(mu1), len(mu2)] array per panel,
                 surface[i, j] at (mu1[i], mu2[j])
  panels.json    one object per panel: name, kind, target_dims, given_dims, given_values,
                 angle_deg, noise_var, sigma2 (and members, for averages)
  optima.json    every panel's local and global minima (index, position, value)
  optima.md      the same as a table
  run.json       config, timings and software versions
  surfaces.png   heat maps, global minima starred, local minima marked (unless plots=False)
  trajectories.npz / .json / .png / .gif   SGD paths (fig8, fig9, smoke): every step's theta,
                 the sampled task per step, and where each path ends
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bigjax.mixtures import optima
from bigjax.mixtures import surfaces
from bigjax.mixtures import two_gmm
from bigjax.training import environment, write_json
from experiments import cli


def panel_tasks(config) -> list[surfaces.MatchingTask]:
  """The matching tasks of the config's panels, with checked fields."""
  tasks = []
  names = set()
  for i, p in enumerate(config.panels):
    unknown = set(p) - {
        "name",
        "kind",
        "target_dims",
        "given_dims",
        "given_values",
        "angle_deg",
        "noise_var",
    }
    if unknown:
      raise ValueError(f"panel {i} ({p.get('name')!r}) has unknown keys {sorted(unknown)}.")
    if p["name"] in names:
      raise ValueError(f"panel name {p['name']!r} appears twice; names must be unique.")
    names.add(p["name"])
    tasks.append(
        surfaces.MatchingTask(
            kind=p["kind"],
            target_dims=tuple(p.get("target_dims", ())),
            given_dims=tuple(p.get("given_dims", ())),
            given_values=tuple(p.get("given_values", ())),
            transform=two_gmm.rotation_deg(p.get("angle_deg", 0.0)),
            noise_var=float(p.get("noise_var", 0.0)),
        )
    )
  return tasks


def panel_records(config) -> list[dict[str, Any]]:
  """panels.json: one record per panel, then one per average."""
  records = []
  for p in config.panels:
    kind = p["kind"]
    target = list(p.get("target_dims", ())) if kind != "joint" else [0, 1]
    given = list(p.get("given_dims", ()))
    if kind == "conditional" and not target:
      target = [d for d in (0, 1) if d not in given]
    records.append(
        dict(
            name=p["name"],
            kind=kind,
            target_dims=target,
            given_dims=given,
            given_values=[float(v) for v in p.get("given_values", ())],
            angle_deg=float(p.get("angle_deg", 0.0)),
            noise_var=float(p.get("noise_var", 0.0)),
            sigma2=float(config.sigma2),
        )
    )
  names = [r["name"] for r in records]
  for a in config.averages:
    missing = [m for m in a["members"] if m not in names]
    if missing or not a["members"]:
      raise ValueError(
          f"average {a['name']!r} names panels {missing} that do not exist "
          "(or no members at all)."
      )
    members = [r for r in records if r["name"] in a["members"]]
    records.append(
        dict(
            name=a["name"],
            kind="average",
            members=list(a["members"]),
            target_dims=sorted({d for m in members for d in m["target_dims"]}),
            given_dims=sorted({d for m in members for d in m["given_dims"]}),
            given_values=[],
            angle_deg=None,
            noise_var=None,
            sigma2=float(config.sigma2),
        )
    )
  return records


def compute_surfaces(config) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
  """All panel surfaces of a config in one jitted call; returns (axis, surfaces, seconds)."""
  if config.grid_num < 2 or not config.grid_min < config.grid_max:
    raise ValueError(
        f"grid needs grid_num >= 2 and grid_min < grid_max, got {config.grid_num}, "
        f"{config.grid_min}, {config.grid_max}."
    )
  axis = np.linspace(config.grid_min, config.grid_max, config.grid_num)
  target = two_gmm.target(config.sigma2)
  model_fn = two_gmm.model_fn(float(config.sigma2))
  tasks = panel_tasks(config)
  mc = config.method == "mc"
  start = time.perf_counter()
  values = surfaces.loss_surfaces(
      target,
      model_fn,
      surfaces.grid_2d(axis, axis),
      tasks,
      divergence=config.divergence,
      method=config.method,
      num_points=config.num_points or None,
      rng=jax.random.key(config.seed) if mc else None,
      num_samples=config.num_samples if mc else None,
      max_chunk_bytes=int(config.max_chunk_mb * 2**20),
  )
  values = np.asarray(jax.block_until_ready(values), np.float64)
  seconds = time.perf_counter() - start
  n = len(axis)
  result = {p["name"]: values[i].reshape(n, n) for i, p in enumerate(config.panels)}
  for a in config.averages:
    result[a["name"]] = np.mean([result[m] for m in a["members"]], axis=0)
  bad = [k for k, v in result.items() if not np.all(np.isfinite(v))]
  if bad:
    raise FloatingPointError(f"non-finite values in surfaces {bad}; try --config.x64=True.")
  return axis, result, seconds


def run_trajectories(config, axis) -> dict[str, np.ndarray]:
  """SGD paths over the tasks that make up `config.trajectories.average`."""
  t = config.trajectories
  average = {a["name"]: a for a in config.averages}.get(t.average)
  if average is None:
    raise ValueError(
        f"trajectories.average={t.average!r} is not one of the averages "
        f"{[a['name'] for a in config.averages]}."
    )
  by_name = dict(zip([p["name"] for p in config.panels], panel_tasks(config)))
  tasks = [by_name[m] for m in average["members"]]
  theta0 = np.asarray(t.inits, np.float64)
  out = {"theta0": theta0}
  for mode, inner in t.modes:
    thetas, task_index = surfaces.sgd_trajectories(
        two_gmm.target(config.sigma2),
        two_gmm.model_fn(float(config.sigma2)),
        theta0,
        tasks,
        rng=jax.random.key(t.seed),
        num_steps=int(t.num_steps),
        learning_rate=float(t.learning_rate),
        inner_steps=int(inner),
        num_points=config.num_points or None,
    )
    out[f"{mode}_thetas"] = np.asarray(thetas)
    out[f"{mode}_task_index"] = np.asarray(task_index)
  return out


def trajectory_summary(config, trajectories) -> list[dict[str, Any]]:
  """Where each SGD path ends and whether it reached a global optimum (within 0.05)."""
  optima_ = np.asarray(two_gmm.GLOBAL_OPTIMA)
  rows = []
  for mode, inner in config.trajectories.modes:
    for theta0, path in zip(trajectories["theta0"], trajectories[f"{mode}_thetas"]):
      dist = float(np.min(np.linalg.norm(optima_ - path[-1], axis=-1)))
      rows.append(
          dict(
              mode=mode,
              inner_steps=int(inner),
              theta0=theta0.tolist(),
              final_theta=path[-1].tolist(),
              distance_to_global_optimum=dist,
              reached_global_optimum=dist < 0.05,
          )
      )
  return rows


def _optima_table(records, all_optima) -> str:
  lines = [
      "| panel | kind | global minima (mu1, mu2): loss | local minima | "
      "other local minima (mu1, mu2): loss |",
      "|---|---|---|---|---|",
  ]
  for r in records:
    o = all_optima[r["name"]]
    fmt = (
        lambda ms: "; ".join(
            f"({m['position'][0]:+.3f}, {m['position'][1]:+.3f}): " f"{m['value']:.3g}" for m in ms
        )
        or "-"
    )
    others = [m for m in o["local"] if m not in o["global"]]
    lines.append(
        f"| {r['name']} | {r['kind']} | {fmt(o['global'])} | {len(o['local'])} | "
        f"{fmt(others)} |"
    )
  return "\n".join(lines) + "\n"


def run_figure(config, workdir: str, progress: tqdm.tqdm | None = None) -> dict[str, Any]:
  """Computes, tabulates and draws one figure variant into `workdir`; returns run facts."""
  os.makedirs(workdir, exist_ok=True)
  stages = [
      "surfaces",
      "optima",
      "trajectories" if config.trajectories.enabled else None,
      "figures" if config.plots else None,
  ]
  stages = [s for s in stages if s]
  bar = progress or tqdm.tqdm(total=len(stages), unit="stage")

  def stage(name):
    bar.set_description(f"{config.variant}: {name}")

  facts: dict[str, Any] = {}

  stage("surfaces")
  records = panel_records(config)
  axis, surf, facts["surface_seconds"] = compute_surfaces(config)
  np.savez(os.path.join(workdir, "surfaces.npz"), mu1=axis, mu2=axis, **surf)
  write_json(os.path.join(workdir, "panels.json"), records)
  bar.update()

  stage("optima")
  all_optima = {r["name"]: optima.find_optima(surf[r["name"]], (axis, axis)) for r in records}
  write_json(os.path.join(workdir, "optima.json"), all_optima)
  with open(os.path.join(workdir, "optima.md"), "w") as f:
    f.write(
        f"# Minima of the {config.variant} surfaces (sigma^2 = {config.sigma2}, "
        f"{config.divergence}, {config.method})\n\n" + _optima_table(records, all_optima)
    )
  bar.update()

  trajectories = None
  if config.trajectories.enabled:
    stage("trajectories")
    start = time.perf_counter()
    trajectories = run_trajectories(config, axis)
    facts["trajectory_seconds"] = time.perf_counter() - start
    np.savez(os.path.join(workdir, "trajectories.npz"), **trajectories)
    write_json(os.path.join(workdir, "trajectories.json"), trajectory_summary(config, trajectories))
    bar.update()

  if config.plots:
    stage("figures")
    from experiments import surface_plots  # matplotlib only when drawing

    start = time.perf_counter()
    surface_plots.plot_surfaces(
        os.path.join(workdir, "surfaces.png"), config, records, axis, surf, all_optima
    )
    if trajectories is not None:
      average = config.trajectories.average
      surface_plots.plot_trajectories(workdir, config, axis, surf[average], average, trajectories)
    facts["plot_seconds"] = time.perf_counter() - start
    bar.update()
  if progress is None:
    bar.close()
  write_json(
      os.path.join(workdir, "run.json"),
      dict(
          config=json.loads(config.to_json_best_effort()),
          **facts,
          **environment(),
          dtype=str(jnp.result_type(float)),
      ),
  )
  return facts


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs the config's variant (or, for `all`, each figure into workdir/<figure>)."""
  with jax.enable_x64(bool(config.x64)):
    if not config.figures:
      return run_figure(config, workdir)
    from configs import loss_surfaces as config_lib

    shared = (
        "method",
        "num_points",
        "num_samples",
        "seed",
        "x64",
        "plots",
        "divergence",
        "max_chunk_mb",
        "grid_num",
        "grid_min",
        "grid_max",
    )
    unknown = [f for f in config.figures if f not in config_lib.FIGURES]
    if unknown:
      raise ValueError(f"figures {unknown} are unknown; choose from {config_lib.FIGURES}.")
    subs = []
    for name in config.figures:
      sub = config_lib.get_config(name)
      for key in shared:
        sub[key] = config[key]
      subs.append(sub)
    total = sum(2 + bool(s.trajectories.enabled) + bool(s.plots) for s in subs)
    facts = {}
    with tqdm.tqdm(total=total, unit="stage") as bar:
      for sub in subs:
        facts[sub.variant] = run_figure(sub, os.path.join(workdir, sub.variant), bar)
    return facts


if __name__ == "__main__":
  cli.run(
      train_and_evaluate,
      "loss_surfaces.py",
      config_help="Config file and variant, e.g. configs/loss_surfaces.py:fig3 (default: all "
      "figures).",
      workdir_help="Directory for figures, arrays and tables.",
  )
