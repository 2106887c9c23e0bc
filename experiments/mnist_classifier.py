r"""Trains the MNIST classifier that scores generated digits (bigjax.models.classifier).

  python -m experiments.mnist_classifier --config configs/mnist_classifier.py:cpu \
      --workdir /tmp/clf_cpu

Writes config.json, checkpoints/, metrics.jsonl (and TensorBoard events) and classifier.json
(test accuracy, steps, timings) into --workdir, resumes from the newest checkpoint found there,
and prints the summary. classifier.json is removed while a run continues training, so a loader
never pairs the parameters of one step with the accuracy of another. Load the result with
`experiments.classifier_setup.load(workdir, image_size=...)`.

A partial-digit classifier (`data.source_patch` > 0) sees, per training digit, k ~ uniform{0..L}
of its L patches: the first k in raster order (an initial portion, Fig. 5b) for half of the
digits, k random ones for the others (`random_sources`), the two kinds of source set
`experiments.gan_eval` measures.
"""

from __future__ import annotations

import os
import time
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigjax import tasks
from bigjax.data import augment
from bigjax.data import mnist
from bigjax.models.classifier import make_predict
from bigjax.models.patches import patch_masks_to_pixels
from bigjax.training import batch_fn, distributed, loop, programs, sharding, write_json
from experiments import cli
from experiments.classifier_setup import (
    SIGNATURE_DEFAULTS,
    SUMMARY_FILE,
    ClassifierState,
    build_model,
    init_state,
    load_split,
    make_optimizer,
    model_signature,
    validate_config,
)

DATA_STREAM = 1  # bigjax.training.data_order: the classifier's order of the training digits


def random_sources(rng: jax.Array, batch: int, image_size: int, patch: int) -> jax.Array:
  """bool [B, S, S] pixel masks of the given pixels, for training a partial-digit classifier:
  k ~ uniform{0, ..., L} of the L = (S / patch)^2 patches per digit, an initial portion for
  half of the digits and a random set for the others (bigjax.tasks.source_sets)."""
  length = (image_size // patch) ** 2
  k_count, k_kind, k_order = jax.random.split(rng, 3)
  count = jax.random.randint(k_count, (batch, 1), 0, length + 1)[:, 0]
  initial = jax.random.bernoulli(k_kind, 0.5, (batch, 1))[:, 0]
  source = tasks.source_sets(k_order, batch, length, count, initial_portion=initial)
  return patch_masks_to_pixels(source, (image_size, image_size), patch)


@programs.by_config
def make_train_step(config, mesh: jax.sharding.Mesh | None = None) -> Callable:
  """(state, images [B, H, W] in [-1, 1], labels [B]) -> (state, metrics), jitted, the state
  donated. Augmentation, source-mask (partial-digit classifiers) and dropout keys are
  `fold_in(key(seed), step)`."""
  model = build_model(config)
  opt = make_optimizer(config)
  max_shift = int(config.data.max_shift)
  seed = int(config.seed)

  def train_step(state: ClassifierState, images: jax.Array, labels: jax.Array):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    k_shift, k_dropout = jax.random.split(rng)
    images = augment.random_shift(k_shift, images, max_shift)
    source = None
    if model.source_patch:  # its own key: whole-digit runs draw what they drew before
      source = random_sources(
          jax.random.fold_in(rng, 1), images.shape[0], images.shape[1], model.source_patch
      )

    def loss_fn(params):
      logits, _ = model.apply(params, images, source, train=True, rngs={"dropout": k_dropout})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, accuracy=accuracy, grad_norm=optax.tree.norm(grads))
    return ClassifierState(state.step + 1, params, opt_state), metrics

  # Data parallel on `mesh` (bigjax.training.sharding): the state replicated, the batch split.
  mesh = mesh or sharding.data_mesh()
  replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(
      train_step,
      in_shardings=(replicated,) + (split,) * 2,
      out_shardings=(replicated, replicated),
      donate_argnums=0,
  )


