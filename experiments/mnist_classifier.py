r"""Trains the MNIST classifier that scores generated digits (bigjax.evaluation.classifier).

  python -m experiments.mnist_classifier --config configs/mnist_classifier.py:cpu \
      --workdir /tmp/clf_cpu

Writes config.json, checkpoints/, metrics.jsonl and classifier.json (test accuracy, steps,
timings) into --workdir, resumes from the newest checkpoint found there, and prints the summary.
Load the result with `bigjax.evaluation.classifier.load(workdir, image_size=...)`.
"""
from __future__ import annotations

import json

from absl import app
from absl import logging

from bigjax.evaluation import classifier
from experiments import cli


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the directory for the classifier's "
                         "checkpoints and classifier.json.")
  summary = classifier.train(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  _CONFIG, _WORKDIR = cli.define_config_and_workdir(
      "mnist_classifier.py",
      config_help="Config file and variant, e.g. configs/mnist_classifier.py:cpu (the default).",
      workdir_help="Directory for the classifier's checkpoints, metrics and classifier.json; a "
                   "run resumes from the newest checkpoint found here.")
  app.run(main)
