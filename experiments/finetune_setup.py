"""The fine-tuning experiment's setup (App. E.2), shared by its trainer, its sweep and its scorer.

From a `configs/finetune.py` config: the config checks, the task's data as token arrays, the two
readings of one XLNet (with the LM head for Eq. (15), without it for Eq. (16) and scoring), the
training state and its checkpoint signature, and the scoring of p(y | x') that the trainer's
dev metrics and the scorer share (`log_probs`, `dev_metrics`). A run directory's own files and
its kind for `bigjax.training.runs` are experiments.finetune_runs.
"""

from __future__ import annotations

import filecmp
import functools
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigjax import finetuning
from bigjax.data import glue
from bigjax.data import tokenizer as tokenizer_lib
from bigjax.models import xlnet
from bigjax.models import xlnet_weights
from bigjax.training import checkpoint as ckpt_lib
from configs import finetune as finetune_config
from experiments import config_checks

__all__ = [
    "FTState",
    "Models",
    "TextData",
    "build_models",
    "check_splits",
    "chunks",
    "compiled_scores",
    "dev_metrics",
    "log_probs",
    "hf_config_of",
    "init_params",
    "load_split",
    "model_signature",
    "task_dir",
    "validate_config",
]

SUMMARY_FILE = "result.json"
HF_CONFIG_FILE = "xlnet_config.json"
TOKENIZER_FILE = "spiece.model"
DATA_STREAM = 3  # bigjax.training.data_order: the fine-tuning runs' order of the examples


