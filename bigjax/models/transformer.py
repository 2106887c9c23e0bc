"""Pre-LayerNorm transformer encoder with a key mask, the building block of every bigjax model.

Attention uses plain `jax.numpy` (einsum + softmax), so it is differentiable twice (the R1
penalty differentiates the discriminator with respect to its input, then the parameters). Two
kinds of attention logits:
  "dot": q . k / sqrt(d), the usual scaled dot product;
  "l2":  -||q - k||^2 / sqrt(d) with one shared query/key projection (Kim et al. 2021, "The
         Lipschitz constant of self-attention"; as used for the ViTGAN discriminator). Unlike the
         dot product it is Lipschitz; the paper's CelebA discriminator uses it (App. D.3 (ii)).
         The squared distance is smooth, so R1's second-order gradient goes through it.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MaskedSelfAttention", "EncoderBlock", "Encoder"]

_INIT = nn.initializers.xavier_uniform()


class MaskedSelfAttention(nn.Module):
  """Multi-head self-attention where each query attends only to the keys allowed by `key_mask`.

  Attributes:
    num_heads: number of heads; must divide the input width.
    kind: "dot" or "l2" (see the module docstring).
    dtype: computation dtype (parameters stay float32).
  """

  num_heads: int
  kind: str = "dot"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    """x: [B, L, D]; key_mask: bool [B, L] (True = may be attended to) or None. -> [B, L, D].

    A row whose keys are all masked gets uniform weights over the masked keys; callers that
    can have such rows keep the masked positions' inputs at a constant (bigjax zeroes them)."""
    b, length, dim = x.shape
    if dim % self.num_heads:
      raise ValueError(f"width {dim} is not divisible by num_heads={self.num_heads}.")
    head_dim = dim // self.num_heads
    wide = jnp.promote_types(self.dtype, jnp.float32)  # softmax in float32 also under bfloat16
    scale = 1.0 / jnp.sqrt(jnp.asarray(head_dim, wide))
    if self.kind == "dot":
      qkv = nn.DenseGeneral(
          (3, self.num_heads, head_dim), kernel_init=_INIT, dtype=self.dtype, name="qkv"
      )(x)
      q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, L, H, Dh]
      logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(wide) * scale
    elif self.kind == "l2":
      qv = nn.DenseGeneral(
          (2, self.num_heads, head_dim), kernel_init=_INIT, dtype=self.dtype, name="qv"
      )(x)
      q, v = qv[:, :, 0], qv[:, :, 1]  # keys are the queries
      sq = jnp.sum(jnp.square(q.astype(wide)), axis=-1).transpose(0, 2, 1)  # [B, H, L]
      cross = jnp.einsum("bqhd,bkhd->bhqk", q, q).astype(wide)
      logits = -(sq[..., :, None] + sq[..., None, :] - 2.0 * cross) * scale
    else:
      raise ValueError(f"unknown attention kind {self.kind!r}; use 'dot' or 'l2'.")
    if key_mask is not None:
      logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(wide).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(dim, axis=(-2, -1), kernel_init=_INIT, dtype=self.dtype, name="out")(out)


class EncoderBlock(nn.Module):
  """x + Attn(LN(x)), then x + MLP(LN(x)) (pre-LN, GELU MLP of width mlp_ratio * D)."""

  num_heads: int
  mlp_ratio: float = 4.0
  attention: str = "dot"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array | None = None) -> jax.Array:
    dim = x.shape[-1]
    h = nn.LayerNorm(dtype=self.dtype, name="ln_attn")(x)
    x = x + MaskedSelfAttention(self.num_heads, self.attention, dtype=self.dtype, name="attn")(
        h, key_mask
    )
    h = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")(x)
    h = nn.Dense(int(self.mlp_ratio * dim), kernel_init=_INIT, dtype=self.dtype, name="mlp_in")(h)
    h = nn.Dense(dim, kernel_init=_INIT, dtype=self.dtype, name="mlp_out")(nn.gelu(h))
    return x + h


class Encoder(nn.Module):
  """`depth` EncoderBlocks and a final LayerNorm. x: [B, L, D], key_mask: bool [B, L] or None.

  `every_layer` [B, L, E] (optional) enters the input of every block: added (`merge="add"`,
  E = D) or concatenated and projected back to D by a per-block linear map (`merge="concat"`).
  """

  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  attention: str = "dot"
  merge: str = "add"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, x: jax.Array, key_mask: jax.Array | None = None, every_layer: jax.Array | None = None
  ) -> jax.Array:
    if self.merge not in ("add", "concat"):
      raise ValueError(f"unknown merge {self.merge!r}; use 'add' or 'concat'.")
    for i in range(self.depth):
      if every_layer is not None and self.merge == "add":
        x = x + every_layer
      elif every_layer is not None:
        x = nn.Dense(x.shape[-1], kernel_init=_INIT, dtype=self.dtype, name=f"merge_{i}")(
            jnp.concatenate([x, every_layer.astype(x.dtype)], axis=-1)
        )
      x = EncoderBlock(
          self.num_heads, self.mlp_ratio, self.attention, dtype=self.dtype, name=f"block_{i}"
      )(x, key_mask)
    return nn.LayerNorm(dtype=self.dtype, name="ln_final")(x)
