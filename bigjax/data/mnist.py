"""MNIST digits as numpy arrays, from whatever copy of the data is at hand.

`load(source, split=...)` returns `(images, labels)`:

  images  uint8 [N, 28, 28]  0 = background, 255 = ink
  labels  int32 [N]          digit classes 0..9, or -1 where the source has no labels

The source is one of

  "bundled"      the 8,000 real digits shipped in `bigjax/data` (works offline, no download);
                 split "train" is the first 7,000, "test" the last 1,000, "all" all 8,000.
  DIR            a directory holding the original IDX files, raw or gzipped:
                 train-images-idx3-ubyte, train-labels-idx1-ubyte (split "train", 60,000),
                 t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (split "test", 10,000);
                 split "all" concatenates train and test.
  FILE.npz       an .npz file with `images` ([N, 28, 28], [N, 28, 28, 1] or [N, 784]; uint8, or
                 floats in [0, 1]) and optional `labels` [N]. Its splits: a `split` array [N]
                 ("train"/"test", or 0/1) when it has one; else the last eighth of its rows (at
                 least one) is "test" and the rest "train", as in the bundled file (the rule
                 `describe_split` states, which runs record); "all" is every row. Files with
                 `train_images`/`test_images` (and `train_labels`/`test_labels`) or Keras'
                 `mnist.npz` layout (`x_train`, `y_train`, `x_test`, `y_test`) are read by
                 split.
  "tfds"         `tensorflow_datasets.load("mnist")`; needs tensorflow and tensorflow-datasets
                 installed (neither is a bigjax requirement) and network access the first time.
  "auto"         the IDX files in `data_dir` or in $BIGJAX_MNIST_DIR if they are there, else
                 tfds's MNIST if it is installed and already prepared; never downloads.

Every failure says what was wrong and how to provide the data instead. The arrays are small
enough (47 MB for the full train split) that everything is read into memory at once.

`resize` makes larger digits (64 x 64 for the paper's GAN configuration), `to_unit_range` and
`from_unit_range` map between uint8 pixels and the [-1, 1] floats the models work in (all three
live in `bigjax.data.pixels`). The IDX and .npz readers are `bigjax.data.mnist_files`.
"""

from __future__ import annotations

import importlib.resources
import os
import zipfile

import numpy as np

from bigjax.data.mnist_files import ENV_VAR, HOW_TO_FIX, load_idx_dir, load_npz, missing_idx_files
from bigjax.data.pixels import from_unit_range, resize, to_unit_range

__all__ = [
    "BUNDLED_TRAIN_SIZE",
    "ENV_VAR",
    "SPLITS",
    "describe_split",
    "from_unit_range",
    "load",
    "resize",
    "to_unit_range",
]

SPLITS = ("train", "test", "all")
BUNDLED_TRAIN_SIZE = 7000  # the bundled subset's first 7,000 digits are "train", the rest "test"


