"""Tests for bigjax.data.mnist: every source on the bundled subset or tiny files written here."""

import gzip
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from bigjax.data import mnist

_DATA_DIR = os.path.dirname(mnist.__file__)  # bigjax/data: the module sits beside the files


@pytest.fixture
def no_tfds(monkeypatch):
  """Makes `import tensorflow_datasets` fail, and unsets $BIGJAX_MNIST_DIR."""
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  monkeypatch.delenv(mnist.ENV_VAR, raising=False)


def _digits(n, seed):
  rng = np.random.default_rng(seed)
  return (
      rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
      rng.integers(0, 10, n).astype(np.uint8),
  )


def _idx_bytes(array, magic):
  array = np.asarray(array, np.uint8)
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  return header + array.tobytes()


def _write_idx_dir(directory, gz=False, train=(5, 0), test=(3, 1)):
  """Writes the four MNIST IDX files into `directory`; returns {split: (images, labels)}."""
  os.makedirs(directory, exist_ok=True)
  out = {}
  for split, prefix, (n, seed) in (("train", "train", train), ("test", "t10k", test)):
    images, labels = _digits(n, seed)
    for name, array, magic in (
        (f"{prefix}-images-idx3-ubyte", images, 2051),
        (f"{prefix}-labels-idx1-ubyte", labels, 2049),
    ):
      data = _idx_bytes(array, magic)
      path = os.path.join(directory, name + (".gz" if gz else ""))
      with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    out[split] = images, labels
  return out


def _assert_loaded(loaded, images, labels):
  got_images, got_labels = loaded
  assert got_images.dtype == np.uint8 and got_labels.dtype == np.int32
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)


# ----------------------------------------------------------------------------------------------
# The bundled subset.


def test_bundled_splits():
  train, test, full = (mnist.load("bundled", split=s) for s in ("train", "test", "all"))
  for (images, labels), n in zip((train, test, full), (7000, 1000, 8000)):
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int32
    assert labels.min() == 0 and labels.max() == 9
  np.testing.assert_array_equal(np.concatenate([train[0], test[0]]), full[0])
  np.testing.assert_array_equal(np.concatenate([train[1], test[1]]), full[1])
  assert np.bincount(test[1], minlength=10).min() >= 50  # every class in the test split
  images = full[0]
  assert images.min() == 0 and images.max() == 255
  assert 0.1 < np.mean(images > 127) < 0.3  # ink on a background of zeros
  assert np.mean(images[:, 0, :] == 0) > 0.99  # the top row is background


def test_bundled_data_has_attribution():
  with open(os.path.join(_DATA_DIR, "README.md"), encoding="utf-8") as f:
    readme = " ".join(f.read().split())  # line breaks as spaces
  for text in (
      "mnist_8k.npz",
      "`mnist` 1.1.0",
      "Juan Cazala",
      "MIT",
      "Yann LeCun",
      "Corinna Cortes",
      "Burges",
      "CC BY-SA 3.0",
      "round(255 * v)",
  ):
    assert text in readme


def test_rejects_unknown_split():
  with pytest.raises(ValueError, match="split must be one of"):
    mnist.load("bundled", split="validation")


# ----------------------------------------------------------------------------------------------
# IDX directories.


@pytest.mark.parametrize("gz", (False, True), ids=("raw", "gz"))
def test_idx_directory_round_trips(tmp_path, gz):
  written = _write_idx_dir(tmp_path, gz=gz)
  _assert_loaded(mnist.load(str(tmp_path), split="train"), *written["train"])
  _assert_loaded(mnist.load(tmp_path, split="test"), *written["test"])
  _assert_loaded(
      mnist.load(str(tmp_path), split="all"),
      *(np.concatenate(p) for p in zip(written["train"], written["test"])),
  )


def test_idx_dotted_file_names(tmp_path):
  written = _write_idx_dir(tmp_path)
  for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
    os.rename(tmp_path / name, tmp_path / name.replace("-idx", ".idx"))
  _assert_loaded(mnist.load(str(tmp_path)), *written["train"])


