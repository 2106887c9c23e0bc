r"""Where the XLNet training step's time goes on CPU: its pieces, jax against PyTorch (App. E.2).

  python -m benchmarks.xlnet_pieces [--repeats 7]

`benchmarks.xlnet_speed` times whole steps; this times the pieces of one xlnet-base-cased layer
at the shapes of its batch 8 x length 128 (1,024 tokens, d_model 768, d_inner 3072), float32,
fastest of --repeats calls after one untimed call: the feed-forward matmul and the two matmuls
of its backward, GELU (exact erf) and LayerNorm forward+backward, the whole feed-forward sublayer
(Dense, GELU, Dense, residual, LayerNorm) forward and forward+backward, and bigjax's attention
sublayer (relative positions and segments, an attention mask). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.models import xlnet

TOKENS, D_MODEL, D_INNER, BATCH = 1024, 768, 3072, 8


def fastest(fn, repeats: int) -> float:
  """Fastest wall seconds of `repeats` calls of fn() (which blocks until done), after one."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def jax_pieces(repeats: int) -> dict[str, float]:
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
  x, g, w = normal(TOKENS, D_MODEL), normal(TOKENS, D_INNER), normal(D_MODEL, D_INNER)
  h = x.reshape(BATCH, -1, D_MODEL)
  run = lambda f, *a: fastest(lambda: jax.block_until_ready(f(*a)), repeats)
  ff = xlnet.XLNetFeedForward(d_inner=D_INNER)
  ff_params = ff.init(jax.random.key(0), h)
  ln = nn.LayerNorm(epsilon=1e-12)
  ln_params = ln.init(jax.random.key(0), h)
  length = h.shape[1]
  pos = xlnet.relative_positional_encoding(length, length, D_MODEL)
  segments = jnp.asarray(rng.integers(0, 2, (BATCH, length)))
  same = segments[:, :, None] == segments[:, None, :]
  mask = jnp.zeros((BATCH, length, length), bool)
  att = xlnet.XLNetRelativeAttention(n_head=12)
  att_params = att.init(jax.random.key(0), h, None, pos, same, mask, None, None)
  attend = lambda p, h: att.apply(p, h, None, pos, same, mask, None, None)[0]
  sum_sq = lambda f: jax.jit(jax.grad(lambda p, h: jnp.sum(f(p, h) ** 2), argnums=(0, 1)))
  return {
      "matmul x W [1024,768]x[768,3072]": run(jax.jit(lambda x, w: x @ w), x, w),
      "matmul x^T g (dW)": run(jax.jit(lambda x, g: x.T @ g), x, g),
      "matmul g W^T (dx)": run(jax.jit(lambda g, w: g @ w.T), g, w),
      "GELU forward+backward [1024,3072]": run(
          jax.jit(jax.grad(lambda g: jnp.sum(jax.nn.gelu(g, approximate=False)))), g
      ),
      "LayerNorm forward+backward [8,128,768]": run(
          jax.jit(jax.grad(lambda p, h: jnp.sum(ln.apply(p, h) * h), argnums=(0, 1))), ln_params, h
      ),
      "feed-forward sublayer forward": run(jax.jit(ff.apply), ff_params, h),
      "feed-forward sublayer forward+backward": run(sum_sq(ff.apply), ff_params, h),
      "attention sublayer forward": run(jax.jit(attend), att_params, h),
      "attention sublayer forward+backward": run(sum_sq(attend), att_params, h),
  }


def torch_pieces(repeats: int) -> dict[str, float]:
  import torch  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  x, g = torch.randn(TOKENS, D_MODEL), torch.randn(TOKENS, D_INNER)
  w = torch.randn(D_MODEL, D_INNER)
  h = x.reshape(BATCH, -1, D_MODEL).clone().requires_grad_(True)
  gg = g.clone().requires_grad_(True)
  layer_1, layer_2 = torch.nn.Linear(D_MODEL, D_INNER), torch.nn.Linear(D_INNER, D_MODEL)
  norm = torch.nn.LayerNorm(D_MODEL, eps=1e-12)
  ff = lambda: norm(layer_2(torch.nn.functional.gelu(layer_1(h))) + h)

  leaves = (h, gg, *layer_1.parameters(), *layer_2.parameters(), *norm.parameters())

  def backward(loss_fn):
    def step():
      for leaf in leaves:  # fresh gradients each call, as jax.grad computes them
        leaf.grad = None
      loss_fn().backward()

    return step

  def forward():
    with torch.no_grad():
      ff()

  return {
      "matmul x W [1024,768]x[768,3072]": fastest(lambda: x @ w, repeats),
      "matmul x^T g (dW)": fastest(lambda: x.T @ g, repeats),
      "matmul g W^T (dx)": fastest(lambda: g @ w.T, repeats),
      "GELU forward+backward [1024,3072]": fastest(
          backward(lambda: torch.nn.functional.gelu(gg).sum()), repeats
      ),
      "LayerNorm forward+backward [8,128,768]": fastest(
          backward(lambda: (norm(h) * h).sum()), repeats
      ),
      "feed-forward sublayer forward": fastest(forward, repeats),
      "feed-forward sublayer forward+backward": fastest(
          backward(lambda: (ff() ** 2).sum()), repeats
      ),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  if args.repeats < 1:
    parser.error(f"--repeats must be >= 1, got {args.repeats}.")
  ours, theirs = jax_pieces(args.repeats), torch_pieces(args.repeats)
  print(f"jax {jax.__version__}, {args.repeats} repeats, fastest call, seconds\n")
  print("| piece | jax s | PyTorch s |\n|---|---|---|")
  for name, seconds in ours.items():
    other = theirs.get(name)
    print(f"| {name} | {seconds:.4f} | {'-' if other is None else f'{other:.4f}'} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
