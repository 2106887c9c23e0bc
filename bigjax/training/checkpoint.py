"""Orbax checkpoints of a training state that survive kill -9 and refuse the wrong model.

Each step is saved as two items: `state` (any pytree of arrays) and `meta` (JSON: the model
signature, so a workdir written by a different model shape gives a clear error instead of an
Orbax shape mismatch deep in a restore). Saving is asynchronous; a step becomes visible only
once it is complete, so a kill during a save leaves the previous step restorable. A kill can
also hit the deletion of an *old* step (`max_to_keep`), which stays listed but fails to
restore (measured with orbax-checkpoint 0.12.8), so `restore_latest` falls back to older steps.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "NonFiniteLossError", "SignatureMismatchError", "abstract",
           "average_metrics", "truncate_log", "write_json"]


class SignatureMismatchError(ValueError):
  """The checkpoint was written by a model of another shape than the one being restored."""


def _diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  keys = sorted(set(saved) | set(current))
  return [f"{k}: checkpoint {saved.get(k, '<absent>')!r}, now {current.get(k, '<absent>')!r}"
          for k in keys if saved.get(k) != current.get(k)]


class Checkpointer:
  """Saves and restores (state, signature) pairs under `directory` with Orbax.

  Args:
    directory: where the numbered step folders go (created if needed).
    signature: JSON-serialisable dict describing the model and data shapes; restoring a
      checkpoint whose signature differs raises SignatureMismatchError.
    max_to_keep: how many of the newest steps to keep.
    signature_defaults: signature fields added after older checkpoints were written, with the
      values those checkpoints had: a saved signature without such a field matches when the
      current value is that default (so older runs still restore).
  """

  def __init__(self, directory: str, *, signature: Mapping[str, Any], max_to_keep: int = 3,
               signature_defaults: Mapping[str, Any] | None = None):
    self.directory = directory
    self.signature = dict(signature)
    self.signature_defaults = dict(signature_defaults or {})
    self._manager = ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any) -> None:
    """Starts an asynchronous save of `state` at `step` (call `wait` before reading it)."""
    saved = self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(self.signature)))
    if not saved:
      raise RuntimeError(f"Orbax refused to save step {step} in {self.directory} (steps there: "
                         f"{self.all_steps()}); a step at or after it already exists.")

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def check_signature(self, step: int) -> None:
    """Raises SignatureMismatchError if `step` was saved with another signature."""
    saved = self._manager.restore(int(step),
                                  args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    saved = {**{k: v for k, v in self.signature_defaults.items() if k in self.signature},
             **saved}
    if saved != self.signature:
      raise SignatureMismatchError(
          f"the checkpoint at step {step} in {self.directory} was written by a different "
          f"model or data shape ({'; '.join(_diff(saved, self.signature))}). Use a new "
          f"--workdir, or the config that wrote this one.")

  def restore_latest(self, abstract_state: Any) -> tuple[int | None, Any]:
    """Restores the newest restorable step.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) like the saved state.

    Returns:
      (step, state), or (None, None) when no step exists.

    Raises:
      SignatureMismatchError: the newest readable checkpoint belongs to another model.
      RuntimeError: steps exist but none can be restored.
    """
    steps = self.all_steps()
    errors = []
    for step in reversed(steps):
      try:
        self.check_signature(step)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        if errors:
          logging.warning("bigjax.training.checkpoint: restored step %d after newer steps "
                          "failed: %s", step, "; ".join(errors))
          # Remove the unreadable newer steps, or Orbax would refuse to save them again (it
          # never saves a step at or before its latest) and every resume would fall back here.
          for bad in (s for s in steps if s > step):
            self._manager.delete(bad)
          self._manager.reload()
        return step, restored.state
      except SignatureMismatchError:
        raise
      except Exception as e:  # an incomplete or half-deleted step: try the next older one
        errors.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    if steps:
      raise RuntimeError(f"no checkpoint in {self.directory} could be restored: "
                         + "; ".join(errors))
    return None, None


class NonFiniteLossError(FloatingPointError):
  """A training metric became NaN or inf; the run stopped before saving anything after it."""


def average_metrics(values: list[dict[str, Any]], *, last_step: int, last_saved: int | None,
                    directory: str, fix: str) -> dict[str, float]:
  """Means of a window of per-step metrics, after checking every step of it.

  Trainers fetch their metrics from the device once per log window; this checks each step of
  the window before the caller saves anything, so a NaN never reaches a checkpoint.

  Args:
    values: one dict of scalar metrics per step, the last one of step `last_step`.
    last_step: the step of values[-1] (steps counted from 1).
    last_saved: the newest checkpoint's step (None: none yet), for the message.
    directory: the checkpoint directory, for the message.
    fix: what to change, e.g. "Lower learning_rate.".

  Returns:
    {name: mean over the window}.

  Raises:
    NonFiniteLossError: naming the first step with a NaN or inf metric and those metrics.
  """
  for offset, m in enumerate(values):
    bad = [k for k, v in m.items() if not np.isfinite(v)]
    if bad:
      raise NonFiniteLossError(
          f"non-finite {', '.join(bad)} at step {last_step - len(values) + offset + 1}; the run "
          f"stopped without saving. The last good checkpoint is step {last_saved} in "
          f"{directory}. {fix}")
  return {k: float(np.mean([m[k] for m in values])) for k in values[0]}


def abstract(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a pytree of arrays, to restore into."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as JSON to `path` atomically (a temporary file, then a rename), so a kill
  mid-write never leaves a truncated file. In a multi-process run only process 0 writes (the
  run's files are shared); the others return."""
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def truncate_log(path: str, step: int) -> None:
  """Drops the rows of a JSON-lines log (`{"step": ..., ...}` per line) past `step`: those a run
  wrote after the checkpoint it now resumes from. A blank or half-written row (the last one of
  a killed run) is dropped too; kept rows end their line. Missing file: nothing to do."""
  if not os.path.exists(path):
    return
  rows = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["step"] <= step:
          rows.append(line if line.endswith("\n") else line + "\n")
      except (json.JSONDecodeError, KeyError, TypeError):
        pass
  with open(path + ".tmp", "w") as f:
    f.writelines(rows)
  os.replace(path + ".tmp", path)
