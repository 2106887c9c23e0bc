"""bigjax.evaluation.chunked.map_chunks: fixed-size chunks, padding dropped, keys per chunk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax.evaluation.chunked import by_value, map_chunks


def test_map_chunks_compiles_once_and_keeps_only_real_rows():
  calls = []

  @jax.jit
  def fn(x, y, key):
    calls.append(x.shape)  # runs at trace time only
    return x * 2 + y, jnp.sum(x, -1) + jax.random.uniform(key, (x.shape[0],))

  x = np.arange(22, dtype=np.float32).reshape(11, 2)
  y = np.ones((11, 2), np.float32)
  doubled, sums = map_chunks(fn, [x, y], size=4, seed=3)
  assert calls == [(4, 2)]  # 3 chunks, one compiled program
  np.testing.assert_array_equal(doubled, x * 2 + 1)
  keys = [jax.random.fold_in(jax.random.key(3), i) for i in range(3)]
  noise = np.concatenate([np.asarray(jax.random.uniform(k, (4,))) for k in keys])[:11]
  np.testing.assert_allclose(sums, x.sum(-1) + noise, rtol=1e-6)
  empty, empty_sums = map_chunks(fn, [x[:0], y[:0]], size=4, seed=3)
  assert empty.shape == (0, 2) and empty_sums.shape == (0,)
  (single,) = map_chunks(lambda a, b: a + (0 if b is None else 1), [x, None], size=5)
  np.testing.assert_array_equal(single, x)
  with pytest.raises(ValueError, match="size must be a positive int"):
    map_chunks(fn, [x, y], size=0)


def test_by_value_builds_once_per_equal_arguments():
  """chunked.by_value: equal (hashable) arguments give the function built before; others, or
  arguments that cannot be hashed, build again; an error inside the builder is not hidden."""

  built = []

  @by_value
  def build(widths, *, scale=1):
    built.append(widths)
    if widths == ():
      raise TypeError("no widths")
    return object()

  a = build((8, 16))
  assert build((8, 16)) is a and len(built) == 1
  assert build((8, 16), scale=2) is not a and build((4,)) is not a and len(built) == 3
  assert build([8, 16]) is not build([8, 16]) and len(built) == 5  # unhashable: built anew
  with pytest.raises(TypeError, match="no widths"):
    build(())
  build.cache_clear()
  assert build((8, 16)) is not a
