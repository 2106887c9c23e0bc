"""Shared test helpers and the suite's JAX settings.

Compilation dominates the suite's time, so every test runs with

- a persistent XLA compilation cache that outlives the session: `~/.cache/bigjax-tests/jax_cache`
  ($XDG_CACHE_HOME is honoured), or the directory in $BIGJAX_TEST_JAX_CACHE (an empty value turns
  the cache off). The key of an entry holds the program, the compile options and the jax/jaxlib
  version, so a hit returns the executable a compile would have built: results do not change. A
  size limit turns on the cache's file lock, which the xdist workers and the subprocesses share.
- `jax_disable_most_optimizations` (XLA's optimisation level 0), as flax's examples' tests do: the
  smoke programs compile in about half the time. A test whose numbers depend on optimised code (a
  recorded digest, a tolerance that only the fused program meets) opts out with
  `@pytest.mark.optimized` (or `pytestmark = pytest.mark.optimized` for a module).

The collector of cyclic garbage runs with a first-generation threshold of 10,000 instead of
700: tracing leaves many short-lived objects, and with the default the collector's full passes
over a heap of about a million objects (imports, jit caches) ran 17 times in 71 s of
test_plm_mnist, test_gan_eval and test_xlnet (3.5 s); with 10,000 they ran twice (0.6 s), with
the same peak memory. The same garbage is collected, in fewer passes.

Python caches the bytecode of the repository's modules (and pytest its rewritten test modules)
even where $PYTHONDONTWRITEBYTECODE is set, as in this project's sandbox: otherwise every worker and
every one of the about 40 subprocesses compiled them from source again (collection took 7.5 s of
CPU without the cache, 6.2 s with it; importing three experiments 2.2-2.5 s against 2.0-2.1 s).

These settings also reach the `python -m ...` subprocesses that tests start, through the
environment variables set here: jax reads JAX_<OPTION NAME> when it is imported, and
`subprocess_env` puts `tests/subprocess_site` on their PYTHONPATH, whose sitecustomize sets the
collector's threshold from $BIGJAX_TEST_GC_THRESHOLD. jax writes cache entries from process 0
only, and an entry's key holds its process's devices, so the processes of a multi-process test
after the first would compile every run: the same sitecustomize lets each process write its own
entries (the suite's cache is local and locked). The size limit that gives the cache its lock
also makes jax scan every entry before each write, a time quadratic in the entries of a run that
fills an empty cache: here and in the subprocesses, a write under the limit skips that scan
(tests/subprocess_site/suite_jax_cache.py says how, and what it measured).
"""

import atexit
import contextlib
import fcntl
import gc
import json
import os
import shutil
import sys

import jax
from jax._src import lru_cache
from jax.experimental.compilation_cache import compilation_cache
import pytest

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "subprocess_site"))
import suite_jax_cache  # tests/subprocess_site/, which the subprocesses import too

_CACHE_MAX_BYTES = 4 << 30


def _jax_cache_dir() -> str | None:
  path = os.environ.get("BIGJAX_TEST_JAX_CACHE")
  if path is None:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(root, "bigjax-tests", "jax_cache")
  return path or None


def drop_unfinished_cache_entries(path: str) -> list[str]:
  """Deletes the entries of the persistent compilation cache at `path` that have no access-time
  file; returns their names.

  jax writes an entry's `-cache` file, then its `-atime` file. A process killed between the two
  (the kill -9 tests kill processes that write this cache), or in the middle of the first, leaves
  a `-cache` file alone, and from then on every write that runs jax's eviction scan fails (in
  jax alone every write; with the suite's wrapper, suite_jax_cache, every write that takes the
  cache over its size limit): the scan reads the access time of every entry to choose what to
  evict, and that read raises FileNotFoundError ("Error writing persistent compilation cache
  entry"), so new programs are compiled again in every run. Runs under jax's own lock of the directory, so no write in
  progress is taken for an unfinished one."""
  import filelock  # pylint: disable=import-outside-toplevel

  if not os.path.isdir(path):
    return []
  dropped = []
  with filelock.FileLock(os.path.join(path, ".lockfile"), timeout=60):
    names = set(os.listdir(path))
    for name in sorted(names):
      key = name.removesuffix("-cache")
      if key != name and f"{key}-atime" not in names:
        with contextlib.suppress(FileNotFoundError):
          os.remove(os.path.join(path, name))
        dropped.append(name)
  return dropped


JAX_CACHE_DIR = _jax_cache_dir()
if JAX_CACHE_DIR:
  drop_unfinished_cache_entries(JAX_CACHE_DIR)
