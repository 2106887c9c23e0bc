"""Several processes of one JAX run on one machine: `python -m bigjax.launch`.

A multi-process run (bigjax.training.distributed) is one process per host on a cluster. On one
machine this launcher starts N processes of the same command that join one JAX distributed
runtime, their collectives going over gloo on CPU: a test of the multi-host path (process 0
writes, every process agrees, batches are process-local), not a speed-up.

Usage:

  python -m bigjax.launch --num_processes N [--port P] [--grace_s S] -- COMMAND [ARGS...]
  python -m bigjax.launch --num_processes 2 -- \\
      python -m experiments.biglearn_gan --config configs/gan_mnist.py:smoke --workdir /tmp/gan

What each process gets: the launcher's environment plus

  JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT  (a free port, or --port)
  JAX_NUM_PROCESSES=N
  JAX_PROCESS_ID=i                        (0 .. N-1; 0 hosts the coordinator)
  PYTHONUNBUFFERED=1

its own session (so that stopping it stops whatever it started too) and no stdin. Its stdout and
stderr reach the launcher's, line by line, each line prefixed with `[i] ` (a `\\r` of a progress
bar ends a line as `\\n` does). The launcher's own lines start with `[launch] `; the first ones
name the coordinator and each process's pid.

How it ends: when every process exits 0, with 0. When one exits non-zero or is killed by a
signal, the launcher sends SIGTERM to the others' process groups, waits up to --grace_s seconds
(default 10), SIGKILLs what is left, and exits with that process's status (128 + the signal's
number for a signal, as shells do); the first failure it sees decides. SIGINT, SIGTERM or SIGHUP
to the launcher stop every process the same way (a second one skips the grace) and the launcher
exits with 128 + its number. Wrong arguments, or a command that cannot be started: one line on
stderr and status 2. No process outlives the launcher, except when the launcher itself is
SIGKILLed (nothing can forward that).

On a cluster, the scheduler starts the processes instead, one task per node, and each joins the
run from what JAX detects or from the same variables; under SLURM, for example:

  #SBATCH --nodes=4 --ntasks-per-node=1
  srun python -m experiments.biglearn_gan --config configs/gan_mnist.py --workdir runs/gan \\
      --config.distributed=True
  # or with the coordinates spelled out (process 0's node hosts the coordinator):
  srun bash -c 'JAX_COORDINATOR_ADDRESS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" \\
      | head -n 1):12345 JAX_NUM_PROCESSES=$SLURM_NTASKS JAX_PROCESS_ID=$SLURM_PROCID \\
      exec python -m experiments.biglearn_gan --config configs/gan_mnist.py --workdir runs/gan'
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["free_port", "launch", "main"]

# The names bigjax.training.distributed reads (not imported from there: it imports jax, and the
# launcher starts in a fraction of a second without it; a test checks that they agree).
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_POLL_S = 0.05
_LINE_END = re.compile(rb"[\r\n]")
_READER_JOIN_S = 5.0  # a process that escaped its group may hold a pipe open: do not wait on it
_USAGE = "python -m bigjax.launch --num_processes N [--port P] [--grace_s S] -- COMMAND [ARGS...]"


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port on `host` that was free a moment ago (bound to port 0, read, closed); another
  program may take it before the coordinator binds it, which is rare on one machine."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


class _Lines:
  """Splits a byte stream into lines at `\\n`, `\\r` or `\\r\\n`, decoded as UTF-8 with errors
  replaced. A progress bar's `\\r` updates come out one per line; the empty pieces that `\\r\\n`
  and a leading `\\r` would make are dropped, but a real empty line (`\\n\\n`) is kept."""

  def __init__(self):
    self._pending = b""
    self._after_cr = False

  def feed(self, data: bytes) -> list[str]:
    """The lines that `data` completes."""
    self._pending += data
    lines = []
    start = 0
    for end in _LINE_END.finditer(self._pending):
      piece = self._pending[start : end.start()]
      is_cr = end.group() == b"\r"
      if piece or not (is_cr or self._after_cr):
        lines.append(piece.decode("utf-8", errors="replace"))
      self._after_cr = is_cr
      start = end.end()
    self._pending = self._pending[start:]
    return lines

  def close(self) -> list[str]:
    """The last line, when the stream ended without a line end."""
    piece, self._pending = self._pending, b""
    return [piece.decode("utf-8", errors="replace")] if piece else []


class _Output:
  """The launcher's stdout and stderr, shared by the reader threads and the launcher's own
  messages: one line at a time, flushed; a closed stream (a pipe whose reader left) is then
  ignored so that the children's pipes are still drained."""

  def __init__(self, stdout, stderr):
    self._streams = {"stdout": stdout, "stderr": stderr}
    self._closed = set()
    self._lock = threading.Lock()

  def write(self, which: str, line: str) -> None:
    with self._lock:
      if which in self._closed:
        return
      stream = self._streams[which]
      try:
        try:
          stream.write(line + "\n")
        except UnicodeEncodeError:
          encoding = getattr(stream, "encoding", None) or "ascii"
          stream.write((line + "\n").encode(encoding, "backslashreplace").decode(encoding))
        stream.flush()
      except (OSError, ValueError):
        self._closed.add(which)

  def note(self, message: str) -> None:
    self.write("stderr", f"[launch] {message}")


