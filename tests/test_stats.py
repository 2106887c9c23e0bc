"""bigjax.stats against hand computations, scipy and brute force."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bigjax import stats


@pytest.mark.parametrize("wins,losses", [(0, 0), (5, 0), (7, 41), (3, 3), (10, 2), (1, 9)])
def test_sign_test_is_scipys_exact_binomial_test(wins, losses):
  want = 1.0 if wins + losses == 0 else scipy_stats.binomtest(wins, wins + losses).pvalue
  assert stats.sign_test(wins, losses) == pytest.approx(want, rel=1e-12)


def test_sign_test_by_hand():
  # 5 wins, 0 losses: two-sided 2 * (1/2)^5.
  assert stats.sign_test(5, 0) == pytest.approx(2 / 32)
  # 4:1 -> 2 * (C(5,0) + C(5,1)) / 32 = 12/32.
  assert stats.sign_test(4, 1) == pytest.approx(12 / 32)
  with pytest.raises(ValueError, match="non-negative"):
    stats.sign_test(-1, 3)


def test_sign_flip_test_enumerates_every_flip_by_hand():
  # Three seeds whose mean differences (over two cells) are 1, 2, 3; the observed |mean| = 2.
  d = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  flips = [abs(np.mean(np.array(s) * [1, 2, 3])) for s in itertools.product((1, -1), repeat=3)]
  want = np.mean(np.array(flips) >= 2.0 - 1e-12)
  assert want == pytest.approx(2 / 8)
  assert stats.sign_flip_test(d) == pytest.approx(want)
  # A missing pair (NaN) leaves its seed's mean over the other cells.
  d2 = np.array([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]])
  assert stats.sign_flip_test(d2) == pytest.approx(2 / 8)


def test_holm_by_hand():
  # m = 4, sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5.
  assert stats.holm([0.03, 0.01, 0.5, 0.02]) == pytest.approx([0.06, 0.04, 0.5, 0.06])
  assert stats.holm([0.9, 0.6]) == pytest.approx([1.0, 1.0])
  with pytest.raises(ValueError, match=r"in \[0, 1\]"):
    stats.holm([0.5, 1.5])


def test_expected_best_is_the_mean_best_over_every_draw():
  values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
  for n in range(1, len(values) + 1):
    brute = np.mean([max(c) for c in itertools.combinations(values, n)])
    assert stats.expected_best(values, n) == pytest.approx(brute)
  assert stats.expected_best(values, len(values)) == max(values)
  assert stats.expected_best(values, 1) == pytest.approx(np.mean(values))
  with pytest.raises(ValueError, match="n=7 draws from 6"):
    stats.expected_best(values, 7)


def test_bootstrap_intervals_cover_the_mean_and_shrink_with_more_pairs():
  rng = np.random.default_rng(1)
  small = rng.normal(1.0, 1.0, 10)
  large = rng.normal(1.0, 1.0, 1000)
  lo_s, hi_s = stats.bootstrap_interval(small)
  lo_l, hi_l = stats.bootstrap_interval(large)
  assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
  assert hi_l - lo_l < (hi_s - lo_s) / 3
  # The normal approximation's width for 1000 pairs: 2 * 1.96 * sd / sqrt(n).
  assert hi_l - lo_l == pytest.approx(2 * 1.96 * large.std() / math.sqrt(1000), rel=0.1)
  # A constant difference has a zero-width interval.
  assert stats.bootstrap_interval([0.5] * 7) == pytest.approx((0.5, 0.5))


def test_two_level_bootstrap_is_wider_when_cells_disagree():
  rng = np.random.default_rng(0)
  seeds_only = rng.normal(0.0, 0.5, (6, 5)) + 1.0
  cells_differ = seeds_only + np.linspace(-3, 3, 6)[:, None]
  lo1, hi1 = stats.two_level_bootstrap(seeds_only)
  lo2, hi2 = stats.two_level_bootstrap(cells_differ)
  assert lo1 < seeds_only.mean() < hi1 and lo2 < cells_differ.mean() < hi2
  assert hi2 - lo2 > 2 * (hi1 - lo1)


def test_paired_summary_counts_and_fields():
  d = np.array([[1.0, -0.5, 0.0], [2.0, 1.0, np.nan]])
  s = stats.paired_summary(d)
  assert (s["pairs"], s["wins"], s["ties"], s["losses"]) == (5, 3, 1, 1)
  assert s["mean"] == pytest.approx(3.5 / 5)
  assert s["sign_test_p"] == pytest.approx(stats.sign_test(3, 1))
  assert s["seeds"] == 3 and s["cells"] == 2
  assert 0 < s["sign_flip_p"] <= 1 and s["two_level_interval"][0] <= s["two_level_interval"][1]
  flat = stats.paired_summary([0.2, 0.4])  # pairs without cells and seeds
  assert flat["pairs"] == 2 and flat["wins"] == 2 and "sign_flip_p" not in flat
  with pytest.raises(ValueError, match="no values"):
    stats.paired_summary([np.nan, np.nan])
  with pytest.raises(ValueError, match=r"\[cells, seeds\]"):
    stats.paired_summary(np.zeros((2, 2, 2)))
