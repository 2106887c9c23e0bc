"""Shared test helpers: float64 for the numerical checks, and cheap PRNG keys."""

import jax
from jax.experimental.compilation_cache import compilation_cache
import pytest

_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")


@pytest.fixture
def x64():
  """Runs a test in float64 (the library follows its inputs' precision)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A persistent XLA compilation cache, on for one test module (the options are restored
  afterwards); returns its path. One directory per session, so modules that compile the same
  smoke programs (the GAN and classifier steps) compile them once. Modules use it with
  `pytestmark = pytest.mark.usefixtures("compile_cache")`."""
  path = str(tmp_path_factory.getbasetemp() / "jax_compilation_cache")
  old = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  compilation_cache.reset_cache()
  yield path
  for name, value in old.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


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
