"""A vector quantiser for 28x28 digits: images <-> grids of discrete tokens (VQ-VAE).

The paper's MNIST experiments (App. E.1) model images as sequences of discrete tokens; this
module makes them. An encoder maps a digit to a 7 x 7 grid of `code_dim`-vectors, each is
replaced by its nearest codebook vector (its index is the token), and a decoder maps the grid
of codebook vectors back to pixels (van den Oord et al., 2017, "Neural Discrete Representation
Learning"). The codebook is learnt by exponential moving averages, not by gradients (App. A.1
of that paper; Razavi et al., 2019), with dead codes restarted from encoder outputs.

  encoder, decoder = VQEncoder(), VQDecoder()
  params = {"encoder": encoder variables, "decoder": decoder variables}
  tokens = encode(encoder, params, codebook.vectors, images_uint8)   # int32 [N, 7, 7]
  images = decode(decoder, params, codebook.vectors, tokens)         # uint8 [N, 28, 28]

The modules, `quantize`, `ema_update` and `codebook_usage` are pure and work under jit; `encode`
and `decode` are host-side helpers that check their inputs and run in fixed-size jitted chunks.

The codebook (`Codebook`, `init_codebook`, `codebook_from_samples`, `quantize`, `ema_update`,
`codebook_usage`) lives in `bigjax.models.vq_codebook` and is re-exported here.
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.models.vq_codebook import (
    Codebook,
    codebook_from_samples,
    codebook_usage,
    ema_update,
    init_codebook,
    quantize,
)

__all__ = [
    "Codebook",
    "IMAGE_SIZE",
    "VQDecoder",
    "VQEncoder",
    "codebook_from_samples",
    "codebook_usage",
    "decode",
    "ema_update",
    "encode",
    "grid_size",
    "init_codebook",
    "quantize",
]

IMAGE_SIZE = 28  # the side of the digits `encode` and `decode` work on


def grid_size(widths: Sequence[int], image_size: int = IMAGE_SIZE) -> int:
  """The side of the token grid: image_size / 2**len(widths) (7 for 28x28 and two stages).

  Raises:
    ValueError: image_size is not divisible by 2**len(widths).
  """
  stages = len(widths)
  if stages < 1 or image_size % (2**stages):
    raise ValueError(
        f"{image_size}x{image_size} images cannot be halved {stages} times (widths="
        f"{tuple(widths)}): use 1 or 2 stride-2 stages for 28x28 digits (grids 14x14 or 7x7)."
    )
  return image_size // 2**stages


# ----------------------------------------------------------------------------------------------
# The encoder and the decoder.


class _Residual(nn.Module):
  """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))), the VQ-VAE residual block (channels kept)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    h = nn.Conv(channels, (3, 3), padding="SAME")(nn.relu(x))
    return x + nn.Conv(channels, (1, 1))(nn.relu(h))


class VQEncoder(nn.Module):
  """Digits [B, H, W] in [-1, 1] -> continuous codes [B, H / 2**S, W / 2**S, code_dim].

  S = len(widths) stride-2 4x4 convolutions (SAME padding, ReLU) with those channels, one
  residual 3x3 block, ReLU, then a 1x1 convolution to `code_dim`. For 28x28 digits and the
  default two stages the grid is 7x7.

  Attributes:
    widths: channels of the stride-2 stages, e.g. (32, 64).
    code_dim: D, the dimension of each code vector (must match the codebook's).
  """

  widths: tuple[int, ...] = (32, 64)
  code_dim: int = 16

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """Continuous codes of a batch of digits.

    Args:
      images: float [B, H, W] in [-1, 1] (`bigjax.data.mnist.to_unit_range` of uint8 pixels); H and
        W divisible by 2**len(widths).

    Returns:
      z: float [B, H / 2**S, W / 2**S, code_dim].
    """
    if images.ndim != 3:
      raise ValueError(
          f"VQEncoder expects grayscale images [B, H, W], got shape "
          f"{images.shape}{' (drop the channel axis)' if images.ndim == 4 else ''}."
      )
    for side in images.shape[1:]:
      grid_size(self.widths, side)
    x = images[..., None]
    for width in self.widths:
      x = nn.relu(nn.Conv(int(width), (4, 4), strides=(2, 2), padding="SAME")(x))
    x = nn.relu(_Residual()(x))
    return nn.Conv(self.code_dim, (1, 1))(x)


