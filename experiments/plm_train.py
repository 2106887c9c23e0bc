r"""Trains the multi-modal permutation model of paper App. E.1 (one model of VQ tokens and label).

  python -m experiments.plm_mnist --config configs/plm_mnist.py:cpu --workdir /tmp/plm_cpu

The quantiser is trained into <workdir>/vq first when there is none (experiments/vq_mnist.py;
`--config.vq_dir` uses a finished one instead). Each step draws a task and a factorisation
order per example (`bigjax.permutation.mixed_orders`: classification with probability
plm.classify_prob, else an LM task in a random or raster order, the label last with
probability plm.label_last_prob), shifts the digits by up to `data.max_shift` pixels
(classification tasks) or `data.lm_max_shift` (LM tasks), quantises them with the frozen
quantiser into L - 1 codes, appends the label (bigjax.multimodal) and maximises Eq. (15) over
all L positions (`plm.objective="permutation"`), or only log p(y | x') after all image tokens
(`"classification"`: the cross-entropy baseline with the same network). The loop is
bigjax.training.train: the step is jitted once with the state replicated and donated and the
batch split over a 1-D device mesh (bigjax.training.sharding). Randomness and data order are
functions of (seed, step), so a resumed run continues as the uninterrupted one would.

Writes into --workdir:
  config.json        the config (plm_run.load_run rebuilds the model from it)
  vq/                the quantiser (unless config.vq_dir names another)
  checkpoints/       Orbax checkpoints; the run resumes from the newest by itself
  metrics.jsonl      loss, image_nll (nats per image token), label_nll / label_accuracy (on the
                     examples whose label was last and predicted), grad_norm, steps_per_sec;
                     test_accuracy every `eval_every` steps (also as TensorBoard events)
  run.json           steps, timings, compilations, devices
  eval.json          experiments/plm_eval.py
  fig17.png          experiments/plm_figures.py
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax import losses
from bigjax import multimodal
from bigjax import permutation
from bigjax.data import augment
from bigjax.data import mnist
from bigjax.models import vq
from bigjax.models.two_stream import TwoStreamTransformer
from bigjax.training import batch_fn, distributed, loop, runs, sharding, write_json
from experiments import plm_eval
from experiments import plm_figures
from experiments import plm_setup
from experiments import vq_mnist
from experiments import vq_setup
from experiments.plm_run import Run, make_classify
from experiments.plm_setup import PLMState, Quantiser

DATA_STREAM = 2  # bigjax.training.data_order: the permutation model's order of the digits


def prepare_quantiser(config, workdir: str, *, progress: bool = True) -> Quantiser:
  """The run's quantiser: the finished one in `config.vq_dir` (trained on the run's data), or
  the one in <workdir>/vq, trained (or finished) there first with `config.vq` on the run's
  data (`plm_setup.with_run_data`) when needed."""
  directory = plm_setup.vq_dir(config, workdir)
  config = plm_setup.with_run_data(config)
  if config.vq_dir and os.path.isfile(os.path.join(directory, "config.json")):
    plm_setup.check_shared_quantiser(config, runs.read_config(directory, vq_setup.KIND))
  if not config.vq_dir and os.path.isfile(os.path.join(directory, "config.json")):
    # A resumed run must not pair the old quantiser with a config.json describing another.
    trained = _flat(json.loads(runs.read_config(directory, vq_setup.KIND).to_json()))
    wanted = _flat(json.loads(config.vq.to_json()))
    changed = sorted(k for k in set(trained) | set(wanted) if trained.get(k) != wanted.get(k))
    if changed:
      diff = ", ".join(f"vq.{k}: {trained.get(k)!r} there, {wanted.get(k)!r} now" for k in changed)
      raise ValueError(
          f"the quantiser in {directory} was trained with another vq config ({diff}): this "
          "run's tokens come from it. Resume with the vq.* settings that trained it, use a new "
          "--workdir, or give a finished quantiser with --config.vq_dir."
      )
  if not config.vq_dir and not os.path.isfile(os.path.join(directory, vq_setup.SUMMARY_FILE)):
    vq_mnist.train(config.vq, directory, progress=progress)
  return plm_setup.load_quantiser(config, workdir)


def _flat(tree: dict, prefix: str = "") -> dict:
  """{"a.b": value} of a nested dict."""
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def sample_orders(rng, config, layout: multimodal.Layout, batch_size: int):
  """One batch's tasks of Eq. (15) from the config's plm.* probabilities
  (bigjax.permutation.mixed_orders): (ranks [B, L], target_mask [B, L], classify [B])."""
  p = config.plm
  classify_prob = 1.0 if p.objective == "classification" else float(p.classify_prob)
  return permutation.mixed_orders(
      rng,
      batch_size,
      layout.length,
      label_position=layout.label_position,
      classify_prob=classify_prob,
      label_last_prob=float(p.label_last_prob),
      raster_prob=float(p.raster_prob),
  )


def make_train_step(
    config, model: TwoStreamTransformer, layout: multimodal.Layout, quantiser: Quantiser
):
  """train_step(state, images uint8 [B, 28, 28], labels int32 [B]) -> (state, metrics).

  The loss is the mean negative log-likelihood per target token of the permutation LM tasks
  plus plm.label_weight times the mean cross-entropy of the classification tasks (just the
  latter for the baseline)."""
  opt = plm_setup.make_optimizer(config)
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
    shifted = augment.random_shift(k_shift, x, config.data.max_shift)
    if config.data.lm_max_shift != config.data.max_shift:  # LM tasks get their own shifts
      lm_shifted = augment.random_shift(k_shift, x, config.data.lm_max_shift)
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
      logits, _ = model.apply(
          params, tokens, segments, perm_mask, train=True, rngs={"dropout": k_drop}
      )
      lm_nll = losses.permutation_lm(logits, tokens, lm_target, vocab_mask=allowed)
      cls_nll = losses.permutation_lm(logits, tokens, cls_target, vocab_mask=allowed)
      loss = jnp.sum(lm_nll) / jnp.maximum(n_lm, 1) + w * jnp.sum(cls_nll) / jnp.maximum(n_cls, 1)
      label_nll = losses.permutation_lm(logits, tokens, target & is_label, vocab_mask=allowed)
      image_nll = losses.permutation_lm(logits, tokens, lm_target & ~is_label, vocab_mask=allowed)
      correct = jnp.argmax(logits[:, layout.label_position, layout.num_codes :], -1) == labels
      last = label_last.astype(jnp.float32)
      n_last = jnp.maximum(jnp.sum(last), 1.0)
      aux = dict(
          image_nll=jnp.sum(image_nll) / jnp.maximum(jnp.sum(lm_target & ~is_label), 1),
          label_nll=jnp.sum(label_nll * last) / n_last,
          label_accuracy=jnp.sum(correct * last) / n_last,
          classify_fraction=jnp.mean(classify.astype(jnp.float32)),
      )
      return loss, aux

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads), **aux)
    return PLMState(state.step + 1, params, opt_state, state.rng), metrics

  return train_step


def train_and_evaluate(config, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the config's permutation model in `workdir`, then evaluates it.

  Returns:
    the run summary (also run.json) with the evaluation (also eval.json) under "eval".
  """
  plm_setup.validate_config(config)
  config = plm_setup.with_run_data(config)  # the nested quantiser trains on the run's digits
  distributed.initialize(auto=config.distributed)  # (a no-op once the entry point joined)
  workdir = os.path.abspath(workdir)
  t0 = time.perf_counter()
  train_images, train_labels = plm_setup.load_split(config, config.data.train_split)
  test_images, test_labels = plm_setup.load_split(config, config.data.test_split)
  quantiser = prepare_quantiser(config, workdir, progress=progress)
  vq_seconds = time.perf_counter() - t0
  layout = plm_setup.layout_of(quantiser)
  model = plm_setup.build_model(config, layout)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  replicated, batch_sharded = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  train_step = jax.jit(
      make_train_step(config, model, layout, quantiser),
      in_shardings=(replicated, batch_sharded, batch_sharded, replicated, replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0,
  )
  vq_params = sharding.put(quantiser.params, replicated)
  vectors = sharding.put(quantiser.vectors, replicated)
  digits = batch_fn(
      [train_images, train_labels],
      config.batch_size,
      seed=config.seed,
      stream=DATA_STREAM,
      mesh=mesh,
  )
  batch = lambda step: digits(step) + (vq_params, vectors)

  hooks = []
  if config.eval_every:
    classify = make_classify(
        model, layout, all_targets=plm_setup.classification_all_targets(config), num_orders=1
    )
    test_tokens = vq.encode(
        quantiser.encoder, quantiser.params, quantiser.vectors, test_images
    ).reshape(len(test_images), -1)
    accuracy = lambda step, state: dict(
        test_accuracy=float(
            np.mean(classify(state.params, test_tokens, seed=config.seed)[0] == test_labels)
        )
    )
    hooks.append(loop.Hook(accuracy, every=config.eval_every, at_end=False, log=loop.METRICS_FILE))
  state, run = loop.train(
      workdir,
      config=config,
      init_state=lambda: jax.jit(
          lambda key: plm_setup.init_state(config, model, layout, key), out_shardings=replicated
      )(jax.random.key(int(config.seed))),
      step_fn=train_step,
      batch_fn=batch,
      num_steps=config.num_steps,
      signature=plm_setup.model_signature(config, layout),
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints,
      hooks=hooks,
      state_sharding=replicated,
      progress=progress,
      description=f"permutation LM {config.variant} ({config.plm.objective})",
      show=("loss", "label_accuracy", "test_accuracy"),
      fix="Lower learning_rate.",
  )
  train_seconds = time.perf_counter() - t0
  state = sharding.local_view(state)  # this process's copy, for the evaluation
  trained = Run(config, layout, model, state.params, quantiser)
  result = plm_eval.evaluate(
      trained, workdir, test_images=test_images, test_labels=test_labels, progress=progress
  )
  if distributed.is_main_process():
    plm_figures.figure(trained, os.path.join(workdir, "fig17.png"), seed=config.seed)
  summary = dict(
      variant=config.variant,
      objective=config.plm.objective,
      **run,
      train_seconds=train_seconds,
      vq_seconds=vq_seconds,
      **loop.environment(),
      train_digits=mnist.describe_split(config.data.source, config.data.train_split),
      test_digits=mnist.describe_split(config.data.source, config.data.test_split),
      eval=result,
  )
  summary["seconds"] = time.perf_counter() - t0
  write_json(os.path.join(workdir, "run.json"), summary)
  distributed.barrier("plm_train: done")  # the run's files are complete for every process
  return summary
