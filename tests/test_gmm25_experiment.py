"""Tests of experiments/gmm25.py and configs/gmm25.py (smoke variant: seconds on CPU)."""

import json
import os

import jax
import numpy as np
import pytest
import conftest
from PIL import Image

from configs import gmm25 as config_lib
from experiments import gmm25 as experiment


def _smoke(**overrides):
  c = config_lib.get_config("smoke")
  c.plots = False
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  return conftest.smoke_run(tmp_path_factory, config_lib, experiment, "gmm25")


def test_smoke_run_writes_every_file(smoke_run):
  config, workdir, summary = smoke_run
  conftest.assert_nonempty_files(
      workdir,
      ("metrics.npz", "summary.json", "summary.md", "snapshots.png", "trajectory.gif", "modes.png"),
  )
  with open(os.path.join(workdir, "summary.json")) as f:
    on_disk = json.load(f)
  for key in ("variant", "num_seeds", "num_outer_iterations", "modes_recovered", "seconds"):
    assert key in on_disk, key
  assert on_disk["variant"] == "smoke" and on_disk["num_seeds"] == config.num_seeds
  assert len(on_disk["modes_recovered"]) == config.num_seeds and on_disk["seconds"] > 0
  with Image.open(os.path.join(workdir, "trajectory.gif")) as im:
    assert im.n_frames >= 2
  with open(os.path.join(workdir, "summary.md")) as f:
    assert "| smoke | 2 | 40 |" in f.read()


def test_metrics_layout(smoke_run):
  config, workdir, summary = smoke_run
  m = np.load(os.path.join(workdir, "metrics.npz"))
  records = config.num_outer_iterations // config.record_every + 1
  np.testing.assert_array_equal(m["iterations"], np.arange(0, 41, 10))
  for key in (
      "modes_recovered_r0.5",
      "modes_recovered_r0.3",
      "mass_near_modes",
      "reverse_kl",
      "forward_kl",
      "loss",
  ):
    assert m[key].shape == (config.num_seeds, records), key
  assert m["means"].shape == (config.num_seeds, records, 25, 2)
  assert np.all(m["modes_recovered_r0.3"] <= m["modes_recovered_r0.5"])
  assert np.all((m["mass_near_modes"] >= -1e-4) & (m["mass_near_modes"] <= 1 + 1e-4))
  assert np.all(m["reverse_kl"] > 0) and np.all(np.isfinite(m["loss"][:, 1:]))
  np.testing.assert_array_equal(summary["modes_recovered"], m["modes_recovered_r0.5"][:, -1])
  # Init: every mean near (-5, -5), so no true mode (nearest at (-4, -4)) is recovered.
  assert np.all(m["modes_recovered_r0.5"][:, 0] == 0)


def test_scanned_loop_equals_python_loop():
  config = _smoke(
      num_seeds=1,
      num_outer_iterations=6,
      record_every=3,
      num_chunks=1,
      phases=[dict(start=0, probs=dict(marginal=0.5, joint=0.5))],
  )
  chunk_fn, _ = experiment.make_chunk_fn(config)
  state = experiment.init_states(config)
  single = jax.tree.map(lambda x: x[0], state)
  step = jax.jit(experiment.make_outer_step(config))
  losses = []
  for _ in range(6):
    single, loss = step(single)
    losses.append(float(loss))
  scanned, out = chunk_fn(state)
  for a, b in zip(jax.tree.leaves(scanned.params), jax.tree.leaves(single.params)):
    np.testing.assert_allclose(np.asarray(a)[0], b, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(out["loss"][0], [np.mean(losses[:3]), np.mean(losses[3:])], rtol=1e-4)
  assert int(scanned.iteration[0]) == 6


@pytest.fixture(scope="module")
def separate_second_seed():
  return experiment.run(_smoke(num_seeds=1, first_seed=1), progress=False)["metrics"]


@pytest.mark.parametrize("seeds_per_batch", [1, 2])
def test_mapped_seeds_equal_separate_runs(seeds_per_batch, smoke_run, separate_second_seed):
  # 1: the smoke run (2 seeds, sequential lax.map, only the drawn task's branch runs);
  # 2 with 3 seeds: one vmapped batch of 2 (switch -> select) plus a vmapped remainder of 1.
  config, workdir, _ = smoke_run
  assert config.seeds_per_batch == 1 and config.num_seeds == 2
  if seeds_per_batch == 1:
    together = dict(np.load(os.path.join(workdir, "metrics.npz")))
  else:
    together = experiment.run(_smoke(num_seeds=3, seeds_per_batch=2), progress=False)["metrics"]
  second = separate_second_seed
  for key in ("means", "scale_tril"):
    np.testing.assert_allclose(together[key][1, -1], second[key][0, -1], rtol=1e-3, atol=1e-3)
  assert not np.allclose(together["means"][0, -1], together["means"][1, -1])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(phases=[dict(start=0, probs=dict(marginal=0.7, joint=0.2))]), "sum to one"),
        (
            dict(
                phases=[
                    dict(start=0, probs=dict(marginal=1.0)),
                    dict(start=40, probs=dict(joint=1.0)),
                ]
            ),
            "past the end",
        ),
        (dict(phases=[dict(start=0, probs=dict(marginals=1.0))]), "unknown tasks"),
        (dict(tasks=[dict(name="joint", kind="posterior")]), "unknown kind"),
        (dict(record_every=7), "multiple of record_every"),
        (dict(grid=()), "grid must be non-empty"),
        (dict(seeds_per_batch=0), "seeds_per_batch must be a positive integer"),
        (
            dict(
                tasks=[
                    dict(name="joint", kind="joint", max_grad_norm=-1.0),
                    dict(name="marginal", kind="marginal"),
                ]
            ),
            "max_grad_norm",
        ),
    ],
)
def test_bad_config_fails_before_compiling(change, message, monkeypatch):
  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before checking the config")

  monkeypatch.setattr(experiment, "make_chunk_fn", no_compile)
  with pytest.raises(ValueError, match=message):
    experiment.run(_smoke(**change), progress=False)


def test_non_finite_loss_stops_with_seed_and_iteration():
  config = _smoke(learning_rate=1e30, num_chunks=1)
  with pytest.raises(FloatingPointError, match=r"seed \d+ at outer iteration \d+"):
    experiment.run(config, progress=False)


def test_every_variant_is_valid():
  for variant in config_lib.VARIANTS:
    experiment.validate_config(config_lib.get_config(variant))
  with pytest.raises(ValueError, match="unknown variant"):
    config_lib.get_config("nope")
