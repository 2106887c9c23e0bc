"""Loading a run a trainer wrote: its config (upgraded if older code wrote it) and its state.

Every experiment describes its runs once, as a `RunKind`: what it is called, the command that
trains one, its state's shapes, its checkpoint signature and its `migrate(config)`, which
gives a config.json written by older code the fields added since, set to what that code did
(the one place for such upgrades, as big_vision keeps its `fix_old_checkpoints`). `load` then
reads any run of that kind with the same checks and messages:

  kind = runs.RunKind(name="MNIST classifier", train_command=command, signature=signature,
                      abstract_state=abstract_state, migrate=migrate,
                      summary_file="classifier.json")
  run = runs.load("/tmp/clf", kind)       # run.config, run.state, run.step, run.summary

A run with a `summary_file` counts as finished only with that file, and the file must describe
the newest readable checkpoint; a run without one loads from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple
from collections.abc import Callable, Mapping

import jax
import ml_collections

from bigjax.training import checkpoint as ckpt_lib

__all__ = ["Run", "RunKind", "WrongRunError", "add_defaults", "load", "read_config"]

CONFIG_FILE = "config.json"


def add_defaults(
    config: ml_collections.ConfigDict, defaults: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """Sets the fields of `defaults` ({"group.name": value}) that `config` lacks, in place (for a
  RunKind's `migrate`; a missing group is created); returns the config."""
  with config.unlocked():
    for key, value in defaults.items():
      *groups, name = key.split(".")
      node = config
      for group in groups:
        if group not in node:
          node[group] = ml_collections.ConfigDict()
        node = node[group]
      if name not in node:
        node[name] = value
  return config


def _unchanged(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return config


@dataclasses.dataclass(frozen=True)
class RunKind:
  """What the runs of one experiment look like on disk.

  Attributes:
    name: what a run is called in messages, e.g. "MNIST classifier".
    train_command: (workdir, variant or None) -> the command that trains such a run there.
    abstract_state: config -> the state's shapes (`jax.eval_shape` of its initialisation).
    signature: config -> the checkpoint signature (`bigjax.training.checkpoint`).
    migrate: config -> config: fills in the fields added since older runs were written.
    signature_defaults: signature fields added since older checkpoints, with their values then.
    summary_file: the file a finished run has (describing its last step); None: a run is
      usable from any checkpoint.
    fields: config fields ("group.name") every run of this kind has, to tell its runs from
      other experiments' (checked before `migrate`).
  """

  name: str
  train_command: Callable[[str, str | None], str]
  abstract_state: Callable[[ml_collections.ConfigDict], Any]
  signature: Callable[[ml_collections.ConfigDict], Mapping[str, Any]]
  migrate: Callable[[ml_collections.ConfigDict], ml_collections.ConfigDict] = _unchanged
  signature_defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  summary_file: str | None = None
  fields: tuple[str, ...] = ()


class Run(NamedTuple):
  """A loaded run: its (migrated) config, its restored state and step, and its summary (the
  kind's summary file, or None)."""

  config: ml_collections.ConfigDict
  state: Any
  step: int
  summary: dict[str, Any] | None
  workdir: str


# What bigjax's own experiments leave in a run directory, to say what a directory of another
# kind is (only for error messages): (file or folder, what it is).
_LAYOUTS = (
    ("vq.json", "an MNIST vector quantiser (experiments.vq_mnist)"),
    ("classifier.json", "an MNIST classifier (experiments.mnist_classifier)"),
    ("vq", "a permutation-model run (experiments.plm_mnist)"),
    ("samples", "a BigLearn-GAN run (experiments.biglearn_gan)"),
    ("surfaces.npz", "a loss-surface run (experiments.loss_surfaces)"),
    ("metrics.npz", "a 25-GMM run (experiments.gmm25)"),
)


class WrongRunError(ValueError):
  """The directory holds a run of another kind than the one asked for."""


def _has(config: ml_collections.ConfigDict, key: str) -> bool:
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return True


def read_config(workdir: str, kind: RunKind) -> ml_collections.ConfigDict:
  """The run's config.json, migrated to the current fields.

  Raises:
    FileNotFoundError: no such directory, or no config.json in it; the message gives the
      command that trains one.
    WrongRunError: the directory holds another kind of run (the message says which, where it
      can tell).
  """
  workdir = os.path.abspath(os.fspath(workdir))
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    why = "does not exist" if not os.path.isdir(workdir) else f"has no {CONFIG_FILE}"
    raise FileNotFoundError(
        f"no {kind.name} in {workdir} (the directory {why}); train one "
        f"with `{kind.train_command(workdir, None)}`."
    )
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  missing = [key for key in kind.fields if not _has(config, key)]
  if missing:
    what = next(
        (desc for name, desc in _LAYOUTS if os.path.exists(os.path.join(workdir, name))),
        "another experiment's run",
    )
    raise WrongRunError(
        f"{workdir} holds no {kind.name}: it looks like {what} (its "
        f"config.json has no {', '.join(missing)}). Give the directory of a "
        f"{kind.name}, or train one with "
        f"`{kind.train_command('DIR', None)}`."
    )
  return kind.migrate(config)


def load(
    workdir: str,
    kind: RunKind,
    *,
    check: Callable[[ml_collections.ConfigDict, dict | None], None] | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> Run:
  """Reads the run in `workdir`: config, summary (if the kind has one) and newest checkpoint.

  Args:
    workdir: the run's directory.
    kind: the experiment's RunKind.
    check: optional (config, summary) -> None, called before the state is restored, that
      raises for a run the caller cannot use (another image size, say).
    sharding: where to put the state (default: the first local device).

  Returns:
    Run(config, state, step, summary, workdir).

  Raises:
    FileNotFoundError: no run, an unfinished one, or no checkpoint; the message says which
      command trains or finishes it.
    RuntimeError: the summary describes another step than the newest readable checkpoint.
    bigjax.training.checkpoint.SignatureMismatchError: the checkpoints belong to another model.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  config = read_config(workdir, kind)
  command = kind.train_command(workdir, config.get("variant"))
  summary = None
  if kind.summary_file:
    path = os.path.join(workdir, kind.summary_file)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"the {kind.name} in {workdir} has not finished training (no {kind.summary_file}); "
          f"rerun the command that started it, e.g. `{command}` (plus its --config.* "
          "overrides), to resume it."
      )
    with open(path) as f:
      summary = json.load(f)
  if check is not None:
    check(config, summary)
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(
        f"{workdir} has {kind.summary_file or CONFIG_FILE} but no "
        f"checkpoints/ folder; train the {kind.name} again with "
        f"`{command}`."
    )
  device = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), kind.abstract_state(config)
  )
  # Read-only: a reader never creates, rewrites or deletes anything in a run directory; an
  # unreadable newest step is skipped in memory (with a warning naming the step used).
  checkpointer = ckpt_lib.Checkpointer(
      checkpoints,
      signature=kind.signature(config),
      signature_defaults=kind.signature_defaults,
      read_only=True,
  )
  try:
    step, state = checkpointer.restore_latest(abstract)
  finally:
    checkpointer.close()
  if state is None:
    raise FileNotFoundError(
        f"no checkpoint in {checkpoints}; train the {kind.name} with "
        f"`{command}` (with the run's --config.* overrides)."
    )
  if summary is not None and "steps" in summary and step != summary["steps"]:
    raise RuntimeError(
        f"the newest readable checkpoint in {checkpoints} is step {step}, but "
        f"{kind.summary_file} describes step {summary['steps']}; rerun "
        f"`{command}` (with its --config.* overrides) to finish and evaluate "
        "the run."
    )
  return Run(config=config, state=state, step=int(step), summary=summary, workdir=workdir)
