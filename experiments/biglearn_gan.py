r"""BigLearn-GAN training (paper Sec. 3.4, App. D, Algorithm 1) on MNIST and CelebA.

  python -m experiments.biglearn_gan --config configs/gan_mnist.py:cpu --workdir /tmp/gan_cpu
  python -m experiments.biglearn_gan --config configs/gan_celeba.py:paper --workdir /tmp/celeba \
      --config.data.source=/path/to/celeba

Each iteration draws per-example (S, T) masks from `config.tasks` (bigjax.tasks), takes one
discriminator step on Eq. (8) plus the R1 penalty on real data (and the Eq. (12) communication
matchings when `config.loss.communication_weight` > 0), then one generator step against the
updated discriminator. Both steps are one jitted function with the training state donated;
the state is replicated and the batch split over a 1-D device mesh (bigjax.training.sharding),
so the same code runs on one device, on many, and on many hosts (`--config.distributed=True`). With
`model.dtype="bfloat16"` the models compute in bfloat16 while parameters, optimiser states,
softmax, logits and losses stay float32. A background thread assembles the next batches on the
host and puts them on the devices while the current step runs (`data.prefetch` batches ahead).
The step compiles once per run; run.json records the number of compilations (`compilations`).

Randomness and data order are functions of (seed, step) only: the masks and noise come from
`fold_in(key, step)`, and the batch of step s is rows [i B, (i + 1) B) of a permutation seeded by
(seed, s // steps_per_epoch) (bigjax.training.batch_indices). A run resumed from a checkpoint
therefore continues exactly as the uninterrupted run would. The loop is bigjax.training.train;
this file holds what is the GAN's own: its step and its hooks.

Writes into --workdir:
  config.json              the config (gan_setup.load_run rebuilds the model from it)
  checkpoints/<step>/      Orbax checkpoints (every `checkpoint_every` steps, the newest
                           `keep_checkpoints` kept); the run resumes from the newest by itself
  metrics.jsonl            one row per `log_every` steps: step, d_loss, g_loss, r1, real_logit,
                           fake_logit (means over the window), steps_per_sec, images_per_sec,
                           seconds; also as TensorBoard events (with the sample grids)
  eval.jsonl               with eval.metrics_every > 0: the evaluation suite of
                           experiments/gan_eval.py (label agreement, diversity, Fréchet
                           distance) every eval.metrics_every steps
  samples/step_XXXXXXX.png joint generations and completions (random half / top half given)
  run.json                 steps done, timings, devices, JAX version
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax import losses
from bigjax import tasks
from bigjax.data import mnist
from bigjax.models import patchify
from bigjax.training import batch_fn, distributed, loop, programs, sharding, write_json
from experiments import cli
from experiments import gan_samples
from experiments import gan_setup
from experiments.gan_setup import (
    SIGNATURE_DEFAULTS,
    GANState,
    build_models,
    image_shape,
    init_state,
    load_images,
    make_optimizers,
    model_signature,
    sample_tasks,
    validate_config,
)

# ----------------------------------------------------------------------------------------------
# The training step.


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
      source2, target2 = tasks.resplit(
          k_comm, source, target, source_alpha=t.source_alpha, source_beta=t.source_beta
      )
    noise = lambda k: jax.random.normal(k, (b, gen.noise_dim))

    # Discriminator step: Eq. (8) + R1 on real data (+ Eq. (12)).
    fake = jax.lax.stop_gradient(gen.apply(state.g_params, patches, source, noise(k_zd)))
    if comm_weight > 0:
      fake2 = jax.lax.stop_gradient(gen.apply(state.g_params, patches, source2, noise(k_zd2)))

    def d_loss_fn(d_params):
      d = lambda x, s, tt: disc.apply(d_params, x, s, tt)
      fake_logits = d(fake, source, target)
      if r1_weight > 0:
        r1, real_logits = losses.r1_penalty(
            lambda x: d(x, source, target), patches, weight=r1_weight
        )
      else:
        real_logits, r1 = d(patches, source, target), jnp.zeros((b,))
      gan = losses.discriminator_loss(real_logits, fake_logits)
      loss = jnp.mean(gan) + jnp.mean(r1)
      aux = dict(
          d_loss=jnp.mean(gan),
          r1=jnp.mean(r1),
          real_logit=jnp.mean(real_logits),
          fake_logit=jnp.mean(fake_logits),
      )
      if comm_weight > 0:
        comm = losses.communication_discriminator_loss(
            fake_logits,
            d(fake, source2, target2),
            d(fake2, source2, target2),
            d(fake2, source, target),
        )
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
        # The mean over every counted patch of the batch.
        rec = jnp.sum(losses.reconstruction_loss(fake, patches, source)) / jnp.maximum(
            jnp.sum(losses.reconstruction_counts(source)), 1
        )
        loss = loss + recon_weight * rec
        aux["reconstruction"] = rec
      if comm_weight > 0:
        fake2 = gen.apply(g_params, patches, source2, noise(k_zg2))
        comm = losses.communication_generator_loss(
            fake_logits,
            d(fake, source2, target2),
            d(fake2, source2, target2),
            d(fake2, source, target),
            saturating=saturating,
        )
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

    metrics = dict(
        d_aux, **g_aux, d_grad_norm=optax.tree.norm(d_grads), g_grad_norm=optax.tree.norm(g_grads)
    )
    new_state = GANState(
        step=state.step + 1,
        g_params=g_params,
        d_params=d_params,
        g_ema_params=g_ema_params,
        g_opt_state=g_opt_state,
        d_opt_state=d_opt_state,
        rng=state.rng,
    )
    return new_state, metrics

  return train_step


# The config fields the train step never reads: how long a run is, how often it logs, samples,
# evaluates and saves, and how its processes join. Runs that differ only there share one step.
STEP_IGNORES = (
    "num_steps",
    "checkpoint_every",
    "log_every",
    "sample_every",
    "keep_checkpoints",
    "eval",
    "distributed",
    "variant",
    "seed",
)


# The initialiser reads no more of the config than the step: init_state(config, key), jitted.
jit_init_state = programs.by_config(programs.make_init, ignore=STEP_IGNORES)


@programs.by_config(ignore=STEP_IGNORES)
def jit_train_step(config, mesh, state_sharding):
  """The train step jitted for `mesh`: state replicated and donated, batch split on "data" (one
  jitted function per config and mesh in a process, shared by configs that differ only in
  STEP_IGNORES: `bigjax.training.programs`)."""
  return jax.jit(
      make_train_step(config),
      in_shardings=(state_sharding, sharding.batch_sharded(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=0,
  )


# ----------------------------------------------------------------------------------------------
# The run.


def _hooks(config, workdir: str, state_params, images: np.ndarray) -> list[loop.Hook]:
  """The GAN's periodic actions: sample grids (and, with eval.metrics_every, the evaluation
  suite of experiments/gan_eval.py into eval.jsonl)."""
  gen, _ = build_models(config)
  sample_fn = gan_samples.make_sampler(gen, image_shape(config), config.model.patch_size)
  ev = gan_samples.eval_inputs(gen, images, config)

  def samples(step, state):
    # Every process runs the sampler (its parameters span all processes' devices); process 0
    # draws the figure.
    drawn = gan_samples.draw_samples(sample_fn, state_params(state), config, ev)
    if jax.process_index() != 0:
      return None
    from experiments import gan_plots  # matplotlib only when drawing

    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    return gan_plots.sample_grid(
        drawn,
        ev["images"],
        ev["random_half"],
        ev["top_half"],
        config,
        os.path.join(workdir, "samples", f"step_{step:07d}.png"),
        step=step,
    )

  hooks = [loop.Hook(samples, every=config.sample_every)]
  if config.eval.metrics_every:
    from experiments import gan_eval  # pylint: disable=import-outside-toplevel

    predict, _ = gan_eval.load_classifier(config, config.eval.classifier_dir)
    evaluate = gan_eval.make_evaluator(
        config,
        predict,
        *gan_setup.heldout_digits(config, config.eval.metrics_num_images),
        num_samples=config.eval.metrics_num_samples,
        seed=config.seed,
        train_images=images,
    )
    hooks.append(
        loop.Hook(
            lambda step, state: evaluate(state_params(state)),
            every=config.eval.metrics_every,
            log="eval.jsonl",
        )
    )
  return hooks


def train_and_evaluate(config, workdir: str, *, progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the config's BigLearn-GAN in `workdir`; returns the run summary."""
  validate_config(config)
  distributed.initialize(auto=config.distributed)  # (a no-op once the entry point joined)
  workdir = os.path.abspath(workdir)
  images = load_images(config)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  state_sharding = sharding.replicated(mesh)
  batch = batch_fn(
      [images],
      config.batch_size,
      seed=config.seed,
      mesh=mesh,
      transform=lambda x: (mnist.to_unit_range(x),),
  )

  params = lambda state: state.g_ema_params if config.ema_decay > 0 else state.g_params
  state, run = loop.train(
      workdir,
      config=config,
      init_state=lambda: jit_init_state(config, init_state, state_sharding)(
          jax.random.key(int(config.seed))
      ),
      step_fn=jit_train_step(config, mesh, state_sharding),
      batch_fn=batch,
      num_steps=config.num_steps,
      signature=model_signature(config),
      signature_defaults=SIGNATURE_DEFAULTS,
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints,
      hooks=_hooks(config, workdir, params, images),
      state_sharding=state_sharding,
      prefetch=config.data.prefetch,
      examples_per_step=config.batch_size,
      examples_name="images",
      progress=progress,
      description=f"BigLearn-GAN {config.variant}",
      show=("d_loss", "g_loss", "r1", "images_per_sec"),
      fix="Lower optim.learning_rate or raise loss.r1_weight.",
  )
  summary = dict(variant=config.variant, **run, dtype=config.model.dtype, **loop.environment())
  if config.data.dataset == "mnist":
    summary["train_digits"] = mnist.describe_split(config.data.source, config.data.split)
  write_json(os.path.join(workdir, "run.json"), summary)
  distributed.barrier("biglearn_gan: done")  # the run's files are complete for every process
  return summary


if __name__ == "__main__":
  cli.run(
      train_and_evaluate,
      "gan_mnist.py",
      workdir_help="Directory for checkpoints, metrics and samples; a run resumes from the "
      "newest checkpoint found here.",
  )
