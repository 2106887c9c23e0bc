"""Analytic model FLOPs of the BigLearn-GAN models and of one training iteration, and MFU.

Counting convention (the usual one for model FLOPs utilisation, e.g. PaLM App. B):
  * a matrix product [m, k] x [k, n] costs 2 m n k FLOPs (one multiply-add = 2 FLOPs); a
    convolution costs 2 FLOPs per multiply-add of every output position's full kernel window
    (zero padding included: that is the work the hardware does);
  * elementwise operations, LayerNorm, softmax, activations, biases, masking and the optimiser
    update are not counted (XLA's own count, `compiled.cost_analysis()["flops"]`, includes
    them, so it is somewhat larger; tests/test_flops.py checks the two agree within that margin);
  * sequences are full length: the models compute on all L positions for every (S, T) (the
    discriminator on L + 1 with its CLS token), whatever the masks;
  * a backward pass costs 2x its forward pass (input and parameter gradients); a backward pass to
    the input only (parameters held fixed) costs 1x.
Model FLOPs are a property of the model and the algorithm, not of the implementation: XLA may do
more work (recomputation, padding) or less (dead input gradients it drops), and MFU measures the
model FLOPs per second against the hardware's peak.

The per-iteration total follows `experiments.biglearn_gan.make_train_step`; see
`train_step_flops`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "encoder_forward_flops",
    "generator_forward_flops",
    "discriminator_forward_flops",
    "train_step_flops",
    "peak_flops_per_second",
    "peak_precision",
    "mfu",
]


def _dense(rows: int, fan_in: int, fan_out: int) -> int:
  """FLOPs of a dense layer applied to `rows` vectors: 2 * rows * fan_in * fan_out."""
  return 2 * rows * fan_in * fan_out


def encoder_forward_flops(
    batch: int,
    length: int,
    dim: int,
    depth: int,
    mlp_ratio: float,
    attention: str = "dot",
    merge_width: int = 0,
) -> int:
  """Forward FLOPs of `bigjax.models.transformer.Encoder` on [batch, length, dim].

  Per block (N = batch * length tokens, D = dim, M = int(mlp_ratio * D) as in EncoderBlock):
    attention projections: "dot" 2 N D (3D) for the fused qkv + 2 N D D for the output;
                           "l2"  2 N D (2D) for the shared q/k and v + 2 N D D;
    attention scores q.k and the weighted sum of values: 2 * (2 * batch * length^2 * D)
                           (summed over heads: H heads of width D / H);
    MLP: 2 N D M + 2 N M D;
    merge_width E > 0 (`merge="concat"`): the projection of the concatenation, 2 N (D + E) D.
  The "l2" squared norms are elementwise and not counted.

  Args:
    batch, length, dim, depth: B, L, D and the number of blocks.
    mlp_ratio: MLP width / D.
    attention: "dot" or "l2".
    merge_width: E, the width of the `every_layer` input merged by concatenation (0: none, or
      merged by addition, which costs no FLOPs).

  Returns:
    FLOPs (int).
  """
  if attention not in ("dot", "l2"):
    raise ValueError(f"unknown attention kind {attention!r}; use 'dot' or 'l2'.")
  tokens = batch * length
  hidden = int(mlp_ratio * dim)
  projections = _dense(tokens, dim, (3 if attention == "dot" else 2) * dim)
  projections += _dense(tokens, dim, dim)
  scores_and_sum = 2 * (2 * batch * length * length * dim)
  mlp = _dense(tokens, dim, hidden) + _dense(tokens, hidden, dim)
  merge = _dense(tokens, dim + merge_width, dim) if merge_width else 0
  return depth * (projections + scores_and_sum + mlp + merge)


def generator_forward_flops(gen: Any, batch: int) -> int:
  """Forward FLOPs of one `Generator.__call__` on a batch (module instance `gen`).

  patch_embed (P -> encoder_dim), the G-encoder, the bridge (encoder_dim -> decoder_dim), the
  noise MLP (noise_dim -> width, depth - 1 more width -> width layers, then width -> L *
  decoder_dim), the G-decoder (with the per-block concat projection when the noise enters every
  layer by concatenation), the linear head (decoder_dim -> P) and the optional 3x3 conv head on
  the assembled H x W image (C -> width, width -> width, ..., width -> C channels).
  """
  b, length, p = batch, gen.num_patches, gen.patch_dim
  enc, dec = gen.encoder_dim, gen.decoder_dim
  flops = _dense(b * length, p, enc)
  flops += encoder_forward_flops(b, length, enc, gen.encoder_depth, gen.mlp_ratio, "dot")
  flops += _dense(b * length, enc, dec)
  width_in = gen.noise_dim
  for _ in range(gen.noise_mlp_depth):
    flops += _dense(b, width_in, gen.noise_mlp_width)
    width_in = gen.noise_mlp_width
  flops += _dense(b, width_in, length * dec)
  concat = gen.noise_every_layer and gen.noise_merge == "concat"
  flops += encoder_forward_flops(
      b, length, dec, gen.decoder_depth, gen.mlp_ratio, "dot", merge_width=dec if concat else 0
  )
  flops += _dense(b * length, dec, p)
  if gen.conv_head_layers:
    (h, w, c), _ = gen.image_geometry()
    widths = [c] + [gen.conv_head_width] * (gen.conv_head_layers - 1) + [c]
    for c_in, c_out in zip(widths[:-1], widths[1:]):
      flops += 2 * b * h * w * 9 * c_in * c_out
  return flops


def discriminator_forward_flops(disc: Any, batch: int) -> int:
  """Forward FLOPs of one `Discriminator.__call__` on a batch (module instance `disc`).

  patch_embed (P -> D) on the L patches, the encoder on L + 1 tokens (CLS prepended), and the
  head on the CLS state: D -> 1, or with the minibatch-std feature (D + 1) -> D -> 1.
  """
  b, length, dim = batch, disc.num_patches, disc.dim
  flops = _dense(b * length, disc.patch_dim, dim)
  flops += encoder_forward_flops(b, length + 1, dim, disc.depth, disc.mlp_ratio, disc.attention)
  if disc.minibatch_std_group:
    flops += _dense(b, dim + 1, dim) + _dense(b, dim, 1)
  else:
    flops += _dense(b, dim, 1)
  return flops


def train_step_flops(
    gen: Any,
    disc: Any,
    *,
    batch_size: int,
    r1: bool,
    mode_seeking: bool = False,
    communication: bool = False,
) -> dict[str, int]:
  """Model FLOPs of one BigLearn-GAN iteration (`experiments.biglearn_gan.make_train_step`) at
  the global batch `batch_size`.

  With F_G, F_D the forward FLOPs of the generator and the discriminator on the batch, and the
  module docstring's convention (backward = 2x forward, backward to the input only = 1x):
    D step = F_G                  fakes, no gradient
           + 3 F_D                D on the fakes, forward + backward
           + 3 F_D                D on the real data, forward + backward, or with R1
             (`r1`)           6 F_D: forward F_D, the input-gradient pass F_D, then the
             parameter gradient of both passes 2 F_D + 2 F_D;
    G step = 3 F_G + 2 F_D        G forward + backward, D forward + backward to its input (the
                                  D parameters are fixed in the G step)
           + 3 F_G                a second G draw, with `mode_seeking`.
  Communication terms (`communication`, Eq. (12)) are counted too: the D step
  draws a second set of fakes (F_G, no gradient) and evaluates D three more times with parameter
  gradients (3 x 3 F_D); the G step draws the second fakes with gradient (3 F_G) and evaluates D
  three more times, forward + backward to the input (3 x 2 F_D).

  Args:
    gen, disc: the `Generator` and `Discriminator` modules.
    batch_size: the global batch.
    r1: the R1 penalty is on (loss.r1_weight > 0).
    mode_seeking: the mode-seeking term is on (a second generator draw).
    communication: the Eq. (12) communication matchings are on.

  Returns:
    dict of ints: g_forward (F_G), d_forward (F_D), d_step (R1 and communication terms
    included), r1 (the R1 extra 3 F_D, 0 without R1), mode_seeking (3 F_G or 0), communication
    (the extra FLOPs of both steps, 0 when off), g_step (mode seeking and communication
    included), total = d_step + g_step, batch_size.
  """
  batch = int(batch_size)
  f_g = generator_forward_flops(gen, batch)
  f_d = discriminator_forward_flops(disc, batch)
  r1_flops = 3 * f_d if r1 else 0
  ms_flops = 3 * f_g if mode_seeking else 0
  comm_d = f_g + 9 * f_d if communication else 0
  comm_g = 3 * f_g + 6 * f_d if communication else 0
  d_step = f_g + 3 * f_d + 3 * f_d + r1_flops + comm_d
  g_step = 3 * f_g + 2 * f_d + ms_flops + comm_g
  return dict(
      g_forward=f_g,
      d_forward=f_d,
      d_step=d_step,
      r1=r1_flops,
      mode_seeking=ms_flops,
      communication=comm_d + comm_g,
      g_step=g_step,
      total=d_step + g_step,
      batch_size=batch,
  )


# ----------------------------------------------------------------------------------------------
# Peak throughput and MFU.

# Dense (no structured sparsity) peak FLOP/s per device, from the vendors' datasheets (those
# quote tensor-core numbers "with sparsity", twice the dense ones; halved here):
#   H100 SXM: NVIDIA H100 Tensor Core GPU datasheet: FP32 67 TFLOPS, TF32 989 (sparse),
#     BF16/FP16 1,979 (sparse). H100 PCIe: FP32 51, TF32 756 (sparse), BF16 1,513 (sparse).
#   H200 (SXM): NVIDIA H200 Tensor Core GPU datasheet: same as H100 SXM.
#   A100 (SXM and PCIe): NVIDIA A100 datasheet: FP32 19.5, TF32 156, BF16/FP16 312 (dense).
#   RTX 3090: NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A: FP32 35.6, TF32
#     tensor 35.6, BF16 tensor with FP32 accumulate 71 (dense).
# Matched in order by case-insensitive substring of `device.device_kind` (e.g. "NVIDIA H100 80GB
# HBM3", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 3090"); entries with
# None are variants whose peaks differ and are not in the table (they would otherwise match a
# shorter name below them).
_PEAKS: tuple[tuple[str, dict[str, float] | None], ...] = (
    ("h100 nvl", None),
    ("h200 nvl", None),
    ("h100 pcie", dict(bfloat16=756e12, float16=756e12, tensorfloat32=378e12, float32=51e12)),
    ("h100", dict(bfloat16=989e12, float16=989e12, tensorfloat32=494.5e12, float32=67e12)),
    ("h200", dict(bfloat16=989e12, float16=989e12, tensorfloat32=494.5e12, float32=67e12)),
    ("a100", dict(bfloat16=312e12, float16=312e12, tensorfloat32=156e12, float32=19.5e12)),
    ("rtx 3090 ti", None),
    ("rtx 3090", dict(bfloat16=71e12, float16=71e12, tensorfloat32=35.6e12, float32=35.6e12)),
)
_PRECISION_NAMES = {
    "tf32": "tensorfloat32",
    "tensorfloat32": "tensorfloat32",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def peak_precision(dtype) -> str:
  """The arithmetic whose peak applies to matmuls on `dtype` inputs: "bfloat16", "float16",
  "tensorfloat32" or "float32".

  float32 matmuls follow JAX's default matmul precision: unset (or "default", "high",
  "tensorfloat32") means TF32 tensor cores on NVIDIA GPUs since Ampere, so float32 is measured
  against the TF32 peak; "highest"/"float32" against the full-precision float32 peak, and
  "bfloat16"/"fastest" against the bfloat16 one. "tf32" may also be given directly.
  """
  name = dtype if isinstance(dtype, str) else jnp.dtype(dtype).name
  name = _PRECISION_NAMES.get(name.lower())
  if name is None:
    raise ValueError(
        f"no peak throughput is tabulated for dtype {dtype!r}; use one of "
        f"{sorted(set(_PRECISION_NAMES.values()))}."
    )
  if name != "float32":
    return name
  precision = str(jax.config.jax_default_matmul_precision or "default").lower()
  if precision in ("highest", "float32", "f32_f32_f32"):
    return "float32"
  if precision in ("bfloat16", "fastest", "bf16_bf16_f32"):
    return "bfloat16"
  return "tensorfloat32"


def peak_flops_per_second(device, dtype) -> float | None:
  """Dense peak matmul FLOP/s of one `device` for `dtype` inputs (see `peak_precision`), or
  None for CPUs and devices not in the table (then only achieved FLOP/s can be reported).

  Args:
    device: a `jax.Device` (only `device.device_kind` and `device.platform` are read).
    dtype: "float32", "bfloat16", "float16", "tf32", or a numpy/JAX dtype.
  """
  precision = peak_precision(dtype)
  if getattr(device, "platform", "") == "cpu":
    return None
  kind = str(getattr(device, "device_kind", "")).lower()
  for name, peaks in _PEAKS:
    if name in kind:
      return None if peaks is None else peaks.get(precision)
  return None


def mfu(flops_per_step: float, step_seconds: float, num_devices: int, peak: float) -> float:
  """Model FLOPs utilisation: flops_per_step / (step_seconds * num_devices * peak).

  Args:
    flops_per_step: model FLOPs of one step over all devices (e.g. `train_step_flops`'s total
      at the global batch).
    step_seconds: wall time of one step.
    num_devices: devices the step ran on.
    peak: peak FLOP/s of one device (`peak_flops_per_second`).
  """
  if step_seconds <= 0 or num_devices < 1 or peak <= 0:
    raise ValueError(
        f"mfu needs step_seconds > 0, num_devices >= 1 and peak > 0, got "
        f"{step_seconds}, {num_devices} and {peak}."
    )
  return float(flops_per_step) / (step_seconds * num_devices * peak)