def load(
    source: str | os.PathLike = "auto",
    *,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Loads MNIST digits from `source` (see the module docstring for the sources).

  Args:
    source: "auto", "bundled", "tfds", a directory holding the IDX files, or an .npz file.
    split: "train", "test" or "all" (train and test together). The splits of an .npz file
      are its own (`split`, `train_images`/`test_images`, Keras' layout) or, for `images`
      alone, the last eighth of its rows as "test" (`describe_split`).
    data_dir: for "auto", a directory to look in for the IDX files (before $BIGJAX_MNIST_DIR)
      and tfds's data directory; for "tfds", its data directory. Default: $BIGJAX_MNIST_DIR
      for the IDX files and tfds's own default (~/tensorflow_datasets, or $TFDS_DATA_DIR).

  Returns:
    images: uint8 [N, 28, 28], 0 = background, 255 = ink.
    labels: int32 [N], the digits 0..9, or -1 for an .npz file without `labels`.

  Raises:
    FileNotFoundError: the source path does not exist, or "auto" found no data (the message
      lists every place looked in and how to provide the data).
    ValueError: the files exist but hold something else than MNIST digits in a known layout.
    ImportError, RuntimeError: "tfds" is not installed, or could not prepare the data.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  source = os.fspath(source)
  if source == "bundled":
    return _load_bundled(split)
  if source == "tfds":
    return _load_tfds(split, data_dir, download=True)
  if source == "auto":
    return _load_auto(split, data_dir)
  path = os.path.expanduser(source)
  if os.path.isdir(path):
    return load_idx_dir(path, split)
  if os.path.isfile(path):
    if path.endswith(".npz") or zipfile.is_zipfile(path):
      return load_npz(path, split)
    raise ValueError(
        f"MNIST source {source!r} is a file but not an .npz file. Pass the directory that holds "
        f"the IDX files (not one of the files), or an .npz file.\n{HOW_TO_FIX}"
    )
  raise FileNotFoundError(
      f"MNIST source {source!r} does not exist (and is none of 'auto', 'bundled', 'tfds').\n"
      f"{HOW_TO_FIX}"
  )


def _load_bundled(split: str) -> tuple[np.ndarray, np.ndarray]:
  resource = importlib.resources.files("bigjax.data").joinpath("mnist_8k.npz")
  if not resource.is_file():
    raise FileNotFoundError(
        f"The bundled MNIST subset {resource} is missing from this bigjax installation. The "
        "file is bigjax/data/mnist_8k.npz in the bigjax repository (8,000 digits, described in "
        "bigjax/data/README.md), and pyproject.toml's [tool.setuptools.package-data] puts it in "
        "the wheel: reinstall bigjax from a checkout that holds it (pip install .), or provide "
        f"the data another way.\n{HOW_TO_FIX}"
    )
  with resource.open("rb") as f, np.load(f) as data:
    images, labels = data["images"], data["labels"].astype(np.int32)
  parts = {
      "train": slice(None, BUNDLED_TRAIN_SIZE),
      "test": slice(BUNDLED_TRAIN_SIZE, None),
      "all": slice(None),
  }
  return images[parts[split]], labels[parts[split]]


def describe_split(source: str, split: str) -> str:
  """Which digits of `source` the split `split` is, in words (what a run records)."""
  path = os.path.expanduser(os.fspath(source))
  if source == "bundled":
    return {
        "train": "bundled rows 0-6,999",
        "test": "bundled rows 7,000-7,999",
        "all": "all 8,000 bundled rows",
    }[split]
  if not (os.path.isfile(path) and (path.endswith(".npz") or zipfile.is_zipfile(path))):
    return f"{source}: the {split} split of the source"
  with np.load(path) as data:
    keys = set(data.files)
    if "images" not in keys or split == "all":
      return f"{path}: the {split} split of the file"
    if "split" in keys:
      return f"{path}: the rows its `split` array names {split!r}"
    n = len(data["images"])
  num_test = max(1, n // 8)
  rows = f"{n - num_test}-{n - 1}" if split == "test" else f"0-{n - num_test - 1}"
  return f"{path}: rows {rows} of {n} (the last eighth is held out as test)"


# tensorflow_datasets.


def _load_tfds(split: str, data_dir, *, download: bool) -> tuple[np.ndarray, np.ndarray]:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "MNIST source 'tfds' needs tensorflow-datasets and tensorflow, which are not installed "
        f"(bigjax does not require them): {e}.\n{HOW_TO_FIX}"
    ) from e
  tfds_split = "train+test" if split == "all" else split
  data_dir = None if data_dir is None else os.fspath(data_dir)
  try:
    data = tfds.as_numpy(
        tfds.load("mnist", split=tfds_split, batch_size=-1, data_dir=data_dir, download=download)
    )
  except Exception as e:  # tfds raises many types: no TensorFlow, no network, no data ...
    where = data_dir or "tfds's default data directory"
    raise RuntimeError(
        f"tensorflow_datasets could not {'prepare' if download else 'find prepared'} MNIST in "
        f"{where} ({type(e).__name__}: {e}). Preparing it needs TensorFlow and network "
        f"access.\n{HOW_TO_FIX}"
    ) from e
  images = np.asarray(data["image"], np.uint8)
  if images.ndim == 4:
    images = images[..., 0]
  return images, np.asarray(data["label"]).astype(np.int32)


# "auto".


def _load_auto(split: str, data_dir) -> tuple[np.ndarray, np.ndarray]:
  looked = []  # one line per place looked in, for the error message
  candidates = [(data_dir, "data_dir"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")]
  for directory, name in candidates:
    if directory is None:
      if name != "data_dir":
        looked.append(f"{name}: not set")
      continue
    directory = os.path.expanduser(os.fspath(directory))
    if not os.path.isdir(directory):
      looked.append(f"{name} {directory!r}: no such directory")
      continue
    missing = missing_idx_files(directory, split)
    if not missing:
      return load_idx_dir(directory, split)
    looked.append(f"{name} {directory!r}: lacks {', '.join(missing)} (raw or .gz)")
  try:
    return _load_tfds(split, data_dir, download=False)
  except ImportError:
    looked.append("tensorflow_datasets: not installed")
  except RuntimeError as e:
    cause = e.__cause__ or e
    where = data_dir or "its default data directory"
    looked.append(
        f"tensorflow_datasets: no prepared MNIST in {where} "
        f"({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})"
    )
  raise FileNotFoundError(
      f"Found no MNIST data for split {split!r} (source 'auto' never downloads). Looked in:\n"
      + "".join(f"  * {line}\n" for line in looked)
      + HOW_TO_FIX
  )
