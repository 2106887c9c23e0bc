"""The two-stream permutation transformer: masks that really block, and a direct computation.

The reference below recomputes both streams in numpy from the *definitions* (who may see whom
for an order and a target set), gathering the visible keys position by position instead of
reading perm_mask, so it checks the masks and the attention code at once.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import permutation
from bigjax import tasks
from bigjax.evaluation.chunked import by_value
from bigjax.models.two_stream import TwoStreamTransformer
from conftest import rbg_key

L, V, B = 7, 11, 3


def _model(depth=2, dtype=jnp.float64):
  return TwoStreamTransformer(
      vocab_size=V,
      num_segments=2,
      max_length=L + 2,
      width=16,
      depth=depth,
      num_heads=2,
      dtype=dtype,
  )


def _init(model, seed=0):
  """Parameters with non-trivial biases and LayerNorm parameters, so the reference checks them
  too (in one compiled program: op by op it compiled about 200 small ones)."""
  return _jit_init(model)(rbg_key(seed), rbg_key(seed + 1))


@by_value
def _jit_init(model):
  """_init's program for `model`, built once per model in a process (the tests share models)."""

  @jax.jit
  def init(key, noise_key):
    tokens = jnp.zeros((B, L), jnp.int32)
    params = model.init(key, tokens, jnp.zeros_like(tokens), jnp.zeros((B, L, L), bool))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(noise_key, len(leaves))
    leaves = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)

  return init


def _inputs(seed, target_prob=0.6):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, V, (B, L)).astype(np.int32)
  segments = (rng.random((B, L)) < 0.3).astype(np.int32)
  ranks = np.stack([rng.permutation(L) for _ in range(B)]).astype(np.int32)
  target = rng.random((B, L)) < target_prob
  target[np.arange(B), ranks.argmax(1)] = True  # at least one target per row
  return tokens, segments, ranks, target


def _visible(ranks, target, b, i, *, stream):
  """Positions i may attend to, from the definitions: context sees context; a target sees the
  context and the targets before it; the content stream also sees itself, the query stream
  never does."""
  seen = []
  for j in range(L):
    if j == i:
      ok = stream == "content"
    elif not target[b, j]:
      ok = True
    else:
      ok = bool(target[b, i]) and ranks[b, j] < ranks[b, i]
    if ok:
      seen.append(j)
  return seen


def _layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _reference(params, tokens, segments, ranks, target, depth):
  p = jax.tree.map(np.asarray, params)["params"]
  gelu = lambda x: np.asarray(jax.nn.gelu(x))
  out_logits = np.zeros((B, L, V))
  out_content = np.zeros((B, L, 16))
  for b in range(B):
    pos = p["position_embedding"][:L]
    h = np.concatenate(
        [
            p["start_slot"][None],
            p["token_embed"]["embedding"][tokens[b]]
            + p["segment_embed"]["embedding"][segments[b]]
            + pos,
        ]
    )
    g = p["query_embedding"][None] + pos
    for d in range(depth):
      blk = p[f"block_{d}"]
      a = blk["attn"]
      proj = lambda x, name: np.einsum("d,dhk->hk", x, a[name]["kernel"]) + a[name]["bias"]
      hn = _layer_norm(h, blk["ln_attn"])
      gn = _layer_norm(g, blk["ln_attn"])
      keys = np.stack([proj(x, "key") for x in hn])  # [L+1, H, Dh]
      values = np.stack([proj(x, "value") for x in hn])

      def attend(x, slots):
        q = proj(x, "query")  # [H, Dh]
        logits = np.einsum("hk,shk->hs", q, keys[slots]) / np.sqrt(q.shape[-1])
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        mixed = np.einsum("hs,shk->hk", w, values[slots])
        return np.einsum("hk,hkd->d", mixed, a["out"]["kernel"]) + a["out"]["bias"]

      new_h = [h[0] + attend(hn[0], [0])]  # the start slot sees itself
      for i in range(L):
        slots = [0] + [j + 1 for j in _visible(ranks, target, b, i, stream="content")]
        new_h.append(h[i + 1] + attend(hn[i + 1], slots))
      new_g = [
          g[i] + attend(gn[i], [0] + [j + 1 for j in _visible(ranks, target, b, i, stream="query")])
          for i in range(L)
      ]
      h, g = np.stack(new_h), np.stack(new_g)
      mlp = lambda x: x + (
          gelu(_layer_norm(x, blk["ln_mlp"]) @ blk["mlp_in"]["kernel"] + blk["mlp_in"]["bias"])
          @ blk["mlp_out"]["kernel"]
          + blk["mlp_out"]["bias"]
      )
      h, g = mlp(h), mlp(g)
    out_content[b] = _layer_norm(h[1:], p["ln_final"])
    out_logits[b] = _layer_norm(g, p["ln_final"]) @ p["head"]["kernel"] + p["head"]["bias"]
  return out_logits, out_content


