"""The MNIST classifier's setup, shared by its trainer and every tool that loads one.

From a `configs/mnist_classifier.py` config: config checks, the model, its checkpoint
signature and training state, the data, and `load`, the finished classifier of a workdir
(bigjax.training.runs, so runs written by older code load through `migrate`).

  model, params, info = classifier_setup.load("/tmp/clf_cpu", image_size=28)
  predict = classifier.make_predict(model, params)     # bigjax.models.classifier
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigjax.data import mnist
from bigjax.models.classifier import Classifier
from bigjax.training import optimizers
from bigjax.training import runs
from experiments import config_checks

__all__ = [
    "ClassifierState",
    "KIND",
    "SUMMARY_FILE",
    "abstract_state",
    "build_model",
    "init_state",
    "load",
    "load_split",
    "make_optimizer",
    "migrate",
    "model_signature",
    "train_command",
    "validate_config",
]

SUMMARY_FILE = "classifier.json"


def train_command(
    workdir: str,
    variant: str | None = None,
    *,
    image_size: int | None = None,
    source_patch: int = 0,
) -> str:
  """The command that trains a classifier into `workdir`: the run's own variant, or one for
  `image_size` digits, whole (source_patch 0) or partial ones of that patch size."""
  if variant is None or image_size is not None or source_patch:
    variant = f"partial --config.data.source_patch={int(source_patch)}" if source_patch else "cpu"
    if image_size not in (None, 28):
      variant += f" --config.data.image_size={int(image_size)}"
  return (
      "python -m experiments.mnist_classifier --config configs/mnist_classifier.py:"
      f"{variant} --workdir {workdir}"
  )


def migrate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A config.json written by older code, with the fields added since set to what it did."""
  return runs.add_defaults(
      config, {"data.source_patch": 0, "keep_checkpoints": 3}  # whole digits
  )  # was a literal 3


def build_model(config) -> Classifier:
  m = config.model
  return Classifier(
      widths=tuple(int(w) for w in m.widths),
      feature_dim=int(m.feature_dim),
      dropout=float(m.dropout),
      image_size=int(config.data.image_size),
      source_patch=int(config.data.source_patch),
  )


# Signature fields added since the first classifiers, with the value those had.
SIGNATURE_DEFAULTS = dict(source_patch=0)


def model_signature(config) -> dict[str, Any]:
  """What a checkpoint must agree on to be restored into this config's state (JSON types:
  Orbax stores the signature as JSON, so tuples are lists here)."""
  m = config.model
  return dict(
      image_size=int(config.data.image_size),
      widths=[int(w) for w in m.widths],
      feature_dim=int(m.feature_dim),
      dropout=float(m.dropout),
      source_patch=int(config.data.source_patch),
  )


def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  check = config_checks.Checker(config, "configs/mnist_classifier.py")
  fail = check.fail
  check.loop_fields()
  check.held_out("data.train_split", "data.test_split")
  size = check.integer("data.image_size")
  widths = config.model.widths
  if (
      not isinstance(widths, (tuple, list))
      or not widths
      or not all(isinstance(w, int) and w >= 1 for w in widths)
  ):
    fail(f"model.widths must be a non-empty tuple of positive ints, got {widths!r}.")
  if size < 2 ** len(widths):
    fail(
        f"data.image_size={size} is too small for {len(widths)} 2x2 poolings "
        f"(model.widths={tuple(widths)}); use fewer stages or larger images."
    )
  if not (isinstance(config.model.feature_dim, int) and config.model.feature_dim >= 1):
    fail(f"model.feature_dim must be a positive int, got {config.model.feature_dim!r}.")
  if not 0.0 <= config.model.dropout < 1.0:
    fail(f"model.dropout must be in [0, 1), got {config.model.dropout}.")
  if not config.learning_rate > 0:
    fail(f"learning_rate must be > 0, got {config.learning_rate}.")
  if not config.weight_decay >= 0:
    fail(f"weight_decay must be >= 0, got {config.weight_decay}.")
  if not (isinstance(config.data.max_shift, int) and 0 <= config.data.max_shift < size):
    fail(f"data.max_shift must be an int in [0, image_size), got {config.data.max_shift!r}.")
  patch = config.data.source_patch
  if isinstance(patch, bool) or not isinstance(patch, int) or patch < 0 or (patch and size % patch):
    fail(
        f"data.source_patch must be 0 (whole digits) or a patch size that divides "
        f"data.image_size={size} (the GAN run's model.patch_size), got {patch!r}."
    )


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [N, S, S] digits of `split` at the config's image size, and int32 labels [N]."""
  images, labels = mnist.load(config.data.source, split=split)
  if labels.size and labels.min() < 0:
    raise ValueError(
        f"MNIST source {config.data.source!r} (split {split!r}) has no labels; "
        "the classifier needs labelled digits (an .npz needs a `labels` array)."
    )
  size = int(config.data.image_size)
  if images.shape[1:] != (size, size):
    images = mnist.resize(images, size)
  return images, labels


