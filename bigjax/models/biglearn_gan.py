"""BigLearn-GAN generator p_theta(x_T | x_S) and discriminator f_phi(x; S, T) (paper App. D.1,
Fig. 12), over sequences of flattened patches with per-example boolean (S, T) masks [B, L].

Both work on the full length L for every (S, T): positions outside the relevant set are zeroed
at the input and masked out of attention as keys, so arrays never change shape with |S| or |T|
and an input outside the set cannot influence the output.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.models.patches import patchify, unpatchify
from bigjax.models.transformer import Encoder

__all__ = ["NoiseMapping", "Generator", "Discriminator"]

_EMBED_INIT = nn.initializers.normal(stddev=0.02)


class NoiseMapping(nn.Module):
  """z [B, Z] -> patch-wise noise embeddings [B, L, D]: an MLP of `depth` layers (App. D.1:
  8) of width `width` with leaky-ReLU(0.2), then one linear map to the L embeddings."""

  num_patches: int
  dim: int
  depth: int = 8
  width: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    # He initialisation keeps the signal's scale through the leaky-ReLU stack (with LeCun's, it
    # shrinks about 2x per layer, so an 8-layer MLP starts with noise embeddings ~1e-2 of the
    # other decoder inputs, and the generator learns to ignore z: every draw the same digit).
    # The final LayerNorm (per patch, over D) keeps the embeddings at unit scale for the same
    # reason while training.
    he = nn.initializers.variance_scaling(2.0 / (1 + 0.2**2), "fan_in", "truncated_normal")
    h = z.astype(self.dtype)
    for i in range(self.depth):
      h = nn.leaky_relu(
          nn.Dense(self.width, kernel_init=he, dtype=self.dtype, name=f"layer_{i}")(h), 0.2
      )
    h = nn.Dense(self.num_patches * self.dim, dtype=self.dtype, name="to_patches")(h)
    h = h.reshape(z.shape[0], self.num_patches, self.dim)
    return nn.LayerNorm(dtype=self.dtype, name="ln")(h)


class Generator(nn.Module):
  """The universal generator p_theta(x_T | x_S) of App. D.1 (MAE-like encoder/decoder).

  G-encoder: embeds the source patches only (inputs outside S are zeroed and masked out of
  attention as keys). The mask token [M] then replaces the codes at every non-source position;
  z -> `NoiseMapping` gives patch-wise noise embeddings at non-source positions and a learned
  [M_n] at source positions; with new positional encodings, the G-decoder attends over all L
  positions and a linear head + tanh produces every patch. Source patches pass through
  unchanged: out[S] = patches[S]. T is not an input: the generator draws all of L minus S, and a
  loss reads the positions it needs (x_T is a marginal of that draw).

  Attributes:
    num_patches: L.
    patch_dim: P = p * p * C (pixels per patch).
    encoder_dim, encoder_depth, encoder_heads: G-encoder width, blocks, heads (Table 2: 256/6/8).
    decoder_dim, decoder_depth, decoder_heads: G-decoder (Table 2: 512/6/8).
    noise_dim: Z, the size of z.
    noise_mlp_depth, noise_mlp_width: the noise MLP (App. D.1: 8 layers).
    mlp_ratio: transformer MLP width / model width.
    noise_every_layer: feed the noise embeddings into every G-decoder block (the paper's
      CelebA setting, App. D.3 (iv)) instead of only into the decoder's input.
    noise_merge: with noise_every_layer, "add" them to each block's input or "concat" them and
      project back to the decoder width (one linear map per block; the paper's wording).
    conv_head_layers: 0, or the number of 3x3 convolutions applied to the assembled image after
      the linear head (App. D.3 (iii): 3 for CelebA): leaky-ReLU(0.2) between them, a residual
      connection around them (the last one starts at zero, so training starts from the plain
      head); they let neighbouring patches blend across patch borders.
    conv_head_width: channels of the hidden convolutions.
    channels: C, image channels (patch_dim = p * p * C); images are square grids of patches.
    dtype: computation dtype (parameters are float32).
  """

  num_patches: int
  patch_dim: int
  encoder_dim: int = 256
  encoder_depth: int = 6
  encoder_heads: int = 8
  decoder_dim: int = 512
  decoder_depth: int = 6
  decoder_heads: int = 8
  noise_dim: int = 128
  noise_mlp_depth: int = 8
  noise_mlp_width: int = 256
  mlp_ratio: float = 4.0
  noise_every_layer: bool = False
  noise_merge: str = "add"
  conv_head_layers: int = 0
  conv_head_width: int = 64
  channels: int = 1
  dtype: Any = jnp.float32

  def setup(self):
    self.patch_embed = nn.Dense(self.encoder_dim, dtype=self.dtype)
    self.encoder_pos = self.param(
        "encoder_pos", _EMBED_INIT, (1, self.num_patches, self.encoder_dim)
    )
    self.encoder = Encoder(self.encoder_depth, self.encoder_heads, self.mlp_ratio, dtype=self.dtype)
    self.bridge = nn.Dense(self.decoder_dim, dtype=self.dtype)
    self.mask_token = self.param("mask_token", _EMBED_INIT, (self.decoder_dim,))  # [M]
    self.no_noise_token = self.param("no_noise_token", _EMBED_INIT, (self.decoder_dim,))  # [M_n]
    self.noise_mapping = NoiseMapping(
        self.num_patches,
        self.decoder_dim,
        self.noise_mlp_depth,
        self.noise_mlp_width,
        dtype=self.dtype,
    )
    self.decoder_pos = self.param(
        "decoder_pos", _EMBED_INIT, (1, self.num_patches, self.decoder_dim)
    )
    self.decoder = Encoder(
        self.decoder_depth,
        self.decoder_heads,
        self.mlp_ratio,
        merge=self.noise_merge,
        dtype=self.dtype,
    )
    self.head = nn.Dense(self.patch_dim, dtype=self.dtype)
    if self.conv_head_layers:
      widths = [self.conv_head_width] * (self.conv_head_layers - 1) + [self.channels]
      self.conv_head = [
          nn.Conv(
              w,
              (3, 3),
              padding="SAME",
              dtype=self.dtype,
              name=f"conv_head_{i}",
              kernel_init=(
                  nn.initializers.zeros if i == len(widths) - 1 else nn.linear.default_kernel_init
              ),
          )
          for i, w in enumerate(widths)
      ]

  def image_geometry(self) -> tuple[tuple[int, int, int], int]:
    """((H, W, C), patch size) of the square images this generator's patches tile."""
    side = int(round(self.num_patches**0.5))
    p = int(round((self.patch_dim // self.channels) ** 0.5))
    if side * side != self.num_patches or p * p * self.channels != self.patch_dim:
      raise ValueError(
          f"num_patches={self.num_patches} and patch_dim={self.patch_dim} do not "
          f"describe a square image of square {self.channels}-channel patches."
      )
    return (side * p, side * p, self.channels), p

  def _check(self, patches, source_mask):
    if patches.ndim != 3 or patches.shape[1:] != (self.num_patches, self.patch_dim):
      raise ValueError(
          f"patches must be [B, {self.num_patches}, {self.patch_dim}] for this "
          f"generator, got {patches.shape}."
      )
    if source_mask.shape != patches.shape[:2]:
      raise ValueError(
          f"source_mask must be [B, L] = {patches.shape[:2]}, got " f"{source_mask.shape}."
      )

  def encode(self, patches: jax.Array, source_mask: jax.Array) -> jax.Array:
    """G-encoder codes [B, L, encoder_dim] of the source patches (zero outside S).

    Args:
      patches: [B, L, P]; only the source positions are read.
      source_mask: bool [B, L].
    """
    self._check(patches, source_mask)
    s = source_mask[..., None]
    x = self.patch_embed(jnp.where(s, patches, 0).astype(self.dtype)) + self.encoder_pos
    x = jnp.where(s, x, 0)
    return jnp.where(s, self.encoder(x, source_mask), 0)

  def __call__(self, patches: jax.Array, source_mask: jax.Array, z: jax.Array) -> jax.Array:
    """Draws x_(L minus S) ~ p_theta(. | x_S) given noise z.

    Args:
      patches: [B, L, P] with values in [-1, 1]; only the source positions are read.
      source_mask: bool [B, L], S (may be empty: joint generation).
      z: [B, noise_dim] noise, e.g. standard normal.

    Returns:
      [B, L, P] patches in [-1, 1], equal to `patches` on S.
    """
    if z.shape != (patches.shape[0], self.noise_dim):
      raise ValueError(
          f"z must be [B, noise_dim] = {(patches.shape[0], self.noise_dim)}, got " f"{z.shape}."
      )
    s = source_mask[..., None]
    codes = self.bridge(self.encode(patches, source_mask))
    h = jnp.where(s, codes, self.mask_token.astype(self.dtype))
    noise = jnp.where(s, self.no_noise_token.astype(self.dtype), self.noise_mapping(z))
    if self.noise_every_layer:  # App. D.3 (iv): the same noise embeddings into every layer
      h = self.decoder(h + self.decoder_pos, every_layer=noise)
    else:
      h = self.decoder(h + noise + self.decoder_pos)
    out = self.head(h)
    if self.conv_head_layers:
      shape, p = self.image_geometry()
      image = unpatchify(out, shape, p)
      y = image
      for i, conv in enumerate(self.conv_head):
        y = conv(y)
        if i < len(self.conv_head) - 1:
          y = nn.leaky_relu(y, 0.2)
      out = patchify(image + y, p)
    out = jnp.tanh(out.astype(jnp.promote_types(self.dtype, jnp.float32)))
    return jnp.where(s, patches, out.astype(patches.dtype))


class Discriminator(nn.Module):
  """The universal discriminator f_phi(x; S, T) of App. D.1 (Fig. 12b); sigma(f) is the
  probability that x_T is a real draw from q(x_T | x_S).

  Input tokens: patch embedding + positional embedding + a learned [M_s] on source patches or
  [M_t] on target patches; positions outside S u T are zeroed and masked out of attention. A CLS
  token (BERT-style) is prepended; its final state -> linear -> the logit. No batch statistics,
  so examples are independent (the R1 penalty relies on that).

  Attributes:
    num_patches, patch_dim: L and P.
    dim, depth, num_heads: transformer width, blocks, heads (Table 2: 256/6/8).
    mlp_ratio, dtype: as in `Generator`.
    attention: "dot", or "l2" for L2 self-attention (Kim et al. 2021; the paper's CelebA
      discriminator, App. D.3 (ii)), see bigjax.models.transformer.
    minibatch_std_group: 0 (the paper's discriminator): examples are independent. G > 0: the
      minibatch standard deviation feature of Karras et al. (2018): the standard deviation of
      the final token states across groups of G examples (strided: i, i + B/G, ...), averaged
      to one number per group, is fed with the CLS state to a one-hidden-layer head. It lets D
      see a generator that ignores its noise (identical draws), the failure small models show
      here; B must be divisible by G, and examples are then no longer independent (R1 picks up
      the cross-example terms, as in StyleGAN2).
  """

  num_patches: int
  patch_dim: int
  dim: int = 256
  depth: int = 6
  num_heads: int = 8
  mlp_ratio: float = 4.0
  minibatch_std_group: int = 0
  attention: str = "dot"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, patches: jax.Array, source_mask: jax.Array, target_mask: jax.Array
  ) -> jax.Array:
    """f_phi(x; S, T).

    Args:
      patches: [B, L, P] (x_S real, x_T real or generated; other positions are ignored).
      source_mask, target_mask: bool [B, L].

    Returns:
      [B] logits (float32, or float64 for a float64 model).
    """
    if patches.ndim != 3 or patches.shape[1:] != (self.num_patches, self.patch_dim):
      raise ValueError(
          f"patches must be [B, {self.num_patches}, {self.patch_dim}] for this "
          f"discriminator, got {patches.shape}."
      )
    if source_mask.shape != patches.shape[:2] or target_mask.shape != patches.shape[:2]:
      raise ValueError(
          f"masks must be [B, L] = {patches.shape[:2]}, got {source_mask.shape} "
          f"and {target_mask.shape}."
      )
    visible = source_mask | target_mask
    x = nn.Dense(self.dim, dtype=self.dtype, name="patch_embed")(
        jnp.where(visible[..., None], patches, 0).astype(self.dtype)
    )
    x = x + self.param("pos", _EMBED_INIT, (1, self.num_patches, self.dim))
    x = x + jnp.where(
        source_mask[..., None], self.param("source_token", _EMBED_INIT, (self.dim,)), 0
    )  # [M_s]
    x = x + jnp.where(
        target_mask[..., None], self.param("target_token", _EMBED_INIT, (self.dim,)), 0
    )  # [M_t]
    x = jnp.where(visible[..., None], x, 0)
    cls = self.param("cls", _EMBED_INIT, (1, 1, self.dim))
    x = jnp.concatenate(
        [jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)).astype(x.dtype), x], axis=1
    )
    key_mask = jnp.concatenate([jnp.ones((x.shape[0], 1), bool), visible], axis=1)
    h = Encoder(
        self.depth,
        self.num_heads,
        self.mlp_ratio,
        attention=self.attention,
        dtype=self.dtype,
        name="encoder",
    )(x, key_mask)
    wide = jnp.promote_types(self.dtype, jnp.float32)
    if not self.minibatch_std_group:
      return nn.Dense(1, dtype=self.dtype, name="head")(h[:, 0])[:, 0].astype(wide)
    g, b = self.minibatch_std_group, h.shape[0]
    if b % g:
      raise ValueError(f"batch size {b} is not divisible by minibatch_std_group={g}.")
    groups = h.astype(wide).reshape((g, b // g) + h.shape[1:])
    std = jnp.sqrt(jnp.var(groups, axis=0) + 1e-8).mean(axis=(1, 2))  # [B / G]
    std = jnp.tile(std, g)[:, None].astype(self.dtype)  # [B, 1]
    head_in = jnp.concatenate([h[:, 0], std], axis=-1)
    hidden = nn.gelu(nn.Dense(self.dim, dtype=self.dtype, name="head_hidden")(head_in))
    return nn.Dense(1, dtype=self.dtype, name="head")(hidden)[:, 0].astype(wide)