def _corrupt(path, offset, data):
  with open(path, "r+b") as f:
    f.seek(offset)
    f.write(data)


def test_idx_bad_magic_number(tmp_path):
  _write_idx_dir(tmp_path)
  _corrupt(tmp_path / "train-images-idx3-ubyte", 0, (1234).to_bytes(4, "big"))
  with pytest.raises(
      ValueError,
      match=r"(?s)train-images-idx3-ubyte has magic number 1234 "
      r"\(0x000004d2\), but MNIST images files start with 2051.*download it",
  ):
    mnist.load(str(tmp_path))
  mnist.load(str(tmp_path), split="test")  # the test files are fine


def test_idx_swapped_files(tmp_path):
  _write_idx_dir(tmp_path, gz=True)
  os.rename(tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "tmp.gz")
  os.rename(tmp_path / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
  os.rename(tmp_path / "tmp.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(
      ValueError, match="looks like a labels file: are the images and labels " "files swapped"
  ):
    mnist.load(str(tmp_path), split="test")


def test_idx_truncated_and_mismatched_files(tmp_path):
  _write_idx_dir(tmp_path)
  path = tmp_path / "train-images-idx3-ubyte"
  path.write_bytes(path.read_bytes()[:-10])
  with pytest.raises(ValueError, match="is truncated or has trailing bytes"):
    mnist.load(str(tmp_path))
  (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4), 2049))
  with pytest.raises(ValueError, match="holds 3 images but .* holds 4 labels"):
    mnist.load(str(tmp_path), split="test")
  (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"<html>")
  with pytest.raises(ValueError, match="not an uncompressed or gzipped MNIST IDX file"):
    mnist.load(str(tmp_path), split="test")


def test_idx_directory_missing_files(tmp_path):
  _write_idx_dir(tmp_path)
  os.remove(tmp_path / "t10k-labels-idx1-ubyte")
  mnist.load(str(tmp_path), split="train")
  for split in ("test", "all"):
    with pytest.raises(
        FileNotFoundError,
        match="(?s)lacks the MNIST IDX files "
        "t10k-labels-idx1-ubyte .*--config.data.source=bundled",
    ):
      mnist.load(str(tmp_path), split=split)


# ----------------------------------------------------------------------------------------------
# .npz files.


def test_npz_uint8_float_and_flat_layouts(tmp_path):
  images, labels = _digits(6, 2)
  np.savez(tmp_path / "u8.npz", images=images, labels=labels)
  np.savez(tmp_path / "float.npz", images=images / 255.0, labels=labels)
  np.savez(
      tmp_path / "flat.npz",
      images=images.reshape(6, 784).astype(np.float32) / 255,
      labels=labels.astype(np.int64),
  )
  np.savez(tmp_path / "channel.npz", images=images[..., None], labels=labels)
  for name in ("u8", "float", "flat", "channel"):
    path = str(tmp_path / f"{name}.npz")
    _assert_loaded(mnist.load(path, split="all"), images, labels)
    # No split of its own: the last eighth (at least one row) is held out, never trained on.
    _assert_loaded(mnist.load(path, split="train"), images[:5], labels[:5])
    _assert_loaded(mnist.load(path, split="test"), images[5:], labels[5:])


