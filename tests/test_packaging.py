"""The project's metadata has one source: pyproject.toml. setup.py is setuptools' shim, and
requirements.txt pins, exactly, every dependency pyproject.toml names (with its extras)."""

import ast
import os
import re

import pytest

try:
  import tomllib
except ImportError:  # Python 3.10
  tomllib = pytest.importorskip("tomli")

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def _declared() -> list[Requirement]:
  """Every requirement of the project and its extras, the project's own extras expanded."""
  project = _pyproject()["project"]
  reqs = [Requirement(r) for r in project["dependencies"]]
  for extra in project["optional-dependencies"].values():
    reqs += [Requirement(r) for r in extra]
  return [r for r in reqs if canonicalize_name(r.name) != canonicalize_name(project["name"])]


def _pins(text: str) -> dict[str, Version]:
  """{canonical name: pinned version} of a requirements file; refuses any line that is not an
  exact pin (a range would not reproduce an environment)."""
  pins = {}
  for number, line in enumerate(text.splitlines(), 1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
    assert match, f"requirements.txt line {number} is not an exact pin NAME==VERSION: {line!r}"
    name = canonicalize_name(match.group(1))
    assert name not in pins, f"requirements.txt pins {name} twice (line {number})"
    pins[name] = Version(match.group(2))
  return pins


def _requirements() -> dict[str, Version]:
  with open(os.path.join(REPO, "requirements.txt")) as f:
    return _pins(f.read())


def _missing(pins: dict[str, Version]) -> list[str]:
  return sorted(r.name for r in _declared() if canonicalize_name(r.name) not in pins)


def test_requirements_pin_every_dependency_of_pyproject_within_its_range():
  pins = _requirements()
  missing = _missing(pins)
  assert missing == [], f"pyproject.toml needs {missing}; pin them in requirements.txt"
  outside = {
      r.name: str(pins[canonicalize_name(r.name)])
      for r in _declared()
      if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
  }
  assert outside == {}, f"requirements.txt pins versions pyproject.toml excludes: {outside}"


def test_pins_parser_refuses_ranges_and_doubles():
  assert _pins("# c\njax==0.10.2  # why\n\nFlax==0.12.8\n") == {
      "jax": Version("0.10.2"),
      "flax": Version("0.12.8"),
  }
  with pytest.raises(AssertionError, match="line 2 is not an exact pin"):
    _pins("jax==0.10.2\nflax>=0.10\n")
  with pytest.raises(AssertionError, match="pins jax twice"):
    _pins("jax==0.10.2\nJAX==0.10.2\n")


def test_a_missing_dependency_is_named():
  """The check above can fail: drop a pin and it names the package."""
  pins = _requirements()
  pins.pop("optax")
  assert _missing(pins) == ["optax"]


def test_setup_py_is_the_documented_shim():
  """setup.py holds no metadata of its own: a bare setup() call, everything else from
  pyproject.toml."""
  with open(os.path.join(REPO, "setup.py")) as f:
    tree = ast.parse(f.read())
  calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
  assert [ast.unparse(c) for c in calls] == ["setup()"]
