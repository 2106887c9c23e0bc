r"""FT against big-learn over a grid of runs (paper App. E.2: Table 3's grid, Table 4, Fig. 18).

  python -m experiments.finetune_sweep --config configs/finetune.py:lexname \
      --workdir /tmp/lexname_sweep --config.model_dir=/tmp/wn_lm/model

Every combination of config.sweep's learning rates x epoch counts x warm-up steps x betas x
seeds x data sizes (train_limits: data.train_limit, None for the whole training split) is one
`experiments.finetune` run in <workdir>/runs/<name> (a data size in the name as `_n<N>`; a run
on the whole split keeps the name runs always had); the rest of the config is the same for all
of them. All runs share one process, so the grid compiles two train steps (FT and big-learn)
and one scorer. A finished run (its result.json) is never redone; an interrupted one resumes
from its checkpoint; a run whose result.json is unreadable is finished again from its last
checkpoint (its training is not redone); a run whose loss became non-finite is recorded in its
failed.json and counted, not retried. A sweep directory written by another config (other than
the grid itself, which may grow) is refused, and a run directory holding another run's config
is refused by name: nothing in either is changed. Every run config (a data size larger than
the training split included) is checked before anything is written.

Writes into --workdir: sweep.json (the config), runs/, table4.json and table4.md (the paper's
view, FT = the beta = 0 runs against big-learn = the beta > 0 runs pooled; then per data size
the paired differences with intervals and tests, best and median over equal numbers of runs,
selection on one half of dev reported on the other, and whether FT's optimum is inside the
grid: experiments.finetune_table), fig18.png (box plots of the runs' dev metric, FT beside
big-learn and per beta, and the paired differences: experiments.finetune_report). A sweep
written before these statistics existed gets them recomputed from its runs.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from typing import Any

import ml_collections

from bigjax.training import NonFiniteLossError, distributed, write_json
from bigjax.training import runs
from experiments import cli
from experiments import finetune
from experiments import finetune_setup as setup
from experiments.finetune_report import figure, table4_markdown
from experiments.finetune_step import ADDED_DEFAULTS
from experiments.finetune_table import run_name, table4

SWEEP_FILE = "sweep.json"
FAILED_FILE = "failed.json"
# The per-run fields the grid sets; the rest of the config must match the sweep directory's.
GRID = (
    ("learning_rate", "learning_rates"),
    ("num_epochs", "num_epochs"),
    ("warmup_steps", "warmup_steps"),
    ("beta", "betas"),
    ("seed", "seeds"),
    ("train_limit", "train_limits"),  # data.train_limit (None: the whole split)
)


class SweepMismatchError(ValueError):
  """The sweep directory (or a run in it) was written by another config."""


def points(config) -> list[dict[str, Any]]:
  """The grid's runs, seed-major (a stopped sweep has whole seeds done first): dicts of the
  GRID fields."""
  s = config.sweep
  order = ("seed", "train_limit", "num_epochs", "warmup_steps", "learning_rate", "beta")
  values = {
      "learning_rate": s.learning_rates,
      "num_epochs": s.num_epochs,
      "warmup_steps": s.warmup_steps,
      "beta": s.betas,
      "seed": s.seeds,
      "train_limit": s.get("train_limits", (None,)),  # absent from sweeps written before it
  }
  return [dict(zip(order, combo)) for combo in itertools.product(*(values[k] for k in order))]


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
  out.get("data", {}).pop("train_limit", None)
  return out


def _with_defaults(shared: dict) -> dict:
  """A config held by a sweep (sweep.json's shared part, a run's config.json) with the fields
  added since it was written, at the values that reproduce its runs
  (finetune_step.ADDED_DEFAULTS)."""
  return runs.add_defaults(ml_collections.ConfigDict(shared), ADDED_DEFAULTS).to_dict()


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
    values = list(config.sweep.get(name, (None,)))
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
    diff = _differences(_with_defaults(held.get("shared", {})), shared)
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
  c.update({k: v for k, v in point.items() if k != "train_limit"})
  with c.ignore_type():
    c.data.train_limit = point.get("train_limit")
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
  diff = _differences(_with_defaults(held), want)
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
  if config.data.get("train_limit") is not None:
    raise ValueError(
        f"data.train_limit={config.data.train_limit} in a sweep: the grid sets each run's "
        f"data size; give it as --config.sweep.train_limits='({config.data.train_limit},)'."
    )
  t0 = time.perf_counter()
  workdir = os.path.abspath(workdir)
  grid = points(config)
  for point in grid:  # every run config checked before anything is written
    setup.validate_config(run_config(config, point))
  for limit in {p["train_limit"] for p in grid}:  # each data size fits the training split
    setup.check_splits(run_config(config, dict(grid[0], train_limit=limit)))
  distributed.initialize(auto=config.get("distributed", False))  # (once the entry point joined)
  # Process 0 checks (and records) the sweep first; the others then find its record.
  distributed.main_first(
      lambda: (
          os.makedirs(os.path.join(workdir, "runs"), exist_ok=True),
          check_sweep_dir(config, workdir),
      ),
      "check the sweep directory",
  )
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
