"""Imported at the start of every `python ...` subprocess the tests start (conftest.subprocess_env
puts this directory on PYTHONPATH): sets the garbage collector's thresholds from
$BIGJAX_TEST_GC_THRESHOLD (the suite's, conftest.GC_THRESHOLD), and lets every JAX process write
the suite's persistent compilation cache.

jax writes cache entries from process 0 only (`jax._src.compiler._cache_write`: a guard against
write contention on shared filesystems such as GCS). The key of an entry holds the process's own
devices, so process 1's programs never match process 0's entries and every multi-process test
compiled them again. The suite's cache is a local directory with a file lock, so here each process
writes its own entries; a hit still returns the executable a compile would have built.

Nothing here runs in a user's process: only the test suite's subprocesses import this file. If a
jax release renames what this wraps, the wrapper is not installed and the tests only run slower.
"""

import gc
import importlib.abc
import os
import sys

if os.environ.get("BIGJAX_TEST_GC_THRESHOLD"):
  gc.set_threshold(*map(int, os.environ["BIGJAX_TEST_GC_THRESHOLD"].split(",")))

_TARGET = "jax._src.compiler"


def _patch(compiler) -> None:
  write = getattr(compiler, "_cache_write", None)
  state = getattr(getattr(compiler, "distributed", None), "global_state", None)
  if write is None or state is None or not hasattr(state, "process_id"):
    return

  def _cache_write_from_any_process(*args, **kwargs):
    process_id = state.process_id
    state.process_id = 0
    try:
      return write(*args, **kwargs)
    finally:
      state.process_id = process_id

  compiler._cache_write = _cache_write_from_any_process


class _Finder(importlib.abc.MetaPathFinder):
  """Wraps the loader of jax._src.compiler so that `_patch` runs once the module is executed."""

  def find_spec(self, name, path=None, target=None):
    if name != _TARGET:
      return None
    sys.meta_path.remove(self)
    from importlib.util import find_spec

    spec = find_spec(name)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
      return spec
    exec_module = spec.loader.exec_module

    def exec_and_patch(module):
      exec_module(module)
      _patch(module)

    spec.loader.exec_module = exec_and_patch
    return spec


sys.meta_path.insert(0, _Finder())