def test_npz_splits_are_disjoint_and_recorded(tmp_path):
  """An .npz used to be returned whole for every split, so a classifier tested on its own
  training digits (accuracy 1.0) and gan_eval called training digits held out."""
  images, labels = _digits(200, 4)
  path = str(tmp_path / "d.npz")
  np.savez(path, images=images, labels=labels)
  train, test = mnist.load(path, split="train")[0], mnist.load(path, split="test")[0]
  assert len(train) == 175 and len(test) == 25
  assert not ({r.tobytes() for r in train} & {r.tobytes() for r in test})
  assert (
      mnist.describe_split(path, "test") == f"{path}: rows 175-199 of 200 (the last eighth "
      "is held out as test)"
  )
  # A `split` array of the file's own.
  split = np.where(np.arange(200) % 4 == 0, "test", "train")
  np.savez(path, images=images, labels=labels, split=split)
  _assert_loaded(mnist.load(path, split="test"), images[::4], labels[::4])
  np.savez(path, images=images, labels=labels, split=(np.arange(200) % 4 == 0).astype(int))
  _assert_loaded(
      mnist.load(path, split="train"),
      images[np.arange(200) % 4 != 0],
      labels[np.arange(200) % 4 != 0],
  )
  assert "split` array names 'train'" in mnist.describe_split(path, "train")
  # train_images / test_images.
  np.savez(
      path,
      train_images=images[:150],
      train_labels=labels[:150],
      test_images=images[150:],
      test_labels=labels[150:],
  )
  _assert_loaded(mnist.load(path, split="test"), images[150:], labels[150:])
  _assert_loaded(mnist.load(path, split="all"), images, labels)
  with pytest.raises(ValueError, match="'train'/'test' \\(or 0/1\\)"):
    np.savez(path, images=images, split=np.full(200, "dev"))
    mnist.load(path, split="train")
  with pytest.raises(ValueError, match="too few to hold any out"):
    np.savez(path, images=images[:1])
    mnist.load(path, split="test")


def test_npz_without_labels(tmp_path):
  images, _ = _digits(4, 3)
  np.savez(tmp_path / "d.npz", images=images)
  _assert_loaded(mnist.load(str(tmp_path / "d.npz"), split="all"), images, np.full(4, -1))


def test_npz_keras_layout_is_read_by_split(tmp_path):
  (xtr, ytr), (xte, yte) = _digits(5, 4), _digits(2, 5)
  np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
  _assert_loaded(mnist.load(str(tmp_path / "mnist.npz")), xtr, ytr)
  _assert_loaded(mnist.load(str(tmp_path / "mnist.npz"), split="test"), xte, yte)
  _assert_loaded(
      mnist.load(str(tmp_path / "mnist.npz"), split="all"),
      np.concatenate([xtr, xte]),
      np.concatenate([ytr, yte]),
  )


@pytest.mark.parametrize(
    "arrays, match",
    [
        pytest.param(
            dict(x=np.zeros((2, 28, 28), np.uint8)),
            "(?s)has no array `images` \\(it holds: x\\).*np.savez",
            id="no-images",
        ),
        pytest.param(
            dict(images=np.zeros((2, 32, 32), np.uint8)),
            "has shape \\(2, 32, 32\\); expected \\[N, 28, 28\\]",
            id="wrong-shape",
        ),
        pytest.param(
            dict(images=np.zeros((2, 783), np.uint8)),
            "has shape \\(2, 783\\)",
            id="wrong-flat-shape",
        ),
        pytest.param(dict(images=np.zeros((0, 28, 28), np.uint8)), "holds no images", id="empty"),
        pytest.param(
            dict(images=np.full((2, 28, 28), 255.0)),
            "float values in \\[255, 255\\].*save them as uint8",
            id="float-0-255",
        ),
        pytest.param(
            dict(images=np.full((2, 28, 28), -1.0)),
            "float values in \\[-1, -1\\].*\\(x \\+ 1\\) / 2",
            id="float-minus-1-1",
        ),
        pytest.param(dict(images=np.full((2, 28, 28), np.nan)), "NaN", id="nan"),
        pytest.param(
            dict(images=np.full((2, 28, 28), 300)),
            "integer values in \\[300, 300\\]",
            id="int-out-of-range",
        ),
        pytest.param(dict(images=np.zeros((2, 28, 28), bool)), "dtype bool", id="bool"),
        pytest.param(
            dict(images=np.zeros((2, 28, 28), np.uint8), labels=np.zeros(3, np.uint8)),
            "`labels` .* has shape \\(3,\\); expected \\[2\\]",
            id="label-count",
        ),
        pytest.param(
            dict(images=np.zeros((2, 28, 28), np.uint8), labels=np.eye(10)[:2]),
            "one-hot",
            id="one-hot-labels",
        ),
        pytest.param(
            dict(images=np.zeros((2, 28, 28), np.uint8), labels=np.array([0, 10])),
            "values in \\[0, 10\\]",
            id="label-range",
        ),
    ],
)
def test_npz_rejects_bad_contents(tmp_path, arrays, match):
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match=match):
    mnist.load(str(tmp_path / "bad.npz"))


