"""Smoke tests of experiments/loss_surfaces.py and configs/loss_surfaces.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import conftest
from PIL import Image

from bigjax.mixtures import surfaces
from bigjax.mixtures import two_gmm
from configs import loss_surfaces as config_lib
from experiments import loss_surfaces as experiment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PANEL_FIELDS = {
    "name",
    "kind",
    "target_dims",
    "given_dims",
    "given_values",
    "angle_deg",
    "noise_var",
    "sigma2",
}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  return conftest.smoke_run(tmp_path_factory, config_lib, experiment, "smoke")


def test_smoke_run_writes_every_file(smoke_run):
  _, workdir, facts = smoke_run
  conftest.assert_nonempty_files(
      workdir,
      (
          "surfaces.npz",
          "panels.json",
          "optima.json",
          "optima.md",
          "run.json",
          "surfaces.png",
          "trajectories.npz",
          "trajectories.json",
          "trajectories.png",
          "trajectories.gif",
      ),
  )
  assert facts["surface_seconds"] > 0
  with Image.open(os.path.join(workdir, "surfaces.png")) as im:
    assert im.size[0] > 500 and im.size[1] > 200
  with Image.open(os.path.join(workdir, "trajectories.gif")) as im:
    assert im.n_frames >= 2


def test_surfaces_npz_layout_and_values(smoke_run):
  config, workdir, _ = smoke_run
  data = np.load(os.path.join(workdir, "surfaces.npz"))
  axis = np.linspace(-2, 2, 17)
  np.testing.assert_allclose(data["mu1"], axis)
  np.testing.assert_allclose(data["mu2"], axis)
  names = [p["name"] for p in config.panels] + [a["name"] for a in config.averages]
  assert sorted(data.files) == sorted(["mu1", "mu2"] + names)
  for name in names:
    assert data[name].shape == (17, 17) and np.all(np.isfinite(data[name]))
  avg = config.averages[0]
  np.testing.assert_allclose(
      data[avg["name"]], np.mean([data[m] for m in avg["members"]], axis=0), rtol=1e-12
  )
  # surface[i, j] is the loss at (mu1[i], mu2[j]): compare with a direct evaluation.
  tasks = experiment.panel_tasks(config)
  target, model_fn = two_gmm.target(config.sigma2), two_gmm.model_fn(config.sigma2)
  for i, j in [(2, 13), (16, 5), (8, 8)]:
    for panel, task in zip(config.panels, tasks):
      direct = surfaces.matching_loss(model_fn(np.array([axis[i], axis[j]])), target, task)
      assert data[panel["name"]][i, j] == pytest.approx(float(direct), rel=1e-4, abs=1e-5)


def test_panels_json(smoke_run):
  config, workdir, _ = smoke_run
  with open(os.path.join(workdir, "panels.json")) as f:
    records = json.load(f)
  assert [r["name"] for r in records] == (
      [p["name"] for p in config.panels] + [a["name"] for a in config.averages]
  )
  for r in records:
    assert PANEL_FIELDS <= set(r)
    assert r["sigma2"] == config.sigma2
  by_name = {r["name"]: r for r in records}
  assert by_name["joint"]["kind"] == "joint" and by_name["joint"]["angle_deg"] == 30.0
  cond = by_name["cond_y1_given_y2_rot045"]
  assert (cond["kind"], cond["target_dims"], cond["given_dims"], cond["given_values"]) == (
      "conditional",
      [0],
      [1],
      [0.2],
  )
  assert by_name["joint_noise0.1"]["noise_var"] == 0.1
  assert by_name["average_marginals"]["kind"] == "average"
  assert by_name["average_marginals"]["members"] == ["marginal_y1_rot030", "marginal_y1_rot120"]


def test_global_minima_at_the_true_optima(smoke_run):
  _, workdir, _ = smoke_run
  with open(os.path.join(workdir, "optima.json")) as f:
    all_optima = json.load(f)
  for name, o in all_optima.items():
    positions = sorted(tuple(m["position"]) for m in o["global"])
    assert positions == [(-1.0, 1.0), (1.0, -1.0)], name
    assert all(abs(m["value"]) < 1e-6 for m in o["global"]), name
    assert len(o["local"]) >= len(o["global"])
  # The 30-degree joint matching has the paper's local optima near (1, 1) and (-1, -1).
  joint_local = [
      m["position"] for m in all_optima["joint"]["local"] if m not in all_optima["joint"]["global"]
  ]
  assert any(p[0] > 0.5 and p[1] > 0.5 for p in joint_local)


def test_trajectories_outputs(smoke_run):
  config, workdir, _ = smoke_run
  data = np.load(os.path.join(workdir, "trajectories.npz"))
  steps = config.trajectories.num_steps
  for mode, inner in config.trajectories.modes:
    assert data[f"{mode}_thetas"].shape == (len(config.trajectories.inits), steps + 1, 2)
    np.testing.assert_allclose(data[f"{mode}_thetas"][:, 0], config.trajectories.inits)
    task_index = data[f"{mode}_task_index"]
    assert task_index.shape == (steps,)
    # Bi-level: the task stays the same for `inner` consecutive steps.
    assert np.all(task_index.reshape(-1, inner) == task_index.reshape(-1, inner)[:, :1])
  with open(os.path.join(workdir, "trajectories.json")) as f:
    rows = json.load(f)
  assert len(rows) == len(config.trajectories.modes) * len(config.trajectories.inits)
  assert {"mode", "final_theta", "reached_global_optimum"} <= set(rows[0])


def test_all_variant_runs_each_figure_into_its_directory(tmp_path):
  config = config_lib.get_config("all")
  config.figures = ("fig7", "fig10")
  config.grid_num = 9
  config.plots = False
  experiment.train_and_evaluate(config, str(tmp_path))
  for fig in ("fig7", "fig10"):
    data = np.load(tmp_path / fig / "surfaces.npz")
    assert data["mu1"].shape == (9,)
    assert not (tmp_path / fig / "surfaces.png").exists()
  assert "average_noise" in np.load(tmp_path / "fig10" / "surfaces.npz").files


def _cli(*args):
  return subprocess.run(
      [sys.executable, "-m", "experiments.loss_surfaces", *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      env=conftest.subprocess_env(),
      timeout=300,
  )


def test_cli_monte_carlo_without_plots(tmp_path):
  result = _cli(
      "--config",
      "configs/loss_surfaces.py:smoke",
      "--workdir",
      str(tmp_path),
      "--config.plots=False",
      "--config.method=mc",
      "--config.num_samples=256",
      "--config.trajectories.enabled=False",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert not (tmp_path / "surfaces.png").exists()
  data = np.load(tmp_path / "surfaces.npz")
  with open(tmp_path / "run.json") as f:
    assert json.load(f)["config"]["method"] == "mc"
  # Monte Carlo surfaces are noisy but close to the exact ones at the global optimum.
  assert abs(data["joint"][4, 12]) < 0.05


def test_cli_rejects_unknown_config_key_and_has_help(tmp_path):
  bad = _cli(
      "--config",
      "configs/loss_surfaces.py:smoke",
      "--workdir",
      str(tmp_path),
      "--config.no_such_field=1",
  )
  assert bad.returncode != 0
  assert "no_such_field" in bad.stderr
  assert not (tmp_path / "surfaces.npz").exists()
  help_ = _cli("--help")  # absl prints the usage and exits with status 1
  assert "--workdir" in help_.stdout and "--config" in help_.stdout
  assert "surfaces.npz" in help_.stdout  # the module docstring explains the outputs


def test_paper_family_config_matches_the_reference():
  config = config_lib.get_config("paper_family")
  kinds = [p["kind"] for p in config.panels]
  assert kinds.count("joint") == 1 and kinds.count("marginal") == 12
  assert kinds.count("conditional") == 49
  assert [p["angle_deg"] for p in config.panels if p["kind"] == "marginal"] == list(
      np.arange(0, 180, 15.0)
  )
  assert [a["name"] for a in config.averages] == ["average_marginals", "average_conditionals"]
  assert len(config.averages[1]["members"]) == 49
  sigma = np.sqrt(config.sigma2)
  values0 = [
      p["given_values"][0]
      for p in config.panels
      if p["kind"] == "conditional" and p["angle_deg"] == 0.0
  ]
  # At 0 degrees v_max is the second coordinate 3 sigma of the corner points.
  np.testing.assert_allclose(values0, np.linspace(-3 * sigma, 3 * sigma, 7), atol=1e-12)
  a = np.deg2rad(90.0)
  values90 = [
      p["given_values"][0]
      for p in config.panels
      if p["kind"] == "conditional" and p["angle_deg"] == 90.0
  ]
  assert max(values90) == pytest.approx(np.sin(a) * (1 + 3 * sigma) + abs(np.cos(a)) * 3 * sigma)


def test_bad_configs_raise(tmp_path):
  with pytest.raises(ValueError, match="unknown variant"):
    config_lib.get_config("fig99")
  config = config_lib.get_config("smoke")
  config.plots = False
  config.trajectories.enabled = False
  config.panels = [dict(config.panels[0], kind="sideways")]
  config.averages = []
  with pytest.raises(ValueError, match="sideways"):
    experiment.train_and_evaluate(config, str(tmp_path))
  config = config_lib.get_config("smoke")
  config.averages = [dict(name="avg", members=("missing_panel",))]
  with pytest.raises(ValueError, match="missing_panel"):
    experiment.train_and_evaluate(config, str(tmp_path))
  config = config_lib.get_config("smoke")
  config.panels = [dict(config.panels[3], given_dims=(0,))]
  config.averages = []
  with pytest.raises(ValueError, match="overlap"):
    experiment.train_and_evaluate(config, str(tmp_path))
