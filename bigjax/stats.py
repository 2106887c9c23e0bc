"""Paired comparisons of two methods over seeds and grid cells, with intervals and tests.

Used by experiments.finetune_sweep (Table 4) to say whether big-learn beats FT (paper App. E.2)
fairly: every big-learn run is paired with the FT run of the same cell (learning rate, epochs,
warm-up, data size) and seed, and the statistics below are computed on the paired differences.
Pure NumPy (no JAX): these are summaries of a few hundred numbers.

  differences   a [cells, seeds] array, big-learn minus FT (NaN where a pair is missing)
  paired_summary(d)            mean, 95% bootstrap interval over pairs, wins/ties/losses and
                               the sign test's two-sided p-value
  sign_test(wins, losses)      exact two-sided binomial test (ties dropped)
  sign_flip_test(d)            exact permutation test over seeds: each seed's mean difference
                               flips sign under the null hypothesis of no difference
  two_level_bootstrap(d)       interval of the mean resampling cells, then seeds within cells
  holm(p)                      Holm's step-down adjustment of a family of p-values
  expected_best(values, n)     the expected best of n runs drawn without replacement from
                               `values`: a "best" over equal numbers of runs for both methods
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_interval",
    "expected_best",
    "holm",
    "paired_summary",
    "sign_flip_test",
    "sign_test",
    "two_level_bootstrap",
]


def _finite_1d(values, name: str) -> np.ndarray:
  v = np.asarray(values, np.float64).ravel()
  v = v[~np.isnan(v)]
  if not v.size:
    raise ValueError(f"{name}: no values (all missing): a statistic needs at least one pair.")
  if not np.all(np.isfinite(v)):
    raise ValueError(f"{name}: holds inf; pass finite differences (or NaN for a missing pair).")
  return v


def _check_confidence(confidence: float) -> None:
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence}: give a level in (0, 1), e.g. 0.95.")


def sign_test(wins: int, losses: int) -> float:
  """The exact two-sided sign test: P(a split at least as uneven as wins:losses) when each
  untied pair is a fair coin. 1.0 when there is no untied pair."""
  if wins < 0 or losses < 0:
    raise ValueError(f"wins={wins}, losses={losses}: counts must be non-negative.")
  n = wins + losses
  if not n:
    return 1.0
  k = min(wins, losses)
  tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
  return float(min(1.0, 2.0 * tail))


def bootstrap_interval(
    values, *, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
  """Percentile bootstrap interval of the mean of `values` (NaN entries dropped)."""
  _check_confidence(confidence)
  v = _finite_1d(values, "bootstrap_interval")
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, v.size, size=(num_resamples, v.size))].mean(axis=1)
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
  return float(lo), float(hi)


def _as_cells_by_seeds(differences) -> np.ndarray:
  d = np.asarray(differences, np.float64)
  if d.ndim == 1:
    d = d[None, :]
  if d.ndim != 2:
    raise ValueError(
        f"differences has shape {d.shape}: give a [cells, seeds] array (one row per grid cell, "
        "one column per seed; NaN for a missing pair)."
    )
  _finite_1d(d, "differences")
  return d


def sign_flip_test(
    differences, *, max_exact_seeds: int = 16, num_resamples: int = 100_000, seed: int = 0
) -> float:
  """Two-sided permutation test over seeds: the statistic is the mean over seeds of each seed's
  mean difference over cells; under the null hypothesis each seed's mean flips sign with
  probability 1/2. Exact (all 2**seeds flips) up to `max_exact_seeds` seeds, Monte Carlo beyond.
  With s seeds the smallest attainable p-value is 2 / 2**s (5 seeds: 0.0625)."""
  d = _as_cells_by_seeds(differences)
  per_seed = np.nanmean(d, axis=0)
  per_seed = per_seed[~np.isnan(per_seed)]
  observed = abs(per_seed.mean())
  s = per_seed.size
  if s <= max_exact_seeds:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=s)))
  else:
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(num_resamples, s))
  flipped = np.abs((signs * per_seed).mean(axis=1))
  return float(np.mean(flipped >= observed - 1e-12))


def two_level_bootstrap(
    differences, *, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
  """Percentile interval of the mean difference resampling both sources of variation: cells
  with replacement, then seeds with replacement within each drawn cell (missing pairs, NaN,
  are left out of each cell's mean)."""
  _check_confidence(confidence)
  d = _as_cells_by_seeds(differences)
  d = d[~np.all(np.isnan(d), axis=1)]
  rng = np.random.default_rng(seed)
  cells, seeds = d.shape
  rows = rng.integers(0, cells, size=(num_resamples, cells))
  cols = rng.integers(0, seeds, size=(num_resamples, cells, seeds))
  drawn = d[rows[..., None], cols]  # [resamples, cells, seeds]
  with warnings.catch_warnings():  # a drawn cell whose drawn seeds are all missing: NaN, skipped
    warnings.simplefilter("ignore", RuntimeWarning)
    means = np.nanmean(np.nanmean(drawn, axis=2), axis=1)
  means = means[~np.isnan(means)]
  alpha = (1.0 - confidence) / 2.0
  lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
  return float(lo), float(hi)


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values (family-wise error control), in the input's order."""
  p = np.asarray(p_values, np.float64)
  if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
    raise ValueError(f"holm: p-values must be a flat list of numbers in [0, 1], got {p_values}.")
  m = p.size
  order = np.argsort(p, kind="stable")
  adjusted = np.empty(m)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return adjusted.tolist()


def expected_best(values, n: int) -> float:
  """E[max of n values drawn without replacement from `values`]: the best of n runs, for a
  method with more than n runs, so that two methods' "best" count the same number of draws.
  Exact: with values sorted ascending, the i-th (1-based) is the maximum of a draw with
  probability C(i-1, n-1) / C(N, n)."""
  v = np.sort(_finite_1d(values, "expected_best"))
  big_n = v.size
  if not 1 <= n <= big_n:
    raise ValueError(f"expected_best: n={n} draws from {big_n} values; need 1 <= n <= {big_n}.")
  total = math.comb(big_n, n)
  weights = np.array([math.comb(i - 1, n - 1) / total for i in range(1, big_n + 1)])
  return float(weights @ v)


def paired_summary(
    differences, *, confidence: float = 0.95, num_resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
  """The paired statistics of a [cells, seeds] array of differences (or a flat list of pairs):
  pairs, mean, the bootstrap interval over pairs, wins / ties / losses, the sign test's p; and,
  for an array with two or more seeds, the sign-flip test over seeds and the two-level bootstrap
  interval (with their `seeds` and `cells` counts)."""
  structured = np.ndim(differences) == 2
  d = _as_cells_by_seeds(differences)
  flat = d[~np.isnan(d)]
  wins, ties, losses = int(np.sum(flat > 0)), int(np.sum(flat == 0)), int(np.sum(flat < 0))
  lo, hi = bootstrap_interval(flat, confidence=confidence, num_resamples=num_resamples, seed=seed)
  out = dict(
      pairs=int(flat.size),
      mean=float(flat.mean()),
      interval=[lo, hi],
      wins=wins,
      ties=ties,
      losses=losses,
      sign_test_p=sign_test(wins, losses),
  )
  seeds_present = int(np.sum(~np.all(np.isnan(d), axis=0)))
  if structured and seeds_present >= 2:
    out["seeds"] = seeds_present
    out["cells"] = int(np.sum(~np.all(np.isnan(d), axis=1)))
    out["sign_flip_p"] = sign_flip_test(d)
    out["two_level_interval"] = list(
        two_level_bootstrap(d, confidence=confidence, num_resamples=num_resamples, seed=seed)
    )
  return out
