"""Tests of bigjax/evaluation/flops.py: a hand count, the traced programs' matmul FLOPs, XLA's
count, the peak table and MFU.

Three independent references for the analytic counts:
  * a hand count of the `smoke` MNIST iteration, written out from the config's numbers;
  * the matmul and convolution FLOPs of the traced program (`jax.make_jaxpr`, every
    dot_general and conv_general_dilated, sub-jaxprs included): exact for the forward passes,
    and within a few percent for a whole iteration (the analytic backward is 2x forward, while
    JAX skips input gradients nobody needs);
  * XLA's `cost_analysis()["flops"]` of the compiled forward passes, which also counts
    elementwise work, so it is larger by a margin that shrinks with the model width.
"""

from __future__ import annotations

import math
import types

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import pytest

from bigjax.evaluation import flops
from configs import gan_celeba
from configs import gan_mnist
from experiments import biglearn_gan
from experiments import gan_setup


def _matmul_flops(jaxpr) -> int:
  """2 x multiply-adds of every dot_general and convolution in a jaxpr and its sub-jaxprs."""
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in lhs_contract)
    elif eqn.primitive.name == "conv_general_dilated":
      kernel = eqn.invars[1].aval.shape
      out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
      assert eqn.params["feature_group_count"] == 1
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_features
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(sub, jex_core.ClosedJaxpr):
          total += _matmul_flops(sub.jaxpr)
        elif isinstance(sub, jex_core.Jaxpr):
          total += _matmul_flops(sub)
  return total


def _config(module, variant, **loss):
  config = module.get_config(variant)
  config.model.dtype = "float32"
  for name, value in loss.items():
    config.loss[name] = value
  return config


def _forwards(config, batch):
  """(gen, disc, G forward fn, D forward fn, G args, D args) with abstract parameters."""
  gen, disc = gan_setup.build_models(config)
  x = jnp.zeros((batch, gen.num_patches, gen.patch_dim))
  mask = jnp.arange(gen.num_patches)[None, :].repeat(batch, 0) < gen.num_patches // 4
  z = jnp.zeros((batch, gen.noise_dim))
  g_params = jax.eval_shape(lambda: gen.init(jax.random.key(0), x, mask, z))
  d_params = jax.eval_shape(lambda: disc.init(jax.random.key(0), x, mask, ~mask))
  g_fn = lambda p, x, s, z: gen.apply(p, x, s, z)
  d_fn = lambda p, x, s, t: disc.apply(p, x, s, t)
  return gen, disc, g_fn, d_fn, (g_params, x, mask, z), (d_params, x, mask, ~mask)


def _xla_flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0]
  return float(cost["flops"])


