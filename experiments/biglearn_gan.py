r"""BigLearn-GAN training (paper Sec. 3.4, App. D, Algorithm 1) on MNIST and CelebA.

  python -m experiments.biglearn_gan --config configs/gan_mnist.py:cpu --workdir /tmp/gan_cpu
  python -m experiments.biglearn_gan --config configs/gan_celeba.py:paper --workdir /tmp/celeba \
      --config.data.source=/path/to/celeba

Each iteration draws per-example (S, T) masks from `config.tasks` (bigjax.tasks), takes one
discriminator step on Eq. (8) plus the R1 penalty on real data (and the Eq. (12) communication
matchings when `config.loss.communication_weight` > 0), then one generator step against the
updated discriminator. Both steps are one jitted function with the training state donated;
the state is replicated and the batch split over a 1-D device mesh (bigjax.sharding), so the
same code runs on one device, on many, and on many hosts (`--config.distributed=True`). With
`model.dtype="bfloat16"` the models compute in bfloat16 while parameters, optimiser states,
softmax, logits and losses stay float32. A background thread assembles the next batches on the
host and puts them on the devices while the current step runs (`data.prefetch` batches ahead).
The step compiles once per run; run.json records the number of compilations (`compilations`).

Randomness and data order are functions of (seed, step) only: the masks and noise come from
`fold_in(key, step)`, and the batch of step s is rows [i B, (i + 1) B) of a permutation seeded by
(seed, s // steps_per_epoch). A run resumed from a checkpoint therefore continues exactly as the
uninterrupted run would.

Writes into --workdir:
  config.json              the config (gan_complete rebuilds the model from it)
  checkpoints/<step>/      Orbax checkpoints (every `checkpoint_every` steps, the newest
                           `keep_checkpoints` kept); the run resumes from the newest by itself
  metrics.jsonl            one row per `log_every` steps: step, d_loss, g_loss, r1, real_logit,
                           fake_logit (means over the window), images_per_sec, seconds
  eval.jsonl               with eval.metrics_every > 0: the evaluation suite of
                           experiments/gan_eval.py (label agreement, diversity, Fréchet
                           distance) every eval.metrics_every steps
  samples/step_XXXXXXX.png joint generations and completions (random half / top half given)
  run.json                 steps done, timings, devices, JAX version
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple

from absl import app
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from bigjax import checkpoint as ckpt_lib
from bigjax import losses
from bigjax import mnist
from bigjax import prefetch
from bigjax import sharding
from bigjax import tasks
from bigjax.models import Discriminator, Generator, patchify
from experiments import gan_samples
from experiments import cli
from experiments import outputs


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


# ----------------------------------------------------------------------------------------------
# Config checks, models, data.

def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  def fail(msg):
    raise ValueError(f"BigLearn-GAN config ({config.get('variant', '?')}): {msg}")
  for name in ("num_steps", "checkpoint_every", "keep_checkpoints", "log_every",
               "sample_every", "batch_size"):
    if not isinstance(config[name], int) or config[name] < 1:
      fail(f"{name} must be a positive integer, got {config[name]!r}.")
  if config.tasks.sampler not in tasks.SAMPLERS:
    fail(f"tasks.sampler={config.tasks.sampler!r}; choose one of {sorted(tasks.SAMPLERS)}.")
  m = config.model
  if dataset(config) not in DATASETS:
    fail(f"data.dataset={config.data.dataset!r}; choose one of {DATASETS}.")
  if config.eval.get("metrics_every", 0):
    if not isinstance(config.eval.metrics_every, int) or config.eval.metrics_every < 0:
      fail(f"eval.metrics_every must be an integer >= 0, got {config.eval.metrics_every!r}.")
    if not config.eval.get("classifier_dir"):
      fail("eval.metrics_every > 0 needs eval.classifier_dir: train a classifier at the run's "
           "image size with `python -m experiments.mnist_classifier --config "
           "configs/mnist_classifier.py:cpu --workdir DIR` and pass "
           "--config.eval.classifier_dir=DIR.")
    if dataset(config) != "mnist":
      fail("the evaluation suite (eval.metrics_every) measures MNIST runs only.")
  if dataset(config) == "celeba" and not config.data.source:
    fail("data.source is empty: give the CelebA directory (img_align_celeba/ and "
         "list_eval_partition.txt, downloaded by hand) with --config.data.source=DIR, or "
         "--config.data.source=tfds for a prepared tensorflow-datasets celeb_a.")
  choices = dict(dtype=tuple(DTYPES), disc_attention=("dot", "l2"),
                 noise_merge=("add", "concat"))
  for name, allowed in choices.items():
    if m.get(name, allowed[0]) not in allowed:
      fail(f"model.{name}={m[name]!r}; choose one of {allowed}.")
  if not (isinstance(m.get("conv_head_layers", 0), int) and m.get("conv_head_layers", 0) >= 0):
    fail(f"model.conv_head_layers must be an integer >= 0, got {m.conv_head_layers!r}.")
  if not isinstance(config.data.get("prefetch", 2), int) or config.data.get("prefetch", 2) < 0:
    fail(f"data.prefetch must be an integer >= 0, got {config.data.prefetch!r}.")
  if config.data.image_size % m.patch_size:
    fail(f"data.image_size={config.data.image_size} is not divisible by model.patch_size="
         f"{m.patch_size}; choose a patch size that divides the image size.")
  for dim, heads in (("encoder_dim", "encoder_heads"), ("decoder_dim", "decoder_heads"),
                     ("disc_dim", "disc_heads")):
    if m[dim] % m[heads]:
      fail(f"model.{dim}={m[dim]} is not divisible by model.{heads}={m[heads]}.")
  for name in ("r1_weight", "communication_weight", "mode_seeking_weight",
               "reconstruction_weight"):
    if not config.loss.get(name, 0.0) >= 0:
      fail(f"loss.{name} must be >= 0, got {config.loss[name]}.")
  if not 0.0 <= config.ema_decay < 1.0:
    fail(f"ema_decay must be in [0, 1), got {config.ema_decay}.")
  if not (config.optim.learning_rate > 0 and config.optim.disc_lr_scale > 0):
    fail(f"optim.learning_rate and optim.disc_lr_scale must be > 0, got "
         f"{config.optim.learning_rate} and {config.optim.disc_lr_scale}.")


DATASETS = ("mnist", "celeba")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Model fields added after the first release, with the values that reproduce the earlier models.
# At these values they are left out of the checkpoint signature, so older runs still restore.
_LATER_MODEL_FIELDS = dict(noise_merge="add", conv_head_layers=0, conv_head_width=64,
                           disc_attention="dot")


def dataset(config) -> str:
  """The config's data.dataset; runs written before CelebA support have none (MNIST)."""
  return config.data.get("dataset", "mnist")


