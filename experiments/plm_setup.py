"""The permutation model's setup (App. E.1), shared by its trainer and every tool that reads a run.

From a `configs/plm_mnist.py` config: config checks, the quantiser of the run, the token
layout and the two-stream model, the checkpoint signature and training state, the digits, and
the run's kind for `bigjax.training.runs` (older runs load through `migrate`).
"""

from __future__ import annotations

import copy
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigjax import multimodal
from bigjax.data import mnist
from bigjax.models import vq
from bigjax.models.classifier import NUM_CLASSES
from bigjax.models.two_stream import TwoStreamTransformer
from bigjax.training import optimizers
from bigjax.training import runs
from configs import plm_mnist as plm_config
from experiments import config_checks
from experiments import vq_setup

__all__ = [
    "PLMState",
    "Quantiser",
    "abstract_state",
    "build_model",
    "kind",
    "train_command",
    "classification_all_targets",
    "init_state",
    "layout_of",
    "load_quantiser",
    "load_split",
    "make_optimizer",
    "migrate",
    "model_signature",
    "validate_config",
    "vq_dir",
]


def migrate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A config.json written by older code, with the fields added since set to what it did: LM
  tasks shifted like classification tasks, uniformly random orders only, no label guidance."""
  vq_setup.migrate(config.vq)  # the quantiser's config, nested
  return runs.add_defaults(
      config,
      {"data.lm_max_shift": config.data.max_shift, "plm.raster_prob": 0.0, "eval.guidance": 0.0},
  )


class PLMState(NamedTuple):
  """The training state, one pytree (checkpointed as is); rng holds raw key data."""

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


class Quantiser(NamedTuple):
  encoder: vq.VQEncoder
  decoder: vq.VQDecoder
  params: Any  # {"encoder": ..., "decoder": ...}
  vectors: jax.Array  # [K, code_dim]
  info: dict


def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  check = config_checks.Checker(config, "configs/plm_mnist.py")
  fail = check.fail
  check.loop_fields()
  check.held_out("data.train_split", "data.test_split")
  for name in ("warmup_steps", "eval_every"):
    check.integer(name, minimum=0)
  if config.plm.objective not in plm_config.OBJECTIVES:
    fail(f"plm.objective={config.plm.objective!r}; choose one of {plm_config.OBJECTIVES}.")
  if not 0.0 <= config.plm.label_last_prob <= 1.0:
    fail(f"plm.label_last_prob must be in [0, 1], got {config.plm.label_last_prob}.")
  if not 0.0 <= config.plm.classify_prob <= 1.0:
    fail(f"plm.classify_prob must be in [0, 1], got {config.plm.classify_prob}.")
  if config.plm.objective == "permutation" and config.plm.classify_prob == 1.0:
    fail(
        "plm.classify_prob=1 leaves no permutation LM task; use "
        "plm.objective='classification' for the cross-entropy baseline."
    )
  if not config.plm.label_weight > 0:
    fail(f"plm.label_weight must be > 0, got {config.plm.label_weight}.")
  m = config.model
  if m.width % m.num_heads:
    fail(f"model.width={m.width} is not divisible by model.num_heads={m.num_heads}.")
  if not 0.0 <= m.dropout < 1.0:
    fail(f"model.dropout must be in [0, 1), got {m.dropout}.")
  if not (config.learning_rate > 0 and config.weight_decay >= 0 and config.grad_clip > 0):
    fail("learning_rate and grad_clip must be > 0 and weight_decay >= 0.")
  for name in ("data.max_shift", "data.lm_max_shift"):
    check.integer(name, minimum=0, below=14)
  if not 0.0 <= config.plm.raster_prob <= 1.0:
    fail(f"plm.raster_prob must be in [0, 1], got {config.plm.raster_prob}.")
  e = config.eval
  for name in ("eval.num_orders", "eval.samples_per_label"):
    check.integer(name)
  if e.order not in ("random", "raster"):
    fail(f"eval.order must be 'random' or 'raster', got {e.order!r}.")
  if not e.temperature > 0:
    fail(f"eval.temperature must be > 0, got {e.temperature}.")
  if not e.guidance >= 0:
    fail(f"eval.guidance must be >= 0, got {e.guidance}.")


QUANTISER_DATA = ("source", "train_split", "test_split")  # vq.data follows the run's data


def with_run_data(config) -> ml_collections.ConfigDict:
  """The config with its nested quantiser's data.source, train_split and test_split set to the
  run's, so the quantiser trains on the run's training digits only: with
  `--config.data.source=X.npz` it used to train on the bundled digits, the .npz's held-out rows
  among them. A config whose vq.data already matches is returned as is."""
  if all(config.vq.data[k] == config.data[k] for k in QUANTISER_DATA):
    return config
  config = copy.deepcopy(config)
  for k in QUANTISER_DATA:
    config.vq.data[k] = config.data[k]
  return config


def check_shared_quantiser(config, quantiser_config) -> None:
  """Refuses a quantiser (--config.vq_dir) trained on other digits than the run's training ones:
  the run's held-out digits could be among them."""
  theirs = {k: quantiser_config.data[k] for k in ("source", "train_split")}
  ours = {k: config.data[k] for k in ("source", "train_split")}
  if theirs != ours:
    raise ValueError(
        f"the quantiser in {config.vq_dir} was trained on data {theirs}, this run trains on "
        f"{ours}: its training digits may hold this run's held-out ones. Give a quantiser "
        "trained on the run's data, or leave --config.vq_dir empty to train one in the workdir."
    )


