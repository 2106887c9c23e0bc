"""Multi-process training for real: two JAX processes on 127.0.0.1 (CPU collectives over gloo),
started by `python -m bigjax.launch`, against the one-process run of the same global batch.

Each test starts real processes (a free port each, a timeout each; the launcher stops every
process it started, and a `finally` kills what a failed test left). The one-process references
train in this process, sharing the suite's compilation cache with the subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from bigjax.launch import free_port
from bigjax.training import runs
from conftest import subprocess_env
from configs import gan_mnist
from experiments import biglearn_gan, gan_setup
from test_readme import _block

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300
# Twelve GAN steps, a checkpoint every four: a kill after the first checkpoint lands mid-run.
GAN_OVERRIDES = dict(num_steps=12, checkpoint_every=4, sample_every=6, log_every=1)


def _gan_config():
  config = gan_mnist.get_config("smoke")
  config.update(GAN_OVERRIDES)
  return config


def _documented_launch() -> tuple[list[str], list[str]]:
  """docs/distributed.md's launch command: (the launcher's part, the command after `--`)."""
  words = shlex.split(_block("distributed.md", "launch", "bash").replace("\\\n", " "))
  split = words.index("--")
  return words[:split], words[split + 1 :]


def _gan_argv(workdir):
  """The documented command, in `workdir`, with GAN_OVERRIDES."""
  launcher, command = _documented_launch()
  assert launcher == ["python", "-m", "bigjax.launch", "--num_processes", "2"]
  assert command[:3] == ["python", "-m", "experiments.biglearn_gan"]
  command = [sys.executable] + command[1:]
  i = command.index("--workdir")
  command[i : i + 2] = [f"--workdir={workdir}"]
  return command + [f"--config.{k}={v}" for k, v in GAN_OVERRIDES.items()]


def _kill_tree(proc):
  if proc.poll() is None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _pids(stderr: str) -> dict[int, int]:
  """{process id: pid} from the launcher's `[launch] process i of N: pid PID` lines."""
  return {
      int(i): int(p) for i, p in re.findall(r"\[launch\] process (\d+) of \d+: pid (\d+)", stderr)
  }


def _launch(argv, tmp_path, *, num_processes=2, kill=None):
  """Runs `python -m bigjax.launch --num_processes N -- argv` to its end; returns (exit status,
  stdout, stderr). kill: (process id, workdir): SIGKILL that process once the workdir's first
  checkpoint is complete."""
  stem = tmp_path / f"launch_{time.monotonic_ns()}"
  out, err = stem.with_suffix(".out"), stem.with_suffix(".err")
  command = [sys.executable, "-m", "bigjax.launch", f"--num_processes={num_processes}", "--"]
  with open(out, "w") as fo, open(err, "w") as fe:
    proc = subprocess.Popen(
        command + list(argv),
        cwd=REPO,
        env=subprocess_env(),
        stdout=fo,
        stderr=fe,
        start_new_session=True,
    )
    try:
      if kill is not None:
        victim, workdir = kill
        checkpoints = os.path.join(workdir, "checkpoints")
        deadline = time.monotonic() + TIMEOUT_S
        while not (
            os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))
        ):
          assert proc.poll() is None, "the run ended before its first checkpoint"
          assert time.monotonic() < deadline, "no checkpoint in time"
          time.sleep(0.01)
        os.kill(_pids(err.read_text())[victim], signal.SIGKILL)
      proc.wait(timeout=TIMEOUT_S)
    finally:
      _kill_tree(proc)
  return proc.returncode, out.read_text(), err.read_text()


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def _assert_rows_close(
    a,
    b,
    *,
    ignore=("seconds", "steps_per_sec", "images_per_sec", "sequences_per_sec"),
    rtol=1e-3,
    atol=1e-4,
):
  assert [r["step"] for r in a] == [r["step"] for r in b]
  for ra, rb in zip(a, b):
    assert set(ra) == set(rb)
    for k in ra:
      if k not in ignore:
        np.testing.assert_allclose(ra[k], rb[k], rtol=rtol, atol=atol, err_msg=k)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _assert_same_training(two, one, init, *, rel=2e-2):
  """The parameters `two` and `one` trained from `init` agree to `rel` of how far training moved
  them (float32 sums in another order differ in their last bits, and Adam's normalisation lets
  those bits move near-zero gradients' steps: a bound on the values themselves would be either
  loose or flaky)."""
  chex.assert_trees_all_equal_shapes_and_dtypes(two, one)
  moved = np.linalg.norm(_flat(one) - _flat(init))
  assert moved > 0
  assert np.linalg.norm(_flat(two) - _flat(one)) <= rel * moved