class FTState(NamedTuple):
  """The training state (checkpointed as is): params = {"xlnet": {"params": ...}} plus, when
  fine-tuning, "label_embedding" [C, D] (the label's content in its slot, Eq. (15)); rng holds
  raw key data."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


class Models(NamedTuple):
  """Two readings of one parameter tree: `lm` with the LM head (and the classifier when
  fine-tuning) for Eq. (15); `classifier` without the LM head, for Eq. (16) and scoring."""

  lm: xlnet.XLNet
  classifier: xlnet.XLNet | None


class TextData(NamedTuple):
  """A split as arrays: input_ids, token_type_ids, attention_mask int32 [N, L], labels int32
  [N] (-1 unlabelled), the sentences, and the examples that lost tokens to truncation."""

  input_ids: np.ndarray
  token_type_ids: np.ndarray
  attention_mask: np.ndarray
  labels: np.ndarray
  first: list
  second: list | None
  num_truncated: int

  def arrays(self) -> list[np.ndarray]:
    return [self.input_ids, self.token_type_ids, self.attention_mask, self.labels]


def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  check = config_checks.Checker(config, "configs/finetune.py")
  fail = check.fail
  if config.mode not in finetune_config.MODES:
    fail(f"mode={config.mode!r}; choose one of {finetune_config.MODES}.")
  for name in (
      "batch_size",
      "num_epochs",
      "keep_checkpoints",
      "log_every",
      "eval_batch_size",
      "data.max_length",
  ):
    check.integer(name)
  for name in ("warmup_steps", "eval_every", "plm.batch_size", "seed"):
    check.integer(name, minimum=0)
  if config.data.get("train_limit") is not None:
    check.integer("data.train_limit")  # >= 1; check_splits: at most the split's size
  if config.plm.batch_size > config.batch_size:
    fail(f"plm.batch_size={config.plm.batch_size} exceeds batch_size={config.batch_size}.")
  if not (config.learning_rate > 0 and config.grad_clip > 0 and config.weight_decay >= 0):
    fail("learning_rate and grad_clip must be > 0 and weight_decay >= 0.")
  if not config.beta >= 0:
    fail(f"beta must be >= 0 (0: FT), got {config.beta}.")
  if not 0.0 < config.plm.target_fraction <= 1.0:
    fail(f"plm.target_fraction must be in (0, 1], got {config.plm.target_fraction}.")
  if not 0.0 <= config.plm.label_last_prob <= 1.0:
    fail(f"plm.label_last_prob must be in [0, 1], got {config.plm.label_last_prob}.")
  # The mechanism switches (experiments.finetune_step), absent from configs written before them.
  weight = config.plm.get("label_weight")
  if weight is not None and not (isinstance(weight, (int, float)) and weight >= 0):
    fail(f"plm.label_weight must be None or a number >= 0, got {weight!r}.")
  if not config.get("body_lr_scale", 1.0) > 0:
    fail(f"body_lr_scale must be > 0 (1: the body at the full rate), got {config.body_lr_scale}.")
  switches = (weight is not None, config.plm.get("label_only"), config.plm.get("separate_adam"))
  if config.mode == "pretrain" and any(switches):
    fail("plm.label_weight, label_only and separate_adam are fine-tuning settings.")
  if config.data.dev_split == "test" or config.data.train_split == "test":
    fail(
        "data.train_split and data.dev_split may not be 'test': tune on dev only (GLUE's test "
        "labels are hidden, and the WordNet tasks' test split is kept apart)."
    )
  if config.data.train_split == config.data.dev_split:
    fail(
        f"data.train_split and data.dev_split are both {config.data.train_split!r}: the dev "
        "metric would be measured on training examples."
    )
  if config.mode == "pretrain":
    if not config.data.corpus:
      fail(
          "pretraining needs --config.data.corpus=FILE (a text file, one sentence per line, "
          "e.g. the WordNet glosses' corpus.txt)."
      )
    if not os.path.isfile(config.data.corpus):
      raise FileNotFoundError(f"--config.data.corpus: no file {config.data.corpus!r}.")
    m = config.model
    for name in (
        "model.d_model",
        "model.n_layer",
        "model.n_head",
        "model.d_inner",
        "data.heldout",
        "data.vocab_size",
    ):
      check.integer(name)
    if m.d_model % m.n_head:
      fail(f"model.d_model={m.d_model} is not divisible by model.n_head={m.n_head}.")
    if not 0.0 <= m.dropout < 1.0:
      fail(f"model.dropout must be in [0, 1), got {m.dropout}.")
    if config.beta:
      fail("beta is a fine-tuning setting; pretraining is Eq. (15) alone (leave beta at 0).")
    return
  if config.task not in glue.TASKS:
    fail(f"task={config.task!r}; choose one of {sorted(glue.TASKS)}.")
  if not config.model_dir:
    fail(
        "fine-tuning needs --config.model_dir: a Hugging Face XLNet directory (config.json, "
        "model.safetensors or pytorch_model.bin, spiece.model), e.g. xlnet-base-cased, or the "
        "`model` folder a pretraining run writes (--config configs/finetune.py:pretrain)."
    )
  if not os.path.isdir(config.model_dir):
    raise FileNotFoundError(
        f"--config.model_dir {config.model_dir!r} does not exist; give a "
        "Hugging Face XLNet directory (config.json, weights, spiece.model)."
    )
  if not task_dir(config):
    fail(
        f"task {config.task!r} needs --config.data.task_dir: the folder with its GLUE "
        "train.tsv and dev.tsv (e.g. glue_data/RTE)."
    )


def check_splits(config) -> None:
  """Refuses, before anything is tokenised or trained, a dev split that holds no example or that
  is the training file itself (the same file, a link to it, or a copy): its "dev" metrics
  would be measured on training examples."""
  folder = task_dir(config)
  train_path = os.path.join(folder, f"{config.data.train_split}.tsv")
  dev_path = os.path.join(folder, f"{config.data.dev_split}.tsv")
  if not (os.path.isfile(train_path) and os.path.isfile(dev_path)):
    return  # glue.load_tsv names the missing file
  if os.path.samefile(train_path, dev_path) or filecmp.cmp(train_path, dev_path, shallow=False):
    raise ValueError(
        f"{dev_path} (data.dev_split={config.data.dev_split!r}) is the training file "
        f"{train_path} (the same file, a link to it or an identical copy): its dev metrics "
        "would be measured on training examples. Give the task's own dev split in "
        "data.task_dir."
    )
  limit = config.data.get("train_limit")
  if limit is not None:
    glue.subset(glue.load_tsv(config.task, folder, config.data.train_split), limit)
  dev = glue.load_tsv(config.task, folder, config.data.dev_split)
  if not len(dev.labels):
    raise ValueError(
        f"{dev_path} (data.dev_split={config.data.dev_split!r}) holds no example: the dev "
        "metrics scored after each epoch need at least one labelled row. Fill it, or point "
        "data.task_dir at the task's folder."
    )


def task_dir(config) -> str:
  """The task's TSV folder: data.task_dir, or the shipped copy of a WordNet task."""
  if config.data.task_dir:
    return os.path.abspath(config.data.task_dir)
  return glue.wordnet_dir(config.task) if config.task in ("lexname", "hypernym") else ""


