r"""One resumable training loop for every bigjax trainer.

A trainer brings only what is its own: how to initialise its state pytree, its jitted step
function, the batch of a step, and its periodic hooks. The loop owns everything else, in the
spirit of flax's lm1b `train.py` and big_vision's `train.py`:

  1. restore: the newest restorable checkpoint in `workdir/checkpoints` (older steps when the
     newest is incomplete, `bigjax.training.checkpoint`), refusing another model's checkpoints
     (the `signature`); a fresh state only when there is none;
  0. the workdir claimed (`bigjax.training.rundir`): refused when it is a file, a model
     directory or a folder holding anything but a run; marked as a run; locked against a
     second process;
  2. `config.json`, written once the restore succeeded (a refused resume leaves it as it was);
     a finished run refuses another config (`ConfigMismatchError`) instead of describing a
     training it did not do;
  3. the logs of a resumed run cut back to the restored step (`metrics.jsonl`, each hook's log,
     TensorBoard events), so a resumed run's logs read as the uninterrupted run's; a hook row
     of the restored step that a kill cut (between the checkpoint and the hook) is computed
     again from the restored state;
  4. the steps, with a progress bar; metrics are fetched from the device once per window and
     every step of the window is checked before anything is saved (a NaN never reaches a
     checkpoint: `NonFiniteLossError`);
  5. at each due step (one `is_due`-style test, as big_vision's `itstime`): the mean metrics row
     (`metrics.jsonl` and TensorBoard), the checkpoint, and the hooks;
  6. the compile count of the step (`compilations`: 1 unless an input changed shape or dtype).

In a multi-process run (bigjax.training.distributed) every process runs the loop: process 0
claims the workdir and writes every file, the others stop with it when it refuses one; Orbax
writes and restores the checkpoints of all processes together; metrics rows are the means of
the global batch's metrics; hooks see each process's own copy of the replicated state
(`sharding.local_view`), so an evaluation or a sample grid needs no collective and cannot
deadlock (a hook writes its files only in process 0: its rows go through the loop's writer).

Randomness is the trainer's: when its step draws from `fold_in(key, step)` and `batch_fn` is a
pure function of the step (`batch_indices`), a resumed run continues exactly as the
uninterrupted one would.

  state, summary = loop.train(
      workdir, config=config, init_state=lambda: jax.jit(init)(jax.random.key(0)),
      step_fn=jax.jit(train_step, donate_argnums=0),
      batch_fn=lambda step: (images[batch_indices(step, len(images), 64, seed=0)],),
      num_steps=1000, signature=dict(width=64), log_every=50, checkpoint_every=500,
      hooks=[loop.Hook(sample_grid, every=500)])

A hook is `fn(step, state) -> dict | None`. Numpy arrays of ndim >= 2 in its result are images
for TensorBoard (uint8 [H, W] or [H, W, C]); the rest (numbers, and nested dicts and lists of
them) is a row of `log`, a JSON-lines file in the workdir, mirrored to TensorBoard under the
file's stem. A hook whose `log` is "metrics.jsonl" runs before the step's metrics row is
written and adds its values to that row (a held-out accuracy, say). Hooks with another log, or
none, run after the checkpoint is saved; a kill between the save and such a hook's row is
repaired on resume (the hook runs again on the restored state, which is the state it saw), so
a hook must be a function of (step, state) alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import time
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
import tqdm

from bigjax.training import checkpoint as ckpt_lib
from bigjax.training import distributed
from bigjax.training import prefetch as prefetch_lib
from bigjax.training import rundir
from bigjax.training import sharding as sharding_lib
from bigjax.training import writer as writer_lib

__all__ = ["ConfigMismatchError", "Hook", "METRICS_FILE", "environment", "train"]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"


class ConfigMismatchError(ValueError):
  """A finished run was started again with another config."""


@dataclasses.dataclass(frozen=True)
class Hook:
  """A periodic action of the loop.

  Attributes:
    fn: (step, state) -> a dict of scalars and images, or None; `step` counts the steps done.
    every: run after every `every`-th step (0: never, except at the end with `at_end`).
    at_end: also run after the last step of the run.
    log: the JSON-lines file (in the workdir) its scalars go to; "metrics.jsonl" adds them to
      the step's metrics row; None: images only (TensorBoard).
  """

  fn: Callable[[int, Any], Mapping[str, Any] | None]
  every: int
  at_end: bool = True
  log: str | None = None

  def is_due(self, done: int, last: bool) -> bool:
    return bool((self.every and done % self.every == 0) or (self.at_end and last))


def environment() -> dict[str, Any]:
  """Where a run ran: its devices, JAX version, backend, platform and CPU count (for run
  summaries)."""
  return dict(
      devices=[str(d) for d in jax.devices()],
      jax=jax.__version__,
      backend=jax.default_backend(),
      platform=platform.platform(),
      cpu_count=os.cpu_count(),
  )


def _abstract(init_state: Callable[[], Any], sharding) -> Any:
  shapes = jax.eval_shape(init_state)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def config_as_json(config: Any) -> Any:
  """The run's config as JSON values: an ml_collections.ConfigDict (or anything with
  `to_json()`) through its JSON, a JSON-serialisable mapping as it is."""
  return json.loads(config.to_json()) if hasattr(config, "to_json") else config


def _differences(held: Any, now: Any, prefix: str = "") -> list[str]:
  """The fields of two JSON configs that both have and that differ ("name: held there, now")."""
  if isinstance(held, dict) and isinstance(now, dict):
    return [
        d
        for k in sorted(set(held) & set(now))
        for d in _differences(held[k], now[k], f"{prefix}{k}.")
    ]
  return [] if held == now else [f"{prefix[:-1]}: {held!r} there, {now!r} now"]


def _check_finished_config(path: str, config_json: Any, unchecked: Sequence[str]) -> None:
  """Raises ConfigMismatchError when the config.json of a finished run differs from
  `config_json` in a field both have (fields in `unchecked`, dotted, may differ)."""
  try:
    with open(path) as f:
      held = json.load(f)
  except (OSError, ValueError):
    return  # absent or torn: the finished run is described again by this config
  if not isinstance(held, dict) or not isinstance(config_json, dict):
    return
  diff = [
      d for d in _differences(held, config_json) if not d.split(":")[0].startswith(tuple(unchecked))
  ]
  if diff:
    raise ConfigMismatchError(
        f"{os.path.dirname(path)} holds a finished run of another config ({'; '.join(diff[:6])}"
        f"{'; ...' if len(diff) > 6 else ''}; {path} describes it): nothing would be trained, "
        "yet its results would be described as this config's. Rerun with the config that "
        "wrote it, or train the new config into a new --workdir (to start this one over, "
        "delete it first)."
    )


def _logged_steps(path: str) -> set[int]:
  """The steps of a JSON-lines log's rows (empty when the file is absent)."""
  steps = set()
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        with contextlib.suppress(ValueError, KeyError, TypeError):
          steps.add(int(json.loads(line)["step"]))
  return steps


