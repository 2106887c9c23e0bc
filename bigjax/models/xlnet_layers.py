"""One XLNet layer in Flax Linen, numerically HF's (`bigjax.models.xlnet` builds the network).

Relative sinusoidal positions (`relative_positional_encoding`, attn_type "bi", `clamp_len`,
`bi_data`) and Transformer-XL's `rel_shift`; two-stream relative attention (content stream h,
query stream g, shared weights) with scores (ac + bd + ef) / sqrt(d_head) from `r_w_bias`,
`r_r_bias` and relative segments `r_s_bias`, post-LayerNorm; the feed-forward block; and the
layer that chains them in `nn.scan` form. Masks follow `bigjax.models.xlnet`'s convention:
True means may NOT attend. Parameter names and shapes are HF's, so its weights go in unchanged.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INIT = nn.initializers.normal(0.02)  # HF's initializer_range for every weight
# HF's ACT2FN names; "gelu" is the exact erf form (torch.nn.functional.gelu's default).
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}
_MASKED = -1e30  # HF subtracts 1e30: a fully masked row then gets uniform weights, as in HF


def relative_positional_encoding(
    qlen: int, klen: int, d_model: int, *, bi_data: bool = False, clamp_len: int = -1
) -> jax.Array:
  """XLNet's sinusoidal encoding of relative distances, attn_type "bi" (HF's
  `XLNetModel.relative_positional_encoding`).

  Args:
    qlen, klen: query and key lengths (equal here: no memory).
    d_model: D (even).
    bi_data: also the backward distances, for the second half of the batch.
    clamp_len: if > 0, distances are clamped to [-clamp_len, clamp_len].

  Returns:
    float32 [G, klen + qlen, D], G = 2 with bi_data (forward, backward) else 1; row p encodes
    the distance klen - p (forward) or p - klen (backward).
  """
  freq_seq = jnp.arange(0, d_model, 2, dtype=jnp.float32)
  inv_freq = 1.0 / jnp.power(10000.0, freq_seq / d_model)
  seqs = [jnp.arange(klen, -qlen, -1, dtype=jnp.float32)]
  if bi_data:
    seqs.append(jnp.arange(-klen, qlen, 1, dtype=jnp.float32))
  out = []
  for pos_seq in seqs:
    if clamp_len > 0:
      pos_seq = jnp.clip(pos_seq, -clamp_len, clamp_len)
    sinusoid = pos_seq[:, None] * inv_freq
    out.append(jnp.concatenate([jnp.sin(sinusoid), jnp.cos(sinusoid)], axis=-1))
  return jnp.stack(out)


def rel_shift(x: jax.Array, klen: int) -> jax.Array:
  """Transformer-XL's relative shift (HF's `rel_shift_bnij`): two reshapes and slices.

  Args:
    x: [B, N, I, P] scores of query i against relative-position row p (P = klen + I).
    klen: number of keys.

  Returns:
    [B, N, I, klen], out[..., i, j] = x[..., i, I - i + j] (row of distance i - j).
  """
  b, n, i, p = x.shape
  x = x.reshape(b, n, p, i)[:, :, 1:, :]
  return x.reshape(b, n, i, p - 1)[..., :klen]


class _Sublayer(nn.Module):
  """What every part of a layer takes: LayerNorm epsilon, dropout rate and switch, dtype."""

  layer_norm_eps: float = 1e-12
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  def sublayer_kwargs(self) -> dict:
    return dict(
        layer_norm_eps=self.layer_norm_eps,
        dropout=self.dropout,
        deterministic=self.deterministic,
        dtype=self.dtype,
    )


class XLNetRelativeAttention(_Sublayer):
  """Two-stream relative attention with post-LayerNorm (HF's `XLNetRelativeAttention`).

  Parameters keep HF's names and shapes: q, k, v, o, r [D, N, d_head]; r_w_bias, r_r_bias,
  r_s_bias [N, d_head]; seg_embed [2, N, d_head] (0: same segment, 1: different).
  """

  n_head: int = 12

  @nn.compact
  def __call__(self, h, g, pos_emb, same_segment, mask_h, mask_g, target_mapping):
    """Args: h [B, L, D]; g [B, M, D] or None; pos_emb [G, 2L, D]; same_segment bool [B, L, L]
    or None; mask_h, mask_g bool [B, L, L] or None (True: may not attend); target_mapping
    [B, M, L] or None. Returns (h [B, L, D], g [B, M, D] or None)."""
    d_model = h.shape[-1]
    if d_model % self.n_head:
      raise ValueError(f"d_model={d_model} is not a multiple of n_head={self.n_head}.")
    d_head = d_model // self.n_head
    dt = self.dtype
    param = lambda name, shape: jnp.asarray(self.param(name, INIT, shape), dt)
    w_q, w_k, w_v, w_o, w_r = (
        param(name, (d_model, self.n_head, d_head)) for name in ("q", "k", "v", "o", "r")
    )
    r_r_bias, r_s_bias, r_w_bias = (
        param(name, (self.n_head, d_head)) for name in ("r_r_bias", "r_s_bias", "r_w_bias")
    )
    seg_embed = param("seg_embed", (2, self.n_head, d_head))
    layer_norm = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=dt, name="layer_norm")
    drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
    wide = jnp.promote_types(dt, jnp.float32)
    scale = 1.0 / np.sqrt(d_head)
    b, klen = h.shape[:2]

    k_head_h = jnp.einsum("bjD,Dnd->bjnd", h, w_k)
    v_head_h = jnp.einsum("bjD,Dnd->bjnd", h, w_v)
    k_head_r = jnp.einsum("gpD,Dnd->gpnd", pos_emb.astype(dt), w_r)
    groups = k_head_r.shape[0]

    def core(q_head, mask):
      ac = jnp.einsum("bind,bjnd->bnij", q_head + r_w_bias, k_head_h)
      q_r = (q_head + r_r_bias).reshape(groups, b // groups, *q_head.shape[1:])
      bd = jnp.einsum("gbind,gpnd->gbnip", q_r, k_head_r).reshape(b, self.n_head, klen, -1)
      score = ac + rel_shift(bd, klen)
      if same_segment is not None:
        ef = jnp.einsum("bind,snd->bnis", q_head + r_s_bias, seg_embed)
        score = score + jnp.where(same_segment[:, None], ef[..., :1], ef[..., 1:])
      score = score.astype(wide) * scale
      if mask is not None:
        score = jnp.where(mask[:, None], _MASKED, score)
      prob = drop(jax.nn.softmax(score, axis=-1).astype(dt))
      return jnp.einsum("bnij,bjnd->bind", prob, v_head_h)

    def post_attention(x, attn_vec):
      out = drop(jnp.einsum("bind,Dnd->biD", attn_vec, w_o))
      return layer_norm(out + x)

    q_head_h = jnp.einsum("biD,Dnd->bind", h, w_q)
    out_h = post_attention(h, core(q_head_h, mask_h))
    if g is None:
      return out_h, None
    q_head_g = jnp.einsum("bmD,Dnd->bmnd", g, w_q)
    # Each prediction's query goes to its position, attends there, and comes back (HF's einsums).
    q_head_g = jnp.einsum("bmnd,bml->blnd", q_head_g, target_mapping)
    attn_vec_g = jnp.einsum("blnd,bml->bmnd", core(q_head_g, mask_g), target_mapping)
    return out_h, post_attention(g, attn_vec_g)


class XLNetFeedForward(_Sublayer):
  """layer_norm(x + dropout(layer_2(dropout(act(layer_1(x)))))) (HF's `XLNetFeedForward`)."""

  d_inner: int = 3072
  ff_activation: str = "gelu"

  @nn.compact
  def __call__(self, x):
    drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
    y = nn.Dense(self.d_inner, kernel_init=INIT, dtype=self.dtype, name="layer_1")(x)
    y = drop(ACTIVATIONS[self.ff_activation](y))
    y = drop(nn.Dense(x.shape[-1], kernel_init=INIT, dtype=self.dtype, name="layer_2")(y))
    return nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype, name="layer_norm")(y + x)


class XLNetLayer(_Sublayer):
  """One XLNet layer on both streams (HF's `XLNetLayer`), in `nn.scan` form: carry (h, g)."""

  n_head: int = 12
  d_inner: int = 3072
  ff_activation: str = "gelu"

  @nn.compact
  def __call__(self, carry, pos_emb, same_segment, mask_h, mask_g, target_mapping):
    """carry (h [B, L, D], g [B, M, D] or None), the rest as `XLNetRelativeAttention`; returns
    (the new carry, None)."""
    kw = self.sublayer_kwargs()
    h, g = XLNetRelativeAttention(n_head=self.n_head, name="rel_attn", **kw)(
        *carry, pos_emb, same_segment, mask_h, mask_g, target_mapping
    )
    ff = XLNetFeedForward(d_inner=self.d_inner, ff_activation=self.ff_activation, name="ff", **kw)
    return (ff(h), None if g is None else ff(g)), None