def vq_dir(config, workdir: str) -> str:
  return os.path.abspath(config.vq_dir) if config.vq_dir else os.path.join(workdir, "vq")


def load_quantiser(config, workdir: str) -> Quantiser:
  """The run's finished quantiser (`vq_dir`)."""
  return Quantiser(*vq_setup.load(vq_dir(config, workdir)))


def layout_of(quantiser: Quantiser) -> multimodal.Layout:
  side = vq.grid_size(quantiser.encoder.widths)
  return multimodal.Layout(
      num_codes=int(quantiser.vectors.shape[0]),
      num_image_tokens=side * side,
      num_classes=NUM_CLASSES,
  )


def build_model(config, layout: multimodal.Layout) -> TwoStreamTransformer:
  m = config.model
  return TwoStreamTransformer(
      vocab_size=layout.vocab_size,
      num_segments=2,
      max_length=layout.length,
      width=int(m.width),
      depth=int(m.depth),
      num_heads=int(m.num_heads),
      mlp_ratio=float(m.mlp_ratio),
      dropout=float(m.dropout),
  )


def model_signature(config, layout: multimodal.Layout) -> dict[str, Any]:
  m = config.model
  return dict(
      num_codes=layout.num_codes,
      num_image_tokens=layout.num_image_tokens,
      width=int(m.width),
      depth=int(m.depth),
      num_heads=int(m.num_heads),
      mlp_ratio=float(m.mlp_ratio),
      objective=str(config.plm.objective),
  )


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [N, 28, 28] digits and int32 [N] labels of `split`."""
  images, labels = mnist.load(config.data.source, split=split)
  if labels.size and labels.min() < 0:
    raise ValueError(
        f"MNIST source {config.data.source!r} (split {split!r}) has no labels; "
        "multi-modal training needs labelled digits."
    )
  if images.shape[1:] != (vq.IMAGE_SIZE, vq.IMAGE_SIZE):
    images = mnist.resize(images, vq.IMAGE_SIZE)
  return images, labels.astype(np.int32)


def make_optimizer(config) -> optax.GradientTransformation:
  return optimizers.warmup_cosine_adamw(
      config.learning_rate,
      config.num_steps,
      warmup_steps=config.warmup_steps,
      weight_decay=config.weight_decay,
      grad_clip=config.grad_clip,
  )


def init_state(config, model: TwoStreamTransformer, layout: multimodal.Layout, rng) -> PLMState:
  k_init, k_run = jax.random.split(rng)
  tokens = jnp.zeros((2, layout.length), jnp.int32)
  params = model.init(
      k_init,
      tokens,
      multimodal.segment_ids(layout, 2),
      jnp.zeros((2, layout.length, layout.length), bool),
  )
  return PLMState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=make_optimizer(config).init(params),
      rng=jax.random.key_data(k_run),
  )


def abstract_state(config, layout: multimodal.Layout) -> PLMState:
  """The state's shapes and dtypes, to restore a checkpoint into without initialising."""
  model = build_model(config, layout)
  return jax.eval_shape(lambda key: init_state(config, model, layout, key), jax.random.key(0))


def train_command(workdir: str, variant: str | None = None) -> str:
  return (
      f"python -m experiments.plm_mnist --config configs/plm_mnist.py:{variant or 'cpu'} "
      f"--workdir {workdir}"
  )


def kind(layout: multimodal.Layout | None = None) -> runs.RunKind:
  """The RunKind of permutation-model runs whose quantiser gives `layout` (None: only for
  reading a run's config, before its quantiser is loaded)."""
  return runs.RunKind(
      name="permutation-model run",
      train_command=train_command,
      abstract_state=lambda config: abstract_state(config, layout),
      signature=lambda config: model_signature(config, layout),
      migrate=migrate,
      fields=("plm.objective", "vq"),
  )


def classification_all_targets(config) -> bool:
  """How p(y | x') is read from the model (bigjax.multimodal's `all_targets`): as it was
  trained. Label-only targets (the image tokens bidirectional context) when the run trained
  classification tasks, else along a full permutation with the label last."""
  return config.plm.objective == "permutation" and config.plm.classify_prob == 0