@functools.lru_cache(maxsize=8)
def _encoded(
    tokenizer_dir: str, task: str, path: str, max_length: int, labelled: bool, limit: int | None
) -> TextData:
  examples = glue.subset(glue.read_tsv(task, path, labelled=labelled), limit)
  tok = tokenizer_lib.load_tokenizer(tokenizer_dir)
  enc = tokenizer_lib.encode(tok, examples.first, examples.second, max_length=max_length)
  return TextData(
      enc.input_ids,
      enc.token_type_ids,
      enc.attention_mask,
      examples.labels,
      list(examples.first),
      None if examples.second is None else list(examples.second),
      enc.num_truncated,
  )


def load_split(
    config, tokenizer_dir: str, split: str | None, *, path: str | None = None
) -> TextData:
  """A split of the config's task (or any TSV file `path` in the task's layout, labels
  optional), tokenised with the tokenizer in `tokenizer_dir` to data.max_length; the training
  split cut to data.train_limit examples (glue.subset). Cached: a sweep tokenises each split
  once."""
  limit = None
  if path is None:
    glue.load_tsv(config.task, task_dir(config), split)  # its checks and messages, then cached
    path, labelled = os.path.join(task_dir(config), f"{split}.tsv"), split != "test"
    if split == config.data.train_split:
      limit = config.data.get("train_limit")
  else:
    labelled = False
  return _encoded(
      tokenizer_dir,
      config.task,
      os.path.abspath(path),
      int(config.data.max_length),
      labelled,
      None if limit is None else int(limit),
  )


def hf_config_of(config) -> dict:
  """The Hugging Face config of a fine-tuning run's model (model_dir's config.json, checked, and
  its vocabulary against the tokenizer's: `check_vocabulary`)."""
  hf_config = xlnet_weights.read_config(config.model_dir)
  check_vocabulary(hf_config, config.model_dir, config.model_dir)
  return hf_config


def check_vocabulary(hf_config: dict, model_dir: str, tokenizer_dir: str) -> None:
  """Refuses a model whose embedding has fewer rows than the tokenizer has pieces: the ids past
  its vocab_size would index no row, and the first step's loss would be NaN."""
  pieces = len(tokenizer_lib.load_tokenizer(tokenizer_dir))
  rows = xlnet_weights.model_kwargs(hf_config)["vocab_size"]
  if rows < pieces:
    raise ValueError(
        f"{os.path.join(model_dir, 'config.json')}: vocab_size={rows} is smaller than the "
        f"tokenizer's {pieces} pieces ({os.path.join(tokenizer_dir, TOKENIZER_FILE)}): token ids "
        f"{rows}..{pieces - 1} have no embedding row. Give the model's own spiece.model, or a "
        f"model (config.json and weights) with vocab_size >= {pieces}."
    )


