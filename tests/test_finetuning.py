"""bigjax.finetuning (Eq. (15)-(17) for XLNet) and the rate-as-argument AdamW it trains with."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigjax import finetuning
from bigjax import permutation
from bigjax.models import xlnet
from bigjax.training import optimizers

V, D, C, L = 40, 16, 3, 10
KW = dict(vocab_size=V, d_model=D, n_layer=2, n_head=2, d_inner=24, dropout=0.1)


def _batch(b=4, seed=0):
  """Left-padded `<pad>.. text <sep> <cls>` rows with 3-7 text tokens."""
  rng = np.random.default_rng(seed)
  ids = np.full((b, L), 5, np.int32)
  mask = np.zeros((b, L), np.int32)
  for i in range(b):
    n = int(rng.integers(3, 8))
    ids[i, L - n - 2 : L - 2] = rng.integers(9, V, n)
    ids[i, L - 2], ids[i, L - 1] = 4, 3
    mask[i, L - n - 2 :] = 1
  types = np.where(np.arange(L) == L - 1, 2, 0).astype(np.int32)[None].repeat(b, 0)
  return dict(
      input_ids=ids,
      token_type_ids=types,
      attention_mask=mask,
      labels=rng.integers(0, C, b).astype(np.int32),
  )


@functools.cache
def _model_and_params():
  lm = xlnet.XLNet(**KW, lm_head=True, num_labels=C)
  classifier = xlnet.XLNet(**KW, lm_head=False, num_labels=C)
  params = jax.jit(lm.init)(jax.random.key(0), _batch()["input_ids"][:2])
  label_embedding = finetuning.init_label_embedding(
      params["params"]["transformer"]["word_embedding"]["embedding"], C, jax.random.key(1)
  )
  return lm, classifier, params, label_embedding


@pytest.fixture(scope="module")
def model_and_params():
  return _model_and_params()


class FinetuningVariantsTest(chex.TestCase):
  """q(z) and Eq. (16) against their references, eager and jitted."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_plm_tasks_targets_are_text_and_label_only_and_hidden_from_themselves(self):
    batch = _batch(6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    ranks, target, perm = self.variant(
        lambda k: finetuning.plm_tasks(k, ids, mask, with_label=True)
    )(jax.random.key(3))
    text = (mask > 0) & (ids >= 9)
    np.testing.assert_array_equal(np.asarray(target), text | (np.arange(L) == L - 1))
    assert np.all(np.diagonal(np.asarray(perm), axis1=1, axis2=2)[np.asarray(target)])
    permutation.check_permutation_mask(perm, target)
    # <sep> (context) is visible to every position: no query row is fully masked.
    assert not np.asarray(perm)[:, :, L - 2].any()
    # Without the label the <cls> slot is context too.
    _, no_label, _ = finetuning.plm_tasks(jax.random.key(3), ids, mask, with_label=False)
    np.testing.assert_array_equal(np.asarray(no_label), text)

  @chex.variants(with_jit=True, without_jit=True)
  def test_classification_loss_is_the_cross_entropy_of_classify(self):
    """Eq. (16) without dropout: the mean of -log p(y | x') read by `classify`."""
    _, classifier, params, _ = _model_and_params()
    batch = _batch(seed=3)
    loss, aux = self.variant(
        lambda p, b: finetuning.classification_loss(classifier, p, b, None, train=False)
    )(params, batch)
    log_p = np.asarray(finetuning.classify(classifier, params, batch))
    labels = batch["labels"]
    np.testing.assert_allclose(
        float(loss), -np.mean(log_p[np.arange(len(labels)), labels]), rtol=1e-5
    )
    np.testing.assert_allclose(float(aux["accuracy"]), np.mean(log_p.argmax(-1) == labels))


def test_plm_tasks_target_fraction_takes_the_last_candidates_of_the_order():
  batch = _batch(8, seed=1)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  ranks, target, _ = finetuning.plm_tasks(
      jax.random.key(5), ids, mask, with_label=True, target_fraction=0.5
  )
  ranks, target = np.asarray(ranks), np.asarray(target)
  for b in range(8):
    cand = np.flatnonzero(((mask[b] > 0) & (ids[b] >= 9)) | (np.arange(L) == L - 1))
    by_order = cand[np.argsort(ranks[b, cand])]
    want = by_order[len(cand) - int(np.ceil(0.5 * len(cand))) :]
    np.testing.assert_array_equal(np.flatnonzero(target[b]), np.sort(want))
  last, _, _ = finetuning.plm_tasks(
      jax.random.key(5), ids, mask, with_label=True, label_last_prob=1.0
  )
  assert np.all(np.asarray(last)[:, -1] == L - 1)
  with pytest.raises(ValueError, match="target_fraction"):
    finetuning.plm_tasks(jax.random.key(0), ids, mask, with_label=True, target_fraction=0.0)


def test_beta_zero_is_ft_exactly_and_beta_adds_the_permutation_loss(model_and_params):
  lm, classifier, params, label_embedding = model_and_params
  batch = {k: jnp.asarray(v) for k, v in _batch().items()}
  key = jax.random.key(7)
  k_ft, k_plm = jax.random.split(key)
  ft = lambda p: finetuning.classification_loss(classifier, p, batch, k_ft)[0]
  big = lambda p, beta: finetuning.biglearn_loss(
      classifier, lm, p, batch, key, beta=beta, label_embedding=label_embedding
  )[0]
  (v_ft, g_ft), (v_zero, g_zero) = jax.jit(
      lambda p: (jax.value_and_grad(ft)(p), jax.value_and_grad(lambda q: big(q, 0.0))(p))
  )(params)
  assert float(v_zero) == float(v_ft)
  chex.assert_trees_all_equal(g_ft, g_zero)
  # A traced beta (runs of different betas share one compiled step): FT + beta * Eq. (15).
  v_big, plm = jax.jit(
      lambda p, beta: (
          big(p, beta),
          finetuning.permutation_loss(lm, p, batch, k_plm, label_embedding=label_embedding)[0],
      )
  )(params, jnp.float32(0.4))
  np.testing.assert_allclose(float(v_big), float(v_ft) + 0.4 * float(plm), rtol=1e-6)
  with pytest.raises(ValueError, match="beta"):
    big(params, -0.1)


def _nll_by_hand(lm, params, label_embedding, batch, key, *, label_only=False):
  """Eq. (15)'s per-target NLLs recomputed from the model's outputs under the same mask and
  label embedding: (text NLLs, label NLLs, the targets [B, L], the perm mask [B, L, L])."""
  k_order, _ = jax.random.split(key)
  _, target, perm = finetuning.plm_tasks(
      k_order,
      batch["input_ids"],
      batch["attention_mask"],
      with_label=True,
      text_targets=not label_only,
  )
  embeds = np.asarray(params["params"]["transformer"]["word_embedding"]["embedding"])[
      batch["input_ids"]
  ]
  embeds[:, -1] = np.asarray(label_embedding)[batch["labels"]]
  out = jax.jit(
      lambda p: lm.apply(
          p,
          None,
          token_type_ids=batch["token_type_ids"],
          attention_mask=batch["attention_mask"],
          perm_mask=np.asarray(perm) | np.eye(L, dtype=bool),
          target_mapping=np.eye(L, dtype=np.float32)[None].repeat(4, 0),
          inputs_embeds=embeds,
      )
  )(params)
  lm_lp = np.asarray(jax.nn.log_softmax(out["lm_logits"]))
  label_lp = np.asarray(jax.nn.log_softmax(out["logits"]))
  target = np.asarray(target)
  text, label = [], []
  for b in range(4):
    for i in np.flatnonzero(target[b]):
      if i == L - 1:
        label.append(-label_lp[b, batch["labels"][b]])
      else:
        text.append(-lm_lp[b, i, batch["input_ids"][b, i]])
  return text, label, target, np.asarray(perm)


def test_permutation_loss_is_the_mean_nll_of_the_targets(model_and_params):
  """Recomputed by hand from the model's outputs under the same mask and label embedding; with
  label_weight w, the text targets' mean + w * the label targets' mean."""
  lm, _, params, label_embedding = model_and_params
  batch = _batch(seed=2)
  key = jax.random.key(11)
  loss_of = lambda **kw: jax.jit(
      lambda p: finetuning.permutation_loss(
          lm, p, batch, key, label_embedding=label_embedding, train=False, **kw
      )
  )(params)
  loss, aux = loss_of()
  text, label, _, _ = _nll_by_hand(lm, params, label_embedding, batch, key)
  np.testing.assert_allclose(float(loss), np.mean(text + label), rtol=1e-5)
  assert int(aux["num_targets"]) == len(text) + len(label)
  for w in (0.0, 2.5):
    weighted, aux = loss_of(label_weight=w)
    np.testing.assert_allclose(float(weighted), np.mean(text) + w * np.mean(label), rtol=1e-5)
    np.testing.assert_allclose(float(aux["label_nll"]), np.mean(label), rtol=1e-5)
  with pytest.raises(ValueError, match="label_embedding"):
    finetuning.permutation_loss(lm, params, batch, key)
  with pytest.raises(ValueError, match="label_weight must be >= 0"):
    loss_of(label_weight=-1.0)
  unlabelled = {k: v for k, v in batch.items() if k != "labels"}
  for kw in (dict(label_weight=1.0), dict(label_only=True)):
    with pytest.raises(ValueError, match="need a batch with labels"):
      finetuning.permutation_loss(lm, params, unlabelled, key, **kw)


def test_label_only_predicts_the_label_from_a_random_subset_of_the_text(model_and_params):
  """label_only: the label slot is the only target; it sees exactly the text before it in the
  order (every subset size occurs over draws), and the loss is the label's mean NLL."""
  lm, _, params, label_embedding = model_and_params
  batch = _batch(seed=4)
  key = jax.random.key(13)
  loss, aux = jax.jit(
      lambda p: finetuning.permutation_loss(
          lm, p, batch, key, label_embedding=label_embedding, train=False, label_only=True
      )
  )(params)
  text, label, target, _ = _nll_by_hand(lm, params, label_embedding, batch, key, label_only=True)
  assert not text and len(label) == 4
  np.testing.assert_array_equal(target, np.arange(L)[None].repeat(4, 0) == L - 1)
  np.testing.assert_allclose(float(loss), np.mean(label), rtol=1e-5)
  assert float(aux["text_nll"]) == 0.0 and int(aux["num_targets"]) == 4
  ids, mask = batch["input_ids"], batch["attention_mask"]
  sizes = set()
  for seed in range(40):
    ranks, _, perm = finetuning.plm_tasks(
        jax.random.key(seed), ids, mask, with_label=True, text_targets=False
    )
    ranks, perm = np.asarray(ranks), np.asarray(perm)
    text_pos = (mask > 0) & (ids >= 9)
    seen = ~perm[:, L - 1] & text_pos  # the text the label's query stream attends to
    np.testing.assert_array_equal(seen, text_pos & (ranks < ranks[:, L - 1 : L]))
    sizes |= {(int(n), int(t)) for n, t in zip(seen.sum(1), text_pos.sum(1))}
  for n_text in {t for _, t in sizes}:  # from none of the text to all of it
    assert {0, n_text} <= {n for n, t in sizes if t == n_text}
  with pytest.raises(ValueError, match="text_targets=False"):
    finetuning.plm_tasks(key, ids, mask, with_label=False, text_targets=False)


def test_biglearn_terms_are_the_two_terms_of_biglearn_loss(model_and_params):
  lm, classifier, params, label_embedding = model_and_params
  batch = {k: jnp.asarray(v) for k, v in _batch().items()}
  key = jax.random.key(9)
  kw = dict(label_embedding=label_embedding, label_weight=1.5)
  ft, plm, aux = jax.jit(lambda p: finetuning.biglearn_terms(classifier, lm, p, batch, key, **kw))(
      params
  )
  loss, aux_loss = jax.jit(
      lambda p: finetuning.biglearn_loss(classifier, lm, p, batch, key, beta=0.4, **kw)
  )(params)
  np.testing.assert_allclose(float(loss), float(ft) + 0.4 * float(plm), rtol=1e-6)
  chex.assert_trees_all_close(aux, aux_loss)
  assert float(aux["ft_loss"]) == float(ft) and float(aux["plm_loss"]) == float(plm)


def test_the_label_in_its_slot_conditions_only_the_targets_after_it(model_and_params):
  """With the label first in the order (label_last_prob 0, a fixed order), another label changes
  the text predictions; a label last in the order changes none of them."""
  lm, _, params, label_embedding = model_and_params
  batch = _batch(seed=3)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  length = np.arange(L)
  apply = jax.jit(
      lambda p, perm, embeds: lm.apply(
          p,
          None,
          token_type_ids=batch["token_type_ids"],
          attention_mask=mask,
          perm_mask=perm,
          target_mapping=np.eye(L, dtype=np.float32)[None].repeat(4, 0),
          inputs_embeds=embeds,
      )
  )

  def text_logits(label_rank_first, labels):
    ranks = np.where(length == L - 1, -1 if label_rank_first else L, length)
    ranks = np.argsort(np.argsort(ranks))[None].repeat(4, 0)
    target = ((mask > 0) & (ids >= 9)) | (length == L - 1)
    perm = np.asarray(permutation.permutation_mask(ranks, target))
    embeds = np.asarray(params["params"]["transformer"]["word_embedding"]["embedding"])[ids]
    embeds[:, -1] = np.asarray(label_embedding)[labels]
    out = apply(params, perm | np.eye(L, dtype=bool), embeds)
    return np.asarray(out["lm_logits"])[(mask > 0) & (ids >= 9)]  # the text targets

  other = (batch["labels"] + 1) % C
  assert np.abs(text_logits(True, batch["labels"]) - text_logits(True, other)).max() > 1e-4
  np.testing.assert_array_equal(text_logits(False, batch["labels"]), text_logits(False, other))


def test_classify_is_the_content_stream_classifier(model_and_params):
  lm, classifier, params, _ = model_and_params
  batch = _batch()
  out = lm.apply(
      params,
      batch["input_ids"],
      token_type_ids=batch["token_type_ids"],
      attention_mask=batch["attention_mask"],
  )
  np.testing.assert_allclose(
      np.asarray(finetuning.classify(classifier, params, batch)),
      np.asarray(jax.nn.log_softmax(out["logits"])),
      atol=1e-6,
  )


def test_complete_fills_only_the_positions_asked_and_never_with_special_tokens(model_and_params):
  lm, _, params, _ = model_and_params
  batch = _batch(seed=4)
  ids, mask = batch["input_ids"], batch["attention_mask"]
  text = (mask > 0) & (ids >= 9)
  given = text & (np.cumsum(text, 1) <= 2)
  drawn = np.asarray(
      jax.jit(lambda k: finetuning.complete(lm, params, batch, given, k))(jax.random.key(0))
  )
  np.testing.assert_array_equal(drawn[~(text & ~given)], ids[~(text & ~given)])
  assert np.all(drawn[text & ~given] >= 9)
  with pytest.raises(ValueError, match="temperature"):
    finetuning.complete(lm, params, batch, given, jax.random.key(0), temperature=0.0)


def test_warmup_linear_lr_is_hf_get_linear_schedule_with_warmup():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  for warmup, total in ((0, 50), (12, 50), (120, 100)):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-5)
    schedule = transformers.get_linear_schedule_with_warmup(opt, warmup, total)
    want = []
    for _ in range(total + 3):
      want.append(opt.param_groups[0]["lr"])
      opt.step()
      schedule.step()
    got = [
        float(optimizers.warmup_linear_lr(s, peak=3e-5, warmup_steps=warmup, num_steps=total))
        for s in range(total + 3)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_adamw_direction_times_the_rate_is_optax_adamw():
  params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  grads = [jax.tree.map(lambda p, i=i: jnp.sin(p + i) * 3.0, params) for i in range(4)]
  for clip in (None, 1.0):
    ref = optax.adamw(1e-2, weight_decay=0.1)
    if clip:
      ref = optax.chain(optax.clip_by_global_norm(clip), ref)
    ours = optimizers.adamw_direction(weight_decay=0.1, grad_clip=clip)
    p_ref, s_ref, p_ours, s_ours = params, ref.init(params), params, ours.init(params)
    for g in grads:
      u, s_ref = ref.update(g, s_ref, p_ref)
      p_ref = optax.apply_updates(p_ref, u)
      d, s_ours = ours.update(g, s_ours, p_ours)
      p_ours = jax.tree.map(lambda p, x: p - 1e-2 * x, p_ours, d)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p_ref, p_ours)


