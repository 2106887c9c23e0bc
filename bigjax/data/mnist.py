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
`from_unit_range` map between uint8 pixels and the [-1, 1] floats the models work in.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
import zipfile

import numpy as np
from PIL import Image

ENV_VAR = "BIGJAX_MNIST_DIR"
SPLITS = ("train", "test", "all")
BUNDLED_TRAIN_SIZE = 7000  # the bundled subset's first 7,000 digits are "train", the rest "test"

_SIDE = 28
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_IDX_PREFIX = {"train": "train", "test": "t10k"}

_HOW_TO_FIX = (
    "Ways to provide MNIST:\n"
    "  * the original IDX files: put train-images-idx3-ubyte, train-labels-idx1-ubyte,\n"
    "    t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (raw or .gz) in a directory DIR and\n"
    "    pass --config.data.source=DIR (in Python: mnist.load(DIR)), or set\n"
    f"    {ENV_VAR}=DIR for source 'auto';\n"
    "  * an .npz file with `images` uint8 [N, 28, 28] (and optionally `labels` [N]):\n"
    "    pass --config.data.source=/path/to/file.npz;\n"
    "  * offline, the 8,000 real digits shipped with bigjax: --config.data.source=bundled;\n"
    "  * with network access: pip install tensorflow tensorflow-datasets and\n"
    "    --config.data.source=tfds."
)


# ----------------------------------------------------------------------------------------------
# Loading.


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
    return _load_idx_dir(path, split)
  if os.path.isfile(path):
    if path.endswith(".npz") or zipfile.is_zipfile(path):
      return _load_npz(path, split)
    raise ValueError(
        f"MNIST source {source!r} is a file but not an .npz file. Pass the directory that holds "
        f"the IDX files (not one of the files), or an .npz file.\n{_HOW_TO_FIX}"
    )
  raise FileNotFoundError(
      f"MNIST source {source!r} does not exist (and is none of 'auto', 'bundled', 'tfds').\n"
      f"{_HOW_TO_FIX}"
  )


def _load_bundled(split: str) -> tuple[np.ndarray, np.ndarray]:
  resource = importlib.resources.files("bigjax.data").joinpath("mnist_8k.npz")
  if not resource.is_file():
    raise FileNotFoundError(
        f"The bundled MNIST subset {resource} is missing from this bigjax installation; "
        "reinstall bigjax (its setup.py ships bigjax/data/*.npz as package data) or provide "
        f"the data another way.\n{_HOW_TO_FIX}"
    )
  with resource.open("rb") as f, np.load(f) as data:
    images, labels = data["images"], data["labels"].astype(np.int32)
  parts = {
      "train": slice(None, BUNDLED_TRAIN_SIZE),
      "test": slice(BUNDLED_TRAIN_SIZE, None),
      "all": slice(None),
  }
  return images[parts[split]], labels[parts[split]]


# IDX files (http://yann.lecun.com/exdb/mnist/): a big-endian int32 magic number whose third
# byte is the element type (0x08 = uint8) and fourth the number of dimensions, one big-endian
# int32 per dimension, then the elements in C order.


def _idx_path(directory: str, prefix: str, kind: str) -> str | None:
  """The IDX file for `prefix` ("train"/"t10k") and `kind` ("images"/"labels"), or None."""
  ndim = 3 if kind == "images" else 1
  for name in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
    for suffix in ("", ".gz"):
      path = os.path.join(directory, name + suffix)
      if os.path.isfile(path):
        return path
  return None


def _missing_idx_files(directory: str, split: str) -> list[str]:
  """The names of the IDX files that `split` needs and `directory` lacks."""
  splits = ("train", "test") if split == "all" else (split,)
  return [
      f"{_IDX_PREFIX[s]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
      for s in splits
      for kind in ("images", "labels")
      if _idx_path(directory, _IDX_PREFIX[s], kind) is None
  ]


