r"""A small MNIST CNN that scores generated digits, in Flax Linen (bigjax's own judge).

Generated digits are scored with this network instead of a downloaded Inception model: its
labels give `bigjax.evaluation.metrics.label_agreement` (does a completion keep the digit's
identity?) and its penultimate-layer features give `frechet_distance` (an FID on MNIST
features). `experiments/mnist_classifier.py` trains it, `experiments/classifier_setup.py`
loads a trained one:

  model, params, info = classifier_setup.load("/tmp/clf_cpu", image_size=28)
  predict = classifier.make_predict(model, params)
  labels, probs, features = predict(images_uint8)      # [N], [N, 10], [N, feature_dim]

A *partial-digit* classifier (`source_patch` > 0) reads digits of which only some pixels are
given and estimates p(y | x_S): its mean probability of the true label is the label agreement
an exact sampler of q(x_T | x_S) would reach (`experiments.gan_eval --posterior_classifier_dir`):

  labels, probs, features = predict(images_uint8, source_pixels)   # source_pixels bool [N, H, W]
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.data import mnist
from bigjax.evaluation.chunked import by_value, map_chunks

__all__ = ["Classifier", "NUM_CLASSES", "make_predict"]

NUM_CLASSES = 10


class Classifier(nn.Module):
  """A small CNN for grayscale digits.

  One stage per entry of `widths`: a 3x3 convolution with that many channels, ReLU, 2x2 max
  pooling. Then the flattened maps -> Dense(feature_dim) -> ReLU (the *features*) -> dropout
  (training only) -> Dense(10) logits. No batch statistics: the model is a pure function of
  (params, images). Any image size works (sizes not divisible by 2^len(widths) are floored by
  the pooling); the first Dense layer's shape depends on it, so parameters fit one size only.

  With `source_patch` > 0 the classifier reads partial digits: it also takes the bool pixel
  mask of the given pixels, sees the image with every other pixel set to background plus the
  mask (as +-1) as a second channel, and so tells a black given pixel from a missing one.

  Attributes:
    widths: channels of each conv stage, e.g. (16, 32).
    feature_dim: width of the feature layer.
    dropout: dropout rate on the features during training.
    image_size: the side the parameters were made for; when set, `__call__` checks its input
      against it (a clearer error than Flax's Dense shape mismatch). None: not checked.
    source_patch: 0 for whole digits; P > 0 for partial digits made of given P x P patches
      (the patch size is what training drew masks with; `__call__` takes any pixel mask).
  """

  widths: Sequence[int] = (16, 32)
  feature_dim: int = 128
  dropout: float = 0.3
  image_size: int | None = None
  source_patch: int = 0

  @nn.compact
  def __call__(
      self, images: jax.Array, source: jax.Array | None = None, *, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """Logits and features of a batch of digits.

    Args:
      images: float [B, H, W] in [-1, 1] (`mnist.to_unit_range` of uint8 pixels).
      source: bool [B, H, W], the given pixels: required when `source_patch` > 0, refused
        otherwise.
      train: apply dropout (needs a "dropout" PRNG key in `rngs`).

    Returns:
      (logits [B, 10], features [B, feature_dim]).
    """
    if images.ndim != 3:
      raise ValueError(
          f"Classifier expects grayscale images [B, H, W], got shape " f"{images.shape}."
      )
    if self.image_size is not None and images.shape[1:] != (self.image_size,) * 2:
      raise ValueError(
          f"this Classifier was built for {self.image_size}x{self.image_size} "
          f"images, got {images.shape[1]}x{images.shape[2]}."
      )
    if self.source_patch:
      if source is None or source.shape != images.shape:
        raise ValueError(
            f"this classifier reads partial digits (source_patch={self.source_patch}): pass "
            f"`source`, the bool [B, H, W] mask of the given pixels, shaped like the images "
            f"{images.shape}; got {None if source is None else source.shape}."
        )
      x = jnp.stack([jnp.where(source, images, -1.0), jnp.where(source, 1.0, -1.0)], axis=-1)
    elif source is not None:
      raise ValueError(
          "this classifier reads whole digits; a source mask is only for one "
          "trained with data.source_patch > 0 (configs/mnist_classifier.py:partial)."
      )
    else:
      x = images[..., None]
    for width in self.widths:
      x = nn.relu(nn.Conv(int(width), (3, 3), padding="SAME")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    features = nn.relu(nn.Dense(self.feature_dim)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    return nn.Dense(NUM_CLASSES)(x), features


@by_value
def _jit_apply(model: Classifier):
  """(params, x, source) -> (labels, probs, features), jitted: one function per model (a Flax
  module equals another of the same fields) in a process, so another predictor of the same
  model traces nothing again."""

  @jax.jit
  def apply(p, x, source):
    logits, features = model.apply(p, x, source)
    return jnp.argmax(logits, -1).astype(jnp.int32), jax.nn.softmax(logits), features

  return apply


def make_predict(
    model: Classifier, params: Any, batch_size: int = 500
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """A function that classifies uint8 digits in fixed-size jitted chunks.

  Args:
    model: a Classifier with `image_size` set (as `load` returns it), or None to accept any
      square size the parameters fit.
    params: its parameters.
    batch_size: images per compiled call; the last chunk is padded, so it compiles once.

  Returns:
    predict(images uint8 [N, H, W], source=None) -> (labels int32 [N], probs float32 [N, 10],
    features float32 [N, feature_dim]), numpy arrays. `source` (bool [N, H, W], the given
    pixels) is required by a partial-digit classifier (`model.source_patch` > 0) and refused by
    a whole-digit one. It raises TypeError for a dtype other than uint8 and ValueError for a
    shape other than [N, image_size, image_size].
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
  apply = _jit_apply(model)

  def predict(
      images: np.ndarray, source: np.ndarray | None = None
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(images)
    if model.source_patch and source is None:
      raise ValueError(
          f"this classifier reads partial digits (source_patch="
          f"{model.source_patch}): call predict(images, source) with the bool "
          "[N, H, W] mask of the given pixels."
      )
    if not model.source_patch and source is not None:
      raise ValueError(
          "this classifier reads whole digits; predict takes a source mask only "
          "for one trained with data.source_patch > 0."
      )
    if source is not None:
      source = np.asarray(source)
      if source.dtype != bool or source.shape != images.shape:
        raise ValueError(
            f"source must be a bool mask shaped like the images {images.shape}, "
            f"got {source.dtype} {source.shape}."
        )
    if images.dtype != np.uint8:
      hint = (
          " (for generator outputs in [-1, 1] use bigjax.data.mnist.from_unit_range; for "
          "floats in [0, 1], np.round(255 * x).astype(np.uint8))"
          if np.issubdtype(images.dtype, np.floating)
          else ""
      )
      raise TypeError(
          f"predict expects uint8 pixels in [0, 255], got dtype {images.dtype}" f"{hint}."
      )
    if images.ndim != 3:
      raise ValueError(
          f"predict expects grayscale images [N, H, W], got shape {images.shape}"
          f"{' (drop the channel axis)' if images.ndim == 4 else ''}."
      )
    size = model.image_size
    if size is not None and images.shape[1:] != (size, size):
      raise ValueError(
          f"the classifier was trained on {size}x{size} digits, got "
          f"{images.shape[1]}x{images.shape[2]} images (resize them with "
          f"bigjax.data.mnist.resize(images, {size}) or use a classifier trained at "
          "this size)."
      )
    labels, probs, features = map_chunks(
        functools.partial(apply, params), [mnist.to_unit_range(images), source], size=batch_size
    )
    return labels, probs.astype(np.float32), features.astype(np.float32)

  return predict