def test_rejects_files_that_are_not_npz(tmp_path):
  (tmp_path / "fake.npz").write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="is not a readable .npz file"):
    mnist.load(str(tmp_path / "fake.npz"))
  (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((1, 28, 28)), 2051))
  with pytest.raises(ValueError, match="Pass the directory that holds the IDX files"):
    mnist.load(str(tmp_path / "train-images-idx3-ubyte"))


# ----------------------------------------------------------------------------------------------
# Missing data, "auto" and "tfds".


def test_missing_path_says_how_to_fix(tmp_path):
  with pytest.raises(
      FileNotFoundError,
      match=r"(?s)does not exist.*train-images-idx3-ubyte.*"
      r"--config.data.source=DIR.*\.npz.*--config.data.source=bundled",
  ) as e:
    mnist.load(str(tmp_path / "nowhere"))
  assert "nowhere" in str(e.value)


def test_auto_with_nothing_available_lists_places_and_fixes(tmp_path, no_tfds, monkeypatch):
  with pytest.raises(FileNotFoundError) as e:
    mnist.load("auto")
  message = str(e.value)
  for text in (
      f"${mnist.ENV_VAR}: not set",
      "tensorflow_datasets: not installed",
      "--config.data.source=DIR",
      "--config.data.source=bundled",
      "t10k-images",
  ):
    assert text in message
  monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "env"))
  os.makedirs(tmp_path / "dir")
  with pytest.raises(FileNotFoundError) as e:
    mnist.load(data_dir=str(tmp_path / "dir"))
  message = str(e.value)
  assert f"data_dir '{tmp_path / 'dir'}': lacks train-images-idx3-ubyte" in message
  assert f"${mnist.ENV_VAR} '{tmp_path / 'env'}': no such directory" in message


def test_auto_finds_idx_files_in_data_dir_then_env_var(tmp_path, no_tfds, monkeypatch):
  from_env = _write_idx_dir(tmp_path / "env", gz=True, train=(4, 6))
  monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "env"))
  _assert_loaded(mnist.load(), *from_env["train"])
  from_arg = _write_idx_dir(tmp_path / "arg", train=(2, 7))
  _assert_loaded(mnist.load(data_dir=str(tmp_path / "arg")), *from_arg["train"])
  _assert_loaded(mnist.load(data_dir=str(tmp_path / "nowhere")), *from_env["train"])


def test_tfds_not_installed(no_tfds):
  with pytest.raises(
      ImportError,
      match="(?s)needs tensorflow-datasets and tensorflow.*" "--config.data.source=bundled",
  ):
    mnist.load("tfds")


def _fake_tfds(prepared):
  """A stand-in for tensorflow_datasets whose `load` has MNIST prepared or not."""
  images, labels = _digits(3, 8)
  calls = []

  def load(name, split, batch_size, data_dir, download):
    calls.append(
        dict(name=name, split=split, batch_size=batch_size, data_dir=data_dir, download=download)
    )
    if not prepared:
      raise AssertionError(f"Dataset {name}: could not find data in {data_dir}.")
    return {"image": images[..., None], "label": labels.astype(np.int64)}

  module = types.SimpleNamespace(load=load, as_numpy=lambda x: x)
  return module, calls, (images, labels)


