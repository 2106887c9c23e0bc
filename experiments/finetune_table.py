"""Table 4 and Fig. 18 of a fine-tuning sweep (paper App. E.2): FT against big-learn, fairly.

The paper's Table 4 compares FT's best run with the best over all of big-learn's betas, that is
a maximum over more runs for big-learn. Here, from the finished runs of experiments.finetune_sweep
(dev metrics in %; `metric` is the task's first: accuracy, or accuracy for MRPC with F1 beside):

  methods / betas   per method (FT = beta 0, big-learn = beta > 0) and per beta: best, median,
                    IQR, mean, worst of the final epoch's dev metric, the same of the best
                    epoch's ("best_epoch": early stopping on dev, what practitioners do), how
                    many runs peaked at their last epoch (`not_converged`: more epochs might
                    have helped), the seed spread, dev NLL and wall seconds;
  paired            (as before) every big-learn run against the FT run of the same cell and seed;
  sizes             per data size (data.train_limit; "all" for the whole split), everything
                    that decides the comparison:
    paired[beta]      the differences big-learn - FT over cells (learning rate, epochs, warm-up)
                      x seeds, for the final and the best-epoch metric and the dev NLL
                      (bigjax.stats.paired_summary: mean, bootstrap interval, wins/ties/losses,
                      sign test; with >= 2 seeds the sign-flip test over seeds and a two-level
                      bootstrap over cells and seeds); "overall" averages the betas per pair;
                      `holm_p`: the sign-flip (else sign-test) p-values Holm-adjusted over all
                      sizes x betas of the sweep;
    equal_count       best and median over equal numbers of runs: FT against each beta (the
                      same cells), and big-learn over all betas as the expected best of as many
                      runs as FT has (bigjax.stats.expected_best) beside the paper's way (the
                      best of all betas' runs, labelled `paper_best_of_all_betas`);
    selected          hyperparameters chosen on one half of dev and reported on the other
                      (glue.halves, in dev.jsonl since this table existed): per method the cell
                      (and each run's epoch) best on half A, scored on half B, and the reverse;
                      the paired differences of the selected cells' seeds;
    ft_optimum        FT's best cell (seed-mean best-epoch metric) and whether it lies on the
                      grid's edge (then the grid does not bracket FT's optimum);
    seconds           mean wall seconds per run and method (big-learn's cost against FT's).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bigjax import stats
from bigjax.data import glue

CELL = ("learning_rate", "num_epochs", "warmup_steps")  # with the seed, what pairs two runs


def run_name(point: dict[str, Any]) -> str:
  limit = point.get("train_limit")
  return (
      f"lr{point['learning_rate']:g}_ep{point['num_epochs']}_wu{point['warmup_steps']}"
      f"_beta{point['beta']:g}_seed{point['seed']}" + ("" if limit is None else f"_n{limit}")
  )


def size_of(r: dict) -> str:
  limit = r.get("train_limit")
  return "all" if limit is None else str(int(limit))


def _cell(r: dict, fields: tuple[str, ...] = CELL) -> tuple:
  return tuple(r[f] for f in fields)


def _summary(values: list[float]) -> dict[str, Any]:
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


def _seed_spread(runs: list[dict], value) -> dict[str, Any]:
  """The spread over seeds of runs equal in every other grid field: the mean and largest
  standard deviation (ddof 0) and range."""
  groups: dict[tuple, list[float]] = {}
  for r in runs:
    groups.setdefault((_cell(r), r["beta"], size_of(r)), []).append(value(r))
  spread = [np.asarray(v) for v in groups.values() if len(v) > 1]
  if not spread:
    return dict(groups=0)
  return dict(
      groups=len(spread),
      mean_std=float(np.mean([s.std() for s in spread])),
      max_std=float(np.max([s.std() for s in spread])),
      mean_range=float(np.mean([np.ptp(s) for s in spread])),
  )


def _method_entry(
    runs: list[dict], metric: str, task: str, *, seconds: bool = False
) -> dict[str, Any]:
  final = lambda r: 100.0 * r["dev"][metric]
  entry = dict(**_summary([final(r) for r in runs]), seed_spread=_seed_spread(runs, final))
  if not runs:
    return entry
  if "f1" in glue.TASKS[task].metrics:
    entry["f1"] = _summary([100.0 * r["dev"]["f1"] for r in runs])
  if all("best_dev" in r for r in runs):
    entry["best_epoch"] = _summary([100.0 * r["best_dev"][metric] for r in runs])
    entry["not_converged"] = sum(r["best_epoch"] == r["num_epochs"] for r in runs)
  if all("nll" in r["dev"] for r in runs):
    entry["nll"] = _summary([r["dev"]["nll"] for r in runs])
  if seconds and all("seconds" in r for r in runs):
    entry["seconds"] = float(np.mean([r["seconds"] for r in runs]))
  return entry


def differences(
    ft: list[dict], other: list[dict], value, fields: tuple[str, ...] = CELL
) -> np.ndarray:
  """[cells, seeds] of value(other) - value(FT) for the pairs both have (NaN elsewhere); a pair
  agrees in `fields` (default: the whole cell) and the seed."""
  cells = sorted({_cell(r, fields) for r in other})
  seeds = sorted({r["seed"] for r in other})
  base = {(_cell(r, fields), r["seed"]): value(r) for r in ft}
  d = np.full((len(cells), len(seeds)), np.nan)
  for r in other:
    key = (_cell(r, fields), r["seed"])
    if key in base:
      d[cells.index(key[0]), seeds.index(key[1])] = value(r) - base[key]
  return d


def _paired(ft: list[dict], by_beta: dict[str, list[dict]], metric: str) -> dict[str, Any]:
  """Paired statistics per beta and overall (each pair's difference averaged over betas)."""
  values = {
      "final": lambda r: 100.0 * r["dev"][metric],
      "best_epoch": lambda r: 100.0 * r["best_dev"][metric] if "best_dev" in r else np.nan,
      "nll": lambda r: r["dev"].get("nll", np.nan),
  }
  out: dict[str, Any] = {}
  stacks: dict[str, list[np.ndarray]] = {k: [] for k in values}
  for beta, runs in by_beta.items():
    entry = {}
    for name, value in values.items():
      d = differences(ft, runs, value)
      if np.all(np.isnan(d)):
        continue
      entry[name] = stats.paired_summary(d)
      stacks[name].append(d)
    if entry:
      out[beta] = entry
  if len(by_beta) > 1 and stacks["final"]:
    shapes = {d.shape for d in stacks["final"]}
    if len(shapes) == 1:  # the same cells and seeds for every beta
      out["overall"] = {
          name: stats.paired_summary(np.nanmean(np.stack(ds), axis=0))
          for name, ds in stacks.items()
          if ds and not np.all(np.isnan(np.stack(ds)))
      }
  return out


def _equal_count(ft: list[dict], by_beta: dict[str, list[dict]], metric: str) -> dict[str, Any]:
  final = lambda rs: [100.0 * r["dev"][metric] for r in rs]
  out: dict[str, Any] = {"FT": dict(runs=len(ft), best=max(final(ft)), median=_med(final(ft)))}
  ft_pairs = {(_cell(f), f["seed"]) for f in ft}
  for beta, runs in by_beta.items():
    same = [r for r in runs if (_cell(r), r["seed"]) in ft_pairs]
    same_pairs = {(_cell(r), r["seed"]) for r in same}
    base = [f for f in ft if (_cell(f), f["seed"]) in same_pairs]
    if same:
      out[beta] = dict(
          runs=len(same),
          best=max(final(same)),
          ft_best_same_runs=max(final(base)),
          median=_med(final(same)),
          ft_median_same_runs=_med(final(base)),
      )
  pooled = [r for rs in by_beta.values() for r in rs]
  if pooled and ft:
    n = min(len(ft), len(pooled))
    out["big-learn"] = dict(
        runs=len(pooled),
        expected_best_of_ft_count=stats.expected_best(final(pooled), n),
        draws=n,
        median=_med(final(pooled)),
        paper_best_of_all_betas=max(final(pooled)),
    )
  return out


def _med(values: list[float]) -> float:
  return float(np.median(values))


def _half_value(r: dict, metric: str, select: str, report: str) -> tuple[float, float] | None:
  """A run's (selection-half, report-half) metric at the epoch best on the selection half."""
  epochs = r.get("epochs") or []
  key_s, key_r = f"half_{select}_{metric}", f"half_{report}_{metric}"
  if not epochs or any(key_s not in e for e in epochs):
    return None
  best = max(epochs, key=lambda e: e[key_s])
  return 100.0 * best[key_s], 100.0 * best[key_r]


def _select(runs: list[dict], metric: str, select: str, report: str) -> dict[str, Any] | None:
  """The cell whose seed-mean selection-half metric (each run at its best epoch there) is best;
  its seeds' report-half metrics."""
  cells: dict[tuple, dict[int, tuple[float, float]]] = {}
  for r in runs:
    v = _half_value(r, metric, select, report)
    if v is None:
      return None
    cells.setdefault(_cell(r), {})[r["seed"]] = v
  best = max(cells, key=lambda c: np.mean([s for s, _ in cells[c].values()]))
  per_seed = {seed: rep for seed, (_, rep) in cells[best].items()}
  return dict(
      cell=dict(zip(CELL, best)),
      selection=float(np.mean([s for s, _ in cells[best].values()])),
      report=float(np.mean(list(per_seed.values()))),
      per_seed=per_seed,
  )


def _selected(ft: list[dict], by_beta: dict[str, list[dict]], metric: str) -> dict[str, Any]:
  out: dict[str, Any] = {}
  methods = {"FT": ft, **by_beta}
  for name, runs in methods.items():
    both = {f"{s}_to_{r}": _select(runs, metric, s, r) for s, r in (("a", "b"), ("b", "a"))}
    if any(v is None for v in both.values()):
      return {}  # runs from before dev.jsonl held the halves
    out[name] = dict(**both, report=float(np.mean([v["report"] for v in both.values()])))
  paired = {}
  for beta in by_beta:
    # One difference per seed, averaged over the two directions (they share the seed's runs).
    directions = ("a_to_b", "b_to_a")
    seeds = set.intersection(
        *(set(out[m][d]["per_seed"]) for m in (beta, "FT") for d in directions)
    )
    diffs = [
        float(
            np.mean([out[beta][d]["per_seed"][s] - out["FT"][d]["per_seed"][s] for d in directions])
        )
        for s in sorted(seeds)
    ]
    if diffs:
      paired[beta] = stats.paired_summary(diffs)
  out["paired"] = paired
  return out


def _ft_optimum(ft: list[dict], metric: str, grid: dict[str, list]) -> dict[str, Any]:
  value = lambda r: 100.0 * (r.get("best_dev") or r["dev"])[metric]
  cells: dict[tuple, list[float]] = {}
  for r in ft:
    cells.setdefault(_cell(r), []).append(value(r))
  best = max(cells, key=lambda c: np.mean(cells[c]))
  on_edge = {}
  for field, v in zip(CELL, best):
    values = sorted(grid.get(field) or {r[field] for r in ft})
    on_edge[field] = len(values) > 1 and v in (values[0], values[-1])
  return dict(cell=dict(zip(CELL, best)), mean=float(np.mean(cells[best])), on_edge=on_edge)


def table4(task: str, results: list[dict]) -> dict[str, Any]:
  """Table 4's numbers from a sweep's results (see the module docstring)."""
  metric = glue.TASKS[task].metrics[0]
  done = [r for r in results if "failed" not in r]
  out: dict[str, Any] = dict(
      task=task,
      metric=metric,
      runs=len(results),
      failed=[run_name(r) for r in results if "failed" in r],
      methods={},
      betas={},
  )
  ft_all = [r for r in done if r["beta"] == 0]
  out["methods"]["FT"] = _method_entry(ft_all, metric, task)
  out["methods"]["big-learn"] = _method_entry([r for r in done if r["beta"] > 0], metric, task)
  for beta in sorted({r["beta"] for r in done}):
    out["betas"][f"{beta:g}"] = _method_entry([r for r in done if r["beta"] == beta], metric, task)
  # Every big-learn run against the FT run of its cell, seed and data size (`differences`).
  final = lambda r: 100.0 * r["dev"][metric]
  d = np.concatenate(
      [
          differences(
              [f for f in ft_all if size_of(f) == size],
              [r for r in done if r["beta"] == beta and size_of(r) == size],
              final,
          ).ravel()
          for size in {size_of(r) for r in done}
          for beta in {r["beta"] for r in done} - {0.0}
      ]
      or [np.zeros(0)]
  )
  d = d[~np.isnan(d)]
  if d.size:
    out["paired"] = dict(
        pairs=int(d.size),
        mean_gain=float(d.mean()),
        wins=int(np.sum(d > 0)),
        ties=int(np.sum(d == 0)),
        losses=int(np.sum(d < 0)),
    )
  out["sizes"] = {}
  grid = {f: sorted({r[f] for r in done}) for f in CELL}
  for size in sorted({size_of(r) for r in done}, key=lambda s: (s == "all", s.zfill(12))):
    runs = [r for r in done if size_of(r) == size]
    ft = [r for r in runs if r["beta"] == 0]
    by_beta = {
        f"{b:g}": [r for r in runs if r["beta"] == b]
        for b in sorted({r["beta"] for r in runs})
        if b
    }
    entry: dict[str, Any] = dict(
        runs=len(runs),
        methods={
            "FT": _method_entry(ft, metric, task, seconds=True),
            **{b: _method_entry(rs, metric, task, seconds=True) for b, rs in by_beta.items()},
        },
    )
    if ft and by_beta:
      entry["paired"] = _paired(ft, by_beta, metric)
      entry["equal_count"] = _equal_count(ft, by_beta, metric)
      entry["selected"] = _selected(ft, by_beta, metric)
      entry["ft_optimum"] = _ft_optimum(ft, metric, grid)
    out["sizes"][size] = entry
  _holm(out["sizes"])
  return out


def _holm(sizes: dict[str, Any]) -> None:
  """Adds `holm_p` to every (size, beta) final-metric comparison: its sign-flip p-value (the
  sign test's with one seed) Holm-adjusted over the whole family."""
  family = [
      (entry["final"], entry["final"].get("sign_flip_p", entry["final"]["sign_test_p"]))
      for s in sizes.values()
      for beta, entry in s.get("paired", {}).items()
      if beta != "overall" and "final" in entry
  ]
  for (target, _), p in zip(family, stats.holm([p for _, p in family]) if family else []):
    target["holm_p"] = p
