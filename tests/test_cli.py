"""experiments.cli: unknown --config.* overrides are named before ml_collections parses them."""

import os

import pytest

from experiments import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAN = os.path.join(REPO, "configs", "gan_mnist.py")


def test_known_keys_pass():
  argv = [
      "prog",
      f"--config={GAN}:smoke",
      "--config.num_steps=3",
      "--config.model.patch_size=4",
      "--config.loss.r1_weight",
      "2.0",
  ]
  assert cli.unknown_config_keys(argv, GAN) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.bogus=1", "config has no field 'bogus'"),
        (
            "--config.model.bogus=1",
            "config.model has no field 'bogus' (its fields: conv_head_layers",
        ),
        ("--config.num_steps.x=1", "config.num_steps has no field 'x' (its fields: none"),
    ],
)
def test_unknown_keys_are_named(override, message):
  errors = cli.unknown_config_keys(["prog", "--config", f"{GAN}:cpu", override], GAN)
  assert len(errors) == 1 and message in errors[0] and override.split("=")[0] in errors[0]


def test_default_config_and_exit():
  """Without --config the default file is read; the exit carries every message."""
  argv = ["prog", "--config.optim.nope=1", "--config.eval.bad=2"]
  assert len(cli.unknown_config_keys(argv, GAN)) == 2
  with pytest.raises(SystemExit, match="optim.nope.*\n.*eval.bad"):
    cli.exit_on_unknown_config_keys(argv, GAN)


def test_read_images_refuses_what_no_tool_can_use(tmp_path):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import pytest  # pylint: disable=import-outside-toplevel

  path = str(tmp_path / "x.npz")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    cli.read_images(path)
  for arrays, kwargs, message in (
      (dict(pictures=np.zeros((2, 28, 28), np.uint8)), {}, "has no `images` array"),
      (dict(images=np.zeros((0, 28, 28), np.uint8)), {}, "holds no image"),
      (dict(images=np.zeros((2, 28, 28), np.float32)), {}, "must be uint8"),
      (dict(images=np.zeros((2, 28, 28), np.uint8)), dict(need_labels=True), "no `labels` array"),
  ):
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
      cli.read_images(path, **kwargs)
  images, labels = cli.read_images(path)
  assert images.shape == (2, 28, 28) and labels is None
