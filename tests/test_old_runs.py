"""Runs written by the code before bigjax.training existed still load and resume.

tests/fixtures/old_runs holds one interrupted smoke run per trainer, written by commit effa9c4
(tests/fixtures/make_old_runs.py): the run cut back to its first checkpoint, with the metrics
and summary the uninterrupted run reached (reference.json). Each test loads the old checkpoint
with today's loaders, resumes the run with today's trainer and checks that it ends where the
uninterrupted old run ended.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from bigjax.training import runs
from bigjax.training import writer as writer_lib
from experiments import classifier_setup
from experiments import gan_setup
from experiments import mnist_classifier
from experiments import plm_run
from experiments import plm_setup
from experiments import plm_train
from experiments import vq_mnist
from experiments import vq_setup
from experiments import biglearn_gan

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "old_runs")
TIMING = ("seconds", "images_per_sec", "steps_per_sec")


def _copy(name, tmp_path, kind):
  """A copy of the old run, its config.json as today's code reads it (the kind's `migrate`:
  the config a resumed run trains with), and the uninterrupted run's reference."""
  workdir = str(tmp_path / name)
  shutil.copytree(os.path.join(FIXTURES, name), workdir)
  with open(os.path.join(workdir, "reference.json")) as f:
    reference = json.load(f)
  return workdir, runs.read_config(workdir, kind), reference


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _assert_rows_close(got, expected):
  assert [r["step"] for r in got] == [r["step"] for r in expected]
  for g, e in zip(got, expected):
    assert set(g) == set(e), (sorted(g), sorted(e))
    for key in e:
      np.testing.assert_allclose(g[key], e[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_an_old_classifier_resumes_and_loads(tmp_path):
  workdir, config, reference = _copy("classifier", tmp_path, classifier_setup.KIND)
  summary = mnist_classifier.train(config, workdir, progress=False)
  assert summary["resumed_from"] == 100 and summary["steps"] == 150
  _assert_rows_close(_rows(workdir), reference["metrics"])
  assert summary["test_accuracy"] == pytest.approx(reference["summary"]["test_accuracy"], abs=2e-3)
  _, _, info = classifier_setup.load(workdir, image_size=28, source_patch=0)
  assert info["steps"] == 150


def test_an_old_quantiser_resumes_and_loads(tmp_path):
  workdir, config, reference = _copy("vq", tmp_path, vq_setup.KIND)
  summary = vq_mnist.train(config, workdir, progress=False)
  assert summary["resumed_from"] == 30 and summary["steps"] == 60
  _assert_rows_close(_rows(workdir), reference["metrics"])
  for key in ("test_mse", "train_mse", "test_perplexity"):
    assert summary[key] == pytest.approx(reference["summary"][key], rel=1e-4), key
  *_, info = vq_setup.load(workdir)
  assert info["steps"] == 60


def test_an_old_gan_run_loads_and_resumes(tmp_path):
  workdir, config, reference = _copy("gan", tmp_path, gan_setup.KIND)
  old_config, params, step = gan_setup.load_run(workdir)
  assert step == 2 and old_config.model.noise_merge == "add" and jax.tree.leaves(params)
  summary = biglearn_gan.train_and_evaluate(config, workdir, progress=False)
  assert summary["resumed_from"] == 2 and summary["step"] == 4
  _assert_rows_close(_rows(workdir), reference["metrics"])
  # The resumed run logs to TensorBoard too, from the restored step on.
  events = writer_lib.read_events(workdir)
  assert [s for s, _ in events["metrics/d_loss"]] == [3, 4]
  assert [s for s, _ in events["samples/joint"]] == [4]


def test_an_old_permutation_run_loads_and_resumes(tmp_path):
  workdir, config, reference = _copy("plm", tmp_path, plm_setup.kind())
  run = plm_run.load_run(workdir)  # its quantiser and model, at step 3
  assert run.layout.num_codes == 16
  labels, _ = plm_run.classify(run, np.zeros((2, 28, 28), np.uint8))
  assert labels.shape == (2,)
  summary = plm_train.train_and_evaluate(config, workdir, progress=False)
  assert summary["resumed_from"] == 3 and summary["step"] == 6
  _assert_rows_close(_rows(workdir), reference["metrics"])
  for key in ("test_accuracy", "test_accuracy_1_orders", "judge_test_accuracy"):
    assert summary["eval"][key] == pytest.approx(reference["eval"][key], abs=1e-6), key


def test_tools_say_what_a_run_of_another_kind_is(tmp_path):
  """gan_complete/gan_figures pointed at a permutation-model or VQ run used to fail with
  AttributeError: 'image_size', and gan_eval --classifier_dir=<a VQ run> advised training a
  classifier into the VQ folder."""
  with pytest.raises(
      runs.WrongRunError,
      match=r"holds no BigLearn-GAN run: it looks like a "
      r"permutation-model run \(experiments.plm_mnist\)",
  ):
    gan_setup.load_run(os.path.join(FIXTURES, "plm"))
  with pytest.raises(
      runs.WrongRunError,
      match="holds no BigLearn-GAN run: it looks like an " "MNIST vector quantiser",
  ):
    gan_setup.load_run(os.path.join(FIXTURES, "plm", "vq"))
  with pytest.raises(
      runs.WrongRunError,
      match="holds no MNIST classifier: it looks like an MNIST "
      "vector quantiser.*train one with `python -m experiments.mnist_classifier",
  ):
    classifier_setup.load(os.path.join(FIXTURES, "plm", "vq"), image_size=28)


def test_a_permutation_run_refuses_to_resume_with_another_quantiser_config(tmp_path):
  """Resuming with a changed vq.* used to keep the old quantiser and rewrite config.json to
  describe the new, unused one."""
  workdir, config, _ = _copy("plm", tmp_path, plm_setup.kind())
  before = open(os.path.join(workdir, "config.json")).read()
  config.vq.learning_rate = 1e-4
  with pytest.raises(
      ValueError,
      match=r"trained with another vq config \(vq.learning_rate: " r"0.003 there, 0.0001 now\)",
  ):
    plm_train.train_and_evaluate(config, workdir, progress=False)
  assert open(os.path.join(workdir, "config.json")).read() == before
