r"""Multi-modal big learning (paper App. E.1): one two-stream permutation model of (VQ tokens, label).

  python -m experiments.plm_mnist --config configs/plm_mnist.py:cpu --workdir /tmp/plm_cpu
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode classify --images IN.npz \
      --out OUT.npz
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode generate [--label 3] --out G.npz
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode complete --images IN.npz \
      --source_ratio 0.5 [--initial_portion] [--with_label] --out C.npz
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode figure --out FIG.png
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode evaluate

Training (`--mode train`, the default): the quantiser is trained into <workdir>/vq first when
there is none (experiments/vq_mnist.py; `--config.vq_dir` uses a finished one instead). Each step
draws a task and a factorisation order per example (`sample_orders`: random or raster, the label
last with probability `plm.label_last_prob`), shifts the digits by up to `data.max_shift` pixels
(classification tasks) or `data.lm_max_shift` (LM tasks), quantises them with the frozen
quantiser into L - 1 codes, appends the label (bigjax.multimodal) and maximises Eq. (15) over
all L positions (`plm.objective="permutation"`), or only log p(y | x') after all image
tokens (`"classification"`: the cross-entropy baseline with the same network). The step is
jitted once with the state replicated and donated and the batch split over a 1-D device mesh
(bigjax.sharding), as in experiments/biglearn_gan.py. Randomness and data order are functions
of (seed, step), so a resumed run continues as the uninterrupted one would.

Writes into --workdir:
  config.json        the config (the other modes rebuild the model from it)
  vq/                the quantiser (unless config.vq_dir names another)
  checkpoints/       Orbax checkpoints; the run resumes from the newest by itself
  metrics.jsonl      loss, image_nll (nats per image token), label_nll / label_accuracy (on the
                     examples whose label was last and predicted), grad_norm, steps_per_sec;
                     test_accuracy every `eval_every` steps
  run.json           steps, timings, compilations, devices
  eval.json          test accuracy of p(y | x') (one order and eval.num_orders), label agreement
                     of label-conditioned samples judged by the MNIST classifier, per label:
                     from the model's p(x' | y), and (`_guided`) as eval.temperature and
                     eval.guidance draw them when those are not 1 and 0
  fig17.png          joint samples, samples conditioned on each label, classified real digits
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, NamedTuple

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from bigjax import checkpoint as ckpt_lib
from bigjax import losses
from bigjax import mnist
from bigjax import multimodal
from bigjax import permutation
from bigjax import sharding
from bigjax.evaluation import classifier as classifier_lib
from bigjax.models import vq
from bigjax.models.two_stream import TwoStreamTransformer
from configs import mnist_classifier as classifier_config
from configs import plm_mnist as plm_config
from experiments import cli
from experiments import vq_mnist

MODES = ("train", "classify", "generate", "complete", "figure", "evaluate")
_CHUNK = 100        # rows per compiled sampling/classification call (the last chunk is padded)


class PLMState(NamedTuple):
  """The training state, one pytree (checkpointed as is); rng holds raw key data."""
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


class Quantiser(NamedTuple):
  encoder: vq.VQEncoder
  decoder: vq.VQDecoder
  params: Any               # {"encoder": ..., "decoder": ...}
  vectors: jax.Array        # [K, code_dim]
  info: dict


# ----------------------------------------------------------------------------------------------
# Config, quantiser, model.

def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  def fail(msg):
    raise ValueError(f"configs/plm_mnist.py ({config.get('variant', '?')}): {msg}")
  for name in ("num_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
    v = config[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      fail(f"{name} must be a positive integer, got {v!r}.")
  for name in ("warmup_steps", "eval_every"):
    v = config[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      fail(f"{name} must be an integer >= 0, got {v!r}.")
  if config.plm.objective not in plm_config.OBJECTIVES:
    fail(f"plm.objective={config.plm.objective!r}; choose one of {plm_config.OBJECTIVES}.")
  if not 0.0 <= config.plm.label_last_prob <= 1.0:
    fail(f"plm.label_last_prob must be in [0, 1], got {config.plm.label_last_prob}.")
  if not 0.0 <= config.plm.classify_prob <= 1.0:
    fail(f"plm.classify_prob must be in [0, 1], got {config.plm.classify_prob}.")
  if config.plm.objective == "permutation" and config.plm.classify_prob == 1.0:
    fail("plm.classify_prob=1 leaves no permutation LM task; use "
         "plm.objective='classification' for the cross-entropy baseline.")
  if not config.plm.label_weight > 0:
    fail(f"plm.label_weight must be > 0, got {config.plm.label_weight}.")
  m = config.model
  if m.width % m.num_heads:
    fail(f"model.width={m.width} is not divisible by model.num_heads={m.num_heads}.")
  if not 0.0 <= m.dropout < 1.0:
    fail(f"model.dropout must be in [0, 1), got {m.dropout}.")
  if not (config.learning_rate > 0 and config.weight_decay >= 0 and config.grad_clip > 0):
    fail("learning_rate and grad_clip must be > 0 and weight_decay >= 0.")
  for name in ("max_shift", "lm_max_shift"):
    v = config.data[name]
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 14:
      fail(f"data.{name} must be an int in [0, 14), got {v!r}.")
  if not 0.0 <= config.plm.raster_prob <= 1.0:
    fail(f"plm.raster_prob must be in [0, 1], got {config.plm.raster_prob}.")
  e = config.eval
  for name in ("num_orders", "samples_per_label"):
    if isinstance(e[name], bool) or not isinstance(e[name], int) or e[name] < 1:
      fail(f"eval.{name} must be a positive integer, got {e[name]!r}.")
  if e.order not in ("random", "raster"):
    fail(f"eval.order must be 'random' or 'raster', got {e.order!r}.")
  if not e.temperature > 0:
    fail(f"eval.temperature must be > 0, got {e.temperature}.")
  if not e.guidance >= 0:
    fail(f"eval.guidance must be >= 0, got {e.guidance}.")


def vq_dir(config, workdir: str) -> str:
  return os.path.abspath(config.vq_dir) if config.vq_dir else os.path.join(workdir, "vq")


def prepare_quantiser(config, workdir: str, *, progress: bool = True) -> Quantiser:
  """The run's quantiser: the finished one in `config.vq_dir`, or the one in <workdir>/vq,
  trained (or finished) there first with `config.vq` when needed."""
  directory = vq_dir(config, workdir)
  if not config.vq_dir and not os.path.isfile(os.path.join(directory, vq_mnist.SUMMARY_FILE)):
    vq_mnist.train(config.vq, directory, progress=progress)
  return Quantiser(*vq_mnist.load(directory))


def layout_of(quantiser: Quantiser) -> multimodal.Layout:
  side = vq.grid_size(quantiser.encoder.widths)
  return multimodal.Layout(num_codes=int(quantiser.vectors.shape[0]),
                           num_image_tokens=side * side, num_classes=classifier_lib.NUM_CLASSES)


def build_model(config, layout: multimodal.Layout) -> TwoStreamTransformer:
  m = config.model
  return TwoStreamTransformer(vocab_size=layout.vocab_size, num_segments=2,
                              max_length=layout.length, width=int(m.width), depth=int(m.depth),
                              num_heads=int(m.num_heads), mlp_ratio=float(m.mlp_ratio),
                              dropout=float(m.dropout))


def model_signature(config, layout: multimodal.Layout) -> dict[str, Any]:
  m = config.model
  return dict(num_codes=layout.num_codes, num_image_tokens=layout.num_image_tokens,
              width=int(m.width), depth=int(m.depth), num_heads=int(m.num_heads),
              mlp_ratio=float(m.mlp_ratio), objective=str(config.plm.objective))


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [N, 28, 28] digits and int32 [N] labels of `split`."""
  images, labels = mnist.load(config.data.source, split=split)
  if labels.size and labels.min() < 0:
    raise ValueError(f"MNIST source {config.data.source!r} (split {split!r}) has no labels; "
                     "multi-modal training needs labelled digits.")
  if images.shape[1:] != (vq.IMAGE_SIZE, vq.IMAGE_SIZE):
    images = mnist.resize(images, vq.IMAGE_SIZE)
  return images, labels.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Training.

