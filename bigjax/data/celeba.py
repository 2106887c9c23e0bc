"""CelebA faces as a uint8 numpy array, cropped and resized once and cached on disk.

`load(source, split=..., image_size=120, crop_size=140)` returns uint8 [N, image_size,
image_size, 3] RGB images (120 x 120 in the paper's Table 2). The source is one of

  DIR      a directory holding the aligned CelebA images, which must be downloaded by hand from
           the official site (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html): unzip
           img_align_celeba.zip into DIR and put list_eval_partition.txt next to it, so that
           DIR/img_align_celeba/000001.jpg ... and DIR/list_eval_partition.txt exist. Also read:
           a DIR that holds the .jpg/.png files itself, the Google Drive layout
           (DIR/Img/img_align_celeba/, DIR/Eval/list_eval_partition.txt), Kaggle's
           (DIR/img_align_celeba/img_align_celeba/, DIR/list_eval_partition.csv) and the PNG
           version of the images (000001.png for the listed 000001.jpg).
  "tfds"   tensorflow-datasets' `celeb_a`, already prepared in $BIGJAX_CELEBA_TFDS_DIR (tfds's
           data_dir; default $TFDS_DATA_DIR or ~/tensorflow_datasets), or prepared on the first
           call from the files in $BIGJAX_CELEBA_MANUAL_DIR when that is set. Needs tensorflow
           and tensorflow-datasets (neither is a bigjax requirement).

Splits are the official partition: "train" (162,770 images), "validation" (19,867), "test"
(19,962), and "all" (the 202,599 images of the three, in the partition file's order). Without a
partition file only "all" can be read: every image of the folder, sorted by file name.

Every image is cropped to the centred `crop_size` x `crop_size` square (the aligned images are
178 wide and 218 high), then resized to `image_size` x `image_size` with PIL's bilinear filter
(antialiased when downscaling); see `center_crop_resize`. Decoding 200k JPEGs takes minutes, so
the result is written once, with threads and a progress bar, to
`cache_dir/celeba_{split}_{image_size}_crop{crop_size}.npy` (8.75 GB for "all" at 120 x 120)
plus a small .json describing the images it was made from; later calls with the same arguments
open that file as a read-only memory map and decode nothing. A cache whose .json does not match
the current images (another number of images, other file names) is rebuilt. The file is
written under a temporary name and renamed when complete, so a run killed while preprocessing
never leaves a file that looks finished. (`bigjax.data.mnist.to_unit_range` maps the uint8
images to the [-1, 1] floats the models work in.)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import socket

import numpy as np
import tqdm
from PIL import Image

TFDS_DIR_VAR = "BIGJAX_CELEBA_TFDS_DIR"
MANUAL_DIR_VAR = "BIGJAX_CELEBA_MANUAL_DIR"
SPLITS = ("train", "validation", "test", "all")
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CACHE_SUBDIR = "bigjax_cache"

_PARTITION_IDS = {"train": 0, "validation": 1, "test": 2}
_PARTITION_NAMES = (PARTITION_FILE, "list_eval_partition.csv")  # .csv: Kaggle's copy
_CACHE_FORMAT = 1  # bump when the preprocessing changes: old caches are rebuilt
_CHUNK = 1024  # images decoded per batch of thread-pool tasks
_THREADS = min(16, os.cpu_count() or 1)

_LAYOUT = (
    "CelebA cannot be downloaded automatically: get the aligned images by hand from the\n"
    "official site https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Img/img_align_celeba.zip,\n"
    "202,599 JPEGs, and Eval/list_eval_partition.txt), then lay them out as\n"
    "  DIR/img_align_celeba/000001.jpg ... 202599.jpg   (unzip img_align_celeba.zip in DIR)\n"
    "  DIR/list_eval_partition.txt                      (lines '000001.jpg 0'; 0 = train,\n"
    "                                                    1 = validation, 2 = test)\n"
    "and pass DIR as the source (--config.data.source=DIR; in Python celeba.load(DIR))."
)


# ----------------------------------------------------------------------------------------------
# Loading.


def load(
    source: str | os.PathLike,
    *,
    split: str = "train",
    image_size: int = 120,
    crop_size: int = 140,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> np.ndarray:
  """Loads CelebA faces from `source`, centre-cropped and resized (see the module docstring).

  The paper (Table 2) trains on 120 x 120 CelebA images but does not say how they were cropped;
  the default 140 x 140 centre crop (the face region of the 178 x 218 aligned images, a common
  choice in GAN code) is this code's choice, not the paper's.

  Args:
    source: a directory holding the aligned CelebA images (see the module docstring for the
      layouts read), or "tfds".
    split: "train", "validation", "test" or "all".
    image_size: the side of the returned images, a positive int (larger than crop_size
      upsamples).
    crop_size: the side of the centred square cut from each image before resizing, a positive
      int no larger than the images' sides (178 x 218 for aligned CelebA).
    cache_dir: where the preprocessed images are cached. Default: DIR/bigjax_cache for a
      directory source, <tfds data dir>/bigjax_cache for "tfds".
    progress: show a tqdm bar while preprocessing.

  Returns:
    uint8 [N, image_size, image_size, 3] RGB images, a read-only memory map of the cache file.

  Raises:
    ValueError: a bad argument, a split other than "all" without a partition file, or an image
      that is corrupt or smaller than crop_size (the message names the file).
    FileNotFoundError: the directory does not exist, holds no images, or lacks images that the
      partition file lists; or tfds's celeb_a is not prepared.
    OSError: the cache cannot be written (the message says to pass cache_dir).
    ImportError, RuntimeError: "tfds" without tensorflow-datasets or tensorflow, or tfds failed.
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
  _check_size("image_size", image_size)
  _check_size("crop_size", crop_size)
  image_size, crop_size = int(image_size), int(crop_size)
  source = os.fspath(source)
  if cache_dir is not None:
    cache_dir = os.path.expanduser(os.fspath(cache_dir))
  if source == "tfds":
    return _load_tfds(split, image_size, crop_size, cache_dir, progress)
  return _load_folder(os.path.expanduser(source), split, image_size, crop_size, cache_dir, progress)


