"""bigjax's Flax XLNet against transformers' PyTorch XLNet, output by output (paper App. E.2).

The reference models are built from `XLNetConfig` with random weights, every parameter perturbed
(so no bias is zero and no LayerNorm is the identity), and copied into Flax through
`xlnet_weights.PARAMETER_TABLE`. Each parity test is named by config and output and prints its
max |difference| (`pytest -rP tests/test_xlnet.py -k parity` shows them):

  tiny        2 layers, d_model 32, bi_data, clamp_len 5
  tiny_plain  xlnet-base-cased's settings at tiny size (no bi_data, no clamp)
  base        xlnet-base-cased's shapes (12 layers, 768, 12 heads, vocab 32,000), bi_data, clamp_len

Inputs: left padding, segments A (0), B (1) and `<cls>` (2) last; query stream with
bigjax.permutation's masks and target_mapping; float32 throughout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import permutation
from bigjax.models import xlnet
from bigjax.models import xlnet_weights
from conftest import rbg_key

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIGS = {
    "tiny": (
        dict(vocab_size=61, d_model=32, n_layer=2, n_head=4, d_inner=48, bi_data=True, clamp_len=5),
        dict(batch=4, length=11, num_predict=4),
    ),
    "tiny_plain": (
        dict(vocab_size=61, d_model=32, n_layer=2, n_head=4, d_inner=48),
        dict(batch=3, length=11, num_predict=4),
    ),
    "base": (
        dict(
            vocab_size=32000,
            d_model=768,
            n_layer=12,
            n_head=12,
            d_inner=3072,
            bi_data=True,
            clamp_len=5,
        ),
        dict(batch=2, length=12, num_predict=4),
    ),
}
NUM_LABELS = 3
OUTPUTS = (
    "content",
    "content_perm",
    "query",
    "lm_logits",
    "lm_logits_query",
    "cls_logits",
    "cls_logits_query",
    "input_grad",
)
# The perm-only content stream is checked on "tiny" alone (its mask path is the one the query
# forward's content stream takes), to keep compilation short.
CASES = [
    (name, out) for name in CONFIGS for out in OUTPUTS if out != "content_perm" or name == "tiny"
]


def hf_models(config: dict, seed: int = 0):
  """transformers' XLNetLMHeadModel and XLNetForSequenceClassification sharing one transformer,
  every parameter perturbed by 0.1 * N(0, 1); and their joint state dict (numpy)."""
  torch.manual_seed(seed)
  hf_config = transformers.XLNetConfig(**config, num_labels=NUM_LABELS)
  lm = transformers.XLNetLMHeadModel(hf_config).eval()
  cls = transformers.XLNetForSequenceClassification(hf_config).eval()
  cls.transformer = lm.transformer
  with torch.no_grad():
    for model in (lm, cls):
      for name, p in model.named_parameters():
        if model is lm or not name.startswith("transformer."):
          p.add_(0.1 * torch.randn_like(p))
  state = {k: v.numpy() for k, v in lm.state_dict().items()}
  state.update({k: v.numpy() for k, v in cls.state_dict().items()})
  return hf_config, lm, cls, state


def make_inputs(vocab_size, *, batch, length, num_predict, seed=0):
  """Left-padded pairs A <sep> B <sep> <cls> and a permutation-LM query set."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(9, vocab_size, (batch, length))
  attention_mask = np.ones((batch, length), np.int64)
  token_type_ids = np.zeros((batch, length), np.int64)
  for b in range(batch):
    pad = b % 3  # 0, 1 or 2 padding tokens on the left
    attention_mask[b, :pad] = 0
    ids[b, :pad] = 5
    split = pad + (length - pad) // 2
    token_type_ids[b, split:-1] = 1
    ids[b, [split - 1, length - 2, length - 1]] = (4, 4, 3)  # <sep> A, <sep> B, <cls>
  token_type_ids[:, -1] = 2
  ranks = np.stack([rng.permutation(length) for _ in range(batch)])
  targets = np.stack(
      [rng.choice(np.arange(2, length), num_predict, replace=False) for _ in range(batch)]
  )
  target_mask = np.zeros((batch, length), bool)
  target_mask[np.arange(batch)[:, None], targets] = True
  perm_mask = np.asarray(permutation.permutation_mask(ranks, target_mask), np.float32)
  target_mapping = np.zeros((batch, num_predict, length), np.float32)
  target_mapping[np.arange(batch)[:, None], np.arange(num_predict)[None], targets] = 1
  return dict(
      input_ids=ids,
      token_type_ids=token_type_ids,
      attention_mask=attention_mask,
      perm_mask=perm_mask,
      target_mapping=target_mapping,
  )