def test_auto_uses_prepared_tfds_without_downloading(tmp_path, no_tfds, monkeypatch):
  module, calls, digits = _fake_tfds(prepared=True)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  _assert_loaded(mnist.load(split="all", data_dir=str(tmp_path)), *digits)
  assert calls == [
      dict(name="mnist", split="train+test", batch_size=-1, data_dir=str(tmp_path), download=False)
  ]


def test_tfds_failure_says_how_to_fix(no_tfds, monkeypatch):
  module, calls, _ = _fake_tfds(prepared=False)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  with pytest.raises(
      RuntimeError,
      match="(?s)could not prepare MNIST.*AssertionError.*TensorFlow "
      "and network access.*--config.data.source=bundled",
  ):
    mnist.load("tfds", split="test")
  assert calls[-1]["download"] and calls[-1]["split"] == "test"
  with pytest.raises(
      FileNotFoundError,
      match="tensorflow_datasets: no prepared MNIST in its "
      "default data directory \\(AssertionError: Dataset mnist",
  ):
    mnist.load("auto")
  assert not calls[-1]["download"]


# ----------------------------------------------------------------------------------------------
# Image transforms.


def test_resize_shapes_and_constant_images():
  images = np.stack([np.full((28, 28), v, np.uint8) for v in (0, 1, 128, 255)])
  for size in (7, 14, 32, 64):
    out = mnist.resize(images, size)
    assert out.shape == (4, size, size) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images[:, :1, :1] + np.zeros((size, size), np.uint8))
  assert mnist.resize(images, 28) is images


def test_resize_matches_pil_and_keeps_the_mean():
  images = mnist.load("bundled", split="test")[0][:64]
  for size in (64, 14):
    out = mnist.resize(images, size)
    ref = np.stack(
        [
            np.asarray(
                Image.fromarray(im.astype(np.float32)).resize(
                    (size, size), Image.Resampling.BILINEAR
                )
            )
            for im in images
        ]
    )
    assert np.abs(out - np.clip(np.round(ref), 0, 255)).max() <= 1  # rounding ties only
    np.testing.assert_allclose(out.mean((1, 2)), images.mean((1, 2)), rtol=0.03, atol=1.0)


def test_resize_antialiases_when_downsizing():
  stripes = np.zeros((1, 28, 28), np.uint8)
  stripes[:, :, ::4] = 255  # one ink column in four: point sampling at 7 x 7
  out = mnist.resize(stripes, 7)  # would see all ink or no ink
  assert 40 < out.min() and out.max() < 90  # 255 / 4 = 64 where the filter averages


@pytest.mark.parametrize(
    "images, size, error, match",
    [
        (np.zeros((28, 28), np.uint8), 64, ValueError, "image\\[None\\]"),
        (np.zeros((1, 28, 28), np.float32), 64, TypeError, "uint8"),
        (np.zeros((1, 28, 28), np.uint8), 0, ValueError, "positive int"),
        (np.zeros((1, 28, 28), np.uint8), 32.0, ValueError, "positive int"),
    ],
)
def test_resize_rejects_bad_arguments(images, size, error, match):
  with pytest.raises(error, match=match):
    mnist.resize(images, size)


def test_unit_range_round_trip():
  pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
  x = mnist.to_unit_range(pixels)
  assert x.dtype == np.float32 and x.shape == pixels.shape
  assert x.min() == -1.0 and x.max() == 1.0
  np.testing.assert_array_equal(mnist.from_unit_range(x), pixels)
  np.testing.assert_array_equal(
      mnist.from_unit_range([-3.0, -1.0, 0.0, 1.0, 2.0]), [0, 0, 128, 255, 255]
  )
  with pytest.raises(TypeError, match="uint8"):
    mnist.to_unit_range(x)
  with pytest.raises(ValueError, match="NaN or inf"):
    mnist.from_unit_range([0.0, np.nan])