def _with(batch, **fields):
  return dict(batch, **fields)


_BATCH = _batch()


@pytest.mark.parametrize(
    "loss, batch, match",
    [
        # Before: ValueError "Cannot broadcast to shape with fewer dimensions: arr_shape=(4, 1,
        # 16) shape=(4, 16)".
        (
            "permutation",
            _with(_BATCH, labels=_BATCH["labels"][:, None]),
            r"permutation_loss: batch\['labels'\] must be int \[B\]",
        ),
        # Before: ValueError "not enough values to unpack (expected 2, got 1)".
        (
            "permutation",
            {k: v[0] for k, v in _BATCH.items()},
            r"permutation_loss: batch\['input_ids'\] must be int \[B, L\]",
        ),
        # Before: TypeError "and got incompatible shapes for broadcasting: (4, 9), (4, 10)".
        (
            "permutation",
            _with(_BATCH, attention_mask=_BATCH["attention_mask"][:, 1:]),
            r"permutation_loss: batch\['input_ids'\], batch\['token_type_ids'\] and",
        ),
        # Before: ValueError "Incompatible shapes for broadcasting: shapes=[(3, 1), (4, 1)]".
        (
            "classification",
            _with(_BATCH, labels=_BATCH["labels"][:3]),
            r"classification_loss: batch\['labels'\] must be int \[B\], one label per row",
        ),
        # Before: ValueError "indices and arr must have the same number of dimensions; 3 vs. 2".
        (
            "biglearn",
            _with(_BATCH, labels=_BATCH["labels"][:, None]),
            r"classification_loss: batch\['labels'\] must be int \[B\]",
        ),
    ],
)
def test_wrong_batch_shapes_fail_at_the_entry_point_with_a_clear_message(
    model_and_params, loss, batch, match
):
  lm, classifier, params, label_embedding = model_and_params
  key = jax.random.key(0)
  call = {
      "permutation": lambda: finetuning.permutation_loss(
          lm, params, batch, key, label_embedding=label_embedding
      ),
      "classification": lambda: finetuning.classification_loss(classifier, params, batch, key),
      "biglearn": lambda: jax.jit(
          lambda p: finetuning.biglearn_loss(
              classifier, lm, p, batch, key, beta=0.5, label_embedding=label_embedding
          )
      )(params),
  }[loss]
  with pytest.raises(AssertionError, match=match):
    call()


def test_wrong_label_embedding_and_plm_task_shapes_fail_with_a_clear_message(model_and_params):
  lm, _, params, label_embedding = model_and_params
  # Before: ValueError "Incompatible types for broadcasting: input type=float32[4] and requested
  # type=float32[4,16]".
  with pytest.raises(AssertionError, match=r"label_embedding must be \[C, D\]"):
    finetuning.permutation_loss(
        lm, params, _BATCH, jax.random.key(0), label_embedding=label_embedding[0]
    )
  ids, mask = _BATCH["input_ids"], _BATCH["attention_mask"]
  # Before: TypeError "and got incompatible shapes for broadcasting: (4, 9), (4, 10)".
  with pytest.raises(AssertionError, match=r"plm_tasks: input_ids and attention_mask must have"):
    finetuning.plm_tasks(jax.random.key(0), ids, mask[:, 1:], with_label=True)
  # Before: ValueError "not enough values to unpack (expected 2, got 1)".
  with pytest.raises(AssertionError, match=r"plm_tasks: input_ids must be int \[B, L\]"):
    finetuning.plm_tasks(jax.random.key(0), ids[0], mask[0], with_label=True)