def _check_size(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")


def _cache_paths(cache_dir: str, split: str, image_size: int, crop_size: int):
  path = os.path.join(cache_dir, f"celeba_{split}_{image_size}_crop{crop_size}.npy")
  return path, path[: -len(".npy")] + ".json"


# ----------------------------------------------------------------------------------------------
# Image folders.


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
      f"looked in\n{looked}{_LAYOUT}"
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


def _load_folder(
    root: str, split: str, image_size: int, crop_size: int, cache_dir: str | None, progress: bool
) -> np.ndarray:
  if not os.path.isdir(root):
    if os.path.isfile(root):
      raise FileNotFoundError(
          f"The CelebA source {root!r} is a file, not a directory (unzip it if it is "
          f"img_align_celeba.zip, and pass the directory).\n{_LAYOUT}"
      )
    raise FileNotFoundError(
        f"The CelebA directory {root!r} does not exist (and the source is not 'tfds').\n"
        f"{_LAYOUT}"
    )
  image_dir, names = _find_images(root)
  files = _select(root, image_dir, names, split)
  meta = dict(
      format=_CACHE_FORMAT,
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
    with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:
      for start in range(0, len(paths), _CHUNK):
        chunk = paths[start : start + _CHUNK]
        out[start : start + len(chunk)] = np.stack(list(pool.map(read, chunk)))
        bar.update(len(chunk))

  return _cached(cache_dir, meta, fill, progress)


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
  return _crop_resize(image, crop_size, image_size, f"The image {path}")


# ----------------------------------------------------------------------------------------------
# tensorflow_datasets.


def _load_tfds(
    split: str, image_size: int, crop_size: int, cache_dir: str | None, progress: bool
) -> np.ndarray:
  fix = f"Without tfds, read the images from a folder instead:\n{_LAYOUT}"
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
      format=_CACHE_FORMAT,
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
    with concurrent.futures.ThreadPoolExecutor(_THREADS) as pool:

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
          if len(chunk) == _CHUNK:
            flush(chunk)
            chunk = []
        flush(chunk)
        if seen != count:
          raise RuntimeError(
              f"tensorflow_datasets' celeb_a split {s!r} yielded "
              f"{'more than ' if seen > count else ''}{min(seen, count)} images, but its "
              f"dataset info says {count}; prepare celeb_a again. {fix}"
          )

  return _cached(cache_dir, meta, fill, progress)


def _tfds_prepared(builder) -> bool:
  is_prepared = getattr(builder, "is_prepared", None)  # newer tfds versions
  if callable(is_prepared):
    return bool(is_prepared())
  return os.path.isdir(os.fspath(builder.data_dir))  # what as_dataset checks


# ----------------------------------------------------------------------------------------------
# The cache.


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


def _cached(cache_dir: str, meta: dict, fill, progress: bool) -> np.ndarray:
  """Opens the cache described by `meta`, or builds it with `fill(out, bar)` first."""
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


# ----------------------------------------------------------------------------------------------
# Preprocessing.


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


def _crop_resize(image: Image.Image, crop_size: int, image_size: int, where: str) -> np.ndarray:
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
  _check_size("crop_size", crop_size)
  _check_size("image_size", image_size)
  return _crop_resize(
      _as_rgb_image(image, "The image"), int(crop_size), int(image_size), "The image"
  )
