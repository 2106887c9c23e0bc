"""Shared test helpers: float64 for the numerical checks, and cheap PRNG keys."""
import jax
import pytest


@pytest.fixture
def x64():
  """Runs a test in float64 (the library follows its inputs' precision)."""
  with jax.enable_x64(True):
    yield


def rbg_key(seed):
  """A PRNG key. The library is agnostic to the key's implementation; "rbg" programs compile
  about ten times faster than threefry ones on a small CPU, which keeps the suite fast."""
  return jax.random.key(seed, impl="rbg")