def _read_idx(path: str, magic: int) -> np.ndarray:
  """Reads one uint8 IDX file (raw or gzipped) whose magic number must be `magic`."""
  what = "images" if magic == _IMAGES_MAGIC else "labels"
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:
      raise ValueError(
          f"{path} is a corrupt or truncated gzip file ({e}); download it " "again."
      ) from e
  if len(data) < 4:
    raise ValueError(
        f"{path} is too short ({len(data)} bytes) to be an MNIST IDX file; " "download it again."
    )
  found = int.from_bytes(data[:4], "big")
  if found != magic:
    other = {_IMAGES_MAGIC: "an images", _LABELS_MAGIC: "a labels"}.get(found)
    hint = (
        f"it looks like {other} file: are the images and labels files swapped?"
        if other
        else "it is not an uncompressed or gzipped MNIST IDX file (a failed download, "
        "e.g. an HTML page, or a different format); download it again."
    )
    raise ValueError(
        f"{path} has magic number {found} (0x{found:08x}), but MNIST {what} files "
        f"start with {magic} (0x{magic:08x}): {hint}"
    )
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(
        f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte "
        "header; download it again."
    )
  shape = tuple(int(d) for d in np.frombuffer(data[4:header], ">u4"))
  expected = int(np.prod(shape))
  if len(data) - header != expected:
    raise ValueError(
        f"{path} is truncated or has trailing bytes: its header gives shape {shape}, "
        f"i.e. {expected} bytes of data, but it holds {len(data) - header}; "
        "download it again."
    )
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def _load_idx_split(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  prefix = _IDX_PREFIX[split]
  images_path = _idx_path(directory, prefix, "images")
  labels_path = _idx_path(directory, prefix, "labels")
  images = _read_idx(images_path, _IMAGES_MAGIC)
  labels = _read_idx(labels_path, _LABELS_MAGIC)
  if images.shape[1:] != (_SIDE, _SIDE):
    raise ValueError(
        f"{images_path} holds images of shape {images.shape[1:]}, but MNIST digits "
        f"are {_SIDE} x {_SIDE}."
    )
  if len(images) != len(labels):
    raise ValueError(
        f"{images_path} holds {len(images)} images but {labels_path} holds "
        f"{len(labels)} labels; both files must come from the same split."
    )
  if labels.size and labels.max() > 9:
    raise ValueError(
        f"{labels_path} holds labels up to {labels.max()}, but MNIST digits are " "0..9."
    )
  return images, labels.astype(np.int32)


def _load_idx_dir(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  missing = _missing_idx_files(directory, split)
  if missing:
    present = sorted(os.listdir(directory))
    shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "") or "nothing"
    raise FileNotFoundError(
        f"The directory {directory!r} lacks the MNIST IDX files {', '.join(missing)} (raw or "
        f".gz) for split {split!r}; it holds: {shown}.\n{_HOW_TO_FIX}"
    )
  if split == "all":
    parts = [_load_idx_split(directory, s) for s in ("train", "test")]
    return tuple(np.concatenate(p) for p in zip(*parts))
  return _load_idx_split(directory, split)


# .npz files.


def _npz_images(images: np.ndarray, where: str) -> np.ndarray:
  """`images` as uint8 [N, 28, 28], or a ValueError that says what is wrong with them."""
  images = np.asarray(images)
  if images.ndim == 2 and images.shape[1] == _SIDE * _SIDE:
    images = images.reshape(-1, _SIDE, _SIDE)
  elif images.ndim == 4 and images.shape[1:] == (_SIDE, _SIDE, 1):
    images = images[..., 0]
  if images.ndim != 3 or images.shape[1:] != (_SIDE, _SIDE):
    raise ValueError(
        f"{where} has shape {images.shape}; expected [N, 28, 28], [N, 28, 28, 1] " "or [N, 784]."
    )
  if not len(images):
    raise ValueError(f"{where} holds no images (shape {images.shape}).")
  if images.dtype == np.uint8:
    return images
  if np.issubdtype(images.dtype, np.integer):
    lo, hi = int(images.min()), int(images.max())
    if lo < 0 or hi > 255:
      raise ValueError(
          f"{where} has integer values in [{lo}, {hi}]; expected pixels in " "[0, 255]."
      )
    return images.astype(np.uint8)
  if np.issubdtype(images.dtype, np.floating):
    if not np.all(np.isfinite(images)):
      raise ValueError(f"{where} contains NaN or inf.")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
      hint = (
          "if the pixels are in [-1, 1], save (x + 1) / 2"
          if lo >= -1.0 and hi <= 1.0
          else "if the pixels are in [0, 255], save them as uint8"
          if lo >= 0 and hi <= 255
          else "save uint8 pixels in [0, 255] or floats in [0, 1]"
      )
      raise ValueError(
          f"{where} has float values in [{lo:.4g}, {hi:.4g}]; float images must be "
          f"in [0, 1] (they are converted with round(255 * v)): {hint}."
      )
    return np.round(images.astype(np.float64) * 255.0).astype(np.uint8)
  raise ValueError(
      f"{where} has dtype {images.dtype}; expected uint8 pixels in [0, 255] or " "floats in [0, 1]."
  )


def _npz_labels(labels: np.ndarray | None, n: int, where: str) -> np.ndarray:
  """`labels` as int32 [n] in 0..9 (-1 everywhere when None), or a ValueError."""
  if labels is None:
    return np.full((n,), -1, np.int32)
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape == (n, 10):
    raise ValueError(f"{where} is one-hot [N, 10]; save the class indices labels.argmax(-1).")
  if labels.shape != (n,):
    raise ValueError(f"{where} has shape {labels.shape}; expected [{n}], one label per image.")
  if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
    labels = labels.astype(np.int64)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where} has dtype {labels.dtype}; expected integer classes 0..9.")
  if labels.size and (labels.min() < 0 or labels.max() > 9):
    raise ValueError(
        f"{where} has values in [{labels.min()}, {labels.max()}]; expected the " "classes 0..9."
    )
  return labels.astype(np.int32)


