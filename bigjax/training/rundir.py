"""Run directories: marked as runs, refused when they hold anything else, written by one process.

A trainer claims its workdir before it writes anything there (`bigjax.training.train` does so
itself; a trainer that writes files of its own before the loop claims it first, and the loop
reuses that claim):

  with rundir.claim(workdir, experiment="finetune"):
    ...  # write into workdir, call bigjax.training.train(workdir, ...)

A claim
  * refuses a path that is a file, the root directory, or a model directory (a Hugging Face
    config.json beside its weights: a run written there would overwrite the model's config);
  * refuses a directory that holds anything but a run: a run is marked by MARKER_FILE (written
    by the claim, with the experiment's name); a directory without the marker is a run written
    by older code when it has config.json beside checkpoints/ or metrics.jsonl; a directory
    holding only runs (a quantiser trained into WORKDIR/vq before the model) is accepted too;
  * refuses a run of another experiment (when both name theirs);
  * takes an exclusive `fcntl.flock` on LOCK_FILE for as long as the claim is held: a second
    process writing the same directory gets RunLockedError at once. The kernel releases the
    lock when its process dies, so a lock left by a kill -9 is no lock (the file alone is
    harmless).

Claims nest within a process (the loop inside a trainer's claim reuses it). A claim that fails,
or a start that fails before anything else was written, leaves the directory as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator

import jax

from bigjax.training import distributed

__all__ = [
    "ClaimRefusedError",
    "LOCK_FILE",
    "MARKER_FILE",
    "NotARunDirectoryError",
    "RunLockedError",
    "claim",
    "is_run",
]

MARKER_FILE = "bigjax_run.json"
LOCK_FILE = ".bigjax_run.lock"
# A Hugging Face model directory: config.json beside one of these.
_MODEL_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tf_model.h5",
    "flax_model.msgpack",
)


class NotARunDirectoryError(ValueError):
  """The workdir is not a run directory: a file, a model or data directory, another folder."""


class RunLockedError(RuntimeError):
  """Another process is writing the run directory."""


class ClaimRefusedError(RuntimeError):
  """Process 0 of a multi-process run refused the run directory (its own error says why)."""


# realpath -> [open lock file, nesting depth]: this process's claims.
_HELD: dict[str, list] = {}


def _marker(workdir: str) -> dict | None:
  path = os.path.join(workdir, MARKER_FILE)
  try:
    with open(path) as f:
      value = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise NotARunDirectoryError(
        f"{path} is unreadable ({type(e).__name__}: {e}); it marks a bigjax run directory. If "
        f"{workdir} holds a run, write {{}} into {MARKER_FILE}; otherwise use another --workdir."
    ) from e
  return value if isinstance(value, dict) else {}


def is_run(path: str) -> bool:
  """Whether `path` is a run directory: marked, or a run older code wrote (config.json beside
  checkpoints/ or metrics.jsonl)."""
  if not os.path.isdir(path):
    return False
  if os.path.isfile(os.path.join(path, MARKER_FILE)):
    return True
  has = lambda name: os.path.exists(os.path.join(path, name))
  return has("config.json") and (has("checkpoints") or has("metrics.jsonl"))


def _check(workdir: str, experiment: str | None) -> None:
  """Raises NotARunDirectoryError unless `workdir` is absent, empty or a run (of `experiment`)."""
  if os.path.lexists(workdir) and not os.path.isdir(workdir):
    raise NotARunDirectoryError(
        f"--workdir {workdir} is a file, not a directory; give the directory the run should be "
        "written to (a new one is created)."
    )
  if not os.path.isdir(workdir):
    return
  if os.path.realpath(workdir) == os.path.realpath(os.sep):
    raise NotARunDirectoryError(
        f"--workdir {workdir} is the root directory; give a directory for the run alone."
    )
  entries = set(os.listdir(workdir)) - {LOCK_FILE}
  model = [n for n in _MODEL_FILES if n in entries]
  if "config.json" in entries and model:
    raise NotARunDirectoryError(
        f"--workdir {workdir} is a model directory (config.json beside {model[0]}): a run "
        "would overwrite its config.json. Give a new directory for the run (a model is read "
        "through --config.model_dir)."
    )
  marker = _marker(workdir)
  if marker is not None:
    held = marker.get("experiment")
    if experiment and held and held != experiment and entries != {MARKER_FILE}:
      raise NotARunDirectoryError(
          f"--workdir {workdir} holds a run of another experiment ({MARKER_FILE}: "
          f"experiment {held!r}, not {experiment!r}); give a new directory."
      )
    return
  if not entries or is_run(workdir):
    return
  others = sorted(n for n in entries if not is_run(os.path.join(workdir, n)))
  if others:
    shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    raise NotARunDirectoryError(
        f"--workdir {workdir} is not empty and holds no run ({MARKER_FILE} is absent; it holds "
        f"{shown}); a run would write config.json, metrics.jsonl and result files there. Give a "
        "new or empty directory."
    )


def _lock(workdir: str):
  path = os.path.join(workdir, LOCK_FILE)
  f = open(path, "a")  # held open for as long as the claim
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    f.close()
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      raise RunLockedError(
          f"another process is writing the run in {workdir} (it holds the lock on {path}); "
          "wait for it to finish or stop it, or use another --workdir. (A killed process "
          "holds no lock: the file itself is harmless.)"
      ) from e
    raise
  return f


@contextlib.contextmanager
def claim(workdir: str, *, experiment: str | None = None) -> Iterator[str]:
  """Checks, locks and marks `workdir` (created if needed) for the duration of the block;
  yields its absolute path.

  In a multi-process run (bigjax.training.distributed) every process calls it: process 0 checks,
  locks and marks the directory, and the others wait for its verdict and stop with it when it
  refuses (they write nothing there themselves).

  Args:
    workdir: the run's directory.
    experiment: the experiment's name, recorded in MARKER_FILE; a directory marked with another
      experiment's name is refused (None: any, and "run" is recorded).

  Raises:
    NotARunDirectoryError: a file, the root, a model directory, a directory holding anything
      but a run, or another experiment's run; nothing is created or changed.
    RunLockedError: another process holds the directory.
    ClaimRefusedError: (processes other than 0 of a multi-process run) process 0 refused it.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  key = os.path.realpath(workdir)
  if key in _HELD:  # nested in this process's claim: every process nests alike
    _HELD[key][1] += 1
    try:
      yield workdir
    finally:
      _HELD[key][1] -= 1
    return
  if not jax.distributed.is_initialized() or jax.process_count() == 1:
    with _claim_here(workdir, key, experiment):
      yield workdir
    return
  if jax.process_index() != 0:
    if not distributed.agree(False):
      raise ClaimRefusedError(
          f"process 0 refused to write {workdir} (its error says why); this process stops too."
      )
    _HELD[key] = [None, 1]
    try:
      yield workdir
    finally:
      del _HELD[key]
    return
  with contextlib.ExitStack() as stack:
    try:
      stack.enter_context(_claim_here(workdir, key, experiment))
    except BaseException:
      distributed.agree(False)
      raise
    distributed.agree(True)
    yield workdir


