r"""FT against big-learn over a grid of runs (paper App. E.2: Table 3's grid, Table 4, Fig. 18).

  python -m experiments.finetune_sweep --config configs/finetune.py:lexname \
      --workdir /tmp/lexname_sweep --config.model_dir=/tmp/wn_lm/model

Every combination of config.sweep's learning rates x epoch counts x warm-up steps x betas x
seeds is one `experiments.finetune` run in <workdir>/runs/<name>; the rest of the config is the
same for all of them. All runs share one process, so the grid compiles two train steps (FT and
big-learn) and one scorer. A finished run (its result.json) is never redone; an interrupted one
resumes from its checkpoint; a run whose result.json is unreadable is finished again from its
last checkpoint (its training is not redone); a run whose loss became non-finite is recorded
in its failed.json and counted, not retried. A sweep directory written by another config (other
than the grid itself, which may grow) is refused, and a run directory holding another run's
config is refused by name: nothing in either is changed.

Writes into --workdir: sweep.json (the config), runs/, table4.json and table4.md (per method,
FT = the beta = 0 runs and big-learn = the beta > 0 runs: the best and median dev metric with
its IQR, the F1 for MRPC, the seed spread, and the same per beta), fig18.png (box plots of the
runs' dev metric, FT beside big-learn, and per beta).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Any

import ml_collections
import numpy as np

from bigjax.data import glue
from bigjax.training import NonFiniteLossError, distributed, write_json
from experiments import cli
from experiments import finetune
from experiments import finetune_setup as setup

SWEEP_FILE = "sweep.json"
FAILED_FILE = "failed.json"
# The per-run fields the grid sets; the rest of the config must match the sweep directory's.
GRID = (
    ("learning_rate", "learning_rates"),
    ("num_epochs", "num_epochs"),
    ("warmup_steps", "warmup_steps"),
    ("beta", "betas"),
    ("seed", "seeds"),
)


class SweepMismatchError(ValueError):
  """The sweep directory (or a run in it) was written by another config."""


def points(config) -> list[dict[str, Any]]:
  """The grid's runs, seed-major (a stopped sweep has whole seeds done first): dicts of the
  GRID fields."""
  s = config.sweep
  order = ("seed", "num_epochs", "warmup_steps", "learning_rate", "beta")
  values = {
      "learning_rate": s.learning_rates,
      "num_epochs": s.num_epochs,
      "warmup_steps": s.warmup_steps,
      "beta": s.betas,
      "seed": s.seeds,
  }
  return [dict(zip(order, combo)) for combo in itertools.product(*(values[k] for k in order))]


def run_name(point: dict[str, Any]) -> str:
  return (
      f"lr{point['learning_rate']:g}_ep{point['num_epochs']}_wu{point['warmup_steps']}"
      f"_beta{point['beta']:g}_seed{point['seed']}"
  )


# Config fields a sweep and its runs may be resumed with other values of: the grid, and how the
# processes join (`distributed`, absent from sweeps written before it existed).
UNCOMPARED = ("sweep", "distributed")


def _shared(config) -> dict[str, Any]:
  """The config without the grid and its per-run fields: what every run of the sweep shares."""
  out = json.loads(config.to_json())
  for field in UNCOMPARED:
    out.pop(field, None)
  for field, _ in GRID:
    out.pop(field, None)
  return out


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
  keys = sorted(set(a) | set(b))
  out = []
  for k in keys:
    x, y = a.get(k), b.get(k)
    if isinstance(x, dict) and isinstance(y, dict):
      out += _differences(x, y, f"{prefix}{k}.")
    elif x != y:
      out.append(f"{prefix}{k}: {x!r} there, {y!r} now")
  return out


def check_grid(config) -> None:
  """Refuses, before anything is written, a grid with an empty or repeated list of values: an
  empty one has no run (and would overwrite Table 4 with none), a repeated value would count
  the same runs twice in Table 4."""
  for _, name in GRID:
    values = list(config.sweep[name])
    if not values:
      raise ValueError(
          f"configs/finetune.py ({config.get('variant', '?')}): sweep.{name} is empty, so the "
          f"grid has no run; give at least one value (e.g. --config.sweep.{name}='(...,)')."
      )
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
      raise ValueError(
          f"configs/finetune.py ({config.get('variant', '?')}): sweep.{name}={tuple(values)} "
          f"repeats {', '.join(map(repr, repeated))}: Table 4 would count the same runs "
          "twice. List each value once."
      )


def check_sweep_dir(config, workdir: str) -> None:
  """Writes sweep.json in a new sweep directory; refuses one written by another config."""
  path = os.path.join(workdir, SWEEP_FILE)
  shared = _shared(config)
  if os.path.isfile(path):
    held = _read_json(path)
    if held is None:
      raise SweepMismatchError(
          f"{path} is unreadable (not a JSON object: a torn write?); it records the config of "
          f"the sweep in {workdir}. Delete {path} to record this config again (each run in "
          "runs/ is still checked against its own config.json), or use a new --workdir."
      )
    diff = _differences(held.get("shared", {}), shared)
    if diff:
      raise SweepMismatchError(
          f"{workdir} holds a sweep of another config ({'; '.join(diff[:6])}"
          f"{'; ...' if len(diff) > 6 else ''}). Use a new --workdir, or rerun with the "
          "settings that started it (only config.sweep, the grid, may change)."
      )
    if held.get("grid") == json.loads(config.sweep.to_json()):
      return  # unchanged: nothing rewritten
  write_json(path, dict(shared=shared, grid=json.loads(config.sweep.to_json())))


def run_config(config, point: dict[str, Any]) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(json.loads(config.to_json()))
  c.update(point)
  return c


def _read_json(path: str) -> dict | None:
  """The JSON object in `path`, or None when it is absent or unreadable (a torn write)."""
  try:
    with open(path) as f:
      value = json.load(f)
    return value if isinstance(value, dict) else None
  except (OSError, ValueError):
    return None


def _check_run_dir(run_dir: str, expected: ml_collections.ConfigDict) -> None:
  held = _read_json(os.path.join(run_dir, "config.json"))
  if held is None:
    return
  want = json.loads(expected.to_json())
  for field in UNCOMPARED:  # the grid may grow between invocations
    held.pop(field, None)
    want.pop(field, None)
  diff = _differences(held, want)
  if diff:
    raise SweepMismatchError(
        f"{run_dir} holds a run of another config ({'; '.join(diff[:4])}); it is not this "
        "sweep's run of that name. Move it away (or delete it to redo that run)."
    )


def run_point(config, workdir: str, point: dict[str, Any], *, progress: bool) -> dict:
  """One run of the grid: its result, read or trained (see the module docstring)."""
  run_dir = os.path.join(workdir, "runs", run_name(point))
  c = run_config(config, point)
  _check_run_dir(run_dir, c)
  failed = _read_json(os.path.join(run_dir, FAILED_FILE))
  if failed is not None:
    return dict(point, failed=failed.get("error", "failed"))
  result_path = os.path.join(run_dir, setup.SUMMARY_FILE)
  result = _read_json(result_path)
  if result is not None:
    return result
  if os.path.exists(result_path):
    logging.warning(
        "%s is unreadable; finishing the run again from its last checkpoint.", result_path
    )
  try:
    return finetune.train(c, run_dir, progress=progress)
  except NonFiniteLossError as e:
    write_json(os.path.join(run_dir, FAILED_FILE), dict(point, error=str(e)))
    logging.warning("run %s failed: %s", run_name(point), e)
    return dict(point, failed=str(e))


def _stats(values: list[float]) -> dict[str, Any]:
  v = np.asarray(values, np.float64)
  if not v.size:
    return dict(runs=0)
  q1, median, q3 = np.percentile(v, [25, 50, 75])
  return dict(
      runs=int(v.size),
      best=float(v.max()),
      median=float(median),
      iqr=float(q3 - q1),
      mean=float(v.mean()),
      worst=float(v.min()),
  )


def _seed_spread(results: list[dict], metric: str) -> dict[str, Any]:
  """The spread over seeds of runs equal in every other grid field: the mean and largest
  standard deviation (ddof 0) and range, in the metric's units."""
  groups: dict[tuple, list[float]] = {}
  for r in results:
    key = tuple(r[f] for f, _ in GRID if f != "seed")
    groups.setdefault(key, []).append(r["dev"][metric])
  spread = [np.asarray(v) for v in groups.values() if len(v) > 1]
  if not spread:
    return dict(groups=0)
  return dict(
      groups=len(spread),
      mean_std=float(np.mean([s.std() for s in spread])),
      max_std=float(np.max([s.std() for s in spread])),
      mean_range=float(np.mean([np.ptp(s) for s in spread])),
  )


