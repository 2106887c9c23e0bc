"""One matching task of Eq. (6) and its loss: the divergence between the model's and the data's
distributions of the transformed, noised variables y = A x + eps, eps ~ N(0, noise_var I):

  joint        p(y)                      vs q(y)
  marginal     p(y_T)                    vs q(y_T)
  conditional  p(y_T | y_S = values)     vs q(y_T | y_S = values)

`matching_loss` evaluates one task for one model; `bigjax.mixtures.surfaces` evaluates many
tasks over a parameter grid and `bigjax.mixtures.trajectories` runs SGD on them, both by
grouping tasks of equal `Signature` (their static structure) and vmapping over the rest.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bigjax.mixtures import checks
from bigjax.mixtures import divergences
from bigjax.mixtures import gmm as gmm_lib
from bigjax.mixtures.gmm import GMM
from bigjax.mixtures.matching import KINDS

DIVERGENCES = ("reverse_kl", "forward_kl", "js")


class MatchingTask(NamedTuple):
  """One matching task of Eq. (6).

  Attributes:
    kind: "joint", "marginal" or "conditional".
    target_dims: dimensions of y whose distribution is matched (marginal, conditional); for a
      conditional, empty means every dimension not given. Ignored for "joint".
    given_dims: dimensions of y conditioned on ("conditional" only).
    given_values: `[len(given_dims)]` values of y_given ("conditional" only).
    transform: `[M, D]` matrix A of y = A x (M <= D); None is the identity.
    noise_var: variance of isotropic Gaussian noise added to y on both sides (Fig. 10).
  """

  kind: str
  target_dims: tuple = ()
  given_dims: tuple = ()
  given_values: Any = ()
  transform: Any = None
  noise_var: float = 0.0


class Signature(NamedTuple):
  """The static part of a task: tasks with equal signatures are vmapped together."""

  kind: str
  target_dims: tuple
  given_dims: tuple
  transform_shape: tuple


def signature(task: MatchingTask, dim: int) -> Signature:
  """The static structure of `task` for a `dim`-D target, its index sets checked (ValueError
  naming the field otherwise); a conditional's empty target_dims become every dim not given."""
  if task.kind not in KINDS:
    raise ValueError(f"task kind {task.kind!r} is unknown; choose one of {KINDS}.")
  shape = (dim, dim) if task.transform is None else tuple(np.shape(task.transform))
  if len(shape) != 2 or shape[1] != dim or shape[0] > dim:
    raise ValueError(
        f"task transform has shape {shape}; it must be [M, {dim}] with "
        f"M <= {dim} for this {dim}-D target."
    )
  out_dim = shape[0]
  if task.kind == "joint":
    return Signature("joint", tuple(range(out_dim)), (), shape)
  target = (
      checks.check_dims(task.target_dims, out_dim, "target_dims")
      if (task.kind == "marginal" or len(task.target_dims))
      else ()
  )
  given = ()
  if task.kind == "conditional":
    given = checks.check_dims(task.given_dims, out_dim, "given_dims")
    if set(given) & set(target):
      raise ValueError(
          f"target_dims={target} and given_dims={given} overlap; a conditional "
          "task needs disjoint sets."
      )
    rest = tuple(d for d in range(out_dim) if d not in given)
    target = target or rest
    if np.shape(task.given_values) != (len(given),):
      raise ValueError(
          f"given_values must have shape [{len(given)}] to match "
          f"given_dims={given}, got {np.shape(task.given_values)}."
      )
  elif task.given_dims:
    raise ValueError(f"given_dims={task.given_dims} makes sense only for kind='conditional'.")
  return Signature(task.kind, target, given, shape)