class ClassifierState(NamedTuple):
  """The training state, one pytree (checkpointed as is)."""

  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with a linear warm-up (the first 5% of the steps, at most 100) then cosine decay to
  1% of `learning_rate` at `num_steps`."""
  return optimizers.warmup_cosine_adamw(
      config.learning_rate,
      config.num_steps,
      warmup_steps=min(100, config.num_steps // 20),
      weight_decay=config.weight_decay,
  )


def init_state(config, rng: jax.Array) -> ClassifierState:
  model = build_model(config)
  size = int(config.data.image_size)
  source = jnp.ones((1, size, size), bool) if model.source_patch else None
  params = model.init(rng, jnp.zeros((1, size, size), jnp.float32), source)
  return ClassifierState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=make_optimizer(config).init(params)
  )


def abstract_state(config) -> ClassifierState:
  """The state's shapes and dtypes, to restore a checkpoint into without initialising."""
  return jax.eval_shape(lambda: init_state(config, jax.random.key(0)))


KIND = runs.RunKind(
    name="MNIST classifier",
    train_command=train_command,
    abstract_state=abstract_state,
    signature=model_signature,
    migrate=migrate,
    signature_defaults=SIGNATURE_DEFAULTS,
    summary_file=SUMMARY_FILE,
    fields=("model.feature_dim", "data.image_size"),
)


def load(
    workdir: str, *, image_size: int | None = None, source_patch: int | None = None
) -> tuple[Classifier, Any, dict[str, Any]]:
  """The classifier trained in `workdir` by `python -m experiments.mnist_classifier`.

  Args:
    workdir: the training run's directory.
    image_size: the side of the images it will classify; a classifier trained on another size
      raises a ValueError (None: no check).
    source_patch: 0 to require a whole-digit classifier, P > 0 a partial-digit one trained
      with P x P source patches; anything else raises a ValueError (None: no check).

  Returns:
    (model, params, info): the Flax module (its `image_size` set), its parameters, and the
    summary from classifier.json (test_accuracy, steps, image_size, ...).

  Raises:
    FileNotFoundError: no finished classifier in `workdir`; the message gives the command that
      trains (or finishes training) one.
    ValueError: `image_size` or `source_patch` differs from the classifier's.
  """

  def check(config, info):
    trained_size = int(info["image_size"])
    if image_size is not None and int(image_size) != trained_size:
      other = os.path.join(
          os.path.dirname(run_dir), f"{os.path.basename(run_dir)}_" f"{int(image_size)}px"
      )
      raise ValueError(
          f"the classifier in {run_dir} was trained on {trained_size}x{trained_size} digits, "
          f"the images are {int(image_size)}x{int(image_size)}: train one with "
          f"`{train_command(other, image_size=image_size)}` and load that."
      )
    trained_patch = int(info.get("source_patch", 0))
    if source_patch is not None and int(source_patch) != trained_patch:
      kind = lambda p: f"partial digits of {p}x{p} patches" if p else "whole digits"
      raise ValueError(
          f"the classifier in {run_dir} reads {kind(trained_patch)}, and "
          f"{kind(int(source_patch))} are needed here: train one with "
          f"`{train_command('OTHER_DIR', image_size=trained_size, source_patch=int(source_patch))}`"
          " and pass that."
      )

  run_dir = os.path.abspath(os.fspath(workdir))
  kind = KIND
  if image_size is not None:  # a missing classifier: say how to train one at this size
    kind = dataclasses.replace(
        KIND,
        train_command=lambda w, v: (
            train_command(w, v) if v else train_command(w, image_size=image_size)
        ),
    )
  run = runs.load(run_dir, kind, check=check)
  return build_model(run.config), run.state.params, run.summary
