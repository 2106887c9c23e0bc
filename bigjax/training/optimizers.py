"""The optimisers of bigjax's supervised trainers, one definition for each kind.

warmup_cosine_adamw   AdamW on a fixed warm-up + cosine schedule (the schedule is part of the
                      compiled step)
adamw_direction       AdamW without its learning rate, for steps that take the rate as an
                      argument, with `warmup_linear_lr` (HF's run_glue schedule): runs that
                      differ only in the learning rate, the warm-up or their length then share
                      one compiled step (a sweep compiles once)
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

__all__ = ["warmup_cosine_adamw", "adamw_direction", "warmup_linear_lr"]


def warmup_cosine_adamw(
    learning_rate: float,
    num_steps: int,
    *,
    warmup_steps: int,
    weight_decay: float,
    grad_clip: float | None = None,
) -> optax.GradientTransformation:
  """AdamW whose learning rate rises linearly from 0 over `warmup_steps` (at least 1), then
  decays along a cosine to 1% of `learning_rate` at `num_steps`; with `grad_clip`, the
  gradients are first clipped to that global norm.

  Args:
    learning_rate: the peak learning rate.
    num_steps: the run's steps (the end of the cosine).
    warmup_steps: steps of the linear warm-up.
    weight_decay: AdamW's decoupled weight decay.
    grad_clip: the global gradient norm to clip to (None: no clipping).
  """
  warmup = max(1, int(warmup_steps))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, warmup, max(int(num_steps), warmup + 1), end_value=0.01 * learning_rate
  )
  adamw = optax.adamw(schedule, weight_decay=weight_decay)
  return adamw if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adamw)


def adamw_direction(
    *,
    weight_decay: float,
    grad_clip: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
  """`optax.adamw` without the learning rate: its updates are the direction whose product with
  -learning_rate is AdamW's step (`params + (-lr) * update`, the last link of optax's adamw
  chain done by the caller). With `grad_clip`, gradients are first clipped to that global norm
  (HF and XLNet fine-tune with 1.0)."""
  chain = [optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.add_decayed_weights(weight_decay)]
  if grad_clip is not None:
    chain.insert(0, optax.clip_by_global_norm(grad_clip))
  return optax.chain(*chain)


def warmup_linear_lr(step, *, peak, warmup_steps, num_steps):
  """HF's `get_linear_schedule_with_warmup` at `step` (0-based; jnp or numpy scalars, traced
  ones too): peak * step / warmup during the warm-up, then linearly to 0 at `num_steps`.
  warmup_steps = 0: the decay from the first step (which takes the full peak rate)."""
  step = jnp.asarray(step, jnp.float32)
  warmup = jnp.asarray(warmup_steps, jnp.float32)
  total = jnp.asarray(num_steps, jnp.float32)
  rise = step / jnp.maximum(warmup, 1.0)
  fall = jnp.maximum(total - step, 0.0) / jnp.maximum(total - warmup, 1.0)
  return jnp.asarray(peak, jnp.float32) * jnp.where(step < warmup, rise, fall)
