r"""25-GMM reverse-KL exploration with big learning (paper Sec. 4.1, App. C; Fig. 4, 11).

  python -m experiments.gmm25 --config configs/gmm25.py:paper --workdir /tmp/gmm25 \
      --config.num_seeds=16

Design: all seeds run in one jitted call per chunk, mapped over seeds by `lax.map` with
`config.seeds_per_batch` seeds side by side under `vmap` (default 1: sequential, so only the
drawn task's branch runs; under vmap `lax.switch` evaluates every branch); a chunk is one
`lax.scan` over recording blocks, each block a `lax.scan` over `record_every` outer iterations,
each outer iteration one `lax.switch` over the tasks whose branch is a `lax.scan` of
`inner_steps` SGD steps. Metrics are computed at each block end inside the scan. The run is
split into `num_chunks` calls of the same compiled program (one compile) so that a tqdm bar can
advance between them. A non-finite loss or parameter sets a per-seed flag (the first bad outer
iteration); after each chunk the run stops with FloatingPointError naming seed and iteration.

Writes into --workdir:
  metrics.npz    per seed and recorded iteration: iterations [R], modes_recovered_r0.5/_r0.3
                 [S, R], mass_near_modes, reverse_kl, forward_kl, loss [S, R], and the model
                 (means [S, R, K, 2], scale_tril [S, R, K, 2, 2], weights [S, R, K])
  summary.json   variant, num_seeds, num_outer_iterations, modes_recovered (final, r = 0.5),
                 modes_recovered_r0.3, seconds (computation), compile_seconds, config, ...
  summary.md     median / min / max over seeds of the final modes recovered
  snapshots.png  target and model contours at config.snapshot_iterations (Fig. 4 / 11 style)
  trajectory.gif one seed's model density over the run
  modes.png      modes recovered versus outer iteration, every seed

The config checks, the target, the model and the training state are `experiments.gmm25_setup`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from bigjax.mixtures import divergences
from bigjax.mixtures import gmm as gmm_lib
from bigjax.mixtures import matching
from bigjax.mixtures.gmm import GMM
from bigjax.training import environment, write_json
from experiments import cli
from experiments.gmm25_setup import (
    GIVEN_SOURCES,
    TASK_KEYS,
    State,
    gradient_masks,
    init_params,
    init_state,
    init_states,
    make_optimizer,
    model_gmm,
    target,
    validate_config,
)

# The setup's names are re-exported: `experiments.gmm25.validate_config` etc. keep working.
__all__ = [
    "GIVEN_SOURCES",
    "TASK_KEYS",
    "State",
    "gradient_masks",
    "init_params",
    "init_state",
    "init_states",
    "make_chunk_fn",
    "make_metrics",
    "make_optimizer",
    "make_outer_step",
    "map_seeds",
    "model_gmm",
    "run",
    "summary_table",
    "target",
    "train_and_evaluate",
    "validate_config",
]

# ----------------------------------------------------------------------------------------------
# One outer iteration: pick a task by the phase's probabilities, take inner_steps steps on it.


def _phase_tables(config):
  names = [t["name"] for t in config.tasks]
  starts = np.asarray([p["start"] for p in config.phases], np.int32)
  probs = np.asarray(
      [[float(dict(p["probs"]).get(n, 0.0)) for n in names] for p in config.phases], np.float32
  )
  return jnp.asarray(starts), jnp.asarray(probs)


def _task_branch(task, config, data: GMM, opt, masks):
  kind = task["kind"]
  noise_vars = tuple(task.get("noise_vars", ()))
  source = task.get("given_source", "data")
  max_norm = float(task.get("max_grad_norm", 0.0))

  def branch(params, opt_state, rng):
    rng_b, rng_n, rng_v, rng_s, rng_steps = jax.random.split(rng, 5)
    if task.get("random_transform", True) and kind != "joint":
      transform = gmm_lib.random_orthogonal(rng_b, 2)
    else:
      transform = jnp.eye(2, dtype=jnp.float32)
    noise = None
    if noise_vars:
      noise = jnp.asarray(noise_vars, jnp.float32)[
          jax.random.randint(rng_n, (), 0, len(noise_vars))
      ]
    given = None
    if kind == "conditional":
      given_dims = tuple(task["given_dims"])
      draw = lambda src: matching.draw_given_values(
          src, transform, given_dims=given_dims, rng=rng_v, noise_var=noise
      )
      if source == "data":
        given = draw(data)
      elif source == "model":
        given = draw(model_gmm(params))
      else:
        given = jnp.where(jax.random.bernoulli(rng_s), draw(data), draw(model_gmm(params)))

    def loss_fn(p, key):
      return matching.task_loss(
          kind,
          model_gmm(p),
          data,
          transform=transform,
          dims=tuple(task.get("dims", (0,))),
          given_dims=tuple(task.get("given_dims", (1,))),
          given_values=given,
          rng=key,
          noise_var=noise,
          method=config.method,
          num_samples=config.num_samples,
          num_points=config.metric_num_points,
      )

    def inner(carry, i):
      p, s = carry
      loss, grads = jax.value_and_grad(loss_fn)(p, jax.random.fold_in(rng_steps, i))
      grads = jax.tree.map(jnp.multiply, grads, masks)
      if max_norm > 0:
        # min(1, c / |g|) is NaN for a NaN gradient, so clipping never hides a non-finite one.
        scale = jnp.minimum(1.0, max_norm / optax.global_norm(grads))
        grads = jax.tree.map(lambda g: g * scale, grads)
      updates, s = opt.update(grads, s, p)
      return (optax.apply_updates(p, updates), s), loss

    (params, opt_state), losses = jax.lax.scan(
        inner, (params, opt_state), jnp.arange(config.inner_steps)
    )
    return params, opt_state, jnp.mean(losses)

  return branch


def make_outer_step(config):
  """Returns outer_step(state) -> (state, loss) for one seed (pure; jit/vmap it)."""
  data = target(config)
  opt = make_optimizer(config)
  masks = gradient_masks(config)
  starts, probs = _phase_tables(config)
  branches = [_task_branch(t, config, data, opt, masks) for t in config.tasks]

  def outer_step(state: State):
    it = state.iteration
    rng = jax.random.fold_in(state.rng, it)
    rng_task, rng_inner = jax.random.split(rng)
    phase = jnp.sum(starts <= it) - 1
    task = jax.random.categorical(rng_task, jnp.log(probs[phase]))
    if len(branches) == 1:
      params, opt_state, loss = branches[0](state.params, state.opt_state, rng_inner)
    else:
      params, opt_state, loss = jax.lax.switch(
          task, branches, state.params, state.opt_state, rng_inner
      )
    finite = jnp.isfinite(loss) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)])
    )
    first_bad = jnp.where((state.first_bad < 0) & ~finite, it, state.first_bad)
    return State(params, opt_state, it + 1, first_bad, state.rng), loss

  return outer_step


# ----------------------------------------------------------------------------------------------
# Metrics.


def make_metrics(config):
  """Returns metrics(params) -> dict of scalars and the model's arrays (pure, one seed)."""
  data = target(config)
  modes = np.asarray(data.means)
  k = int(config.num_components)
  radius = float(config.mass_num_std) * float(np.sqrt(config.data_var))
  points = int(config.metric_num_points)

  def near_modes(x):  # x: [D, N] columns -> [N]
    d2 = [(x[0] - m[0]) ** 2 + (x[1] - m[1]) ** 2 for m in modes]
    return (jax.tree_util.tree_reduce(jnp.minimum, d2) <= radius**2).astype(x.dtype)

  def metrics(params):
    p = model_gmm(params)
    out = {}
    heavy = p.weights >= config.min_weight_factor / k
    dist = jnp.sqrt(jnp.sum((p.means[:, None, :] - modes[None]) ** 2, -1))  # [K, M]
    for r in config.recover_radii:
      out[f"modes_recovered_r{r}"] = jnp.sum(jnp.any(heavy[:, None] & (dist <= r), axis=0))
    out["mass_near_modes"] = divergences.quadrature_expectation(p, near_modes, num_points=points)
    out["reverse_kl"] = divergences.kl(p, data, num_points=points)
    out["forward_kl"] = divergences.kl(data, p, num_points=points)
    out["means"], out["scale_tril"], out["weights"] = p.means, p.scale_tril, p.weights
    return out

  return metrics


