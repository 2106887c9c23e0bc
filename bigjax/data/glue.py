"""GLUE RTE, MRPC, SST-2 and the two WordNet tasks as (sentences, labels) (paper App. E.2).

App. E.2 fine-tunes XLNet on GLUE RTE/MRPC/SST-2 (Table 4: accuracy, and F1 for MRPC, on dev).
Two routes read them, both offline once the data is on disk:

  * the GLUE TSV files a user downloaded (`glue_data/RTE/{train,dev,test}.tsv`, ...), read with
    `load_tsv(task, task_dir, split)`, in GLUE's exact layouts:
      RTE   index  sentence1  sentence2  label        (label: entailment / not_entailment)
      MRPC  Quality  #1 ID  #2 ID  #1 String  #2 String  (test: index instead of Quality)
      SST-2 sentence  label                           (test: index  sentence)
    test files have no labels (returned as -1);
  * tensorflow-datasets `glue/rte`, `glue/mrpc`, `glue/sst2`, prepared in the TF-free
    `array_record` format (`prepare_tfds`, then `load_tfds`).

The WordNet tasks (`lexname`: SST-2 layout, 10 noun categories; `hypernym`: RTE layout) are
GLUE-shaped stand-ins built from WordNet 3.0 for machines without GLUE, shipped with bigjax
(train and dev; `wordnet_dir(task)`); the same `load_tsv` reads them. WordNet's licence must
travel with every copy of that data (bigjax/data/wordnet/README.md holds it).

Labels are class ids in the order of the task's `labels` list; a label outside it is an error.
`subset(examples, n)` keeps a fixed, seeded n of a split (data.train_limit), and `halves(n)`
splits a split's indices in two fixed halves (select on one half of dev, report on the other).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
from typing import NamedTuple
from collections.abc import Sequence

import numpy as np

__all__ = [
    "Task",
    "TASKS",
    "Examples",
    "wordnet_dir",
    "load_tsv",
    "read_tsv",
    "require_utf8",
    "prepare_tfds",
    "load_tfds",
    "accuracy",
    "f1",
    "evaluate",
]


@dataclasses.dataclass(frozen=True)
class Task:
  """One classification task.

  name: registry key.
  text_columns: TSV columns of sentence A (and B).
  label_column: TSV column of the label (absent from test files, whose other columns differ;
    only the text columns are required there).
  labels: label strings as written in the TSV; the class id is the index.
  metrics: names of the dev metrics (`evaluate`).
  tfds_name: the tensorflow-datasets config of GLUE, or None.
  """

  name: str
  text_columns: tuple[str, ...]
  label_column: str
  labels: tuple[str, ...]
  metrics: tuple[str, ...] = ("accuracy",)
  tfds_name: str | None = None

  @property
  def num_labels(self) -> int:
    return len(self.labels)


TASKS = {
    "rte": Task(
        "rte",
        ("sentence1", "sentence2"),
        "label",
        ("entailment", "not_entailment"),
        tfds_name="rte",
    ),
    "mrpc": Task(
        "mrpc",
        ("#1 String", "#2 String"),
        "Quality",
        ("0", "1"),
        metrics=("accuracy", "f1"),
        tfds_name="mrpc",
    ),
    "sst2": Task("sst2", ("sentence",), "label", ("0", "1"), tfds_name="sst2"),
    "lexname": Task(
        "lexname",
        ("sentence",),
        "label",
        (
            "noun.act",
            "noun.animal",
            "noun.artifact",
            "noun.cognition",
            "noun.communication",
            "noun.location",
            "noun.person",
            "noun.plant",
            "noun.state",
            "noun.substance",
        ),
    ),
    "hypernym": Task("hypernym", ("sentence1", "sentence2"), "label", ("hypernym", "unrelated")),
}
_SPLITS = ("train", "dev", "test")
_TFDS_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
_TFDS_HELP = (
    "pip install tensorflow-datasets array_record importlib_resources (TensorFlow is " "not needed)"
)


class Examples(NamedTuple):
  """first: N sentences A; second: N sentences B or None; labels: int32 [N] (-1: unlabelled)."""

  first: list
  second: list | None
  labels: np.ndarray


def _task(task: str | Task) -> Task:
  if isinstance(task, Task):
    return task
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}.")
  return TASKS[task]


def _label_ids(task: Task, values, where: Sequence[str]) -> np.ndarray:
  index = {label: i for i, label in enumerate(task.labels)}
  bad = [(w, v) for w, v in zip(where, values) if v not in index]
  if bad:
    raise ValueError(
        f"{task.name}: label {bad[0][1]!r} at {bad[0][0]} is not one of "
        f"{list(task.labels)} ({len(bad)} such rows)."
    )
  return np.asarray([index[v] for v in values], np.int32)


def wordnet_dir(task: str) -> str:
  """The folder of a WordNet task shipped with bigjax ("lexname" or "hypernym"; train and dev)."""
  if task not in ("lexname", "hypernym"):
    raise ValueError(
        f"bigjax ships the WordNet tasks 'lexname' and 'hypernym', not {task!r}; "
        "GLUE's tasks are read from the directory you downloaded them to."
    )
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "wordnet", task)


def load_tsv(task: str | Task, task_dir: str, split: str) -> Examples:
  """Reads `task_dir/{split}.tsv` in the task's GLUE layout.

  Args:
    task: a key of TASKS or a Task.
    task_dir: the task's directory (e.g. glue_data/RTE, or the WordNet task's).
    split: "train", "dev" or "test" (test: no labels needed; labels -1).

  Returns:
    Examples.

  Raises:
    FileNotFoundError: no such file (the message lists what the directory holds).
    ValueError: missing columns, rows with the wrong number of fields, labels outside the list.
  """
  task = _task(task)
  if split not in _SPLITS:
    raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
  path = os.path.join(task_dir, f"{split}.tsv")
  if not os.path.isfile(path):
    held = sorted(os.listdir(task_dir)) if os.path.isdir(task_dir) else "no such directory"
    raise FileNotFoundError(
        f"{task.name}: no {path} (the directory holds: {held}); expected "
        f"GLUE's {split}.tsv with columns {list(task.text_columns)}"
        f"{'' if split == 'test' else ' and ' + repr(task.label_column)}."
    )
  return read_tsv(task, path, labelled=split != "test")


def require_utf8(path: str, fix: str) -> None:
  """Raises ValueError naming the first line of `path` that is not UTF-8 (its byte too), and
  `fix`; returns when the whole file decodes."""
  with open(path, "rb") as f:
    for number, line in enumerate(f, start=1):
      try:
        line.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: line {number} is not UTF-8 (byte {line[e.start:e.start + 1]!r} at column "
            f"{e.start + 1}); {fix}, e.g. iconv -f latin1 -t utf-8."
        ) from None


def read_tsv(task: str | Task, path: str, *, labelled: bool = True) -> Examples:
  """Reads any TSV file in the task's GLUE layout (`load_tsv` reads a split's).

  Args:
    task: a key of TASKS or a Task.
    path: the file.
    labelled: the label column is required; False: optional (absent: labels -1, as GLUE's test
      files).

  Raises:
    FileNotFoundError, ValueError: as `load_tsv`.
  """
  task = _task(task)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{task.name}: no file {path!r}.")
  csv.field_size_limit(sys.maxsize)
  # utf-8-sig: GLUE's MRPC files start with a byte-order mark; QUOTE_NONE: quotes are text.
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  except UnicodeDecodeError:
    require_utf8(path, "save the TSV file as UTF-8 (GLUE's files are)")
    raise
  if not rows:
    raise ValueError(f"{path} is empty; expected a header row {list(task.text_columns)}.")
  header = rows[0]
  need = list(task.text_columns) + ([task.label_column] if labelled else [])
  absent = [c for c in need if c not in header]
  if absent:
    raise ValueError(
        f"{path}: columns {absent} missing from the header {header}; {task.name} "
        f"needs {need} (GLUE layout)."
    )
  columns = [header.index(c) for c in need]
  body = [(n + 2, r) for n, r in enumerate(rows[1:]) if r != []]
  short = [n for n, r in body if len(r) != len(header)]
  if short:
    raise ValueError(
        f"{path}: line {short[0]} has a different number of tab-separated fields "
        f"than the header ({len(header)}; {len(short)} such lines)."
    )
  fields = [[r[c] for c in columns] for _, r in body]
  first = [f[0] for f in fields]
  second = [f[1] for f in fields] if len(task.text_columns) == 2 else None
  if task.label_column not in header:
    labels = np.full(len(fields), -1, np.int32)
  else:
    label_at = header.index(task.label_column)
    labels = _label_ids(task, [r[label_at] for _, r in body], [f"{path}:{n}" for n, _ in body])
  return Examples(first, second, labels)


def _tfds_builder(task: Task, data_dir: str | None):
  if task.tfds_name is None:
    raise ValueError(f"{task.name} is not in tensorflow-datasets; read it with load_tsv.")
  try:
    from tensorflow_datasets.text import glue as tfds_glue
  except ImportError:
    raise ImportError(f"the tensorflow-datasets route needs it: {_TFDS_HELP}.") from None
  # Imported directly: without TensorFlow, tfds.builder("glue/rte") does not find the builder.
  return tfds_glue.Glue(config=task.tfds_name, data_dir=data_dir, file_format="array_record")


def prepare_tfds(task: str | Task, *, data_dir: str | None = None) -> str:
  """Downloads and prepares tfds `glue/<task>` in the array_record format (needs the network
  once). Returns the dataset's directory."""
  builder = _tfds_builder(_task(task), data_dir)
  builder.download_and_prepare()
  return str(builder.data_dir)


