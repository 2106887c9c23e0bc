"""Preparing CelebA: the centre crop and resize of every image, and the on-disk cache of the result.

`center_crop_resize` is the preprocessing (`bigjax.data.celeba` documents the choice of crop).
`cached` opens the .npy cache a source describes by its `meta` dict, or builds it first with
the source's `fill(out, bar)` under a temporary name, renamed when complete, so a killed run
never leaves a file that looks finished; a cache whose .json differs from `meta` is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import socket

import numpy as np
import tqdm
from PIL import Image

CACHE_SUBDIR = "bigjax_cache"
CACHE_FORMAT = 1  # bump when the preprocessing changes: old caches are rebuilt
CHUNK = 1024  # images decoded per batch of thread-pool tasks
THREADS = min(16, os.cpu_count() or 1)


def check_size(name: str, value) -> None:
  """Raises a ValueError naming `name` unless `value` is a positive int."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _cache_paths(cache_dir: str, split: str, image_size: int, crop_size: int):
  path = os.path.join(cache_dir, f"celeba_{split}_{image_size}_crop{crop_size}.npy")
  return path, path[: -len(".npy")] + ".json"


def _open_cache(path: str, meta_path: str, meta: dict) -> np.ndarray | None:
  """The cached images if `path` and `meta_path` hold exactly what `meta` describes."""
  try:
    with open(meta_path, encoding="utf-8") as f:
      if json.load(f) != meta:
        return None
    images = np.load(path, mmap_mode="r")
  except (OSError, ValueError):  # missing, unreadable, truncated: rebuild
    return None
  shape = (meta["count"], meta["image_size"], meta["image_size"], 3)
  if images.shape != shape or images.dtype != np.uint8:
    return None
  return images


def _remove_stale_temporaries(cache_dir: str, basename: str) -> None:
  """Deletes the temporary files that killed runs on this host left for `basename`."""
  prefix = f"{basename}.tmp-{socket.gethostname()}-"
  for name in os.listdir(cache_dir):
    if not name.startswith(prefix):
      continue
    try:
      pid = int(name[len(prefix) :])
    except ValueError:
      continue
    if pid == os.getpid():
      continue
    try:
      os.kill(pid, 0)
      continue  # another live process is writing it
    except ProcessLookupError:
      pass
    except OSError:  # e.g. PermissionError: alive, someone else's
      continue
    try:
      os.remove(os.path.join(cache_dir, name))
    except OSError:
      pass


def cached(cache_dir: str, meta: dict, fill, progress: bool) -> np.ndarray:
  """Opens the cache described by `meta`, or builds it with `fill(out, bar)` first.

  Args:
    cache_dir: the directory of the cache files (created if missing).
    meta: what the images are made from: split, image_size, crop_size, count and whatever
      identifies the source's images; it is written as the cache's .json.
    fill: fills `out`, uint8 [count, image_size, image_size, 3] (a memory map of the file being
      written), advancing the tqdm bar `bar` by the images it writes.
    progress: show the bar.

  Returns:
    uint8 [count, image_size, image_size, 3], a read-only memory map of the cache file.
  """
  path, meta_path = _cache_paths(cache_dir, meta["split"], meta["image_size"], meta["crop_size"])
  images = _open_cache(path, meta_path, meta)
  if images is not None:
    return images
  size = meta["image_size"]
  shape = (meta["count"], size, size, 3)
  nbytes = int(np.prod(shape))
  fix = "Pass cache_dir= (--config.data.cache_dir=) a writable directory with enough free " "space."
  try:
    os.makedirs(cache_dir, exist_ok=True)
    _remove_stale_temporaries(cache_dir, os.path.basename(path))
    free = shutil.disk_usage(cache_dir).free
  except OSError as e:
    raise OSError(
        f"Cannot write the CelebA cache to {cache_dir!r} ({type(e).__name__}: {e}). " f"{fix}"
    ) from e
  if free < nbytes:
    raise OSError(
        f"The CelebA cache {path} needs {nbytes / 1e9:.2f} GB, but only "
        f"{free / 1e9:.2f} GB are free in {cache_dir!r}. {fix}"
    )
  tmp = f"{path}.tmp-{socket.gethostname()}-{os.getpid()}"
  try:
    try:
      out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    except OSError as e:
      raise OSError(
          f"Cannot write the CelebA cache to {cache_dir!r} ({type(e).__name__}: " f"{e}). {fix}"
      ) from e
    desc = f"CelebA {meta['split']} -> {size}x{size}"
    with tqdm.tqdm(total=meta["count"], desc=desc, unit="img", disable=not progress) as bar:
      fill(out, bar)
    out.flush()
    del out
    if os.path.exists(meta_path):
      os.remove(meta_path)  # never an old .json beside the new images
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  meta_tmp = f"{meta_path}.tmp-{socket.gethostname()}-{os.getpid()}"
  with open(meta_tmp, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  os.replace(meta_tmp, meta_path)
  return np.load(path, mmap_mode="r")


def _as_rgb_image(image, where: str) -> Image.Image:
  if isinstance(image, Image.Image):
    return image if image.mode == "RGB" else image.convert("RGB")
  array = np.asarray(image)
  if array.dtype != np.uint8:
    raise TypeError(f"{where} must hold uint8 pixels, got dtype {array.dtype}.")
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
    raise ValueError(
        f"{where} must have shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got " f"{array.shape}."
    )
  return _as_rgb_image(Image.fromarray(array), where)


def crop_resize(image: Image.Image, crop_size: int, image_size: int, where: str) -> np.ndarray:
  """`center_crop_resize` of an RGB PIL image, sizes already checked; `where` names the image in
  the error raised when it is smaller than crop_size. Returns uint8 [image_size, image_size, 3]."""
  width, height = image.size
  if width < crop_size or height < crop_size:
    raise ValueError(
        f"{where} is {width} x {height} pixels (width x height), smaller than crop_size="
        f"{crop_size} on a side. Aligned CelebA images are 178 x 218: pass a crop_size of at "
        f"most {min(width, height)}, or replace the image with the original file."
    )
  left, top = (width - crop_size) // 2, (height - crop_size) // 2
  image = image.crop((left, top, left + crop_size, top + crop_size))
  if crop_size != image_size:
    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.array(image, np.uint8)


def center_crop_resize(
    image: np.ndarray | Image.Image, crop_size: int, image_size: int
) -> np.ndarray:
  """Cuts the centred `crop_size` square out of an image and resizes it to `image_size`.

  The square starts at ((W - crop_size) // 2, (H - crop_size) // 2); for a 178 x 218 aligned
  CelebA image and crop_size 140 that is columns 19..158 and rows 39..178. The resize is PIL's
  `Image.resize(..., BILINEAR)` (antialiased when downscaling), skipped when the sizes are
  equal.

  Args:
    image: a PIL image, or uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] pixels; grayscale
      and RGBA are converted to RGB (alpha dropped).
    crop_size: the side of the square cut out, a positive int no larger than H or W.
    image_size: the output side, a positive int.

  Returns:
    uint8 [image_size, image_size, 3].
  """
  check_size("crop_size", crop_size)
  check_size("image_size", image_size)
  return crop_resize(
      _as_rgb_image(image, "The image"), int(crop_size), int(image_size), "The image"
  )