def _forward(pipe, which: str, prefix: str, out: _Output) -> None:
  lines = _Lines()
  try:
    while True:
      data = pipe.read(65536)
      if not data:
        break
      for line in lines.feed(data):
        out.write(which, prefix + line)
  except (OSError, ValueError):
    pass  # the pipe was closed under us: the launcher is leaving
  for line in lines.close():
    out.write(which, prefix + line)


def _group_alive(pgid: int) -> bool:
  try:
    os.killpg(pgid, 0)
  except (ProcessLookupError, PermissionError):
    return False
  return True


def _signal_group(pgid: int, signum: int) -> None:
  try:
    os.killpg(pgid, signum)
  except (ProcessLookupError, PermissionError):
    pass


def _describe(returncode: int) -> tuple[str, int]:
  """How a child ended, in words, and the status a shell would give it."""
  if returncode < 0:
    signum = -returncode
    try:
      name = signal.Signals(signum).name
    except ValueError:
      name = str(signum)
    return f"was killed by signal {name}", 128 + signum
  return f"exited with status {returncode}", returncode


class _Signals:
  """Turns SIGINT / SIGTERM / SIGHUP into a recorded request to stop (installed only in the main
  thread, where Python runs signal handlers; the previous handlers come back on exit)."""

  def __init__(self):
    self.received: list[int] = []
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.received.append(signum)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in _STOP_SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _stop(procs, grace_s: float, signals: _Signals, out: _Output) -> None:
  """SIGTERM to every child's process group, up to `grace_s` for them to go, SIGKILL to what is
  left (at once on a further stop signal), then reaps every child."""
  for i, proc in enumerate(procs):
    if proc.poll() is not None and _group_alive(proc.pid):
      out.note(f"process {i} left processes behind in its group {proc.pid}; stopping them")
    _signal_group(proc.pid, signal.SIGTERM)
  seen = len(signals.received)
  deadline = time.monotonic() + grace_s
  while time.monotonic() < deadline and len(signals.received) == seen:
    for proc in procs:
      proc.poll()
    if not any(_group_alive(proc.pid) for proc in procs):
      break
    time.sleep(_POLL_S)
  for i, proc in enumerate(procs):
    if _group_alive(proc.pid):
      if len(signals.received) == seen:
        out.note(f"process {i} did not stop within {grace_s:g} s of SIGTERM; sending SIGKILL")
      _signal_group(proc.pid, signal.SIGKILL)
  for i, proc in enumerate(procs):
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      out.note(f"process {i} (pid {proc.pid}) survived SIGKILL for 30 s; leaving it")