def channels(config) -> int:
  return 3 if dataset(config) == "celeba" else 1


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
  dtype = DTYPES[m.get("dtype", "float32")]
  later = {k: m.get(k, v) for k, v in _LATER_MODEL_FIELDS.items()}
  gen = Generator(num_patches=num_patches, patch_dim=patch_dim, encoder_dim=m.encoder_dim,
                  encoder_depth=m.encoder_depth, encoder_heads=m.encoder_heads,
                  decoder_dim=m.decoder_dim, decoder_depth=m.decoder_depth,
                  decoder_heads=m.decoder_heads, noise_dim=m.noise_dim,
                  noise_mlp_depth=m.noise_mlp_depth, noise_mlp_width=m.noise_mlp_width,
                  mlp_ratio=m.mlp_ratio, noise_every_layer=m.noise_every_layer,
                  noise_merge=later["noise_merge"], conv_head_layers=later["conv_head_layers"],
                  conv_head_width=later["conv_head_width"], channels=channels(config),
                  dtype=dtype)
  disc = Discriminator(num_patches=num_patches, patch_dim=patch_dim, dim=m.disc_dim,
                       depth=m.disc_depth, num_heads=m.disc_heads, mlp_ratio=m.mlp_ratio,
                       minibatch_std_group=m.disc_minibatch_std_group,
                       attention=later["disc_attention"], dtype=dtype)
  return gen, disc