class VQDecoder(nn.Module):
  """Quantised codes [B, h, w, code_dim] -> digits [B, h 2**S, w 2**S] in [-1, 1].

  The mirror of VQEncoder: a 3x3 convolution to widths[-1] channels, one residual block, ReLU,
  then S = len(widths) stride-2 4x4 transposed convolutions (SAME padding) through the widths
  in reverse order, the last to one channel. The output is clipped to [-1, 1] with a
  straight-through (identity) gradient rather than squashed by tanh: most MNIST pixels sit at
  exactly -1, which tanh reaches only asymptotically. With tanh, the cpu config's decoder
  saturated at all -1 within 100 steps (MSE 0.452, that of a blank image, at learning rates
  3e-3 and 1e-2) and stayed there; with the clip it reached MSE 0.019 after 400 steps.

  Attributes:
    widths: the encoder's widths (the decoder reverses them).
    code_dim: D of its inputs (checked).
  """

  widths: tuple[int, ...] = (32, 64)
  code_dim: int = 16

  @nn.compact
  def __call__(self, codes: jax.Array) -> jax.Array:
    """Pixels of a batch of code grids.

    Args:
      codes: float [B, h, w, code_dim], usually `quantize`'s z_q.

    Returns:
      float [B, h 2**S, w 2**S] in [-1, 1].
    """
    if codes.ndim != 4 or codes.shape[-1] != self.code_dim:
      raise ValueError(
          f"VQDecoder expects code grids [B, h, w, code_dim={self.code_dim}], got "
          f"shape {codes.shape}."
      )
    widths = [int(w) for w in self.widths]
    x = nn.Conv(widths[-1], (3, 3), padding="SAME")(codes)
    x = nn.relu(_Residual()(x))
    for i, width in enumerate(widths[-2::-1] + [1]):  # (32, 64): 64 -> 32 -> 1 channels
      x = nn.ConvTranspose(width, (4, 4), strides=(2, 2), padding="SAME")(x)
      if i < len(widths) - 1:
        x = nn.relu(x)
    x = x[..., 0]
    # Pixels past -1 or 1 cost nothing once clipped, and the identity gradient keeps one too
    # far on the wrong side (e.g. 1.5 for a target of 0.5) moving back. Written as
    # sg(clip(x)) + (x - sg(x)) rather than x + sg(clip(x) - x): x - x is exactly 0, so the
    # output is exactly in [-1, 1] even for large x.
    return jax.lax.stop_gradient(jnp.clip(x, -1.0, 1.0)) + (x - jax.lax.stop_gradient(x))


# ----------------------------------------------------------------------------------------------
# Host-side helpers: uint8 digits <-> tokens.


def _module_params(params: Any, name: str) -> Any:
  if not isinstance(params, dict) or name not in params:
    keys = list(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(
        f"params must be the quantiser's {{'encoder': ..., 'decoder': ...}} "
        f"variables (as experiments.vq_mnist.load returns them); got {keys}."
    )
  return params[name]


def _check_vectors(vectors: Any, code_dim: int) -> jax.Array:
  vectors = jnp.asarray(vectors)
  if vectors.ndim != 2 or vectors.shape[1] != code_dim:
    raise ValueError(
        f"codebook_vectors must be [K, code_dim={code_dim}], got shape " f"{vectors.shape}."
    )
  return vectors


def _check_batch_size(batch_size: int) -> None:
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")


@functools.partial(jax.jit, static_argnums=0)
def _encode_chunk(
    encoder: VQEncoder, variables: Any, vectors: jax.Array, images: jax.Array
) -> jax.Array:
  x = images.astype(jnp.float32) / 127.5 - 1.0  # bigjax.data.mnist.to_unit_range
  return quantize(encoder.apply(variables, x), vectors)[1]


@functools.partial(jax.jit, static_argnums=0)
def _decode_chunk(
    decoder: VQDecoder, variables: Any, vectors: jax.Array, tokens: jax.Array
) -> jax.Array:
  x = decoder.apply(variables, vectors[tokens])
  return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)  # from_unit_range


def _chunked(
    fn,
    module,
    variables,
    vectors,
    inputs: np.ndarray,
    batch_size: int,
    out_shape: tuple[int, ...],
    out_dtype,
) -> np.ndarray:
  """fn over `inputs` in chunks of exactly `batch_size` rows (the last one zero-padded), so
  one compiled program serves every N."""
  n = len(inputs)
  out = np.empty((n,) + out_shape, out_dtype)
  for start in range(0, n, batch_size):
    chunk = inputs[start : start + batch_size]
    rows = len(chunk)
    if rows < batch_size:
      chunk = np.concatenate([chunk, np.zeros((batch_size - rows,) + chunk.shape[1:], chunk.dtype)])
    out[start : start + rows] = np.asarray(fn(module, variables, vectors, chunk))[:rows]
  return out


