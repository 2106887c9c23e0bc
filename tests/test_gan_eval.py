"""Tests of experiments/gan_eval.py (the evaluation suite), experiments/gan_figures.py and the
evaluation during training: metrics on cases with known answers, then a smoke run end to end."""

import json
import os

import numpy as np
import pytest

from bigjax.data import mnist
from bigjax.models import unpatchify
from configs import gan_mnist
from experiments import biglearn_gan
from experiments import gan_eval
from experiments import gan_figures
from experiments import gan_samples
from experiments import gan_setup


def _smoke_gan():
  c = gan_mnist.get_config("smoke")
  c.data.split = "train"  # gan_eval holds out the bundled `test` digits
  return c


# ----------------------------------------------------------------------------------------------
# Known answers, with a stand-in generator and an oracle classifier.


def _oracle(images, labels):
  """A 'classifier' that knows every held-out digit: the true label of an exact copy, 10 (no
  digit) for anything else; features = the mean pixel and the label."""
  table = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}

  def predict(batch):
    got = np.array([table.get(img.tobytes(), 10) for img in batch], np.int32)
    probs = np.zeros((len(batch), 10), np.float32)
    features = np.stack([batch.reshape(len(batch), -1).mean(-1), got], -1).astype(np.float32)
    return got, probs, features

  return predict


def _stand_in_generator(monkeypatch, kind):
  """Replaces the sampler: `copy` returns the real image whatever S and z; `noise` returns the
  real pixels on S and uniform noise (depending on z) elsewhere."""

  def make_sampler(gen, shape, p):
    def sample(params, patches, source, z):
      patches = np.asarray(patches)
      if kind == "noise":
        rng = np.random.default_rng(int(abs(np.asarray(z)).sum() * 1e6) % 2**32)
        fake = rng.uniform(-1, 1, patches.shape).astype(np.float32)
        patches = np.where(np.asarray(source)[..., None], patches, fake)
      return unpatchify(patches, shape, p)

    return sample

  monkeypatch.setattr(gan_samples, "make_sampler", make_sampler)


def _heldout(n=40):
  images, labels = mnist.load("bundled", split="test")
  return images[:n], labels[:n]


def test_a_generator_that_copies_the_truth_agrees_fully_with_no_diversity(monkeypatch):
  _stand_in_generator(monkeypatch, "copy")
  images, labels = _heldout()
  evaluate = gan_eval.make_evaluator(
      _smoke_gan(), _oracle(images, labels), images, labels, num_samples=3
  )
  result = evaluate(None)
  for kind in ("random", "initial"):
    assert result[kind]["agreement"] == [1.0] * 10
    assert result[kind]["diversity"] == [0.0] * 10
    assert result["monotone"][kind] == dict(agreement_rises=True, diversity_falls=True)
  assert result["classifier_accuracy"] == 1.0
  # Joint "samples" are the first half of the held-out digits: the same distance as real halves.
  fd = result["frechet"]
  assert fd["joint_vs_heldout"] == pytest.approx(fd["heldout_half_vs_half"], rel=1e-6)
  assert fd["num_per_set"] == 20


def test_a_generator_that_keeps_only_the_source_follows_the_ratio(monkeypatch):
  """Noise outside S: no completion is a held-out digit (agreement 0), and the diversity is that
  of uniform noise on the target pixels, falling exactly as the target shrinks."""
  _stand_in_generator(monkeypatch, "noise")
  images, labels = _heldout(10)
  result = gan_eval.make_evaluator(
      _smoke_gan(), _oracle(images, labels), images, labels, num_samples=2
  )(None)
  div = np.array(result["initial"]["diversity"])
  assert result["initial"]["agreement"] == [0.0] * 10
  assert np.all(np.diff(div) < 0) and result["monotone"]["initial"]["diversity_falls"]
  # RMS difference of two independent U[0, 1] pixels is 1/sqrt(6) ~ 0.41, over the target part.
  target_fraction = 1 - np.round(np.arange(10) / 10 * 16) / 16
  np.testing.assert_allclose(div, np.sqrt(target_fraction / 6), rtol=0.1)