def model_signature(config) -> dict[str, Any]:
  """What a checkpoint must agree on to be restored into this config's state (the compute
  dtype is not part of it: a float32 run can resume in bfloat16 and back)."""
  fields = {k: config.model[k] for k in sorted(config.model.keys()) if k != "dtype"
            and not (k in _LATER_MODEL_FIELDS and config.model[k] == _LATER_MODEL_FIELDS[k])}
  extra = {} if channels(config) == 1 else dict(channels=channels(config))
  return dict(image_size=int(config.data.image_size), ema=bool(config.ema_decay > 0),
              **extra, **fields)


def load_images(config) -> np.ndarray:
  """uint8 training images at the config's size: [N, H, W] digits or [N, H, W, 3] faces (a
  read-only memory map for CelebA)."""
  d = config.data
  if dataset(config) == "celeba":
    from bigjax import celeba  # pylint: disable=import-outside-toplevel
    images = celeba.load(d.source, split=d.split, image_size=int(d.image_size),
                         crop_size=int(d.crop_size), cache_dir=d.get("cache_dir") or None)
  else:
    images, _ = mnist.load(d.source, split=d.split)
    if images.shape[1] != d.image_size:
      images = mnist.resize(images, int(d.image_size))
  if len(images) < config.batch_size:
    raise ValueError(f"the dataset has {len(images)} images, fewer than batch_size="
                     f"{config.batch_size}.")
  return images


def batch_indices(step: int, num_images: int, batch_size: int, seed: int) -> np.ndarray:
  """Dataset rows of the global batch at `step`: a fresh permutation per epoch, seeded by
  (seed, epoch), the last incomplete batch of each epoch dropped. A pure function of step."""
  steps_per_epoch = num_images // batch_size
  epoch, i = divmod(int(step), steps_per_epoch)
  perm = np.random.default_rng([int(seed), epoch]).permutation(num_images)
  return perm[i * batch_size:(i + 1) * batch_size]


# ----------------------------------------------------------------------------------------------
# Training step.

def make_optimizers(config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """AdamW for the generator and the discriminator (App. D.3: betas (0.1, 0.999), constant lr)."""
  o = config.optim
  adamw = lambda lr: optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  return adamw(o.learning_rate), adamw(o.learning_rate * o.disc_lr_scale)


def sample_tasks(rng, config, batch_size: int, length: int):
  """(S, T) masks [B, L] from config.tasks, per example or one pair per batch."""
  t = config.tasks
  kwargs = {"biglearn": dict(source_alpha=t.source_alpha, source_beta=t.source_beta,
                             target_alpha=t.target_alpha, target_beta=t.target_beta),
            "initial_portion": dict(source_alpha=t.source_alpha, source_beta=t.source_beta),
            "mask_and_predict": dict(mask_ratio=t.mask_ratio)}.get(t.sampler, {})
  sampler = tasks.SAMPLERS[t.sampler]
  if t.per_example:
    return sampler(rng, batch_size, length, **kwargs)
  source, target = sampler(rng, 1, length, **kwargs)
  return (jnp.broadcast_to(source, (batch_size, length)),
          jnp.broadcast_to(target, (batch_size, length)))


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
  return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                  g_ema_params=g_params if config.ema_decay > 0 else {},
                  g_opt_state=g_opt.init(g_params), d_opt_state=d_opt.init(d_params),
                  rng=jax.random.key_data(k_run))


