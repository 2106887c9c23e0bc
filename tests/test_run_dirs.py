"""Run directories (bigjax.training.rundir and the loop around it): a kill between a checkpoint and
its hook's row, workdirs that are no run, one writer per run, a finished run started again with
another config, and the error that stopped a run not hidden by a failing close (issue 27)."""

import errno
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from bigjax import training
from bigjax.training import loop
from bigjax.training import rundir

# The linear-regression toy of test_training: a state, a step and a batch function.
from test_training import _batch, _init, _step


def _train(workdir, num_steps, lr=0.1, **kwargs):
  args = dict(
      config=ml_collections.ConfigDict(dict(lr=lr, grid=dict(seeds=[0]))),
      init_state=lambda: jax.jit(_init)(),
      step_fn=jax.jit(_step, donate_argnums=0),
      batch_fn=_batch,
      num_steps=num_steps,
      signature=dict(dim=3),
      log_every=2,
      checkpoint_every=4,
      progress=False,
  )
  args.update(kwargs)
  return training.train(str(workdir), **args)


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _norm(step, state):
  return dict(norm=float(jnp.linalg.norm(state.w)))


def _files(directory):
  return {
      os.path.relpath(os.path.join(r, n), directory): os.stat(os.path.join(r, n)).st_mtime_ns
      for r, _, names in os.walk(directory)
      for n in names
  }


class _Killed(BaseException):
  """Stands for a kill -9 right after a save: nothing after it runs (the loop's cleanup waits
  for the save, so the checkpoint is complete, as a kill after a finished save leaves it)."""


def test_a_kill_between_the_checkpoint_and_the_hook_is_repaired_on_resume(tmp_path):
  """Before: the hook's row of the checkpointed step was never written (dev.jsonl lost the epoch;
  a 1-step-per-epoch run had no dev.jsonl at all)."""
  whole = tmp_path / "whole"
  _train(whole, 8, hooks=[loop.Hook(_norm, every=4, log="eval.jsonl")])
  calls = []

  def dies_at_4(step, state):
    calls.append(step)
    if step == 4 and calls.count(4) == 1:
      raise _Killed()
    return _norm(step, state)

  for num_steps in (4, 8):  # the last step (at_end) and a middle one
    cut = tmp_path / f"cut{num_steps}"
    calls.clear()
    with pytest.raises(_Killed):
      _train(cut, num_steps, hooks=[loop.Hook(dies_at_4, every=4, log="eval.jsonl")])
    assert not os.path.exists(cut / "eval.jsonl") and os.path.isdir(cut / "checkpoints" / "4")
    _, summary = _train(cut, num_steps, hooks=[loop.Hook(dies_at_4, every=4, log="eval.jsonl")])
    assert summary["resumed_from"] == 4
    assert _rows(cut / "eval.jsonl") == _rows(whole / "eval.jsonl")[: num_steps // 4]
  # A resume whose rows are all there computes nothing again.
  calls.clear()
  _train(tmp_path / "cut8", 8, hooks=[loop.Hook(dies_at_4, every=4, log="eval.jsonl")])
  assert calls == []


def test_the_kill_in_a_real_process_is_repaired_too(tmp_path):
  """The same with os._exit(9) in a subprocess, right after the save of step 4 has finished."""
  script = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(__file__)!r})
import test_run_dirs as t
from bigjax.training import checkpoint, loop
save = checkpoint.Checkpointer.save
def save_then_die(self, step, state):
  save(self, step, state)
  self.wait()
  os._exit(9)
