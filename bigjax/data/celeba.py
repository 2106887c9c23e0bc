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

import os

import numpy as np

from bigjax.data.celeba_folder import IMAGE_EXTENSIONS, PARTITION_FILE, load_folder
from bigjax.data.celeba_prepare import CACHE_SUBDIR, center_crop_resize, check_size
from bigjax.data.celeba_tfds import MANUAL_DIR_VAR, TFDS_DIR_VAR, load_tfds

__all__ = [
    "CACHE_SUBDIR",
    "IMAGE_EXTENSIONS",
    "MANUAL_DIR_VAR",
    "PARTITION_FILE",
    "SPLITS",
    "TFDS_DIR_VAR",
    "center_crop_resize",
    "load",
]

SPLITS = ("train", "validation", "test", "all")


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
  check_size("image_size", image_size)
  check_size("crop_size", crop_size)
  image_size, crop_size = int(image_size), int(crop_size)
  source = os.fspath(source)
  if cache_dir is not None:
    cache_dir = os.path.expanduser(os.fspath(cache_dir))
  if source == "tfds":
    return load_tfds(split, image_size, crop_size, cache_dir, progress)
  return load_folder(os.path.expanduser(source), split, image_size, crop_size, cache_dir, progress)
