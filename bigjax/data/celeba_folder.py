"""CelebA from a folder of the aligned images downloaded by hand (`bigjax.data.celeba`'s DIR).

Finds the images in any of the known layouts (the official one, a flat folder, Google Drive's,
Kaggle's, PNG copies), reads the official partition file for the splits, and decodes, crops and
resizes the images into the cache with threads (`bigjax.data.celeba_prepare`).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os

import numpy as np
import tqdm
from PIL import Image

from bigjax.data import celeba_prepare
from bigjax.data.celeba_prepare import CACHE_FORMAT, CACHE_SUBDIR, CHUNK, THREADS, cached

PARTITION_FILE = "list_eval_partition.txt"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

_PARTITION_IDS = {"train": 0, "validation": 1, "test": 2}
_PARTITION_NAMES = (PARTITION_FILE, "list_eval_partition.csv")  # .csv: Kaggle's copy

LAYOUT = (
    "CelebA cannot be downloaded automatically: get the aligned images by hand from the\n"
    "official site https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Img/img_align_celeba.zip,\n"
    "202,599 JPEGs, and Eval/list_eval_partition.txt), then lay them out as\n"
    "  DIR/img_align_celeba/000001.jpg ... 202599.jpg   (unzip img_align_celeba.zip in DIR)\n"
    "  DIR/list_eval_partition.txt                      (lines '000001.jpg 0'; 0 = train,\n"
    "                                                    1 = validation, 2 = test)\n"
    "and pass DIR as the source (--config.data.source=DIR; in Python celeba.load(DIR))."
)


def _image_names(directory: str) -> list[str]:
  """The image files directly in `directory`, sorted by name."""
  with os.scandir(directory) as entries:
    return sorted(
        e.name for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()
    )


def _find_images(root: str) -> tuple[str, list[str]]:
  """The folder under `root` that holds the images, and their names; FileNotFoundError if
  none of the known layouts has any."""
  candidates = [
      os.path.join(root, "img_align_celeba"),
      os.path.join(root, "img_align_celeba", "img_align_celeba"),  # Kaggle
      os.path.join(root, "Img", "img_align_celeba"),  # Google Drive
      root,
  ]
  for directory in candidates:
    if os.path.isdir(directory):
      names = _image_names(directory)
      if names:
        return directory, names
  looked = "".join(f"  {d}\n" for d in candidates)
  raise FileNotFoundError(
      f"The CelebA directory {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)} files); "
      f"looked in\n{looked}{LAYOUT}"
  )


def _partition_candidates(root: str, image_dir: str) -> list[str]:
  dirs = [image_dir, os.path.dirname(image_dir), root, os.path.join(root, "Eval")]
  paths = []
  for d in dirs:
    for name in _PARTITION_NAMES:
      path = os.path.join(d, name)
      if path not in paths:
        paths.append(path)
  return paths


def _read_partition(path: str) -> list[tuple[str, int]]:
  """(file name, partition id) for each line of list_eval_partition.txt (or Kaggle's .csv)."""
  entries = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      fields = line.replace(",", " ").split()
      if not fields:
        continue
      if len(fields) == 2 and fields[1] in ("0", "1", "2"):
        entries.append((fields[0], int(fields[1])))
      elif number == 1 and not fields[-1].isdigit():
        continue  # a header, e.g. image_id,partition
      else:
        raise ValueError(
            f"{path}, line {number}: expected '<file name> <0, 1 or 2>' (0 = train, "
            f"1 = validation, 2 = test), got {line.strip()!r}. Download "
            "list_eval_partition.txt again from the CelebA site."
        )
  if not entries:
    raise ValueError(
        f"{path} lists no images; download list_eval_partition.txt again from the " "CelebA site."
    )
  return entries


def _select(root: str, image_dir: str, names: list[str], split: str) -> list[str]:
  """The file names of `split`, in the partition file's order (sorted without one)."""
  candidates = _partition_candidates(root, image_dir)
  partition = next((p for p in candidates if os.path.isfile(p)), None)
  if partition is None:
    if split == "all":
      return names
    looked = "".join(f"  {p}\n" for p in candidates)
    raise ValueError(
        f"Split {split!r} of CelebA needs the official partition file {PARTITION_FILE} (from "
        f"the CelebA site's Eval folder); looked for it in\n{looked}Put it next to the images' "
        "folder, or pass split='all' to use every image in "
        f"{image_dir!r} ({len(names)} images)."
    )
  entries = _read_partition(partition)
  wanted = [name for name, part in entries if split == "all" or part == _PARTITION_IDS[split]]
  if not wanted:
    raise ValueError(
        f"{partition} lists no images of split {split!r}; download "
        f"{PARTITION_FILE} again from the CelebA site."
    )
  present = set(names)
  by_stem = {os.path.splitext(name)[0]: name for name in names}  # 000001.jpg -> 000001.png
  files, missing = [], []
  for name in wanted:
    found = name if name in present else by_stem.get(os.path.splitext(name)[0])
    if found is None:
      missing.append(name)
    else:
      files.append(found)
  if missing:
    raise FileNotFoundError(
        f"The CelebA images in {image_dir!r} are incomplete: {len(missing)} of {len(wanted)} "
        f"images listed in {os.path.basename(partition)} for split {split!r} are missing, e.g. "
        f"{', '.join(missing[:3])}. Unzip img_align_celeba.zip again (it holds 202,599 "
        f"images), or use the {PARTITION_FILE} that belongs to these images ({partition})."
    )
  return files


def load_folder(
    root: str, split: str, image_size: int, crop_size: int, cache_dir: str | None, progress: bool
) -> np.ndarray:
  """`bigjax.data.celeba.load` for the directory `root` (arguments checked there)."""
  if not os.path.isdir(root):
    if os.path.isfile(root):
      raise FileNotFoundError(
          f"The CelebA source {root!r} is a file, not a directory (unzip it if it is "
          f"img_align_celeba.zip, and pass the directory).\n{LAYOUT}"
      )
    raise FileNotFoundError(
        f"The CelebA directory {root!r} does not exist (and the source is not 'tfds').\n"
        f"{LAYOUT}"
    )
  image_dir, names = _find_images(root)
  files = _select(root, image_dir, names, split)
  meta = dict(
      format=CACHE_FORMAT,
      source="folder",
      split=split,
      image_size=image_size,
      crop_size=crop_size,
      count=len(files),
      first=files[0],
      last=files[-1],
      names_sha256=hashlib.sha256("\n".join(files).encode()).hexdigest(),
  )
  cache_dir = cache_dir or os.path.join(root, CACHE_SUBDIR)

  def fill(out: np.ndarray, bar: tqdm.tqdm) -> None:
    paths = [os.path.join(image_dir, name) for name in files]
    read = lambda path: _read_image(path, crop_size, image_size)
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
      for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        out[start : start + len(chunk)] = np.stack(list(pool.map(read, chunk)))
        bar.update(len(chunk))

  return cached(cache_dir, meta, fill, progress)


def _read_image(path: str, crop_size: int, image_size: int) -> np.ndarray:
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")  # decodes the whole file; also grayscale/RGBA -> RGB
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ValueError(
        f"Cannot read the image {path} ({type(e).__name__}: {e}): the file is corrupt, "
        "truncated or not an image. Replace it with the file from img_align_celeba.zip (or "
        "delete it and its line in list_eval_partition.txt)."
    ) from e
  return celeba_prepare.crop_resize(image, crop_size, image_size, f"The image {path}")
