"""Tools that only read a run never change it: not on a writable run directory, not on one that
really is read-only (as root, chmod does not stop writes, so the reader runs without
CAP_DAC_OVERRIDE), and not when the newest checkpoint is broken (they fall back in memory)."""

import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "old_runs", "gan")


def _tree(root):
  """{path: (size, mtime_ns)} of everything under root."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      st = os.lstat(path)
      out[os.path.relpath(path, root)] = (
          st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
          st.st_mtime_ns,
      )
  return out


def _as_reader(command):
  """`command` run without the right to write into read-only files (root keeps it otherwise)."""
  if os.geteuid() != 0:
    return command
  setpriv = shutil.which("setpriv")
  if setpriv is None:
    pytest.skip("running as root without setpriv: cannot drop CAP_DAC_OVERRIDE")
  return [setpriv, "--inh-caps=-dac_override", "--bounding-set=-dac_override", "--"] + command


def _gan_run_with_a_broken_newest_step(tmp_path):
  """The fixture GAN run (a checkpoint at step 2) with a newer step 4 that cannot be read."""
  run = str(tmp_path / "run")
  shutil.copytree(FIXTURE, run)
  shutil.copytree(os.path.join(run, "checkpoints", "2"), os.path.join(run, "checkpoints", "4"))
  os.remove(os.path.join(run, "checkpoints", "4", "state", "_METADATA"))
  return run


def _make_read_only(root):
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      os.chmod(os.path.join(dirpath, name), 0o444)
    os.chmod(dirpath, 0o555)


def test_a_reader_falls_back_in_memory_and_deletes_nothing(tmp_path, caplog):
  import logging  # pylint: disable=import-outside-toplevel
  from experiments import gan_setup  # pylint: disable=import-outside-toplevel

  run = _gan_run_with_a_broken_newest_step(tmp_path)
  before = _tree(run)
  with caplog.at_level(logging.WARNING):
    _, _, step = gan_setup.load_run(run)
  assert step == 2
  assert _tree(run) == before  # step 4 is still there, untouched
  assert any(
      "restored step 2" in r.getMessage()
      and "step 4" in r.getMessage()
      and "left them on disk" in r.getMessage()
      for r in caplog.records
  ), caplog.text


def test_tools_read_a_run_directory_that_is_really_read_only(tmp_path):
  run = _gan_run_with_a_broken_newest_step(tmp_path)
  images = str(tmp_path / "in.npz")
  np.savez(images, images=np.zeros((2, 28, 28), np.uint8))
  out = tmp_path / "out"
  out.mkdir()
  _make_read_only(run)
  before = _tree(run)
  try:
    proc = subprocess.run(
        _as_reader(
            [
                sys.executable,
                "-m",
                "experiments.gan_complete",
                "--workdir",
                run,
                "--images",
                images,
                "--source_ratio",
                "0.5",
                "--num_samples",
                "2",
                "--out",
                str(out / "c.npz"),
            ]
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "restored step 2" in proc.stderr and '"step": 2' in proc.stdout
    with np.load(out / "c.npz") as data:
      assert data["completions"].shape == (2, 2, 28, 28)
    # The reader really could not write there: the same process fails to create a file.
    probe = subprocess.run(
        _as_reader([sys.executable, "-c", f"open({run!r} + '/x', 'w')"]),
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "Permission denied" in probe.stderr
    assert _tree(run) == before
  finally:
    for dirpath, _, _ in os.walk(run):
      os.chmod(dirpath, 0o755)


def test_a_trainer_cannot_train_into_a_read_only_run_and_changes_nothing(tmp_path):
  run = str(tmp_path / "clf")
  shutil.copytree(os.path.join(REPO, "tests", "fixtures", "old_runs", "classifier"), run)
  _make_read_only(run)
  before = _tree(run)
  try:
    proc = subprocess.run(
        _as_reader(
            [
                sys.executable,
                "-m",
                "experiments.mnist_classifier",
                "--config",
                "configs/mnist_classifier.py:smoke",
                "--config.model.feature_dim=8",
                "--workdir",
                run,
            ]
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "is not writable: a trainer writes" in proc.stderr, proc.stderr[
        -2000:
    ]
    assert _tree(run) == before
  finally:
    for dirpath, _, _ in os.walk(run):
      os.chmod(dirpath, 0o755)
