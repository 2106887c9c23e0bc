"""Evaluation of a permutation-model run (App. E.1): eval.json.

test accuracy of p(y | x') on the held-out digits (one order and eval.num_orders orders), and
the label agreement of label-conditioned samples judged by the project's MNIST classifier:
from the model's own p(x' | y) and, when eval.temperature and eval.guidance are not 1 and 0,
as those draw them (`_guided`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from bigjax.models import classifier as classifier_lib
from bigjax.models import vq
from bigjax.training import write_json
from configs import mnist_classifier as classifier_config
from experiments import classifier_setup
from experiments import mnist_classifier
from experiments import plm_setup
from experiments.plm_run import Run, encode, generate_rows, make_classify


def load_judge(config, workdir: str, *, progress: bool = True):
  """The MNIST classifier that judges samples: predict(images uint8) -> labels, and its info."""
  directory = config.eval.classifier_dir or os.path.join(workdir, "classifier")
  if not config.eval.classifier_dir and not os.path.isfile(
      os.path.join(directory, classifier_setup.SUMMARY_FILE)
  ):
    mnist_classifier.train(
        classifier_config.get_config(config.eval.classifier_variant), directory, progress=progress
    )
  model, params, info = classifier_setup.load(directory, image_size=vq.IMAGE_SIZE, source_patch=0)
  predict = classifier_lib.make_predict(model, params)
  return (lambda images: predict(images)[0]), info


def evaluate(
    run: Run, workdir: str, *, test_images=None, test_labels=None, progress: bool = True
) -> dict[str, Any]:
  """Test accuracy of p(y | x') and label agreement of label-conditioned samples; eval.json."""
  config = run.config
  if test_images is None:
    test_images, test_labels = plm_setup.load_split(config, config.data.test_split)
  t0 = time.perf_counter()
  tokens = encode(run, test_images)
  result = dict(objective=config.plm.objective, num_test=int(len(test_labels)))
  for n in sorted({1, int(config.eval.num_orders)}):
    fn = make_classify(
        run.model,
        run.layout,
        all_targets=plm_setup.classification_all_targets(config),
        num_orders=n,
    )
    labels, _ = fn(run.params, tokens, seed=config.seed)
    result[f"test_accuracy_{n}_orders"] = float(np.mean(labels == test_labels))
  result["test_accuracy"] = result[f"test_accuracy_{int(config.eval.num_orders)}_orders"]
  result["classify_seconds"] = time.perf_counter() - t0
  if config.plm.objective == "permutation":
    judge, info = load_judge(config, workdir, progress=progress)
    result["judge_test_accuracy"] = info["test_accuracy"]
    result["judge_dir"] = config.eval.classifier_dir or os.path.join(workdir, "classifier")
    t0 = time.perf_counter()
    k, c = int(config.eval.samples_per_label), run.layout.num_classes
    wanted = np.concatenate([np.repeat(np.arange(c), k), np.full(c * k, -1)]).astype(np.int32)
    # The model's own p(x' | y) first (temperature 1, no guidance), whatever eval.* says.
    images, labels = generate_rows(
        run, wanted, seed=config.seed + 100, temperature=1.0, guidance=0.0
    )
    judged = judge(images)
    conditioned = wanted >= 0
    result["label_agreement"], result["label_agreement_per_label"] = _agreement(
        judged[conditioned], wanted[conditioned], c
    )
    result["order"] = config.eval.order
    if config.eval.guidance > 0 or config.eval.temperature != 1:
      # The samples as eval.temperature and eval.guidance make them.
      result["guidance"] = float(config.eval.guidance)
      result["temperature"] = float(config.eval.temperature)
      result["label_agreement_guided"], result["label_agreement_guided_per_label"] = (
          sampler_agreement(run, judge, k, seed=config.seed + 100)
      )
    joint_labels = labels[~conditioned]
    result["joint_label_agreement"] = float(np.mean(judged[~conditioned] == joint_labels))
    result["joint_label_counts"] = np.bincount(joint_labels, minlength=10).tolist()
    result["samples_per_label"] = k
    result["sample_seconds"] = time.perf_counter() - t0
  write_json(os.path.join(workdir, "eval.json"), result)
  return result


def sampler_agreement(
    run: Run,
    judge,
    samples_per_label: int,
    *,
    seed: int,
    temperature: float | None = None,
    guidance: float | None = None,
) -> tuple[float, dict[str, float]]:
  """Label agreement of label-conditioned samples drawn at (temperature, guidance) (None: the
  run's eval.*), `samples_per_label` per class, as `judge` (images -> labels) sees them.

  Returns:
    (the fraction of all samples judged their label, {"0": fraction for label 0, ...}).
  """
  c = run.layout.num_classes
  wanted = np.repeat(np.arange(c), int(samples_per_label)).astype(np.int32)
  images, _ = generate_rows(run, wanted, seed=seed, temperature=temperature, guidance=guidance)
  return _agreement(judge(images), wanted, c)


def _agreement(
    judged: np.ndarray, wanted: np.ndarray, num_classes: int
) -> tuple[float, dict[str, float]]:
  """(fraction of judged == wanted, the same per wanted label as {"0": ..., ...})."""
  return (
      float(np.mean(judged == wanted)),
      {str(y): float(np.mean(judged[wanted == y] == y)) for y in range(num_classes)},
  )
