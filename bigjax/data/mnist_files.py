"""Reading MNIST from files: the original IDX files in a directory, and .npz files.

`bigjax.data.mnist.load` dispatches here for a directory or an .npz source (the module docstring
there lists the layouts read). Every error says what is wrong with which file and, where the
data itself is missing, `HOW_TO_FIX` lists the ways to provide MNIST.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

ENV_VAR = "BIGJAX_MNIST_DIR"  # a directory of IDX files, read by source "auto"

_SIDE = 28
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
_IDX_PREFIX = {"train": "train", "test": "t10k"}

HOW_TO_FIX = (
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


def missing_idx_files(directory: str, split: str) -> list[str]:
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


def load_idx_dir(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images uint8 [N, 28, 28] and labels int32 [N] of `split` from the IDX files in `directory`
  ("all" concatenates train and test); FileNotFoundError naming the missing files."""
  missing = missing_idx_files(directory, split)
  if missing:
    present = sorted(os.listdir(directory))
    shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "") or "nothing"
    raise FileNotFoundError(
        f"The directory {directory!r} lacks the MNIST IDX files {', '.join(missing)} (raw or "
        f".gz) for split {split!r}; it holds: {shown}.\n{HOW_TO_FIX}"
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


def load_npz(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Images uint8 [N, 28, 28] and labels int32 [N] (-1 without `labels`) of `split` from an
  .npz file, in any layout `bigjax.data.mnist` lists; ValueError saying what is wrong."""
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # np.load raises several types for a file that is no .npz
    raise ValueError(
        f"{path} is not a readable .npz file ({type(e).__name__}: {e}).\n" f"{HOW_TO_FIX}"
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