def test_the_exact_sampler_reference_is_the_mean_probability_of_the_true_label(monkeypatch):
  """A stand-in p(y | x_S) that gives the true label the fraction of pixels given: the reference
  is then round(r L) / L at each ratio, for both kinds of source set."""
  _stand_in_generator(monkeypatch, "copy")
  images, labels = _heldout(12)
  table = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}

  def posterior(batch, source):
    given = source.reshape(len(batch), -1).mean(1)
    probs = np.repeat(((1 - given) / 9)[:, None], 10, axis=1).astype(np.float32)
    probs[np.arange(len(batch)), [table[img.tobytes()] for img in batch]] = given
    return probs.argmax(1), probs, np.zeros((len(batch), 1), np.float32)

  result = gan_eval.make_evaluator(
      _smoke_gan(),
      _oracle(images, labels),
      images,
      labels,
      num_samples=2,
      posterior_predict=posterior,
  )(None)
  expected = np.round(np.arange(10) / 10 * 16) / 16
  for kind in ("random", "initial"):
    np.testing.assert_allclose(result["posterior"][kind], expected, rtol=1e-6)
  assert "posterior" not in gan_eval.make_evaluator(
      _smoke_gan(), _oracle(images, labels), images, labels, num_samples=2
  )(None)


def test_source_masks():
  m = gan_samples.source_masks(0, 5, 16, 8, initial=False)
  assert m.shape == (5, 16) and (m.sum(1) == 8).all() and len({r.tobytes() for r in m}) > 1
  m = gan_samples.source_masks(0, 3, 16, 5, initial=True)
  assert (m[:, :5]).all() and not m[:, 5:].any()
  # The same seed gives the same sets; another seed other sets.
  same = gan_samples.source_masks([0, 1], 5, 16, 8)
  assert (same == gan_samples.source_masks([0, 1], 5, 16, 8)).all()
  assert (same != gan_samples.source_masks([0, 2], 5, 16, 8)).any()


def test_evaluator_rejects_fewer_than_two_draws():
  images, labels = _heldout(4)
  with pytest.raises(ValueError, match="num_samples must be >= 2"):
    gan_eval.make_evaluator(_smoke_gan(), None, images, labels, num_samples=1)


def test_heldout_digits_need_a_run_trained_on_train():
  c = gan_mnist.get_config("smoke")  # data.split = "all"
  with pytest.raises(ValueError, match="trained on data.split='all'"):
    gan_eval.heldout_digits(c)
  images, labels = gan_eval.heldout_digits(_smoke_gan(), 7)
  assert images.shape == (7, 28, 28) and labels.shape == (7,)
  with pytest.raises(ValueError, match="--num_images must be in"):
    gan_eval.heldout_digits(_smoke_gan(), 5000)


# ----------------------------------------------------------------------------------------------
# End to end: a smoke classifier, a smoke GAN run that evaluates itself, gan_eval, gan_figures.


@pytest.fixture(scope="module")
def classifier_dir(smoke_classifier):
  return smoke_classifier[0]  # the suite's shared smoke classifier: read only


@pytest.fixture(scope="module")
def partial_classifier_dir(smoke_partial_classifier):
  return smoke_partial_classifier[0]  # the suite's shared partial-digit classifier: read only


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, classifier_dir):
  workdir = tmp_path_factory.mktemp("gan")
  c = _smoke_gan()
  c.eval.metrics_every = 2
  c.eval.classifier_dir = classifier_dir
  c.eval.metrics_num_images = 12
  c.eval.metrics_num_samples = 2
  biglearn_gan.train_and_evaluate(c, str(workdir), progress=False)
  return workdir


def test_training_writes_evaluation_rows(gan_run):
  rows = [json.loads(line) for line in open(gan_run / "eval.jsonl")]
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    assert len(r["random"]["agreement"]) == 10 and len(r["initial"]["diversity"]) == 10
    assert all(0 <= a <= 1 for a in r["random"]["agreement"])
    assert np.isfinite(r["frechet"]["joint_vs_heldout"])
    assert r["num_images"] == 12 and r["num_samples"] == 2


def test_gan_eval_run_writes_json_and_plot(
    gan_run, classifier_dir, partial_classifier_dir, tmp_path
):
  out = str(tmp_path / "e" / "eval.json")
  result = gan_eval.run(
      str(gan_run),
      classifier_dir,
      out=out,
      num_images=12,
      num_samples=2,
      posterior_classifier_dir=partial_classifier_dir,
  )
  with open(out) as f:
    assert json.load(f) == json.loads(json.dumps(result))
  assert os.path.exists(str(tmp_path / "e" / "eval.png"))
  assert result["step"] == 4 and result["params"] == "auto"
  assert len(result["retrieval"]["random"]) == 10
  assert all(0 <= a <= 1 for a in result["retrieval"]["initial"])
  assert len(result["posterior"]["random"]) == 10
  assert all(0 <= a <= 1 for a in result["posterior"]["initial"])
  assert result["posterior_classifier"]["dir"] == partial_classifier_dir
  # The same fixed inputs and parameters as the in-training evaluation at the last step.
  last = [json.loads(line) for line in open(gan_run / "eval.jsonl")][-1]
  assert result["random"] == last["random"] and result["frechet"] == last["frechet"]


