"""The vector quantiser's setup, shared by its trainer and every tool that loads one (App. E.1).

From a `configs/vq_mnist.py` config: the encoder and decoder, config checks, the checkpoint
signature and training state, the data, and `load`, the finished quantiser of a workdir
(bigjax.training.runs, so runs written by older code load through `migrate`):

  encoder, decoder, params, codebook_vectors, info = vq_setup.load("/tmp/vq_cpu")
  tokens = vq.encode(encoder, params, codebook_vectors, images_uint8)   # int32 [N, 7, 7]
  images = vq.decode(decoder, params, codebook_vectors, tokens)         # uint8 [N, 28, 28]

(`vq` is `bigjax.models.vq`.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigjax.data import mnist
from bigjax.models import vq
from bigjax.training import optimizers
from bigjax.training import runs
from experiments import config_checks

__all__ = [
    "KIND",
    "SUMMARY_FILE",
    "VQState",
    "abstract_state",
    "build_models",
    "init_state",
    "load",
    "load_split",
    "make_optimizer",
    "migrate",
    "model_signature",
    "train_command",
    "validate_config",
]

SUMMARY_FILE = "vq.json"


def train_command(workdir: str, variant: str | None = None) -> str:
  return (
      f"python -m experiments.vq_mnist --config configs/vq_mnist.py:{variant or 'cpu'} "
      f"--workdir {workdir}"
  )


def migrate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A config.json written by older code, with the fields added since set to what it did."""
  return runs.add_defaults(config, {"keep_checkpoints": 3})  # was a literal 3


def build_models(config) -> tuple[vq.VQEncoder, vq.VQDecoder]:
  """The config's (encoder, decoder); the codebook size is config.model.num_codes."""
  m = config.model
  widths = tuple(int(w) for w in m.widths)
  return (
      vq.VQEncoder(widths=widths, code_dim=int(m.code_dim)),
      vq.VQDecoder(widths=widths, code_dim=int(m.code_dim)),
  )


def model_signature(config) -> dict[str, Any]:
  """What a checkpoint must agree on to be restored into this config's state (JSON types)."""
  m = config.model
  return dict(
      widths=[int(w) for w in m.widths],
      code_dim=int(m.code_dim),
      num_codes=int(m.num_codes),
      image_size=vq.IMAGE_SIZE,
  )


def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  check = config_checks.Checker(config, "configs/vq_mnist.py")
  fail = check.fail
  check.loop_fields()
  check.held_out("data.train_split", "data.test_split")
  m = config.model
  widths = m.widths
  if (
      not isinstance(widths, (tuple, list))
      or not widths
      or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
  ):
    fail(f"model.widths must be a non-empty tuple of positive ints, got {widths!r}.")
  try:
    side = vq.grid_size(widths)
  except ValueError as e:
    fail(f"model.widths: {e}")
  for name in ("model.code_dim", "model.num_codes"):
    check.integer(name)
  if m.num_codes > config.batch_size * side * side:
    fail(
        f"model.num_codes={m.num_codes} exceeds the {config.batch_size * side * side} encoder "
        f"outputs of one batch (batch_size={config.batch_size} x {side}x{side}), from which "
        "the codebook is initialised; use fewer codes or a larger batch."
    )
  if not config.learning_rate > 0:
    fail(f"learning_rate must be > 0, got {config.learning_rate}.")
  if not config.weight_decay >= 0:
    fail(f"weight_decay must be >= 0, got {config.weight_decay}.")
  if not config.loss.commitment_weight >= 0:
    fail(f"loss.commitment_weight must be >= 0, got {config.loss.commitment_weight}.")
  if not 0.0 <= config.codebook.decay < 1.0:
    fail(f"codebook.decay must be in [0, 1), got {config.codebook.decay}.")
  if not 0.0 <= config.codebook.dead_code_threshold <= 1.0:
    fail(
        f"codebook.dead_code_threshold must be in [0, 1] (a restarted code starts with EMA "
        f"count 1, so a larger threshold restarts codes in use), got "
        f"{config.codebook.dead_code_threshold}."
    )


def load_split(config, split: str) -> np.ndarray:
  """uint8 [N, 28, 28] digits of `split` (labels are not needed)."""
  images, _ = mnist.load(config.data.source, split=split)
  return images


class VQState(NamedTuple):
  """The training state, one pytree (checkpointed as is)."""

  step: jax.Array
  params: Any  # {"encoder": variables, "decoder": variables}
  opt_state: Any
  codebook: vq.Codebook


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with a linear warm-up (the first 5% of the steps, at most 100) then cosine decay to
  1% of `learning_rate` at `num_steps`."""
  return optimizers.warmup_cosine_adamw(
      config.learning_rate,
      config.num_steps,
      warmup_steps=min(100, config.num_steps // 20),
      weight_decay=config.weight_decay,
  )


def init_state(config, rng: jax.Array, images: jax.Array) -> VQState:
  """Fresh parameters, and a codebook of random encoder outputs of `images`.

  Args:
    config: a configs/vq_mnist.py config.
    rng: PRNG key.
    images: float [B, 28, 28] in [-1, 1], the first training batch.
  """
  encoder, decoder = build_models(config)
  k_encoder, k_decoder, k_codebook = jax.random.split(rng, 3)
  encoder_vars = encoder.init(k_encoder, images)
  z = encoder.apply(encoder_vars, images)
  params = dict(encoder=encoder_vars, decoder=decoder.init(k_decoder, z))
  codebook = vq.codebook_from_samples(k_codebook, z, int(config.model.num_codes))
  return VQState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=make_optimizer(config).init(params),
      codebook=codebook,
  )


def abstract_state(config) -> VQState:
  """The state's shapes and dtypes, to restore a checkpoint into without initialising."""
  images = jax.ShapeDtypeStruct((config.batch_size, vq.IMAGE_SIZE, vq.IMAGE_SIZE), jnp.float32)
  return jax.eval_shape(lambda x: init_state(config, jax.random.key(0), x), images)


KIND = runs.RunKind(
    name="MNIST vector quantiser",
    train_command=train_command,
    abstract_state=abstract_state,
    signature=model_signature,
    migrate=migrate,
    summary_file=SUMMARY_FILE,
    fields=("model.num_codes", "codebook.decay"),
)


def load(workdir: str) -> tuple[vq.VQEncoder, vq.VQDecoder, Any, jax.Array, dict[str, Any]]:
  """The quantiser trained in `workdir` by `python -m experiments.vq_mnist`.

  Returns:
    (encoder, decoder, params, codebook_vectors, info): the Flax modules, their variables
    {"encoder": ..., "decoder": ...}, the codebook [num_codes, code_dim], and the summary from
    vq.json (test_mse, steps, num_codes, grid_size, ...). Use them with `bigjax.models.vq.encode`
    and `bigjax.models.vq.decode`.

  Raises:
    FileNotFoundError: no finished quantiser in `workdir`; the message gives the command that
      trains (or finishes training) one.
  """
  run = runs.load(workdir, KIND)
  encoder, decoder = build_models(run.config)
  return encoder, decoder, run.state.params, run.state.codebook.vectors, run.summary