def load_tfds(task: str | Task, split: str, *, data_dir: str | None = None) -> Examples:
  """Reads a prepared tfds `glue/<task>` (array_record, no TensorFlow) as Examples.

  Args:
    task: "rte", "mrpc" or "sst2".
    split: "train", "dev" (tfds' "validation") or "test" (labels -1).
    data_dir: tfds data directory (default: tfds' own, ~/tensorflow_datasets).

  Raises:
    ImportError: tensorflow-datasets is not installed.
    FileNotFoundError: the dataset is not prepared in array_record format there.
  """
  task = _task(task)
  if split not in _SPLITS:
    raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
  builder = _tfds_builder(task, data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"tfds glue/{task.tfds_name} is not prepared under {builder.data_dir}: run "
        f"bigjax.data.glue.prepare_tfds({task.name!r}, data_dir=...) once on a machine with the "
        "network (array_record format), or read GLUE's TSV files with load_tsv."
    )
  source = builder.as_data_source(split=_TFDS_SPLITS[split])
  records = [source[i] for i in range(len(source))]
  text = lambda r, key: r[key].decode("utf-8") if isinstance(r[key], bytes) else str(r[key])
  keys = ("sentence1", "sentence2") if len(task.text_columns) == 2 else ("sentence",)
  first = [text(r, keys[0]) for r in records]
  second = [text(r, keys[1]) for r in records] if len(keys) == 2 else None
  labels = np.asarray([int(r["label"]) for r in records], np.int32)
  if np.any((labels < -1) | (labels >= task.num_labels)):
    raise ValueError(f"tfds glue/{task.tfds_name} holds labels outside [-1, {task.num_labels}).")
  return Examples(first, second, labels)


