r"""Scores a TSV file with a finished fine-tuning run (paper App. E.2): accuracy (and F1 for MRPC)
and per-example predictions.

  python -m experiments.finetune_eval --workdir /tmp/rte_run --data glue_data/RTE/dev.tsv \
      --out /tmp/rte_scores

The file is in the run's task layout (bigjax.data.glue: RTE `index sentence1 sentence2 label`,
SST-2 `sentence label`, ...); without its label column (a test file) only the predictions are
written. p(y | x') is read as in training's dev scoring (the content stream, `<cls>` in the
slot: bigjax.finetuning.classify), with the run's own tokenizer and max length. The run
directory is only read (its newest readable checkpoint); the results go to --out:
  metrics.json       task, file, examples, truncated (examples that lost tokens), accuracy
                     (and f1) when labelled, the run's step
  predictions.tsv    index, prediction (the label string), label (when labelled), then
                     p(label) for every label of the task
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

from bigjax.data import glue
from bigjax.training import runs, write_json
from experiments import finetune_runs
from experiments import finetune_setup as setup


def evaluate_file(
    workdir: str, data: str, out: str, *, batch_size: int | None = None
) -> dict[str, Any]:
  """Scores `data` with the finished run in `workdir`; writes metrics.json and predictions.tsv
  into `out` (created; never inside the run directory). Returns the metrics.

  Raises:
    FileNotFoundError: no run, an unfinished one, or no such data file.
    IsADirectoryError: `data` is a directory.
    ValueError: `out` inside the run directory (also through a link), a pretraining run, a
      batch size below 1, or a file not in the task's layout (missing columns, labels outside
      the task's list).
  """
  workdir, out = os.path.abspath(workdir), os.path.abspath(out)
  # Through links too: an --out that resolves into the run would write inside it.
  real_run, real_out = os.path.realpath(workdir), os.path.realpath(out)
  if real_out == real_run or real_out.startswith(real_run + os.sep):
    raise ValueError(
        f"--out {out} is inside the run directory {workdir}"
        f"{f' (it resolves to {real_out})' if real_out != out else ''}, which this tool only "
        "reads; write the scores elsewhere."
    )
  if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
    raise ValueError(f"--batch_size must be a positive integer, got {batch_size}.")
  if os.path.isdir(data):
    raise IsADirectoryError(
        f"--data {data!r} is a directory; give a TSV file in the run's task layout (e.g. "
        f"{os.path.join(data, 'dev.tsv')})."
    )
  if not os.path.isfile(data):
    raise FileNotFoundError(f"--data {data!r} does not exist.")
  config = runs.read_config(workdir, finetune_runs.kind(workdir))
  if config.get("mode") == "pretrain":
    raise ValueError(
        f"{workdir} is a pretraining run (config.json: mode 'pretrain'): it has no classifier "
        "to score with. Fine-tune one from its model first, e.g. "
        f"`{finetune_runs.train_command('DIR', None)}` with --config.model_dir={workdir}/model, and "
        "score with that run."
    )
  run = runs.load(workdir, finetune_runs.kind(workdir))
  config = run.config
  task = glue.TASKS[config.task]
  hf_config = finetune_runs.read_hf_config(workdir)
  with tempfile.TemporaryDirectory() as tok_dir:  # the tokenizer alone, away from config.json
    shutil.copyfile(
        os.path.join(workdir, setup.TOKENIZER_FILE), os.path.join(tok_dir, setup.TOKENIZER_FILE)
    )
    examples = setup.load_split(config, tok_dir, None, path=data)
  log_p = setup.log_probs(
      hf_config,
      task.num_labels,
      run.state.params["xlnet"],
      examples,
      batch_size=batch_size or int(config.eval_batch_size),
  )
  predictions = np.argmax(log_p, -1)
  labelled = bool(len(examples.labels)) and bool(np.all(examples.labels >= 0))
  metrics = dict(
      task=task.name,
      file=os.path.abspath(data),
      examples=int(len(predictions)),
      truncated=int(examples.num_truncated),
      step=run.step,
      run=workdir,
  )
  if labelled:
    metrics.update(setup.dev_metrics(task.name, log_p, examples.labels))
  os.makedirs(out, exist_ok=True)
  rows = [
      ["index", "prediction"]
      + (["label"] if labelled else [])
      + [f"p({name})" for name in task.labels]
  ]
  probs = np.exp(log_p)
  for i, p in enumerate(predictions):
    rows.append(
        [str(i), task.labels[p]]
        + ([task.labels[examples.labels[i]]] if labelled else [])
        + [f"{v:.6f}" for v in probs[i]]
    )
  tmp = os.path.join(out, "predictions.tsv.tmp")
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    csv.writer(f, delimiter="\t", lineterminator="\n").writerows(rows)
  os.replace(tmp, os.path.join(out, "predictions.tsv"))
  write_json(os.path.join(out, "metrics.json"), metrics)
  return metrics


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  for name in ("workdir", "data", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required.")
  result = evaluate_file(FLAGS.workdir, FLAGS.data, FLAGS.out, batch_size=FLAGS.batch_size)
  print("\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A finished fine-tuning run (only read).")
  flags.DEFINE_string("data", None, "A TSV file in the run's task layout (GLUE's).")
  flags.DEFINE_string("out", None, "Directory for metrics.json and predictions.tsv.")
  flags.DEFINE_integer("batch_size", None, "Scoring batch (default: the run's " "eval_batch_size).")
  FLAGS = flags.FLAGS
  app.run(main)
