"""Many processes, one run: joining JAX's distributed runtime, and agreeing across processes.

A multi-process run is one JAX process per host (or per group of devices), joined by JAX's own
distributed runtime (`jax.distributed.initialize`), the runtime of GPU clusters under SLURM,
Open MPI or Kubernetes and of TPU pods. Every bigjax trainer joins it in one place,
`initialize`, before any device is touched; where the processes find each other comes from,
first to last:

  1. arguments (the entry points' `--coordinator_address`, `--num_processes`, `--process_id`);
  2. the environment: JAX_COORDINATOR_ADDRESS (which JAX itself reads), JAX_NUM_PROCESSES and
     JAX_PROCESS_ID (set by `python -m bigjax.launch`, and by hand or a job script elsewhere);
  3. `auto=True` (`--config.distributed=True`): the cluster JAX detects by itself (SLURM, Open
     MPI, Kubernetes, Cloud TPU).

With none of them the run is one process, as before. On CPU the processes' collectives go over
gloo (`jax_cpu_collectives_implementation`), so several processes on one machine run the
multi-host path for real (a test of it, not a speed-up).

A process that cannot reach the coordinator fails with `CoordinatorUnreachableError` within
`timeout_s` (JAX itself would abort the process with a fatal log line instead of raising).

After `initialize`, `agree` lets process 0 decide something (may the run directory be written?)
and every process learn the verdict, so that a refusal stops all processes rather than leaving
the others waiting in a collective; `main_first` runs a step that writes files in process 0
before the others (which then find them); `barrier` waits for every process. All three are
plain calls in a single-process run.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from typing import TypeVar
from collections.abc import Callable

import jax
import numpy as np

__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "CoordinatorUnreachableError",
    "agree",
    "barrier",
    "initialize",
    "is_main_process",
    "main_first",
    "resolve",
]

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
ENV_TIMEOUT = "BIGJAX_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_S = 300
T = TypeVar("T")


class CoordinatorUnreachableError(ConnectionError):
  """A process could not reach the coordinator (process 0) in time."""


def _int(value, name: str) -> int | None:
  if value is None or value == "":
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be an integer, got {value!r}.") from None


def resolve(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    environ=None,
) -> tuple[str, int, int] | None:
  """(coordinator address, number of processes, process id) from the arguments, else from the
  environment (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID); None when neither names a
  coordinator.

  Raises:
    ValueError: a part is missing or malformed (the message says which and how to set it).
  """
  environ = os.environ if environ is None else environ
  address = coordinator_address or environ.get(ENV_COORDINATOR) or None
  num = _int(num_processes, "--num_processes")
  if num is None:
    num = _int(environ.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES)
  pid = _int(process_id, "--process_id")
  if pid is None:
    pid = _int(environ.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
  if address is None and num is None and pid is None:
    return None
  missing = [
      f"{flag} (or ${env})"
      for value, flag, env in (
          (address, "--coordinator_address", ENV_COORDINATOR),
          (num, "--num_processes", ENV_NUM_PROCESSES),
          (pid, "--process_id", ENV_PROCESS_ID),
      )
      if value is None
  ]
  if missing:
    raise ValueError(
        f"a multi-process run needs the coordinator's address, the number of processes and "
        f"this process's id; missing: {', '.join(missing)}. On one machine, `python -m "
        "bigjax.launch --num_processes N -- COMMAND` sets all three; on a cluster JAX detects "
        "(SLURM, Open MPI, Kubernetes), set none and pass --config.distributed=True."
    )
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(
        f"coordinator address {address!r} must be HOST:PORT (e.g. 10.0.0.1:12345), the "
        "address of process 0's host and a free port there."
    )
  if num < 1:
    raise ValueError(f"the number of processes must be at least 1, got {num}.")
  if not 0 <= pid < num:
    raise ValueError(
        f"process id {pid} is outside 0..{num - 1} (the ids of {num} processes); give each "
        "process its own id, 0 for the one on the coordinator's host."
    )
  return address, num, pid


def _wait_for(address: str, timeout_s: float, pid: int, num: int) -> None:
  """Returns once the coordinator's port accepts connections; CoordinatorUnreachableError
  after `timeout_s`."""
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  deadline = time.monotonic() + timeout_s
  last = None
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=min(2.0, timeout_s)):
        return
    except OSError as e:
      last = e
    if time.monotonic() >= deadline:
      raise CoordinatorUnreachableError(
          f"process {pid} of {num} could not reach the coordinator at {address} within "
          f"{timeout_s:g} s ({type(last).__name__}: {last}). Process 0 starts the coordinator "
          "there: check that it is running and that the address is process 0's host, "
          f"reachable from this one (raise the wait with ${ENV_TIMEOUT})."
      )
    time.sleep(0.1)


def _timeout(timeout_s: float | None) -> float:
  if timeout_s is not None:
    return float(timeout_s)
  value = os.environ.get(ENV_TIMEOUT)
  if value:
    try:
      return float(value)
    except ValueError:
      raise ValueError(f"${ENV_TIMEOUT} must be a number of seconds, got {value!r}.") from None
  return DEFAULT_TIMEOUT_S


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout_s: float | None = None,
) -> bool:
  """Joins JAX's distributed runtime when this process is one of several (see the module
  docstring for where the coordinates come from); a no-op for a single process and when
  already joined. Call it before anything touches a device.

  Args:
    coordinator_address, num_processes, process_id: the coordinates (None: from the
      environment).
    auto: with no coordinates, join the cluster JAX detects (`jax.distributed.initialize()`).
    timeout_s: how long to wait for the other processes (default: $BIGJAX_DISTRIBUTED_TIMEOUT,
      else 300 s).

  Returns:
    True when the process is part of a multi-process run.

  Raises:
    ValueError: incomplete or malformed coordinates.
    CoordinatorUnreachableError: a process other than 0 found no coordinator in time.
    RuntimeError: devices were touched before (JAX cannot join a runtime then).
  """
  if jax.distributed.is_initialized():
    return True
  coordinates = resolve(coordinator_address, num_processes, process_id)
  if coordinates is None and not auto:
    return False
  if coordinates is not None and coordinates[1] == 1:
    return False  # one process: nothing to join
  from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel

  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        "jax.distributed must be joined before any JAX computation or device query; call "
        "bigjax.training.distributed.initialize() first thing in the program (the "
        "experiments' entry points do)."
    )
  timeout = _timeout(timeout_s)
  # The processes' collectives on CPU (a no-op for GPU and TPU computations).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinates is None:
    logging.info("bigjax.distributed: joining the cluster JAX detects")
    jax.distributed.initialize(initialization_timeout=int(max(timeout, 1)))
    return True
  address, num, pid = coordinates
  if pid != 0:
    _wait_for(address, timeout, pid, num)
  logging.info("bigjax.distributed: process %d of %d joining %s", pid, num, address)
  jax.distributed.initialize(
      coordinator_address=address,
      num_processes=num,
      process_id=pid,
      initialization_timeout=int(max(timeout, 1)),
  )
  return True


def is_main_process() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def agree(ok: bool) -> bool:
  """Process 0's `ok`, learnt by every process (each must call it, in the same order); `ok`
  itself in a single-process run."""
  if jax.process_count() == 1:
    return bool(ok)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(ok))))


def main_first(fn: Callable[[], T], what: str) -> T:
  """Runs `fn` in process 0, then, once it succeeded there, in the other processes (for a step
  that writes files in process 0 that the others then find and read, such as a tokenizer
  trained into the run directory: `fn` must see its own result and write nothing again);
  returns `fn()`'s result.

  Raises:
    RuntimeError: (processes other than 0) `fn` failed in process 0; its error says why.
  """
  if jax.process_count() == 1:
    return fn()
  if jax.process_index() == 0:
    try:
      result = fn()
    except BaseException:
      agree(False)
      raise
    agree(True)
    return result
  if not agree(False):
    raise RuntimeError(f"process 0 failed to {what} (its error says why); this process stops too.")
  return fn()


def barrier(name: str) -> None:
  """Waits until every process reached the barrier `name` (no-op for a single process)."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  multihost_utils.sync_global_devices(name)