def test_gan_eval_errors(gan_run, classifier_dir, partial_classifier_dir, tmp_path):
  config, _, _ = gan_setup.load_run(str(gan_run))
  config.data.image_size = 32
  with pytest.raises(ValueError, match="trained on 28x28 digits, the images are 32x32"):
    gan_eval.load_classifier(config, classifier_dir)
  with pytest.raises(FileNotFoundError, match="experiments.mnist_classifier"):
    gan_eval.run(str(gan_run), str(tmp_path / "no_classifier"))
  with pytest.raises(ValueError, match="reads whole digits, and partial digits of 7x7"):
    gan_eval.run(str(gan_run), classifier_dir, posterior_classifier_dir=classifier_dir)
  no_ema = tmp_path / "no_ema"
  no_ema.mkdir()
  cfg = json.load(open(gan_run / "config.json"))
  cfg["ema_decay"] = 0.0
  json.dump(cfg, open(no_ema / "config.json", "w"))
  with pytest.raises(ValueError, match="kept no EMA of the generator"):
    gan_eval.run(str(no_ema), classifier_dir, params="ema")
  with pytest.raises(ValueError, match="--params must be auto, ema or raw"):
    gan_eval.run(str(gan_run), classifier_dir, params="best")
  with pytest.raises(ValueError, match="reads partial digits of 7x7 patches, and whole digits"):
    gan_eval.run(str(gan_run), partial_classifier_dir)


def test_metrics_during_training_need_a_classifier():
  c = _smoke_gan()
  c.eval.metrics_every = 2
  with pytest.raises(ValueError, match="needs eval.classifier_dir"):
    gan_setup.validate_config(c)


def test_figures_from_a_checkpoint(gan_run, tmp_path):
  summary = gan_figures.run(str(gan_run), str(tmp_path / "figs"), num_images=3, num_noise=2)
  assert [os.path.basename(p) for p in summary["figures"]] == [
      f + ".png" for f in gan_figures.FIGURES
  ]
  with np.load(tmp_path / "figs" / "figures.npz") as figs:
    # 28x28 tiles with 1-pixel white borders: rows x (28 + 1) + 1.
    assert figs["fig5a_random"].shape == (4 * 29 + 1, 3 * 29 + 1)  # given, 2 draws, real
    assert figs["fig13_ratios"].shape == (4 * 29 + 1, 11 * 29 + 1)  # masks + 3 digits
    assert figs["fig16a_sources"].shape == (6 * 29 + 1, 3 * 29 + 1)
    assert figs["fig16b_noise"].shape == (3 * 29 + 1, 3 * 29 + 1)
    top = figs["fig13_ratios"][1:29, 1:29]
    assert set(np.unique(top)) == {0}  # ratio 0: no source patch, all black
    last = figs["fig13_ratios"][1:29, 1 + 9 * 29 : 9 * 29 + 29]
    assert (last == 255).mean() == pytest.approx(round(0.9 * 16) / 16)


def test_retrieval_completions_take_the_nearest_training_digit_on_the_source_pixels():
  rng = np.random.default_rng(0)
  train = rng.integers(0, 256, (50, 6, 6), dtype=np.uint8)
  images = train[[3, 17]].copy()
  pixels = np.zeros((2, 6, 6), bool)
  pixels[:, :3] = True  # the top half is given
  images[:, 3:] = 0  # the rest differs from the training digit
  done = gan_eval.retrieval_completions(train, images, pixels, k=1, rng=rng)
  np.testing.assert_array_equal(done[:, :3], images[:, :3])
  np.testing.assert_array_equal(done[:, 3:], train[[3, 17], 3:])
  # Brute force for k = 3: every pick is among the 3 nearest on the source pixels.
  done = gan_eval.retrieval_completions(train, images, pixels, k=3, rng=rng)
  for i in range(2):
    d = ((train[:, :3].astype(float) - images[i, :3]) ** 2).sum((1, 2))
    nearest = np.argsort(d)[:3]
    assert any(np.array_equal(done[i, 3:], train[j, 3:]) for j in nearest)


def test_held_out_digits_of_an_npz_run_are_not_its_training_digits(tmp_path):
  images, labels = mnist.load("bundled", split="train")
  path = str(tmp_path / "digits.npz")
  np.savez(path, images=images[:160], labels=labels[:160])
  c = gan_mnist.get_config("smoke")
  c.data.source, c.data.split = path, "train"
  train = gan_setup.load_images(c)
  heldout, _ = gan_setup.heldout_digits(c)
  assert (len(train), len(heldout)) == (140, 20)
  assert not ({r.tobytes() for r in train} & {r.tobytes() for r in heldout})