GC_THRESHOLD = (10_000, 10, 10)  # gc.set_threshold's three numbers (see the module docstring)
_SUITE_ENV = {
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
    "BIGJAX_TEST_GC_THRESHOLD": ",".join(map(str, GC_THRESHOLD)),
}
if JAX_CACHE_DIR:
  _SUITE_ENV.update(
      JAX_COMPILATION_CACHE_DIR=JAX_CACHE_DIR,
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
      JAX_COMPILATION_CACHE_MAX_SIZE=str(_CACHE_MAX_BYTES),
  )
# In os.environ, so that subprocesses inherit them; in jax.config, for this process (jax may have
# been imported before this file by a plugin).
os.environ.update(_SUITE_ENV)
gc.set_threshold(*GC_THRESHOLD)
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
jax.config.update("jax_disable_most_optimizations", True)
if JAX_CACHE_DIR:
  jax.config.update("jax_compilation_cache_dir", JAX_CACHE_DIR)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  jax.config.update("jax_compilation_cache_max_size", _CACHE_MAX_BYTES)
  compilation_cache.reset_cache()
  suite_jax_cache.skip_needless_eviction_scans(lru_cache)


# The longest test files, longest first (measured with `--durations=0`, summed per file). Under
# `-n 2 --dist loadfile` xdist hands out whole files in collection order, so these start first and
# the short files fill in around them: otherwise one long file collected last keeps one worker
# busy while the other idles. The two multi-process files are apart, so that their processes do
# not all compete for the two cores at once. The rest keep their (alphabetical) order on purpose:
# neighbours share small programs (test_divergences, test_gmm, test_linalg, test_losses...), and
# a worker that runs them one after the other loads each once. In one run with every file sorted
# by length, the files that ordering moved apart took 18 s more CPU (test_gmm alone 6.8 -> 11.0).
LONGEST_FILES = (
    "test_multiprocess.py",
    "test_plm_mnist.py",
    "test_gpu_suite.py",
    "test_multiprocess_runs.py",
    "test_checkpoint_faults.py",
    "test_biglearn_gan_experiment.py",
    "test_xlnet.py",
    "test_readme.py",
    "test_gan_eval.py",
    "test_old_runs.py",
)


def pytest_collection_modifyitems(items):
  """Runs LONGEST_FILES first (in that order), then the rest in collection order; the tests of
  a file keep their order."""
  rank = {name: i for i, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


_optimized = {"on": False}  # whether XLA's optimisations are on now (see `optimized`)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
  """Turns XLA's optimisations on for tests marked `optimized` and off for the others, before any
  of the test's fixtures run (module-scoped ones included: mark the whole module when they
  train). Jitted functions keep their executables in memory whatever the flag, so the in-memory
  caches are cleared at each switch: an `optimized` test never runs a program compiled without
  optimisations, nor the reverse."""
  on = item.get_closest_marker("optimized") is not None
  if on == _optimized["on"]:
    return
  jax.clear_caches()
  jax.config.update("jax_disable_most_optimizations", not on)
  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "0" if on else "1"
  _optimized["on"] = on


def _end_worker_now() -> None:
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(0)


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
  """In a pytest-xdist worker, whose results the controller already has: ends the process
  without tearing it down. The controller waits for its workers to exit, and a worker's teardown
  took about 8 s of the suite's wall time (measured: 2.3 s in pytest's last collection of
  garbage, whose warnings no longer reach the controller, then 5.7 s in jax's atexit clean-up of
  thousands of executables and the interpreter's own). The worker's heap is frozen, so that
  collection has nothing to do, and an exit handler registered now (so run first) ends the
  process once pytest is done. A run without xdist ends as usual."""
  del config
  if os.environ.get("PYTEST_XDIST_WORKER"):
    gc.freeze()
    atexit.register(_end_worker_now)


@pytest.fixture
def x64():
  """Runs a test in float64 (the library follows its inputs' precision)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope="session")
def compile_cache():
  """The suite's persistent compilation cache directory (on for every test; see the module
  docstring), or None when $BIGJAX_TEST_JAX_CACHE is empty. For the environment of a subprocess,
  use `subprocess_env()`."""
  return JAX_CACHE_DIR


def subprocess_env(**extra) -> dict:
  """os.environ for a `python -m ...` subprocess: the suite's JAX settings (already in os.environ),
  the repository on PYTHONPATH, JAX on CPU, plus `extra`."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  # subprocess_site/sitecustomize.py sets the collector's threshold and lets every process of a
  # multi-process run write the cache.
  site = os.path.join(repo, "tests", "subprocess_site")
  pythonpath = os.pathsep.join(p for p in (site, repo, os.environ.get("PYTHONPATH")) if p)
  return dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu", **extra)