def _partial_scores(config, predict, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
  """A partial-digit classifier on a random half of each test digit's patches (fixed draws)."""
  size, patch = int(config.data.image_size), int(config.data.source_patch)
  length = (size // patch) ** 2
  half = tasks.source_sets(
      jax.random.fold_in(jax.random.key(int(config.seed)), 2), len(images), length, length // 2
  )
  half = np.asarray(patch_masks_to_pixels(half, (size, size), patch))
  half_labels, half_probs, _ = predict(images, half)
  return dict(
      source_patch=patch,
      test_accuracy_random_half=float(np.mean(half_labels == labels)),
      test_true_label_prob_random_half=float(np.mean(half_probs[np.arange(len(labels)), labels])),
  )


def train(
    config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True
) -> dict[str, Any]:
  """Trains (or resumes) the config's classifier in `workdir`, then evaluates it.

  Args:
    config: a `configs/mnist_classifier.py` config.
    workdir: where config.json, checkpoints/, metrics.jsonl and classifier.json go. A run
      resumes from the newest checkpoint there; one that already reached `num_steps` is only
      evaluated again.
    progress: show a tqdm progress bar.

  Returns:
    The summary also written to classifier.json: test_accuracy, num_test, num_train, steps,
    resumed_from (the step restored, None for a fresh run), seconds (this call), image_size,
    source, train_split, test_split, variant, feature_dim. A partial-digit classifier's
    test_accuracy is on whole digits; it also has source_patch, test_accuracy_random_half and
    test_true_label_prob_random_half (given a random half of each test digit's patches).

  Raises:
    ValueError: an inconsistent config or unlabelled data.
    bigjax.training.SignatureMismatchError: `workdir` holds another model's checkpoints.
    bigjax.training.NonFiniteLossError: the loss became NaN or inf (nothing saved after it).
  """
  validate_config(config)
  t0 = time.perf_counter()
  distributed.initialize(auto=config.get("distributed", False))  # (once the entry point joined)
  train_images, train_labels = load_split(config, config.data.train_split)
  test_images, test_labels = load_split(config, config.data.test_split)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  replicated = sharding.replicated(mesh)
  batch = batch_fn(
      [train_images, train_labels],
      config.batch_size,
      seed=config.seed,
      stream=DATA_STREAM,
      transform=lambda x, y: (mnist.to_unit_range(x), y),
      mesh=mesh,
  )

  state, run = loop.train(
      workdir,
      config=config,
      init_state=lambda: programs.jit_init(config, init_state, replicated)(
          jax.random.key(int(config.seed))
      ),
      step_fn=make_train_step(config, mesh),
      batch_fn=batch,
      num_steps=config.num_steps,
      signature=model_signature(config),
      signature_defaults=SIGNATURE_DEFAULTS,
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints,
      outdated_by_training=(SUMMARY_FILE,),
      progress=progress,
      description=f"MNIST classifier {config.get('variant', '')}",
      show=("loss", "accuracy"),
      fix="Lower learning_rate.",
      state_sharding=replicated,
  )

  state = sharding.local_view(state)  # this process's copy, for the evaluation
  model = build_model(config)
  predict = make_predict(model, state.params)
  partial = {}
  if model.source_patch:
    labels, _, _ = predict(test_images, np.ones(test_images.shape, bool))
    partial = _partial_scores(config, predict, test_images, test_labels)
  else:
    labels, _, _ = predict(test_images)
  summary = dict(
      variant=config.get("variant"),
      test_accuracy=float(np.mean(labels == test_labels)),
      num_test=int(len(test_labels)),
      num_train=int(len(train_labels)),
      steps=run["step"],
      resumed_from=run["resumed_from"],
      seconds=time.perf_counter() - t0,
      image_size=int(config.data.image_size),
      feature_dim=int(config.model.feature_dim),
      source=str(config.data.source),
      train_split=config.data.train_split,
      test_split=config.data.test_split,
      train_digits=mnist.describe_split(config.data.source, config.data.train_split),
      test_digits=mnist.describe_split(config.data.source, config.data.test_split),
      **partial,
  )
  write_json(os.path.join(os.path.abspath(workdir), SUMMARY_FILE), summary)
  distributed.barrier("mnist_classifier: done")  # the run's files are complete for every process
  return summary


if __name__ == "__main__":
  cli.run(
      train,
      "mnist_classifier.py",
      workdir_help="Directory for the classifier's checkpoints, metrics and "
      "classifier.json; a run resumes from the newest checkpoint found here.",
  )