def _postfix(row: Mapping[str, float], names: Sequence[str]) -> dict[str, str]:
  return {name: f"{row[name]:.4g}" for name in names if name in row}


def train(
    workdir: str,
    *,
    config: Any,
    init_state: Callable[[], Any],
    step_fn: Callable[..., tuple[Any, Mapping[str, jax.Array]]],
    batch_fn: Callable[[int], tuple],
    num_steps: int,
    signature: Mapping[str, Any],
    log_every: int,
    checkpoint_every: int,
    keep_checkpoints: int = 3,
    hooks: Sequence[Hook] = (),
    signature_defaults: Mapping[str, Any] | None = None,
    state_sharding: jax.sharding.Sharding | None = None,
    prefetch: int = 0,
    examples_per_step: int | None = None,
    examples_name: str = "examples",
    outdated_by_training: Sequence[str] = (),
    progress: bool = True,
    description: str = "training",
    show: Sequence[str] = (),
    fix: str = "Lower the learning rate.",
    experiment: str | None = None,
    unchecked_config_fields: Sequence[str] = (),
    on_start: Callable[[int | None], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
  """Trains (or resumes) a state in `workdir` for `num_steps` steps.

  Args:
    workdir: the run's directory (created if needed): config.json, checkpoints/,
      metrics.jsonl, the hooks' logs and TensorBoard event files.
    config: the run's config (an ml_collections.ConfigDict, or anything with `to_json()`, or a
      JSON-serialisable mapping), written to config.json.
    init_state: () -> a fresh state pytree with a `step` leaf (the steps taken; jax arrays,
      typed PRNG keys stored as key data), e.g. `lambda: jax.jit(init)(key)`. Traced by
      `jax.eval_shape` for the restore, called only when nothing is restored.
    step_fn: (state, *batch) -> (state, metrics): the jitted step (donate the state); metrics
      a dict of scalars.
    batch_fn: step -> the tuple of step_fn's arguments after the state, for the step counted
      from 0; a pure function of the step (it may run ahead in a thread, see `prefetch`).
    num_steps: train until the state has taken this many steps.
    signature: JSON dict of what a checkpoint must agree on to be restored (model shapes).
    log_every, checkpoint_every: a metrics row every N steps, a checkpoint every N steps;
      both also after the last step.
    keep_checkpoints: the newest checkpoints kept.
    hooks: periodic actions (`Hook`).
    signature_defaults: signature fields added after older checkpoints were written, with the
      values those checkpoints had (bigjax.training.checkpoint.Checkpointer).
    state_sharding: where the state lives (default: the first local device); the restore and
      the initialisation place it there.
    prefetch: batches computed ahead by a host thread (0: on demand).
    examples_per_step: the global batch size, to log `<examples_name>_per_sec`.
    examples_name: e.g. "images".
    outdated_by_training: files in the workdir that describe a finished run (a summary) and
      are removed when training continues past the restored step.
    progress: show a tqdm progress bar.
    description: the progress bar's label.
    show: metrics shown on the progress bar.
    fix: what to change when a metric becomes non-finite (for the error message).
    experiment: the experiment's name, recorded in the run directory's marker
      (`bigjax.training.rundir.claim`); a directory of another experiment is refused.
    unchecked_config_fields: config fields (dotted prefixes) a finished run may be started
      again with other values of (a sweep's grid, say); any other difference is refused.
    on_start: (restored step or None) -> None, called once the state is restored or
      initialised and before the loop writes anything: for the trainer's own files that only
      a run that started should write (a model's config beside its weights, say).

  Returns:
    (state, summary): the final state and {step, resumed_from (the restored step or None),
    seconds, compile_seconds (the first step, compilation included; None when no step ran),
    compilations (jit's count of compiled variants of step_fn, or None)}.

  Raises:
    bigjax.training.rundir.NotARunDirectoryError: the workdir is a file, a model directory, a
      folder holding anything but a run, or another experiment's run (nothing is changed).
    bigjax.training.rundir.RunLockedError: another process is writing the workdir.
    ConfigMismatchError: the workdir holds a finished run of another config (nothing is
      changed).
    bigjax.training.checkpoint.SignatureMismatchError: the workdir holds another model's
      checkpoints (nothing in it is changed).
    bigjax.training.checkpoint.NonFiniteLossError: a metric became NaN or inf (nothing after
      it is saved).
  """
  t0 = time.perf_counter()
  workdir = os.path.abspath(os.fspath(workdir))
  # Process 0 writes the run's files (and holds its lock); every process takes part in the claim
  # so that a refusal stops them all.
  with rundir.claim(workdir, experiment=experiment):
    main_process = jax.process_index() == 0
    return _train(
        workdir,
        t0=t0,
        main_process=main_process,
        config=config,
        init_state=init_state,
        step_fn=step_fn,
        batch_fn=batch_fn,
        num_steps=num_steps,
        signature=signature,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        hooks=hooks,
        signature_defaults=signature_defaults,
        state_sharding=state_sharding,
        prefetch=prefetch,
        examples_per_step=examples_per_step,
        examples_name=examples_name,
        outdated_by_training=outdated_by_training,
        progress=progress,
        description=description,
        show=show,
        fix=fix,
        unchecked_config_fields=unchecked_config_fields,
        on_start=on_start,
    )


def _train(
    workdir,
    *,
    t0,
    main_process,
    config,
    init_state,
    step_fn,
    batch_fn,
    num_steps,
    signature,
    log_every,
    checkpoint_every,
    keep_checkpoints,
    hooks,
    signature_defaults,
    state_sharding,
    prefetch,
    examples_per_step,
    examples_name,
    outdated_by_training,
    progress,
    description,
    show,
    fix,
    unchecked_config_fields,
    on_start,
):
  """`train` inside the claim of its workdir."""
  created = (
      [os.path.join(workdir, "checkpoints")]
      if not os.path.isdir(os.path.join(workdir, "checkpoints"))
      else []
  )
  sharding = state_sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  checkpointer = ckpt_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      signature=signature,
      max_to_keep=keep_checkpoints,
      signature_defaults=signature_defaults,
  )
  try:
    # The trainer owns the workdir: unreadable newer steps are pruned so it can save them again.
    restored_step, state = checkpointer.restore_latest(_abstract(init_state, sharding), prune=True)
    if state is None:
      state = sharding_lib.put(init_state(), sharding)
    start = int(sharding_lib.local_view(state.step))
    config_json = config_as_json(config)
    refusal = None
    if main_process and start >= num_steps:
      try:
        _check_finished_config(  # (how the processes join is not what was trained)
            os.path.join(workdir, CONFIG_FILE),
            config_json,
            ("distributed", *unchecked_config_fields),
        )
      except ConfigMismatchError as e:
        refusal = e
    if not distributed.agree(refusal is None):  # every process stops with process 0
      raise refusal or ConfigMismatchError(
          f"process 0 found a finished run of another config in {workdir} (its error says "
          "which fields differ)."
      )
    if on_start is not None:
      on_start(restored_step)
  except Exception:
    checkpointer.close()
    for d in reversed(created):  # the folders this call made, if they are still empty
      if main_process and os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)
    raise
  logs = [METRICS_FILE] + sorted({h.log for h in hooks if h.log and h.log != METRICS_FILE})
  if main_process:
    ckpt_lib.write_json(os.path.join(workdir, CONFIG_FILE), config_json)
    if start < num_steps:
      for name in outdated_by_training:
        if os.path.exists(os.path.join(workdir, name)):
          os.remove(os.path.join(workdir, name))
    for name in logs:
      ckpt_lib.truncate_log(os.path.join(workdir, name), start)
  writer = writer_lib.MetricWriter(workdir, start_step=start, enabled=main_process)

  def run_hooks(selected, done):
    for hook in selected:
      # Each process's own copy of the (replicated) state: a hook evaluates or samples with no
      # collective, so processes cannot deadlock in it.
      result = hook.fn(done, sharding_lib.local_view(state)) or {}
      is_image = lambda v: isinstance(v, np.ndarray) and v.ndim >= 2
      writer.images(done, {k: v for k, v in result.items() if is_image(v)})
      scalars = {k: v for k, v in result.items() if not is_image(v)}
      yield hook, scalars

  pending, last_saved = [], restored_step
  compile_seconds, window = None, (time.perf_counter(), start)
  bar = tqdm.tqdm(
      total=num_steps,
      initial=min(start, num_steps),
      disable=not progress or not main_process,  # one bar: process 0's
      desc=description,
      unit="step",
      dynamic_ncols=True,
  )
  batches = prefetch_lib.Prefetcher(batch_fn, stop=num_steps, size=prefetch)
  try:
    if restored_step is not None:
      # A kill between the restored step's checkpoint and its hooks cut their rows: the hooks
      # run again on the restored state (the one they would have seen).
      due = [h for h in hooks if h.log and h.log != METRICS_FILE]
      due = [h for h in due if h.is_due(start, start == num_steps)]
      due = [h for h in due if start not in _logged_steps(os.path.join(workdir, h.log))]
      for hook, scalars in run_hooks(due, start):
        logging.warning(
            "bigjax.training: %s had no row of the restored step %d (a kill between its "
            "checkpoint and the hook); computed it again.",
            os.path.join(workdir, hook.log),
            start,
        )
        if scalars:
          writer.row(hook.log, dict(step=start, **scalars))
    for step in range(start, num_steps):
      first = compile_seconds is None
      if first:
        t_first = time.perf_counter()
      state, metrics = step_fn(state, *batches.get(step))
      if first:
        jax.block_until_ready(state)
        compile_seconds = time.perf_counter() - t_first
        window = (time.perf_counter(), step + 1)
      pending.append(metrics)
      bar.update(1)
      done = step + 1
      last = done == num_steps
      save = done % checkpoint_every == 0 or last
      due = [h for h in hooks if h.is_due(done, last)]
      if not (done % log_every == 0 or last or save or due):
        continue
      # Every step since the last check is checked before anything is saved.
      means = ckpt_lib.average_metrics(
          jax.device_get(sharding_lib.local_view(pending)),
          last_step=done,
          last_saved=last_saved,
          directory=checkpointer.directory,
          fix=fix,
          resumed_from=restored_step,
      )
      pending = []
      now = time.perf_counter()
      rate = (done - window[1]) / max(now - window[0], 1e-9)
      row = dict(step=done, **means)
      for _, scalars in run_hooks([h for h in due if h.log == METRICS_FILE], done):
        row.update(scalars)
      row["steps_per_sec"] = rate
      if examples_per_step:
        row[f"{examples_name}_per_sec"] = rate * examples_per_step
      row["seconds"] = now - t0
      window = (now, done)
      writer.row(METRICS_FILE, row)
      bar.set_postfix(_postfix(row, show))
      if save:
        checkpointer.save(done, state)
        last_saved = done
      for hook, scalars in run_hooks([h for h in due if h.log != METRICS_FILE], done):
        if hook.log and scalars:
          writer.row(hook.log, dict(step=done, **scalars))
  except BaseException:
    # The error that stopped the run is the one to report: a close failing after it (a full
    # disk leaves Orbax's and TensorBoard's writers broken) must not replace it.
    for close in (batches.close, bar.close, checkpointer.close, writer.close):
      try:
        close()
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("bigjax.training: closing after the error failed too: %r", e)
    raise
  batches.close()
  bar.close()
  checkpointer.close()
  writer.close()
  # Every file process 0 wrote is complete before any process reads it (a summary of the logs).
  distributed.barrier("bigjax.training.train: done")
  cache_size = getattr(step_fn, "_cache_size", None)
  compilations = cache_size() if cache_size else None
  if compilations and compilations > 1:
    logging.warning(
        "the train step compiled %d times (expected once): an input changed shape, "
        "dtype or sharding between steps.",
        compilations,
    )
  return state, dict(
      step=int(sharding_lib.local_view(state.step)),
      resumed_from=restored_step,
      seconds=time.perf_counter() - t0,
      compile_seconds=compile_seconds,
      compilations=compilations,
  )