def accuracy(predictions, labels) -> float:
  """Share of predictions [N] equal to labels [N]."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape or labels.ndim != 1 or not labels.size:
    raise ValueError(
        f"predictions and labels must be equal, non-empty [N]; got "
        f"{predictions.shape} and {labels.shape}."
    )
  return float(np.mean(predictions == labels))


def f1(predictions, labels, *, positive: int = 1) -> float:
  """F1 of the positive class (MRPC: 1 = paraphrase): 2 TP / (2 TP + FP + FN); 0 if undefined."""
  accuracy(predictions, labels)  # the same shape checks
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  tp = np.sum((predictions == positive) & (labels == positive))
  wrong = np.sum((predictions == positive) != (labels == positive))
  return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 0.0


def evaluate(task: str | Task, predictions, labels) -> dict[str, float]:
  """The task's dev metrics, e.g. {"accuracy": .., "f1": ..} for MRPC (Table 4).

  Raises:
    ValueError: unlabelled examples (-1) among labels, or ids outside the label list.
  """
  task = _task(task)
  labels = np.asarray(labels)
  if np.any((labels < 0) | (labels >= task.num_labels)):
    raise ValueError(
        f"{task.name}: labels must be class ids in [0, {task.num_labels}) (test "
        "splits are unlabelled, -1)."
    )
  metrics = {"accuracy": accuracy, "f1": f1}
  return {name: metrics[name](predictions, labels) for name in task.metrics}


SUBSET_SEED = 0  # the permutation every training subset and dev half is drawn from


def subset(examples: Examples, limit: int | None, *, seed: int = SUBSET_SEED) -> Examples:
  """The first `limit` examples of a fixed permutation of the split (drawn from `seed`, not from
  a run's seed): every method and seed fine-tunes on the same examples, and a smaller subset is
  part of every larger one. None: the whole split, unchanged.

  Raises:
    ValueError: a limit that is not a positive integer, or larger than the split.
  """
  if limit is None:
    return examples
  n = len(examples.labels)
  if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or not 0 < limit <= n:
    raise ValueError(
        f"data.train_limit={limit!r}: give a whole number of training examples in [1, {n}] "
        f"(this split holds {n}), or leave it unset (None) for all of them."
    )
  keep = np.sort(np.random.default_rng(seed).permutation(n)[: int(limit)])
  pick = lambda xs: None if xs is None else [xs[i] for i in keep]
  return Examples(pick(examples.first), pick(examples.second), examples.labels[keep])


def halves(num_examples: int, *, seed: int = SUBSET_SEED) -> tuple[np.ndarray, np.ndarray]:
  """Two disjoint halves of a split's example indices (a fixed, seeded permutation; sorted),
  e.g. to select hyperparameters on one half of dev and report on the other."""
  if num_examples < 2:
    raise ValueError(f"halves: {num_examples} example(s) cannot be split in two.")
  order = np.random.default_rng(seed + 1).permutation(num_examples)
  return np.sort(order[: num_examples // 2]), np.sort(order[num_examples // 2 :])
