"""Running a jitted function over any number of rows in fixed-size chunks.

Evaluation and sampling take whatever number of images or sequences a user gives; a jitted
function compiles once per input shape. `map_chunks` feeds it rows in chunks of one size (the
last one padded with zeros and its padding dropped from the outputs), so one compiled program
serves every N. `by_value` builds such a jitted function once per model in a process.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar
from collections.abc import Callable, Sequence

import jax
import numpy as np

__all__ = ["by_value", "map_chunks"]

F = TypeVar("F", bound=Callable[..., Any])


def by_value(build: F) -> F:
  """Memoizes a builder of jitted functions on its arguments' values (the 8 most recent).

  A jitted function built inside `build` is a new Python function at every call, which JAX
  traces, lowers and loads again; a Flax module equals another of the same fields, which
  define its program, so equal arguments get the function built before. An argument that
  cannot be hashed (a module with a list field, or one bound to variables) builds a new one,
  as without the decorator. `cache_clear()` empties the cache."""
  cached = functools.lru_cache(maxsize=8)(build)

  @functools.wraps(build)
  def built(*args, **kwargs):
    try:
      hash((args, tuple(kwargs.items())))
    except TypeError:  # not hashable: a function of its own
      return build(*args, **kwargs)
    return cached(*args, **kwargs)

  built.cache_clear = cached.cache_clear
  return built


def _pad(x: np.ndarray, rows: int) -> np.ndarray:
  if len(x) == rows:
    return x
  return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])


def map_chunks(
    fn: Callable[..., Any], arrays: Sequence[np.ndarray], *, size: int, seed: int | None = None
) -> tuple[np.ndarray, ...]:
  """fn over rows [i size, (i + 1) size) of `arrays`, outputs concatenated.

  Args:
    fn: (*chunks[, key]) -> an array or a tuple of arrays, each [size, ...] (row-wise).
    arrays: inputs [N, ...] sharing N; None entries are passed through as None.
    size: rows per call.
    seed: when given, chunk i also gets the PRNG key fold_in(key(seed), i).

  Returns:
    the outputs' first N rows as numpy arrays, a tuple (one per output of fn); for N = 0,
    empty arrays of fn's output shapes.
  """
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"size must be a positive int, got {size!r}.")
  n = len(next(a for a in arrays if a is not None))
  key = lambda i: () if seed is None else (jax.random.fold_in(jax.random.key(seed), i),)
  pieces = []
  for i, start in enumerate(range(0, n, size)):
    chunk = [None if a is None else _pad(a[start : start + size], size) for a in arrays]
    out = jax.device_get(fn(*chunk, *key(i)))
    out = out if isinstance(out, tuple) else (out,)
    pieces.append([np.asarray(o)[: min(size, n - start)] for o in out])
  if not pieces:  # no rows: the output shapes, without running fn
    zeros = [None if a is None else np.zeros((size,) + a.shape[1:], a.dtype) for a in arrays]
    shapes = jax.eval_shape(fn, *zeros, *key(0))
    shapes = shapes if isinstance(shapes, tuple) else (shapes,)
    return tuple(np.zeros((0,) + s.shape[1:], s.dtype) for s in shapes)
  return tuple(np.concatenate(parts) for parts in zip(*pieces))
