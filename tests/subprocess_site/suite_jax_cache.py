"""The test suite's two changes to jax's persistent compilation cache, applied in the pytest
processes (tests/conftest.py) and in every subprocess the tests start (sitecustomize.py here).

Both change how the cache is written, never what a hit returns: an entry's key holds the program,
the compile options, the devices and the jax/jaxlib version, so a hit is the executable a compile
would have built. Nothing here runs in a user's process. If a jax release renames what these wrap,
they are not installed and the tests only run slower.

- `write_from_any_process`: jax writes entries from process 0 only (`jax._src.compiler.
  _cache_write`, a guard against write contention on shared filesystems such as GCS). The key of
  an entry holds the process's own devices, so process 1's programs never match process 0's
  entries and every multi-process test compiled them again. The suite's cache is a local
  directory with a file lock, so each process writes its own entries.
- `skip_needless_eviction_scans`: with a size limit (which the suite sets to get jax's file lock),
  every write first runs `LRUCache._evict_if_needed`, which lists the directory and reads the
  access-time file of every entry to build its eviction heap: 0.5-1.3 s per write at about 7,000
  entries, so a run that fills an empty cache (a first run, a CI machine) spends time quadratic in
  its entries. The wrapper first sums the entries' sizes (one `os.scandir`, 25 ms at 7,000) and
  runs jax's scan only when that sum plus the new entry exceeds the limit, the condition under
  which the scan evicts anything; over the limit jax evicts exactly as before.
"""

import functools
import os


def write_from_any_process(compiler) -> None:
  """Lets every process of a multi-process run write the cache (`compiler` is jax._src.compiler)."""
  write = getattr(compiler, "_cache_write", None)
  state = getattr(getattr(compiler, "distributed", None), "global_state", None)
  if write is None or state is None or not hasattr(state, "process_id"):
    return

  @functools.wraps(write)
  def _cache_write_from_any_process(*args, **kwargs):
    process_id = state.process_id
    state.process_id = 0
    try:
      return write(*args, **kwargs)
    finally:
      state.process_id = process_id

  compiler._cache_write = _cache_write_from_any_process


def _entries_bytes(path: str) -> int:
  """The summed size of the `-cache` files in `path` (what jax's eviction counts)."""
  total = 0
  with os.scandir(path) as entries:
    for entry in entries:
      if entry.name.endswith("-cache"):
        try:
          total += entry.stat().st_size
        except FileNotFoundError:  # removed since the listing: no longer counts
          pass
  return total


def skip_needless_eviction_scans(lru_cache) -> None:
  """Runs jax's eviction scan only when a write takes the cache over its size limit
  (`lru_cache` is jax._src.lru_cache). Idempotent."""
  cls = getattr(lru_cache, "LRUCache", None)
  evict = getattr(cls, "_evict_if_needed", None)
  if evict is None or hasattr(evict, "__wrapped__"):
    return

  @functools.wraps(evict)
  def _evict_if_needed(self, *, additional_size: int = 0) -> None:
    path = str(getattr(self, "path", ""))
    if (
        getattr(self, "eviction_enabled", False)
        and os.path.isdir(path)  # a local directory (jax also takes gs:// and other URLs)
        and _entries_bytes(path) + additional_size <= self.max_size
    ):
      return
    evict(self, additional_size=additional_size)

  cls._evict_if_needed = _evict_if_needed
