"""Tests of bigjax.mixtures.optima on surfaces with known minima."""

import numpy as np
import pytest

from bigjax.mixtures import optima


def _double_well(n=41, tilt=0.1):
  x = np.linspace(-2, 2, n)
  a, b = np.meshgrid(x, x, indexing="ij")
  return x, (a**2 - 1) ** 2 + (b**2 - 1) ** 2 + tilt * a


def test_double_well_has_four_local_and_known_global_minima():
  x, s = _double_well()
  result = optima.find_optima(s, (x, x))
  positions = sorted(tuple(np.round(m["position"], 6)) for m in result["local"])
  assert positions == [(-1, -1), (-1, 1), (1, -1), (1, 1)]
  # The tilt 0.1 * mu1 makes mu1 = -1 lower: two global minima, at (-1, -1) and (-1, 1).
  assert sorted(tuple(np.round(m["position"], 6)) for m in result["global"]) == [(-1, -1), (-1, 1)]
  assert result["min_value"] == pytest.approx(s.min())
  assert result["local"][0]["value"] <= result["local"][-1]["value"]


def test_symmetric_surface_reports_both_global_minima():
  x, s = _double_well(tilt=0.0)
  result = optima.find_optima(s, (x, x))
  assert len(result["global"]) == 4
  assert not result["flat"]


def test_edge_and_corner_minima_are_found():
  x = np.linspace(0, 1, 11)
  a, b = np.meshgrid(x, x, indexing="ij")
  s = a + b  # minimum at the corner (0, 0) only
  idx = optima.local_minima(s)
  assert idx.tolist() == [[0, 0]]


def test_plateau_gives_one_minimum_and_flat_surface_is_marked():
  s = np.ones((6, 7))
  s[2:4, 3:5] = 0.0
  assert optima.local_minima(s).tolist() == [[2, 3]]
  flat = optima.find_optima(np.zeros((5, 5)), (np.arange(5), np.arange(5)))
  assert flat["flat"] and len(flat["local"]) == 1


def test_ties_within_atol_count_as_equal():
  s = np.array([[1.0, 0.0, 1e-12, 1.0]])
  assert len(optima.local_minima(s, atol=1e-9)) == 1
  assert len(optima.local_minima(s, atol=0.0)) == 1  # 1e-12 > 0: not a minimum either way
  s2 = np.array([[1.0, 0.0, 2.0, 1e-3, 1.0]])
  assert optima.local_minima(s2).tolist() == [[0, 1], [0, 3]]


def test_one_and_three_dimensional_surfaces():
  x = np.linspace(-3, 3, 61)
  s1 = np.cos(2 * x) + 0.01 * x
  idx = optima.local_minima(s1)[:, 0]
  np.testing.assert_allclose(np.sort(x[idx]), [-np.pi / 2, np.pi / 2], atol=0.06)
  g = np.linspace(-1, 1, 9)
  a, b, c = np.meshgrid(g, g, g, indexing="ij")
  s3 = (a - 0.5) ** 2 + (b + 0.25) ** 2 + c**2
  assert optima.local_minima(s3).tolist() == [[6, 3, 4]]


def test_bad_input_raises():
  with pytest.raises(ValueError, match="NaN"):
    optima.local_minima(np.array([[0.0, np.nan]]))
  with pytest.raises(ValueError, match="axes"):
    optima.find_optima(np.zeros((3, 4)), (np.arange(3), np.arange(3)))
  with pytest.raises(ValueError, match="non-empty"):
    optima.local_minima(np.zeros((0,)))