def table4(task: str, results: list[dict]) -> dict[str, Any]:
  """Table 4's numbers from the finished runs (dev metrics in %), per method and per beta."""
  metric = glue.TASKS[task].metrics[0]
  done = [r for r in results if "failed" not in r]
  pct = lambda rs, m: [100.0 * r["dev"][m] for r in rs]
  methods = {
      "FT": [r for r in done if r["beta"] == 0],
      "big-learn": [r for r in done if r["beta"] > 0],
  }
  out = dict(
      task=task,
      metric=metric,
      runs=len(results),
      failed=[run_name(r) for r in results if "failed" in r],
      methods={},
      betas={},
  )
  for name, rs in methods.items():
    entry = dict(
        **_stats(pct(rs, metric)),
        seed_spread=_seed_spread(
            [dict(r, dev={metric: 100.0 * r["dev"][metric]}) for r in rs], metric
        ),
    )
    if "f1" in glue.TASKS[task].metrics:
      entry["f1"] = _stats(pct(rs, "f1"))
    out["methods"][name] = entry
  for beta in sorted({r["beta"] for r in done}):
    out["betas"][f"{beta:g}"] = _stats(pct([r for r in done if r["beta"] == beta], metric))
  # Paired: each big-learn run against the FT run of the same lr, epochs, warm-up and seed.
  ft = {tuple(r[f] for f, _ in GRID if f != "beta"): r for r in methods["FT"]}
  pairs = [
      (r["dev"][metric], ft[k]["dev"][metric])
      for r in methods["big-learn"]
      if (k := tuple(r[f] for f, _ in GRID if f != "beta")) in ft
  ]
  if pairs:
    diff = 100.0 * np.asarray([a - b for a, b in pairs])
    out["paired"] = dict(
        pairs=len(pairs),
        mean_gain=float(diff.mean()),
        wins=int(np.sum(diff > 0)),
        ties=int(np.sum(diff == 0)),
        losses=int(np.sum(diff < 0)),
    )
  return out