@pytest.mark.parametrize("target_prob", [1.0, 0.5, 0.0])
def test_matches_direct_computation(x64, target_prob):
  model = _model()
  params = _init(model)
  tokens, segments, ranks, target = _inputs(1, target_prob)
  perm_mask = permutation.permutation_mask(ranks, target)
  logits, out = jax.jit(model.apply)(params, tokens, segments, perm_mask)
  ref_logits, ref_content = _reference(params, tokens, segments, ranks, target, depth=2)
  np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(np.asarray(out["content"]), ref_content, rtol=1e-9, atol=1e-9)


def test_random_order_one_target_matches_direct_computation(x64):
  """Classification-like task: one target (last in the order), everything else context."""
  model = _model()
  params = _init(model, seed=3)
  tokens, segments, ranks, _ = _inputs(2)
  target = ranks == L - 1
  logits, _ = jax.jit(model.apply)(
      params, tokens, segments, permutation.permutation_mask(ranks, target)
  )
  ref_logits, _ = _reference(params, tokens, segments, ranks, target, depth=2)
  rows = np.arange(B)
  t = ranks.argmax(1)
  np.testing.assert_allclose(np.asarray(logits)[rows, t], ref_logits[rows, t], rtol=1e-9, atol=1e-9)


def _changes(model, params, tokens, segments, perm_mask):
  """dq, dc [B, J, I]: how much the query logits / content state at position i of row b move
  when token j of row b changes (all L perturbations in one batched call)."""
  n = tokens.shape[0]
  bumped = np.repeat(tokens[:, None], L + 1, axis=1)  # [B, L+1, L]
  for j in range(L):
    bumped[:, j + 1, j] = (bumped[:, j + 1, j] + 1) % V
  flat = lambda x: np.repeat(np.asarray(x)[:, None], L + 1, axis=1).reshape((-1,) + x.shape[1:])
  logits, out = jax.jit(model.apply)(params, bumped.reshape(-1, L), flat(segments), flat(perm_mask))
  logits = np.asarray(logits).reshape(n, L + 1, L, -1)
  content = np.asarray(out["content"]).reshape(n, L + 1, L, -1)
  dq = np.abs(logits[:, 1:] - logits[:, :1]).max(-1)
  dc = np.abs(content[:, 1:] - content[:, :1]).max(-1)
  return dq, dc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hidden_tokens_change_nothing(x64, seed):
  """For random orders and target sets: perturbing a token j that position i may not see
  leaves the query output at i unchanged, and the content state at i too (i != j); a target's
  query output does not depend on its own token; a visible token does matter."""
  model = _model(depth=3)
  params = _init(model, seed)
  tokens, segments, ranks, target = _inputs(seed + 10)
  perm_mask = np.asarray(permutation.permutation_mask(ranks, target))
  dq, dc = _changes(model, params, tokens, segments, perm_mask)
  blocked = perm_mask.transpose(0, 2, 1)  # [B, J, I]
  eye = np.eye(L, dtype=bool)
  assert np.all(dq[blocked] == 0.0)
  assert np.all(dc[blocked & ~eye] == 0.0)
  assert np.all(np.diagonal(dq, axis1=1, axis2=2)[target] == 0.0)
  assert np.any(dq[~blocked & ~eye] > 1e-6)


def test_bigjax_tasks_are_one_code_path(x64):
  """Any (S, T) of bigjax.tasks through task_permutation_mask: the targets' outputs depend on
  x_S and earlier targets only; positions outside S u T influence nothing."""
  model = _model()
  params = _init(model, seed=5)
  tokens, segments, _, _ = _inputs(7)
  source, target = tasks.biglearn(
      rbg_key(0), B, L, source_alpha=2.0, source_beta=2.0, target_alpha=1.0, target_beta=1.0
  )
  source, target = np.asarray(source), np.asarray(target)
  ranks, perm_mask = permutation.task_permutation_mask(rbg_key(1), source, target)
  ranks, perm_mask = np.asarray(ranks), np.asarray(perm_mask)
  dq, _ = _changes(model, params, tokens, segments, perm_mask)
  for b in range(B):
    assert np.all(ranks[b][source[b]] < ranks[b][target[b]].min(initial=L))
    for j in range(L):
      if not (source[b, j] or target[b, j]):
        assert np.all(dq[b, j][target[b]] == 0.0), (b, j)
      if target[b, j]:  # a target does not move itself or the targets before it
        not_after = target[b] & (ranks[b] <= ranks[b, j])
        assert np.all(dq[b, j][not_after] == 0.0), (b, j)
      if source[b, j]:  # ... but every target reads the source
        assert np.all(dq[b, j][target[b]] > 1e-8), (b, j)


