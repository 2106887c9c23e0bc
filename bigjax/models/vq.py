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
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
# The codebook.


class Codebook(NamedTuple):
  """The codebook and its EMA statistics, one pytree.

  vectors: [K, D] the code vectors (= sums / Laplace-smoothed counts).
  counts: [K] EMA of the number of encoder outputs assigned to each code per batch.
  sums: [K, D] EMA of the sum of the encoder outputs assigned to each code per batch.
  """

  vectors: jax.Array
  counts: jax.Array
  sums: jax.Array


def init_codebook(rng: jax.Array, num_codes: int, code_dim: int) -> Codebook:
  """A codebook of K standard-normal vectors, each with an EMA count of one.

  Args:
    rng: PRNG key.
    num_codes: K.
    code_dim: D.

  Returns:
    Codebook with vectors [K, D], counts ones [K], sums = vectors.
  """
  vectors = jax.random.normal(rng, (num_codes, code_dim), jnp.float32)
  return Codebook(vectors, jnp.ones((num_codes,), jnp.float32), vectors)


def codebook_from_samples(rng: jax.Array, z: jax.Array, num_codes: int) -> Codebook:
  """A codebook of K distinct encoder outputs drawn at random, so that no code starts dead.

  Args:
    rng: PRNG key.
    z: [..., D] encoder outputs (e.g. of the first batch), at least K of them.
    num_codes: K.

  Returns:
    Codebook with vectors [K, D] (rows of z, without replacement), counts ones, sums = vectors.
  """
  flat = z.reshape(-1, z.shape[-1])
  if flat.shape[0] < num_codes:
    raise ValueError(
        f"codebook_from_samples needs at least num_codes={num_codes} encoder "
        f"outputs, got {flat.shape[0]}; use a larger batch or fewer codes."
    )
  rows = jax.random.choice(rng, flat.shape[0], (num_codes,), replace=False)
  vectors = jax.lax.stop_gradient(flat[rows]).astype(jnp.float32)
  return Codebook(vectors, jnp.ones((num_codes,), jnp.float32), vectors)


def quantize(z: jax.Array, vectors: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Nearest-code quantisation with the straight-through gradient (VQ-VAE Eq. (1)-(3)).

  Squared distances use ||z - c||^2 = ||z||^2 - 2 z.c + ||c||^2, one [N, D] x [D, K] matmul
  instead of an [N, K, D] difference tensor.

  Args:
    z: [..., D] continuous codes.
    vectors: [K, D] the codebook.

  Returns:
    z_q: [..., D] the nearest code vectors in the forward pass; its gradient w.r.t. z is the
      identity (z + stop_gradient(c - z)), so the decoder's gradient reaches the encoder.
    indices: int32 [...] the index of the nearest code (the token).
  """
  flat = z.reshape(-1, z.shape[-1])
  distances = (
      jnp.sum(flat**2, axis=-1, keepdims=True)
      - 2.0 * flat @ vectors.T
      + jnp.sum(vectors**2, axis=-1)
  )
  indices = jnp.argmin(distances, axis=-1).astype(jnp.int32).reshape(z.shape[:-1])
  z_q = z + jax.lax.stop_gradient(vectors[indices] - z)
  return z_q, indices


def ema_update(
    codebook: Codebook,
    z: jax.Array,
    indices: jax.Array,
    *,
    decay: float,
    rng: jax.Array,
    dead_code_threshold: float,
    epsilon: float = 1e-5,
) -> Codebook:
  """One EMA codebook update (VQ-VAE App. A.1) followed by dead-code restarts.

    N_k <- decay N_k + (1 - decay) n_k          n_k: outputs assigned to code k in this batch
    m_k <- decay m_k + (1 - decay) sum_{i: k_i = k} z_i
    e_k <- m_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K eps) sum_j N_j

  (Laplace smoothing, so a code that has emptied never divides by 0.) Then every code with
  N_k < dead_code_threshold is restarted: e_k and m_k become an encoder output of this batch
  drawn at random (distinct ones while the batch has at least K), N_k becomes 1. With a
  threshold of 1, a restarted code that attracts nothing is restarted again at the next step;
  with a threshold above 1, even one that attracts a few outputs would be.

  Args:
    codebook: the current Codebook (vectors [K, D], counts [K], sums [K, D]).
    z: [..., D] the batch's encoder outputs (gradients are stopped).
    indices: int [...] their assigned codes (`quantize`'s indices for z).
    decay: EMA decay in [0, 1); 0 sets each used code to the mean of its outputs.
    rng: PRNG key for the restarts.
    dead_code_threshold: restart codes whose EMA count is below this (0: never).
    epsilon: Laplace smoothing constant.

  Returns:
    The new Codebook.
  """
  flat = jax.lax.stop_gradient(z.reshape(-1, z.shape[-1])).astype(jnp.float32)
  num_codes = codebook.vectors.shape[0]
  one_hot = jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=jnp.float32)  # [N, K]
  counts = decay * codebook.counts + (1.0 - decay) * one_hot.sum(0)
  sums = decay * codebook.sums + (1.0 - decay) * (one_hot.T @ flat)
  total = counts.sum()
  smoothed = (counts + epsilon) / (total + num_codes * epsilon) * total
  vectors = sums / smoothed[:, None]

  n = flat.shape[0]
  if n >= num_codes:
    rows = jax.random.choice(rng, n, (num_codes,), replace=False)
  else:
    rows = jax.random.randint(rng, (num_codes,), 0, n)
  candidates = flat[rows]
  dead = counts < dead_code_threshold
  return Codebook(
      vectors=jnp.where(dead[:, None], candidates, vectors),
      counts=jnp.where(dead, 1.0, counts),
      sums=jnp.where(dead[:, None], candidates, sums),
  )


def codebook_usage(indices: jax.Array, num_codes: int) -> dict[str, jax.Array]:
  """How much of the codebook a set of tokens uses.

  Args:
    indices: int [...] tokens in [0, K).
    num_codes: K.

  Returns:
    dict with `fraction_used` (codes used at least once / K), `num_used`, and `perplexity`
    exp(H(p)) of the code frequencies p (K when all codes are equally frequent, 1 when one
    code takes everything). Scalars (jnp; works under jit).
  """
  counts = jnp.bincount(jnp.asarray(indices).reshape(-1), length=num_codes)
  probs = counts / jnp.maximum(counts.sum(), 1)
  entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0))
  num_used = jnp.sum(counts > 0)
  return dict(fraction_used=num_used / num_codes, num_used=num_used, perplexity=jnp.exp(entropy))


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
