"""Jitted programs built from a run's config, built once per process and config.

A trainer jits its step (and its state's initialiser) from the run's config: a new Python function
each time, which JAX traces and lowers again at its first call before it loads the executable
from the persistent cache or compiles it. On a small CPU that is seconds per run, paid again by
every run a process trains, though the program is the same whenever the config is (a resume in
the same process after an error, a notebook cell run again, a test suite).

`by_config` memoizes such a builder on the config's JSON -- every field, since a program may
read any of them -- and its other arguments (hashable ones: a mesh, a sharding), so a process
that trains a config it has trained before gets the same jitted function back, and with it the
traced and compiled programs. Only builders whose programs depend on nothing but their arguments
qualify: not one that closes over data loaded from disk (its JSON would not change with it).
`jit_init` is such a builder for a trainer's initialiser, `init_state(config, *args)`.
"""

from __future__ import annotations

import collections
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import jax

from bigjax.training import loop

__all__ = ["by_config", "jit_init"]

F = TypeVar("F", bound=Callable[..., Any])


def by_config(build: F | None = None, *, maxsize: int = 4) -> F:
  """Memoizes `build(config, *args, **kwargs)` on the config's JSON and the other arguments.

  The `maxsize` most recently used programs are kept (each holds its executables). A config
  that is not JSON-serialisable, or an argument that is not hashable, builds a new program, as
  without the decorator. `cache_clear()` empties the cache.
  """

  def decorate(build):
    cache: collections.OrderedDict = collections.OrderedDict()

    @functools.wraps(build)
    def cached(config, *args, **kwargs):
      try:
        key = (
            json.dumps(loop.config_as_json(config), sort_keys=True),
            args,
            tuple(sorted(kwargs.items())),
        )
        hash(key)
      except (TypeError, ValueError):  # not JSON-serialisable, or not hashable
        return build(config, *args, **kwargs)
      if key in cache:
        cache.move_to_end(key)
        return cache[key]
      program = cache[key] = build(config, *args, **kwargs)
      while len(cache) > maxsize:
        cache.popitem(last=False)
      return program

    cached.cache_clear = cache.clear
    return cached

  return decorate(build) if build is not None else decorate


@by_config
def jit_init(config, init_state: Callable[..., Any], state_sharding) -> Callable[..., Any]:
  """`(*args) -> init_state(config, *args)`, jitted, the state placed by `state_sharding`: a
  trainer's initialiser, built once per config, function and sharding in a process."""
  return jax.jit(functools.partial(init_state, config), out_shardings=state_sharding)
