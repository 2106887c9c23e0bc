r"""Evaluate a BigLearn-GAN MNIST run with the project's classifier: Fig. 5, 13 and 16 as numbers.

  python -m experiments.mnist_classifier --config configs/mnist_classifier.py:cpu --workdir /tmp/clf
  python -m experiments.gan_eval --workdir /tmp/gan_cpu --classifier_dir /tmp/clf
  # optional: the exact-sampler reference (`posterior` below)
  python -m experiments.mnist_classifier --config configs/mnist_classifier.py:partial \
      --workdir /tmp/clf_partial
  python -m experiments.gan_eval --workdir /tmp/gan_cpu --classifier_dir /tmp/clf \
      --posterior_classifier_dir /tmp/clf_partial

Loads the newest restorable checkpoint of the run (the generator's EMA unless --params=raw) and
the classifier (experiments/mnist_classifier.py; it must have been trained at the run's image
size), then measures on held-out digits (the split the GAN did not train on: the bundled
subset's `test` 1,000 for the `cpu` run, MNIST's test split otherwise; `--num_images` of them):

  frechet      Fréchet distance between classifier features of `num_images` joint samples
               (S empty) and of half of the held-out digits, next to the same distance between
               the two halves of the held-out digits (the floor a perfect generator would reach
               at this sample size) and the classifier's accuracy on the held-out digits.
  random       for source ratios 0.0, 0.1, ..., 0.9: each held-out digit gets round(r L) random
               source patches and `--num_samples` noise draws; `agreement` is the fraction of
               completions the classifier labels with the digit's true label (Fig. 13 as a
               number), `diversity` the mean over digits of the mean pairwise root-mean-square
               pixel distance between the draws (pixels in [0, 1]; Fig. 13's shrinking variety).
  initial      the same with the first round(r L) patches in raster order as S (Fig. 5b).
  monotone     whether agreement rises and diversity falls with the ratio, for each source kind.
  retrieval    a reference for `agreement` that needs no generator: each completion is a
               training digit among the 5 nearest to the digit on its source pixels (squared
               distance), with the source pixels pasted in; how much the given pixels alone
               determine the label, as far as the training digits can tell.
  posterior    (with --posterior_classifier_dir) the agreement an exact sampler of
               q(x_T | x_S) would reach, on the same source sets: the mean probability of the
               true label under a partial-digit classifier of p(y | x_S)
               (configs/mnist_classifier.py:partial, trained with the run's patch size). A
               completion drawn from q(x_T | x_S) has label y with probability p(y | x_S), so
               this is the `agreement` of a generator that has learnt q exactly, judged by a
               classifier that labels every real digit right (an estimate: it is as good as
               that classifier). A generator that favours the likeliest digit can exceed it, up
               to the accuracy of p(y | x_S) itself (classifier.json of the partial classifier).

Writes <out> (default <workdir>/eval.json) and a plot next to it (eval.png). The same function
runs during training when config.eval.every > 0 (rows in <workdir>/eval.jsonl).
"""

from __future__ import annotations

import json
import os
from typing import Any
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from bigjax.data import mnist
from bigjax.evaluation import metrics
from bigjax.evaluation.chunked import map_chunks
from bigjax.models import classifier as classifier_lib
from bigjax.models import patch_masks_to_pixels, patchify
from bigjax.training import write_json
from experiments import classifier_setup
from experiments import gan_samples
from experiments import gan_setup
from experiments.gan_setup import heldout_digits

RATIOS = tuple(round(0.1 * i, 1) for i in range(10))