def make_optimizer(config) -> optax.GradientTransformation:
  warmup = max(1, config.warmup_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, warmup, max(config.num_steps, warmup + 1),
      end_value=0.01 * config.learning_rate)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                     optax.adamw(schedule, weight_decay=config.weight_decay))


def init_state(config, model: TwoStreamTransformer, layout: multimodal.Layout,
               rng) -> PLMState:
  k_init, k_run = jax.random.split(rng)
  tokens = jnp.zeros((2, layout.length), jnp.int32)
  params = model.init(k_init, tokens, multimodal.segment_ids(layout, 2),
                      jnp.zeros((2, layout.length, layout.length), bool))
  return PLMState(step=jnp.zeros((), jnp.int32), params=params,
                  opt_state=make_optimizer(config).init(params),
                  rng=jax.random.key_data(k_run))


def sample_orders(rng, config, layout: multimodal.Layout, batch_size: int):
  """One batch's tasks of Eq. (15): (ranks [B, L], target_mask [B, L], classify [B]).

  With plm.objective="permutation", an example is a classification task with probability
  plm.classify_prob (S = all image tokens as context, T = {label}: the cut t = L of Eq. (15),
  the label last in z) and otherwise a permutation LM task (every position a target, predicted
  from those before it in z; the label last in z with probability plm.label_last_prob). With
  plm.raster_prob > 0, that share of the LM tasks uses the raster order of the image tokens
  instead, the label last (probability plm.label_last_prob) or first. With "classification",
  every example is a classification task (the cross-entropy baseline).
  """
  k_lm, k_cls, k_pick = jax.random.split(rng, 3)
  label_only = jnp.broadcast_to(jnp.arange(layout.length) == layout.label_position,
                                (batch_size, layout.length))
  label_last = permutation.random_ranks(k_cls, batch_size, layout.length,
                                        last_position=layout.label_position, last_prob=1.0)
  if config.plm.objective == "classification":
    return label_last, label_only, jnp.ones((batch_size,), bool)
  lm = permutation.random_ranks(k_lm, batch_size, layout.length,
                                last_position=layout.label_position,
                                last_prob=config.plm.label_last_prob)
  if config.plm.raster_prob > 0:
    k_raster, k_first = jax.random.split(jax.random.fold_in(k_lm, 1))
    # Raster order of the image tokens; the label last (rank L - 1) or first (rank 0, the others
    # one later), by the same label_last_prob as the random orders.
    image_ranks = jnp.arange(layout.length)
    label_first = ~jax.random.bernoulli(k_first, config.plm.label_last_prob, (batch_size,))
    raster = jnp.where(label_first[:, None], (image_ranks + 1) % layout.length, image_ranks)
    use_raster = jax.random.bernoulli(k_raster, config.plm.raster_prob, (batch_size,))
    lm = jnp.where(use_raster[:, None], raster, lm).astype(jnp.int32)
  classify = jax.random.bernoulli(k_pick, config.plm.classify_prob, (batch_size,))
  ranks = jnp.where(classify[:, None], label_last, lm)
  target = jnp.where(classify[:, None], label_only, True)
  return ranks, target, classify


