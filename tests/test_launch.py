"""bigjax.launch: N processes of one command with JAX's coordinates, their output prefixed, and
one failure (or a signal to the launcher) stopping them all, nothing left running.

The children are tiny Python programs (no JAX); the launcher runs as `python -m bigjax.launch`
in its own session, and every process a test started is killed in the fixture's teardown.
"""

import os
import pathlib
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from bigjax import launch as launch_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 20
PID_LINE = re.compile(r"^\[launch\] process (\d+) of (\d+): pid (\d+)$")


def _child(code: str) -> list[str]:
  return [sys.executable, "-c", textwrap.dedent(code)]


class _Launcher:
  """One `python -m bigjax.launch` process, its output collected line by line."""

  def __init__(self, args):
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "bigjax.launch", *args],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    self.stdout, self.stderr = [], []
    self._lines = queue.Queue()
    self._readers = [
        threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
        for pipe, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
    ]
    for reader in self._readers:
      reader.start()

  def _read(self, pipe, lines):
    for line in pipe:
      lines.append(line.rstrip("\n"))
      self._lines.put(line)

  def wait_for_stdout(self, expected: set[str]) -> None:
    """Blocks until every line of `expected` was printed (fails after TIMEOUT_S)."""
    deadline = time.monotonic() + TIMEOUT_S
    while not expected <= set(self.stdout):
      assert self.proc.poll() is None, (self.stdout, self.stderr)
      try:
        self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
      except queue.Empty:
        pytest.fail(f"no {expected - set(self.stdout)} within {TIMEOUT_S} s: {self.stderr}")

  def finish(self) -> int:
    """The launcher's exit status, once it and its readers are done (fails after TIMEOUT_S)."""
    returncode = self.proc.wait(timeout=TIMEOUT_S)
    for reader in self._readers:
      reader.join(timeout=TIMEOUT_S)
    return returncode

  def child_pids(self) -> dict[int, int]:
    return {int(m[1]): int(m[3]) for m in map(PID_LINE.match, list(self.stderr)) if m is not None}

  def kill_everything(self) -> None:
    for pgid in [self.proc.pid, *self.child_pids().values()]:
      try:
        os.killpg(pgid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass
    try:
      self.proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      pass
    for pipe in (self.proc.stdout, self.proc.stderr):
      pipe.close()


@pytest.fixture
def run_launcher():
  """Starts launchers; kills each one's session and its children's groups at teardown."""
  started = []

  def start(*args):
    launcher = _Launcher([str(a) for a in args])
    started.append(launcher)
    return launcher

  yield start
  for launcher in started:
    launcher.kill_everything()


def _assert_gone(pids):
  """Every process (and process group) of `pids` is gone: stopped and reaped by the launcher."""
  assert pids
  for pid in pids:
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
      os.killpg(pid, 0)


def test_environment_names_are_the_ones_distributed_reads():
  from bigjax.training import distributed  # pylint: disable=import-outside-toplevel

  assert launch_lib.ENV_COORDINATOR == distributed.ENV_COORDINATOR
  assert launch_lib.ENV_NUM_PROCESSES == distributed.ENV_NUM_PROCESSES
  assert launch_lib.ENV_PROCESS_ID == distributed.ENV_PROCESS_ID


def test_each_process_gets_its_coordinates(run_launcher):
  code = """
      import os
      for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                   "PYTHONUNBUFFERED"):
        print(f"{name}={os.environ[name]}")
  """
  launcher = run_launcher("--num_processes", 3, "--", *_child(code))
  assert launcher.finish() == 0, launcher.stderr
  seen = {}
  for line in launcher.stdout:
    prefix, name, value = re.fullmatch(r"\[(\d+)\] (\w+)=(.*)", line).groups()
    seen.setdefault(int(prefix), {})[name] = value
  assert sorted(seen) == [0, 1, 2]
  assert {i: env["JAX_PROCESS_ID"] for i, env in seen.items()} == {0: "0", 1: "1", 2: "2"}
  assert {env["JAX_NUM_PROCESSES"] for env in seen.values()} == {"3"}
  assert {env["PYTHONUNBUFFERED"] for env in seen.values()} == {"1"}
  (address,) = {env["JAX_COORDINATOR_ADDRESS"] for env in seen.values()}
  assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
  assert any(address in line for line in launcher.stderr if line.startswith("[launch] coord"))
  assert sorted(launcher.child_pids()) == [0, 1, 2]


def test_the_port_flag_sets_the_coordinator_port(run_launcher):
  port = launch_lib.free_port()
  code = "import os; print(os.environ['JAX_COORDINATOR_ADDRESS'])"
  launcher = run_launcher("--num_processes", 2, "--port", port, "--", *_child(code))
  assert launcher.finish() == 0, launcher.stderr
  assert sorted(launcher.stdout) == [f"[0] 127.0.0.1:{port}", f"[1] 127.0.0.1:{port}"]


def test_output_is_prefixed_line_by_line_including_a_last_partial_line(run_launcher):
  code = r"""
      import sys
      sys.stdout.write("first\nprogress 1\rprogress 2\r\nbytes \xe9\nlast without newline")
      sys.stderr.write("a warning\n\nstderr tail")
  """
  launcher = run_launcher("--num_processes", 2, "--", *_child(code))
  assert launcher.finish() == 0, launcher.stderr
  for i in (0, 1):
    assert [line for line in launcher.stdout if line.startswith(f"[{i}] ")] == [
        f"[{i}] first",
        f"[{i}] progress 1",
        f"[{i}] progress 2",
        f"[{i}] bytes \xe9",
        f"[{i}] last without newline",
    ]
    assert [line for line in launcher.stderr if line.startswith(f"[{i}] ")] == [
        f"[{i}] a warning",
        f"[{i}] ",
        f"[{i}] stderr tail",
    ]


def test_a_failing_process_stops_the_others_with_its_status(run_launcher):
  code = """
      import os, sys, time
      if os.environ["JAX_PROCESS_ID"] == "1":
        sys.exit(3)
      time.sleep(60)
  """
  launcher = run_launcher("--num_processes", 2, "--", *_child(code))
  assert launcher.finish() == 3
  assert "[launch] process 1 exited with status 3; stopping the others" in launcher.stderr
  _assert_gone(launcher.child_pids().values())


def test_a_process_killed_by_a_signal_gives_128_plus_its_number(run_launcher):
  code = """
      import os, time
      if os.environ["JAX_PROCESS_ID"] == "1":
        os.kill(os.getpid(), 9)
      time.sleep(60)
  """
  launcher = run_launcher("--num_processes", 2, "--", *_child(code))
  assert launcher.finish() == 128 + signal.SIGKILL
  assert "[launch] process 1 was killed by signal SIGKILL; stopping the others" in launcher.stderr
  _assert_gone(launcher.child_pids().values())


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(run_launcher, tmp_path):
  ready = tmp_path / "ignoring"
  code = f"""
      import os, signal, sys, time
      if os.environ["JAX_PROCESS_ID"] == "0":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").close()
        time.sleep(60)
      while not os.path.exists({str(ready)!r}):
        time.sleep(0.01)
      sys.exit(1)
  """
  launcher = run_launcher("--num_processes", 2, "--grace_s", 1, "--", *_child(code))
  assert launcher.finish() == 1
  assert "[launch] process 0 did not stop within 1 s of SIGTERM; sending SIGKILL" in (
      launcher.stderr
  )
  _assert_gone(launcher.child_pids().values())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_every_process(run_launcher, signum):
  code = """
      import time
      print("ready")
      time.sleep(60)
  """
  launcher = run_launcher("--num_processes", 2, "--", *_child(code))
  launcher.wait_for_stdout({"[0] ready", "[1] ready"})
  launcher.proc.send_signal(signum)
  assert launcher.finish() == 128 + signum
  assert f"[launch] received {signum.name}; stopping the processes" in launcher.stderr
  _assert_gone(launcher.child_pids().values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num_processes", "0", "--", sys.executable, "-c", "pass"], "at least 1"),
        (["--num_processes", "2"], "command is missing"),
        (["--num_processes", "2", "--"], "command after `--` is empty"),
        (["--num_processes", "2", "--", "/nonexistent/bigjax-program"], "cannot start"),
        (["--", sys.executable, "-c", "pass"], "--num_processes"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(run_launcher, args, message):
  launcher = run_launcher(*args)
  assert launcher.finish() == 2
  (error,) = [line for line in launcher.stderr if line.startswith("[launch] error:")]
  assert message in error
  assert not launcher.child_pids()


def test_launch_returns_the_status_and_passes_the_given_environment(capsys):
  env = dict(os.environ, BIGJAX_LAUNCH_TEST="hello")
  code = "import os; print(os.environ['BIGJAX_LAUNCH_TEST'] + os.environ['JAX_PROCESS_ID'])"
  assert launch_lib.launch(_child(code), 2, env=env) == 0
  assert sorted(capsys.readouterr().out.splitlines()) == ["[0] hello0", "[1] hello1"]
  assert launch_lib.launch(_child("raise SystemExit(5)"), 1) == 5
  with pytest.raises(ValueError, match="at least 1"):
    launch_lib.launch(_child("pass"), 0)
  with pytest.raises(ValueError, match="no command"):
    launch_lib.launch([], 2)


def test_an_error_in_the_launcher_still_stops_every_process(capsys, monkeypatch):
  def broken_watch(procs, signals, out):
    del signals, out
    for proc in procs:
      proc.stdout.read(6)  # "ready\n": the child is running
    raise RuntimeError("launcher bug")

  monkeypatch.setattr(launch_lib, "_watch", broken_watch)
  monkeypatch.setattr(launch_lib, "_forward", lambda *args: None)  # leaves stdout to the test
  code = """
      import time
      print("ready")
      time.sleep(60)
  """
  with pytest.raises(RuntimeError, match="launcher bug"):
    launch_lib.launch(_child(code), 2, grace_s=5)
  pids = [int(m[3]) for m in map(PID_LINE.match, capsys.readouterr().err.splitlines()) if m]
  assert len(pids) == 2
  _assert_gone(pids)


def test_lines_split_at_newlines_and_carriage_returns_across_chunks():
  lines = launch_lib._Lines()  # pylint: disable=protected-access
  assert lines.feed(b"a\r") == ["a"]
  assert lines.feed(b"\nb\n\n\r10%\r") == ["b", "", "10%"]
  assert lines.feed(b"20%\r\xc3") == ["20%"]
  assert lines.feed(b"\xa9 \xff done") == []
  assert lines.close() == ["\xe9 \ufffd done"]
  assert lines.close() == []


def test_free_port_is_a_port_that_can_be_bound():
  port = launch_lib.free_port()
  assert 0 < port < 65536
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", port))