@contextlib.contextmanager
def _claim_here(workdir: str, key: str, experiment: str | None) -> Iterator[None]:
  """`claim` in the process that writes the run."""
  _check(workdir, experiment)
  created = not os.path.isdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK):
    raise PermissionError(
        f"{workdir} is not writable: a trainer writes its checkpoints, logs and config.json "
        "there. Train into a writable --workdir (tools that only read a run, such as "
        "evaluation, work on a read-only one)."
    )
  try:
    lock = _lock(workdir)
  except BaseException:
    _remove_if_bare(workdir, created)
    raise
  _HELD[key] = [lock, 1]
  old_run = False
  try:
    _check(workdir, experiment)  # again, now that no other process can change it
    marker = _marker(workdir)
    # An older run, unmarked: marked only once this start succeeds in it (a start refused
    # there, by its checkpoints' signature say, leaves it as it was).
    old_run = marker is None and is_run(workdir)
    if marker is None or experiment and marker.get("experiment") != experiment:
      # (another experiment's marker gets here only alone: what a failed start left)
      tmp = os.path.join(workdir, MARKER_FILE + ".tmp")
      with open(tmp, "w") as f:
        json.dump(dict(experiment=experiment or "run"), f)
      os.replace(tmp, os.path.join(workdir, MARKER_FILE))
    yield
  except BaseException:
    if old_run:
      with contextlib.suppress(OSError):
        os.remove(os.path.join(workdir, MARKER_FILE))
    _remove_if_bare(workdir, created)
    raise
  finally:
    del _HELD[key]
    lock.close()  # releases the flock


def _remove_if_bare(workdir: str, created: bool) -> None:
  """After a failed start: when the directory holds only the marker and the lock, removes them
  (and the directory, when the claim created it), so the start claimed nothing."""
  try:
    names = set(os.listdir(workdir))
    if names <= {MARKER_FILE, LOCK_FILE}:
      for name in names:
        os.remove(os.path.join(workdir, name))
      if created:
        os.rmdir(workdir)
  except OSError:
    pass
