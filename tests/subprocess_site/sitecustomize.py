"""Imported at the start of every `python ...` subprocess the tests start (conftest.subprocess_env
puts this directory on PYTHONPATH): sets the garbage collector's thresholds from
$BIGJAX_TEST_GC_THRESHOLD (the suite's, conftest.GC_THRESHOLD), and, once jax._src.compiler is
imported, applies the suite's changes to how jax writes its persistent compilation cache
(suite_jax_cache.py here: every process writes its own entries, and a write under the size limit
skips jax's eviction scan).

Nothing here runs in a user's process: only the test suite's subprocesses import this file.
"""

import gc
import importlib.abc
import os
import sys

import suite_jax_cache  # beside this file, on the subprocesses' PYTHONPATH

if os.environ.get("BIGJAX_TEST_GC_THRESHOLD"):
  gc.set_threshold(*map(int, os.environ["BIGJAX_TEST_GC_THRESHOLD"].split(",")))

_TARGET = "jax._src.compiler"


def _patch(compiler) -> None:
  suite_jax_cache.write_from_any_process(compiler)
  # jax._src.compiler imports jax._src.compilation_cache, which imports jax._src.lru_cache.
  lru_cache = sys.modules.get("jax._src.lru_cache")
  if lru_cache is not None:
    suite_jax_cache.skip_needless_eviction_scans(lru_cache)


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
