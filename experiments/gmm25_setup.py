"""The 25-GMM exploration's setup (`experiments.gmm25`, paper Sec. 4.1, App. C): the config
checks, all run before anything compiles, and the target q, the model p_theta and the training
state the run is made of.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax.mixtures import gmm as gmm_lib
from bigjax.mixtures import matching
from bigjax.mixtures.gmm import GMM

TASK_KEYS = {
    "name",
    "kind",
    "dims",
    "given_dims",
    "given_source",
    "noise_vars",
    "random_transform",
    "max_grad_norm",
}
GIVEN_SOURCES = ("data", "model", "mixed")


def validate_config(config) -> None:
  """Raises ValueError for any inconsistent field, before anything is traced or compiled."""

  def fail(msg):
    raise ValueError(f"configs/gmm25.py ({config.variant}): {msg}")

  for name in (
      "num_seeds",
      "seeds_per_batch",
      "num_components",
      "num_outer_iterations",
      "inner_steps",
      "num_samples",
      "record_every",
      "num_chunks",
  ):
    if int(config[name]) < 1:
      fail(f"{name} must be a positive integer, got {config[name]}.")
  if len(config.grid) < 1 or float(config.data_var) <= 0:
    fail(f"grid must be non-empty and data_var > 0, got {config.grid}, {config.data_var}.")
  if config.covariance not in ("cholesky", "diagonal"):
    fail(f"covariance={config.covariance!r}; choose cholesky or diagonal.")
  if config.optimizer not in ("sgd", "adam"):
    fail(f"optimizer={config.optimizer!r}; choose sgd or adam.")
  if config.method not in ("mc", "quadrature"):
    fail(f"method={config.method!r}; choose mc or quadrature.")
  if not float(config.learning_rate) > 0:
    fail(f"learning_rate must be > 0, got {config.learning_rate}.")
  if config.num_outer_iterations % config.record_every:
    fail(
        f"num_outer_iterations={config.num_outer_iterations} is not a multiple of "
        f"record_every={config.record_every}."
    )
  num_records = config.num_outer_iterations // config.record_every
  if num_records % config.num_chunks:
    fail(
        f"the {num_records} records (num_outer_iterations / record_every) do not split into "
        f"num_chunks={config.num_chunks} equal chunks."
    )
  names = []
  for i, t in enumerate(config.tasks):
    unknown = set(t) - TASK_KEYS
    if unknown:
      fail(f"task {i} ({t.get('name')!r}) has unknown keys {sorted(unknown)}.")
    if t["kind"] not in matching.KINDS:
      fail(f"task {t['name']!r} has unknown kind {t['kind']!r}; choose one of {matching.KINDS}.")
    if t["name"] in names:
      fail(f"task name {t['name']!r} appears twice.")
    names.append(t["name"])
    dims = tuple(t.get("dims", (0,)))
    given = tuple(t.get("given_dims", (1,)))
    if t["kind"] == "marginal" and (not dims or any(not 0 <= d < 2 for d in dims)):
      fail(f"task {t['name']!r}: dims={dims} must name output dims in 0..1.")
    if t["kind"] == "conditional":
      if len(given) != 1 or given[0] not in (0, 1):
        fail(f"task {t['name']!r}: given_dims={given} must name one output dim in 0..1.")
      if t.get("given_source", "data") not in GIVEN_SOURCES:
        fail(
            f"task {t['name']!r}: given_source={t['given_source']!r}; choose one of "
            f"{GIVEN_SOURCES}."
        )
    if float(t.get("max_grad_norm", 0.0)) < 0:
      fail(f"task {t['name']!r}: max_grad_norm={t['max_grad_norm']} must be >= 0 (0: none).")
    if any(float(v) < 0 for v in t.get("noise_vars", ())):
      fail(f"task {t['name']!r}: noise_vars={t['noise_vars']} must be >= 0.")
  if not names:
    fail("tasks is empty.")
  if not config.phases:
    fail("phases is empty.")
  starts = [int(p["start"]) for p in config.phases]
  if starts[0] != 0:
    fail(f"the first phase must start at iteration 0, got {starts[0]}.")
  if any(b <= a for a, b in zip(starts, starts[1:])):
    fail(f"phase starts {starts} must increase strictly.")
  if starts[-1] >= config.num_outer_iterations:
    fail(
        f"phase boundary {starts[-1]} is past the end of the run "
        f"(num_outer_iterations={config.num_outer_iterations})."
    )
  for p in config.phases:
    probs = dict(p["probs"])
    unknown = set(probs) - set(names)
    if unknown:
      fail(
          f"phase starting at {p['start']} names unknown tasks {sorted(unknown)}; the tasks "
          f"are {names}."
      )
    if any(float(v) < 0 for v in probs.values()) or abs(sum(probs.values()) - 1.0) > 1e-6:
      fail(
          f"task probabilities of the phase starting at {p['start']} must be >= 0 and sum "
          f"to one, got {probs} (sum {sum(probs.values()):.6g})."
      )


# ----------------------------------------------------------------------------------------------
# Target, model and training state.


def target(config) -> GMM:
  """The data mixture q: equal weights on the grid x grid, variance data_var."""
  return gmm_lib.grid_mixture(config.grid, config.data_var)


def init_params(config, rng) -> dict[str, jax.Array]:
  """Trainable parameters: means [K, 2], scale_raw [K, 2, 2] (log diagonal), logits [K]."""
  k = int(config.num_components)
  means = config.init_mean + config.init_mean_std * jax.random.normal(rng, (k, 2), jnp.float32)
  scale_raw = jnp.broadcast_to(jnp.eye(2, dtype=jnp.float32) * config.init_log_scale, (k, 2, 2))
  return dict(means=means, scale_raw=scale_raw, logits=jnp.zeros((k,), jnp.float32))


def gradient_masks(config) -> dict[str, jax.Array]:
  """1 where a parameter trains, 0 where it is frozen (covariance form included)."""
  k = int(config.num_components)
  tril = np.tril(np.ones((2, 2), np.float32))
  if config.covariance == "diagonal":
    tril = np.eye(2, dtype=np.float32)
  return dict(
      means=jnp.full((k, 2), float(config.train_means)),
      scale_raw=jnp.broadcast_to(jnp.asarray(tril * float(config.train_scales)), (k, 2, 2)),
      logits=jnp.full((k,), float(config.train_weights)),
  )


def model_gmm(params) -> GMM:
  """p_theta from parameters: L = tril(raw) with its diagonal exponentiated."""
  raw = params["scale_raw"]
  eye = jnp.eye(2, dtype=raw.dtype)
  tril = jnp.tril(raw) * (1 - eye) + jnp.exp(raw * eye) * eye
  return GMM(jax.nn.log_softmax(params["logits"]), params["means"], tril)


def make_optimizer(config) -> optax.GradientTransformation:
  return {"sgd": optax.sgd, "adam": optax.adam}[config.optimizer](config.learning_rate)


class State(NamedTuple):
  params: dict
  opt_state: Any
  iteration: jax.Array  # next outer iteration
  first_bad: jax.Array  # first outer iteration with a non-finite loss, -1 if none
  rng: jax.Array


def init_state(config, seed_index: int) -> State:
  rng = jax.random.fold_in(jax.random.key(config.seed), config.first_seed + seed_index)
  params = init_params(config, jax.random.fold_in(rng, -1 % 2**31))
  return State(params, make_optimizer(config).init(params), jnp.int32(0), jnp.int32(-1), rng)


def init_states(config) -> State:
  states = [init_state(config, i) for i in range(config.num_seeds)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)