def _adam_step(opt, grads, opt_state, params):
  updates, opt_state = opt.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def make_train_step(config):
  """(state, images [B, H, W] in [-1, 1]) -> (state, metrics): Algorithm 1, one iteration."""
  gen, disc = build_models(config)
  g_opt, d_opt = make_optimizers(config)
  patch_size = config.model.patch_size
  r1_weight = float(config.loss.r1_weight)
  comm_weight = float(config.loss.communication_weight)
  ms_weight = float(config.loss.mode_seeking_weight)
  recon_weight = float(config.loss.get("reconstruction_weight", 0.0))  # runs before the field: 0
  saturating = bool(config.loss.saturating)
  ema_decay = float(config.ema_decay)
  t = config.tasks

  def train_step(state: GANState, images: jax.Array):
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    k_task, k_zd, k_zg, k_comm, k_zd2, k_zg2, k_zms = jax.random.split(rng, 7)
    patches = patchify(images, patch_size)
    b, length, _ = patches.shape
    source, target = sample_tasks(k_task, config, b, length)
    if comm_weight > 0:
      source2, target2 = tasks.resplit(k_comm, source, target, source_alpha=t.source_alpha,
                                       source_beta=t.source_beta)
    noise = lambda k: jax.random.normal(k, (b, gen.noise_dim))

    # Discriminator step: Eq. (8) + R1 on real data (+ Eq. (12)).
    fake = jax.lax.stop_gradient(gen.apply(state.g_params, patches, source, noise(k_zd)))
    if comm_weight > 0:
      fake2 = jax.lax.stop_gradient(gen.apply(state.g_params, patches, source2, noise(k_zd2)))

    def d_loss_fn(d_params):
      d = lambda x, s, tt: disc.apply(d_params, x, s, tt)
      fake_logits = d(fake, source, target)
      if r1_weight > 0:
        r1, real_logits = losses.r1_penalty(lambda x: d(x, source, target), patches,
                                            weight=r1_weight)
      else:
        real_logits, r1 = d(patches, source, target), jnp.zeros((b,))
      gan = losses.discriminator_loss(real_logits, fake_logits)
      loss = jnp.mean(gan) + jnp.mean(r1)
      aux = dict(d_loss=jnp.mean(gan), r1=jnp.mean(r1), real_logit=jnp.mean(real_logits),
                 fake_logit=jnp.mean(fake_logits))
      if comm_weight > 0:
        comm = losses.communication_discriminator_loss(
            fake_logits, d(fake, source2, target2), d(fake2, source2, target2),
            d(fake2, source, target))
        loss = loss + comm_weight * jnp.mean(comm)
        aux["d_comm"] = jnp.mean(comm)
      return loss, aux

    d_grads, d_aux = jax.grad(d_loss_fn, has_aux=True)(state.d_params)
    d_params, d_opt_state = _adam_step(d_opt, d_grads, state.d_opt_state, state.d_params)

    # Generator step against the updated discriminator, same (S, T), fresh noise.
    def g_loss_fn(g_params):
      d = lambda x, s, tt: disc.apply(d_params, x, s, tt)
      fake = gen.apply(g_params, patches, source, noise(k_zg))
      fake_logits = d(fake, source, target)
      loss = jnp.mean(losses.generator_loss(fake_logits, saturating=saturating))
      aux = dict(g_loss=loss)
      if ms_weight > 0:
        z_a, z_b = noise(k_zg), noise(k_zms)
        fake_b = gen.apply(g_params, patches, source, z_b)
        ms = losses.mode_seeking_loss(fake, fake_b, z_a, z_b, mask=~source)
        loss = loss + ms_weight * ms
        aux["mode_seeking"] = ms
      if recon_weight > 0:
        rec = losses.reconstruction_loss(fake, patches, source)
        loss = loss + recon_weight * rec
        aux["reconstruction"] = rec
      if comm_weight > 0:
        fake2 = gen.apply(g_params, patches, source2, noise(k_zg2))
        comm = losses.communication_generator_loss(
            fake_logits, d(fake, source2, target2), d(fake2, source2, target2),
            d(fake2, source, target), saturating=saturating)
        loss = loss + comm_weight * jnp.mean(comm)
        aux["g_comm"] = jnp.mean(comm)
      return loss, aux

    g_grads, g_aux = jax.grad(g_loss_fn, has_aux=True)(state.g_params)
    g_params, g_opt_state = _adam_step(g_opt, g_grads, state.g_opt_state, state.g_params)
    g_ema_params = state.g_ema_params
    if ema_decay > 0:
      # Warm-up (decay (1 + t) / (10 + t) until it reaches ema_decay) so that early sample
      # grids do not show the initialisation.
      n = state.step.astype(jnp.float32)
      decay = jnp.minimum(ema_decay, (1.0 + n) / (10.0 + n))
      g_ema_params = optax.incremental_update(g_params, g_ema_params, 1.0 - decay)

    metrics = dict(d_aux, **g_aux, d_grad_norm=optax.tree.norm(d_grads),
                   g_grad_norm=optax.tree.norm(g_grads))
    new_state = GANState(step=state.step + 1, g_params=g_params, d_params=d_params,
                         g_ema_params=g_ema_params, g_opt_state=g_opt_state,
                         d_opt_state=d_opt_state, rng=state.rng)
    return new_state, metrics

  return train_step