def _watch(procs, signals: _Signals, out: _Output) -> int:
  """Waits until every child exited 0 (0), one failed (its status) or the launcher was asked to
  stop (128 + the signal's number)."""
  running = dict(enumerate(procs))
  while running:
    if signals.received:
      signum = signals.received[0]
      out.note(f"received {signal.Signals(signum).name}; stopping the processes")
      return 128 + signum
    for i, proc in list(running.items()):
      returncode = proc.poll()
      if returncode is None:
        continue
      del running[i]
      if returncode != 0:
        how, status = _describe(returncode)
        out.note(f"process {i} {how}; stopping the others")
        return status
    time.sleep(_POLL_S)
  out.note(f"all {len(procs)} processes exited with status 0")
  return 0


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    port: int | None = None,
    grace_s: float = 10.0,
    env: Mapping[str, str] | None = None,
) -> int:
  """Runs `num_processes` copies of `command` as the processes of one JAX run on this machine
  (see the module docstring) and returns the launcher's exit status.

  Args:
    command: the program and its arguments (no shell).
    num_processes: how many processes, at least 1.
    port: the coordinator's port on 127.0.0.1 (None: a free one).
    grace_s: how long stopped processes get between SIGTERM and SIGKILL.
    env: the processes' base environment (None: this process's).

  Returns:
    0 when every process exited 0; else the first failed process's status (128 + signal number
    for a signal), or 128 + the number of the signal that stopped the launcher.

  Raises:
    ValueError: no command, fewer than one process, a port outside 1..65535 or a negative grace.
    OSError: the command could not be started (nothing is left running).
  """
  command = list(command)
  if not command:
    raise ValueError(f"no command to run; put it after `--`: {_USAGE}")
  if num_processes < 1:
    raise ValueError(f"--num_processes must be at least 1, got {num_processes}.")
  if port is not None and not 0 < port < 65536:
    raise ValueError(f"--port must be in 1..65535, got {port}; leave it out for a free one.")
  if grace_s < 0:
    raise ValueError(f"--grace_s must be at least 0 seconds, got {grace_s:g}.")
  out = _Output(sys.stdout, sys.stderr)
  address = f"127.0.0.1:{free_port() if port is None else port}"
  base = dict(os.environ if env is None else env)
  out.note(f"coordinator {address}, {num_processes} processes of: {shlex.join(command)}")
  procs: list[subprocess.Popen] = []
  readers: list[threading.Thread] = []
  with _Signals() as signals:
    try:
      for i in range(num_processes):
        child_env = dict(base)
        child_env.update(
            {
                ENV_COORDINATOR: address,
                ENV_NUM_PROCESSES: str(num_processes),
                ENV_PROCESS_ID: str(i),
                "PYTHONUNBUFFERED": "1",
            }
        )
        proc = subprocess.Popen(
            command,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        procs.append(proc)
        out.note(f"process {i} of {num_processes}: pid {proc.pid}")
        for pipe, which in ((proc.stdout, "stdout"), (proc.stderr, "stderr")):
          reader = threading.Thread(
              target=_forward, args=(pipe, which, f"[{i}] ", out), daemon=True
          )
          reader.start()
          readers.append(reader)
      return _watch(procs, signals, out)
    finally:
      _stop(procs, grace_s, signals, out)
      deadline = time.monotonic() + _READER_JOIN_S
      for reader in readers:
        reader.join(timeout=max(0.0, deadline - time.monotonic()))
      for proc, pipe_readers in zip(procs, zip(readers[::2], readers[1::2])):
        for pipe, reader in zip((proc.stdout, proc.stderr), pipe_readers):
          if not reader.is_alive():
            pipe.close()


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    self.exit(2, f"[launch] error: {message} (usage: {_USAGE})\n")


def main(argv: Sequence[str] | None = None) -> int:
  """The command line (see the module docstring); returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = _Parser(
      prog="python -m bigjax.launch",
      usage=_USAGE,
      description="Runs N processes of one JAX run on this machine (bigjax.launch's docstring).",
  )
  parser.add_argument("--num_processes", type=int, required=True, help="how many processes")
  parser.add_argument("--port", type=int, default=None, help="coordinator port (default: free)")
  parser.add_argument(
      "--grace_s", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL"
  )
  if "--" in argv:
    split = argv.index("--")
    own, command = argv[:split], argv[split + 1 :]
  else:
    own, command = argv, None
  args = parser.parse_args(own)
  if command is None:
    parser.error("the command is missing; put `--` and then the command to run")
  if not command:
    parser.error("the command after `--` is empty")
  try:
    return launch(command, args.num_processes, port=args.port, grace_s=args.grace_s)
  except ValueError as e:
    parser.error(str(e))
  except OSError as e:
    print(
        f"[launch] error: cannot start {command[0]!r}: {e.strerror or e} (check that it is "
        "installed and on PATH, or give its full path)",
        file=sys.stderr,
    )
  return 2


if __name__ == "__main__":
  sys.exit(main())