def _load_npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # np.load raises several types for a file that is no .npz
    raise ValueError(
        f"{path} is not a readable .npz file ({type(e).__name__}: {e}).\n" f"{_HOW_TO_FIX}"
    ) from e
  with data:
    keys = set(data.files)
    for images_name, labels_name in (("{}_images", "{}_labels"), ("x_{}", "y_{}")):
      if {images_name.format("train"), images_name.format("test")} <= keys:  # split by key
        parts = [
            _load_npz_arrays(data, path, images_name.format(s), labels_name.format(s))
            for s in (("train", "test") if split == "all" else (split,))
        ]
        return tuple(np.concatenate(p) for p in zip(*parts))
    if "images" not in keys:
      raise ValueError(
          f"{path} has no array `images` (it holds: {', '.join(sorted(keys)) or 'nothing'}). "
          "Save the digits as np.savez(path, images=images, labels=labels), images uint8 "
          "[N, 28, 28] and labels [N] (optional)."
      )
    images, labels = _load_npz_arrays(data, path, "images", "labels")
    if split == "all":
      return images, labels
    rows = (
        _npz_split_rows(data["split"], len(images), split, path)
        if "split" in keys
        else _held_out_rows(len(images), split, path)
    )
    return images[rows], labels[rows]


def _held_out_rows(n: int, split: str, path: str) -> np.ndarray:
  """The rows of `split` of an .npz with no split of its own: the last n // 8 (at least 1) are
  "test", the others "train"."""
  if n < 2:
    raise ValueError(
        f"{path} holds {n} image(s), too few to hold any out: give a `split` array "
        "or at least 2 images, or load it with split='all'."
    )
  num_test = max(1, n // 8)
  return np.arange(n - num_test, n) if split == "test" else np.arange(n - num_test)


def _npz_split_rows(split_array, n: int, split: str, path: str) -> np.ndarray:
  """The rows whose entry of the file's `split` array names `split` ("train"/"test" or 0/1)."""
  s = np.asarray(split_array)
  if s.shape != (n,):
    raise ValueError(
        f"`split` in {path} has shape {s.shape}; expected [{n}], one entry per " "image."
    )
  names = (
      s.astype(str)
      if s.dtype.kind in "US"
      else np.where(s.astype(np.int64) == 0, "train", "test")
      if np.isin(s, (0, 1)).all()
      else None
  )
  if names is None or not np.isin(names, ("train", "test")).all():
    raise ValueError(
        f"`split` in {path} must hold 'train'/'test' (or 0/1) per image, got "
        f"values {np.unique(s)[:5].tolist()}."
    )
  rows = np.flatnonzero(names == split)
  if not len(rows):
    raise ValueError(f"`split` in {path} puts no image in {split!r}.")
  return rows


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


def _load_npz_arrays(data, path: str, images_key: str, labels_key: str):
  try:
    images = _npz_images(data[images_key], f"`{images_key}` in {path}")
    labels = data[labels_key] if labels_key in data.files else None
  except ValueError as e:
    if "allow_pickle" not in str(e):
      raise
    raise ValueError(
        f"{path} stores Python objects, not numeric arrays; save numpy arrays " "with np.savez."
    ) from e
  return images, _npz_labels(labels, len(images), f"`{labels_key}` in {path}")


# tensorflow_datasets.


def _load_tfds(split: str, data_dir, *, download: bool) -> tuple[np.ndarray, np.ndarray]:
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "MNIST source 'tfds' needs tensorflow-datasets and tensorflow, which are not installed "
        f"(bigjax does not require them): {e}.\n{_HOW_TO_FIX}"
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
        f"access.\n{_HOW_TO_FIX}"
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
    missing = _missing_idx_files(directory, split)
    if not missing:
      return _load_idx_dir(directory, split)
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
      + _HOW_TO_FIX
  )


