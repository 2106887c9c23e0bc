r"""Fine-tunes XLNet with FT (Eq. (16)) or big-learn (Eq. (17)), or pretrains it with Eq. (15)
(paper App. E.2; the objectives are bigjax.finetuning).

  python -m experiments.finetune --config configs/finetune.py:rte --workdir /tmp/rte_run \
      --config.model_dir=/path/to/xlnet-base-cased --config.data.task_dir=glue_data/RTE \
      --config.beta=0.4
  python -m experiments.finetune --config configs/finetune.py:pretrain --workdir /tmp/wn_lm \
      --config.data.corpus=/path/to/corpus.txt

Fine-tuning (`mode="finetune"`) loads model_dir (its classifier head drawn as HF does when
absent), tokenises the task's train and dev splits to data.max_length and trains num_epochs
epochs on bigjax.training.train: one jitted step (the state replicated and donated, the batch
split over a 1-D device mesh), the learning rate of HF's linear warm-up/decay schedule given to
the step as an argument, a checkpoint and the dev metrics after every epoch. The step, and the
dev scoring, are compiled once per process for every run of the same model and shapes
(experiments.finetune_sweep runs its whole grid on two compiled steps: FT and big-learn).

Pretraining (`mode="pretrain"`) trains a SentencePiece vocabulary on data.corpus (into
<workdir>/model, once), holds data.heldout lines out, and trains config.model from scratch with
Eq. (15) over every text token; at the end it writes the held-out loss per token beside a
unigram baseline and completions of held-out glosses, and <workdir>/model as a Hugging Face
XLNet directory (`--config.model_dir` of a fine-tuning run; transformers loads it too).

Writes into --workdir:
  config.json, checkpoints/, metrics.jsonl (and TensorBoard events)   the loop's
  bigjax_run.json, .bigjax_run.lock   the run directory's marker and lock
                       (bigjax.training.rundir: one process writes a run)
  xlnet_config.json, spiece.model     the run's model config and tokenizer (self-contained)
  dev.jsonl            fine-tuning: the dev metrics after each epoch (and on dev's two halves)
  heldout.jsonl        pretraining: the held-out loss every eval_every steps
  result.json          the summary: the final dev metrics (fine-tuning) or the held-out loss,
                       the unigram baseline and the completions (pretraining); removed while
                       a run continues training
  model/               pretraining: the Hugging Face directory
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import numpy as np

from bigjax import finetuning
from bigjax.data import glue
from bigjax.data import tokenizer as tokenizer_lib
from bigjax.models import xlnet_weights
from bigjax.training import batch_fn, distributed, loop, sharding, write_json
from bigjax.training import optimizers
from bigjax.training import rundir
from experiments import cli
from experiments import finetune_runs
from experiments import finetune_setup as setup
from experiments import finetune_step
from experiments.finetune_step import compiled_step

# ----------------------------------------------------------------------------- pretraining data


def corpus_examples(config, tokenizer_dir: str) -> tuple[setup.TextData, setup.TextData]:
  """(train, held-out) token arrays of the corpus. data.heldout lines, drawn once with seed 0
  (every seed holds out the same lines), are held out as single sentences; each other line is
  an example, paired with the next line (A <sep> B) with probability data.pair_prob when that
  line is not held out."""
  with open(config.data.corpus, encoding="utf-8") as f:
    lines = [line.strip() for line in f]
  lines = [line for line in lines if line]
  if len(lines) <= config.data.heldout + config.batch_size:
    raise ValueError(
        f"{config.data.corpus} has {len(lines)} non-empty lines; pretraining needs "
        f"more than data.heldout ({config.data.heldout}) + batch_size "
        f"({config.batch_size})."
    )
  rng = np.random.default_rng(0)
  held = np.zeros(len(lines), bool)
  held[rng.choice(len(lines), config.data.heldout, replace=False)] = True
  pair = np.random.default_rng([0, 1]).random(len(lines)) < config.data.pair_prob
  paired = pair & ~held & np.append(~held[1:], False)  # the next line exists, not held out
  singles = np.flatnonzero(~held & ~paired)
  pairs = np.flatnonzero(paired)
  tok = tokenizer_lib.load_tokenizer(tokenizer_dir)
  length = int(config.data.max_length)

  def encode(first, second):
    enc = tokenizer_lib.encode(tok, first, second, max_length=length)
    return enc, list(first), second

  parts = [encode([lines[i] for i in singles], None)]
  if len(pairs):
    parts.append(encode([lines[i] for i in pairs], [lines[i + 1] for i in pairs]))
  stack = lambda name: np.concatenate([getattr(p[0], name) for p in parts])
  train = setup.TextData(
      stack("input_ids"),
      stack("token_type_ids"),
      stack("attention_mask"),
      np.zeros(sum(len(p[1]) for p in parts), np.int32),
      [s for p in parts for s in p[1]],
      None,
      sum(p[0].num_truncated for p in parts),
  )
  held_lines = [lines[i] for i in np.flatnonzero(held)]
  enc = tokenizer_lib.encode(tok, held_lines, None, max_length=length)
  heldout = setup.TextData(
      enc.input_ids,
      enc.token_type_ids,
      enc.attention_mask,
      np.zeros(len(held_lines), np.int32),
      held_lines,
      None,
      enc.num_truncated,
  )
  return train, heldout


@functools.lru_cache(maxsize=4)
def _compiled_lm_loss(hf_json: str):
  models = setup.build_models(json.loads(hf_json), 0)
  return jax.jit(
      lambda params, batch, key: finetuning.permutation_loss(
          models.lm, params, batch, key, train=False
      )
  )


def heldout_loss(
    hf_config: dict, xlnet_params, data: setup.TextData, *, batch_size: int, seed: int = 0
) -> float:
  """Eq. (15)'s negative log-likelihood per text token (nats) on `data`, every text token a
  target, in one uniformly random order per example (fixed by `seed`)."""
  loss_fn = _compiled_lm_loss(json.dumps(hf_config, sort_keys=True))
  total, count = 0.0, 0
  for i, (part, real) in enumerate(setup.chunks(data.arrays()[:3], batch_size)):
    mask = part[2].copy()
    mask[real:] = 0  # padded rows: no targets
    batch = dict(input_ids=part[0], token_type_ids=part[1], attention_mask=mask)
    loss, aux = loss_fn(xlnet_params, batch, jax.random.fold_in(jax.random.key(seed), i))
    total += float(loss) * float(aux["num_targets"])
    count += int(aux["num_targets"])
  return total / max(count, 1)


def unigram_loss(train: setup.TextData, heldout: setup.TextData, vocab_size: int) -> float:
  """The held-out text tokens' negative log-likelihood per token (nats) under the training text
  tokens' unigram frequencies (add-one smoothed over the vocabulary)."""
  text = lambda d: d.input_ids[np.asarray(finetuning.text_mask(d.input_ids, d.attention_mask))]
  counts = np.bincount(text(train), minlength=vocab_size).astype(np.float64) + 1.0
  counts[list(finetuning.SPECIAL_IDS)] = 0.0
  log_p = np.log(np.where(counts > 0, counts, 1.0) / counts.sum())
  return float(-np.mean(log_p[text(heldout)]))


