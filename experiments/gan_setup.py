"""The BigLearn-GAN's setup, shared by its trainer and every tool that reads a run.

From a `configs/gan_mnist.py` or `configs/gan_celeba.py` config: config checks, the generator
and discriminator, the checkpoint signature and training state, the images (training and
held-out), and `load_run`, the newest checkpoint of a workdir (bigjax.training.runs, so runs
written by older code load through `migrate`). Every GAN entry point (biglearn_gan, gan_eval,
gan_complete, gan_figures) imports this module; none imports another entry point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigjax import tasks
from bigjax.data import mnist
from bigjax.evaluation import flops
from bigjax.models import Discriminator, Generator
from bigjax.training import runs
from experiments import config_checks

__all__ = [
    "DATASETS",
    "DTYPES",
    "GANState",
    "KIND",
    "PARAMS",
    "abstract_state",
    "build_models",
    "channels",
    "heldout_digits",
    "heldout_images",
    "image_shape",
    "init_state",
    "load_images",
    "load_run",
    "make_optimizers",
    "migrate",
    "model_signature",
    "sample_tasks",
    "train_step_flops",
    "validate_config",
]

DATASETS = ("mnist", "celeba")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PARAMS = ("auto", "ema", "raw")

# Fields added after the first release, with the values that reproduce the runs written before
# them (`migrate`); the model's among them were not in those runs' checkpoint signatures.
_ADDED = {
    "data.dataset": "mnist",
    "data.prefetch": 2,
    "model.dtype": "float32",
    "model.noise_merge": "add",
    "model.conv_head_layers": 0,
    "model.conv_head_width": 64,
    "model.disc_attention": "dot",
    "loss.reconstruction_weight": 0.0,
    "eval.metrics_every": 0,
    "eval.classifier_dir": "",
    "eval.metrics_num_images": 500,
    "eval.metrics_num_samples": 4,
}
SIGNATURE_DEFAULTS = dict(
    {
        k.split(".")[1]: v
        for k, v in _ADDED.items()
        if k.startswith("model.") and k != "model.dtype"
    },
    channels=1,
)


def migrate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A config.json written by older code, with the fields added since set to what it did."""
  return runs.add_defaults(config, _ADDED)


def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  check = config_checks.Checker(config, "BigLearn-GAN config")
  fail = check.fail
  check.loop_fields()
  check.integer("sample_every")
  if config.tasks.sampler not in tasks.SAMPLERS:
    fail(f"tasks.sampler={config.tasks.sampler!r}; choose one of {sorted(tasks.SAMPLERS)}.")
  try:  # the sampler's own checks (Beta parameters, ratios), traced once on a tiny batch
    jax.eval_shape(lambda key: sample_tasks(key, config, 2, 4), jax.random.key(0))
  except ValueError as e:
    fail(f"tasks.{config.tasks.sampler}: {e}")
  m, d, e = config.model, config.data, config.eval
  if d.dataset not in DATASETS:
    fail(f"data.dataset={d.dataset!r}; choose one of {DATASETS}.")
  if check.integer("eval.metrics_every", minimum=0):
    if not e.classifier_dir:
      fail(
          "eval.metrics_every > 0 needs eval.classifier_dir: train a classifier at the run's "
          "image size with `python -m experiments.mnist_classifier --config "
          "configs/mnist_classifier.py:cpu --workdir DIR` and pass "
          "--config.eval.classifier_dir=DIR."
      )
    if d.dataset != "mnist":
      fail("the evaluation suite (eval.metrics_every) measures MNIST runs only.")
  if d.dataset == "celeba" and not d.source:
    fail(
        "data.source is empty: give the CelebA directory (img_align_celeba/ and "
        "list_eval_partition.txt, downloaded by hand) with --config.data.source=DIR, or "
        "--config.data.source=tfds for a prepared tensorflow-datasets celeb_a."
    )
  choices = dict(dtype=tuple(DTYPES), disc_attention=("dot", "l2"), noise_merge=("add", "concat"))
  for name, allowed in choices.items():
    if m[name] not in allowed:
      fail(f"model.{name}={m[name]!r}; choose one of {allowed}.")
  check.integer("model.conv_head_layers", minimum=0)
  check.integer("data.prefetch", minimum=0)
  for name in ("patch_size", "encoder_heads", "decoder_heads", "disc_heads"):
    check.integer(f"model.{name}")
  if d.image_size % m.patch_size:
    fail(
        f"data.image_size={d.image_size} is not divisible by model.patch_size="
        f"{m.patch_size}; choose a patch size that divides the image size."
    )
  for dim, heads in (
      ("encoder_dim", "encoder_heads"),
      ("decoder_dim", "decoder_heads"),
      ("disc_dim", "disc_heads"),
  ):
    if m[dim] % m[heads]:
      fail(f"model.{dim}={m[dim]} is not divisible by model.{heads}={m[heads]}.")
  for name in ("r1_weight", "communication_weight", "mode_seeking_weight", "reconstruction_weight"):
    if not config.loss[name] >= 0:
      fail(f"loss.{name} must be >= 0, got {config.loss[name]}.")
  if not 0.0 <= config.ema_decay < 1.0:
    fail(f"ema_decay must be in [0, 1), got {config.ema_decay}.")
  if not (config.optim.learning_rate > 0 and config.optim.disc_lr_scale > 0):
    fail(
        f"optim.learning_rate and optim.disc_lr_scale must be > 0, got "
        f"{config.optim.learning_rate} and {config.optim.disc_lr_scale}."
    )