def _files(workdir):
  """The run's files outside checkpoints/ (TensorBoard's named by kind: their names hold the
  time they were made)."""
  return sorted(
      "events"
      if n.startswith("events.out.tfevents")
      else os.path.relpath(os.path.join(r, n), workdir)
      for r, _, names in os.walk(workdir)
      for n in names
      if "checkpoints" not in os.path.relpath(r, workdir).split(os.sep)
  )


# ----------------------------------------------------------------------------------------------
# BigLearn-GAN.


@pytest.fixture(scope="module")
def gan_one(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("gan_one") / "run")
  summary = biglearn_gan.train_and_evaluate(_gan_config(), workdir, progress=False)
  return workdir, summary


@pytest.fixture(scope="module")
def gan_two(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("gan_two")
  workdir = str(tmp / "run")
  status, out, err = _launch(_gan_argv(workdir), tmp)
  assert status == 0, err[-3000:]
  return workdir, out, err


def _gan_state(workdir):
  return runs.load(workdir, gan_setup.KIND).state


def test_two_processes_train_the_gan_of_one(gan_one, gan_two):
  one, two = gan_one[0], gan_two[0]
  a, b = _gan_state(one), _gan_state(two)
  init = jax.jit(lambda key: gan_setup.init_state(_gan_config(), key))(jax.random.key(0))
  for name in ("g_params", "d_params", "g_ema_params"):
    _assert_same_training(getattr(b, name), getattr(a, name), getattr(init, name))
  _assert_rows_close(_rows(f"{two}/metrics.jsonl"), _rows(f"{one}/metrics.jsonl"))
  run = json.load(open(f"{two}/run.json"))
  assert run["step"] == 12 and len(run["devices"]) == 2 and run["compilations"] == 1


def test_two_processes_write_each_file_once(gan_one, gan_two):
  one, (two, out, _) = gan_one[0], gan_two
  assert _files(two) == _files(one)
  assert sum(n.startswith("events.out.tfevents") for n in os.listdir(two)) == 1
  assert sorted(os.listdir(f"{two}/samples")) == ["step_0000006.png", "step_0000012.png"]
  assert [r["step"] for r in _rows(f"{two}/metrics.jsonl")] == list(range(1, 13))
  # Both processes finished and printed their summary (prefixed by the launcher).
  for i in (0, 1):
    assert f'[{i}]  "step": 12,' in out


def test_a_killed_process_stops_the_run_and_the_same_command_resumes_it(gan_two, tmp_path):
  workdir = str(tmp_path / "run")
  argv = _gan_argv(workdir)
  status, _, err = _launch(argv, tmp_path, kill=(0, workdir))
  assert status == 128 + signal.SIGKILL, err[-3000:]
  assert "process 0 was killed by signal SIGKILL" in err
  pids = _pids(err)
  for pid in pids.values():
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)
  assert not os.path.exists(f"{workdir}/run.json")
  status, _, err = _launch(argv, tmp_path)
  assert status == 0, err[-3000:]
  assert json.load(open(f"{workdir}/run.json"))["resumed_from"] >= 4
  chex.assert_trees_all_equal(_gan_state(workdir), _gan_state(gan_two[0]))
  _assert_rows_close(
      _rows(f"{workdir}/metrics.jsonl"), _rows(f"{gan_two[0]}/metrics.jsonl"), rtol=0, atol=0
  )


def test_an_unreachable_coordinator_is_a_clear_error_in_bounded_time(tmp_path):
  workdir = tmp_path / "run"
  argv = _gan_argv(workdir) + [
      f"--coordinator_address=127.0.0.1:{free_port()}",
      "--num_processes=2",
      "--process_id=1",
  ]
  t0 = time.monotonic()
  proc = subprocess.run(
      argv,
      cwd=REPO,
      env=subprocess_env(BIGJAX_DISTRIBUTED_TIMEOUT="3"),
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode != 0
  assert "process 1 of 2 could not reach the coordinator at 127.0.0.1:" in proc.stderr
  assert time.monotonic() - t0 < 60
  assert not workdir.exists()
