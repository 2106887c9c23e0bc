"""Smoke runs of experiments/plm_mnist.py: training (quantiser first), resume, every capability
(classify, generate, complete, figure, evaluate), the cross-entropy baseline, and bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import plm_samplers
from bigjax.data import mnist
from bigjax import multimodal
from configs import plm_mnist as plm_config
from conftest import subprocess_env
from experiments import plm_mnist, plm_run, plm_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("plm") / "run")
  summary = plm_train.train_and_evaluate(plm_config.get_config("smoke"), workdir, progress=False)
  return workdir, summary


@pytest.fixture(scope="module")
def digits():
  images, labels = mnist.load("bundled", split="test")
  return images[:5], labels[:5].astype(np.int32)


def test_training_writes_everything(smoke_run):
  workdir, summary = smoke_run
  for name in (
      "config.json",
      "metrics.jsonl",
      "run.json",
      "eval.json",
      "fig17.png",
      "vq/vq.json",
      "classifier/classifier.json",
  ):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert summary["step"] == 6 and summary["compilations"] == 1
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [2, 3, 4, 6]
  assert "test_accuracy" in rows[1] and 0.0 <= rows[1]["test_accuracy"] <= 1.0
  for key in ("loss", "image_nll", "label_nll", "label_accuracy", "grad_norm"):
    assert np.isfinite(rows[-1][key])
  result = summary["eval"]
  assert set(result["label_agreement_per_label"]) == {str(i) for i in range(10)}
  assert 0.0 <= result["label_agreement"] <= 1.0
  assert result["guidance"] == 3.0 and result["temperature"] == 0.7
  assert 0.0 <= result["label_agreement_guided"] <= 1.0
  assert sum(result["joint_label_counts"]) == 10 * result["samples_per_label"]


def test_resume_continues_exactly(smoke_run, tmp_path):
  """Drop the last checkpoint of a finished run: rerunning resumes from step 3 and ends with
  the parameters of the uninterrupted run, bit for bit."""
  workdir, _ = smoke_run
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  full = plm_run.load_run(copy).params
  shutil.rmtree(os.path.join(copy, "checkpoints", "6"))
  summary = plm_train.train_and_evaluate(plm_config.get_config("smoke"), copy, progress=False)
  assert summary["resumed_from"] == 3 and summary["step"] == 6
  jax.tree.map(np.testing.assert_array_equal, full, plm_run.load_run(copy).params)
  rows = [json.loads(l) for l in open(os.path.join(copy, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [2, 3, 4, 6]


def test_classify_generate_complete(smoke_run, digits):
  workdir, _ = smoke_run
  run = plm_run.load_run(workdir)
  images, labels = digits
  predicted, probs = plm_run.classify(run, images)
  assert predicted.shape == (5,) and probs.shape == (5, 10)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(predicted, probs.argmax(-1))

  joint, joint_labels = plm_run.generate(run, 3, seed=1)
  assert joint.shape == (3, 28, 28) and joint.dtype == np.uint8
  assert np.all((joint_labels >= 0) & (joint_labels < 10))
  cond, cond_labels = plm_run.generate(run, 3, label=7, seed=1)
  np.testing.assert_array_equal(cond_labels, 7)
  again, _ = plm_run.generate(run, 3, label=7, seed=1)
  np.testing.assert_array_equal(cond, again)

  out, source, sampled = plm_run.complete(
      run, images, source_ratio=0.5, num_samples=2, labels=labels
  )
  assert out.shape == (5, 2, 28, 28) and source.shape == (5, run.layout.num_image_tokens)
  assert np.all(source.sum(1) == round(0.5 * run.layout.num_image_tokens))
  np.testing.assert_array_equal(sampled, np.repeat(labels[:, None], 2, axis=1))
  # the given tokens survive: re-encoding a completion gives them back where the decoder is
  # faithful (compare in token space on the decoded ground-truth tokens)
  tokens = plm_run.encode(run, images)
  recoded = plm_run.encode(run, plm_run.decode(run, tokens))
  keep = plm_run.encode(run, out[:, 0]) == recoded
  assert keep[source].mean() > keep[~source].mean() - 1e-9
  top, source_top, _ = plm_run.complete(run, images, source_ratio=0.3, initial_portion=True)
  k = round(0.3 * run.layout.num_image_tokens)
  assert np.all(source_top[:, :k]) and not source_top[:, k:].any()


def test_modes(smoke_run, digits, tmp_path):
  """Each capability of `--mode` through `plm_mnist.run_mode`, the function the command line
  calls (in this process: a process per mode would import JAX and load the run each time;
  test_command_line runs the command itself)."""
  workdir, _ = smoke_run
  images, labels = digits
  npz = str(tmp_path / "in.npz")
  np.savez(npz, images=images, labels=labels)
  plm_mnist.run_mode("classify", workdir, images=npz, out=str(tmp_path / "c.npz"))
  with np.load(tmp_path / "c.npz") as out:
    assert out["labels"].shape == (5,) and out["probs"].shape == (5, 10)
  plm_mnist.run_mode("generate", workdir, label=3, num_samples=4, out=str(tmp_path / "g.npz"))
  with np.load(tmp_path / "g.npz") as out:
    assert out["images"].shape == (4, 28, 28) and np.all(out["labels"] == 3)
  assert os.path.exists(tmp_path / "g.png")
  plm_mnist.run_mode("figure", workdir, out=str(tmp_path / "f.png"))
  assert os.path.getsize(tmp_path / "f.png") > 10_000


def test_command_line(smoke_run, digits, tmp_path):
  """`python -m experiments.plm_mnist` with every flag of the trained-run modes, and a bad
  label refused with a message."""
  workdir, _ = smoke_run
  images, labels = digits
  npz = str(tmp_path / "in.npz")
  np.savez(npz, images=images, labels=labels)

  def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.plm_mnist", "--workdir", workdir, *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )

  proc = cli(
      "--mode",
      "complete",
      "--images",
      npz,
      "--source_ratio",
      "0.4",
      "--initial_portion",
      "--with_label",
      "--num_samples",
      "2",
      "--seed",
      "1",
      "--guidance",
      "2",
      "--out",
      str(tmp_path / "k.npz"),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(tmp_path / "k.npz") as out:
    assert out["completions"].shape == (5, 2, 28, 28)
  assert os.path.exists(tmp_path / "k.png")
  proc = cli("--mode", "generate", "--label", "12")
  assert proc.returncode != 0 and "label 12 is outside 0..9" in proc.stderr


def test_cross_entropy_baseline_shares_the_quantiser(smoke_run, digits, tmp_path):
  workdir, _ = smoke_run
  config = plm_config.get_config("smoke")
  config.plm.objective = "classification"
  config.vq_dir = os.path.join(workdir, "vq")
  summary = plm_train.train_and_evaluate(config, str(tmp_path / "ce"), progress=False)
  assert not os.path.exists(tmp_path / "ce" / "vq")
  # T = {label} for every example: the loss is the mean cross-entropy, no image term
  for row in map(json.loads, open(tmp_path / "ce" / "metrics.jsonl")):
    assert row["image_nll"] == 0.0
    np.testing.assert_allclose(row["loss"], row["label_nll"], rtol=1e-5)
  assert "label_agreement" not in summary["eval"] and 0 <= summary["eval"]["test_accuracy"] <= 1
  run = plm_run.load_run(str(tmp_path / "ce"))
  labels, _ = plm_run.classify(run, digits[0])
  assert labels.shape == (5,)
  with pytest.raises(ValueError, match="cannot generate"):
    plm_run.generate(run, 2)


def test_bad_input(smoke_run, digits, tmp_path):
  workdir, _ = smoke_run
  run = plm_run.load_run(workdir)
  images, _ = digits
  with pytest.raises(TypeError, match="uint8"):
    plm_run.classify(run, images.astype(np.float32))
  with pytest.raises(ValueError, match=r"\[N, 28, 28\]"):
    plm_run.classify(run, images[:, :27])
  with pytest.raises(ValueError, match="label 10 is outside"):
    plm_run.generate(run, 2, label=10)
  with pytest.raises(ValueError, match="temperature must be > 0"):  # not the config's 0.7
    plm_run.generate(run, 2, label=3, temperature=0.0)
  with pytest.raises(ValueError, match="outside the codebook"):
    plm_run.decode(run, np.full((1, run.layout.num_image_tokens), run.layout.num_codes))
  with pytest.raises(ValueError, match="source_ratio"):
    plm_run.complete(run, images, source_ratio=1.5)
  with pytest.raises(FileNotFoundError, match="no permutation-model run"):
    plm_run.load_run(str(tmp_path))
  config = plm_config.get_config("smoke")
  config.plm.objective = "mlm"
  with pytest.raises(ValueError, match="plm.objective"):
    plm_train.train_and_evaluate(config, str(tmp_path / "bad"), progress=False)
  for field, value in (
      ("plm.raster_prob", 1.5),
      ("data.lm_max_shift", -1),
      ("eval.guidance", -1.0),
  ):
    config = plm_config.get_config("smoke")
    group, name = field.split(".")
    config[group][name] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
      plm_train.train_and_evaluate(config, str(tmp_path / "bad"), progress=False)
  config = plm_config.get_config("smoke")
  config.vq_dir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="vq_mnist"):
    plm_train.train_and_evaluate(config, str(tmp_path / "bad2"), progress=False)


def test_sampler_benchmark_repeats_the_evaluation(smoke_run, tmp_path, capsys):
  """benchmarks.plm_samplers draws the samples behind eval.json: 1,0 gives its
  label_agreement and the run's eval.* sampler its label_agreement_guided, label by label."""
  workdir, summary = smoke_run
  result, k = summary["eval"], summary["eval"]["samples_per_label"]
  copy = str(tmp_path / "copy")
  shutil.copytree(workdir, copy)
  assert (
      plm_samplers.main(
          ["--workdir", copy, "--samplers", "1,0", "0.7,3", "--samples_per_label", str(k)]
      )
      == 0
  )
  plain, guided = json.load(open(os.path.join(copy, "samplers.json")))
  assert len(capsys.readouterr().out.splitlines()) == 2
  assert (plain["temperature"], plain["guidance"]) == (1.0, 0.0)
  assert plain["agreement"] == result["label_agreement"]
  assert plain["per_label"] == result["label_agreement_per_label"]
  assert guided["agreement"] == result["label_agreement_guided"]
  assert guided["per_label"] == result["label_agreement_guided_per_label"]
  for bad in ("0,1", "1,-1", "1", "a,b"):
    with pytest.raises(SystemExit):
      plm_samplers.main(["--workdir", copy, "--samplers", bad])
  assert "TEMPERATURE,GUIDANCE" in capsys.readouterr().err
  with pytest.raises(ValueError, match="samples_per_label"):
    plm_samplers.measure(copy, [(1.0, 0.0)], samples_per_label=0)


