r"""Where the test suite's time goes, test by test: a pytest plugin, then a summary.

  BIGJAX_SUITE_PROFILE=/tmp/prof python -m pytest -q -n 2 --dist loadfile -p benchmarks.suite_profile
  python -m benchmarks.suite_profile /tmp/prof

For each test (setup, call and teardown together) the plugin records its wall seconds, the CPU
seconds of its process and of the subprocesses it waited for (`resource.getrusage`), and every
executable the process looked up in JAX's persistent compilation cache (the tests' cache is on
for every program: tests/conftest.py). A lookup of a key the same process looked up before is a
*repeat*: the program was traced, lowered and loaded again because it came from a new Python
function. Each worker writes DIR/<worker>.json at its end; the summary prints the CPU per file,
the tests that wait (wall well above CPU), and the repeated programs by the innermost line of
this repository that asked for them.

The lookups are counted by wrapping `jax._src.compilation_cache.get_executable_and_time`, a
private function of jax (0.10): if a jax release renames it, the plugin says so and counts no
lookups. Nothing here is imported by the library or the tests.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import resource
import sys
import time
import traceback

import pytest

_THIS = os.path.abspath(__file__)
_REPO = os.path.dirname(os.path.dirname(_THIS)) + os.sep
_tests: list[dict] = []
_lookups: dict[str, list[list]] = collections.defaultdict(list)
_current = {"test": None}


def _cpu() -> tuple[float, float]:
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _innermost_repo_line() -> str:
  for frame in reversed(traceback.extract_stack()[:-2]):
    name = frame.filename
    if name.startswith(_REPO) and name != _THIS and "site-packages" not in name:
      return f"{frame.filename[len(_REPO):]}:{frame.lineno}"
  return "?"


def pytest_configure(config):
  if not os.environ.get("BIGJAX_SUITE_PROFILE"):
    raise pytest.UsageError("set BIGJAX_SUITE_PROFILE to the directory the profile goes to.")
  from jax._src import compilation_cache  # pylint: disable=import-outside-toplevel
  from jax._src import compiler  # pylint: disable=import-outside-toplevel

  lookup = getattr(compilation_cache, "get_executable_and_time", None)
  if lookup is None:
    print("suite_profile: this jax has no get_executable_and_time; no lookups counted.")
    return

  def counted(key, *args, **kwargs):
    _lookups[key].append([_current["test"], _innermost_repo_line()])
    return lookup(key, *args, **kwargs)

  compilation_cache.get_executable_and_time = counted
  if getattr(compiler, "compilation_cache", None) is compilation_cache:
    compiler.compilation_cache.get_executable_and_time = counted


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
  _current["test"] = item.nodeid
  wall, (own, children) = time.perf_counter(), _cpu()
  yield
  own_after, children_after = _cpu()
  _tests.append(
      dict(
          test=item.nodeid,
          wall=time.perf_counter() - wall,
          cpu=own_after - own,
          children_cpu=children_after - children,
      )
  )
  _current["test"] = None


def pytest_sessionfinish(session):
  out = os.environ["BIGJAX_SUITE_PROFILE"]
  os.makedirs(out, exist_ok=True)
  worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
  with open(os.path.join(out, f"{worker}.json"), "w") as f:
    json.dump(dict(tests=_tests, lookups=_lookups), f)


def summarize(directory: str, top: int = 25) -> None:
  files = sorted(glob.glob(os.path.join(directory, "*.json")))
  if not files:
    sys.exit(f"no profile in {directory}: run the suite with -p benchmarks.suite_profile first.")
  tests, lookups, repeats = [], 0, collections.Counter()
  for path in files:
    profile = json.load(open(path))
    tests += profile["tests"]
    for key, uses in profile["lookups"].items():
      lookups += len(uses)
      for _test, line in uses[1:]:
        repeats[f"{line} {key.rsplit('-', 1)[0]}"] += 1
  per_file = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
  for t in tests:
    row = per_file[t["test"].split("::")[0]]
    row[0] += t["wall"]
    row[1] += t["cpu"]
    row[2] += t["children_cpu"]
  own, children = sum(v[1] for v in per_file.values()), sum(v[2] for v in per_file.values())
  print(f"{len(tests)} tests: {own:.1f} s CPU in pytest's processes, {children:.1f} s in the")
  print(f"subprocesses they waited for; {lookups} executable lookups, {sum(repeats.values())}")
  print("of them repeats in the same process.\n\n   wall  own CPU  subprocesses  file")
  for name, (wall, cpu, sub) in sorted(per_file.items(), key=lambda kv: -kv[1][0])[:top]:
    print(f"{wall:7.1f} {cpu:8.1f} {sub:13.1f}  {name}")
  print("\ntests that wait (wall - CPU - subprocess CPU, seconds):")
  idle = sorted(tests, key=lambda t: -(t["wall"] - t["cpu"] - t["children_cpu"]))[:10]
  for t in idle:
    print(f"{t['wall'] - t['cpu'] - t['children_cpu']:7.1f}  {t['test']}")
  print("\nrepeated programs (innermost repository line, program name):")
  for where, n in repeats.most_common(top):
    print(f"{n:5d}  {where}")


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit(f"usage: python -m benchmarks.suite_profile DIR\n\n{__doc__}")
  summarize(sys.argv[1])
