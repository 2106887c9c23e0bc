"""Why bigjax unrolls short reductions: log-sum-exp over a size-2 axis on XLA:CPU.

  python -m benchmarks.xla_cpu_reductions

Times, per element, `jax.nn.logsumexp` over the last axis of a `[N, 2]` array against the same
log-sum-exp written as two elementwise terms (what `bigjax.mixtures.gmm.log_prob_rows` does),
N = 5e7.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def _time(fn, x, repeats=3):
  fn(x).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn(x).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return best


def main():
  n = 50_000_000
  x = jnp.linspace(-3, 3, n, dtype=jnp.float32)
  reduced = jax.jit(lambda x: jax.nn.logsumexp(jnp.stack([x, -x], -1), -1).sum())

  def unrolled_fn(x):
    a, b = x, -x
    m = jnp.maximum(a, b)
    return (m + jnp.log(jnp.exp(a - m) + jnp.exp(b - m))).sum()

  unrolled = jax.jit(unrolled_fn)
  print(f"logsumexp over a size-2 axis: {_time(reduced, x) / n * 1e9:.2f} ns/element")
  print(f"two elementwise terms:        {_time(unrolled, x) / n * 1e9:.2f} ns/element")


if __name__ == "__main__":
  main()
