"""XLNet (Yang et al. 2019) in Flax Linen, numerically HF's `modeling_xlnet.py` (paper App. E.2).

App. E.2 fine-tunes the pretrained `xlnet-base-cased` with big learning (Eq. (17): the
cross-entropy of Eq. (16) plus beta times the permutation loss of Eq. (15)). This is that network,
written so that HF's weights go in unchanged (`bigjax.models.xlnet_weights`) and every output
matches `transformers`' PyTorch XLNet to float32 rounding (tests/test_xlnet.py, tiny and base):
word embedding; relative sinusoidal positions for attn_type "bi" with `clamp_len` and `bi_data`
(forward distances for the first half of the batch, backward for the second) and
Transformer-XL's `rel_shift` (reshapes, no gather); scores (ac + bd + ef) / sqrt(d_head) with
`r_w_bias`, `r_r_bias` and relative segments (`seg_embed`: same or different segment) with
`r_s_bias`; the content stream h and the query stream g with shared weights (g starts from
`mask_emb` at the M positions of `target_mapping [B, M, L]` and, as in HF, exists only when
target_mapping is given); post-LayerNorm (eps 1e-12 in xlnet-base-cased); exact-erf GELU ("gelu";
the original TF code used the tanh form, "gelu_new"); dropout at HF's places from an explicit
'dropout' rng; the LM head tied to the word embedding, and the sequence-summary classifier
(summary_type "last": `<cls>` ends a left-padded sequence).

Left out: memory (`mems`; GLUE inputs of <= 128 tokens fit one segment, and HF's outputs without
`mems` do not depend on it), attn_type "uni" and `same_length` (unused by xlnet-base-cased), the
SQuAD heads. Any length runs (relative positions have no table); memory grows as L^2.

Masks, one convention for the library: `perm_mask[b, i, j] = 1` (True) means position i may NOT
attend to position j -- HF's and `bigjax.permutation`'s, so `permutation.permutation_mask(ranks,
target_mask)` goes straight in. As in HF, the content stream ignores the diagonal (a position
always sees itself) and the query stream reads perm_mask as given, so a target must be hidden
from itself; `check_inputs` refuses a mask that is not. `attention_mask [B, L]` is HF's (1 real
token, 0 padding, hidden from every query; HF's input_mask = 1 - attention_mask).

Why `bigjax.models.two_stream` (App. E.1) stays a separate model: it is XLNet-like but not XLNet
(absolute learned positions, pre-LayerNorm blocks, a learned start slot, learned segment
embeddings, a query stream that never sees its own position whatever the mask), so XLNet's
weights cannot go into it; making it a configuration of this module would change its numerics,
on which its measured 97% accuracy and bit-identical smoke runs depend. The two share the mask
convention (`bigjax.permutation`), not code.

The layer (relative positions, two-stream relative attention, feed-forward) is
`bigjax.models.xlnet_layers`; its names are re-exported here.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bigjax.models.xlnet_inputs import check_inputs, is_concrete
from bigjax.models.xlnet_layers import (
    ACTIVATIONS,
    INIT,
    XLNetFeedForward,
    XLNetLayer,
    XLNetRelativeAttention,
    rel_shift,
    relative_positional_encoding,
)

__all__ = [
    "XLNet",
    "XLNetModel",
    "XLNetLayer",
    "XLNetRelativeAttention",
    "XLNetFeedForward",
    "XLNetLMHead",
    "XLNetSequenceSummary",
    "init_heads",
    "relative_positional_encoding",
    "rel_shift",
    "check_inputs",
    "ACTIVATIONS",
]


class _Transformer(nn.Module):
  """The transformer's settings (HF's config names), shared by XLNetModel and XLNet.

  Attributes:
    vocab_size: V.
    d_model: D.
    n_layer: number of layers.
    n_head: N heads, d_head = D / N.
    d_inner: feed-forward width.
    ff_activation: a key of ACTIVATIONS ("gelu" = exact erf GELU).
    layer_norm_eps: LayerNorm epsilon (1e-12 in xlnet-base-cased).
    dropout: HF's `dropout` (embeddings, positions, attention weights, residual branches).
    bi_data: forward distances for the first half of the batch, backward for the second.
    clamp_len: clamp relative distances to [-clamp_len, clamp_len] if > 0.
    dtype: computation dtype (parameters, softmax and LayerNorm statistics stay float32).
  """

  vocab_size: int
  d_model: int = 768
  n_layer: int = 12
  n_head: int = 12
  d_inner: int = 3072
  ff_activation: str = "gelu"
  layer_norm_eps: float = 1e-12
  dropout: float = 0.1
  bi_data: bool = False
  clamp_len: int = -1
  dtype: Any = jnp.float32


class XLNetModel(_Transformer):
  """The XLNet transformer (HF's `XLNetModel`, no memory), attributes as `_Transformer`; the
  layers are one `nn.scan`, so each layer parameter has a leading [n_layer] axis (row i: HF's
  layer i)."""

  @nn.compact
  def __call__(
      self,
      input_ids=None,
      *,
      token_type_ids=None,
      attention_mask=None,
      perm_mask=None,
      target_mapping=None,
      inputs_embeds=None,
      train: bool = False,
  ):
    """Args as `XLNet.__call__`. Returns dict(content=[B, L, D], query=[B, M, D] when
    target_mapping is given, word_embedding=[V, D] (for the tied LM head))."""
    if self.ff_activation not in ACTIVATIONS:
      raise ValueError(
          f"ff_activation {self.ff_activation!r} is not supported; use one of "
          f"{sorted(ACTIVATIONS)}."
      )
    deterministic = not train
    drop = nn.Dropout(self.dropout, deterministic=deterministic)
    embed = nn.Embed(
        self.vocab_size, self.d_model, embedding_init=INIT, dtype=self.dtype, name="word_embedding"
    )
    mask_emb = self.param("mask_emb", INIT, (1, 1, self.d_model))
    word_emb = embed(input_ids) if inputs_embeds is None else inputs_embeds
    h = drop(jnp.asarray(word_emb, self.dtype))
    b, length = h.shape[:2]
    g = None
    if target_mapping is not None:
      target_mapping = jnp.asarray(target_mapping, self.dtype)
      g = drop(
          jnp.broadcast_to(mask_emb.astype(self.dtype), (b, target_mapping.shape[1], self.d_model))
      )

    # Masks: True = may not attend; padding keys hidden from all, diagonal free for content.
    data_mask = None
    if attention_mask is not None:
      data_mask = jnp.broadcast_to(
          (jnp.asarray(attention_mask) == 0)[:, None, :], (b, length, length)
      )
    if perm_mask is not None:
      blocked = jnp.asarray(perm_mask) > 0
      data_mask = blocked if data_mask is None else data_mask | blocked
    mask_h = None if data_mask is None else data_mask & ~jnp.eye(length, dtype=bool)
    same_segment = None
    if token_type_ids is not None:
      seg = jnp.asarray(token_type_ids)
      same_segment = seg[:, :, None] == seg[:, None, :]

    pos_emb = relative_positional_encoding(
        length, length, self.d_model, bi_data=self.bi_data, clamp_len=self.clamp_len
    )
    if train and self.dropout > 0:
      # HF tiles the encoding over the batch before dropout: one dropout mask per example.
      pos_emb = jnp.repeat(pos_emb, b // pos_emb.shape[0], axis=0)
    pos_emb = drop(pos_emb)

    # One nn.scan over the layers: XLA:CPU compiles a layer once instead of n_layer times
    # (compilation grows by about 1 s per unrolled layer on 2 cores), for a step about 7% slower
    # than unrolled at base size (10.9 s against 10.1 s, fastest of 7 steps), from stacking the
    # parameters and the saved activations.
    layers = nn.scan(
        XLNetLayer,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=nn.broadcast,
        length=self.n_layer,
    )
    (h, g), _ = layers(
        n_head=self.n_head,
        d_inner=self.d_inner,
        ff_activation=self.ff_activation,
        layer_norm_eps=self.layer_norm_eps,
        dropout=self.dropout,
        deterministic=deterministic,
        dtype=self.dtype,
        name="layer",
    )((h, g), pos_emb, same_segment, mask_h, data_mask, target_mapping)
    out = dict(content=drop(h), word_embedding=embed.embedding)
    if g is not None:
      out["query"] = drop(g)
    return out


class XLNet(_Transformer):
  """XLNet with HF's heads: the tied LM head (`XLNetLMHeadModel`) and/or the sequence-summary
  classifier (`XLNetForSequenceClassification`); parameter tree {transformer, lm_loss,
  sequence_summary, logits_proj} as in HF's state dicts (see bigjax.models.xlnet_weights).

  Attributes:
    vocab_size, d_model, n_layer, n_head, d_inner, ff_activation, layer_norm_eps, dropout,
      bi_data, clamp_len, dtype: the transformer's (`_Transformer`, HF's config names).
    lm_head: add the LM head (logits = output @ word_embedding^T + lm_loss.bias).
    num_labels: C > 0 adds the classifier; 0: none.
    summary_type: "last" (XLNet: `<cls>` is the last token), "first" or "mean".
    summary_use_proj: a D -> D projection (`sequence_summary.summary`) before the activation.
    summary_activation: "tanh", another key of ACTIVATIONS, or None.
    summary_first_dropout, summary_last_dropout: dropout before / after the projection.
  """

  lm_head: bool = True
  num_labels: int = 0
  summary_type: str = "last"
  summary_use_proj: bool = True
  summary_activation: str | None = "tanh"
  summary_first_dropout: float = 0.0
  summary_last_dropout: float = 0.1

  @nn.compact
  def __call__(
      self,
      input_ids=None,
      *,
      token_type_ids=None,
      attention_mask=None,
      perm_mask=None,
      target_mapping=None,
      inputs_embeds=None,
      train: bool = False,
  ) -> dict:
    """Runs the content stream, and the query stream when target_mapping is given.

    Args:
      input_ids: int [B, L] in [0, vocab_size) (or None with inputs_embeds).
      token_type_ids: int [B, L] segment ids (XLNet: 0 sentence A, 1 sentence B, 2 `<cls>`); only
        same-or-different segment enters (relative segment encoding). None: no segment term.
      attention_mask: 0/1 [B, L], 1 = real token, 0 = padding (hidden from every query).
      perm_mask: bool or 0/1 [B, L, L], True where i may NOT attend to j (XLNet's and
        bigjax.permutation's convention); the content stream always sees its own position.
      target_mapping: 0/1 [B, M, L], one-hot rows: prediction m is at that position. Needs a
        perm_mask that hides every target from itself (checked on concrete inputs).
      inputs_embeds: float [B, L, D] used instead of the word embedding of input_ids.
      train: dropout on (needs a 'dropout' rng in `apply`).

    Returns:
      dict with "content" [B, L, D] (content stream), "query" [B, M, D] (query stream, only with
      target_mapping), "lm_logits" [B, M or L, V] (lm_head; from the query stream if present,
      else the content stream, as HF) and "logits" [B, C] (num_labels > 0; the summary of the
      same stream, as HF). Logits are float32 (float64 for a float64 model).
    """
    if is_concrete(
        input_ids, inputs_embeds, perm_mask, target_mapping, attention_mask, token_type_ids
    ):
      check_inputs(
          input_ids,
          vocab_size=self.vocab_size,
          inputs_embeds=inputs_embeds,
          d_model=self.d_model,
          token_type_ids=token_type_ids,
          attention_mask=attention_mask,
          perm_mask=perm_mask,
          target_mapping=target_mapping,
          bi_data=self.bi_data,
      )
    backbone = {
        f: getattr(self, f)
        for f in _Transformer.__dataclass_fields__
        if f not in ("parent", "name")
    }
    out = XLNetModel(**backbone, name="transformer")(
        input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        perm_mask=perm_mask,
        target_mapping=target_mapping,
        inputs_embeds=inputs_embeds,
        train=train,
    )
    embedding = out.pop("word_embedding")
    output = out.get("query", out["content"])
    if self.lm_head:
      out["lm_logits"] = _lm_head(self, name="lm_loss")(output, embedding)
    if self.num_labels:
      summary = _sequence_summary(self, not train, name="sequence_summary")(output)
      logits = _logits_proj(self, name="logits_proj")(summary)
      out["logits"] = logits.astype(jnp.promote_types(self.dtype, jnp.float32))
    return out


# The heads, built in one place for XLNet.__call__ (inside it they become its submodules) and for
# init_heads (standalone).
def _lm_head(model, **kw):
  return XLNetLMHead(model.vocab_size, dtype=model.dtype, **kw)


def _sequence_summary(model, deterministic, **kw):
  return XLNetSequenceSummary(
      model.d_model,
      model.summary_type,
      model.summary_use_proj,
      model.summary_activation,
      model.summary_first_dropout,
      model.summary_last_dropout,
      deterministic=deterministic,
      dtype=model.dtype,
      **kw,
  )


def _logits_proj(model, **kw):
  return nn.Dense(model.num_labels, kernel_init=INIT, dtype=model.dtype, **kw)


def init_heads(model: XLNet, rng) -> dict:
  """Fresh parameters of `model`'s heads only, initialised as HF does (normal(0.02) weights,
  zero biases): the classifier added to a pretrained LM checkpoint, without drawing the whole
  transformer again.

  Returns:
    {"lm_loss": ..., "sequence_summary": ..., "logits_proj": ...} for the heads `model` has.
  """
  summary_rng, proj_rng = jax.random.split(rng)
  heads = {}
  if model.lm_head:
    heads["lm_loss"] = {"bias": jnp.zeros((model.vocab_size,), jnp.float32)}
  if model.num_labels:
    x = jnp.zeros((1, 1, model.d_model))
    summary = _sequence_summary(model, True).init(summary_rng, x).get("params")
    if summary:  # none without summary_use_proj
      heads["sequence_summary"] = summary
    heads["logits_proj"] = _logits_proj(model).init(proj_rng, x[0])["params"]
  return heads


class XLNetLMHead(nn.Module):
  """HF's `lm_loss`: logits = output @ word_embedding^T + bias (the weight tied, the bias own)."""

  vocab_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, output, embedding):
    """Args: output [B, M, D], embedding [V, D]. Returns float32 logits [B, M, V]."""
    bias = self.param("bias", nn.initializers.zeros, (self.vocab_size,))
    logits = jnp.einsum("bmD,vD->bmv", output, jnp.asarray(embedding, self.dtype))
    return logits.astype(jnp.promote_types(self.dtype, jnp.float32)) + bias


