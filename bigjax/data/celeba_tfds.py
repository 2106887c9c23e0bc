"""CelebA from tensorflow-datasets' `celeb_a` (`bigjax.data.celeba`'s source "tfds").

Opens celeb_a prepared in $BIGJAX_CELEBA_TFDS_DIR, or prepares it first from the files in
$BIGJAX_CELEBA_MANUAL_DIR (downloaded by hand: bigjax never downloads CelebA), then crops,
resizes and caches its images as the folder source does.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
import tqdm

from bigjax.data.celeba_folder import LAYOUT
from bigjax.data.celeba_prepare import (
    CACHE_FORMAT,
    CACHE_SUBDIR,
    CHUNK,
    THREADS,
    cached,
    center_crop_resize,
)

TFDS_DIR_VAR = "BIGJAX_CELEBA_TFDS_DIR"
MANUAL_DIR_VAR = "BIGJAX_CELEBA_MANUAL_DIR"


def load_tfds(
    split: str, image_size: int, crop_size: int, cache_dir: str | None, progress: bool
) -> np.ndarray:
  """`bigjax.data.celeba.load` for source "tfds" (arguments checked there)."""
  fix = f"Without tfds, read the images from a folder instead:\n{LAYOUT}"
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "CelebA source 'tfds' needs tensorflow-datasets and tensorflow, which are not installed "
        f"(bigjax does not require them): {e}. Install them (pip install tensorflow "
        f"tensorflow-datasets) and prepare celeb_a. {fix}"
    ) from e
  data_dir = os.environ.get(TFDS_DIR_VAR) or None
  data_dir = None if data_dir is None else os.path.expanduser(data_dir)
  manual_dir = os.environ.get(MANUAL_DIR_VAR) or None
  where = data_dir or "tfds's default data directory"
  try:
    builder = tfds.builder("celeb_a", data_dir=data_dir)
    if manual_dir:
      config = tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir))
      builder.download_and_prepare(download_config=config)
    prepared = _tfds_prepared(builder)
  except ImportError as e:
    raise ImportError(
        f"tensorflow_datasets needs TensorFlow to read celeb_a ({type(e).__name__}: {e}); "
        f"pip install tensorflow. {fix}"
    ) from e
  except Exception as e:  # tfds raises many types: no network, bad files, unknown name ...
    raise RuntimeError(
        f"tensorflow_datasets could not {'prepare' if manual_dir else 'open'} celeb_a in "
        f"{where}{f' from ${MANUAL_DIR_VAR}={manual_dir}' if manual_dir else ''} "
        f"({type(e).__name__}: {e}). {fix}"
    ) from e
  if not prepared:
    raise FileNotFoundError(
        f"tensorflow_datasets' celeb_a is not prepared in {where} (set ${TFDS_DIR_VAR} to the "
        f"tfds data_dir that holds it). To prepare it, set ${MANUAL_DIR_VAR} to a directory "
        "holding the CelebA files downloaded by hand (see tfds's celeb_a page for the file "
        f"names); bigjax never downloads them. {fix}"
    )
  splits = ("train", "validation", "test") if split == "all" else (split,)
  counts = [int(builder.info.splits[s].num_examples) for s in splits]
  name = str(getattr(builder.info, "full_name", "celeb_a"))
  meta = dict(
      format=CACHE_FORMAT,
      source=f"tfds:{name}",
      split=split,
      image_size=image_size,
      crop_size=crop_size,
      count=sum(counts),
      splits=dict(zip(splits, counts)),
  )
  if cache_dir is None:
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    cache_dir = os.path.join(os.path.expanduser(root), CACHE_SUBDIR)

  def fill(out: np.ndarray, bar: tqdm.tqdm) -> None:
    crop = lambda image: center_crop_resize(image, crop_size, image_size)
    index = 0
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:

      def flush(chunk):
        nonlocal index
        if chunk:
          out[index : index + len(chunk)] = np.stack(list(pool.map(crop, chunk)))
          index += len(chunk)
          bar.update(len(chunk))

      for s, count in zip(splits, counts):
        chunk, seen = [], 0
        for example in tfds.as_numpy(builder.as_dataset(split=s, shuffle_files=False)):
          seen += 1
          if seen > count:
            break
          chunk.append(example["image"])
          if len(chunk) == CHUNK:
            flush(chunk)
            chunk = []
        flush(chunk)
        if seen != count:
          raise RuntimeError(
              f"tensorflow_datasets' celeb_a split {s!r} yielded "
              f"{'more than ' if seen > count else ''}{min(seen, count)} images, but its "
              f"dataset info says {count}; prepare celeb_a again. {fix}"
          )

  return cached(cache_dir, meta, fill, progress)


def _tfds_prepared(builder) -> bool:
  is_prepared = getattr(builder, "is_prepared", None)  # newer tfds versions
  if callable(is_prepared):
    return bool(is_prepared())
  return os.path.isdir(os.fspath(builder.data_dir))  # what as_dataset checks
