"""The optimiser of bigjax's supervised trainers, one definition for all of them."""
from __future__ import annotations

import optax

__all__ = ["warmup_cosine_adamw"]


def warmup_cosine_adamw(learning_rate: float, num_steps: int, *, warmup_steps: int,
                        weight_decay: float,
                        grad_clip: float | None = None) -> optax.GradientTransformation:
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
      0.0, learning_rate, warmup, max(int(num_steps), warmup + 1),
      end_value=0.01 * learning_rate)
  adamw = optax.adamw(schedule, weight_decay=weight_decay)
  return adamw if grad_clip is None else optax.chain(optax.clip_by_global_norm(grad_clip), adamw)