def table4_markdown(table: dict[str, Any]) -> str:
  m = table["metric"]
  f1 = any("f1" in e for e in table["methods"].values())
  lines = [
      f"# Table 4 ({table['task']}, dev {m} in %, {table['runs']} runs"
      f"{', ' + str(len(table['failed'])) + ' failed' if table['failed'] else ''})",
      "",
      f"| method | runs | best {m}{' / F1' if f1 else ''} | median {m} | IQR | "
      "seed std (mean / max) |",
      "|---|---|---|---|---|---|",
  ]
  for name, e in table["methods"].items():
    if not e.get("runs"):
      lines.append(f"| {name} | 0 | | | | |")
      continue
    s = e["seed_spread"]
    spread = f"{s['mean_std']:.2f} / {s['max_std']:.2f}" if s.get("groups") else "-"
    best = f"{e['best']:.2f}" + (f" / {e['f1']['best']:.2f}" if "f1" in e else "")
    lines.append(
        f"| {name} | {e['runs']} | {best} | {e['median']:.2f} | {e['iqr']:.2f} | " f"{spread} |"
    )
  lines += ["", "| beta | runs | best | median | IQR |", "|---|---|---|---|---|"]
  for beta, e in table["betas"].items():
    lines.append(
        f"| {beta} | {e['runs']} | {e['best']:.2f} | {e['median']:.2f} | " f"{e['iqr']:.2f} |"
    )
  if "paired" in table:
    p = table["paired"]
    lines += [
        "",
        f"Paired with the FT run of the same learning rate, epochs, warm-up and seed: "
        f"big-learn wins {p['wins']}, ties {p['ties']}, loses {p['losses']} of "
        f"{p['pairs']} (mean gain {p['mean_gain']:+.2f} points).",
    ]
  return "\n".join(lines) + "\n"