def encode(
    encoder: VQEncoder,
    params: Any,
    codebook_vectors: jax.Array,
    images: np.ndarray,
    *,
    batch_size: int = 500,
) -> np.ndarray:
  """Tokens of uint8 digits.

  Args:
    encoder: the VQEncoder.
    params: {"encoder": ..., "decoder": ...} variables (only "encoder" is used).
    codebook_vectors: [K, code_dim].
    images: uint8 [N, 28, 28] pixels in [0, 255].
    batch_size: images per compiled call; the last chunk is zero-padded, so every N reuses
      one program.

  Returns:
    int32 [N, h, w] tokens in [0, K), h = w = 28 / 2**len(encoder.widths).

  Raises:
    TypeError: images are not uint8.
    ValueError: images are not [N, 28, 28], or the codebook does not fit the encoder.
  """
  _check_batch_size(batch_size)
  images = np.asarray(images)
  if images.dtype != np.uint8:
    hint = (
        " (floats in [-1, 1]: bigjax.data.mnist.from_unit_range(x); floats in [0, 1]: "
        "np.round(255 * x).astype(np.uint8))"
        if np.issubdtype(images.dtype, np.floating)
        else ""
    )
    raise TypeError(f"encode expects uint8 pixels in [0, 255], got dtype {images.dtype}{hint}.")
  if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
    hint = " (drop the channel axis)" if images.ndim == 4 and images.shape[-1] == 1 else ""
    raise ValueError(
        f"encode expects digits of shape [N, {IMAGE_SIZE}, {IMAGE_SIZE}], got "
        f"{images.shape}{hint}."
    )
  side = grid_size(encoder.widths)
  vectors = _check_vectors(codebook_vectors, encoder.code_dim)
  return _chunked(
      _encode_chunk,
      encoder,
      _module_params(params, "encoder"),
      vectors,
      images,
      batch_size,
      (side, side),
      np.int32,
  )


def decode(
    decoder: VQDecoder,
    params: Any,
    codebook_vectors: jax.Array,
    tokens: np.ndarray,
    *,
    batch_size: int = 500,
) -> np.ndarray:
  """uint8 digits of token grids (the inverse of `encode`, up to reconstruction error).

  Args:
    decoder: the VQDecoder.
    params: {"encoder": ..., "decoder": ...} variables (only "decoder" is used).
    codebook_vectors: [K, code_dim].
    tokens: int [N, h, w] in [0, K), h = w = 28 / 2**len(decoder.widths).
    batch_size: grids per compiled call (the last chunk is padded).

  Returns:
    uint8 [N, 28, 28] pixels.

  Raises:
    TypeError: tokens are not integers.
    ValueError: a token outside [0, K), a grid of the wrong shape, or a codebook that does not
      fit the decoder.
  """
  _check_batch_size(batch_size)
  tokens = np.asarray(tokens)
  vectors = _check_vectors(codebook_vectors, decoder.code_dim)
  num_codes = vectors.shape[0]
  side = grid_size(decoder.widths)
  if not np.issubdtype(tokens.dtype, np.integer):
    raise TypeError(f"decode expects integer tokens, got dtype {tokens.dtype}.")
  if tokens.ndim != 3 or tokens.shape[1:] != (side, side):
    hint = (
        f" (flat sequences: tokens.reshape(-1, {side}, {side}))"
        if tokens.ndim == 2 and tokens.shape[1] == side * side
        else ""
    )
    raise ValueError(
        f"decode expects token grids of shape [N, {side}, {side}], got " f"{tokens.shape}{hint}."
    )
  bad = (tokens < 0) | (tokens >= num_codes)
  if bad.any():
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"tokens must be in [0, {num_codes}) (the codebook has {num_codes} "
        f"codes); got {int(tokens[where])} at index {where} ({int(bad.sum())} "
        "tokens out of range)."
    )
  return _chunked(
      _decode_chunk,
      decoder,
      _module_params(params, "decoder"),
      vectors,
      tokens.astype(np.int32),
      batch_size,
      (IMAGE_SIZE, IMAGE_SIZE),
      np.uint8,
  )
