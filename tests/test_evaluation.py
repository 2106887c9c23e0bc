"""Tests of bigjax.evaluation: the sample metrics and the MNIST classifier (smoke variant).

The classifier is trained once per test run (conftest's `smoke_classifier`, shared with
test_gan_eval.py) and the tests load, resume or copy that run. The suite's persistent
compilation cache (conftest.py) lets later train() calls and the `python -m` subprocess reuse the
executables the first run compiled.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import conftest
from bigjax.training import checkpoint
from bigjax.training import runs
from bigjax.data import mnist
from bigjax.models import classifier as classifier_model
from bigjax.evaluation import metrics
from configs import mnist_classifier
from experiments import classifier_setup
from experiments import mnist_classifier as train_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smoke variant reaches 0.949 on the bundled 1,000 test digits (measured on 2 CPU cores);
# the threshold leaves room for other platforms' floating-point differences.
SMOKE_MIN_ACCURACY = 0.85


# ----------------------------------------------------------------------------------------------
# frechet_distance


def _reference_frechet(a, b):
  """The usual FID formula with scipy's (possibly complex) sqrtm of C_a C_b."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  covmean = scipy.linalg.sqrtm(ca @ cb).real
  return np.sum((mu_a - mu_b) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.trace(covmean)


def _exact_moments(rng, n, mean, variances):
  """n rows whose sample mean is exactly `mean` and sample covariance (ddof=1) exactly
  diag(variances), up to rounding: whitened random rows, scaled and shifted."""
  z = rng.standard_normal((n, len(mean)))
  z -= z.mean(0)
  chol = np.linalg.cholesky(np.cov(z, rowvar=False))
  z = np.linalg.solve(chol, z.T).T  # sample covariance I
  return mean + z * np.sqrt(variances)


def test_frechet_identical_sets_is_zero():
  a = np.random.default_rng(0).standard_normal((400, 16)) * 3.0 + 1.0
  scale = 2 * np.trace(np.cov(a, rowvar=False))
  assert metrics.frechet_distance(a, a) <= 1e-6 * scale
  assert metrics.frechet_distance(a, a.copy()) >= 0.0


def test_frechet_matches_scipy_sqrtm_reference():
  rng = np.random.default_rng(1)
  a = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + rng.standard_normal(6)
  b = rng.standard_normal((200, 6)) @ rng.standard_normal((6, 6))
  expected = _reference_frechet(a, b)
  np.testing.assert_allclose(metrics.frechet_distance(a, b), expected, rtol=1e-8)
  np.testing.assert_allclose(metrics.frechet_distance(b, a), expected, rtol=1e-8)


def test_frechet_closed_form_for_diagonal_gaussians():
  rng = np.random.default_rng(2)
  mu_a, mu_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
  var_a, var_b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
  a = _exact_moments(rng, 50, mu_a, var_a)
  b = _exact_moments(rng, 80, mu_b, var_b)
  # W2^2 between N(mu_a, diag(var_a)) and N(mu_b, diag(var_b)).
  expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
  np.testing.assert_allclose(metrics.frechet_distance(a, b), expected, rtol=1e-9)


def test_frechet_translation_adds_squared_norm():
  rng = np.random.default_rng(3)
  a = rng.standard_normal((100, 5))
  b = rng.standard_normal((120, 5)) * 2.0
  v = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
  np.testing.assert_allclose(metrics.frechet_distance(a, a + v), v @ v, rtol=1e-9)
  # Shifting one set moves only the mean term: ||mu_a - mu_b - v||^2 - ||mu_a - mu_b||^2.
  delta = a.mean(0) - b.mean(0)
  np.testing.assert_allclose(
      metrics.frechet_distance(a, b + v) - metrics.frechet_distance(a, b),
      (delta - v) @ (delta - v) - delta @ delta,
      rtol=1e-9,
  )


def test_frechet_rank_deficient_covariances_are_stable():
  # More features than samples: both covariances are singular (sqrtm would go complex).
  rng = np.random.default_rng(4)
  a, b = rng.standard_normal((10, 50)), rng.standard_normal((12, 50))
  d = metrics.frechet_distance(a, b)
  assert np.isfinite(d) and d > 0
  np.testing.assert_allclose(d, metrics.frechet_distance(b, a), rtol=1e-8)
  assert metrics.frechet_distance(a, a) <= 1e-6 * np.trace(np.cov(a, rowvar=False))


def test_frechet_errors():
  ok = np.zeros((5, 3)) + np.arange(5)[:, None]
  with pytest.raises(ValueError, match="2-D"):
    metrics.frechet_distance(np.zeros(5), ok)
  with pytest.raises(ValueError, match="3 features per row but features_b has 4"):
    metrics.frechet_distance(ok, np.zeros((5, 4)))
  with pytest.raises(ValueError, match="at least 2 samples"):
    metrics.frechet_distance(ok, np.zeros((1, 3)))
  bad = ok.copy()
  bad[2, 1] = np.nan
  with pytest.raises(ValueError, match="NaN or inf"):
    metrics.frechet_distance(bad, ok)


# ----------------------------------------------------------------------------------------------
# label_agreement


def test_label_agreement_of_a_copying_generator_is_one():
  labels = np.random.default_rng(5).integers(0, 10, 50)
  assert metrics.label_agreement(labels, labels) == 1.0
  assert metrics.label_agreement(np.repeat(labels[:, None], 4, axis=1), labels) == 1.0


def test_label_agreement_counts_every_draw():
  true = np.array([3, 7])
  pred = np.array([[3, 3, 1, 3], [7, 0, 0, 7]])  # 3 + 2 of 8 right
  assert metrics.label_agreement(pred, true) == 5 / 8
  assert metrics.label_agreement(np.array([3, 1]), true) == 0.5


def test_label_agreement_errors():
  with pytest.raises(ValueError, match=r"shape \[N\] or \[N, S\] with N = 3"):
    metrics.label_agreement(np.zeros(4, int), np.zeros(3, int))
  with pytest.raises(ValueError, match=r"true_labels must have shape \[N\]"):
    metrics.label_agreement(np.zeros(3, int), np.zeros((3, 1), int))
  with pytest.raises(ValueError, match="argmax"):
    metrics.label_agreement(np.zeros((3, 10)), np.zeros(3, int))
  with pytest.raises(ValueError, match="no predictions"):
    metrics.label_agreement(np.zeros(0, int), np.zeros(0, int))


# ----------------------------------------------------------------------------------------------
# pairwise_diversity


def _reference_diversity(x, mask):
  n, s = x.shape[:2]
  out = np.zeros(n)
  for k in range(n):
    m = np.broadcast_to(mask[k], x.shape[2:])
    if not m.any():
      continue
    out[k] = np.mean(
        [
            np.sqrt(np.mean((x[k, i][m] - x[k, j][m]) ** 2))
            for i in range(s)
            for j in range(i + 1, s)
        ]
    )
  return out


def test_diversity_of_identical_draws_is_zero():
  x = np.random.default_rng(6).random((3, 1, 8, 8))
  np.testing.assert_array_equal(metrics.pairwise_diversity(np.repeat(x, 4, axis=1)), 0.0)


@pytest.mark.parametrize("c", [0.25, -0.5])
def test_diversity_of_constant_offsets(c):
  x = np.random.default_rng(7).random((4, 1, 6, 6))
  np.testing.assert_allclose(
      metrics.pairwise_diversity(np.concatenate([x, x + c], 1)), abs(c), rtol=1e-12
  )
  # Three draws x, x + c, x + 2c: pairs differ by |c|, 2|c|, |c|.
  three = np.concatenate([x, x + c, x + 2 * c], 1)
  np.testing.assert_allclose(metrics.pairwise_diversity(three), 4 / 3 * abs(c), rtol=1e-12)


def test_diversity_mask_selects_pixels():
  x = np.zeros((2, 2, 4, 4))
  x[:, 1, :2] = 1.0  # the draws differ in the top half only
  top = np.zeros((4, 4), bool)
  top[:2] = True
  np.testing.assert_allclose(metrics.pairwise_diversity(x, top), 1.0)
  np.testing.assert_allclose(metrics.pairwise_diversity(x, ~top), 0.0)
  np.testing.assert_allclose(metrics.pairwise_diversity(x), np.sqrt(0.5))
  per_input = np.stack([top, np.zeros((4, 4), bool)])  # nothing to compare for input 1
  np.testing.assert_allclose(metrics.pairwise_diversity(x, per_input), [1.0, 0.0])
  rows = np.array([True, False, False, False])[:, None]  # [4, 1] broadcasts over columns
  np.testing.assert_allclose(metrics.pairwise_diversity(x, rows), 1.0)


def test_diversity_matches_reference_with_random_masks():
  rng = np.random.default_rng(8)
  x = rng.random((5, 4, 7, 7))
  mask = rng.random((5, 7, 7)) < 0.4
  np.testing.assert_allclose(
      metrics.pairwise_diversity(x, mask), _reference_diversity(x, mask), rtol=1e-12
  )


def test_diversity_errors():
  with pytest.raises(ValueError, match="at least 2 draws"):
    metrics.pairwise_diversity(np.zeros((3, 1, 4, 4)))
  with pytest.raises(ValueError, match=r"shape \[N, S, ...\]"):
    metrics.pairwise_diversity(np.zeros((3, 2)))
  with pytest.raises(ValueError, match="bool"):
    metrics.pairwise_diversity(np.zeros((3, 2, 4, 4)), np.ones((4, 4)))
  with pytest.raises(ValueError, match="fits neither"):
    metrics.pairwise_diversity(np.zeros((3, 2, 4, 4)), np.ones((5, 4), bool))
  with pytest.raises(ValueError, match="fits neither"):
    metrics.pairwise_diversity(np.zeros((3, 2, 4, 4)), np.ones((2, 4, 4), bool))


# ----------------------------------------------------------------------------------------------
# The classifier.


@pytest.fixture(scope="module")
def trained(smoke_classifier):
  """(workdir, summary) of one smoke-variant training run (the suite's shared one: tests that
  change it work on a copy)."""
  return smoke_classifier


@pytest.fixture(scope="module")
def test_digits():
  return mnist.load("bundled", split="test")


def _copy(trained, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(trained[0], workdir)
  return workdir


def test_classifier_handles_28_and_64_pixel_digits():
  model = classifier_model.Classifier(widths=(8, 16), feature_dim=24)
  for size in (28, 64):
    x = jnp.zeros((3, size, size))
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    logits, features = jax.eval_shape(model.apply, params, x)
    assert logits.shape == (3, 10) and features.shape == (3, 24)


def test_predictors_of_one_model_share_their_program():
  """make_predict jits one function per model (equal Flax modules are one model): a second
  predictor, of other parameters, traces nothing again; another model gets its own."""
  make = lambda: classifier_model.Classifier(widths=(8, 16), feature_dim=24, image_size=28)
  x = np.zeros((3, 28, 28), np.uint8)
  params = [make().init(jax.random.key(i), jnp.zeros((1, 28, 28))) for i in (0, 1)]
  first = classifier_model.make_predict(make(), params[0], batch_size=4)(x)
  apply = classifier_model._jit_apply(make())  # pylint: disable=protected-access
  traced = apply._cache_size()  # pylint: disable=protected-access
  second = classifier_model.make_predict(make(), params[1], batch_size=4)(x)
  assert apply._cache_size() == traced == 1  # pylint: disable=protected-access
  assert not np.array_equal(first[1], second[1])  # its own parameters
  other = classifier_model.Classifier(widths=(8, 16), feature_dim=12, image_size=28)
  assert classifier_model._jit_apply(other) is not apply  # pylint: disable=protected-access
  listed = classifier_model.Classifier(widths=[8, 16], feature_dim=24, image_size=28)
  np.testing.assert_array_equal(  # a module that cannot be hashed still predicts
      classifier_model.make_predict(listed, params[1], batch_size=4)(x)[1], second[1]
  )


def test_smoke_training_reaches_a_sane_accuracy(trained):
  workdir, summary = trained
  assert summary["test_accuracy"] >= SMOKE_MIN_ACCURACY, summary
  assert summary["num_test"] == 1000 and summary["num_train"] == 7000
  assert summary["steps"] == 150 and summary["resumed_from"] is None
  assert summary["image_size"] == 28 and summary["source"] == "bundled"
  with open(os.path.join(workdir, "classifier.json")) as f:
    assert json.load(f) == summary
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [25, 50, 75, 100, 125, 150]


def test_load_roundtrip_reproduces_the_test_accuracy(trained, test_digits):
  workdir, summary = trained
  model, params, info = classifier_setup.load(workdir, image_size=28)
  assert info == summary and model.image_size == 28 and model.feature_dim == 64
  images, labels = test_digits
  predicted, probs, features = classifier_model.make_predict(model, params)(images)
  assert np.mean(predicted == labels) == summary["test_accuracy"]
  assert predicted.dtype == np.int32 and predicted.shape == (1000,)
  assert probs.dtype == np.float32 and probs.shape == (1000, 10)
  assert features.dtype == np.float32 and features.shape == (1000, 64)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(predicted, probs.argmax(-1))
  assert np.all(features >= 0)  # ReLU features
  # A second load and a chunk size that pads the last chunk give the same predictions.
  model2, params2, _ = classifier_setup.load(workdir)
  small_predicted, small_probs, small_features = classifier_model.make_predict(
      model2, params2, batch_size=64
  )(images[:77])
  np.testing.assert_array_equal(small_predicted, predicted[:77])
  np.testing.assert_allclose(small_probs, probs[:77], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(small_features, features[:77], rtol=1e-5, atol=1e-5)
  empty = classifier_model.make_predict(model2, params2, batch_size=64)(images[:0])
  assert [e.shape for e in empty] == [(0,), (0, 10), (0, 64)]


def test_predict_validates_its_input(trained, test_digits):
  model, params, _ = classifier_setup.load(trained[0])
  predict = classifier_model.make_predict(model, params, batch_size=16)
  images = test_digits[0][:4]
  with pytest.raises(TypeError, match="from_unit_range"):
    predict(mnist.to_unit_range(images))
  with pytest.raises(ValueError, match="drop the channel axis"):
    predict(images[..., None])
  with pytest.raises(ValueError, match="trained on 28x28 digits, got 64x64"):
    predict(mnist.resize(images, 64))
  with pytest.raises(ValueError, match="batch_size"):
    classifier_model.make_predict(model, params, batch_size=0)


def test_load_refuses_another_image_size(trained):
  with pytest.raises(
      ValueError,
      match=r"trained on 28x28 digits, the images are 64x64: train one "
      r"with `python -m experiments.mnist_classifier --config "
      r"configs/mnist_classifier.py:cpu --config.data.image_size=64 --workdir",
  ):
    classifier_setup.load(trained[0], image_size=64)


def test_load_without_a_classifier_says_how_to_train_one(trained, tmp_path):
  with pytest.raises(
      FileNotFoundError,
      match="does not exist.*python -m "
      "experiments.mnist_classifier --config configs/mnist_classifier.py:cpu",
  ):
    classifier_setup.load(str(tmp_path / "nothing_here"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    classifier_setup.load(str(tmp_path / "empty"))
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, "classifier.json"))  # as during an unfinished run
  with pytest.raises(FileNotFoundError, match="has not finished training.*to resume it"):
    classifier_setup.load(workdir)
  shutil.copy(os.path.join(trained[0], "classifier.json"), workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints"))
  with pytest.raises(FileNotFoundError, match="no checkpoints/ folder"):
    classifier_setup.load(workdir)


def test_a_finished_run_is_not_trained_again(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  summary = conftest.rerun_finished(
      train_classifier.train, mnist_classifier.get_config("smoke"), workdir
  )
  assert summary["resumed_from"] == 150 and summary["steps"] == 150
  assert summary["test_accuracy"] == trained[1]["test_accuracy"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["100", "150", "50"]


def test_resume_continues_like_the_uninterrupted_run(trained, tmp_path, test_digits):
  # As if killed between the saves of steps 100 and 150 (after some metrics rows of 101..150).
  workdir = _copy(trained, tmp_path)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "150"))
  os.remove(os.path.join(workdir, "classifier.json"))
  summary = train_classifier.train(mnist_classifier.get_config("smoke"), workdir, progress=False)
  assert summary["resumed_from"] == 100 and summary["steps"] == 150
  assert summary["test_accuracy"] == trained[1]["test_accuracy"]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [25, 50, 75, 100, 125, 150]
  images = test_digits[0][:200]
  resumed = classifier_model.make_predict(*classifier_setup.load(workdir)[:2])(images)
  original = classifier_model.make_predict(*classifier_setup.load(trained[0])[:2])(images)
  np.testing.assert_array_equal(resumed[0], original[0])
  np.testing.assert_allclose(resumed[1], original[1], rtol=1e-5, atol=1e-6)


def test_another_models_checkpoints_are_refused(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  config = mnist_classifier.get_config("smoke")
  config.model.widths = (8, 8)
  with pytest.raises(checkpoint.SignatureMismatchError, match="widths"):
    train_classifier.train(config, workdir, progress=False)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["widths"] == [8, 16]  # left as the run that wrote it


def test_config_variants_and_validation():
  for variant in mnist_classifier.VARIANTS:
    classifier_setup.validate_config(mnist_classifier.get_config(variant))
  assert mnist_classifier.get_config("paper").data.image_size == 64
  with pytest.raises(ValueError, match="unknown variant"):
    mnist_classifier.get_config("big")
  config = mnist_classifier.get_config("smoke")
  config.model.dropout = 1.0
  with pytest.raises(ValueError, match=r"model.dropout must be in \[0, 1\)"):
    classifier_setup.validate_config(config)


def test_command_line_prints_the_summary(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.mnist_classifier",
          "--config",
          "configs/mnist_classifier.py:smoke",
          "--workdir",
          workdir,
      ],
      cwd=REPO,
      env=conftest.subprocess_env(),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout)
  assert summary["resumed_from"] == 150
  assert summary["test_accuracy"] == trained[1]["test_accuracy"]


# ----------------------------------------------------------------------------------------------
# The partial-digit classifier (data.source_patch > 0), the reference for exact samplers.


_partial_config = conftest.smoke_partial_config


@pytest.fixture(scope="module")
def trained_partial(smoke_partial_classifier):
  """_partial_config()'s run: the suite's shared one (conftest, also read by test_gan_eval),
  checked to have saved that config."""
  workdir, summary = smoke_partial_classifier
  trained_with = runs.read_config(workdir, classifier_setup.KIND)
  assert trained_with.to_json(sort_keys=True) == _partial_config().to_json(sort_keys=True)
  return workdir, summary


def test_random_sources_are_whole_patches_in_both_kinds():
  masks = np.asarray(train_classifier.random_sources(jax.random.key(0), 512, 28, 7))
  assert masks.shape == (512, 28, 28) and masks.dtype == bool
  grid = masks[:, ::7, ::7]  # one pixel per patch
  np.testing.assert_array_equal(masks, np.kron(grid, np.ones((7, 7), bool)).astype(bool))
  counts = grid.reshape(512, 16).sum(1)
  assert set(counts) == set(range(17))  # k ~ uniform{0, ..., 16}
  flat = grid.reshape(512, 16)
  initial = np.array([f[:c].all() and not f[c:].any() for f, c in zip(flat, counts)])
  # Half of the examples are initial portions; random sets are one too only by chance.
  assert 0.45 < initial.mean() < 0.65


def test_partial_classifier_trains_and_reads_source_masks(trained_partial, test_digits):
  workdir, summary = trained_partial
  assert summary["source_patch"] == 7
  # Whole digits are easier than half of them, and both beat chance (smoke model: measured
  # 0.885 and 0.682 on 2 CPU cores).
  assert summary["test_accuracy"] > summary["test_accuracy_random_half"] > 0.4
  assert (
      0.1
      < summary["test_true_label_prob_random_half"]
      <= summary["test_accuracy_random_half"] + 0.1
  )
  model, params, info = classifier_setup.load(workdir, image_size=28, source_patch=7)
  assert model.source_patch == 7 and info == summary
  images, labels = test_digits
  predict = classifier_model.make_predict(model, params, batch_size=64)
  whole = np.ones(images.shape, bool)
  predicted, probs, _ = predict(images, whole)
  assert np.mean(predicted == labels) == summary["test_accuracy"]
  # Nothing given: every digit gets the same prediction, whatever its pixels.
  _, blind, _ = predict(images[:5], np.zeros((5, 28, 28), bool))
  np.testing.assert_allclose(blind, np.broadcast_to(blind[:1], blind.shape), atol=1e-6)
  with pytest.raises(ValueError, match="reads partial digits.*predict\\(images, source\\)"):
    predict(images[:2])
  with pytest.raises(ValueError, match="bool mask shaped like the images"):
    predict(images[:2], whole[:3])
  with pytest.raises(
      ValueError,
      match="reads partial digits of 7x7 patches, and whole digits "
      "are needed here.*mnist_classifier.py:cpu",
  ):
    classifier_setup.load(workdir, source_patch=0)


def test_whole_digit_classifiers_refuse_source_masks(trained, test_digits):
  model, params, _ = classifier_setup.load(trained[0], source_patch=0)
  images = test_digits[0][:2]
  with pytest.raises(ValueError, match="reads whole digits"):
    classifier_model.make_predict(model, params)(images, np.ones(images.shape, bool))
  with pytest.raises(
      ValueError,
      match="reads whole digits, and partial digits of 7x7 patches "
      "are needed.*mnist_classifier.py:partial --config.data.source_patch=7",
  ):
    classifier_setup.load(trained[0], source_patch=7)
  # The signature of whole-digit classifiers has no source_patch, as before the field existed.
  # Whole-digit classifiers saved before the field existed match it at 0 (SIGNATURE_DEFAULTS).
  assert classifier_setup.model_signature(mnist_classifier.get_config("smoke"))["source_patch"] == 0
  assert classifier_setup.SIGNATURE_DEFAULTS == {"source_patch": 0}
  assert classifier_setup.model_signature(_partial_config())["source_patch"] == 7


@pytest.mark.parametrize("patch", [5, -1, True])
def test_source_patch_must_divide_the_image(patch):
  c = _partial_config()
  c.data.source_patch = patch
  with pytest.raises(ValueError, match="data.source_patch must be 0"):
    classifier_setup.validate_config(c)


def test_a_classifier_trained_on_an_npz_is_tested_on_digits_it_did_not_train_on(tmp_path):
  """An .npz source used to be both splits: 1.0 'test' accuracy on 200 training digits."""
  images, labels = mnist.load("bundled", split="train")
  path = str(tmp_path / "digits.npz")
  np.savez(path, images=images[:200], labels=labels[:200])
  config = mnist_classifier.get_config("smoke")
  config.num_steps, config.data.source = 10, path
  summary = train_classifier.train(config, str(tmp_path / "clf"), progress=False)
  assert (summary["num_train"], summary["num_test"]) == (175, 25)
  assert summary["test_digits"].endswith(
      "rows 175-199 of 200 (the last eighth is held out as " "test)"
  )
  config.data.train_split = "all"
  with pytest.raises(ValueError, match="the test split would hold training digits"):
    classifier_setup.validate_config(config)
