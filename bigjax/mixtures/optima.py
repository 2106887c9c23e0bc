"""Local and global minima of a sampled loss surface (paper Sec. 3.3: "local optima vary with
the task, global optima stay" as a table of numbers).

A grid point is a local minimum when no neighbour in its 3^n - 1 neighbourhood is lower by more
than `atol`; a plateau of points tied within `atol` is one minimum when it has no lower
neighbour anywhere along it, and none when it drains. Global minima are the local minima within `atol` of the
lowest value (a symmetric surface has several, e.g. the paper's (-1, 1) and (1, -1)).
Plain numpy/scipy: this runs once per surface after the jitted computation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import scipy.ndimage


def _neighbour_windows(shape):
  for offset in itertools.product((-1, 0, 1), repeat=len(shape)):
    if any(offset):
      yield tuple(slice(1 + o, n + 1 + o) for o, n in zip(offset, shape))


def local_minima(surface, *, atol: float = 1e-9) -> np.ndarray:
  """Indices of the local minima of an n-D surface.

  A point whose neighbours are all higher is a minimum. Points tied within `atol` form
  plateaus: a plateau is one minimum (reported at its first point in flat order) when none of
  its points has a lower neighbour, and no minimum when the plateau drains somewhere.

  Args:
    surface: `[N1, ..., Nn]` sampled values (finite).
    atol: values within `atol` of each other count as equal.

  Returns:
    `[M, n]` integer indices, sorted by value then index.
  """
  s = np.asarray(surface, np.float64)
  if s.ndim == 0 or s.size == 0:
    raise ValueError(
        f"surface must be a non-empty array with at least one axis, got shape " f"{s.shape}."
    )
  if not np.all(np.isfinite(s)):
    raise ValueError("surface contains NaN or inf; its minima are undefined.")
  padded = np.pad(s, 1, constant_values=np.inf)
  has_lower = np.zeros(s.shape, bool)
  for window in _neighbour_windows(s.shape):
    has_lower |= padded[window] < s - atol
  # A candidate next to a tied point that drains is not a minimum either: spread "drains"
  # across ties until nothing changes (a plateau's diameter in steps at most).
  drains = has_lower
  while True:
    padded_drains = np.pad(drains, 1, constant_values=False)
    spread = drains.copy()
    for window in _neighbour_windows(s.shape):
      spread |= padded_drains[window] & (np.abs(padded[window] - s) <= atol)
    if np.array_equal(spread, drains):
      break
    drains = spread
  # Adjacent non-draining points are tied, so connected components are plateaus: one minimum
  # each, at its first point in flat order.
  labels, count = scipy.ndimage.label(~drains, structure=np.ones((3,) * s.ndim))
  flat_labels = labels.ravel()
  firsts = [np.flatnonzero(flat_labels == k)[0] for k in range(1, count + 1)]
  idx = np.array(np.unravel_index(np.asarray(firsts, int), s.shape)).T.reshape(-1, s.ndim)
  values = s[tuple(idx.T)]
  order = np.lexsort((np.asarray(firsts, int), values))
  return idx[order]


def find_optima(
    surface, axes: Sequence[np.ndarray], *, atol: float = 1e-9, global_atol: float | None = None
) -> dict:
  """Local and global minima of a surface with their positions.

  Args:
    surface: `[N1, ..., Nn]` values, `surface[i, j, ...]` at `(axes[0][i], axes[1][j], ...)`.
    axes: the n grid axes.
    atol: tie tolerance for `local_minima`.
    global_atol: how close to the lowest value a local minimum must be to count as global
      (default: 1e-6 of the surface's range, at least `atol`).

  Returns:
    `{"local": [...], "global": [...], "min_value": float, "max_value": float, "flat": bool}`
    where each minimum is `{"index": [i, ...], "position": [x, ...], "value": v}`, sorted by
    value; "flat" marks a surface whose range is within `atol`.
  """
  s = np.asarray(surface, np.float64)
  if len(axes) != s.ndim or any(len(a) != n for a, n in zip(axes, s.shape)):
    raise ValueError(
        f"axes of lengths {[len(a) for a in axes]} do not match the surface's " f"shape {s.shape}."
    )
  idx = local_minima(s, atol=atol)
  lo, hi = float(s.min()), float(s.max())
  if global_atol is None:
    global_atol = max(atol, 1e-6 * (hi - lo))
  minima = [
      {
          "index": [int(i) for i in ix],
          "position": [float(a[i]) for a, i in zip(axes, ix)],
          "value": float(s[tuple(ix)]),
      }
      for ix in idx
  ]
  return {
      "local": minima,
      "global": [m for m in minima if m["value"] <= lo + global_atol],
      "min_value": lo,
      "max_value": hi,
      "flat": bool(hi - lo <= atol),
  }
