"""bigjax.training.distributed in one process: where the coordinates come from, the errors of
bad ones, and the single-process behaviour of agree / main_first / barrier / local_view. The
runs of several real processes are in test_multiprocess.py."""

from __future__ import annotations

import re
import socket
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax.training import distributed, sharding

ENV = {
    distributed.ENV_COORDINATOR: "10.0.0.1:1234",
    distributed.ENV_NUM_PROCESSES: "4",
    distributed.ENV_PROCESS_ID: "3",
}


def test_no_coordinates_is_one_process():
  assert distributed.resolve(environ={}) is None
  assert distributed.initialize() is False  # the suite's environment names no coordinator


def test_coordinates_from_the_environment_and_arguments_first():
  assert distributed.resolve(environ=ENV) == ("10.0.0.1:1234", 4, 3)
  assert distributed.resolve("h:99", 2, 0, environ=ENV) == ("h:99", 2, 0)
  assert distributed.resolve(None, None, 1, environ=ENV) == ("10.0.0.1:1234", 4, 1)


@pytest.mark.parametrize(
    "args, environ, message",
    [
        (("h:1", None, None), {}, "missing: --num_processes (or $JAX_NUM_PROCESSES), --process_id"),
        ((None, 2, 0), {}, "missing: --coordinator_address (or $JAX_COORDINATOR_ADDRESS)"),
        (("h", 2, 0), {}, "must be HOST:PORT"),
        (("h:0", 2, 0), {}, "must be HOST:PORT"),
        ((":5", 2, 0), {}, "must be HOST:PORT"),
        (("h:5", 0, 0), {}, "at least 1"),
        (("h:5", 2, 2), {}, "process id 2 is outside 0..1"),
        (("h:5", 2, -1), {}, "process id -1 is outside 0..1"),
        ((None, None, None), dict(ENV, JAX_NUM_PROCESSES="two"), "JAX_NUM_PROCESSES must be an"),
    ],
)
def test_bad_coordinates_are_clear_errors(args, environ, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    distributed.resolve(*args, environ=environ)


def test_one_process_of_one_joins_nothing():
  assert distributed.initialize("127.0.0.1:5", 1, 0) is False


def test_joining_after_devices_were_touched_is_refused():
  jax.devices()  # the suite's process has its backend already
  with pytest.raises(RuntimeError, match="must be joined before any JAX computation"):
    distributed.initialize("127.0.0.1:5", 2, 0)


def test_an_unreachable_coordinator_fails_in_bounded_time():
  with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  t0 = time.monotonic()
  with pytest.raises(distributed.CoordinatorUnreachableError, match="process 1 of 2 could not"):
    distributed._wait_for(f"127.0.0.1:{port}", 0.5, 1, 2)
  assert time.monotonic() - t0 < 10


def test_the_wait_is_read_from_the_environment(monkeypatch):
  monkeypatch.setenv(distributed.ENV_TIMEOUT, "7.5")
  assert distributed._timeout(None) == 7.5
  monkeypatch.setenv(distributed.ENV_TIMEOUT, "soon")
  with pytest.raises(ValueError, match="number of seconds"):
    distributed._timeout(None)


def test_single_process_agreement_is_a_plain_call():
  assert distributed.agree(True) is True and distributed.agree(False) is False
  assert distributed.main_first(lambda: 42, "answer") == 42
  distributed.barrier("nothing to wait for")
  assert distributed.is_main_process()


def test_local_view_leaves_what_this_process_holds_whole():
  tree = dict(a=jnp.arange(3.0), b=np.ones(2), c=1.5)
  view = sharding.local_view(tree)
  assert all(view[k] is tree[k] for k in tree)
