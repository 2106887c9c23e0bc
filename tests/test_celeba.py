"""Tests for bigjax.data.celeba on a dozen fake 178 x 218 "faces" written here, and a stand-in
tfds."""

import json
import os
import socket
import sys
import types

import numpy as np
import pytest
from PIL import Image

from bigjax.data import celeba, celeba_folder, celeba_prepare

_W, _H = 178, 218  # aligned CelebA: width x height
_BOX = (19, 39, 159, 179)  # the centred 140 x 140 square (left, top, right, bottom)
# Partition of the 12 fake images 000001..000012: 6 train, 3 validation, 3 test.
_PARTS = (0, 0, 1, 0, 2, 0, 1, 0, 2, 0, 1, 2)
# The order of the lines in the fake partition file (not sorted, to test that it is followed).
_LINE_ORDER = (3, 0, 1, 2, 11, 5, 4, 7, 6, 9, 8, 10)
_REAL_OPEN = Image.open  # for the references, whatever the tests patch


def _face(i, size=(_W, _H)):
  """A blocky RGB image: 8 x 8 pixel blocks of colours that depend on i and the position."""
  w, h = size
  rows, cols = np.meshgrid(np.arange(h) // 8, np.arange(w) // 8, indexing="ij")
  pixels = np.stack(
      [(rows * 37 + i * 50) % 256, (cols * 53 + i * 20) % 256, (rows * cols * 7 + i * 90) % 256], -1
  )
  return pixels.astype(np.uint8)


def _name(i):
  return f"{i + 1:06d}.jpg"


def _write_image(path, pixels):
  """Saves PNG content (lossless, so values are checkable) under any name, even .jpg: the
  loader, like PIL, goes by the content."""
  Image.fromarray(pixels).save(path, format="PNG")


def _make_celeba(root, n=12, parts=_PARTS, line_order=_LINE_ORDER, layout="official"):
  """Writes n fake faces and (for "official") list_eval_partition.txt; returns the image dir."""
  image_dir = os.path.join(root, "img_align_celeba") if layout == "official" else str(root)
  os.makedirs(image_dir, exist_ok=True)
  for i in range(n):
    _write_image(os.path.join(image_dir, _name(i)), _face(i))
  if layout == "official":
    with open(os.path.join(root, "list_eval_partition.txt"), "w") as f:
      f.writelines(f"{_name(i)} {parts[i]}\n" for i in line_order)
  return image_dir


def _expected(image_dir, names, image_size=20, crop_size=140):
  """What PIL itself makes of the files: centre crop, then BILINEAR resize."""
  out = []
  for name in names:
    with _REAL_OPEN(os.path.join(image_dir, name)) as image:
      image = image.convert("RGB")
      left, top = (image.width - crop_size) // 2, (image.height - crop_size) // 2
      image = image.crop((left, top, left + crop_size, top + crop_size))
      out.append(np.asarray(image.resize((image_size, image_size), Image.BILINEAR)))
  return np.stack(out)


def _split_names(split):
  return [
      _name(i)
      for i in _LINE_ORDER
      if split == "all" or _PARTS[i] == {"train": 0, "validation": 1, "test": 2}[split]
  ]


@pytest.fixture
def celeba_dir(tmp_path):
  root = tmp_path / "celeba"
  _make_celeba(root)
  return root


@pytest.fixture
def count_opens(monkeypatch):
  """Counts Image.open calls made by bigjax.data.celeba."""
  calls = []

  def counting_open(*args, **kwargs):
    calls.append(args[0])
    return _REAL_OPEN(*args, **kwargs)

  monkeypatch.setattr(celeba_folder.Image, "open", counting_open)
  return calls


def _no_decoding(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError("decoded an image although the cache is valid")

  monkeypatch.setattr(celeba_folder.Image, "open", fail)


# ----------------------------------------------------------------------------------------------
# Image folders.


@pytest.mark.parametrize("split, n", [("train", 6), ("validation", 3), ("test", 3), ("all", 12)])
def test_splits_follow_the_partition_file(celeba_dir, split, n):
  images = celeba.load(str(celeba_dir), split=split, image_size=20, progress=False)
  assert images.shape == (n, 20, 20, 3) and images.dtype == np.uint8 and len(images) == n
  expected = _expected(celeba_dir / "img_align_celeba", _split_names(split))
  np.testing.assert_array_equal(images, expected)  # same pixels as PIL, file order
  np.testing.assert_array_equal(images[np.array([2, 0])], expected[[2, 0]])  # fancy indexing


def test_default_sizes_and_upsampling(celeba_dir):
  images = celeba.load(celeba_dir, split="test", progress=False)
  assert images.shape == (3, 120, 120, 3)
  np.testing.assert_array_equal(
      images, _expected(celeba_dir / "img_align_celeba", _split_names("test"), 120)
  )
  big = celeba.load(celeba_dir, split="test", image_size=160, crop_size=100, progress=False)
  np.testing.assert_array_equal(
      big, _expected(celeba_dir / "img_align_celeba", _split_names("test"), 160, 100)
  )
  same = celeba.load(celeba_dir, split="test", image_size=140, progress=False)
  with Image.open(celeba_dir / "img_align_celeba" / _split_names("test")[0]) as image:
    np.testing.assert_array_equal(same[0], np.asarray(image.convert("RGB").crop(_BOX)))


def test_crop_geometry(tmp_path):
  pixels = np.zeros((_H, _W, 3), np.uint8)
  pixels[:] = (200, 30, 30)  # outside the crop: red
  left, top, right, bottom = _BOX
  pixels[top:bottom, left:right] = (30, 30, 200)  # the centred 140 square: blue
  pixels[top : top + 35, left + 70 : right] = (30, 200, 30)  # a marker: top rows, right half
  image_dir = tmp_path / "img_align_celeba"
  image_dir.mkdir()
  Image.fromarray(pixels).save(image_dir / "000001.png")
  out = celeba.load(tmp_path, split="all", image_size=20, progress=False)[0]
  # The marker covers output rows 0..4 and columns 10..19; no red anywhere.
  np.testing.assert_array_equal(out[:4, 11:], np.broadcast_to((30, 200, 30), (4, 9, 3)))
  np.testing.assert_array_equal(out[6:], np.broadcast_to((30, 30, 200), (14, 20, 3)))
  np.testing.assert_array_equal(out[:4, :9], np.broadcast_to((30, 30, 200), (4, 9, 3)))
  assert out[..., 0].max() <= 30


def test_center_crop_resize_helper():
  face = _face(3)
  out = celeba.center_crop_resize(face, 140, 20)
  assert out.shape == (20, 20, 3) and out.dtype == np.uint8
  ref = Image.fromarray(face).crop(_BOX).resize((20, 20), Image.BILINEAR)
  np.testing.assert_array_equal(out, np.asarray(ref))
  np.testing.assert_array_equal(celeba.center_crop_resize(Image.fromarray(face), 140, 20), out)
  gray = celeba.center_crop_resize(face[..., 0], 140, 20)  # grayscale -> RGB
  assert gray.shape == (20, 20, 3) and np.all(gray[..., 0] == gray[..., 2])
  rgba = np.concatenate([face, np.full((_H, _W, 1), 7, np.uint8)], -1)
  np.testing.assert_array_equal(celeba.center_crop_resize(rgba, 140, 20), out)
  with pytest.raises(TypeError, match="uint8"):
    celeba.center_crop_resize(face.astype(np.float32), 140, 20)
  with pytest.raises(ValueError, match="smaller than crop_size=200"):
    celeba.center_crop_resize(face, 200, 20)
  with pytest.raises(ValueError, match="image_size must be a positive int"):
    celeba.center_crop_resize(face, 140, 0)


def test_grayscale_rgba_and_jpeg_files(tmp_path):
  face = _face(5)
  Image.fromarray(face[..., 1]).save(tmp_path / "a.png")  # L
  Image.fromarray(np.concatenate([face, np.full((_H, _W, 1), 9, np.uint8)], -1)).save(
      tmp_path / "b.png"
  )  # RGBA
  Image.fromarray(face).save(tmp_path / "c.jpg", quality=95)  # a real JPEG
  images = celeba.load(tmp_path, split="all", image_size=20, progress=False)
  assert images.shape == (3, 20, 20, 3)
  np.testing.assert_array_equal(
      images[0], np.repeat(celeba.center_crop_resize(face[..., 1], 140, 20)[..., :1], 3, -1)
  )
  np.testing.assert_array_equal(images[1], celeba.center_crop_resize(face, 140, 20))
  np.testing.assert_array_equal(images, _expected(tmp_path, ["a.png", "b.png", "c.jpg"]))
  jpeg_error = np.abs(images[2].astype(int) - celeba.center_crop_resize(face, 140, 20)).mean()
  assert jpeg_error < 8


def test_flat_folder_without_partition_file(tmp_path):
  image_dir = _make_celeba(tmp_path / "faces", n=4, layout="flat")
  (tmp_path / "faces" / "notes.txt").write_text("not an image")
  images = celeba.load(image_dir, split="all", image_size=20, progress=False)
  np.testing.assert_array_equal(images, _expected(image_dir, [_name(i) for i in range(4)]))
  with pytest.raises(
      ValueError,
      match=r"(?s)Split 'train' of CelebA needs the official "
      r"partition file list_eval_partition.txt.*faces.list_eval_partition.txt"
      r".*split='all'",
  ):
    celeba.load(image_dir, split="train", progress=False)


def test_flat_folder_finds_partition_file_in_parent(tmp_path):
  _make_celeba(tmp_path)  # tmp_path/img_align_celeba + partition file
  images = celeba.load(
      tmp_path / "img_align_celeba",
      split="validation",
      image_size=20,
      cache_dir=tmp_path / "cache",
      progress=False,
  )
  np.testing.assert_array_equal(
      images, _expected(tmp_path / "img_align_celeba", _split_names("validation"))
  )


def test_kaggle_layout_with_csv_and_png_names(tmp_path):
  image_dir = tmp_path / "img_align_celeba" / "img_align_celeba"
  image_dir.mkdir(parents=True)
  for i in range(4):
    _write_image(image_dir / f"{i + 1:06d}.png", _face(i))  # the PNG edition's names
  (tmp_path / "list_eval_partition.csv").write_text(
      "image_id,partition\n" + "".join(f"{_name(i)},{i % 2}\n" for i in range(4))
  )
  images = celeba.load(tmp_path, split="validation", image_size=20, progress=False)
  np.testing.assert_array_equal(images, _expected(image_dir, ["000002.png", "000004.png"]))


# ----------------------------------------------------------------------------------------------
# The cache.


def test_second_call_reads_the_cache(celeba_dir, monkeypatch, count_opens):
  first = np.array(celeba.load(celeba_dir, split="train", image_size=20, progress=False))
  assert len(count_opens) == 6
  cache = celeba_dir / "bigjax_cache"
  assert sorted(os.listdir(cache)) == [
      "celeba_train_20_crop140.json",
      "celeba_train_20_crop140.npy",
  ]
  meta = json.loads((cache / "celeba_train_20_crop140.json").read_text())
  assert meta["count"] == 6 and meta["first"] == _split_names("train")[0]
  _no_decoding(monkeypatch)
  second = celeba.load(celeba_dir, split="train", image_size=20, progress=True)
  assert isinstance(second, np.memmap) and not second.flags.writeable
  np.testing.assert_array_equal(second, first)


def test_custom_cache_dir(celeba_dir, tmp_path):
  celeba.load(celeba_dir, split="test", image_size=20, cache_dir=tmp_path / "c", progress=False)
  assert (tmp_path / "c" / "celeba_test_20_crop140.npy").is_file()
  assert not (celeba_dir / "bigjax_cache").exists()


def test_killed_run_leaves_no_finished_file(celeba_dir, monkeypatch):
  real = celeba_prepare.crop_resize
  calls = []

  def interrupted(*args):
    calls.append(1)
    if len(calls) == 4:
      raise KeyboardInterrupt
    return real(*args)

  monkeypatch.setattr(celeba_prepare, "crop_resize", interrupted)
  with pytest.raises(KeyboardInterrupt):
    celeba.load(celeba_dir, split="all", image_size=20, progress=False)
  assert os.listdir(celeba_dir / "bigjax_cache") == []
  monkeypatch.setattr(celeba_prepare, "crop_resize", real)
  images = celeba.load(celeba_dir, split="all", image_size=20, progress=False)
  np.testing.assert_array_equal(
      images, _expected(celeba_dir / "img_align_celeba", _split_names("all"))
  )


def test_leftovers_of_killed_runs_are_replaced(celeba_dir, count_opens):
  cache = celeba_dir / "bigjax_cache"
  cache.mkdir()
  dead_pid = 2**22 + 12345  # above Linux's largest pid: no such process
  leftover = cache / f"celeba_test_20_crop140.npy.tmp-{socket.gethostname()}-{dead_pid}"
  leftover.write_bytes(b"half written")
  # A killed run between renaming the .npy and writing its .json: the .npy alone is not trusted.
  np.save(cache / "celeba_test_20_crop140.npy", np.zeros((3, 20, 20, 3), np.uint8))
  images = celeba.load(celeba_dir, split="test", image_size=20, progress=False)
  assert len(count_opens) == 3
  np.testing.assert_array_equal(
      images, _expected(celeba_dir / "img_align_celeba", _split_names("test"))
  )
  assert sorted(os.listdir(cache)) == ["celeba_test_20_crop140.json", "celeba_test_20_crop140.npy"]


def test_changed_folder_rebuilds_the_cache(tmp_path, count_opens):
  image_dir = _make_celeba(tmp_path, n=4, layout="flat")
  assert len(celeba.load(image_dir, split="all", image_size=20, progress=False)) == 4
  _write_image(os.path.join(image_dir, _name(4)), _face(4))
  images = celeba.load(image_dir, split="all", image_size=20, progress=False)
  assert len(images) == 5 and len(count_opens) == 4 + 5
  np.testing.assert_array_equal(images, _expected(image_dir, [_name(i) for i in range(5)]))
  os.rename(os.path.join(image_dir, _name(0)), os.path.join(image_dir, "000099.jpg"))
  images = celeba.load(image_dir, split="all", image_size=20, progress=False)  # same count
  assert len(count_opens) == 4 + 5 + 5
  np.testing.assert_array_equal(images[-1], _expected(image_dir, ["000099.jpg"])[0])
  celeba.load(image_dir, split="all", image_size=20, progress=False)
  assert len(count_opens) == 4 + 5 + 5


def test_changed_partition_file_rebuilds_the_cache(celeba_dir, count_opens):
  celeba.load(celeba_dir, split="train", image_size=20, progress=False)
  _write_image(celeba_dir / "img_align_celeba" / _name(12), _face(12))
  with open(celeba_dir / "list_eval_partition.txt", "a") as f:
    f.write(f"{_name(12)} 0\n")
  images = celeba.load(celeba_dir, split="train", image_size=20, progress=False)
  assert len(images) == 7 and len(count_opens) == 6 + 7


def test_unwritable_cache_dir_says_to_pass_cache_dir(celeba_dir, tmp_path, monkeypatch):
  (tmp_path / "file").write_text("")
  with pytest.raises(
      OSError, match="(?s)Cannot write the CelebA cache to .*file.*Pass " "cache_dir="
  ):
    celeba.load(celeba_dir, split="test", cache_dir=tmp_path / "file" / "cache", progress=False)
  monkeypatch.setattr(
      celeba_prepare.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=10)
  )
  with pytest.raises(
      OSError, match=r"needs 0.00 GB, but only 0.00 GB are free .*Pass " "cache_dir="
  ):
    celeba.load(celeba_dir, split="test", image_size=20, progress=False)


# ----------------------------------------------------------------------------------------------
# Errors.


def test_missing_directory_says_how_to_get_celeba(tmp_path):
  with pytest.raises(
      FileNotFoundError,
      match=r"(?s)nowhere' does not exist.*downloaded "
      r"automatically.*mmlab.ie.cuhk.edu.hk.*img_align_celeba.zip.*"
      r"list_eval_partition.txt.*DIR/img_align_celeba/000001.jpg",
  ):
    celeba.load(tmp_path / "nowhere")
  (tmp_path / "img_align_celeba.zip").write_bytes(b"PK")
  with pytest.raises(FileNotFoundError, match="is a file, not a directory"):
    celeba.load(tmp_path / "img_align_celeba.zip")


def test_directory_without_images(tmp_path):
  (tmp_path / "img_align_celeba").mkdir()
  (tmp_path / "readme.txt").write_text("")
  with pytest.raises(FileNotFoundError, match=r"(?s)holds no images.*img_align_celeba.*" r"mmlab"):
    celeba.load(tmp_path, split="all")


def test_partition_file_listing_missing_images(celeba_dir):
  for i in (1, 3, 5, 2):  # 3 train, 1 validation
    os.remove(celeba_dir / "img_align_celeba" / _name(i))
  with pytest.raises(
      FileNotFoundError,
      match=r"(?s)incomplete: 3 of 6 images listed in "
      r"list_eval_partition.txt for split 'train' are missing, e.g. "
      r"000004.jpg, 000002.jpg, 000006.jpg.*img_align_celeba.zip",
  ):
    celeba.load(celeba_dir, split="train", progress=False)
  assert len(celeba.load(celeba_dir, split="test", image_size=20, progress=False)) == 3


def test_bad_partition_file(celeba_dir):
  (celeba_dir / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 7\n")
  with pytest.raises(ValueError, match="line 2: expected '<file name> <0, 1 or 2>'"):
    celeba.load(celeba_dir, progress=False)


def test_corrupt_image_is_named(celeba_dir):
  path = celeba_dir / "img_align_celeba" / _name(4)  # a test image
  path.write_bytes(path.read_bytes()[:200])  # truncated
  with pytest.raises(ValueError, match=r"Cannot read the image .*000005.jpg .*corrupt"):
    celeba.load(celeba_dir, split="test", image_size=20, progress=False)
  assert os.listdir(celeba_dir / "bigjax_cache") == []
  path.write_text("<html>not an image</html>")
  with pytest.raises(ValueError, match=r"Cannot read the image .*000005.jpg"):
    celeba.load(celeba_dir, split="test", image_size=20, progress=False)


def test_too_small_image_is_named(celeba_dir):
  _write_image(celeba_dir / "img_align_celeba" / _name(2), _face(2, size=(150, 130)))
  with pytest.raises(
      ValueError,
      match=r"000003.jpg is 150 x 130 pixels \(width x height\), "
      r"smaller than crop_size=140.*at most 130",
  ):
    celeba.load(celeba_dir, split="validation", progress=False)
  with pytest.raises(ValueError, match=r"000004.jpg is 178 x 218 .*smaller than crop_size=200"):
    celeba.load(celeba_dir, split="train", crop_size=200, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="valid"), "split must be one of"),
        (dict(split="train+test"), "split must be one of"),
        (dict(image_size=0), "image_size must be a positive int, got 0"),
        (dict(image_size=-5), "image_size must be a positive int"),
        (dict(image_size=64.0), "image_size must be a positive int"),
        (dict(image_size=True), "image_size must be a positive int"),
        (dict(crop_size="140"), "crop_size must be a positive int"),
    ],
)
def test_bad_arguments(celeba_dir, kwargs, match):
  with pytest.raises(ValueError, match=match):
    celeba.load(celeba_dir, progress=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# tensorflow_datasets, through a stand-in module.


def _fake_tfds(
    prepared, counts=(4, 2, 3), missing_tensorflow=False, has_is_prepared=True, yields=None
):
  """A stand-in for tensorflow_datasets with a celeb_a builder; returns (module, state).

  Without `has_is_prepared` the builder lacks `is_prepared` (older tfds), and the data counts
  as prepared when its `data_dir` exists. `yields` overrides how many images each split gives.
  """
  faces = {
      s: [_face(10 * k + i) for i in range(n)]
      for k, (s, n) in enumerate(zip(("train", "validation", "test"), counts))
  }
  state = dict(prepared=prepared, calls=[], faces=faces)

  class Builder:

    def __init__(self, name, data_dir):
      if missing_tensorflow:
        raise ModuleNotFoundError("No module named 'tensorflow'")
      state["calls"].append(("builder", name, data_dir))
      self.data_dir = os.path.join(data_dir or "~/tensorflow_datasets", name, "2.1.0")
      self.info = types.SimpleNamespace(
          full_name="celeb_a/2.1.0",
          splits={s: types.SimpleNamespace(num_examples=len(v)) for s, v in faces.items()},
      )

    def is_prepared(self):
      return state["prepared"]

    def download_and_prepare(self, download_config):
      state["calls"].append(("download_and_prepare", download_config.manual_dir))
      state["prepared"] = True

    def as_dataset(self, split, shuffle_files):
      state["calls"].append(("as_dataset", split, shuffle_files))
      images = faces[split] if yields is None else [_face(0)] * yields
      return iter([{"image": im, "attributes": {}} for im in images])

  if not has_is_prepared:
    del Builder.is_prepared

  module = types.SimpleNamespace(
      builder=lambda name, data_dir: Builder(name, data_dir),
      as_numpy=lambda ds: ds,
      download=types.SimpleNamespace(
          DownloadConfig=lambda manual_dir: types.SimpleNamespace(manual_dir=manual_dir)
      ),
  )
  return module, state


@pytest.fixture
def tfds_env(tmp_path, monkeypatch):
  monkeypatch.setenv(celeba.TFDS_DIR_VAR, str(tmp_path / "tfds"))
  monkeypatch.delenv(celeba.MANUAL_DIR_VAR, raising=False)
  return tmp_path / "tfds"


def test_tfds_prepared(tfds_env, monkeypatch):
  module, state = _fake_tfds(prepared=True)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  images = celeba.load("tfds", split="validation", image_size=20, progress=False)
  expected = [celeba.center_crop_resize(f, 140, 20) for f in state["faces"]["validation"]]
  np.testing.assert_array_equal(images, np.stack(expected))
  assert state["calls"] == [
      ("builder", "celeb_a", str(tfds_env)),
      ("as_dataset", "validation", False),
  ]
  assert (tfds_env / "bigjax_cache" / "celeba_validation_20_crop140.npy").is_file()
  np.testing.assert_array_equal(
      celeba.load("tfds", split="validation", image_size=20, progress=False), images
  )
  assert [c[0] for c in state["calls"]].count("as_dataset") == 1  # cached
  everything = celeba.load("tfds", split="all", image_size=20, progress=False)
  faces = [f for s in ("train", "validation", "test") for f in state["faces"][s]]
  np.testing.assert_array_equal(
      everything, np.stack([celeba.center_crop_resize(f, 140, 20) for f in faces])
  )


def test_tfds_prepares_from_manual_dir(tfds_env, tmp_path, monkeypatch):
  module, state = _fake_tfds(prepared=False)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  monkeypatch.setenv(celeba.MANUAL_DIR_VAR, str(tmp_path / "manual"))
  images = celeba.load(
      "tfds", split="test", image_size=24, crop_size=120, cache_dir=tmp_path / "c", progress=False
  )
  assert images.shape == (3, 24, 24, 3)
  assert ("download_and_prepare", str(tmp_path / "manual")) in state["calls"]


def test_tfds_not_prepared(tfds_env, monkeypatch):
  module, _ = _fake_tfds(prepared=False)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  with pytest.raises(
      FileNotFoundError,
      match=r"(?s)celeb_a is not prepared in .*tfds.*"
      rf"\${celeba.MANUAL_DIR_VAR}.*read the images from a folder instead.*"
      r"img_align_celeba",
  ):
    celeba.load("tfds", progress=False)


def test_tfds_without_is_prepared_checks_the_data_dir(tfds_env, monkeypatch):
  module, _ = _fake_tfds(prepared=None, has_is_prepared=False)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  with pytest.raises(FileNotFoundError, match="celeb_a is not prepared"):
    celeba.load("tfds", split="test", progress=False)
  os.makedirs(tfds_env / "celeb_a" / "2.1.0")
  assert celeba.load("tfds", split="test", image_size=20, progress=False).shape == (3, 20, 20, 3)


@pytest.mark.parametrize("yields, said", [(2, "2"), (5, "more than 3")])
def test_tfds_count_mismatch(tfds_env, monkeypatch, yields, said):
  module, _ = _fake_tfds(prepared=True, yields=yields)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  with pytest.raises(
      RuntimeError,
      match=f"split 'test' yielded {said} images, but its dataset "
      "info says 3; prepare celeb_a again",
  ):
    celeba.load("tfds", split="test", image_size=20, progress=False)
  assert os.listdir(tfds_env / "bigjax_cache") == []


def test_tfds_not_installed(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(
      ImportError,
      match=r"(?s)needs tensorflow-datasets and tensorflow.*"
      r"read the images from a folder instead.*img_align_celeba",
  ):
    celeba.load("tfds")


def test_tfds_without_tensorflow(tfds_env, monkeypatch):
  module, _ = _fake_tfds(prepared=True, missing_tensorflow=True)
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
  with pytest.raises(
      ImportError,
      match=r"(?s)needs TensorFlow.*No module named 'tensorflow'"
      r".*pip install tensorflow.*from a folder instead",
  ):
    celeba.load("tfds")