checkpoint.Checkpointer.save = save_then_die
t._train(sys.argv[1], 4, hooks=[loop.Hook(t._norm, every=4, log="eval.jsonl")])
"""
  cut = tmp_path / "cut"
  proc = subprocess.run([sys.executable, "-c", script, str(cut)], capture_output=True)
  assert proc.returncode == 9, proc.stderr.decode()[-2000:]
  assert not os.path.exists(cut / "eval.jsonl")
  _train(cut, 4, hooks=[loop.Hook(_norm, every=4, log="eval.jsonl")])
  _train(tmp_path / "whole", 4, hooks=[loop.Hook(_norm, every=4, log="eval.jsonl")])
  assert _rows(cut / "eval.jsonl") == _rows(tmp_path / "whole" / "eval.jsonl")


def test_a_run_directory_is_marked_and_old_unmarked_runs_are_accepted(tmp_path):
  _train(tmp_path / "run", 4)
  with open(tmp_path / "run" / rundir.MARKER_FILE) as f:
    assert json.load(f) == {"experiment": "run"}
  old = tmp_path / "old"  # what older code left: no marker
  _train(old, 4)
  os.remove(old / rundir.MARKER_FILE)
  (old / "reference.json").write_text("{}")
  before = _files(old)
  with pytest.raises(training.SignatureMismatchError):  # refused: left unmarked, unchanged
    _train(old, 8, signature=dict(dim=4), experiment="other")
  assert _files(old) == before
  _, summary = _train(old, 8)
  assert summary["resumed_from"] == 4 and rundir.is_run(str(old))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d: d.write_text("x"), "is a file"),
        (
            lambda d: (
                d.mkdir(),
                (d / "config.json").write_text("{}"),
                (d / "model.safetensors").write_bytes(b""),
            ),
            "is a model directory",
        ),
        (
            lambda d: (
                d.mkdir(),
                (d / "metrics.jsonl").write_text('{"step": 1}\n'),
                (d / "notes.txt").write_text("mine"),
            ),
            "not empty and holds no run",
        ),
        (
            lambda d: (
                d.mkdir(),
                (d / rundir.MARKER_FILE).write_text('{"experiment": "gan"}'),
                (d / "config.json").write_text("{}"),
            ),
            "another experiment",
        ),
    ],
    ids=["file", "model_dir", "user_folder", "other_experiment"],
)
def test_a_workdir_that_is_no_run_is_refused_unchanged(tmp_path, make, match):
  """Before: a file gave a raw FileExistsError; a model directory had its config.json replaced;
  any folder had its metrics.jsonl truncated and a config.json written."""
  workdir = tmp_path / "w"
  make(workdir)
  before = _files(tmp_path)
  with pytest.raises(training.NotARunDirectoryError, match=match):
    _train(workdir, 4, experiment="regression")
  assert _files(tmp_path) == before


def test_the_root_directory_is_refused():
  with pytest.raises(training.NotARunDirectoryError, match="root directory"):
    with rundir.claim("/"):
      pass


def test_a_failed_start_claims_nothing(tmp_path):
  def broken():
    raise RuntimeError("weights unreadable")

  with pytest.raises(RuntimeError, match="weights unreadable"):
    _train(tmp_path / "new", 4, init_state=broken)
  assert not os.path.exists(tmp_path / "new")
  (tmp_path / "empty").mkdir()
  with pytest.raises(RuntimeError, match="weights unreadable"):
    _train(tmp_path / "empty", 4, init_state=broken)
  assert os.listdir(tmp_path / "empty") == []


_HOLD = """
import fcntl, sys
f = open(sys.argv[1], "a")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_one_process_writes_a_run_and_a_killed_ones_lock_is_no_lock(tmp_path):
  """Before: two processes in one workdir both trained, every row logged twice."""
  workdir = tmp_path / "run"
  _train(workdir, 4)
  holder = subprocess.Popen(
      [sys.executable, "-c", _HOLD, str(workdir / rundir.LOCK_FILE)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
  )
  try:
    assert holder.stdout.readline().strip() == b"held"
    before = _files(tmp_path)
    with pytest.raises(training.RunLockedError, match="another process is writing"):
      _train(workdir, 8)
    assert _files(tmp_path) == before
  finally:
    holder.kill()  # SIGKILL: the kernel drops its lock
    holder.wait()
  _, summary = _train(workdir, 8)
  assert summary["resumed_from"] == 4 and [r["step"] for r in _rows(workdir / "metrics.jsonl")] == [
      2,
      4,
      6,
      8,
  ]


def test_a_finished_run_refuses_another_config(tmp_path):
  """Before: nothing trained, yet config.json claimed the new learning rate."""
  workdir = tmp_path / "run"
  _train(workdir, 4)
  config = (workdir / "config.json").read_text()
  with pytest.raises(training.ConfigMismatchError, match=r"lr: 0.1 there, 0.5 now.*new --workdir"):
    _train(workdir, 4, lr=0.5)
  assert (workdir / "config.json").read_text() == config
  _train(workdir, 4)  # the same config: fine
  grown = ml_collections.ConfigDict(dict(lr=0.1, grid=dict(seeds=[0, 1])))
  _train(workdir, 4, config=grown, unchecked_config_fields=("grid",))
  _, summary = _train(workdir, 8, lr=0.5)  # not finished under the new num_steps: continues
  assert summary["resumed_from"] == 4 and summary["step"] == 8


def test_the_error_that_stopped_a_run_is_not_hidden_by_a_failing_close(tmp_path, monkeypatch):
  """Before: a full disk ended in "handle is closed" from a writer closed after the ENOSPC."""
  from bigjax.training import writer as writer_lib

  def full(self, log, row):
    raise OSError(errno.ENOSPC, "No space left on device", log)

  def broken_close(self):
    raise ValueError("I/O operation on closed file: handle is closed")

  monkeypatch.setattr(writer_lib.MetricWriter, "row", full)
  monkeypatch.setattr(writer_lib.MetricWriter, "close", broken_close)
  with pytest.raises(OSError, match="No space left on device") as e:
    _train(tmp_path / "run", 4)
  assert e.value.errno == errno.ENOSPC
