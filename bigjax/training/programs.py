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
`jit_init` is `make_init`, the builder of a trainer's initialiser `init_state(config, *args)`,
so memoized.

A builder can name the fields its programs never read (`ignore`: how long a run is, how often it
logs and saves): configs that differ only there share one program. That is checked, not
trusted: the builder gets the config with each ignored field replaced by a placeholder that
raises `UnusedFieldError` on any use (a comparison, arithmetic, truth value, attribute or item),
so a program that does read one fails at its build or first trace, naming the field, instead of
running with another config's value.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax

from bigjax.training import loop

__all__ = ["UnusedFieldError", "by_config", "jit_init", "make_init"]

F = TypeVar("F", bound=Callable[..., Any])


class UnusedFieldError(RuntimeError):
  """A program built through `by_config(ignore=...)` used a field it declared it never reads."""


class _Unused:
  """Stands for an ignored config field in the config a builder gets: any use raises."""

  __slots__ = ("_name",)

  def __init__(self, name: str):
    object.__setattr__(self, "_name", name)

  def _refuse(self, *args, **kwargs):
    raise UnusedFieldError(
        f"this program read config.{object.__getattribute__(self, '_name')}, which its builder "
        "declared unused (bigjax.training.programs.by_config(ignore=...)); remove the field from "
        "`ignore`, or stop the program from reading it."
    )

  def __getattr__(self, attr):
    if attr.startswith("__") and attr.endswith("__"):  # copy's, pickle's protocol lookups
      raise AttributeError(attr)
    self._refuse()

  def __repr__(self):
    return f"<unused config field {object.__getattribute__(self, '_name')!r}>"


for _op in (
    "__bool__ __int__ __float__ __index__ __complex__ __len__ __iter__ __contains__ __getitem__ "
    "__call__ __str__ __format__ __hash__ __eq__ __ne__ __lt__ __le__ __gt__ __ge__ __neg__ "
    "__pos__ __abs__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__ "
    "__rtruediv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __pow__ __rpow__ __array__ "
    "__jax_array__"
).split():
  setattr(_Unused, _op, _Unused._refuse)


def _split(config, ignore: Sequence[str]) -> tuple[Any, Any]:
  """(the config's JSON without the `ignore` fields, a copy of the config with each of them that
  it has replaced by an `_Unused` placeholder)."""
  tree = copy.deepcopy(loop.config_as_json(config))  # (a plain mapping comes back as it is)
  stripped = copy.deepcopy(config)
  for name in ignore:
    *parents, leaf = name.split(".")
    node, copied = tree, stripped
    for parent in parents:
      node = node.get(parent) if isinstance(node, dict) else None
      copied = copied[parent] if node is not None else None
    if not isinstance(node, dict) or leaf not in node:
      continue  # not in this config
    del node[leaf]
    unlocked = copied.unlocked() if hasattr(copied, "unlocked") else contextlib.nullcontext()
    with unlocked:  # (a ConfigDict keeps a field's type: a new field takes any value)
      del copied[leaf]
      copied[leaf] = _Unused(name)
  return tree, stripped


def by_config(build: F | None = None, *, maxsize: int = 4, ignore: Sequence[str] = ()) -> F:
  """Memoizes `build(config, *args, **kwargs)` on the config's JSON and the other arguments.

  The `maxsize` most recently used programs are kept (each holds its executables). A config
  that is not JSON-serialisable, or an argument that is not hashable, builds a new program, as
  without the decorator. `cache_clear()` empties the cache.

  `ignore`: dotted names of config fields (`"num_steps"`, `"eval.num_images"`) the programs never
  read. They are left out of the key, and `build` gets a copy of the config in which each is a
  placeholder that raises `UnusedFieldError` when used (see the module docstring).
  """
  ignore = tuple(ignore)

  def decorate(build):
    cache: collections.OrderedDict = collections.OrderedDict()

    @functools.wraps(build)
    def cached(config, *args, **kwargs):
      try:
        tree, built_from = (
            _split(config, ignore) if ignore else (loop.config_as_json(config), config)
        )
        key = (json.dumps(tree, sort_keys=True), args, tuple(sorted(kwargs.items())))
        hash(key)
      except (TypeError, ValueError):  # not JSON-serialisable, or not hashable
        return build(config, *args, **kwargs)
      if key in cache:
        cache.move_to_end(key)
        return cache[key]
      program = cache[key] = build(built_from, *args, **kwargs)
      while len(cache) > maxsize:
        cache.popitem(last=False)
      return program

    cached.cache_clear = cache.clear
    return cached

  return decorate(build) if build is not None else decorate


def make_init(config, init_state: Callable[..., Any], state_sharding) -> Callable[..., Any]:
  """`(*args) -> init_state(config, *args)`, jitted, the state placed by `state_sharding`."""
  return jax.jit(functools.partial(init_state, config), out_shardings=state_sharding)


# A trainer's initialiser, built once per config, function and sharding in a process. A trainer
# whose initialiser reads fewer fields builds its own: `by_config(make_init, ignore=...)`.
jit_init = by_config(make_init)