def build_models(hf_config: dict, num_labels: int) -> Models:
  """The XLNet of `hf_config` with the LM head (and a `num_labels`-way classifier when > 0), and
  the same without the LM head (None when num_labels is 0)."""
  lm = xlnet.XLNet(**xlnet_weights.model_kwargs(hf_config, lm_head=True, num_labels=num_labels))
  classifier = (
      xlnet.XLNet(**xlnet_weights.model_kwargs(hf_config, lm_head=False, num_labels=num_labels))
      if num_labels
      else None
  )
  return Models(lm, classifier)


def pretrain_hf_config(config, vocab_size: int) -> dict:
  """The HF config of the XLNet a pretraining run trains from scratch (config.model)."""
  m = config.model
  return dict(
      model_type="xlnet",
      vocab_size=int(vocab_size),
      d_model=int(m.d_model),
      n_layer=int(m.n_layer),
      n_head=int(m.n_head),
      d_head=int(m.d_model // m.n_head),
      d_inner=int(m.d_inner),
      ff_activation="gelu",
      attn_type="bi",
      layer_norm_eps=1e-12,
      dropout=float(m.dropout),
      bi_data=False,
      clamp_len=-1,
      summary_type="last",
      summary_use_proj=True,
      summary_activation="tanh",
      summary_last_dropout=0.1,
      tie_word_embeddings=True,
      pad_token_id=5,
      bos_token_id=1,
      eos_token_id=2,
  )


TOKENIZER_SOURCE_FILE = "tokenizer_source.json"  # <workdir>/model: what spiece.model was trained on


def pretraining_tokenizer(config, workdir: str) -> str:
  """<workdir>/model holding the SentencePiece vocabulary of data.corpus and data.vocab_size.

  It is trained into a temporary sibling and renamed into place, then recorded in
  TOKENIZER_SOURCE_FILE (the corpus' SHA-256, vocab_size, seed). A vocabulary already there is
  reused when its record matches; otherwise, when the run has no checkpoint yet, it is a failed
  start's leftover and is trained again; a run with checkpoints trained on another one is refused.
  """
  corpus = config.data.corpus
  glue.require_utf8(corpus, f"--config.data.corpus: save {corpus} as UTF-8 text")
  digest = hashlib.sha256()
  with open(corpus, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  source = dict(
      corpus=os.path.abspath(corpus),
      corpus_sha256=digest.hexdigest(),
      vocab_size=int(config.data.vocab_size),
      seed=0,
  )
  model_dir = os.path.join(workdir, "model")
  spm_path = os.path.join(model_dir, TOKENIZER_FILE)
  record_path = os.path.join(model_dir, TOKENIZER_SOURCE_FILE)
  held = None
  if os.path.isfile(record_path):
    with open(record_path) as f:
      held = json.load(f)
  same = lambda a, b: {k: a[k] for k in a if k != "corpus"} == {k: b[k] for k in b if k != "corpus"}
  if os.path.isfile(spm_path):
    if held is not None and same(held, source):
      return model_dir
    checkpoints = os.path.join(workdir, "checkpoints")
    if os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints)):
      if held is None:  # a run written before the record existed: its own vocabulary
        return model_dir
      raise ckpt_lib.SignatureMismatchError(
          f"{workdir} holds a run pretrained with the vocabulary of {held} ({record_path}), "
          f"not this config's {source}; use a new --workdir, or that corpus and vocab_size."
      )
  os.makedirs(workdir, exist_ok=True)
  scratch = tempfile.mkdtemp(prefix="model.partial-", dir=workdir)
  try:
    tokenizer_lib.train_sentencepiece(
        corpus, scratch, vocab_size=source["vocab_size"], seed=source["seed"]
    )
    os.makedirs(model_dir, exist_ok=True)
    if os.path.exists(record_path):
      os.remove(record_path)  # no record beside a vocabulary it does not describe
    os.replace(os.path.join(scratch, TOKENIZER_FILE), spm_path)
    ckpt_lib.write_json(record_path, source)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return model_dir


def num_labels_of(config) -> int:
  return 0 if config.mode == "pretrain" else glue.TASKS[config.task].num_labels