def figure(table: dict[str, Any], results: list[dict], path: str) -> None:
  """Fig. 18: box plots of the runs' dev metric, FT beside big-learn, and per beta."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  metric = table["metric"]
  done = [r for r in results if "failed" not in r]
  value = lambda rs: [100.0 * r["dev"][metric] for r in rs]
  groups = [
      ("FT", value([r for r in done if r["beta"] == 0])),
      ("big-learn", value([r for r in done if r["beta"] > 0])),
  ]
  betas = sorted({r["beta"] for r in done})
  per_beta = [(f"{b:g}", value([r for r in done if r["beta"] == b])) for b in betas]
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw=dict(width_ratios=[2, 3]))
  for ax, data, title in (
      (axes[0], groups, "FT vs big-learn"),
      (axes[1], per_beta, r"by $\beta_{BigLearn}$ (0 is FT)"),
  ):
    data = [(n, v) for n, v in data if v]
    ax.boxplot([v for _, v in data], widths=0.5)
    ax.set_xticks(range(1, len(data) + 1), [n for n, _ in data])
    for i, (_, v) in enumerate(data):
      jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(v))
      ax.scatter(
          i + 1 + jitter, v, s=9, alpha=0.6, color="C0" if i or title[0] == "b" else "C1", zorder=3
      )
    ax.set_title(title)
    ax.set_ylabel(f"dev {metric} (%)")
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle(f"{table['task']}: {table['runs']} runs")
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=150)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)


def sweep(config, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Runs (or resumes) the config's grid in `workdir`, then writes Table 4 and Fig. 18.

  Returns:
    Table 4's numbers (table4.json) with the sweep's wall time.

  Raises:
    SweepMismatchError: the directory, or a run in it, was written by another config.
    ValueError / FileNotFoundError: as experiments.finetune.train (a bad config, a missing
      model directory, labels outside the task's list), before any run starts.
  """
  setup.validate_config(config)
  if config.mode != "finetune":
    raise ValueError(
        "a sweep fine-tunes: use a fine-tuning variant (e.g. "
        "configs/finetune.py:lexname), not mode=pretrain."
    )
  check_grid(config)
  t0 = time.perf_counter()
  workdir = os.path.abspath(workdir)
  distributed.initialize(auto=config.get("distributed", False))  # (once the entry point joined)
  # Process 0 checks (and records) the sweep first; the others then find its record.
  distributed.main_first(
      lambda: (
          os.makedirs(os.path.join(workdir, "runs"), exist_ok=True),
          check_sweep_dir(config, workdir),
      ),
      "check the sweep directory",
  )
  grid = points(config)
  for point in grid:  # every run config checked before the first runs
    setup.validate_config(run_config(config, point))
  results = []
  for i, point in enumerate(grid):
    if progress:
      print(f"[{i + 1}/{len(grid)}] {run_name(point)}", flush=True)
    results.append(run_point(config, workdir, point, progress=progress))
  table = table4(config.task, results)
  table["seconds"] = time.perf_counter() - t0
  write_json(os.path.join(workdir, "table4.json"), table)
  if distributed.is_main_process():  # one process writes the sweep's files
    with open(os.path.join(workdir, "table4.md.tmp"), "w") as f:
      f.write(table4_markdown(table))
    os.replace(os.path.join(workdir, "table4.md.tmp"), os.path.join(workdir, "table4.md"))
    figure(table, results, os.path.join(workdir, "fig18.png"))
  distributed.barrier("finetune_sweep: done")
  return table


if __name__ == "__main__":
  cli.run(
      sweep,
      "finetune.py",
      workdir_help="Directory for the sweep: sweep.json, runs/, table4.json, table4.md, "
      "fig18.png; a sweep resumes where it stopped.",
  )
