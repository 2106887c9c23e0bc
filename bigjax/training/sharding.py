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
    "local_view",
    "put",
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


def local_view(tree):
  """`tree` with every array that spans other processes' devices replaced by this process's own
  copy (its first addressable shard), for host-side work on a replicated state: metrics, hooks
  that evaluate or sample without collectives, files. Arrays this process holds whole (every
  array of a single-process run) are returned as they are.

  Raises:
    ValueError: an array spanning several processes is not replicated (its local shard would
      be only part of it).
  """

  def local(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return x
    if not x.sharding.is_fully_replicated:
      raise ValueError(
          f"an array of shape {x.shape} is split across processes ({x.sharding}); only "
          "replicated arrays have a whole copy on each process. Gather it first "
          "(jax.experimental.multihost_utils.process_allgather)."
      )
    return x.addressable_data(0)

  return jax.tree.map(local, tree)


def put(tree, target: jax.sharding.Sharding):
  """`jax.device_put(tree, target)` that also works across processes: an array held by this
  process's devices (a restored quantiser, a state loaded from files) goes to a `target` spanning
  other processes' devices through the host (each process passes its own, equal copy), which JAX
  does not do itself on backends without cross-host transfers (CPU). Within one process it is
  `jax.device_put` itself."""
  if target.is_fully_addressable:
    return jax.device_put(tree, target)

  def host(x):
    if isinstance(x, jax.Array) and x.sharding != target:
      return np.asarray(local_view(x))
    return x

  return jax.device_put(jax.tree.map(host, tree), target)
