"""A two-stream permutation transformer (XLNet, Yang et al. 2019) in Flax Linen (paper App. E.1).

Two streams run through the same layers with shared weights:
  content stream h_i: sees the tokens that position i may attend to, and its own token;
  query stream g_i:   sees the same positions' content but never the content of i itself; it
                      starts from a learned embedding plus the position embedding, so it knows
                      *where* it predicts but not *what* is there. Its output predicts x_i.
Keys and values come from the content stream only; queries from each stream's own state.

Which position may see which is one dense mask per example, `perm_mask [B, L, L]` (True: i may
NOT attend to j), built for any order and target set by `bigjax.permutation` (also for any
(S, T) of `bigjax.tasks`). The content stream uses perm_mask with its diagonal cleared (a
position always sees itself); the query stream uses perm_mask with its diagonal set (a position
never sees itself), whatever the caller passed.

A learned start slot (the content of a virtual position 0 that every position may attend to,
and that attends only to itself) gives a position with nothing visible, e.g. the first token of
joint generation, a well-defined attention over one key instead of a softmax over no keys.

Differences from XLNet-base: absolute learned position embeddings instead of relative attention,
pre-LayerNorm blocks, learned segment embeddings, the start slot, no memory. XLNet itself, with
Hugging Face's weights, is `bigjax.models.xlnet` (App. E.2); this model stays separate because
making it a configuration of that one would change the numerics that its measured App. E.1
results and bit-identical smoke runs rest on. Both read the same perm_mask convention.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["TwoStreamTransformer", "TwoStreamBlock", "check_inputs"]

_INIT = nn.initializers.xavier_uniform()
_EMBED_INIT = nn.initializers.normal(0.02)


def check_inputs(
    tokens, segment_ids, perm_mask, *, vocab_size: int, num_segments: int, max_length: int
) -> None:
  """Host-side checks of concrete model inputs; raises ValueError/TypeError with the fix.

  Token ids outside [0, vocab_size) would be silently clipped by the embedding gather, and a
  mask of the wrong shape would broadcast, so both are caught here.
  """
  tokens, segment_ids, perm_mask = (np.asarray(a) for a in (tokens, segment_ids, perm_mask))
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be int [B, L], got shape {tokens.shape}.")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}.")
  b, length = tokens.shape
  if length > max_length:
    raise ValueError(f"sequences of length {length} exceed the model's max_length={max_length}.")
  if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
    bad = tokens[(tokens < 0) | (tokens >= vocab_size)][0]
    raise ValueError(f"token id {int(bad)} is outside the vocabulary [0, {vocab_size}).")
  if segment_ids.shape != tokens.shape:
    raise ValueError(f"segment_ids must be [B, L] = {tokens.shape}, got {segment_ids.shape}.")
  if segment_ids.size and (segment_ids.min() < 0 or segment_ids.max() >= num_segments):
    raise ValueError(
        f"segment ids must be in [0, {num_segments}), got values in "
        f"[{segment_ids.min()}, {segment_ids.max()}]."
    )
  if perm_mask.shape != (b, length, length):
    raise ValueError(
        f"perm_mask must be [B, L, L] = {(b, length, length)}, got " f"{perm_mask.shape}."
    )


class TwoStreamAttention(nn.Module):
  """One multi-head attention for both streams (shared q/k/v/out projections).

  Args (call): h [B, L+1, D] content (start slot first), g [B, L, D] query,
    content_visible bool [B, L+1, L+1], query_visible bool [B, L, L+1] (True: may attend).
  Returns: (h update [B, L+1, D], g update [B, L, D]).
  """

  num_heads: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, g, content_visible, query_visible, *, train: bool):
    dim = h.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"width {dim} is not divisible by num_heads={self.num_heads}.")
    head_dim = dim // self.num_heads
    dense = lambda name: nn.DenseGeneral(
        (self.num_heads, head_dim), kernel_init=_INIT, dtype=self.dtype, name=name
    )
    query_proj = dense("query")
    k, v = dense("key")(h), dense("value")(h)  # from the content stream only
    wide = jnp.promote_types(self.dtype, jnp.float32)
    scale = 1.0 / np.sqrt(head_dim)
    out_proj = nn.DenseGeneral(dim, axis=(-2, -1), kernel_init=_INIT, dtype=self.dtype, name="out")
    drop = nn.Dropout(self.dropout, deterministic=not train)

    def attend(x, visible):
      logits = jnp.einsum("bqhd,bkhd->bhqk", query_proj(x), k).astype(wide) * scale
      logits = jnp.where(visible[:, None], logits, jnp.finfo(wide).min)
      weights = drop(jax.nn.softmax(logits, axis=-1).astype(self.dtype))
      return out_proj(jnp.einsum("bhqk,bkhd->bqhd", weights, v))

    return attend(h, content_visible), attend(g, query_visible)


class TwoStreamBlock(nn.Module):
  """Pre-LN block applied to both streams with the same weights:
  s + Attn(LN(s)), then s + MLP(LN(s)), for s in (h, g); keys/values from LN(h)."""

  num_heads: int
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, g, content_visible, query_visible, *, train: bool):
    dim = h.shape[-1]
    norm = nn.LayerNorm(dtype=self.dtype, name="ln_attn")
    drop = nn.Dropout(self.dropout, deterministic=not train)
    dh, dg = TwoStreamAttention(self.num_heads, self.dropout, dtype=self.dtype, name="attn")(
        norm(h), norm(g), content_visible, query_visible, train=train
    )
    h, g = h + drop(dh), g + drop(dg)
    norm = nn.LayerNorm(dtype=self.dtype, name="ln_mlp")
    mlp_in = nn.Dense(int(self.mlp_ratio * dim), kernel_init=_INIT, dtype=self.dtype, name="mlp_in")
    mlp_out = nn.Dense(dim, kernel_init=_INIT, dtype=self.dtype, name="mlp_out")
    mlp = lambda x: x + drop(mlp_out(nn.gelu(mlp_in(norm(x)))))
    return mlp(h), mlp(g)


class TwoStreamTransformer(nn.Module):
  """XLNet-style two-stream transformer: p(x_i | the positions i may see), for every i at once.

  Attributes:
    vocab_size: V, token ids are in [0, V) (for App. E.1: the image codes, then the labels).
    num_segments: number of segment (modality) ids; each has its own embedding.
    max_length: the longest sequence L (size of the position embedding).
    width: model width D.
    depth: number of blocks.
    num_heads: attention heads (divides D).
    mlp_ratio: MLP width / D.
    dropout: dropout on attention weights and residual branches (training only).
    dtype: computation dtype (parameters, softmax and logits stay float32).
  """

  vocab_size: int
  num_segments: int
  max_length: int
  width: int = 128
  depth: int = 4
  num_heads: int = 4
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
      self, tokens: jax.Array, segment_ids: jax.Array, perm_mask: jax.Array, *, train: bool = False
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Runs both streams.

    Args:
      tokens: int [B, L] ids in [0, vocab_size). The values at positions hidden from a
        position never affect its outputs (tested).
      segment_ids: int [B, L] in [0, num_segments) (e.g. 0 image token, 1 label).
      perm_mask: bool [B, L, L], True where position i may not attend to position j (XLNet's
        perm_mask; see bigjax.permutation.permutation_mask).
      train: enables dropout (needs a 'dropout' rng).

    Returns:
      (logits, out): logits [B, L, V] from the query stream (float32, or float64 for a
      float64 model), logits[b, i] predicting
      tokens[b, i] from what i may see; out holds "content" [B, L, D] and "query" [B, L, D],
      the final (normed) states of both streams.
    """
    if not isinstance(tokens, jax.core.Tracer) and not isinstance(perm_mask, jax.core.Tracer):
      check_inputs(
          tokens,
          segment_ids,
          perm_mask,
          vocab_size=self.vocab_size,
          num_segments=self.num_segments,
          max_length=self.max_length,
      )
    b, length = tokens.shape
    position = self.param("position_embedding", _EMBED_INIT, (self.max_length, self.width))
    position = position[None, :length]
    h = (
        nn.Embed(self.vocab_size, self.width, embedding_init=_EMBED_INIT, name="token_embed")(
            tokens
        )
        + nn.Embed(self.num_segments, self.width, embedding_init=_EMBED_INIT, name="segment_embed")(
            segment_ids
        )
        + position
    )
    g = jnp.broadcast_to(
        self.param("query_embedding", _EMBED_INIT, (self.width,)) + position,
        (b, length, self.width),
    )
    start = self.param("start_slot", _EMBED_INIT, (self.width,))
    h = jnp.concatenate([jnp.broadcast_to(start, (b, 1, self.width)), h], axis=1)
    h, g = h.astype(self.dtype), g.astype(self.dtype)

    blocked = jnp.asarray(perm_mask, bool)
    eye = jnp.eye(length, dtype=bool)
    content = ~(blocked & ~eye)  # always sees itself
    query = ~(blocked | eye)  # never sees itself
    # The start slot: visible to every position; it sees only itself.
    content_visible = jnp.concatenate(
        [
            jnp.concatenate([jnp.ones((b, 1, 1), bool), jnp.zeros((b, 1, length), bool)], axis=2),
            jnp.concatenate([jnp.ones((b, length, 1), bool), content], axis=2),
        ],
        axis=1,
    )
    query_visible = jnp.concatenate([jnp.ones((b, length, 1), bool), query], axis=2)

    for i in range(self.depth):
      h, g = TwoStreamBlock(
          self.num_heads, self.mlp_ratio, self.dropout, dtype=self.dtype, name=f"block_{i}"
      )(h, g, content_visible, query_visible, train=train)
    norm = nn.LayerNorm(dtype=self.dtype, name="ln_final")
    h, g = norm(h[:, 1:]), norm(g)
    logits = nn.Dense(self.vocab_size, kernel_init=_INIT, dtype=self.dtype, name="head")(g)
    return logits.astype(jnp.promote_types(self.dtype, jnp.float32)), dict(content=h, query=g)