def make_chunk_fn(config):
  """jit(map over seeds of chunk): advances all seeds by one chunk of records, with metrics.

  Seeds are mapped by `map_seeds` (`config.seeds_per_batch` side by side under vmap)."""
  outer_step = make_outer_step(config)
  metrics = make_metrics(config)
  blocks = config.num_outer_iterations // config.record_every // config.num_chunks

  def block(state, _):
    state, losses = jax.lax.scan(
        lambda s, _: outer_step(s), state, None, length=config.record_every
    )
    out = metrics(state.params)
    out["loss"] = jnp.mean(losses)
    return state, out

  def chunk(state):
    return jax.lax.scan(block, state, None, length=blocks)

  return jax.jit(map_seeds(chunk, config), donate_argnums=0), jax.jit(jax.vmap(metrics))


def map_seeds(fn, config):
  """Maps a one-seed function over the leading (seed) axis of its argument's leaves.

  `config.seeds_per_batch` seeds run side by side under `vmap`, the batches one after another
  (`lax.map`). Under `vmap` the per-outer-iteration `lax.switch` over tasks becomes a select
  that evaluates every task's branch for every seed, so on CPU the default of 1 (a plain
  sequential `lax.map`, where only the drawn branch runs) is the fastest; larger values (or
  >= num_seeds, one `vmap` of all seeds) fill wide hardware such as a GPU.
  """
  num_seeds, per_batch = int(config.num_seeds), int(config.seeds_per_batch)
  if per_batch == 1:
    # Not batch_size=1: that still vmaps (a batch of one), turning the switch into a select.
    return lambda xs: jax.lax.map(fn, xs)
  if per_batch >= num_seeds:
    return jax.vmap(fn)
  return lambda xs: jax.lax.map(fn, xs, batch_size=per_batch)


