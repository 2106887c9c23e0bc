"""The codebook of the vector quantiser (`bigjax.models.vq`): nearest-code quantisation with the
straight-through gradient (van den Oord et al., 2017, Eq. (1)-(3)), the codebook learnt by
exponential moving averages instead of gradients (App. A.1 of that paper; Razavi et al., 2019),
dead codes restarted from encoder outputs, and how much of the codebook a set of tokens uses.

All functions are pure and work under jit; `bigjax.models.vq` re-exports them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


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
