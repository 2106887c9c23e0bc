"""Data parallelism over a device mesh: one code path from one device to many hosts.

The mesh has one axis, "data". Training state is replicated (`NamedSharding(mesh, P())`), the
batch is split along its first axis (`P("data")`); XLA inserts the gradient all-reduce. Each
process feeds only its own slice of the global batch (`global_batch`), so the same trainer runs
multi-host after `jax.distributed.initialize()`.

The mesh is a plain `Mesh` (Auto axis types): `jax.make_mesh` defaults to Explicit axes, which
would make every intermediate's sharding part of its type; GSPMD propagation is what we want
for pure data parallelism.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

__all__ = [
    "data_mesh",
    "replicated",
    "batch_sharded",
    "check_batch_size",
    "process_slice",
    "global_batch",
]

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of the training state: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding of a batch: the first axis split across the "data" axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises ValueError unless the global batch splits evenly over devices and processes."""
  n = mesh.devices.size
  if batch_size % n or batch_size % jax.process_count():
    raise ValueError(
        f"batch_size={batch_size} must be divisible by the {n} devices of the mesh "
        f"(and the {jax.process_count()} processes); set --config.batch_size to a "
        f"multiple of {n}."
    )


def process_slice(batch_size: int) -> slice:
  """The rows of a global batch of `batch_size` that this process feeds."""
  per_process = batch_size // jax.process_count()
  start = jax.process_index() * per_process
  return slice(start, start + per_process)


def global_batch(local_rows: np.ndarray, mesh: Mesh) -> jax.Array:
  """Assembles this process's rows (`process_slice` of the global batch) into a global array
  sharded along "data" (`jax.make_array_from_process_local_data`)."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local_rows)