@contextlib.contextmanager
def _file_lock(path: str):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def shared_dir(tmp_path_factory, name: str, build) -> str:
  """A directory built once per test run and shared by the xdist workers (pytest-xdist's pattern
  for session fixtures): `build(path)` fills `path` in the first worker to ask, under a file lock;
  the others wait for it and reuse it. Without xdist the directory lives in the session's base
  temporary directory. `path + ".done"` marks a finished build (in place: runs record their
  paths); after a `build` that failed, the next caller starts again from an empty directory.

  Tests must only read the directory: copy it (`copy_run`) to change it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the directory the workers' base temporary directories share
  path = str(root / f"shared_{name}")
  with _file_lock(path + ".lock"):
    if not os.path.exists(path + ".done"):
      shutil.rmtree(path, ignore_errors=True)
      os.makedirs(path)
      build(path)
      open(path + ".done", "w").close()
  return path


def copy_run(src: str, dst) -> str:
  """A copy of the run directory `src` at `dst` (which must not exist), for a test that changes
  it; returns `dst` as a string."""
  shutil.copytree(src, str(dst))
  return str(dst)


def _shared_classifier(tmp_path_factory, name: str, config) -> tuple[str, dict]:
  """(workdir, summary) of one `experiments.mnist_classifier` run of `config`, trained once per
  test run in `shared_dir(name)` and shared by the modules (and xdist workers) that load it."""
  from experiments import classifier_setup
  from experiments import mnist_classifier

  workdir = shared_dir(
      tmp_path_factory,
      name,
      lambda path: mnist_classifier.train(config, path, progress=False),
  )
  with open(os.path.join(workdir, classifier_setup.SUMMARY_FILE)) as f:
    return workdir, json.load(f)


@pytest.fixture(scope="session")
def smoke_classifier(tmp_path_factory):
  """(workdir, summary) of the smoke config's classifier (configs/mnist_classifier.py:smoke),
  trained once per test run. Read it only: `copy_run` it to resume, retrain or corrupt it."""
  from configs import mnist_classifier as config_lib

  return _shared_classifier(tmp_path_factory, "smoke_classifier", config_lib.get_config("smoke"))


def smoke_partial_config():
  """configs/mnist_classifier.py:smoke reading partial digits of 7x7 patches (the smoke GAN's
  patch size)."""
  from configs import mnist_classifier as config_lib

  config = config_lib.get_config("smoke")
  config.data.source_patch = 7
  return config


@pytest.fixture(scope="session")
def smoke_partial_classifier(tmp_path_factory):
  """(workdir, summary) of `smoke_partial_config()`'s classifier, trained once per test run.
  Read it only."""
  return _shared_classifier(tmp_path_factory, "smoke_partial_classifier", smoke_partial_config())


def rbg_key(seed):
  """A PRNG key. The library is agnostic to the key's implementation; "rbg" programs compile
  about ten times faster than threefry ones on a small CPU, which keeps the suite fast."""
  return jax.random.key(seed, impl="rbg")


def numpy_conditional(weights, means, covs, given, values, target=None):
  """Exact p(x_target | x_given = values) of one mixture, by Schur complements in numpy.

  An independent reference for `bigjax.mixtures.gmm.conditional` (explicit inverses are fine here).
  `target` defaults to every dimension not given. Returns (weights [K], means [K, T],
  covariances [K, T, T]).
  """
  import numpy as np
  import scipy.special
  import scipy.stats

  given = list(given)
  target = list(target) if target else [i for i in range(means.shape[-1]) if i not in given]
  values = np.asarray(values, float)
  log_w, cmeans, ccovs = [], [], []
  for w, m, c in zip(weights, means, covs):
    s_gg = c[np.ix_(given, given)]
    s_gg_inv = np.linalg.inv(s_gg)
    s_tg = c[np.ix_(target, given)]
    cmeans.append(m[target] + s_tg @ s_gg_inv @ (values - m[given]))
    ccovs.append(c[np.ix_(target, target)] - s_tg @ s_gg_inv @ s_tg.T)
    log_w.append(np.log(w) + scipy.stats.multivariate_normal(m[given], s_gg).logpdf(values))
  log_w = np.asarray(log_w)
  return np.exp(log_w - scipy.special.logsumexp(log_w)), np.asarray(cmeans), np.asarray(ccovs)


def smoke_run(tmp_path_factory, config_module, experiment, name: str):
  """(config, workdir, summary) of `experiment.train_and_evaluate` on the config module's
  `smoke` variant, in a fresh directory."""
  workdir = str(tmp_path_factory.mktemp(name))
  config = config_module.get_config("smoke")
  return config, workdir, experiment.train_and_evaluate(config, workdir)


def assert_nonempty_files(workdir: str, names) -> None:
  import os

  for name in names:
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name


def rerun_finished(train, config, workdir: str):
  """Trains a finished run again: returns the summary, after checking that no step was taken
  (metrics.jsonl unchanged)."""
  import os

  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    rows = f.read()
  summary = train(config, workdir, progress=False)
  with open(path) as f:
    assert f.read() == rows  # no step was taken
  return summary
