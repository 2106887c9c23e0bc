"""The completion entry point (experiments/gan_complete.py) on a few real digits.

Two smoke runs train the generator for two steps: one at MNIST's 28x28 (patch 7) and one at
32x32 (patch 8), so that completions made at the model's resolution are mapped back to the
input's 28x28 pixels.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from bigjax.data import mnist
from configs import gan_mnist
from experiments import biglearn_gan
from experiments import gan_complete

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(workdir, **overrides):
  config = gan_mnist.get_config("smoke")
  config.num_steps = 2
  config.sample_every = 1000
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  biglearn_gan.train_and_evaluate(config, str(workdir), progress=False)
  return str(workdir)


@pytest.fixture(scope="module")
def run_28(tmp_path_factory):
  return _train(tmp_path_factory.mktemp("gan28"))


@pytest.fixture(scope="module")
def run_32(tmp_path_factory):
  return _train(tmp_path_factory.mktemp("gan32"), **{"data.image_size": 32, "model.patch_size": 8})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  images, _ = mnist.load("bundled", split="test")
  path = str(tmp_path_factory.mktemp("in") / "in.npz")
  np.savez(path, images=images[:5])
  return images[:5], path


def _check_output(out_path, images, num_samples):
  with np.load(out_path) as d:
    out = {k: d[k] for k in d.keys()}
  n = len(images)
  assert out["completions"].shape == (n, num_samples, 28, 28)
  assert out["completions"].dtype == np.uint8
  assert out["source_mask"].shape == out["target_mask"].shape == (n, 28, 28)
  assert not (out["source_mask"] & out["target_mask"]).any()
  assert out["target_mask"].any(axis=(1, 2)).all()
  given = np.broadcast_to(out["source_mask"][:, None], out["completions"].shape)
  np.testing.assert_array_equal(
      out["completions"][given], np.broadcast_to(images[:, None], given.shape)[given]
  )
  assert os.path.getsize(os.path.splitext(out_path)[0] + ".png") > 0
  return out


@pytest.mark.parametrize("initial_portion", [False, True])
def test_random_and_initial_portion_sources(run_28, digits, tmp_path, initial_portion):
  """Half the patches given: outputs have the documented shapes, source pixels are the input's,
  the noise draws differ on the target, and the initial portion is the top rows."""
  images, path = digits
  out_path = str(tmp_path / "out.npz")
  summary = gan_complete.run(
      run_28,
      path,
      out_path,
      source_ratio=0.5,
      num_samples=3,
      seed=1,
      initial_portion=initial_portion,
  )
  assert summary["step"] == 2
  out = _check_output(out_path, images, 3)
  assert out["patch_source_mask"].sum(axis=1).tolist() == [8] * 5
  np.testing.assert_allclose(out["source_mask"].mean(), 0.5)
  c, t = out["completions"], out["target_mask"]
  assert (c[:, 0][t] != c[:, 1][t]).any()
  if initial_portion:
    assert out["source_mask"][:, :14].all() and not out["source_mask"][:, 14:].any()
  else:
    assert len({tuple(r) for r in out["patch_source_mask"]}) > 1  # one source set per image


def test_resolution_mapping(run_32, digits, tmp_path):
  """A 32x32 model (patch 8) completes 28x28 inputs: masks and completions come back at 28x28,
  with the input's pixels wherever a pixel's centre lies in a source patch."""
  images, path = digits
  out_path = str(tmp_path / "o.npz")
  gan_complete.run(run_32, path, out_path, source_ratio=0.25, num_samples=2, seed=0)
  out = _check_output(out_path, images, 2)
  assert out["patch_source_mask"].shape == (5, 16)
  np.testing.assert_array_equal(out["source_mask"] | out["target_mask"], np.ones((5, 28, 28), bool))


def test_user_mask_file(run_28, digits, tmp_path):
  """MASK.npz with a patch-grid source mask and an explicit target: both are honoured."""
  images, path = digits
  source = np.zeros((4, 4), bool)
  source[:, 0] = True  # left column of patches given
  target = np.zeros((4, 4), bool)
  target[:, 1] = True  # only the next column is a target
  mask_path = str(tmp_path / "mask.npz")
  np.savez(mask_path, source_mask=source, target_mask=target)
  out_path = str(tmp_path / "out.npz")
  gan_complete.run(
      run_28, path, out_path, source_ratio=None, num_samples=2, seed=0, mask_file=mask_path
  )
  out = _check_output(out_path, images, 2)
  assert out["source_mask"][:, :, :7].all() and not out["source_mask"][:, :, 7:].any()
  assert out["target_mask"][:, :, 7:14].all() and not out["target_mask"][:, :, 14:].any()


def test_bad_inputs(run_28, digits, tmp_path):
  """Overlapping S and T, an empty T, a wrong mask shape, bad images and a workdir without a
  run all fail with messages that say what is wrong."""
  _, path = digits
  out = str(tmp_path / "o.npz")
  mask_path = str(tmp_path / "m.npz")
  np.savez(mask_path, source_mask=np.ones(16, bool), target_mask=np.ones(16, bool))
  with pytest.raises(ValueError, match="overlap"):
    gan_complete.run(
        run_28, path, out, source_ratio=None, num_samples=1, seed=0, mask_file=mask_path
    )
  np.savez(mask_path, source_mask=np.ones(16, bool))
  with pytest.raises(ValueError, match="T is empty"):
    gan_complete.run(
        run_28, path, out, source_ratio=None, num_samples=1, seed=0, mask_file=mask_path
    )
  np.savez(mask_path, source_mask=np.ones(15, bool))
  with pytest.raises(ValueError, match="shape"):
    gan_complete.run(
        run_28, path, out, source_ratio=None, num_samples=1, seed=0, mask_file=mask_path
    )
  with pytest.raises(ValueError, match="source_ratio"):
    gan_complete.run(run_28, path, out, source_ratio=1.0, num_samples=1, seed=0)
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, images=np.zeros((2, 28, 28), np.float32))
  with pytest.raises(ValueError, match="uint8"):
    gan_complete.run(run_28, bad, out, source_ratio=0.5, num_samples=1, seed=0)
  with pytest.raises(FileNotFoundError, match="config.json"):
    gan_complete.run(str(tmp_path), path, out, source_ratio=0.5, num_samples=1, seed=0)


def test_command_line(run_28, digits, tmp_path):
  """The documented command works as a program and writes OUT.npz and OUT.png."""
  _, path = digits
  out = str(tmp_path / "cli" / "out.npz")
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.gan_complete",
          "--workdir",
          run_28,
          "--images",
          path,
          "--source_ratio",
          "0.5",
          "--num_samples",
          "2",
          "--seed",
          "3",
          "--out",
          out,
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.exists(out) and os.path.exists(out[:-4] + ".png")