def _grad_weights(shapes, seed=1):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal(s).astype(np.float32) for s in shapes]


@functools.cache
def setup(name: str):
  """(bigjax model, its params, inputs, HF LM model, HF classifier, HF state dict) of a config."""
  config, sizes = CONFIGS[name]
  hf_config, lm, cls, state = hf_models(config)
  model = xlnet.XLNet(
      **xlnet_weights.model_kwargs(hf_config.to_dict(), lm_head=True, num_labels=NUM_LABELS)
  )
  params = xlnet_weights.state_dict_to_params(state, model)
  return model, params, make_inputs(config["vocab_size"], **sizes), lm, cls, state


@functools.cache
def parity(name: str) -> dict:
  """{output: (bigjax value, HF value)} for one config (computed once per session)."""
  model, params, x, lm, cls, state = setup(name)
  base = {k: x[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
  t = {k: torch.tensor(v) for k, v in x.items()}
  tb = {k: t[k] for k in base}
  perm_only = name == "tiny"
  with torch.no_grad():
    hf = dict(
        content=lm.transformer(**tb).last_hidden_state,
        query=lm.transformer(**t).last_hidden_state,
        lm_logits=lm(**tb).logits,
        lm_logits_query=lm(**t).logits,
        cls_logits=cls(**tb).logits,
        cls_logits_query=cls(**t).logits,
    )
    if perm_only:
      hf["content_perm"] = lm.transformer(**tb, perm_mask=t["perm_mask"]).last_hidden_state
  hf = {k: v.numpy() for k, v in hf.items()}
  # The gradient of sum(w1 * classifier logits) + sum(w2 * LM logits), both from the query
  # stream, w.r.t. the input embeddings: both streams, both heads and every mask on the path.
  w1, w2 = _grad_weights([hf["cls_logits_query"].shape, hf["lm_logits_query"].shape])
  embeds = state["transformer.word_embedding.weight"][x["input_ids"]]
  te = torch.tensor(embeds, requires_grad=True)
  tx = {k: v for k, v in t.items() if k != "input_ids"}
  loss = (cls(inputs_embeds=te, **tx).logits * torch.tensor(w1)).sum() + (
      lm(inputs_embeds=te, **tx).logits * torch.tensor(w2)
  ).sum()
  loss.backward()
  hf["input_grad"] = te.grad.numpy()

  @jax.jit
  def run(params, embeds, x):
    """Every output in one program (the query stream's from the gradient's forward pass)."""
    plain = model.apply(params, **{k: x[k] for k in base})

    def loss(e):
      out = model.apply(params, inputs_embeds=e, **{k: v for k, v in x.items() if k != "input_ids"})
      return jnp.sum(out["logits"] * w1) + jnp.sum(out["lm_logits"] * w2), out

    grad, query = jax.grad(loss, has_aux=True)(embeds)
    out = dict(
        content=plain["content"],
        query=query["query"],
        lm_logits=plain["lm_logits"],
        lm_logits_query=query["lm_logits"],
        cls_logits=plain["logits"],
        cls_logits_query=query["logits"],
        input_grad=grad,
    )
    if perm_only:
      out["content_perm"] = model.apply(
          params, **{k: x[k] for k in base}, perm_mask=x["perm_mask"]
      )["content"]
    return out

  ours = jax.tree.map(np.asarray, run(params, embeds, x))
  return {k: (ours[k], hf[k]) for k in hf}


@pytest.mark.parametrize("name, output", CASES)
def test_parity(name, output):
  ours, hf = parity(name)[output]
  assert ours.shape == hf.shape
  diff = float(np.max(np.abs(ours - hf)))
  if output == "input_grad":  # relative to the gradient's scale
    diff /= float(np.max(np.abs(hf)))
    print(f"{name:10s} {output:16s} max |diff| / max |grad| = {diff:.2e}")
  else:
    print(
        f"{name:10s} {output:16s} max |diff| = {diff:.2e}  (max |value| "
        f"{np.max(np.abs(hf)):.2f})"
    )
  assert diff <= 1e-4


def test_parameter_count_matches_hf():
  model, params, _, lm, cls, _ = setup("tiny")
  hf_count = sum(p.numel() for p in lm.parameters()) + sum(  # tied lm_loss.weight once
      p.numel() for n, p in cls.named_parameters() if not n.startswith("trans")
  )
  assert sum(x.size for x in jax.tree.leaves(params)) == hf_count


def test_rel_shift_is_the_relative_index():
  x = np.random.default_rng(0).standard_normal((2, 3, 5, 10)).astype(np.float32)
  out = np.asarray(xlnet.rel_shift(jnp.asarray(x), 5))
  i, j = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
  np.testing.assert_array_equal(out, x[:, :, i, 5 - i + j])


def test_masks_really_block():
  """Changing tokens hidden from a target leaves its query stream unchanged (its own token
  included); changing padding tokens leaves every real position unchanged."""
  model, params, _, _, _, _ = setup("tiny")
  x = make_inputs(61, batch=4, length=11, num_predict=4, seed=3)
  apply = jax.jit(lambda ids: model.apply(params, **dict(x, input_ids=ids)))
  out = apply(x["input_ids"])
  rng = np.random.default_rng(4)
  for b in range(4):
    for m in range(4):
      i = int(np.argmax(x["target_mapping"][b, m]))
      hidden = x["perm_mask"][b, i] > 0
      assert hidden[i]
      ids = x["input_ids"].copy()
      ids[b, hidden] = rng.integers(9, 61, int(hidden.sum()))
      moved = apply(ids)
      np.testing.assert_allclose(moved["query"][b, m], out["query"][b, m], atol=1e-6)
      visible = np.flatnonzero(~hidden & (x["attention_mask"][b] > 0))
      ids = x["input_ids"].copy()
      ids[b, visible[0]] = (ids[b, visible[0]] + 1 - 9) % 52 + 9
      assert np.abs(apply(ids)["query"][b, m] - out["query"][b, m]).max() > 1e-4
  pad = x["attention_mask"] == 0
  ids = np.where(pad, 7, x["input_ids"])
  content = apply(ids)["content"]
  np.testing.assert_allclose(np.asarray(content)[~pad], np.asarray(out["content"])[~pad], atol=1e-6)


def test_dropout_uses_the_given_rng():
  model, params, x, _, _, _ = setup("tiny")  # HF's dropout, 0.1
  run = jax.jit(lambda rng: model.apply(params, **x, train=True, rngs={"dropout": rng})["query"])
  a, b, c = (run(rbg_key(s)) for s in (0, 0, 1))
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 1e-3
  assert np.abs(a - parity("tiny")["query"][0]).max() > 1e-3  # against eval mode


def test_bfloat16_is_close_to_float32():
  model, params, x, _, _, _ = setup("tiny")
  bf16 = jax.jit(lambda x: model.clone(dtype=jnp.bfloat16).apply(params, **x))(x)
  f32 = parity("tiny")["lm_logits_query"][0]
  assert bf16["lm_logits"].dtype == jnp.float32 and bf16["query"].dtype == jnp.bfloat16
  assert np.abs(bf16["lm_logits"] - f32).max() < 0.05 * np.abs(f32).max()


def _bad(x, **changes):
  return dict(x, **changes)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda x: _bad(x, input_ids=np.where(x["input_ids"] == 3, 61, x["input_ids"])),
            "outside the vocabulary",
        ),
        (lambda x: _bad(x, input_ids=x["input_ids"].astype(np.float32)), "integer token ids"),
        (lambda x: _bad(x, token_type_ids=x["token_type_ids"][:, :-1]), "token_type_ids must be"),
        (
            lambda x: _bad(x, attention_mask=x["attention_mask"] * 2),
            "attention_mask must be boolean",
        ),
        (lambda x: _bad(x, perm_mask=x["perm_mask"][:, :-1]), "perm_mask must have shape"),
        (
            lambda x: _bad(x, target_mapping=x["target_mapping"][:, :, :-1]),
            "target_mapping must be",
        ),
        (lambda x: _bad(x, target_mapping=x["target_mapping"] * 0), "exactly one position"),
        (
            lambda x: _bad(x, perm_mask=x["perm_mask"] * (1 - np.eye(11, dtype=np.float32))),
            "attend to itself",
        ),
        (lambda x: _bad(x, perm_mask=None), "target_mapping without perm_mask"),
        (lambda x: {k: v[:3] for k, v in x.items()}, "batch size must be even"),
    ],
)
def test_bad_inputs_are_refused(change, message):
  model, params, x, _, _, _ = setup("tiny")
  with pytest.raises((ValueError, TypeError), match=message):
    model.apply(params, **change(x))


def test_unsupported_settings_are_refused():
  with pytest.raises(ValueError, match="attn_type='uni'"):
    xlnet_weights.model_kwargs(dict(attn_type="uni"))
  model = xlnet.XLNet(
      vocab_size=11, d_model=8, n_layer=1, n_head=2, d_inner=8, ff_activation="mish"
  )
  with pytest.raises(ValueError, match="ff_activation 'mish'"):
    model.init(jax.random.key(0), np.zeros((2, 3), np.int32))
