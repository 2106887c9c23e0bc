"""The test suite's settings (tests/conftest.py): its persistent compilation cache stays writable
and skips jax's eviction scan under its size limit, and its processes and subprocesses collect
garbage with the suite's thresholds and cache bytecode."""

import gc
import os
import subprocess
import sys

from jax._src import lru_cache
import pytest

import conftest
from conftest import drop_unfinished_cache_entries


def test_an_unfinished_cache_entry_is_dropped_and_writes_work_again(tmp_path):
  """A `-cache` file without its `-atime` file (a process killed while jax wrote the entry)
  makes every later write that runs jax's eviction scan fail; dropping it lets jax write again,
  and finished entries stay."""
  # 25 bytes: the third write (10 + 13 + 7 bytes) goes over the limit, so the scan runs.
  cache = lru_cache.LRUCache(str(tmp_path), max_size=25)
  cache.put("done", b"executable")
  (tmp_path / "killed-cache").write_bytes(b"half an execu")
  with pytest.raises(FileNotFoundError):  # the defect repaired (jax warns and writes nothing)
    cache.put("next", b"another")
  assert drop_unfinished_cache_entries(str(tmp_path)) == ["killed-cache"]
  cache.put("next", b"another")
  assert cache.get("next") == b"another" and cache.get("done") == b"executable"
  assert sorted(n for n in os.listdir(tmp_path) if not n.startswith(".")) == [
      "done-atime",
      "done-cache",
      "next-atime",
      "next-cache",
  ]
  assert drop_unfinished_cache_entries(str(tmp_path / "missing")) == []


def _fill(path, max_size: int) -> list[str]:
  """Three 10-byte writes and a read of the first, to a cache of `max_size` bytes: its files."""
  cache = lru_cache.LRUCache(str(path), max_size=max_size)
  cache.put("a", b"0123456789")
  cache.put("b", b"0123456789")
  assert cache.get("a") == b"0123456789"  # now more recent than b
  cache.put("c", b"0123456789")
  return sorted(n for n in os.listdir(path) if not n.startswith("."))


def test_a_write_skips_the_eviction_scan_under_the_limit_and_evicts_as_jax_does_over_it(
    tmp_path, monkeypatch
):
  evict = lru_cache.LRUCache._evict_if_needed
  assert evict.__wrapped__.__module__ == "jax._src.lru_cache"  # conftest installed the wrapper
  # Over the limit (30 bytes in 25), the least recently used entry goes, as jax alone does it.
  with_wrapper = _fill(tmp_path / "wrapped", max_size=25)
  monkeypatch.setattr(lru_cache.LRUCache, "_evict_if_needed", evict.__wrapped__)
  assert with_wrapper == _fill(tmp_path / "jax", max_size=25)
  assert with_wrapper == ["a-atime", "a-cache", "c-atime", "c-cache"]
  monkeypatch.undo()
  # Under the limit the scan does not run: an entry without its access time does not break it.
  cache = lru_cache.LRUCache(str(tmp_path / "under"), max_size=1 << 20)
  (tmp_path / "under" / "killed-cache").write_bytes(b"half an execu")
  cache.put("next", b"another")
  assert cache.get("next") == b"another"


def test_subprocesses_get_the_suites_cache_writes():
  code = (
      "import jax._src.compiler as c, jax._src.lru_cache as l;"
      "print(c._cache_write.__wrapped__.__module__,"
      " l.LRUCache._evict_if_needed.__wrapped__.__module__)"
  )
  proc = subprocess.run(
      [sys.executable, "-c", code],
      env=conftest.subprocess_env(),
      capture_output=True,
      text=True,
      timeout=120,
      check=True,
  )
  assert proc.stdout.split() == ["jax._src.compiler", "jax._src.lru_cache"]  # both wrapped


def test_the_suite_and_its_subprocesses_use_its_collector_thresholds_and_bytecode_cache():
  assert gc.get_threshold() == conftest.GC_THRESHOLD and not sys.dont_write_bytecode
  proc = subprocess.run(
      [sys.executable, "-c", "import gc, sys; print(gc.get_threshold(), sys.dont_write_bytecode)"],
      env=conftest.subprocess_env(),
      capture_output=True,
      text=True,
      timeout=60,
      check=True,
  )
  assert proc.stdout.strip() == f"{conftest.GC_THRESHOLD} False"


def test_the_files_run_first_exist():
  """conftest.LONGEST_FILES names test files (a renamed file would silently run last)."""
  here = os.path.dirname(os.path.abspath(__file__))
  missing = [n for n in conftest.LONGEST_FILES if not os.path.isfile(os.path.join(here, n))]
  assert not missing and len(set(conftest.LONGEST_FILES)) == len(conftest.LONGEST_FILES), missing
