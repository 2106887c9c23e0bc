"""Batched small-matrix linear algebra in pure jax.numpy: Cholesky, triangular solve, QR, and
the orthogonal matrices of the transformed domains (rotations, Haar-random ones).

Why not `jnp.linalg` / `lax.linalg`: on CPU, jaxlib 0.10.x runs batched LAPACK kernels (potrf,
trsm, geqrf, ...) through `jax::ParallelBatchMap`, which queues sub-batches on XLA's intra-op
thread pool and blocks a pool thread waiting for them. When a compiled program runs as many
independent LAPACK calls at once as the pool has threads, every thread waits and the process
deadlocks (seen here on 2 cores in most runs of a loss-surface grid; jax 0.11 compiles that path
out). The mixtures in bigjax have small dimensions, so these loops are also faster than a
LAPACK call per 2x2 matrix: for D <= `UNROLL_MAX_DIM` they are unrolled into fused elementwise
ops over the batch, above it they run as a `lax.fori_loop` over columns.
All functions are differentiable and work under `jit` and `vmap`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

UNROLL_MAX_DIM = 8


def cholesky(a: jax.Array) -> jax.Array:
  """Lower Cholesky factor L of symmetric positive definite `a` `[..., D, D]` (a = L L^T).

  Only the lower triangle of `a` is read. A matrix that is not positive definite gives NaN;
  callers check concrete inputs first (see `bigjax.mixtures.gmm`).
  """
  d = a.shape[-1]
  if d <= UNROLL_MAX_DIM:
    cols = [[None] * d for _ in range(d)]
    for j in range(d):
      diag = a[..., j, j] - sum((cols[j][k] ** 2 for k in range(j)), jnp.zeros_like(a[..., 0, 0]))
      cols[j][j] = jnp.sqrt(diag)
      for i in range(j + 1, d):
        off = a[..., i, j] - sum(
            (cols[i][k] * cols[j][k] for k in range(j)), jnp.zeros_like(a[..., 0, 0])
        )
        cols[i][j] = off / cols[j][j]
    zero = jnp.zeros_like(a[..., 0, 0])
    return jnp.stack(
        [jnp.stack([cols[i][j] if j <= i else zero for j in range(d)], -1) for i in range(d)], -2
    )

  idx = jnp.arange(d)

  def column(j, l):
    # Left-looking Cholesky: column j from the columns < j already in l.
    lj = l[..., j, :]  # row j, entries < j filled
    v = a[..., :, j] - jnp.einsum("...ik,...k->...i", l, lj)
    diag = jnp.sqrt(v[..., j])
    colj = jnp.where(idx > j, v / diag[..., None], jnp.where(idx == j, diag[..., None], 0.0))
    return l.at[..., :, j].set(colj)

  return jax.lax.fori_loop(0, d, column, jnp.zeros_like(a))


def solve_lower(l: jax.Array, b: jax.Array) -> jax.Array:
  """Solves L z = b by forward substitution.

  Args:
    l: `[..., D, D]` lower-triangular with non-zero diagonal.
    b: `[..., D, N]` right-hand sides (batch axes broadcast against `l`'s).

  Returns:
    `[..., D, N]` solutions z.
  """
  d = l.shape[-1]
  if d <= UNROLL_MAX_DIM:
    rows = []
    for i in range(d):
      r = b[..., i, :]
      for k in range(i):
        r = r - l[..., i, k, None] * rows[k]
      rows.append(r / l[..., i, i, None])
    return jnp.stack(rows, -2)

  batch = jnp.broadcast_shapes(l.shape[:-2], b.shape[:-2])
  l = jnp.broadcast_to(l, batch + l.shape[-2:])
  b = jnp.broadcast_to(b, batch + b.shape[-2:])

  def row(i, z):
    r = (b[..., i, :] - jnp.einsum("...k,...kn->...n", l[..., i, :], z)) / l[..., i, i, None]
    return z.at[..., i, :].set(r)

  return jax.lax.fori_loop(0, d, row, jnp.zeros_like(b))


def orthonormalize(a: jax.Array) -> jax.Array:
  """Q of the QR decomposition a = Q R with R's diagonal positive, for square `a` `[..., D, D]`.

  Modified Gram-Schmidt on the columns; for a Gaussian matrix this Q is Haar distributed.
  """
  d = a.shape[-1]
  cols = []
  for j in range(d):
    v = a[..., :, j]
    for q in cols:
      v = v - jnp.sum(q * v, -1, keepdims=True) * q
    cols.append(v / jnp.linalg.norm(v, axis=-1, keepdims=True))
  return jnp.stack(cols, -1)


def rotation(angle) -> jax.Array:
  """2-D rotation A = [[cos a, sin a], [-sin a, cos a]] (the reference's y = A x).

  Args:
    angle: scalar or `[...]` angles in radians.

  Returns:
    `[..., 2, 2]` orthogonal matrices.
  """
  angle = jnp.asarray(angle, jnp.result_type(float))
  c, s = jnp.cos(angle), jnp.sin(angle)
  return jnp.stack([jnp.stack([c, s], -1), jnp.stack([-s, c], -1)], -2)


def random_orthogonal(rng: jax.Array, dim: int, *, shape: Sequence[int] = ()) -> jax.Array:
  """Orthogonal matrices drawn from the Haar measure on O(dim).

  The Q factor, with R's diagonal positive, of a Gaussian matrix (Mezzadri 2007): exactly
  Haar. Computed by Gram-Schmidt in pure jax.numpy (see the module docstring for why not LAPACK).

  Returns:
    `[*shape, dim, dim]` orthogonal matrices.
  """
  if int(dim) < 1:
    raise ValueError(f"dim must be a positive integer, got {dim}.")
  g = jax.random.normal(rng, tuple(shape) + (int(dim), int(dim)), jnp.result_type(float))
  return orthonormalize(g)