class XLNetSequenceSummary(nn.Module):
  """HF's `XLNetSequenceSummary`: pick a position, dropout, Dense `summary`, activation, dropout."""

  d_model: int
  summary_type: str = "last"
  summary_use_proj: bool = True
  summary_activation: str | None = "tanh"
  summary_first_dropout: float = 0.0
  summary_last_dropout: float = 0.1
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, output):
    """Args: output [B, L, D] (left-padded, `<cls>` last). Returns [B, D]."""
    pick = dict(last=lambda x: x[:, -1], first=lambda x: x[:, 0], mean=lambda x: x.mean(1))
    if self.summary_type not in pick:
      raise ValueError(
          f"summary_type {self.summary_type!r} is not supported; use one of "
          f"{list(pick)} ('last' is XLNet's)."
      )
    summary = pick[self.summary_type](output)
    summary = nn.Dropout(self.summary_first_dropout, deterministic=self.deterministic)(summary)
    if self.summary_use_proj:
      summary = nn.Dense(self.d_model, kernel_init=INIT, dtype=self.dtype, name="summary")(summary)
    if self.summary_activation:
      if self.summary_activation not in ACTIVATIONS:
        raise ValueError(
            f"summary_activation {self.summary_activation!r} is not supported; use "
            f"one of {sorted(ACTIVATIONS)} or None."
        )
      summary = ACTIVATIONS[self.summary_activation](summary)
    return nn.Dropout(self.summary_last_dropout, deterministic=self.deterministic)(summary)