def test_smoke_iteration_hand_count():
  config = gan_mnist.get_config("smoke")
  m = config.model
  # The numbers below are the smoke variant's; fail loudly if it changes.
  assert (config.batch_size, config.data.image_size, m.patch_size) == (8, 28, 7)
  assert (m.encoder_dim, m.encoder_depth, m.decoder_dim, m.decoder_depth) == (16, 1, 16, 1)
  assert (m.disc_dim, m.disc_depth, m.mlp_ratio, m.disc_minibatch_std_group) == (16, 1, 2.0, 0)
  assert (m.noise_dim, m.noise_mlp_depth, m.noise_mlp_width) == (8, 2, 16)
  assert (m.noise_every_layer, m.conv_head_layers, m.disc_attention) == (False, 0, "dot")
  assert config.loss.r1_weight > 0
  assert config.loss.mode_seeking_weight == 0 and config.loss.communication_weight == 0
  b, length, p, d, hidden = 8, (28 // 7) ** 2, 7 * 7, 16, 32  # L = 16, P = 49, MLP 2 * 16

  def block(n):  # one dot-attention block on n tokens per example
    return (
        2 * b * n * d * 3 * d  # qkv
        + 2 * b * n * d * d  # output projection
        + 2 * (2 * b * n * n * d)  # q.k scores and weights.v
        + 2 * (2 * b * n * d * hidden)
    )  # MLP in and out

  f_g = (
      2 * b * length * p * d  # patch embedding
      + block(length)  # G-encoder
      + 2 * b * length * d * d  # bridge
      + 2 * b * 8 * 16
      + 2 * b * 16 * 16  # noise MLP: 8 -> 16 -> 16
      + 2 * b * 16 * length * d  # noise MLP -> L embeddings
      + block(length)  # G-decoder
      + 2 * b * length * d * p
  )  # head
  f_d = 2 * b * length * p * d + block(length + 1) + 2 * b * d * 1
  assert (f_g, f_d) == (1_849_344, 905_984)
  d_step = f_g + 3 * f_d + 6 * f_d  # fakes; D on fakes; D on reals with R1
  g_step = 3 * f_g + 2 * f_d
  gen, disc = gan_setup.build_models(config)
  got = flops.train_step_flops(gen, disc, batch_size=8, r1=True)
  assert gan_setup.train_step_flops(config) == got  # the config's flags, unpacked
  assert got == dict(
      g_forward=f_g,
      d_forward=f_d,
      d_step=d_step,
      r1=3 * f_d,
      mode_seeking=0,
      communication=0,
      g_step=g_step,
      total=d_step + g_step,
      batch_size=8,
  )
  assert got["total"] == 17_363_200


def test_optional_terms():
  gen, disc = gan_setup.build_models(_config(gan_mnist, "smoke"))
  count = lambda **flags: flops.train_step_flops(gen, disc, batch_size=8, **flags)
  base = count(r1=True)
  f_g, f_d = base["g_forward"], base["d_forward"]
  no_r1 = count(r1=False)
  assert no_r1 == gan_setup.train_step_flops(_config(gan_mnist, "smoke", r1_weight=0.0))
  assert no_r1["r1"] == 0 and base["total"] - no_r1["total"] == 3 * f_d
  ms = count(r1=True, mode_seeking=True)
  assert ms == gan_setup.train_step_flops(_config(gan_mnist, "smoke", mode_seeking_weight=0.3))
  assert ms["mode_seeking"] == 3 * f_g and ms["g_step"] - base["g_step"] == 3 * f_g
  comm = count(r1=True, communication=True)
  assert comm["d_step"] - base["d_step"] == f_g + 9 * f_d
  assert comm["g_step"] - base["g_step"] == 3 * f_g + 6 * f_d
  assert comm["communication"] == comm["total"] - base["total"]


@pytest.mark.parametrize(
    "module, variant, overrides",
    [
        (gan_mnist, "smoke", {}),
        (gan_mnist, "smoke", dict(disc_minibatch_std_group=2, noise_every_layer=True)),
        (gan_celeba, "smoke", {}),  # L2 attention in D, conv head, noise concatenated every layer
    ],
)
def test_forward_flops_equal_traced_matmuls(module, variant, overrides):
  config = _config(module, variant)
  config.model.update(overrides)
  gen, disc, g_fn, d_fn, g_args, d_args = _forwards(config, batch=4)
  if module is gan_celeba:
    assert (disc.attention, gen.conv_head_layers, gen.noise_merge) == ("l2", 3, "concat")
  traced_g = _matmul_flops(jax.make_jaxpr(g_fn)(*g_args).jaxpr)
  traced_d = _matmul_flops(jax.make_jaxpr(d_fn)(*d_args).jaxpr)
  assert flops.generator_forward_flops(gen, 4) == traced_g
  assert flops.discriminator_forward_flops(disc, 4) == traced_d


@pytest.mark.parametrize(
    "module, variant, upper",
    [
        (gan_celeba, "smoke", 1.35),  # width 16: elementwise work is 2-20% of XLA's count
        (gan_mnist, "cpu", 1.06),  # widths 64-128: 2-3%
    ],
)
def test_forward_flops_against_xla(module, variant, upper):
  gen, disc, g_fn, d_fn, g_args, d_args = _forwards(_config(module, variant), batch=4)
  for analytic, xla in (
      (flops.generator_forward_flops(gen, 4), _xla_flops(g_fn, *g_args)),
      (flops.discriminator_forward_flops(disc, 4), _xla_flops(d_fn, *d_args)),
  ):
    assert analytic <= xla <= upper * analytic, (analytic, xla, xla / analytic)


@pytest.mark.parametrize(
    "loss", [{}, dict(r1_weight=0.0, mode_seeking_weight=0.3), dict(communication_weight=1.0)]
)
def test_iteration_close_to_traced_matmuls(loss):
  # The convention (backward = 2x forward) overcounts the input gradients JAX does not form (of
  # the fakes in the D step, of the patches in the G step): measured 0.97-1.0 of the traced count.
  config = _config(gan_mnist, "smoke", **loss)
  state = jax.eval_shape(lambda: gan_setup.init_state(config, jax.random.key(0)))
  images = jax.ShapeDtypeStruct((config.batch_size,) + gan_setup.image_shape(config), jnp.float32)
  traced = _matmul_flops(jax.make_jaxpr(biglearn_gan.make_train_step(config))(state, images).jaxpr)
  total = gan_setup.train_step_flops(config)["total"]
  assert 0.95 <= traced / total <= 1.02, (traced, total)


def test_encoder_flops_arguments():
  dot = flops.encoder_forward_flops(2, 5, 8, 3, 4.0)
  l2 = flops.encoder_forward_flops(2, 5, 8, 3, 4.0, attention="l2")
  assert dot - l2 == 3 * 2 * (2 * 5) * 8 * 8  # one D x D projection less per block
  merged = flops.encoder_forward_flops(2, 5, 8, 3, 4.0, merge_width=6)
  assert merged - dot == 3 * 2 * (2 * 5) * (8 + 6) * 8
  with pytest.raises(ValueError, match="attention kind"):
    flops.encoder_forward_flops(2, 5, 8, 3, 4.0, attention="linear")


def _device(kind, platform="gpu"):
  return types.SimpleNamespace(device_kind=kind, platform=platform)


def test_peak_table():
  h100 = _device("NVIDIA H100 80GB HBM3")
  assert flops.peak_flops_per_second(h100, "bfloat16") == 989e12
  assert flops.peak_flops_per_second(h100, jnp.bfloat16) == 989e12
  assert flops.peak_flops_per_second(h100, "float32") == 494.5e12  # TF32 by default
  with jax.default_matmul_precision("highest"):
    assert flops.peak_flops_per_second(h100, "float32") == 67e12
    assert flops.peak_precision(jnp.float32) == "float32"
  assert flops.peak_flops_per_second(h100, "tf32") == 494.5e12
  assert flops.peak_flops_per_second(_device("H100 SXM"), "bf16") == 989e12
  assert flops.peak_flops_per_second(_device("NVIDIA H100 PCIe"), "bfloat16") == 756e12
  assert flops.peak_flops_per_second(_device("NVIDIA H200"), "bfloat16") == 989e12
  assert flops.peak_flops_per_second(_device("NVIDIA A100-SXM4-80GB"), "bfloat16") == 312e12
  with jax.default_matmul_precision("float32"):
    assert flops.peak_flops_per_second(_device("NVIDIA A100-PCIE-40GB"), "float32") == 19.5e12
  assert flops.peak_flops_per_second(_device("NVIDIA GeForce RTX 3090"), "bfloat16") == 71e12
  assert flops.peak_flops_per_second(_device("NVIDIA GeForce RTX 3090"), "float32") == 35.6e12
  for unknown in ("NVIDIA H100 NVL", "Tesla T4", "NVIDIA GeForce RTX 3090 Ti", ""):
    assert flops.peak_flops_per_second(_device(unknown), "bfloat16") is None
  assert flops.peak_flops_per_second(jax.devices("cpu")[0], "float32") is None
  assert flops.peak_flops_per_second(_device("NVIDIA H100 80GB HBM3", "cpu"), "bfloat16") is None
  with pytest.raises(ValueError, match="no peak throughput"):
    flops.peak_flops_per_second(h100, "int8")


def test_mfu():
  assert flops.mfu(1e12, 0.5, 2, 1e12) == pytest.approx(1.0)
  assert flops.mfu(3e12, 2.0, 1, 989e12) == pytest.approx(3e12 / 2.0 / 989e12)
  with pytest.raises(ValueError, match="step_seconds > 0"):
    flops.mfu(1e12, 0.0, 1, 1e12)
