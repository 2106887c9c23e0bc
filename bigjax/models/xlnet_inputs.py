"""Host-side checks of XLNet's inputs (bigjax.models.xlnet), with the fix in every message.

numpy only, on concrete arrays: `XLNet.__call__` runs `check_inputs` whenever its inputs are not
traced, so a bad batch fails before jit rather than being silently clipped or broadcast.
"""

from __future__ import annotations

import jax
import numpy as np

from bigjax import permutation

__all__ = ["check_inputs", "is_concrete"]


def is_concrete(*arrays) -> bool:
  """True when no argument is a jax tracer (so it can be checked on the host)."""
  return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_inputs(
    input_ids=None,
    *,
    vocab_size: int,
    inputs_embeds=None,
    d_model: int | None = None,
    token_type_ids=None,
    attention_mask=None,
    perm_mask=None,
    target_mapping=None,
    bi_data: bool = False,
) -> None:
  """Host-side checks of concrete XLNet inputs; raises ValueError/TypeError saying the fix.

  Out-of-range ids would be silently clipped by the embedding gather and a mask of the wrong shape
  would broadcast, so both are caught here; `XLNet.__call__` runs this on concrete inputs.

  Args:
    input_ids: int [B, L] in [0, vocab_size), or None with inputs_embeds [B, L, d_model].
    vocab_size, d_model, bi_data: the model's (bi_data needs an even batch).
    token_type_ids, attention_mask, perm_mask, target_mapping: as `XLNet.__call__`; a
      target_mapping row must be one-hot, and perm_mask must hide every target from itself.
  """
  if (input_ids is None) == (inputs_embeds is None):
    raise ValueError("give exactly one of input_ids [B, L] and inputs_embeds [B, L, D].")
  if input_ids is not None:
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
      raise ValueError(f"input_ids must be int [B, L], got shape {ids.shape}.")
    if not np.issubdtype(ids.dtype, np.integer):
      raise TypeError(f"input_ids must be integer token ids, got dtype {ids.dtype}.")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
      bad = ids[(ids < 0) | (ids >= vocab_size)]
      raise ValueError(
          f"token id {int(bad[0])} is outside the vocabulary [0, {vocab_size}) "
          f"({bad.size} such ids): tokenize with the model's own tokenizer."
      )
    shape = ids.shape
  else:
    emb = np.shape(inputs_embeds)
    if len(emb) != 3 or (d_model is not None and emb[-1] != d_model):
      raise ValueError(f"inputs_embeds must be [B, L, D={d_model}], got shape {emb}.")
    shape = emb[:2]
  b, length = shape
  if bi_data and b % 2:
    raise ValueError(
        f"bi_data=True splits the batch into a forward and a backward half; the "
        f"batch size must be even, got {b}."
    )

  def zero_one(name, x, want):
    x = np.asarray(x)
    if x.shape != want:
      raise ValueError(
          f"{name} must have shape {want} to fit input of shape [B, L] = {shape}, "
          f"got {x.shape}."
      )
    if x.dtype != bool and not np.all((x == 0) | (x == 1)):
      raise ValueError(f"{name} must be boolean or 0/1.")
    return x.astype(bool)

  if token_type_ids is not None:
    seg = np.asarray(token_type_ids)
    if seg.shape != tuple(shape) or not np.issubdtype(seg.dtype, np.integer):
      raise ValueError(
          f"token_type_ids must be int [B, L] = {tuple(shape)}, got {seg.dtype} " f"{seg.shape}."
      )
    if seg.size and seg.min() < 0:
      raise ValueError(
          "token_type_ids must be >= 0 (XLNet: 0 first sentence, 1 second, " "2 <cls>)."
      )
  if attention_mask is not None:
    zero_one("attention_mask", attention_mask, tuple(shape))
  if target_mapping is not None:
    tm = np.asarray(target_mapping)
    if tm.ndim != 3 or tm.shape[0] != b or tm.shape[2] != length:
      raise ValueError(f"target_mapping must be [B, M, L] with B={b}, L={length}, got {tm.shape}.")
    tm = zero_one("target_mapping", tm, tm.shape)
    rows = tm.sum(-1)
    if np.any(rows != 1):
      bi, m = np.argwhere(rows != 1)[0]
      raise ValueError(
          f"target_mapping[{bi}, {m}] marks {int(rows[bi, m])} positions; each "
          "prediction must be at exactly one position (a one-hot row)."
      )
  if perm_mask is not None:
    pm = zero_one("perm_mask", perm_mask, (b, length, length))
    if target_mapping is not None:
      # The query stream of a target reads perm_mask as given (HF): it must hide the target.
      permutation.check_permutation_mask(pm, tm.any(1), length=length)
  elif target_mapping is not None:
    raise ValueError(
        "target_mapping without perm_mask: every target's query stream would see "
        "its own token. Pass perm_mask with perm_mask[b, i, i] = 1 for every target "
        "i (bigjax.permutation.permutation_mask builds one)."
    )