def init_params(config, models: Models, rng) -> dict:
  """Fresh parameters: a pretraining run's XLNet drawn as HF does; a fine-tuning run's loaded
  from model_dir (the classifier head drawn when absent there) plus the label embedding."""
  k_model, k_label = jax.random.split(rng)
  if config.mode == "pretrain":
    ids = jnp.zeros((2, 4), jnp.int32)
    return dict(xlnet=models.lm.init(k_model, ids))
  num_labels = num_labels_of(config)
  state = xlnet_weights.read_state_dict(config.model_dir)
  head = state.get("logits_proj.weight")
  if head is not None and head.shape[0] != num_labels:
    raise ValueError(
        f"{config.model_dir} has a {head.shape[0]}-way classifier, but task "
        f"{config.task!r} has {num_labels} labels {list(glue.TASKS[config.task].labels)}"
        "; fine-tune from a directory without that head (e.g. the pretrained LM)."
    )
  params = xlnet_weights.state_dict_to_params(state, models.lm, new_heads_rng=k_model)
  embedding = params["params"]["transformer"]["word_embedding"]["embedding"]
  return dict(
      xlnet=params, label_embedding=finetuning.init_label_embedding(embedding, num_labels, k_label)
  )


def model_signature(config, hf_config: dict) -> dict[str, Any]:
  kw = xlnet_weights.model_kwargs(hf_config)
  return dict(
      mode=str(config.mode),
      num_labels=num_labels_of(config),
      **{k: kw[k] for k in ("vocab_size", "d_model", "n_layer", "n_head", "d_inner")},
  )


# ----------------------------------------------------------------------------- scoring


@functools.lru_cache(maxsize=8)
def compiled_scores(hf_json: str, num_labels: int):
  """Jitted (xlnet params, input_ids, token_type_ids, attention_mask) -> log p(y | x') [B, C]."""
  models = build_models(json.loads(hf_json), num_labels)
  return jax.jit(
      lambda params, ids, tt, am: finetuning.classify(
          models.classifier, params, dict(input_ids=ids, token_type_ids=tt, attention_mask=am)
      )
  )


def chunks(arrays, size: int):
  """Fixed-size chunks of the rows of `arrays` (the last padded by repeating row 0), with the
  number of real rows of each: one compiled shape for any number of examples."""
  n = len(arrays[0])
  for start in range(0, n, size):
    part = [a[start : start + size] for a in arrays]
    real = len(part[0])
    if real < size:
      part = [
          np.concatenate([p, np.repeat(a[:1], size - real, axis=0)]) for p, a in zip(part, arrays)
      ]
    yield part, real


def log_probs(
    hf_config: dict, num_labels: int, xlnet_params, data: TextData, *, batch_size: int
) -> np.ndarray:
  """log p(y | x') [N, C] of every example (the FT reading), in chunks of batch_size."""
  scores = compiled_scores(json.dumps(hf_config, sort_keys=True), num_labels)
  out = [
      np.asarray(scores(xlnet_params, *part))[:real]
      for part, real in chunks(
          [data.input_ids, data.token_type_ids, data.attention_mask], batch_size
      )
  ]
  return np.concatenate(out) if out else np.zeros((0, num_labels), np.float32)


def dev_metrics(
    task: str, log_p: np.ndarray, labels: np.ndarray, *, halves: bool = False
) -> dict[str, float]:
  """The task's metrics (accuracy, and F1 for MRPC) and the mean negative log-likelihood; with
  `halves`, the same on each of dev's two fixed halves too (glue.halves; "half_a_accuracy",
  ...: select on one half, report on the other)."""
  result = glue.evaluate(task, np.argmax(log_p, -1), labels)
  result["nll"] = float(-np.mean(log_p[np.arange(len(labels)), labels]))
  if halves and len(labels) >= 2:
    for name, i in zip(("half_a", "half_b"), glue.halves(len(labels))):
      result.update({f"{name}_{k}": v for k, v in dev_metrics(task, log_p[i], labels[i]).items()})
  return result