def retrieval_completions(
    train: np.ndarray,
    images: np.ndarray,
    pixels: np.ndarray,
    *,
    k: int = 5,
    rng: np.random.Generator,
) -> np.ndarray:
  """Completes each image by a random one of the k training images nearest to it on its source
  pixels, keeping the image's own source pixels: uint8 like `images`.

  Args:
    train: uint8 [M, H, W] training images; images: uint8 [N, H, W]; pixels: bool [N, H, W]
      source pixels.
  """
  x = train.reshape(len(train), -1).astype(np.float32) / 255.0
  y = images.reshape(len(images), -1).astype(np.float32) / 255.0
  m = pixels.reshape(len(images), -1).astype(np.float32)
  # sum_j m_ij (x_kj - y_ij)^2 for every (i, k), as matrix products.
  dist = (x * x) @ m.T - 2.0 * x @ (m * y).T + np.sum(m * y * y, axis=1)[None]  # [M, N]
  nearest = np.argpartition(dist, k, axis=0)[:k]  # [k, N]
  pick = nearest[rng.integers(k, size=len(images)), np.arange(len(images))]
  return np.where(pixels, images, train[pick])


def make_evaluator(
    config,
    predict: Callable,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    num_samples: int = 4,
    seed: int = 0,
    ratios=RATIOS,
    chunk: int = 500,
    train_images: np.ndarray | None = None,
    posterior_predict: Callable | None = None,
) -> Callable[[Any], dict[str, Any]]:
  """A function g_params -> metrics dict (see the module docstring), with every input fixed
  (masks, noise, the held-out halves), so values at different steps are comparable.

  Args:
    config: the run's config.
    predict: the classifier's `make_predict` function (uint8 images -> labels, probs, features).
    images, labels: held-out digits at the run's image size and their labels.
    num_samples: noise draws per digit and source set (>= 2, for the diversity).
    seed: chooses the random source sets and the noise.
    ratios: the source ratios.
    chunk: images per generator call.
    train_images: uint8 training images at the run's size for the `retrieval` reference (None:
      no reference).
    posterior_predict: a partial-digit classifier's `make_predict` function (uint8 images,
      bool source pixels -> labels, probs, features) for the `posterior` reference (None: no
      reference).
  """
  if num_samples < 2:
    raise ValueError(f"num_samples must be >= 2 (diversity compares draws), got {num_samples}.")
  gen, _ = gan_setup.build_models(config)
  shape, p = gan_setup.image_shape(config), config.model.patch_size
  sample_fn = gan_samples.make_sampler(gen, shape, p)
  n, length = len(images), gen.num_patches
  rng = np.random.default_rng([seed, 13])
  masks = {
      (kind, r): gan_samples.source_masks(
          [seed, 13, i], n, length, int(round(r * length)), initial=kind == "initial"
      )
      for kind in ("random", "initial")
      for i, r in enumerate(ratios)
  }
  z_cond = rng.standard_normal((num_samples, n, gen.noise_dim)).astype(np.float32)
  z_joint = rng.standard_normal((n, gen.noise_dim)).astype(np.float32)
  real = np.asarray(patchify(jnp.asarray(mnist.to_unit_range(images)), p))
  half = n // 2
  real_labels, _, real_features = predict(images)
  real_fd = metrics.frechet_distance(real_features[:half], real_features[half : 2 * half])
  pixels = lambda kind, r: np.asarray(
      patch_masks_to_pixels(jnp.asarray(masks[kind, r]), shape[:2], p)
  )
  retrieval = None
  if train_images is not None:
    retrieval, p_rng = {}, np.random.default_rng([seed, 17])
    for kind in ("random", "initial"):
      retrieval[kind] = []
      for r in ratios:
        done = retrieval_completions(train_images, images, pixels(kind, r), rng=p_rng)
        retrieval[kind].append(metrics.label_agreement(predict(done)[0], labels))
  posterior = None
  if posterior_predict is not None:
    posterior = {}
    for kind in ("random", "initial"):
      posterior[kind] = []
      for r in ratios:
        _, probs, _ = posterior_predict(images, pixels(kind, r))
        posterior[kind].append(float(np.mean(probs[np.arange(n), labels])))

  def draw(g_params, source, z):
    (images,) = map_chunks(lambda *a: sample_fn(g_params, *a), [real, source, z], size=chunk)
    return mnist.from_unit_range(images)

  def evaluate(g_params) -> dict[str, Any]:
    joint = draw(g_params, np.zeros((n, length), bool), z_joint)
    _, _, joint_features = predict(joint[:half])
    result = dict(
        num_images=n,
        num_samples=num_samples,
        seed=seed,
        ratios=list(ratios),
        classifier_accuracy=metrics.label_agreement(real_labels, labels),
        frechet=dict(
            joint_vs_heldout=metrics.frechet_distance(
                joint_features, real_features[half : 2 * half]
            ),
            heldout_half_vs_half=real_fd,
            num_per_set=half,
        ),
    )
    if retrieval is not None:
      result["retrieval"] = retrieval
    if posterior is not None:
      result["posterior"] = posterior
    for kind in ("random", "initial"):
      agreement, diversity = [], []
      for r in ratios:
        draws = np.stack([draw(g_params, masks[kind, r], z) for z in z_cond], axis=1)
        predicted, _, _ = predict(draws.reshape((-1,) + draws.shape[2:]))
        agreement.append(metrics.label_agreement(predicted.reshape(n, num_samples), labels))
        diversity.append(float(np.mean(metrics.pairwise_diversity(draws / 255.0))))
      result[kind] = dict(agreement=agreement, diversity=diversity)
      result.setdefault("monotone", {})[kind] = dict(
          agreement_rises=bool(np.all(np.diff(agreement) >= 0)),
          diversity_falls=bool(np.all(np.diff(diversity) <= 0)),
      )
    return result

  return evaluate