def test_raster_orders():
  """plm.raster_prob=1: every LM task's image tokens in raster order, the label first or last
  (label_last_prob); 0: uniformly random orders."""
  config = plm_config.get_config("smoke")
  config.plm.classify_prob, config.plm.raster_prob = 0.0, 1.0
  config.plm.label_last_prob = 0.5
  layout = multimodal.Layout(num_codes=8, num_image_tokens=6, num_classes=10)
  ranks, target, classify = plm_train.sample_orders(jax.random.key(0), config, layout, 200)
  ranks = np.asarray(ranks)
  assert np.all(np.asarray(target)) and not np.any(np.asarray(classify))
  np.testing.assert_array_equal(np.diff(ranks[:, :-1], axis=1), 1)
  label_first = ranks[:, -1] == 0
  np.testing.assert_array_equal(ranks[:, 0], np.where(label_first, 1, 0))
  assert np.all(label_first | (ranks[:, -1] == 6))
  assert 0.35 < label_first.mean() < 0.65
  config.plm.raster_prob = 0.0
  ranks = np.asarray(plm_train.sample_orders(jax.random.key(0), config, layout, 200)[0])
  assert np.mean(np.all(np.diff(ranks[:, :-1], axis=1) == 1, axis=1)) < 0.05


def test_runs_written_before_new_fields_load_with_their_old_behaviour(smoke_run, tmp_path):
  workdir, _ = smoke_run
  old = str(tmp_path / "old")
  shutil.copytree(workdir, old)
  with open(os.path.join(old, "config.json")) as f:
    config = json.load(f)
  del config["data"]["lm_max_shift"], config["plm"]["raster_prob"], config["eval"]["guidance"]
  with open(os.path.join(old, "config.json"), "w") as f:
    json.dump(config, f)
  run = plm_run.load_run(old)
  assert run.config.data.lm_max_shift == run.config.data.max_shift
  assert run.config.plm.raster_prob == 0.0 and run.config.eval.guidance == 0.0