def sample_tasks(rng, config, batch_size: int, length: int):
  """(S, T) masks [B, L] from config.tasks, per example or one pair per batch."""
  t = config.tasks
  kwargs = {
      "biglearn": dict(
          source_alpha=t.source_alpha,
          source_beta=t.source_beta,
          target_alpha=t.target_alpha,
          target_beta=t.target_beta,
      ),
      "initial_portion": dict(source_alpha=t.source_alpha, source_beta=t.source_beta),
      "mask_and_predict": dict(mask_ratio=t.mask_ratio),
  }.get(t.sampler, {})
  sampler = tasks.SAMPLERS[t.sampler]
  if t.per_example:
    return sampler(rng, batch_size, length, **kwargs)
  source, target = sampler(rng, 1, length, **kwargs)
  return (
      jnp.broadcast_to(source, (batch_size, length)),
      jnp.broadcast_to(target, (batch_size, length)),
  )


def channels(config) -> int:
  return 3 if config.data.dataset == "celeba" else 1


def image_shape(config) -> tuple[int, ...]:
  """(H, W) for grayscale data, (H, W, C) otherwise: the shape of one training image."""
  size = int(config.data.image_size)
  return (size, size) if channels(config) == 1 else (size, size, channels(config))


def build_models(config) -> tuple[Generator, Discriminator]:
  """The generator and discriminator the config describes (models never read the config)."""
  m = config.model
  h, w = image_shape(config)[:2]
  num_patches = (h // m.patch_size) * (w // m.patch_size)
  patch_dim = m.patch_size * m.patch_size * channels(config)
  dtype = DTYPES[m.dtype]
  gen = Generator(
      num_patches=num_patches,
      patch_dim=patch_dim,
      encoder_dim=m.encoder_dim,
      encoder_depth=m.encoder_depth,
      encoder_heads=m.encoder_heads,
      decoder_dim=m.decoder_dim,
      decoder_depth=m.decoder_depth,
      decoder_heads=m.decoder_heads,
      noise_dim=m.noise_dim,
      noise_mlp_depth=m.noise_mlp_depth,
      noise_mlp_width=m.noise_mlp_width,
      mlp_ratio=m.mlp_ratio,
      noise_every_layer=m.noise_every_layer,
      noise_merge=m.noise_merge,
      conv_head_layers=m.conv_head_layers,
      conv_head_width=m.conv_head_width,
      channels=channels(config),
      dtype=dtype,
  )
  disc = Discriminator(
      num_patches=num_patches,
      patch_dim=patch_dim,
      dim=m.disc_dim,
      depth=m.disc_depth,
      num_heads=m.disc_heads,
      mlp_ratio=m.mlp_ratio,
      minibatch_std_group=m.disc_minibatch_std_group,
      attention=m.disc_attention,
      dtype=dtype,
  )
  return gen, disc


def model_signature(config) -> dict[str, Any]:
  """What a checkpoint must agree on to be restored into this config's state (the compute
  dtype is not part of it: a float32 run can resume in bfloat16 and back)."""
  fields = {k: config.model[k] for k in sorted(config.model.keys()) if k != "dtype"}
  return dict(
      image_size=int(config.data.image_size),
      ema=bool(config.ema_decay > 0),
      channels=channels(config),
      **fields,
  )


def train_step_flops(config) -> dict[str, int]:
  """Model FLOPs of one iteration of the config's GAN (bigjax.evaluation.flops)."""
  loss = config.loss
  return flops.train_step_flops(
      *build_models(config),
      batch_size=int(config.batch_size),
      r1=loss.r1_weight > 0,
      mode_seeking=loss.mode_seeking_weight > 0,
      communication=loss.communication_weight > 0,
  )


def load_images(config, split: str | None = None) -> np.ndarray:
  """uint8 images of `split` (default: the training split data.split) at the config's size:
  [N, H, W] digits or [N, H, W, 3] faces (a read-only memory map for CelebA)."""
  d = config.data
  split = split or d.split
  if d.dataset == "celeba":
    from bigjax.data import celeba  # pylint: disable=import-outside-toplevel

    return celeba.load(
        d.source,
        split=split,
        image_size=int(d.image_size),
        crop_size=int(d.crop_size),
        cache_dir=d.cache_dir or None,
    )
  images, _ = mnist.load(d.source, split=split)
  return images if images.shape[1] == d.image_size else mnist.resize(images, int(d.image_size))


def heldout_images(config, count: int) -> np.ndarray:
  """The first `count` held-out images of the run's dataset, at the run's resolution."""
  d = config.data
  split = "test" if d.dataset == "celeba" or d.split == "train" else d.split
  return np.asarray(load_images(config, split)[:count])


def heldout_digits(config, num_images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 [N, S, S] at the run's image size, labels [N]): digits the run did not train on."""
  d = config.data
  if d.dataset != "mnist":
    raise ValueError(
        f"gan_eval measures MNIST runs (it classifies digits); this run trained "
        f"on {d.dataset!r}."
    )
  if d.split != "train":
    raise ValueError(
        f"the run trained on data.split={d.split!r}; gan_eval holds out the `test` "
        "split, so it evaluates runs trained on the `train` split only."
    )
  images, labels = mnist.load(d.source, split="test")
  if num_images is not None:
    if not 2 <= num_images <= len(images):
      raise ValueError(
          f"--num_images must be in [2, {len(images)}] (the held-out digits), got " f"{num_images}."
      )
    images, labels = images[:num_images], labels[:num_images]
  if images.shape[1] != d.image_size:
    images = mnist.resize(images, int(d.image_size))
  return images, labels


class GANState(NamedTuple):
  """The whole training state, one pytree (checkpointed as is).

  rng holds raw key data (uint32 [2]): typed keys cannot be checkpointed by Orbax."""

  step: jax.Array
  g_params: Any
  d_params: Any
  g_ema_params: Any
  g_opt_state: Any
  d_opt_state: Any
  rng: jax.Array


def make_optimizers(config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """AdamW for the generator and the discriminator (App. D.3: betas (0.1, 0.999), constant lr)."""
  o = config.optim
  adamw = lambda lr: optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  return adamw(o.learning_rate), adamw(o.learning_rate * o.disc_lr_scale)


def init_state(config, rng) -> GANState:
  """Fresh parameters and optimiser states (rng: a PRNG key)."""
  gen, disc = build_models(config)
  g_opt, d_opt = make_optimizers(config)
  k_g, k_d, k_run = jax.random.split(rng, 3)
  b = max(2, config.model.disc_minibatch_std_group)  # the discriminator's groups need B % G == 0
  patches = jnp.zeros((b, gen.num_patches, gen.patch_dim))
  mask = jnp.zeros((b, gen.num_patches), bool)
  g_params = gen.init(k_g, patches, mask, jnp.zeros((b, gen.noise_dim)))
  d_params = disc.init(k_d, patches, mask, ~mask)
  return GANState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      d_params=d_params,
      g_ema_params=g_params if config.ema_decay > 0 else {},
      g_opt_state=g_opt.init(g_params),
      d_opt_state=d_opt.init(d_params),
      rng=jax.random.key_data(k_run),
  )


def abstract_state(config) -> GANState:
  """The state's shapes and dtypes, to restore a checkpoint into without initialising."""
  return jax.eval_shape(lambda k: init_state(config, k), jax.random.key(0))


def train_command(workdir: str, variant: str | None = None) -> str:
  return (
      f"python -m experiments.biglearn_gan --config configs/gan_mnist.py:{variant or 'cpu'}"
      f" --workdir {workdir}"
  )


KIND = runs.RunKind(
    name="BigLearn-GAN run",
    train_command=train_command,
    abstract_state=abstract_state,
    signature=model_signature,
    migrate=migrate,
    signature_defaults=SIGNATURE_DEFAULTS,
    fields=("model.patch_size", "model.disc_dim", "data.image_size"),
)


def load_run(workdir: str, *, params: str = "auto") -> tuple[ml_collections.ConfigDict, Any, int]:
  """(config, generator parameters, step) of the newest restorable checkpoint in `workdir`.

  params: "ema" for the generator's EMA parameters (an error if the run kept none), "raw" for
  the trained parameters, "auto" for the EMA when the run kept one."""
  if params not in PARAMS:
    raise ValueError(f"--params must be auto, ema or raw, got {params!r}.")

  def check(config, _):
    if params == "ema" and not config.ema_decay > 0:
      raise ValueError(
          f"the run in {workdir} kept no EMA of the generator (its config has "
          f"ema_decay={config.ema_decay}); evaluate its trained parameters "
          "instead (--params=raw), or train with --config.ema_decay=0.999."
      )

  run = runs.load(workdir, KIND, check=check)
  use_ema = run.config.ema_decay > 0 if params == "auto" else params == "ema"
  return run.config, run.state.g_ema_params if use_ema else run.state.g_params, run.step