def plot(result: dict[str, Any], path: str, *, title: str) -> None:
  """Agreement and diversity against the source ratio (random and initial-portion S)."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4))
  for kind, style in (("random", "o-"), ("initial", "s--")):
    label = "random S" if kind == "random" else "initial-portion S"
    axes[0].plot(result["ratios"], result[kind]["agreement"], style, label=label)
    axes[1].plot(result["ratios"], result[kind]["diversity"], style, label=label)
  axes[0].axhline(
      result["classifier_accuracy"], color="grey", lw=0.8, ls=":", label="classifier on real digits"
  )
  for kind, style in (("random", "o:"), ("initial", "s:")):
    if "retrieval" in result:
      axes[0].plot(
          result["ratios"],
          result["retrieval"][kind],
          style,
          color="grey",
          alpha=0.7,
          ms=3,
          label=f"5-NN retrieval, {kind} S",
      )
    if "posterior" in result:
      axes[0].plot(
          result["ratios"],
          result["posterior"][kind],
          style,
          color="black",
          alpha=0.7,
          ms=3,
          label=f"exact sampler (p(y | x_S)), {kind} S",
      )
  axes[0].set(xlabel="source ratio |S| / L", ylabel="label agreement", ylim=(0, 1.02))
  axes[1].set(xlabel="source ratio |S| / L", ylabel="diversity (pairwise RMS, pixels in [0, 1])")
  for ax, where in zip(axes, ("upper left", "upper right")):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc=where)
  fd = result["frechet"]
  fig.suptitle(
      f"{title}   Fréchet (classifier features): joint {fd['joint_vs_heldout']:.2f}, "
      f"real halves {fd['heldout_half_vs_half']:.2f}",
      fontsize=9,
  )
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=150)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)


def load_classifier(config, classifier_dir: str, *, partial: bool = False):
  """The classifier's predict function for the run's image size (clear errors otherwise): the
  whole-digit judge, or (partial=True) a partial-digit classifier for the run's patch size."""
  model, params, info = classifier_setup.load(
      classifier_dir,
      image_size=int(config.data.image_size),
      source_patch=int(config.model.patch_size) if partial else 0,
  )
  return classifier_lib.make_predict(model, params), info