def jit_train_step(config, mesh, state_sharding):
  """The train step jitted for `mesh`: state replicated and donated, batch split on "data"."""
  return jax.jit(make_train_step(config),
                 in_shardings=(state_sharding, sharding.batch_sharded(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)),
                 donate_argnums=0)


# ----------------------------------------------------------------------------------------------
# The run.

NonFiniteLossError = ckpt_lib.NonFiniteLossError


def train_and_evaluate(config, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the config's BigLearn-GAN in `workdir`; returns the run summary."""
  validate_config(config)
  if config.distributed:
    jax.distributed.initialize()
  os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
  images = load_images(config)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  state_sharding = sharding.replicated(mesh)

  init = jax.jit(lambda key: init_state(config, key), out_shardings=state_sharding)
  state = init(jax.random.key(int(config.seed)))
  checkpointer = ckpt_lib.Checkpointer(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                       signature=model_signature(config),
                                       max_to_keep=config.keep_checkpoints)
  try:
    restored_step, restored = checkpointer.restore_latest(ckpt_lib.abstract(state))
  except Exception:
    checkpointer.close()
    raise
  if restored is not None:
    state = restored
  # Written only now: a refused resume (another model's checkpoints) leaves the file as it was.
  if jax.process_index() == 0:
    outputs.write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json()))
  start = int(state.step)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  eval_path = os.path.join(workdir, "eval.jsonl")
  ckpt_lib.truncate_log(metrics_path, start)
  ckpt_lib.truncate_log(eval_path, start)
  evaluate = None
  if config.eval.get("metrics_every", 0):
    from experiments import gan_eval  # pylint: disable=import-outside-toplevel
    predict, _ = gan_eval.load_classifier(config, config.eval.classifier_dir)
    heldout, heldout_labels = gan_eval.heldout_digits(config, config.eval.metrics_num_images)
    evaluate = gan_eval.make_evaluator(config, predict, heldout, heldout_labels,
                                       num_samples=config.eval.metrics_num_samples,
                                       seed=config.seed, train_images=images)

  train_step = jit_train_step(config, mesh, state_sharding)
  gen, _ = build_models(config)
  sample_fn = gan_samples.make_sampler(gen, image_shape(config), config.model.patch_size)
  ev = gan_samples.eval_inputs(gen, images, config)
  rows = sharding.process_slice(config.batch_size)

  def batch(step):
    idx = batch_indices(step, len(images), config.batch_size, config.seed)[rows]
    return sharding.global_batch(mnist.to_unit_range(images[idx]), mesh)

  def write_samples(step):
    # Every process runs the sampler (its parameters span all processes' devices); process 0
    # draws the figure.
    params = state.g_ema_params if config.ema_decay > 0 else state.g_params
    samples = gan_samples.draw_samples(sample_fn, params, config, ev)
    if jax.process_index() == 0:
      from experiments import gan_plots  # matplotlib only when drawing
      gan_plots.sample_grid(samples, ev["images"], ev["random_half"], ev["top_half"], config,
                            os.path.join(workdir, "samples", f"step_{step:07d}.png"), step=step)

  pending, last_saved = [], restored_step
  window_start, window_step = time.perf_counter(), start
  t0, compile_seconds = time.perf_counter(), None
  bar = tqdm.tqdm(total=config.num_steps, initial=start, disable=not progress,
                  desc=f"BigLearn-GAN {config.variant}", unit="step", dynamic_ncols=True)
  batches = prefetch.Prefetcher(batch, stop=config.num_steps, size=config.data.get("prefetch", 2))
  try:
    for step in range(start, config.num_steps):
      state, metrics = train_step(state, batches.get(step))
      if compile_seconds is None:
        jax.block_until_ready(state.step)
        compile_seconds = time.perf_counter() - t0
        window_start, window_step = time.perf_counter(), step + 1
      pending.append(metrics)
      bar.update(1)
      done = step + 1
      is_last = done == config.num_steps
      save = done % config.checkpoint_every == 0 or is_last
      measure = evaluate is not None and (done % config.eval.metrics_every == 0 or is_last)
      if not (done % config.log_every == 0 or save or done % config.sample_every == 0
              or measure):
        continue
      # Check every step since the last check before anything is saved.
      values = jax.device_get(pending)
      pending = []
      means = ckpt_lib.average_metrics(
          values, last_step=done, last_saved=last_saved, directory=checkpointer.directory,
          fix="Lower optim.learning_rate or raise loss.r1_weight.")
      now = time.perf_counter()
      row = dict(step=done, **means,
                 images_per_sec=config.batch_size * (done - window_step)
                 / max(now - window_start, 1e-9), seconds=now - t0)
      window_start, window_step = now, done
      if jax.process_index() == 0:
        with open(metrics_path, "a") as f:
          f.write(json.dumps(row) + "\n")
      bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}", r1=f"{row['r1']:.3f}",
                      img_s=f"{row['images_per_sec']:.0f}")
      if save:
        checkpointer.save(done, state)
        last_saved = done
      if done % config.sample_every == 0 or is_last:
        write_samples(done)
      if measure:
        result = evaluate(state.g_ema_params if config.ema_decay > 0 else state.g_params)
        if jax.process_index() == 0:
          with open(eval_path, "a") as f:
            f.write(json.dumps(dict(step=done, **result)) + "\n")
  finally:
    batches.close()
    bar.close()
    checkpointer.close()
  # jax.jit's count of compiled variants (None if the step was wrapped by something else).
  cache_size = getattr(train_step, "_cache_size", None)
  compilations = cache_size() if cache_size else None
  if compilations and compilations > 1:
    logging.warning("the train step compiled %d times (expected once): an input changed shape, "
                    "dtype or sharding between steps.", compilations)
  summary = dict(variant=config.variant, step=int(state.step), resumed_from=restored_step,
                 seconds=time.perf_counter() - t0, compile_seconds=compile_seconds,
                 compilations=compilations, dtype=config.model.get("dtype", "float32"),
                 devices=[str(d) for d in jax.devices()], jax=jax.__version__,
                 backend=jax.default_backend())
  if jax.process_index() == 0:
    outputs.write_json(os.path.join(workdir, "run.json"), summary)
  return summary


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the directory for checkpoints and samples.")
  summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  _CONFIG, _WORKDIR = cli.define_config_and_workdir(
      "gan_mnist.py",
      config_help="Config file and variant, e.g. configs/gan_mnist.py:cpu (the default).",
      workdir_help="Directory for checkpoints, metrics and samples; a run resumes from the "
                   "newest checkpoint found here.")
  app.run(main)
