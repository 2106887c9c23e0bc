r"""Big learning as a fine-tuning strategy for XLNet (paper App. E.2): Eq. (16), (15) and (17).

A classification example is one sequence x = (x', y): XLNet's input `<pad>.. A <sep> [B <sep>]
<cls>` (bigjax.data.tokenizer, left padding) with the label y in the `<cls>` slot, the last
position. Two readings of one model (`bigjax.models.xlnet.XLNet` with the LM head and a C-way
sequence-summary classifier):

  p(y | x')  (Eq. (16), FT)   the content stream over x' with the `<cls>` token in the slot; the
                              summary head reads the slot's output (HF's
                              `XLNetForSequenceClassification`, exactly). Both methods are
                              scored with this reading (`classify`).
  Eq. (15)   (big-learn)      the two-stream permutation objective over the text tokens and the
                              label as one sequence. The slot's content is a learned label
                              embedding E_y (`label_embedding` [C, D], initialised as the
                              `<cls>` embedding plus noise: `init_label_embedding`), so a label
                              earlier in the order conditions the text tokens after it
                              (p(x'_T | y, x'_S)); the label, as a target, is predicted from the
                              query stream at the slot by the same summary head and classifier
                              as FT (p(y | x'_S)); text targets are predicted by the tied LM head.

q(z) (`plm_tasks`): a uniformly random order over the positions (the label slot forced last with
probability `label_last_prob`); the candidates -- text tokens (real, not XLNet's special tokens)
and the label slot -- are targets from a cut on: the last `target_fraction` of them in the order
(1: every candidate, as App. E.1's full permutation LM; XLNet's pretraining predicted about
1/6). `<sep>` tokens and a `<cls>` token are never targets: they stay context that every
position sees, so no query row is fully masked (a fully masked row would attend uniformly,
its own content included). Padding is hidden by the attention mask.

Eq. (17) = Eq. (16) + beta * Eq. (15) (`biglearn_loss`); beta = 0 computes Eq. (16) alone, on
the same dropout draws, so a beta = 0 run is the FT run bit for bit. Pretraining from scratch
with Eq. (15) is `permutation_loss` without labels (the `<cls>` token stays in its slot).

All functions are pure and jit-safe; the model is an argument (built by the caller).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from bigjax import losses
from bigjax import permutation
from bigjax.models import xlnet

__all__ = [
    "SPECIAL_IDS",
    "CLS_ID",
    "init_label_embedding",
    "text_mask",
    "plm_tasks",
    "permutation_loss",
    "classification_loss",
    "biglearn_loss",
    "biglearn_terms",
    "classify",
    "complete",
]

# XLNet's special tokens (bigjax.data.tokenizer.SPECIAL_TOKENS): never LM targets.
SPECIAL_IDS = tuple(range(9))
CLS_ID = 3


def init_label_embedding(word_embedding: jax.Array, num_labels: int, rng) -> jax.Array:
  """[C, D]: the `<cls>` token's embedding plus normal(0.02) noise per class (HF's init scale),
  so the slot starts where the pretrained model expects `<cls>`, each class distinct."""
  cls = jnp.asarray(word_embedding)[CLS_ID]
  return cls[None, :] + 0.02 * jax.random.normal(rng, (num_labels, cls.shape[-1]), cls.dtype)


def text_mask(input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
  """bool [B, L]: real tokens that are not special tokens (the LM's targets)."""
  ids = jnp.asarray(input_ids)
  special = jnp.isin(ids, jnp.asarray(SPECIAL_IDS, ids.dtype))
  return (jnp.asarray(attention_mask) > 0) & ~special


def plm_tasks(
    rng,
    input_ids,
    attention_mask,
    *,
    with_label: bool,
    target_fraction: float = 1.0,
    label_last_prob: float = 0.0,
    text_targets: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One batch of Eq. (15) tasks: (ranks int32 [B, L], target_mask bool [B, L], perm_mask bool
  [B, L, L]) (see the module docstring for q(z)).

  Args:
    rng: PRNG key.
    input_ids, attention_mask: int [B, L], left-padded, the `<cls>` slot last.
    with_label: the last position holds the label and is a candidate target.
    target_fraction: in (0, 1], the share of candidates (last in the order) that are targets;
      at least one per example.
    label_last_prob: probability of the label slot last in the order (with_label only).
    text_targets: False: the label slot is the only candidate (with_label only), predicted
      from the text tokens before it in the order, a uniformly random subset; the text after
      it is hidden from every position.
  """
  if not text_targets and not with_label:
    raise ValueError("text_targets=False leaves no target without a label (with_label=True).")
  if not 0.0 < float(target_fraction) <= 1.0:
    raise ValueError(f"target_fraction must be in (0, 1], got {target_fraction}.")
  input_ids, attention_mask = jnp.asarray(input_ids), jnp.asarray(attention_mask)
  chex.assert_rank(input_ids, 2, custom_message="plm_tasks: input_ids must be int [B, L]")
  chex.assert_equal_shape(
      [input_ids, attention_mask],
      custom_message="plm_tasks: input_ids and attention_mask must have the same shape [B, L]",
  )
  b, length = jnp.shape(input_ids)
  text = text_mask(input_ids, attention_mask)
  candidates = text if text_targets else jnp.zeros_like(text)
  if with_label:
    candidates = candidates.at[:, -1].set(True)
  ranks = permutation.random_ranks(
      rng,
      b,
      length,
      last_position=length - 1 if with_label else None,
      last_prob=label_last_prob if with_label else 0.0,
  )
  # A candidate's place among the candidates of its example, in the order.
  earlier = candidates[:, None, :] & (ranks[:, None, :] < ranks[:, :, None])
  place = jnp.sum(earlier, axis=-1)
  count = jnp.sum(candidates, axis=-1, keepdims=True)
  num_targets = jnp.maximum(jnp.ceil(float(target_fraction) * count), 1.0)
  target = candidates & (place >= count - num_targets)
  # Without text targets, the text after the label in the order is hidden from every position
  # (the task (S, T) = (the text before the label, the label)).
  hidden = None if text_targets else text & (ranks > ranks[:, -1:])
  return ranks, target, permutation.permutation_mask(ranks, target, hidden_mask=hidden)


def _check_batch(name: str, batch: dict) -> None:
  """Shape checks of a classification batch (at trace time, so also under jit): without them a
  mismatch fails deep inside the model with a broadcasting error that names no field."""
  ids = batch["input_ids"]
  chex.assert_rank(ids, 2, custom_message=f"{name}: batch['input_ids'] must be int [B, L]")
  chex.assert_equal_shape(
      [ids, batch["token_type_ids"], batch["attention_mask"]],
      custom_message=(
          f"{name}: batch['input_ids'], batch['token_type_ids'] and batch['attention_mask'] must "
          "all be int [B, L]"
      ),
  )
  if batch.get("labels") is not None:
    chex.assert_shape(
        batch["labels"],
        ids.shape[:1],
        custom_message=f"{name}: batch['labels'] must be int [B], one label per row of input_ids",
    )


def _every_position(perm_mask):
  """target_mapping [B, L, L] = identity (a query-stream output at every position: one fixed
  shape whatever the targets) and the mask with every position hidden from its own query
  stream. Only the query stream reads the diagonal (the content stream always sees itself), and
  the query outputs of non-targets are never used, so the targets' predictions are unchanged."""
  b, length = perm_mask.shape[:2]
  eye = jnp.eye(length, dtype=bool)
  return (
      jnp.broadcast_to(eye.astype(jnp.float32), (b, length, length)),
      jnp.asarray(perm_mask, bool) | eye,
  )


def _embeds(params, input_ids, label_embedding, labels):
  word = params["params"]["transformer"]["word_embedding"]["embedding"]
  embeds = jnp.take(word, input_ids, axis=0)
  if labels is not None:
    embeds = embeds.at[:, -1].set(jnp.take(label_embedding, labels, axis=0).astype(embeds.dtype))
  return embeds


def permutation_loss(
    model: xlnet.XLNet,
    params,
    batch: dict,
    rng,
    *,
    label_embedding=None,
    target_fraction: float = 1.0,
    label_last_prob: float = 0.0,
    label_weight: float | None = None,
    label_only: bool = False,
    train: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eq. (15): the mean negative log-likelihood per target (text tokens and, with labels, the
  label), over the batch.

  Args:
    model: an XLNet with the LM head (and a classifier when the batch has labels).
    params: its {"params": ...}.
    batch: input_ids, token_type_ids, attention_mask int [B, L] (and labels int [B]: the label
      then takes the `<cls>` slot, embedded by `label_embedding`).
    rng: PRNG key (the orders, and dropout when train).
    label_embedding: [C, D], needed with labels.
    target_fraction, label_last_prob: q(z), `plm_tasks`.
    label_weight: None: Eq. (15) as written, one mean over all targets (the label is 1 of
      about L of them). A number w >= 0: the text and the label targets averaged separately,
      text_nll + w * label_nll (as App. E.1's objective weights its label term).
    label_only: the label is the only target, predicted from a uniformly random subset of the
      text (`plm_tasks(text_targets=False)`); the text is never a target.
    train: dropout on.

  Returns:
    (loss, aux): aux has text_nll (per text target), label_nll and label_accuracy (over the
    examples whose label was a target), num_targets.
  """
  labels = batch.get("labels")
  if labels is not None and label_embedding is None:
    raise ValueError("a batch with labels needs label_embedding [C, D] (init_label_embedding).")
  if (label_only or label_weight is not None) and labels is None:
    raise ValueError("label_only and label_weight need a batch with labels.")
  if label_weight is not None and not float(label_weight) >= 0:
    raise ValueError(
        f"label_weight must be >= 0 (None: one mean over all targets), got {label_weight}."
    )
  _check_batch("permutation_loss", batch)
  if labels is not None:
    chex.assert_rank(
        label_embedding,
        2,
        custom_message="permutation_loss: label_embedding must be [C, D] (init_label_embedding)",
    )
  k_order, k_drop = jax.random.split(rng)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  b, length = ids.shape
  _, target, perm_mask = plm_tasks(
      k_order,
      ids,
      mask,
      with_label=labels is not None,
      target_fraction=target_fraction,
      label_last_prob=label_last_prob,
      text_targets=not label_only,
  )
  mapping, perm_mask = _every_position(perm_mask)
  out = model.apply(
      params,
      None,
      token_type_ids=batch["token_type_ids"],
      attention_mask=mask,
      perm_mask=perm_mask,
      target_mapping=mapping,
      inputs_embeds=_embeds(params, ids, label_embedding, labels),
      train=train,
      rngs={"dropout": k_drop} if train else {},
  )
  text_target = target & text_mask(ids, mask)
  text_nll = jnp.sum(losses.permutation_lm(out["lm_logits"], ids, text_target))
  n_text = jnp.sum(text_target)
  total, count = text_nll, n_text
  aux = dict(text_nll=text_nll / jnp.maximum(n_text, 1))
  if labels is not None:
    label_target = target[:, -1]
    nll = optax.softmax_cross_entropy_with_integer_labels(out["logits"], labels)
    correct = (jnp.argmax(out["logits"], -1) == labels).astype(jnp.float32)
    n_label = jnp.sum(label_target)
    total = total + jnp.sum(jnp.where(label_target, nll, 0.0))
    count = count + n_label
    aux.update(
        label_nll=jnp.sum(jnp.where(label_target, nll, 0.0)) / jnp.maximum(n_label, 1),
        label_accuracy=jnp.sum(jnp.where(label_target, correct, 0.0)) / jnp.maximum(n_label, 1),
    )
  aux["num_targets"] = count
  if label_weight is not None:
    return aux["text_nll"] + float(label_weight) * aux["label_nll"], aux
  return total / jnp.maximum(count, 1), aux


def classification_loss(
    model: xlnet.XLNet, params, batch: dict, rng, *, train: bool = True
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eq. (16): the mean cross-entropy of p(y | x') read by `classify`'s path (the content stream,
  `<cls>` in the slot, the summary head). Returns (loss, {"accuracy"})."""
  _check_batch("classification_loss", batch)
  out = model.apply(
      params,
      batch["input_ids"],
      token_type_ids=batch["token_type_ids"],
      attention_mask=batch["attention_mask"],
      train=train,
      rngs={"dropout": rng} if train else {},
  )
  logits = out["logits"]
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
  accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["labels"]).astype(jnp.float32))
  return jnp.mean(nll), dict(accuracy=accuracy)


def biglearn_loss(
    classifier: xlnet.XLNet,
    lm_model: xlnet.XLNet,
    params,
    batch: dict,
    rng,
    *,
    beta: float,
    label_embedding=None,
    target_fraction: float = 1.0,
    label_last_prob: float = 0.0,
    label_weight: float | None = None,
    label_only: bool = False,
    plm_examples: int = 0,
) -> tuple[jax.Array, dict[str, Any]]:
  """Eq. (17): Eq. (16) + beta * Eq. (15) (training mode, dropout on).

  Args:
    classifier: the XLNet for Eq. (16) (may omit the LM head: it is not used there).
    lm_model: the same XLNet with the LM head, for Eq. (15) (the same params).
    params: {"params": ...} with the LM head's and the classifier's parameters.
    batch: input_ids, token_type_ids, attention_mask [B, L], labels [B].
    rng: PRNG key; Eq. (16)'s dropout uses the same draws whatever beta is.
    beta: beta_BigLearn >= 0, a number or a traced scalar (runs of different betas then share
      one compiled step); the Python number 0: Eq. (16) alone (no Eq. (15) pass).
    label_embedding, target_fraction, label_last_prob, label_weight, label_only:
      `permutation_loss`.
    plm_examples: Eq. (15) is estimated on the batch's first `plm_examples` examples (0: all).

  Returns:
    (loss, aux): aux has ft_loss, accuracy, and with beta > 0 plm_loss and Eq. (15)'s aux
    (prefixed plm_).
  """
  concrete = isinstance(beta, (int, float))
  if concrete and not beta >= 0:
    raise ValueError(f"beta must be >= 0, got {beta}.")
  if concrete and beta == 0:
    k_ft, _ = jax.random.split(rng)
    ft, aux = classification_loss(classifier, params, batch, k_ft)
    return ft, dict(ft_loss=ft, **aux)
  ft, plm, aux = biglearn_terms(
      classifier,
      lm_model,
      params,
      batch,
      rng,
      label_embedding=label_embedding,
      target_fraction=target_fraction,
      label_last_prob=label_last_prob,
      label_weight=label_weight,
      label_only=label_only,
      plm_examples=plm_examples,
  )
  return ft + beta * plm, aux


def biglearn_terms(
    classifier: xlnet.XLNet,
    lm_model: xlnet.XLNet,
    params,
    batch: dict,
    rng,
    *,
    label_embedding=None,
    target_fraction: float = 1.0,
    label_last_prob: float = 0.0,
    label_weight: float | None = None,
    label_only: bool = False,
    plm_examples: int = 0,
) -> tuple[jax.Array, jax.Array, dict[str, Any]]:
  """Eq. (17)'s two terms apart: (Eq. (16), Eq. (15), aux), on `biglearn_loss`'s dropout draws
  and orders (a step that gives each term its own optimiser statistics takes the gradient of
  each; under jit the unused term's pass is dropped).

  Args: `biglearn_loss`'s, but beta.
  """
  k_ft, k_plm = jax.random.split(rng)
  ft, aux = classification_loss(classifier, params, batch, k_ft)
  aux = dict(ft_loss=ft, **aux)
  part = {k: v[:plm_examples] for k, v in batch.items()} if plm_examples else batch
  plm, plm_aux = permutation_loss(
      lm_model,
      params,
      part,
      k_plm,
      label_embedding=label_embedding,
      target_fraction=target_fraction,
      label_last_prob=label_last_prob,
      label_weight=label_weight,
      label_only=label_only,
  )
  aux.update(plm_loss=plm, **{f"plm_{k}": v for k, v in plm_aux.items()})
  return ft, plm, aux


def classify(model: xlnet.XLNet, params, batch: dict) -> jax.Array:
  """log p(y | x') [B, C] (the FT reading, dropout off): how both methods are scored."""
  out = model.apply(
      params,
      batch["input_ids"],
      token_type_ids=batch["token_type_ids"],
      attention_mask=batch["attention_mask"],
  )
  return jax.nn.log_softmax(out["logits"], axis=-1)


def complete(
    model: xlnet.XLNet, params, batch: dict, given_mask, rng, *, temperature: float = 1.0
) -> jax.Array:
  """Fills the text positions not given, one at a time left to right, each drawn from the
  query stream's p(x_t | x_given, x_<t drawn) (label-free: the `<cls>` token stays in its slot).

  Args:
    model: an XLNet with the LM head; params its {"params": ...}.
    batch: input_ids, token_type_ids, attention_mask int [B, L] (left-padded; the values at
      the positions to fill are ignored).
    given_mask: bool [B, L]: the text tokens kept; the other text tokens (`text_mask`) are drawn.
    rng: PRNG key.
    temperature: divides the logits (> 0; 1: the model's distribution).

  Returns:
    int32 [B, L]: the given and special tokens unchanged, the others drawn (never a special
    token).
  """
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  ids = jnp.asarray(batch["input_ids"], jnp.int32)
  b, length = ids.shape
  fill = text_mask(ids, batch["attention_mask"]) & ~jnp.asarray(given_mask, bool)
  pos = jnp.arange(length)
  # The given (and special) tokens first, then the ones to fill in raster order.
  ranks = jnp.argsort(jnp.argsort(jnp.where(fill, length + pos, pos), axis=-1), axis=-1)
  mapping, perm_mask = _every_position(permutation.permutation_mask(ranks, fill))
  special = jnp.zeros((model.vocab_size,), bool).at[jnp.asarray(SPECIAL_IDS)].set(True)

  def step(j, ids):
    out = model.apply(
        params,
        ids,
        token_type_ids=batch["token_type_ids"],
        attention_mask=batch["attention_mask"],
        perm_mask=perm_mask,
        target_mapping=mapping,
    )
    logits = jnp.where(special, -jnp.inf, out["lm_logits"][:, j] / temperature)
    drawn = jax.random.categorical(jax.random.fold_in(rng, j), logits).astype(jnp.int32)
    return ids.at[:, j].set(jnp.where(fill[:, j], drawn, ids[:, j]))

  return jax.lax.fori_loop(0, length, step, jnp.where(fill, CLS_ID, ids))