def _task_distribution(gmm: GMM, sig: Signature, transform, noise_var, given_values) -> GMM:
  """The distribution a task matches, for one mixture (model or data)."""
  y = gmm_lib.add_noise(gmm_lib.transform(gmm, transform), noise_var)
  if sig.kind == "joint":
    return y
  if sig.kind == "marginal":
    return gmm_lib.marginal(y, sig.target_dims)
  cond = gmm_lib.conditional(y, sig.given_dims, given_values)
  rest = [d for d in range(y.dim) if d not in sig.given_dims]
  positions = tuple(rest.index(d) for d in sig.target_dims)
  return cond if positions == tuple(range(cond.dim)) else gmm_lib.marginal(cond, positions)


def _divergence(p: GMM, q: GMM, divergence: str, **kwargs) -> jax.Array:
  if divergence == "reverse_kl":
    return divergences.kl(p, q, **kwargs)
  if divergence == "forward_kl":
    return divergences.kl(q, p, **kwargs)
  kwargs.pop("stick_the_landing", None)
  return divergences.js(p, q, **kwargs)


def task_divergence(
    model: GMM,
    target: GMM,
    sig: Signature,
    transform,
    noise_var,
    given_values,
    divergence: str,
    **kwargs,
) -> jax.Array:
  """The divergence between the model's and the data's distributions of one task."""
  p = _task_distribution(model, sig, transform, noise_var, given_values)
  q = _task_distribution(target, sig, transform, noise_var, given_values)
  return _divergence(p, q, divergence, **kwargs)


def stack_conditions(tasks: Sequence[MatchingTask], sig: Signature, dim: int, dtype):
  """The dynamic parts of tasks that share `sig`: transforms, noise variances, given values."""
  noise = np.asarray([t.noise_var for t in tasks], np.float64)
  if np.any(noise < 0) or not np.all(np.isfinite(noise)):
    raise ValueError(f"noise_var must be finite and >= 0, got {noise}.")
  transforms = np.stack(
      [np.eye(dim) if t.transform is None else np.asarray(t.transform) for t in tasks]
  )
  values = np.stack(
      [np.asarray(t.given_values, np.float64).reshape(len(sig.given_dims)) for t in tasks]
  )
  return (jnp.asarray(transforms, dtype), jnp.asarray(noise, dtype), jnp.asarray(values, dtype))


def check_divergence(divergence: str):
  """Raises a ValueError unless `divergence` is one of DIVERGENCES."""
  if divergence not in DIVERGENCES:
    raise ValueError(f"divergence={divergence!r} is unknown; choose one of {DIVERGENCES}.")


def matching_loss(
    model: GMM,
    target: GMM,
    task: MatchingTask,
    *,
    divergence: str = "reverse_kl",
    method: str = "quadrature",
    num_points: int | None = None,
    rng: jax.Array | None = None,
    num_samples: int | None = None,
    stick_the_landing: bool = False,
) -> jax.Array:
  """The loss of one matching task, e.g. KL[p_theta(y_T | y_S) || q(y_T | y_S)] (Eq. (6)).

  Differentiable in the model's parameters (with quadrature, or "mc" with explicit `rng`).

  Args:
    model: the model mixture p_theta (batch shape `B`).
    target: the data mixture q.
    task: the `MatchingTask`.
    divergence: "reverse_kl" (KL[p || q], the paper's choice), "forward_kl" or "js".
    method, num_points, rng, num_samples, stick_the_landing: see `divergences.kl`.

  Returns:
    `[*B]` losses.
  """
  check_divergence(divergence)
  if model.dim != target.dim:
    raise ValueError(f"model is {model.dim}-D but target is {target.dim}-D.")
  sig = signature(task, target.dim)
  transform = jnp.eye(target.dim) if task.transform is None else task.transform
  values = jnp.asarray(task.given_values, target.means.dtype).reshape(len(sig.given_dims))
  return task_divergence(
      model,
      target,
      sig,
      transform,
      task.noise_var,
      values,
      divergence,
      method=method,
      num_points=num_points,
      rng=rng,
      num_samples=num_samples,
      stick_the_landing=stick_the_landing,
  )
