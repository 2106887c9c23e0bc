"""Metrics of a run: JSON-lines files and TensorBoard event files, side by side.

Each row a trainer logs goes to a JSON-lines file of the workdir (`metrics.jsonl`,
`eval.jsonl`: one `{"step": ..., ...}` object per line, what scripts read) and to TensorBoard
event files in the workdir itself (`tensorboard --logdir WORKDIR` shows the curves and sample
images of the run and of the runs nested in it, e.g. a quantiser trained into WORKDIR/vq).
The event files are written by tensorboardX, which needs no TensorFlow. A resumed run purges
the events past the step it restored (TensorBoard's `purge_step`), as the JSON-lines logs are
cut back by `bigjax.training.checkpoint.truncate_log`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any
from collections.abc import Mapping

import numpy as np

__all__ = ["MetricWriter", "read_events"]


def _numbers(value: Any, tag: str):
  """(tag, float) for every number in a nest of dicts and lists (bools are not numbers)."""
  if isinstance(value, Mapping):
    for k, v in value.items():
      yield from _numbers(v, f"{tag}/{k}")
  elif isinstance(value, (list, tuple)):
    for i, v in enumerate(value):
      yield from _numbers(v, f"{tag}/{i}")
  elif isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_)):
    yield tag, float(value)


def _import_tensorboardx(module: str = "tensorboardX"):
  """Imports `module` of tensorboardX without importing torch.

  tensorboardX imports torch, when it is installed, only to recognise torch tensors in its type
  hints; bigjax logs numpy values. Where torch is installed (the `test` extra brings it, for the
  XLNet parity tests) that import added about 1.5 s to the start of every run on our machines;
  without it tensorboardX imports in 0.02 s. While tensorboardX is imported, `import torch`
  raises ImportError (a None entry in sys.modules), which tensorboardX handles; torch itself is
  not touched and imports normally afterwards. Nothing changes once either is imported."""
  if "tensorboardX" in sys.modules or "torch" in sys.modules:
    return importlib.import_module(module)
  sys.modules["torch"] = None  # type: ignore[assignment]
  try:
    return importlib.import_module(module)
  finally:
    if "torch" in sys.modules and sys.modules["torch"] is None:
      del sys.modules["torch"]


class MetricWriter:
  """Appends rows to JSON-lines logs of `workdir` and mirrors them to TensorBoard.

  Args:
    workdir: the run's directory.
    start_step: the step the run starts from (0, or the restored step); TensorBoard events
      after it, left by an interrupted run, are hidden.
    enabled: False makes every call a no-op (processes other than 0).
  """

  def __init__(self, workdir: str, *, start_step: int = 0, enabled: bool = True):
    self.workdir = workdir
    self.enabled = enabled
    self._tb = None
    if enabled:
      SummaryWriter = _import_tensorboardx().SummaryWriter  # pylint: disable=invalid-name
      # The suffix keeps a resumed run's file apart from its predecessor's (the file names
      # otherwise differ only by the second they were created in).
      self._tb = SummaryWriter(
          workdir,
          purge_step=int(start_step) + 1 if start_step else None,
          flush_secs=30,
          filename_suffix=f".from_step_{int(start_step)}",
      )

  def row(self, log: str, row: Mapping[str, Any]) -> None:
    """Appends `row` ({"step": int, name: value, ...}) to `log` and its numbers to
    TensorBoard under `<log stem>/<name>` (e.g. metrics/d_loss; nested dicts and lists as
    eval/random/agreement/5)."""
    if not self.enabled:
      return
    with open(os.path.join(self.workdir, log), "a") as f:
      f.write(json.dumps(dict(row)) + "\n")
    prefix = os.path.splitext(os.path.basename(log))[0]
    step = int(row["step"])
    for name, value in _numbers(row, prefix):
      if name != f"{prefix}/step":
        self._tb.add_scalar(name, value, step)

  def images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """uint8 images [H, W] (grayscale) or [H, W, C] to TensorBoard, tagged by their keys."""
    if not self.enabled:
      return
    for name, image in images.items():
      image = np.asarray(image)
      if image.ndim == 2:
        image = image[..., None]
      if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image {name!r} must be uint8 [H, W] or [H, W, C], got "
            f"{image.dtype} {image.shape}."
        )
      self._tb.add_image(name, image, int(step), dataformats="HWC")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_events(workdir: str) -> dict[str, list[tuple[int, Any]]]:
  """The scalars and images of the TensorBoard event files directly in `workdir`, as
  {tag: [(step, value), ...]} in file order (images as their encoded PNG bytes), for tests and
  scripts; purged steps (after a resume) are dropped as TensorBoard drops them."""
  event_pb2 = _import_tensorboardx("tensorboardX.proto.event_pb2")
  import struct  # pylint: disable=import-outside-toplevel

  out: dict[str, list[tuple[int, Any]]] = {}
  paths = sorted(os.path.join(workdir, n) for n in os.listdir(workdir) if "tfevents" in n)
  for path in paths:
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      if event.HasField("file_version") and event.file_version.startswith("brain.Event"):
        continue
      if event.session_log.status == event.session_log.START:
        # purge_step: TensorBoard forgets this tag's events at and after the event's step.
        for tag in out:
          out[tag] = [(s, v) for s, v in out[tag] if s < event.step]
        continue
      for value in event.summary.value:
        item = (
            value.simple_value
            if value.HasField("simple_value")
            else (value.image.encoded_image_string if value.HasField("image") else None)
        )
        out.setdefault(value.tag, []).append((int(event.step), item))
  return out
