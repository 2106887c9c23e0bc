"""Host-side prefetch: compute the inputs of the next steps in a background thread.

A training loop whose batch for step s is a pure function `make(s)` (index the dataset, scale,
put on the devices) asks `Prefetcher.get(s)`; the `size` following batches are already being
assembled by a worker thread while the device runs step s, so the device does not wait for
the host (numpy indexing, JPEG-cache reads and the host-to-device copy release the GIL).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any
from collections.abc import Callable

__all__ = ["Prefetcher"]


class Prefetcher:
  """`get(step)` returns `make(step)`, computed ahead for steps step + 1 ... step + size.

  Args:
    make: step -> batch; must be a pure function of the step (thread-safe).
    stop: the first step not to prefetch (the end of the run).
    size: batches kept in flight; 0 computes each batch on demand in the caller's thread.

  Use as a context manager (or call `close`) so the worker thread ends with the loop. An error
  in `make` is raised by the `get` of that step.
  """

  def __init__(self, make: Callable[[int], Any], *, stop: int, size: int = 2):
    if size < 0:
      raise ValueError(f"prefetch size must be >= 0, got {size}.")
    self._make, self._stop, self._size = make, int(stop), int(size)
    self._pool = (
        concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bigjax-prefetch")
        if size
        else None
    )
    self._pending: dict[int, concurrent.futures.Future] = {}

  def get(self, step: int) -> Any:
    step = int(step)
    if self._pool is None:
      return self._make(step)
    for s in range(step, min(step + self._size + 1, self._stop)):
      if s not in self._pending:
        self._pending[s] = self._pool.submit(self._make, s)
    for s in [s for s in self._pending if s < step]:  # a caller that skipped steps
      self._pending.pop(s).cancel()
    future = self._pending.pop(step, None)
    return future.result() if future is not None else self._make(step)

  def close(self) -> None:
    if self._pool is not None:
      for future in self._pending.values():
        future.cancel()
      self._pending.clear()
      self._pool.shutdown(wait=True)

  def __enter__(self) -> Prefetcher:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
