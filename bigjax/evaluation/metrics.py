"""Sample-quality metrics computed on the host in float64 numpy.

  frechet_distance     Fréchet distance between Gaussians fitted to two feature sets (FID-style,
                       with the features of `bigjax.models.classifier` instead of Inception)
  label_agreement      how often a classifier's label of a generated image is the true label
  pairwise_diversity   per input, the mean RMS difference between pairs of generated draws

Everything here is float64 numpy on the host, no JAX, so the linear algebra cannot hit the
jaxlib CPU LAPACK deadlock described in `bigjax.mixtures.linalg`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance", "label_agreement", "pairwise_diversity"]


def _features(x, name: str) -> np.ndarray:
  """`x` as a float64 [N, D] array with N >= 2 finite rows, or a ValueError saying why not."""
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(
        f"{name} must be a 2-D array [num_samples, feature_dim], got shape "
        f"{x.shape} (flatten each sample's features to one row)."
    )
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}.")
  if x.shape[0] < 2:
    raise ValueError(
        f"{name} has {x.shape[0]} row(s); a covariance needs at least 2 samples "
        "(use many more, a few thousand, for a meaningful distance)."
    )
  x = x.astype(np.float64)
  if not np.all(np.isfinite(x)):
    raise ValueError(
        f"{name} contains NaN or inf values ({int(np.sum(~np.isfinite(x)))} "
        "entries); check the images or model that produced the features."
    )
  return x


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
  """The symmetric PSD square root of a symmetric PSD matrix, by eigendecomposition.

  Eigenvalues below zero (rounding in a rank-deficient covariance) are clipped to zero."""
  w, v = np.linalg.eigh((c + c.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(features_a, features_b) -> float:
  """Fréchet (2-Wasserstein) distance between Gaussians fitted to two sets of features.

    d^2 = ||mu_a - mu_b||^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^{1/2} C_b C_a^{1/2})^{1/2})

  with the sample means and covariances (ddof=1) of the rows; this is FID when the features
  are Inception activations. The last trace is the sum of the square roots of the eigenvalues
  of the symmetric PSD matrix C_a^{1/2} C_b C_a^{1/2} (C_a^{1/2} by `eigh`), which stays real
  and stable where `scipy.linalg.sqrtm(C_a @ C_b)` can return complex values for singular or
  nearly singular covariances. Negative eigenvalues from rounding are clipped to zero.

  Args:
    features_a: [N_a, D] features of one set (e.g. real images), N_a >= 2.
    features_b: [N_b, D] features of the other set (e.g. generated images), N_b >= 2.

  Returns:
    The squared distance d^2 as a Python float (>= 0; rounding below zero is clipped to 0).
    Like FID it is biased upwards for small N; compare values computed with equal N.

  Raises:
    ValueError: an input is not 2-D, has fewer than 2 rows or non-finite values, or the two
      feature widths differ.
  """
  a = _features(features_a, "features_a")
  b = _features(features_b, "features_b")
  if a.shape[1] != b.shape[1]:
    raise ValueError(
        f"features_a has {a.shape[1]} features per row but features_b has "
        f"{b.shape[1]}; both must come from the same feature extractor."
    )
  mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
  cov_a = np.atleast_2d(np.cov(a, rowvar=False, ddof=1))
  cov_b = np.atleast_2d(np.cov(b, rowvar=False, ddof=1))
  sqrt_a = _psd_sqrt(cov_a)
  m = sqrt_a @ cov_b @ sqrt_a
  eigenvalues = np.linalg.eigvalsh((m + m.T) / 2)
  trace_sqrt = np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None)))
  d2 = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
  return float(max(d2, 0.0))


def label_agreement(predicted_labels, true_labels) -> float:
  """Fraction of predicted labels equal to the true label of their image.

  Args:
    predicted_labels: [N] one predicted label per image, or [N, S] labels of S draws per image
      (e.g. a classifier's labels of S completions of image n).
    true_labels: [N] the images' labels.

  Returns:
    The mean over all N (x S) predictions of (prediction == true label), a float in [0, 1].

  Raises:
    ValueError: shapes that do not fit, no predictions at all, or non-integer labels.
  """
  pred = np.asarray(predicted_labels)
  true = np.asarray(true_labels)
  if true.ndim != 1:
    raise ValueError(f"true_labels must have shape [N], got {true.shape}.")
  if pred.ndim not in (1, 2) or pred.shape[0] != true.shape[0]:
    raise ValueError(
        f"predicted_labels must have shape [N] or [N, S] with N = "
        f"{true.shape[0]} (the length of true_labels), got {pred.shape}."
    )
  for name, x in (("predicted_labels", pred), ("true_labels", true)):
    if not np.issubdtype(x.dtype, np.integer):
      raise ValueError(
          f"{name} must hold integer class labels, got dtype {x.dtype} (for "
          "probabilities or logits pass their argmax(-1))."
      )
  if pred.size == 0:
    raise ValueError(f"no predictions to compare (predicted_labels has shape {pred.shape}).")
  if pred.ndim == 2:
    true = true[:, None]
  return float(np.mean(pred == true))


def pairwise_diversity(samples, mask=None) -> np.ndarray:
  """Per input, the mean root-mean-square difference between pairs of its generated draws.

  For input n with draws x_1..x_S: the mean over pairs i < j of
  sqrt(mean over the masked pixels of (x_i - x_j)^2). The value is in the units of the pixels;
  callers pass pixels in [0, 1] (e.g. uint8 / 255) so that results are comparable across runs,
  and 0 means the draws are identical (a generator ignoring its noise).

  Args:
    samples: [N, S, ...] S >= 2 draws per input (e.g. [N, S, H, W] images), any real dtype.
    mask: optional bool array of the pixels to compare, e.g. the pixels that were generated
      rather than given. Either one mask for every input, broadcastable to one draw's shape
      `samples.shape[2:]` (e.g. [H, W]), or one per input with a leading axis of N (or 1) whose
      other axes broadcast to one draw's shape (e.g. [N, H, W]). None compares all pixels. An
      input whose mask has no True pixel gets diversity 0.

  Returns:
    float64 [N].

  Raises:
    ValueError: fewer than 2 draws, non-finite samples, or a mask that does not broadcast.
  """
  x = np.asarray(samples)
  if x.ndim < 3:
    raise ValueError(
        f"samples must have shape [N, S, ...] (S draws of each of N inputs, each "
        f"draw at least 1-D), got {x.shape}."
    )
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise ValueError(f"samples must hold real numbers, got dtype {x.dtype}.")
  n, s, draw_shape = x.shape[0], x.shape[1], x.shape[2:]
  if s < 2:
    raise ValueError(
        f"samples has {s} draw(s) per input (axis 1 of shape {x.shape}); diversity "
        "needs at least 2 draws of each input."
    )
  x = x.astype(np.float64)
  if not np.all(np.isfinite(x)):
    raise ValueError("samples contains NaN or inf values.")
  per_input_shape = (n,) + draw_shape
  if mask is None:
    m = np.ones((1,) * len(per_input_shape), np.float64)
  else:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
      raise ValueError(
          f"mask must be a bool array (True = compare this pixel), got dtype " f"{mask.dtype}."
      )
    try:
      if mask.ndim == len(per_input_shape):  # one mask per input: [N, ...]
        m = np.broadcast_to(mask, per_input_shape)
      elif mask.ndim <= len(draw_shape):  # one mask for all inputs: [...]
        m = np.broadcast_to(mask, draw_shape)[None]
      else:
        raise ValueError
    except ValueError:
      raise ValueError(
          f"mask of shape {mask.shape} fits neither one draw's shape {draw_shape} "
          f"nor one mask per input {per_input_shape} (samples have shape "
          f"{x.shape})."
      ) from None
    m = m.astype(np.float64)
  axes = tuple(range(1, len(per_input_shape)))
  count = np.broadcast_to(m, per_input_shape).sum(axis=axes)  # masked pixels per input
  total = np.zeros((n,), np.float64)
  for i in range(s):
    for j in range(i + 1, s):
      sq = np.sum((x[:, i] - x[:, j]) ** 2 * m, axis=axes)
      total += np.sqrt(np.divide(sq, count, out=np.zeros_like(sq), where=count > 0))
  return total / (s * (s - 1) // 2)
