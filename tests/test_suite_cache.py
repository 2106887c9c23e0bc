"""The test suite's settings (tests/conftest.py): its persistent compilation cache stays writable,
and its processes and subprocesses collect garbage with the suite's thresholds and cache
bytecode."""

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
  makes every later write fail; dropping it lets jax write again, and finished entries stay."""
  cache = lru_cache.LRUCache(str(tmp_path), max_size=1 << 20)
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