def classification_all_targets(config) -> bool:
  """How p(y | x') is read from the model (bigjax.multimodal's `all_targets`): as it was
  trained. Label-only targets (the image tokens bidirectional context) when the run trained
  classification tasks, else along a full permutation with the label last."""
  return config.plm.objective == "permutation" and config.plm.classify_prob == 0


def make_train_step(config, model: TwoStreamTransformer, layout: multimodal.Layout,
                    quantiser: Quantiser):
  """train_step(state, images uint8 [B, 28, 28], labels int32 [B]) -> (state, metrics).

  The loss is the mean negative log-likelihood per target token of the permutation LM tasks
  plus plm.label_weight times the mean cross-entropy of the classification tasks (just the
  latter for the baseline)."""
  opt = make_optimizer(config)
  encoder = quantiser.encoder
  allowed = multimodal.vocab_mask(layout)
  is_label = jnp.arange(layout.length) == layout.label_position
  w = float(config.plm.label_weight) if config.plm.objective == "permutation" else 1.0

  def train_step(state: PLMState, images, labels, vq_params, vectors):
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_shift, k_order, k_drop = jax.random.split(key, 3)
    b = images.shape[0]
    ranks, target, classify = sample_orders(k_order, config, layout, b)
    x = images.astype(jnp.float32) / 127.5 - 1.0
    shifted = classifier_lib.random_shift(k_shift, x, config.data.max_shift)
    if config.data.lm_max_shift != config.data.max_shift:    # LM tasks get their own shifts
      lm_shifted = classifier_lib.random_shift(k_shift, x, config.data.lm_max_shift)
      shifted = jnp.where(classify[:, None, None], shifted, lm_shifted)
    codes = vq.quantize(encoder.apply(vq_params["encoder"], shifted), vectors)[1]
    tokens = multimodal.join(codes.reshape(b, -1), labels, layout)
    segments = multimodal.segment_ids(layout, b)
    perm_mask = permutation.permutation_mask(ranks, target)
    lm_target = target & ~classify[:, None]
    cls_target = target & classify[:, None]
    # Predicted after every image token: classification tasks and label-last LM tasks.
    label_last = ranks[:, layout.label_position] == layout.length - 1
    n_lm, n_cls = jnp.sum(lm_target), jnp.sum(cls_target)

    def loss_fn(params):
      logits, _ = model.apply(params, tokens, segments, perm_mask, train=True,
                              rngs={"dropout": k_drop})
      lm_nll = losses.permutation_lm(logits, tokens, lm_target, vocab_mask=allowed)
      cls_nll = losses.permutation_lm(logits, tokens, cls_target, vocab_mask=allowed)
      loss = (jnp.sum(lm_nll) / jnp.maximum(n_lm, 1)
              + w * jnp.sum(cls_nll) / jnp.maximum(n_cls, 1))
      label_nll = losses.permutation_lm(logits, tokens, target & is_label, vocab_mask=allowed)
      image_nll = losses.permutation_lm(logits, tokens, lm_target & ~is_label,
                                        vocab_mask=allowed)
      correct = jnp.argmax(logits[:, layout.label_position, layout.num_codes:], -1) == labels
      last = label_last.astype(jnp.float32)
      n_last = jnp.maximum(jnp.sum(last), 1.0)
      aux = dict(image_nll=jnp.sum(image_nll) / jnp.maximum(jnp.sum(lm_target & ~is_label), 1),
                 label_nll=jnp.sum(label_nll * last) / n_last,
                 label_accuracy=jnp.sum(correct * last) / n_last,
                 classify_fraction=jnp.mean(classify.astype(jnp.float32)))
      return loss, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), **aux)
    return PLMState(state.step + 1, params, opt_state, state.rng), metrics

  return train_step


def batch_indices(step: int, num_images: int, batch_size: int, seed: int) -> np.ndarray:
  """Rows of the global batch at `step`: a permutation per epoch seeded by (seed, epoch), the
  last incomplete batch dropped. A pure function of step (so resuming changes nothing)."""
  steps_per_epoch = num_images // batch_size
  epoch, i = divmod(int(step), steps_per_epoch)
  perm = np.random.default_rng([int(seed), 2, epoch]).permutation(num_images)
  return perm[i * batch_size:(i + 1) * batch_size]


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  if len(x) == rows:
    return x
  return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])


