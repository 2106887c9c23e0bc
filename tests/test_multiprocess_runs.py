"""Multi-process training for real, the trainers other than the GAN (test_multiprocess.py): two
processes started by `python -m bigjax.launch` against the one-process run of the same global
batch, and a run directory process 0 refuses."""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import pytest

from bigjax.training import rundir
from bigjax.training import runs
from configs import finetune as finetune_config
from configs import mnist_classifier as classifier_config
from experiments import classifier_setup, finetune, finetune_runs, finetune_setup
from test_finetune_experiment import _write_rte, shared_pretrained
from test_multiprocess import (
    _assert_rows_close,
    _assert_same_training,
    _files,
    _gan_argv,
    _launch,
    _rows,
)

# Fine-tuning (App. E.2) from a tiny pretrained model.


@pytest.fixture(scope="module")
def ft_inputs(tmp_path_factory):
  """(the suite's tiny pretrained model, an RTE directory)."""
  _, summary = shared_pretrained(tmp_path_factory)
  return summary["model_dir"], _write_rte(tmp_path_factory.mktemp("mp_ft") / "RTE")


def _ft_argv(workdir, model_dir, task_dir):
  return [
      sys.executable,
      "-m",
      "experiments.finetune",
      "--config",
      "configs/finetune.py:smoke",
      f"--workdir={workdir}",
      "--config.task=rte",
      f"--config.model_dir={model_dir}",
      f"--config.data.task_dir={task_dir}",
  ]


def test_two_processes_fine_tune_as_one(ft_inputs, tmp_path):
  model_dir, task_dir = ft_inputs
  config = finetune_config.get_config("smoke")
  config.update(dict(task="rte", model_dir=model_dir))
  config.data.task_dir = task_dir
  one = str(tmp_path / "one")
  result_one = finetune.train(config, one, progress=False)
  two = str(tmp_path / "two")
  status, _, err = _launch(_ft_argv(two, model_dir, task_dir), tmp_path)
  assert status == 0, err[-3000:]
  result_two = json.load(open(f"{two}/result.json"))
  assert result_two["steps"] == result_one["steps"] == 4
  state = lambda d: runs.load(d, finetune_runs.kind(d)).state
  a, b = state(one), state(two)
  models = finetune_setup.build_models(
      finetune_setup.hf_config_of(config), finetune_setup.num_labels_of(config)
  )
  k_params, _ = jax.random.split(jax.random.key(config.seed))  # as experiments.finetune draws
  init = finetune_setup.init_params(config, models, k_params)
  _assert_same_training(b.params, a.params, init)
  _assert_rows_close(_rows(f"{two}/metrics.jsonl"), _rows(f"{one}/metrics.jsonl"))
  _assert_rows_close(_rows(f"{two}/dev.jsonl"), _rows(f"{one}/dev.jsonl"))
  assert _files(two) == _files(one)
  assert sum(n.startswith("events.out.tfevents") for n in os.listdir(two)) == 1


# ----------------------------------------------------------------------------------------------
# The MNIST classifier (the GAN's and the permutation model's judge).


def test_two_processes_train_the_classifier_of_one(smoke_classifier, tmp_path):
  one, summary_one = smoke_classifier
  two = str(tmp_path / "two")
  argv = [
      sys.executable,
      "-m",
      "experiments.mnist_classifier",
      "--config",
      "configs/mnist_classifier.py:smoke",
      f"--workdir={two}",
  ]
  status, _, err = _launch(argv, tmp_path)
  assert status == 0, err[-3000:]
  summary_two = json.load(open(os.path.join(two, classifier_setup.SUMMARY_FILE)))
  assert summary_two["steps"] == summary_one["steps"]
  np.testing.assert_allclose(summary_two["test_accuracy"], summary_one["test_accuracy"], atol=0.01)
  config = classifier_config.get_config("smoke")
  init = jax.jit(lambda key: classifier_setup.init_state(config, key))(jax.random.key(config.seed))
  state = lambda d: runs.load(d, classifier_setup.KIND).state
  _assert_same_training(state(two).params, state(one).params, init.params)
  assert _files(two) == _files(one)


# ----------------------------------------------------------------------------------------------
# Refusals.


def test_a_refused_workdir_stops_every_process(tmp_path):
  workdir = tmp_path / "taken"
  workdir.mkdir()
  (workdir / "notes.txt").write_text("not a run")
  status, _, err = _launch(_gan_argv(workdir), tmp_path)
  assert status != 0
  assert "is not empty and holds no run" in err  # process 0's error; the launcher stopped both
  assert sorted(os.listdir(workdir)) == ["notes.txt"]
  assert rundir.MARKER_FILE not in os.listdir(workdir)