# ----------------------------------------------------------------------------------------------
# Image transforms.


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """The [size_out, size_in] matrix of PIL's bilinear resize along one axis.

  PIL's BILINEAR resize is separable and linear (a triangle filter whose support widens by the
  scale factor when downsizing, i.e. antialiased); resizing the rows of an identity image along
  one axis gives its weights exactly.
  """
  eye = Image.fromarray(np.eye(size_in, dtype=np.float32))
  return np.asarray(eye.resize((size_out, size_in), Image.Resampling.BILINEAR)).T


def resize(images: np.ndarray, size: int) -> np.ndarray:
  """Resizes square digits with bilinear interpolation, antialiased when downsizing.

  Computes what PIL's `Image.resize(..., BILINEAR)` computes on float images, as two matrix
  products over the whole batch, then rounds to uint8.

  Args:
    images: uint8 [N, H, W], e.g. MNIST's [N, 28, 28].
    size: the output side, a positive int.

  Returns:
    uint8 [N, size, size]; `images` itself when it already has that shape.
  """
  images = np.asarray(images)
  if images.ndim != 3:
    raise ValueError(
        f"images must have shape [N, H, W], got {images.shape} (for one image " "pass image[None])."
    )
  if images.dtype != np.uint8:
    raise TypeError(
        f"images must be uint8 pixels, got dtype {images.dtype} (from [-1, 1] "
        "floats use from_unit_range first)."
    )
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
    raise ValueError(f"size must be a positive int, got {size!r}.")
  size = int(size)
  if images.shape[1:] == (size, size):
    return images
  rows = _resize_matrix(images.shape[1], size)
  cols = _resize_matrix(images.shape[2], size)
  out = np.empty((len(images), size, size), np.uint8)
  for start in range(0, len(images), 4096):  # bounds the float32 temporaries (~67 MB at 64)
    chunk = images[start : start + 4096].astype(np.float32)
    resized = np.einsum("oh,nhw,pw->nop", rows, chunk, cols, optimize=True)
    out[start : start + 4096] = np.clip(np.round(resized), 0, 255)
  return out


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 pixels [...] in [0, 255] -> float32 [...] in [-1, 1], as x / 127.5 - 1."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"images must be uint8 pixels, got dtype {images.dtype}.")
  return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def from_unit_range(x) -> np.ndarray:
  """Floats [...] in [-1, 1] (e.g. generator samples) -> uint8 pixels [...], the inverse of
  `to_unit_range`; values outside [-1, 1] are clipped, NaN or inf raise a ValueError."""
  x = np.asarray(x, np.float32)
  if not np.all(np.isfinite(x)):
    raise ValueError("from_unit_range got NaN or inf values (did training diverge?).")
  return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
