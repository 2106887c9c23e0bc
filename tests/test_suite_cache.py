"""The test suite's persistent compilation cache (tests/conftest.py) stays writable."""

import os

from jax._src import lru_cache
import pytest

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
