"""The order in which a trainer visits its dataset: a pure function of (seed, stream, step).

Every epoch is a fresh permutation of the rows seeded by (seed, stream, epoch), cut into
batches, the last incomplete batch dropped. Because the batch of a step depends on nothing
else, a run resumed from a checkpoint at step s sees the batches the uninterrupted run saw, and
a batch can be assembled ahead of time in another thread (`bigjax.training.prefetch`).

Trainers that share a seed but must not share an order use different streams; bigjax's own:
the BigLearn-GAN `None`, the MNIST classifier and the vector quantiser 1, the permutation
model 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from bigjax.training import sharding

__all__ = ["batch_fn", "batch_indices"]


def batch_indices(
    step: int, num_examples: int, batch_size: int, *, seed: int, stream: int | None = None
) -> np.ndarray:
  """Dataset rows of the global batch at `step`.

  Args:
    step: the step, counted from 0.
    num_examples: N, the rows of the dataset (>= batch_size).
    batch_size: B.
    seed: the run's seed.
    stream: which of the seed's orders (None: the order seeded by (seed, epoch) alone).

  Returns:
    int64 [B] indices into the dataset: rows [i B, (i + 1) B) of epoch e's permutation, with
    (e, i) = divmod(step, N // B).
  """
  if not 0 < int(batch_size) <= int(num_examples):
    raise ValueError(
        f"batch_size={batch_size} must be in [1, {num_examples}] (the dataset's " "size)."
    )
  steps_per_epoch = int(num_examples) // int(batch_size)
  epoch, i = divmod(int(step), steps_per_epoch)
  key = [int(seed), epoch] if stream is None else [int(seed), int(stream), epoch]
  perm = np.random.default_rng(key).permutation(int(num_examples))
  return perm[i * batch_size : (i + 1) * batch_size]


def batch_fn(
    arrays: Sequence[np.ndarray],
    batch_size: int,
    *,
    seed: int,
    stream: int | None = None,
    transform: Callable[..., tuple] | None = None,
    mesh: jax.sharding.Mesh | None = None,
) -> Callable[[int], tuple]:
  """The batch function of a training loop over in-memory arrays (bigjax.training.train).

  Args:
    arrays: the dataset's arrays, each [N, ...] (e.g. images and labels).
    batch_size: the global batch B.
    seed, stream: the order (`batch_indices`).
    transform: optional (*rows) -> tuple of arrays, applied to this process's rows (e.g. uint8
      pixels to floats).
    mesh: with a mesh, each process takes its slice of the global batch and the result is
      assembled into global arrays split along "data" (bigjax.training.sharding); without one,
      numpy arrays.

  Returns:
    step -> tuple of the step's batch arrays, a pure function of the step.

  Raises:
    ValueError: arrays of different lengths, or fewer rows than batch_size.
  """
  n = len(arrays[0])
  if any(len(a) != n for a in arrays):
    raise ValueError(f"the arrays have different numbers of rows: {[len(a) for a in arrays]}.")
  if n < batch_size:
    raise ValueError(
        f"the dataset has {n} examples, fewer than batch_size={batch_size}; use a "
        "smaller batch or more data."
    )
  rows = sharding.process_slice(batch_size) if mesh is not None else slice(None)

  def make(step: int) -> tuple:
    idx = batch_indices(step, n, batch_size, seed=seed, stream=stream)[rows]
    batch = tuple(a[idx] for a in arrays)
    if transform is not None:
      batch = tuple(transform(*batch))
    if mesh is not None:
      batch = tuple(sharding.global_batch(b, mesh) for b in batch)
    return batch

  return make