def test_identity_order_all_targets_is_a_causal_lm(x64):
  model = _model()
  params = _init(model, seed=2)
  tokens, segments, _, _ = _inputs(3)
  ranks = np.tile(np.arange(L), (B, 1))
  perm_mask = np.asarray(permutation.permutation_mask(ranks, np.ones((B, L), bool)))
  np.testing.assert_array_equal(perm_mask[0], np.triu(np.ones((L, L), bool)))
  dq, _ = _changes(model, params, tokens, segments, perm_mask)
  for j in range(L):
    assert np.all(dq[:, j, : j + 1] == 0.0)  # positions up to j never see token j
    assert np.all(dq[:, j, j + 1 :] > 1e-8)  # every later position does


def test_first_position_with_nothing_visible_is_finite():
  """Joint generation's first token sees nothing but the start slot: finite logits that do
  not depend on any token."""
  model = _model(dtype=jnp.float32)
  params = _init(model)
  tokens, segments, _, _ = _inputs(4)
  ranks = np.tile(np.arange(L), (B, 1))
  perm_mask = permutation.permutation_mask(ranks, np.ones((B, L), bool))
  apply = jax.jit(model.apply)  # one wrapper: each new jax.jit traces the model again
  logits, _ = apply(params, tokens, segments, perm_mask)
  other, _ = apply(params, (tokens + 1) % V, segments, perm_mask)
  assert np.all(np.isfinite(np.asarray(logits)))
  np.testing.assert_array_equal(np.asarray(logits)[:, 0], np.asarray(other)[:, 0])


def test_shapes_determinism_and_dropout():
  model = TwoStreamTransformer(
      vocab_size=V, num_segments=2, max_length=L, width=16, depth=2, num_heads=4, dropout=0.5
  )
  tokens, segments, ranks, target = _inputs(5)
  perm_mask = permutation.permutation_mask(ranks, target)
  params = model.init(rbg_key(0), tokens, segments, perm_mask)
  again = model.init(rbg_key(0), tokens, segments, perm_mask)
  chex.assert_trees_all_equal(params, again)
  logits, out = jax.jit(model.apply)(params, tokens, segments, perm_mask)
  assert logits.shape == (B, L, V) and logits.dtype == jnp.float32
  assert out["content"].shape == out["query"].shape == (B, L, 16)
  a, _ = model.apply(params, tokens, segments, perm_mask, train=True, rngs={"dropout": rbg_key(1)})
  b, _ = model.apply(params, tokens, segments, perm_mask, train=True, rngs={"dropout": rbg_key(2)})
  assert not np.allclose(np.asarray(a), np.asarray(b))
  # parameter count: embeddings + 2 blocks + final norm + head
  d, h = 16, 4 * 16
  block = 4 * (d * d + d) + 2 * 2 * d + (d * h + h) + (h * d + d)
  expected = V * d + 2 * d + L * d + d + d + 2 * block + 2 * d + (d * V + V)
  assert sum(x.size for x in jax.tree.leaves(params)) == expected


def test_bad_inputs_give_clear_errors():
  model = _model(dtype=jnp.float32)
  params = _init(model)
  tokens, segments, ranks, target = _inputs(6)
  perm_mask = permutation.permutation_mask(ranks, target)
  with pytest.raises(ValueError, match=r"token id 11 is outside the vocabulary \[0, 11\)"):
    model.apply(params, np.where(tokens == tokens[0, 0], V, tokens), segments, perm_mask)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    model.apply(params, -np.ones_like(tokens), segments, perm_mask)
  with pytest.raises(ValueError, match="segment ids must be in"):
    model.apply(params, tokens, segments + 2, perm_mask)
  with pytest.raises(ValueError, match=r"perm_mask must be \[B, L, L\]"):
    model.apply(params, tokens, segments, np.asarray(perm_mask)[:, :-1])
  with pytest.raises(TypeError, match="integer ids"):
    model.apply(params, tokens.astype(np.float32), segments, perm_mask)
  with pytest.raises(ValueError, match="exceed the model's max_length"):
    long = np.zeros((B, L + 3), np.int32)
    model.apply(params, long, long, np.zeros((B, L + 3, L + 3), bool))
