"""The repository's shape: the library imports nothing above it, nothing imports in a circle,
no module grows past 500 lines, and the installed distribution is bigjax alone."""

import ast
import importlib
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("bigjax", "experiments", "configs", "benchmarks")


def _modules() -> dict[str, str]:
  """{dotted module name: path} of every .py file of the project's packages."""
  found = {}
  for top in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, top)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          dotted = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
          found[dotted[: -len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
  return found


def _imports(path: str, modules: dict[str, str]) -> set[str]:
  """The project modules a file imports, anywhere in it (also inside functions): `from a import
  b` counts as importing a.b when that is a module, else a."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module.split(".")[0] not in PACKAGES:
        continue
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        out.add(sub if sub in modules else node.module)
  return out


def test_the_library_imports_no_experiment_or_config():
  modules = _modules()
  upward = {
      name: sorted(
          i
          for i in _imports(path, modules)
          if i.split(".")[0] in ("experiments", "configs", "benchmarks")
      )
      for name, path in modules.items()
      if name.startswith("bigjax")
  }
  assert {k: v for k, v in upward.items() if v} == {}


def test_no_import_cycles():
  modules = _modules()
  graph = {name: _imports(path, modules) & set(modules) - {name} for name, path in modules.items()}
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt) :] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])
  assert cycles == []


def test_no_module_of_the_library_or_the_experiments_passes_500_lines():
  long = {}
  for top in ("bigjax", "experiments"):
    for root, _, files in os.walk(os.path.join(REPO, top)):
      for name in files:
        if name.endswith(".py"):
          with open(os.path.join(root, name)) as f:
            count = sum(1 for _ in f)
          if count > 500:
            long[os.path.relpath(os.path.join(root, name), REPO)] = count
  assert long == {}


# Modules split by job when they passed 500 lines, and the public names they had before: each
# still answers for all of them (re-exported from the modules the code moved to), so that
# `from bigjax.data.mnist import resize` keeps working.
SPLIT_MODULES = {
    "bigjax.data.mnist": (
        "BUNDLED_TRAIN_SIZE ENV_VAR SPLITS describe_split from_unit_range load resize "
        "to_unit_range"
    ),
    "bigjax.data.celeba": (
        "CACHE_SUBDIR IMAGE_EXTENSIONS MANUAL_DIR_VAR PARTITION_FILE SPLITS TFDS_DIR_VAR "
        "center_crop_resize load"
    ),
    "bigjax.mixtures.surfaces": (
        "DIVERGENCES KINDS MatchingTask grid_2d loss_surfaces matching_loss sgd_trajectories"
    ),
    "bigjax.models.vq": (
        "Codebook IMAGE_SIZE VQDecoder VQEncoder codebook_from_samples codebook_usage decode "
        "ema_update encode grid_size init_codebook quantize"
    ),
    "bigjax.models.xlnet": (
        "ACTIVATIONS XLNet XLNetFeedForward XLNetLMHead XLNetLayer XLNetModel "
        "XLNetRelativeAttention XLNetSequenceSummary check_inputs init_heads rel_shift "
        "relative_positional_encoding"
    ),
    "experiments.gmm25": (
        "GIVEN_SOURCES State TASK_KEYS gradient_masks init_params init_state init_states "
        "make_chunk_fn make_metrics make_optimizer make_outer_step map_seeds model_gmm run "
        "summary_table target train_and_evaluate validate_config"
    ),
}


def test_split_modules_keep_their_public_names():
  missing = {}
  for name, public in SPLIT_MODULES.items():
    module = importlib.import_module(name)
    lost = [n for n in public.split() if not hasattr(module, n)]
    if lost:
      missing[name] = lost
  assert missing == {}


def test_the_wheel_holds_bigjax_alone_with_its_data(tmp_path):
  """`pip install .` installs the package bigjax (its bundled digits included) and no top-level
  experiments/configs packages that would shadow another project's."""
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), src / name)
  shutil.copytree(
      os.path.join(REPO, "bigjax"), src / "bigjax", ignore=shutil.ignore_patterns("__pycache__")
  )
  for name in ("experiments", "configs"):  # present, as in a checkout
    shutil.copytree(
        os.path.join(REPO, name), src / name, ignore=shutil.ignore_patterns("__pycache__")
    )
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "pip",
          "wheel",
          "--no-deps",
          "--no-index",
          "--no-build-isolation",
          "-w",
          str(tmp_path / "dist"),
          str(src),
      ],
      capture_output=True,
      text=True,
  )
  if proc.returncode:
    pytest.fail(f"building the wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
  (wheel,) = (tmp_path / "dist").glob("bigjax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  tops = {n.split("/")[0] for n in names}
  assert len([t for t in tops if t.endswith(".dist-info")]) == 1
  assert {t for t in tops if not t.endswith(".dist-info")} == {"bigjax"}
  for path in (
      "bigjax/data/mnist_8k.npz",
      "bigjax/data/README.md",
      "bigjax/training/loop.py",
      "bigjax/mixtures/gmm.py",
      "bigjax/models/classifier.py",
      "bigjax/data/mnist_files.py",  # modules split out of longer ones
      "bigjax/data/celeba_prepare.py",
      "bigjax/mixtures/matching_task.py",
      "bigjax/models/xlnet_layers.py",
  ):
    assert path in names, path