def completions(
    models, xlnet_params, data: setup.TextData, tokenizer_dir: str, *, count: int, seed: int
) -> list[dict[str, str]]:
  """The first `count` held-out glosses, their first half of text tokens given, the rest drawn
  left to right (temperature 0.8): [{given, completion, original}]."""
  if not count:
    return []
  tok = tokenizer_lib.load_tokenizer(tokenizer_dir)
  ids, tt, am = (a[:count] for a in data.arrays()[:3])
  text = np.asarray(finetuning.text_mask(ids, am))
  order = np.cumsum(text, axis=1)
  given = text & (order <= text.sum(1, keepdims=True) // 2)
  drawn = np.asarray(
      jax.jit(lambda p, b, g, k: finetuning.complete(models.lm, p, b, g, k, temperature=0.8))(
          xlnet_params,
          dict(input_ids=ids, token_type_ids=tt, attention_mask=am),
          given,
          jax.random.key(seed),
      )
  )
  decode = lambda row, keep: tok.decode([int(t) for t, k in zip(row, keep) if k])
  return [
      dict(
          given=decode(ids[i], given[i]),
          completion=decode(drawn[i], text[i] & ~given[i]),
          original=decode(ids[i], text[i]),
      )
      for i in range(len(ids))
  ]


# ----------------------------------------------------------------------------- the run


def _tokenizer_dir(config, workdir: str) -> str:
  """Fine-tuning: model_dir; pretraining: <workdir>/model, its vocabulary trained on the corpus
  (setup.pretraining_tokenizer: atomic, never a leftover of another corpus or vocab_size)."""
  if config.mode != "pretrain":
    return os.path.abspath(config.model_dir)
  # Process 0 trains it into the run directory; the others then find it there.
  return distributed.main_first(
      lambda: setup.pretraining_tokenizer(config, workdir), "train the vocabulary"
  )


def train(config, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the config's run in `workdir`, then evaluates it.

  Returns:
    The summary also written to result.json. Fine-tuning: task, method ("FT" for beta 0, else
    "big-learn"), beta, learning_rate, num_epochs, warmup_steps, seed, dev (the final epoch's
    metrics), best_epoch and best_dev (the epoch with the best main metric), epochs (every
    epoch's), steps, num_train, num_dev, truncated_train, truncated_dev, seconds. Pretraining:
    heldout_nll_per_token, unigram_nll_per_token, completions, model_dir, steps, seconds.

  Raises:
    ValueError / FileNotFoundError: a bad config, a missing model directory or data, labels
      outside the task's list.
    bigjax.training.SignatureMismatchError: `workdir` holds another model's run.
    bigjax.training.NotARunDirectoryError / RunLockedError / ConfigMismatchError: `workdir`
      is no run directory, another process writes it, or it holds a finished run of another
      config (bigjax.training.rundir, bigjax.training.train); nothing in it is changed.
    bigjax.training.NonFiniteLossError: the loss became NaN or inf (nothing saved after it).
  """
  setup.validate_config(config)
  if config.mode != "pretrain":
    setup.check_splits(config)
  distributed.initialize(auto=config.get("distributed", False))  # (once the entry point joined)
  with rundir.claim(workdir, experiment="finetune") as workdir:
    return _train(config, workdir, progress=progress)


def _train(config, workdir: str, *, progress: bool) -> dict[str, Any]:
  """`train` in its claimed workdir."""
  t0 = time.perf_counter()
  pretrain = config.mode == "pretrain"
  tokenizer_dir = _tokenizer_dir(config, workdir)
  if pretrain:
    train_data, dev_data = corpus_examples(config, tokenizer_dir)
    hf_config = setup.pretrain_hf_config(config, len(tokenizer_lib.load_tokenizer(tokenizer_dir)))
  else:
    train_data = setup.load_split(config, tokenizer_dir, config.data.train_split)
    dev_data = setup.load_split(config, tokenizer_dir, config.data.dev_split)
    hf_config = setup.hf_config_of(config)
  num_labels = setup.num_labels_of(config)
  models = setup.build_models(hf_config, num_labels)
  tokenizer_file = os.path.join(tokenizer_dir, setup.TOKENIZER_FILE)
  finetune_runs.check_workdir(workdir, hf_config, tokenizer_file)

  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  if config.plm.batch_size:
    sharding.check_batch_size(config.plm.batch_size, mesh)
  replicated = sharding.replicated(mesh)
  steps_per_epoch = len(train_data.labels) // config.batch_size
  if not steps_per_epoch:
    raise ValueError(
        f"{len(train_data.labels)} training examples are fewer than batch_size="
        f"{config.batch_size}; use a smaller batch."
    )
  num_steps = steps_per_epoch * int(config.num_epochs)
  hf_json = json.dumps(hf_config, sort_keys=True)
  step_fn = compiled_step(hf_json, num_labels, mesh=mesh, **finetune_step.step_options(config))
  examples = batch_fn(
      train_data.arrays(), config.batch_size, seed=config.seed, stream=setup.DATA_STREAM, mesh=mesh
  )
  lr_of = lambda step: np.float32(
      optimizers.warmup_linear_lr(
          step, peak=config.learning_rate, warmup_steps=config.warmup_steps, num_steps=num_steps
      )
  )
  batches = lambda step: examples(step) + (lr_of(step), np.float32(config.beta))

  def init():
    key = jax.random.key(int(config.seed))
    k_params, k_run = jax.random.split(key)
    params = setup.init_params(config, models, k_params)
    return finetune_step.init_state(config, params, k_run)

  hooks = []
  if pretrain:
    every = int(config.eval_every)
    held = lambda step, state: dict(
        heldout_nll=heldout_loss(
            hf_config, state.params["xlnet"], dev_data, batch_size=config.eval_batch_size
        )
    )
    hooks.append(loop.Hook(held, every=every, log="heldout.jsonl"))
  else:

    def dev(step, state):
      log_p = setup.log_probs(
          hf_config, num_labels, state.params["xlnet"], dev_data, batch_size=config.eval_batch_size
      )
      return dict(
          epoch=step // steps_per_epoch,
          **setup.dev_metrics(config.task, log_p, dev_data.labels, halves=True),
      )

    hooks.append(loop.Hook(dev, every=steps_per_epoch, log="dev.jsonl"))

  method = "pretrain" if pretrain else ("FT" if not config.beta else "big-learn")
  state, run = loop.train(
      workdir,
      config=config,
      init_state=init,
      step_fn=step_fn,
      batch_fn=batches,
      num_steps=num_steps,
      signature=setup.model_signature(config, hf_config),
      log_every=config.log_every,
      checkpoint_every=steps_per_epoch,
      keep_checkpoints=config.keep_checkpoints,
      hooks=hooks,
      state_sharding=replicated,
      examples_per_step=config.batch_size,
      examples_name="sequences",
      outdated_by_training=(setup.SUMMARY_FILE,),
      progress=progress,
      description=f"{config.task if not pretrain else 'pretrain'} {method}",
      show=("loss", "accuracy"),
      fix="Lower learning_rate (or beta).",
      experiment="finetune",
      unchecked_config_fields=("sweep",),  # a sweep's grid may grow around its finished runs
      # The model's config and tokenizer are written only once its weights have loaded.
      on_start=lambda _: distributed.main_first(
          lambda: finetune_runs.prepare_workdir(workdir, hf_config, tokenizer_file),
          "write the model's config and tokenizer",
      ),
  )
  state = sharding.local_view(state)  # this process's copy, for the results

  summary = dict(
      variant=config.variant,
      mode=config.mode,
      method=method,
      steps=run["step"],
      steps_per_epoch=steps_per_epoch,
      resumed_from=run["resumed_from"],
      compilations=run["compilations"],
      num_train=int(len(train_data.labels)),
      truncated_train=int(train_data.num_truncated),
      max_length=int(config.data.max_length),
      seed=int(config.seed),
      learning_rate=float(config.learning_rate),
      num_epochs=int(config.num_epochs),
      warmup_steps=int(config.warmup_steps),
      batch_size=int(config.batch_size),
  )
  if pretrain:
    summary.update(
        _pretrain_results(
            config, workdir, models, hf_config, state, train_data, dev_data, tokenizer_dir
        )
    )
  else:
    summary.update(
        task=config.task,
        beta=float(config.beta),
        train_limit=config.data.get("train_limit"),
        # The mechanism switches (experiments.finetune_step), at their defaults: the step as is.
        body_lr_scale=float(config.get("body_lr_scale", 1.0)),
        **{k: config.plm.get(k) for k in ("label_weight", "label_only", "separate_adam")},
        num_dev=int(len(dev_data.labels)),
        truncated_dev=int(dev_data.num_truncated),
        **epoch_summary(workdir, glue.TASKS[config.task].metrics[0]),
    )
  summary["seconds"] = time.perf_counter() - t0
  write_json(os.path.join(workdir, setup.SUMMARY_FILE), summary)
  distributed.barrier("finetune: done")  # the run's files are complete for every process
  return summary


def epoch_summary(workdir: str, metric: str) -> dict[str, Any]:
  """From dev.jsonl: every epoch's dev metrics, the last epoch's ("dev") and the best epoch's."""
  with open(os.path.join(workdir, "dev.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  epochs = [{k: v for k, v in r.items() if k != "step"} for r in rows]
  best = max(epochs, key=lambda r: r[metric])
  return dict(
      dev={k: v for k, v in epochs[-1].items() if k != "epoch"},
      best_epoch=best["epoch"],
      best_dev={k: v for k, v in best.items() if k != "epoch"},
      epochs=epochs,
  )


def _pretrain_results(
    config, workdir, models, hf_config, state, train_data, dev_data, tokenizer_dir
) -> dict[str, Any]:
  params = state.params["xlnet"]
  model_dir = os.path.join(workdir, "model")
  if distributed.is_main_process():
    xlnet_weights.save_pretrained(models.lm, jax.device_get(params), model_dir, config=hf_config)
  return dict(
      heldout_nll_per_token=heldout_loss(
          hf_config, params, dev_data, batch_size=config.eval_batch_size
      ),
      unigram_nll_per_token=unigram_loss(train_data, dev_data, models.lm.vocab_size),
      num_heldout=int(len(dev_data.labels)),
      vocab_size=int(models.lm.vocab_size),
      completions=completions(
          models,
          params,
          dev_data,
          tokenizer_dir,
          count=int(config.num_completions),
          seed=int(config.seed),
      ),
      model_dir=model_dir,
  )


if __name__ == "__main__":
  cli.run(
      train,
      "finetune.py",
      workdir_help="Directory for the run's checkpoints, metrics, dev.jsonl and "
      "result.json; a run resumes from the newest checkpoint found here.",
  )
