"""SGD on a model's parameters that samples one matching task at a time (Sec. 3.3, Fig. 8b, 9b).

The trajectories drawn over the loss surfaces of `bigjax.mixtures.surfaces`: one outer step
draws a task, `inner_steps` gradient steps follow on its quadrature loss (one: single-level,
more: bi-level optimisation), every trajectory in one jit-compiled, vmapped scan.
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from bigjax.mixtures.gmm import GMM
from bigjax.mixtures.matching_task import (
    MatchingTask,
    check_divergence,
    signature,
    stack_conditions,
    task_divergence,
)


def sgd_trajectories(
    target: GMM,
    model_fn: Callable[[Any], GMM],
    theta0,
    tasks: Sequence[MatchingTask],
    *,
    rng: jax.Array,
    num_steps: int,
    learning_rate: float,
    inner_steps: int = 1,
    divergence: str = "reverse_kl",
    num_points: int | None = None,
):
  """SGD on theta that samples one task at a time (paper Fig. 8b, 9b).

  Each outer step draws a task uniformly at random and takes `inner_steps` gradient steps on
  its (quadrature) loss: `inner_steps=1` is single-level optimisation, more is bi-level.

  Args:
    target, model_fn: as for `loss_surfaces`.
    theta0: `[R, P]` starting points (one trajectory each).
    tasks: matching tasks that share kind, index sets and transform shape.
    rng: PRNG key for the task draws (all trajectories see the same task sequence).
    num_steps: total gradient steps (a multiple of `inner_steps`).
    learning_rate: SGD step size.

  Returns:
    `(thetas [R, num_steps + 1, P], task_index [num_steps])`.
  """
  check_divergence(divergence)
  if num_steps % inner_steps:
    raise ValueError(f"num_steps={num_steps} must be a multiple of inner_steps={inner_steps}.")
  sigs = {signature(t, target.dim) for t in tasks}
  if len(sigs) != 1:
    raise ValueError(
        "sgd_trajectories needs tasks of one kind with the same index sets and "
        f"transform shape; got {len(sigs)} different structures."
    )
  sig = sigs.pop()
  dtype = target.means.dtype
  transforms, noise, values = stack_conditions(tasks, sig, target.dim, dtype)
  num_outer = num_steps // inner_steps
  task_index = jax.random.randint(rng, (num_outer,), 0, len(tasks))
  return _trajectories_jit(
      target,
      jnp.asarray(theta0, dtype),
      transforms,
      noise,
      values,
      task_index,
      model_fn=model_fn,
      sig=sig,
      inner_steps=inner_steps,
      learning_rate=learning_rate,
      divergence=divergence,
      num_points=num_points,
  )


@functools.partial(
    jax.jit,
    static_argnames=("model_fn", "sig", "inner_steps", "learning_rate", "divergence", "num_points"),
)
def _trajectories_jit(
    target,
    theta0,
    transforms,
    noise,
    values,
    task_index,
    *,
    model_fn,
    sig,
    inner_steps,
    learning_rate,
    divergence,
    num_points,
):
  def loss(theta, c):
    return task_divergence(
        model_fn(theta),
        target,
        sig,
        transforms[c],
        noise[c],
        values[c],
        divergence,
        num_points=num_points,
    )

  grad = jax.grad(loss)

  def outer(theta, c):
    def inner(th, _):
      th = th - learning_rate * grad(th, c)
      return th, th

    return jax.lax.scan(inner, theta, None, length=inner_steps)

  def run(theta):
    _, path = jax.lax.scan(outer, theta, task_index)
    return jnp.concatenate([theta[None], path.reshape(-1, theta.shape[-1])], 0)

  return jax.vmap(run)(theta0), jnp.repeat(task_index, inner_steps)
