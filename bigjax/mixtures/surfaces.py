"""Loss surfaces of matching tasks over a parameter grid, in one jit-compiled call (Sec. 3.3).

A matching task (Eq. (6)) picks which distribution of the transformed, noised variables
y = A x + eps, eps ~ N(0, noise_var I), the model p_theta must match to the data q:

  joint        p(y)                      vs q(y)
  marginal     p(y_T)                    vs q(y_T)
  conditional  p(y_T | y_S = values)     vs q(y_T | y_S = values)

`loss_surfaces` evaluates every task at every grid point theta. Tasks that share a static
structure (kind, index sets, transform shape) are stacked and vmapped together over
(conditions x grid points); all groups run inside one `jax.jit`, and a group whose
intermediates would exceed `max_chunk_bytes` is evaluated in chunks with `lax.map`.

The tasks and the loss of one of them are `bigjax.mixtures.matching_task`; SGD trajectories on
the surfaces are `bigjax.mixtures.trajectories` (both re-exported here).
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bigjax.mixtures import divergences
from bigjax.mixtures.gmm import GMM
from bigjax.mixtures.matching import KINDS
from bigjax.mixtures.matching_task import (
    DIVERGENCES,
    MatchingTask,
    Signature,
    check_divergence,
    matching_loss,
    signature,
    stack_conditions,
    task_divergence,
)
from bigjax.mixtures.trajectories import sgd_trajectories

__all__ = [
    "DIVERGENCES",
    "KINDS",
    "MatchingTask",
    "grid_2d",
    "loss_surfaces",
    "matching_loss",
    "sgd_trajectories",
]


def grid_2d(axis1, axis2) -> jax.Array:
  """All points (axis1[i], axis2[j]) as `[len(axis1) * len(axis2), 2]`, row-major in (i, j).

  Reshape a surface computed on it with `.reshape(len(axis1), len(axis2))`.
  """
  a, b = jnp.meshgrid(jnp.asarray(axis1), jnp.asarray(axis2), indexing="ij")
  return jnp.stack([a.ravel(), b.ravel()], -1)


def _bytes_per_item(
    sig: Signature,
    target: GMM,
    model_components: int,
    method: str,
    num_points,
    num_samples,
    dtype_bytes: int,
) -> int:
  """A rough upper bound of the live intermediates of one (task, grid point) evaluation."""
  dim = len(sig.target_dims)
  if method == "mc":
    nodes = int(num_samples)
  else:
    nodes = (
        len(divergences.gauss_hermite_rule(divergences._num_points(dim, num_points), dim)[1])
        * model_components
    )
  per_node = (model_components + 2 * target.num_components) * (dim + 3)
  return 4 * nodes * per_node * dtype_bytes


@functools.partial(
    jax.jit,
    static_argnames=(
        "model_fn",
        "signatures",
        "divergence",
        "method",
        "num_points",
        "num_samples",
        "stick_the_landing",
        "chunk_sizes",
    ),
)
def _surfaces_jit(
    target,
    thetas,
    conditions,
    rng,
    *,
    model_fn,
    signatures,
    divergence,
    method,
    num_points,
    num_samples,
    stick_the_landing,
    chunk_sizes,
):
  num_grid = jax.tree.leaves(thetas)[0].shape[0]
  outputs = []
  for sig, cond, chunk in zip(signatures, conditions, chunk_sizes):
    transforms, noise_vars, values, task_ids = cond
    num_cond = transforms.shape[0]

    def one(
        flat_index,
        sig=sig,
        transforms=transforms,
        noise_vars=noise_vars,
        values=values,
        task_ids=task_ids,
        num_cond=num_cond,
    ):
      c, g = flat_index // num_grid, flat_index % num_grid
      model = model_fn(jax.tree.map(lambda t: t[g], thetas))
      item_rng = (
          None if rng is None else jax.random.fold_in(jax.random.fold_in(rng, task_ids[c]), g)
      )
      return task_divergence(
          model,
          target,
          sig,
          transforms[c],
          noise_vars[c],
          values[c],
          divergence,
          method=method,
          num_points=num_points,
          rng=item_rng,
          num_samples=num_samples,
          stick_the_landing=stick_the_landing,
      )

    flat = jnp.arange(num_cond * num_grid)
    if chunk >= flat.shape[0]:
      out = jax.vmap(one)(flat)
    else:
      out = jax.lax.map(one, flat, batch_size=chunk)
    outputs.append(out.reshape(num_cond, num_grid))
  return outputs


def loss_surfaces(
    target: GMM,
    model_fn: Callable[[Any], GMM],
    thetas,
    tasks: Sequence[MatchingTask],
    *,
    divergence: str = "reverse_kl",
    method: str = "quadrature",
    num_points: int | None = None,
    rng: jax.Array | None = None,
    num_samples: int | None = None,
    stick_the_landing: bool = False,
    max_chunk_bytes: int = 256 * 2**20,
) -> jax.Array:
  """Every task's loss at every grid point, in one jit-compiled, vmapped call.

  Args:
    target: the data mixture q (no batch axes).
    model_fn: maps one parameter vector theta (a pytree of arrays) to the model mixture
      p_theta. It is a static argument of the compiled call: pass the same function object
      across calls to reuse the compilation.
    thetas: `[G, P]` grid of parameters (or a pytree with leading axis G), e.g. `grid_2d`.
    tasks: the matching tasks.
    divergence: "reverse_kl" (default, the paper's), "forward_kl" or "js".
    method: "quadrature" (deterministic; with the default orders within 5e-6 of the exact
      value on the paper's sigma^2 = 0.02 problem, 1e-8 at 0.1; see `divergences`) or "mc".
    num_points: quadrature order per dimension (default `divergences.DEFAULT_NUM_POINTS`).
    rng: PRNG key for "mc"; each (task, grid point) uses its own folded key.
    num_samples: samples per (task, grid point) for "mc" (the reference uses 2000).
    stick_the_landing: passed to the "mc" estimator (changes gradients only).
    max_chunk_bytes: memory budget for one chunk of intermediates; larger groups are chunked.

  Returns:
    `[len(tasks), G]` losses, in the order of `tasks`.
  """
  check_divergence(divergence)
  divergences._check_method(method, rng, num_samples)
  if not tasks:
    raise ValueError("tasks is empty: give at least one MatchingTask.")
  if target.batch_shape:
    raise ValueError(f"target must be a single mixture, got batch shape {target.batch_shape}.")
  thetas = jax.tree.map(jnp.asarray, thetas)
  sizes = {int(np.shape(t)[0]) if np.ndim(t) else 0 for t in jax.tree.leaves(thetas)}
  if 0 in sizes or len(sizes) != 1:
    raise ValueError(
        f"thetas must be a non-empty grid [G, ...] with G > 0 rows in every leaf, "
        f"got leading sizes {sorted(sizes)} (an empty grid has no loss to compute)."
    )
  model0 = jax.eval_shape(model_fn, jax.tree.map(lambda t: t[0], thetas))
  if model0.means.shape[-1] != target.dim or model0.means.ndim != 2:
    raise ValueError(
        f"model_fn must return one {target.dim}-D mixture (means [K, "
        f"{target.dim}]), got means of shape {model0.means.shape}."
    )
  dtype = target.means.dtype
  groups: dict[Signature, list[int]] = {}
  for i, task in enumerate(tasks):
    groups.setdefault(signature(task, target.dim), []).append(i)
  signatures, conditions, chunk_sizes, order = [], [], [], []
  for sig, idx in groups.items():
    conditions.append(
        stack_conditions([tasks[i] for i in idx], sig, target.dim, dtype)
        + (jnp.asarray(idx, jnp.int32),)
    )
    per_item = _bytes_per_item(
        sig,
        target,
        model0.means.shape[0],
        method,
        num_points,
        num_samples,
        jnp.dtype(dtype).itemsize,
    )
    chunk_sizes.append(max(1, int(max_chunk_bytes // per_item)))
    signatures.append(sig)
    order.extend(idx)
  outputs = _surfaces_jit(
      target,
      thetas,
      tuple(conditions),
      rng,
      model_fn=model_fn,
      signatures=tuple(signatures),
      divergence=divergence,
      method=method,
      num_points=num_points,
      num_samples=num_samples,
      stick_the_landing=stick_the_landing,
      chunk_sizes=tuple(chunk_sizes),
  )
  stacked = jnp.concatenate(outputs, axis=0)
  return stacked[jnp.argsort(jnp.asarray(order))]