def run(
    workdir: str,
    classifier_dir: str,
    *,
    out: str | None = None,
    params: str = "auto",
    num_images: int | None = None,
    num_samples: int = 4,
    seed: int = 0,
    posterior_classifier_dir: str | None = None,
) -> dict[str, Any]:
  """The entry point's work: evaluates the newest checkpoint of `workdir`; returns the result."""
  config, g_params, step = gan_setup.load_run(workdir, params=params)
  predict, info = load_classifier(config, classifier_dir)
  posterior_predict = posterior_info = None
  if posterior_classifier_dir:
    posterior_predict, posterior_info = load_classifier(
        config, posterior_classifier_dir, partial=True
    )
  images, labels = heldout_digits(config, num_images)
  evaluate = make_evaluator(
      config,
      predict,
      images,
      labels,
      num_samples=num_samples,
      seed=seed,
      train_images=gan_setup.load_images(config),
      posterior_predict=posterior_predict,
  )
  classifiers = dict(
      classifier=dict(dir=os.path.abspath(classifier_dir), test_accuracy=info.get("test_accuracy"))
  )
  if posterior_info is not None:
    classifiers["posterior_classifier"] = dict(
        dir=os.path.abspath(posterior_classifier_dir),
        test_accuracy=posterior_info.get("test_accuracy"),
        test_accuracy_random_half=posterior_info.get("test_accuracy_random_half"),
    )
  result = dict(
      step=step,
      workdir=os.path.abspath(workdir),
      params=params,
      **classifiers,
      **evaluate(g_params),
  )
  out = out or os.path.join(workdir, "eval.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  write_json(out, result)
  plot(
      result, os.path.splitext(out)[0] + ".png", title=f"BigLearn-GAN {config.variant}, step {step}"
  )
  return result


def main(argv):
  from absl import app  # pylint: disable=import-outside-toplevel
  from absl import logging  # pylint: disable=import-outside-toplevel

  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = {k: v.value for k, v in _FLAGS.items()}
  for name in ("workdir", "classifier_dir"):
    if not f[name]:
      raise app.UsageError(f"--{name} is required.")
  result = run(
      f["workdir"],
      f["classifier_dir"],
      out=f["out"],
      params=f["params"],
      num_images=f["num_images"],
      num_samples=f["num_samples"],
      seed=f["seed"],
      posterior_classifier_dir=f["posterior_classifier_dir"],
  )
  summary = {k: result[k] for k in ("step", "classifier_accuracy", "frechet", "monotone")}
  half = result["ratios"].index(0.5)
  summary["agreement_at_0.5"] = {k: result[k]["agreement"][half] for k in ("random", "initial")}
  for name in ("retrieval", "posterior"):
    if name in result:
      summary[f"{name}_agreement_at_0.5"] = {
          k: result[name][k][half] for k in ("random", "initial")
      }
  print(json.dumps(summary, indent=1))


def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel

  return dict(
      workdir=flags.DEFINE_string("workdir", None, "A BigLearn-GAN run directory (MNIST)."),
      classifier_dir=flags.DEFINE_string(
          "classifier_dir",
          None,
          "A classifier trained by experiments.mnist_classifier at the " "run's image size.",
      ),
      out=flags.DEFINE_string(
          "out",
          None,
          "Output JSON (default <workdir>/eval.json); a PNG " "plot is written next to it.",
      ),
      params=flags.DEFINE_enum(
          "params",
          "auto",
          list(gan_setup.PARAMS),
          "Generator parameters: the EMA (ema; an error if the run kept "
          "none), the trained ones (raw), or the EMA when kept (auto).",
      ),
      num_images=flags.DEFINE_integer(
          "num_images", None, "Held-out digits to use (default: all of them)."
      ),
      num_samples=flags.DEFINE_integer("num_samples", 4, "Noise draws per digit and ratio."),
      seed=flags.DEFINE_integer("seed", 0, "Seed of the source sets and the noise."),
      posterior_classifier_dir=flags.DEFINE_string(
          "posterior_classifier_dir",
          None,
          "Optional: a partial-digit classifier "
          "(configs/mnist_classifier.py:partial with the run's patch size) for the exact-"
          "sampler reference `posterior`.",
      ),
  )


if __name__ == "__main__":
  from absl import app as _app  # pylint: disable=import-outside-toplevel

  _FLAGS = define_flags()
  _app.run(main)