def _check_finite(state: State):
  bad = np.asarray(state.first_bad)
  if np.any(bad >= 0):
    seed = int(np.argmax(bad >= 0))
    raise FloatingPointError(
        f"non-finite loss or parameters in seed {seed} at outer iteration {int(bad[seed])} "
        f"(seeds with a non-finite value: {np.flatnonzero(bad >= 0).tolist()}); lower the "
        "learning rate or check the config."
    )


def run(config, *, progress: bool = True) -> dict[str, Any]:
  """Trains all seeds; returns metrics arrays [S, R + 1] (record 0 = init) and timings."""
  validate_config(config)
  chunk_fn, metrics_fn = make_chunk_fn(config)
  state = init_states(config)
  start = time.perf_counter()
  compiled = chunk_fn.lower(state).compile()
  compile_seconds = time.perf_counter() - start
  first = jax.tree.map(np.asarray, metrics_fn(state.params))
  first["loss"] = np.full(config.num_seeds, np.nan, np.float32)
  records = [jax.tree.map(lambda x: x[:, None], first)]
  start = time.perf_counter()
  for _ in tqdm.trange(config.num_chunks, desc=config.variant, unit="chunk", disable=not progress):
    state, out = compiled(state)
    out = jax.tree.map(np.asarray, out)  # waits for the chunk
    _check_finite(state)
    records.append(out)
  seconds = time.perf_counter() - start
  result = {k: np.concatenate([r[k] for r in records], axis=1) for k in records[0]}
  result["iterations"] = np.arange(0, config.num_outer_iterations + 1, config.record_every)
  return dict(
      metrics=result,
      seconds=seconds,
      compile_seconds=compile_seconds,
      final_params=jax.tree.map(np.asarray, state.params),
  )


# ----------------------------------------------------------------------------------------------
# Outputs.


def summary_table(rows: list[dict[str, Any]]) -> str:
  """Markdown: median / min / max over seeds of the final modes recovered, per variant."""
  lines = [
      "| variant | seeds | outer iterations | modes recovered r=0.5 median (min, max) | "
      "r=0.3 median (min, max) | seconds |",
      "|---|---|---|---|---|---|",
  ]
  for r in rows:
    m5, m3 = np.asarray(r["modes_recovered"]), np.asarray(r["modes_recovered_r0.3"])
    lines.append(
        f"| {r['variant']} | {r['num_seeds']} | {r['num_outer_iterations']} | "
        f"{np.median(m5):g} ({m5.min()}, {m5.max()}) | "
        f"{np.median(m3):g} ({m3.min()}, {m3.max()}) | {r['seconds']:.1f} |"
    )
  return "\n".join(lines) + "\n"


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Runs the config's variant for all seeds and writes metrics, tables and figures."""
  validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  out = run(config)
  m = out["metrics"]
  np.savez(os.path.join(workdir, "metrics.npz"), **m)
  r5, r3 = f"modes_recovered_r{config.recover_radii[0]}", "modes_recovered_r0.3"
  summary = dict(
      variant=config.variant,
      num_seeds=int(config.num_seeds),
      num_outer_iterations=int(config.num_outer_iterations),
      modes_recovered=m[r5][:, -1].astype(int).tolist(),
      seconds=out["seconds"],
      compile_seconds=out["compile_seconds"],
      mass_near_modes=m["mass_near_modes"][:, -1].tolist(),
      reverse_kl=m["reverse_kl"][:, -1].tolist(),
      forward_kl=m["forward_kl"][:, -1].tolist(),
      config=json.loads(config.to_json_best_effort()),
      **environment(),
  )
  summary["modes_recovered_r0.3"] = (
      m[r3][:, -1].astype(int).tolist() if r3 in m else summary["modes_recovered"]
  )
  summary["modes_recovered_median"] = float(np.median(summary["modes_recovered"]))
  write_json(os.path.join(workdir, "summary.json"), summary)
  with open(os.path.join(workdir, "summary.md"), "w") as f:
    f.write(
        f"# 25-GMM modes recovered at the end ({config.variant})\n\n" + summary_table([summary])
    )
  if config.plots:
    from experiments import gmm25_plots  # matplotlib only when drawing

    start = time.perf_counter()
    gmm25_plots.plot_all(workdir, config, m, np.asarray(target(config).means))
    summary["plot_seconds"] = time.perf_counter() - start
    write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


if __name__ == "__main__":
  cli.run(train_and_evaluate, "gmm25.py", workdir_help="Directory for metrics, tables and figures.")