def make_classify(model: TwoStreamTransformer, layout: multimodal.Layout, *, all_targets: bool,
                  num_orders: int):
  """classify(params, tokens int32 [N, L-1], seed) -> (labels [N], probs [N, C]) in numpy,
  in padded chunks of _CHUNK rows (one compiled program for every N)."""
  @jax.jit
  def chunk(params, tokens, key):
    return jnp.exp(multimodal.label_log_probs(model.apply, params, tokens, key, layout=layout,
                                              all_targets=all_targets, num_orders=num_orders))

  def classify(params, tokens: np.ndarray, seed: int = 0):
    probs = []
    for i, start in enumerate(range(0, len(tokens), _CHUNK)):
      rows = tokens[start:start + _CHUNK]
      key = jax.random.fold_in(jax.random.key(seed), i)
      probs.append(np.asarray(chunk(params, _pad_rows(rows, _CHUNK), key))[:len(rows)])
    probs = np.concatenate(probs) if probs else np.zeros((0, layout.num_classes), np.float32)
    return probs.argmax(-1).astype(np.int32), probs

  return classify


NonFiniteLossError = ckpt_lib.NonFiniteLossError


def train_and_evaluate(config, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the config's permutation model in `workdir`, then evaluates it.

  Returns:
    the run summary (also run.json) with the evaluation (also eval.json) under "eval".
  """
  validate_config(config)
  if config.distributed:
    jax.distributed.initialize()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  t0 = time.perf_counter()
  train_images, train_labels = load_split(config, config.data.train_split)
  test_images, test_labels = load_split(config, config.data.test_split)
  if len(train_images) < config.batch_size:
    raise ValueError(f"the training split has {len(train_images)} digits, fewer than "
                     f"batch_size={config.batch_size}.")
  quantiser = prepare_quantiser(config, workdir, progress=progress)
  vq_seconds = time.perf_counter() - t0
  layout = layout_of(quantiser)
  model = build_model(config, layout)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  replicated = sharding.replicated(mesh)

  state = jax.jit(lambda key: init_state(config, model, layout, key),
                  out_shardings=replicated)(jax.random.key(int(config.seed)))
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       signature=model_signature(config, layout),
                                       max_to_keep=config.keep_checkpoints)
  try:
    restored_step, restored = checkpointer.restore_latest(ckpt_lib.abstract(state))
  except Exception:
    checkpointer.close()
    raise
  if restored is not None:
    state = restored
  if jax.process_index() == 0:
    ckpt_lib.write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
  start = int(state.step)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  ckpt_lib.truncate_log(metrics_path, start)

  batch_sharded = sharding.batch_sharded(mesh)
  train_step = jax.jit(make_train_step(config, model, layout, quantiser),
                       in_shardings=(replicated, batch_sharded, batch_sharded, replicated,
                                     replicated),
                       out_shardings=(replicated, replicated), donate_argnums=0)
  vq_params = jax.device_put(quantiser.params, replicated)
  vectors = jax.device_put(quantiser.vectors, replicated)
  classify = make_classify(model, layout, all_targets=classification_all_targets(config),
                           num_orders=1)
  test_tokens = vq.encode(quantiser.encoder, quantiser.params, quantiser.vectors,
                          test_images).reshape(len(test_images), -1)
  rows = sharding.process_slice(config.batch_size)

  pending, last_saved = [], restored_step
  compile_seconds, window = None, (time.perf_counter(), start)
  bar = tqdm.tqdm(total=config.num_steps, initial=start, disable=not progress,
                  desc=f"permutation LM {config.variant} ({config.plm.objective})", unit="step",
                  dynamic_ncols=True)
  try:
    for step in range(start, config.num_steps):
      idx = batch_indices(step, len(train_images), config.batch_size, config.seed)[rows]
      state, metrics = train_step(state, sharding.global_batch(train_images[idx], mesh),
                                  sharding.global_batch(train_labels[idx], mesh), vq_params,
                                  vectors)
      if compile_seconds is None:
        jax.block_until_ready(state.step)
        compile_seconds = time.perf_counter() - t0 - vq_seconds
        window = (time.perf_counter(), step + 1)
      pending.append(metrics)
      bar.update(1)
      done = step + 1
      save = done % config.checkpoint_every == 0 or done == config.num_steps
      measure = config.eval_every and done % config.eval_every == 0
      if not (done % config.log_every == 0 or save or measure):
        continue
      values = jax.device_get(pending)
      pending = []
      means = ckpt_lib.average_metrics(values, last_step=done, last_saved=last_saved,
                                       directory=checkpointer.directory,
                                       fix="Lower learning_rate.")
      now = time.perf_counter()
      row = dict(step=done, **means,
                 steps_per_sec=(done - window[1]) / max(now - window[0], 1e-9),
                 seconds=now - t0)
      window = (now, done)
      if measure:
        labels, _ = classify(state.params, test_tokens, seed=config.seed)
        row["test_accuracy"] = float(np.mean(labels == test_labels))
      if jax.process_index() == 0:
        with open(metrics_path, "a") as f:
          f.write(json.dumps(row) + "\n")
      bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['label_accuracy']:.3f}",
                      **({"test": f"{row['test_accuracy']:.3f}"} if measure else {}))
      if save:
        checkpointer.save(done, state)
        last_saved = done
  finally:
    bar.close()
    checkpointer.close()
  cache_size = getattr(train_step, "_cache_size", None)
  compilations = cache_size() if cache_size else None
  if compilations and compilations > 1:
    logging.warning("the train step compiled %d times (expected once).", compilations)
  train_seconds = time.perf_counter() - t0
  run = Run(config, layout, model, state.params, quantiser)
  result = evaluate(run, workdir, test_images=test_images, test_labels=test_labels,
                    progress=progress)
  figure(run, os.path.join(workdir, "fig17.png"), seed=config.seed)
  summary = dict(variant=config.variant, objective=config.plm.objective, step=int(state.step),
                 resumed_from=restored_step, seconds=time.perf_counter() - t0,
                 train_seconds=train_seconds, vq_seconds=vq_seconds,
                 compile_seconds=compile_seconds, compilations=compilations,
                 devices=[str(d) for d in jax.devices()], jax=jax.__version__,
                 backend=jax.default_backend(), eval=result)
  if jax.process_index() == 0:
    ckpt_lib.write_json(os.path.join(workdir, "run.json"), summary)
  return summary


# ----------------------------------------------------------------------------------------------
# A trained run and its capabilities.

class Run(NamedTuple):
  config: ml_collections.ConfigDict
  layout: multimodal.Layout
  model: TwoStreamTransformer
  params: Any
  quantiser: Quantiser


def with_old_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A run's saved config, with the fields added since it was written set to what that run
  did: LM tasks shifted like classification tasks, uniformly random orders only."""
  with config.unlocked():
    if "lm_max_shift" not in config.data:
      config.data.lm_max_shift = config.data.max_shift
    if "raster_prob" not in config.plm:
      config.plm.raster_prob = 0.0
    if "guidance" not in config.eval:
      config.eval.guidance = 0.0
  return config


def load_run(workdir: str) -> Run:
  """The finished (or newest checkpointed) permutation model in `workdir` and its quantiser.

  Raises:
    FileNotFoundError: `workdir` has no config.json or no checkpoint; the message says how to
      train one.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  config_path = os.path.join(workdir, "config.json")
  command = f"python -m experiments.plm_mnist --config configs/plm_mnist.py:cpu --workdir {workdir}"
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"no permutation-model run in {workdir} (no config.json); train one "
                            f"with `{command}`.")
  with open(config_path) as f:
    config = with_old_defaults(ml_collections.ConfigDict(json.load(f)))
  quantiser = Quantiser(*vq_mnist.load(vq_dir(config, workdir)))
  layout = layout_of(quantiser)
  model = build_model(config, layout)
  state = jax.eval_shape(lambda key: init_state(config, model, layout, key), jax.random.key(0))
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       signature=model_signature(config, layout),
                                       max_to_keep=config.keep_checkpoints)
  try:
    step, restored = checkpointer.restore_latest(state)
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints; train the model with "
                            f"`{command}` (with the run's --config.* overrides).")
  return Run(config, layout, model, restored.params, quantiser)


def check_images(images, what: str = "images") -> np.ndarray:
  """uint8 [N, 28, 28] digits, or a clear error."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"{what} must be uint8 pixels in [0, 255], got dtype {images.dtype} (for "
                    "floats in [0, 1] use np.round(255 * x).astype(np.uint8)).")
  if images.ndim != 3 or images.shape[1:] != (vq.IMAGE_SIZE, vq.IMAGE_SIZE):
    raise ValueError(f"{what} must be [N, {vq.IMAGE_SIZE}, {vq.IMAGE_SIZE}] digits, got shape "
                     f"{images.shape} (resize other sizes with bigjax.mnist.resize).")
  return images


def encode(run: Run, images) -> np.ndarray:
  """int32 [N, L-1] tokens of uint8 [N, 28, 28] digits."""
  images = check_images(images)
  q = run.quantiser
  return vq.encode(q.encoder, q.params, q.vectors, images).reshape(len(images), -1)


def decode(run: Run, tokens) -> np.ndarray:
  """uint8 [N, 28, 28] digits of int [N, L-1] tokens."""
  q = run.quantiser
  side = vq.grid_size(q.encoder.widths)
  tokens = multimodal.check_image_tokens(tokens, run.layout)
  return vq.decode(q.decoder, q.params, q.vectors, tokens.reshape(-1, side, side))


def classify(run: Run, images, *, num_orders: int | None = None, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
  """p(y | x'): (labels int32 [N], probs float32 [N, 10]) of uint8 [N, 28, 28] digits."""
  num_orders = int(num_orders or run.config.eval.num_orders)
  fn = make_classify(run.model, run.layout,
                     all_targets=classification_all_targets(run.config), num_orders=num_orders)
  return fn(run.params, encode(run, images), seed=seed)


@functools.lru_cache(maxsize=8)
def _sampler(model, layout, all_targets_, order, temperature, guidance):
  return jax.jit(functools.partial(multimodal.sample, model.apply, layout=layout,
                                   all_targets=all_targets_, order=order,
                                   temperature=temperature, guidance=guidance))


def sample_tokens(run: Run, tokens: np.ndarray, given: np.ndarray, *, seed: int,
                  order: str | None = None, temperature: float | None = None,
                  guidance: float | None = None) -> np.ndarray:
  """multimodal.sample in padded chunks of _CHUNK rows; tokens/given [N, L] -> tokens [N, L].
  order, temperature and guidance default to the run's eval.* config."""
  if run.config.plm.objective != "permutation":
    raise ValueError("this run was trained with plm.objective='classification' (the "
                     "cross-entropy baseline): it models only p(y | x') and cannot generate or "
                     "complete images. Use a run trained with the permutation objective.")
  fn = _sampler(run.model, run.layout, True, order or run.config.eval.order,
                float(run.config.eval.temperature if temperature is None else temperature),
                float(run.config.eval.guidance if guidance is None else guidance))
  out = []
  for i, start in enumerate(range(0, len(tokens), _CHUNK)):
    t, g = tokens[start:start + _CHUNK], given[start:start + _CHUNK]
    key = jax.random.fold_in(jax.random.key(seed), i)
    out.append(np.asarray(fn(run.params, _pad_rows(t, _CHUNK), _pad_rows(g, _CHUNK), key))
               [:len(t)])
  return np.concatenate(out) if out else np.zeros((0, run.layout.length), np.int32)


def generate(run: Run, num: int, *, label: int | None = None, seed: int = 0,
             order: str | None = None, temperature: float | None = None,
             guidance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Joint samples p(x', y) (label None) or label-conditioned samples p(x' | y = label), the
  latter with label guidance `guidance` (multimodal.sample; None: the run's eval.guidance).

  Returns:
    (images uint8 [num, 28, 28], labels int32 [num]: the given label, or the sampled one).
  """
  if isinstance(num, bool) or not isinstance(num, int) or num < 1:
    raise ValueError(f"num must be a positive integer, got {num!r}.")
  if label is not None:
    multimodal.check_labels(np.array([label]), run.layout)
  return generate_rows(run, np.full(num, -1 if label is None else label, np.int32), seed=seed,
                       order=order, temperature=temperature, guidance=guidance)


def generate_rows(run: Run, labels: np.ndarray, *, seed: int = 0, order: str | None = None,
                  temperature: float | None = None, guidance: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
  """One sample per row: conditioned on labels[i], or joint where labels[i] is -1 (one batched
  call for a mix of both, e.g. a figure). Returns (images uint8 [N, 28, 28], labels [N])."""
  layout = run.layout
  labels = np.asarray(labels, np.int32)
  given = np.zeros((len(labels), layout.length), bool)
  given[:, layout.label_position] = labels >= 0
  checked = multimodal.check_labels(np.maximum(labels, 0), layout)
  tokens = np.asarray(multimodal.join(np.zeros((len(labels), layout.num_image_tokens),
                                               np.int32), checked, layout))
  out = sample_tokens(run, tokens, given, seed=seed, order=order, temperature=temperature,
                      guidance=guidance)
  return decode(run, out[:, :-1]), out[:, -1] - layout.num_codes


def source_masks(num: int, num_image_tokens: int, ratio: float, *, initial_portion: bool,
                 seed: int) -> np.ndarray:
  """bool [num, L-1]: round(ratio (L-1)) given image tokens per row, random (seeded) or the
  first ones in raster order."""
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f"source_ratio must be in [0, 1], got {ratio}.")
  k = int(round(ratio * num_image_tokens))
  if initial_portion:
    return np.broadcast_to(np.arange(num_image_tokens) < k, (num, num_image_tokens)).copy()
  rng = np.random.default_rng(seed)
  ranks = np.argsort(np.argsort(rng.random((num, num_image_tokens)), axis=1), axis=1)
  return ranks < k


def complete(run: Run, images, *, source_ratio: float, initial_portion: bool = False,
             labels=None, num_samples: int = 1, seed: int = 0, guidance: float | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """p(x'_T | x'_S[, y]): completions of digits from part of their tokens (and their label).

  Args:
    run: a trained run.
    images: uint8 [N, 28, 28].
    source_ratio: fraction of the image tokens given.
    initial_portion: give the first tokens in raster order (the top rows) instead of random ones.
    labels: optional int [N]: the label is given too.
    num_samples: draws per digit.
    seed: masks and draws.
    guidance: label guidance when `labels` are given (multimodal.sample; None: eval.guidance).

  Returns:
    (completions uint8 [N, num_samples, 28, 28], source_mask bool [N, L-1] over the token grid,
    sampled labels int32 [N, num_samples]).
  """
  tokens = encode(run, images)
  n, layout = len(tokens), run.layout
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
  source = source_masks(n, layout.num_image_tokens, source_ratio,
                        initial_portion=initial_portion, seed=seed)
  given = np.concatenate([source, np.full((n, 1), labels is not None)], axis=1)
  y = (np.zeros(n, np.int32) if labels is None else multimodal.check_labels(labels, layout))
  if len(y) != n:
    raise ValueError(f"got {len(y)} labels for {n} images.")
  full = np.asarray(multimodal.join(tokens, y, layout))
  full, given = np.repeat(full, num_samples, axis=0), np.repeat(given, num_samples, axis=0)
  out = sample_tokens(run, full, given, seed=seed + 1, guidance=guidance)
  images_out = decode(run, out[:, :-1]).reshape(n, num_samples, vq.IMAGE_SIZE, vq.IMAGE_SIZE)
  return images_out, source, (out[:, -1] - layout.num_codes).reshape(n, num_samples)


# ----------------------------------------------------------------------------------------------
# Evaluation and Fig. 17.

def load_judge(config, workdir: str, *, progress: bool = True):
  """The MNIST classifier that judges samples: predict(images uint8) -> labels, and its info."""
  directory = config.eval.classifier_dir or os.path.join(workdir, "classifier")
  if not config.eval.classifier_dir and not os.path.isfile(
      os.path.join(directory, classifier_lib.SUMMARY_FILE)):
    classifier_lib.train(classifier_config.get_config(config.eval.classifier_variant), directory,
                         progress=progress)
  model, params, info = classifier_lib.load(directory, image_size=vq.IMAGE_SIZE, source_patch=0)
  predict = classifier_lib.make_predict(model, params)
  return (lambda images: predict(images)[0]), info


def evaluate(run: Run, workdir: str, *, test_images=None, test_labels=None,
             progress: bool = True) -> dict[str, Any]:
  """Test accuracy of p(y | x') and label agreement of label-conditioned samples; eval.json."""
  config = run.config
  if test_images is None:
    test_images, test_labels = load_split(config, config.data.test_split)
  t0 = time.perf_counter()
  tokens = encode(run, test_images)
  result = dict(objective=config.plm.objective, num_test=int(len(test_labels)))
  for n in sorted({1, int(config.eval.num_orders)}):
    fn = make_classify(run.model, run.layout, all_targets=classification_all_targets(config),
                       num_orders=n)
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
    images, labels = generate_rows(run, wanted, seed=config.seed + 100, temperature=1.0,
                                   guidance=0.0)
    judged = judge(images)
    conditioned = wanted >= 0
    (result["label_agreement"], result["label_agreement_per_label"]) = _agreement(
        judged[conditioned], wanted[conditioned], c)
    result["order"] = config.eval.order
    if config.eval.guidance > 0 or config.eval.temperature != 1:
      # The samples as eval.temperature and eval.guidance make them.
      result["guidance"] = float(config.eval.guidance)
      result["temperature"] = float(config.eval.temperature)
      (result["label_agreement_guided"],
       result["label_agreement_guided_per_label"]) = sampler_agreement(
           run, judge, k, seed=config.seed + 100)
    joint_labels = labels[~conditioned]
    result["joint_label_agreement"] = float(np.mean(judged[~conditioned] == joint_labels))
    result["joint_label_counts"] = np.bincount(joint_labels, minlength=10).tolist()
    result["samples_per_label"] = k
    result["sample_seconds"] = time.perf_counter() - t0
  if jax.process_index() == 0:
    ckpt_lib.write_json(os.path.join(workdir, "eval.json"), result)
  return result


def sampler_agreement(run: Run, judge, samples_per_label: int, *, seed: int,
                      temperature: float | None = None, guidance: float | None = None
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


def _agreement(judged: np.ndarray, wanted: np.ndarray, num_classes: int
               ) -> tuple[float, dict[str, float]]:
  """(fraction of judged == wanted, the same per wanted label as {"0": ..., ...})."""
  return (float(np.mean(judged == wanted)),
          {str(y): float(np.mean(judged[wanted == y] == y)) for y in range(num_classes)})


def figure(run: Run, path: str, *, seed: int = 0, per_row: int = 10,
           guidance: float | None = None) -> None:
  """Fig. 17 in our terms: a row of joint samples (their sampled labels above), a row per label
  of label-conditioned samples, and real held-out digits with p(y | x') (permutation runs); a
  cross-entropy run draws only the classification row."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = []
  if run.config.plm.objective == "permutation":
    c = run.layout.num_classes
    wanted = np.repeat(np.arange(-1, c), per_row).astype(np.int32)       # joint row first
    images, labels = generate_rows(run, wanted, seed=seed, guidance=guidance)
    images, labels = images.reshape(c + 1, per_row, *images.shape[1:]), labels[:per_row]
    rows.append(("joint p(x', y)", images[0], [f"y={int(l)}" for l in labels]))
    w = run.config.eval.guidance if guidance is None else guidance
    t = float(run.config.eval.temperature)
    rows[0] = (rows[0][0] + (f", T={t:g}" if t != 1 else ""),) + rows[0][1:]
    rows += [(f"p(x' | y={y})" + (f", w={w:g}" if w else "") + (f", T={t:g}" if t != 1 else ""),
              images[y + 1], None) for y in range(c)]
  test_images, test_labels = load_split(run.config, run.config.data.test_split)
  real = test_images[:per_row]
  labels, probs = classify(run, real, seed=seed)
  rows.append(("p(y | x')", real, [f"{int(l)} ({probs[i, l]:.2f}), true {int(test_labels[i])}"
                                   for i, l in enumerate(labels)]))
  fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 0.9, len(rows) * 1.05),
                           squeeze=False)
  for r, (name, images, captions) in enumerate(rows):
    for c in range(per_row):
      ax = axes[r, c]
      ax.imshow(images[c], cmap="gray", vmin=0, vmax=255)
      ax.set_xticks([])
      ax.set_yticks([])
      if captions:
        ax.set_title(captions[c], fontsize=6, pad=2)
    axes[r, 0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
  fig.suptitle(f"one permutation model ({run.config.variant}): joint, label-conditioned, "
               "classification", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=150)
  plt.close(fig)


def _save_grid(path: str, images: np.ndarray, title: str) -> None:
  """A PNG grid of uint8 images [N, (S,) 28, 28] (one row per digit when S is given)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  grid = images if images.ndim == 4 else images[:, None]
  if images.ndim == 3:
    cols = min(10, len(images))
    grid = np.concatenate([images, np.zeros((-len(images) % cols,) + images.shape[1:],
                                            np.uint8)]).reshape(-1, cols, *images.shape[1:])
  n, s = grid.shape[:2]
  fig, axes = plt.subplots(n, s, figsize=(s * 0.8, n * 0.8), squeeze=False)
  for i in range(n):
    for j in range(s):
      axes[i, j].imshow(grid[i, j], cmap="gray", vmin=0, vmax=255)
      axes[i, j].axis("off")
  fig.suptitle(title, fontsize=8)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _read_npz(path: str, *, need_labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
  if not path:
    raise app.UsageError("--images is required for this mode: an .npz with `images` uint8 "
                         "[N, 28, 28] (and `labels` [N] for --with_label).")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--images {path}: no such file.")
  with np.load(path) as data:
    if "images" not in data:
      raise ValueError(f"{path} has no `images` array (it has: {', '.join(data.files)}).")
    labels = data["labels"] if "labels" in data else None
    if need_labels and labels is None:
      raise ValueError(f"--with_label needs a `labels` array in {path}.")
    return check_images(data["images"], f"`images` in {path}"), labels


# ----------------------------------------------------------------------------------------------
# Command line.

def run_mode(mode: str, workdir: str, *, images: str = "", out: str = "", label: int | None = None,
             num_samples: int = 8, source_ratio: float = 0.5, initial_portion: bool = False,
             with_label: bool = False, seed: int = 0, guidance: float | None = None
             ) -> dict[str, Any]:
  """One of the capabilities of a trained run (`--mode`); returns what main prints."""
  if mode not in MODES[1:]:
    raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}.")
  run = load_run(workdir)
  if mode == "evaluate":
    return evaluate(run, workdir)
  if mode == "figure":
    path = out or os.path.join(workdir, "fig17.png")
    figure(run, path, seed=seed, guidance=guidance)
    return dict(figure=path)
  if mode == "classify":
    x, _ = _read_npz(images)
    labels, probs = classify(run, x, seed=seed)
    path = out or os.path.join(workdir, "classified.npz")
    np.savez(path, labels=labels, probs=probs)
    return dict(out=path, num=int(len(labels)), label_counts=np.bincount(labels, minlength=10)
                .tolist())
  if mode == "generate":
    x, y = generate(run, num_samples, label=label, seed=seed, guidance=guidance)
    path = out or os.path.join(workdir, "generated.npz")
    np.savez(path, images=x, labels=y)
    png = os.path.splitext(path)[0] + ".png"
    w = run.config.eval.guidance if guidance is None else guidance
    t = float(run.config.eval.temperature)
    how = (f", w={w:g}" if w and label is not None else "") + (f", T={t:g}" if t != 1 else "")
    _save_grid(png, x, f"p(x' | y={label}){how}" if label is not None else f"joint p(x', y){how}: "
               + " ".join(str(int(v)) for v in y[:20]))
    return dict(out=path, png=png, labels=y.tolist())
  x, labels = _read_npz(images, need_labels=with_label)
  completions, source, sampled = complete(run, x, source_ratio=source_ratio,
                                          initial_portion=initial_portion,
                                          labels=labels if with_label else None,
                                          num_samples=num_samples, seed=seed,
                                          guidance=guidance)
  path = out or os.path.join(workdir, "completed.npz")
  np.savez(path, completions=completions, source_mask=source, labels=sampled, images=x)
  png = os.path.splitext(path)[0] + ".png"
  _save_grid(png, np.concatenate([x[:, None], completions], axis=1),
             f"ground truth, then {num_samples} completions from "
             f"{'the top' if initial_portion else 'a random'} {source_ratio:.0%} of the tokens"
             f"{' and the label' if with_label else ''}")
  return dict(out=path, png=png)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the run's directory.")
  if _MODE.value == "train":
    result = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  else:
    result = run_mode(_MODE.value, _WORKDIR.value, images=_IMAGES.value, out=_OUT.value,
                      label=_LABEL.value, num_samples=_NUM_SAMPLES.value,
                      source_ratio=_SOURCE_RATIO.value, initial_portion=_INITIAL.value,
                      with_label=_WITH_LABEL.value, seed=_SEED.value,
                      guidance=_GUIDANCE.value)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  _CONFIG, _WORKDIR = cli.define_config_and_workdir(
      "plm_mnist.py",
      config_help="Config file and variant, e.g. configs/plm_mnist.py:cpu (the default); used "
                  "by --mode=train only (the other modes read the run's config.json).",
      workdir_help="The run's directory: checkpoints, quantiser, metrics, eval.json.")
  _MODE = flags.DEFINE_enum("mode", "train", MODES, "What to do with --workdir.")
  _IMAGES = flags.DEFINE_string("images", "", "classify/complete: .npz with uint8 `images` "
                                "[N, 28, 28] (and `labels` for --with_label).")
  _OUT = flags.DEFINE_string("out", "", "Output .npz (a .png is written next to it) or, for "
                             "figure, the .png.")
  _LABEL = flags.DEFINE_integer("label", None, "generate: condition on this label (0-9); "
                                "omitted: joint samples.")
  _NUM_SAMPLES = flags.DEFINE_integer("num_samples", 8, "generate: samples; complete: draws "
                                      "per digit.")
  _SOURCE_RATIO = flags.DEFINE_float("source_ratio", 0.5, "complete: fraction of image tokens "
                                     "given.")
  _INITIAL = flags.DEFINE_bool("initial_portion", False, "complete: give the first tokens in "
                               "raster order instead of random ones.")
  _WITH_LABEL = flags.DEFINE_bool("with_label", False, "complete: give the label too.")
  _SEED = flags.DEFINE_integer("seed", 0, "Seed of masks, orders and draws.")
  _GUIDANCE = flags.DEFINE_float("guidance", None, "generate/complete/figure: label guidance "
                                 "w >= 0 of samples given a label (default: the run's "
                                 "eval.guidance; 0: the model's p(x' | y)).")
  app.run(main)
