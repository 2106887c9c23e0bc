"""BigLearn-GAN at scale (issue 5): L2 attention, the conv head, concatenated noise, bfloat16
mixed precision, host prefetch, and a CelebA smoke run on fake files."""

import json
import os
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from bigjax import losses
from bigjax.training import checkpoint
from bigjax.training import prefetch
from bigjax.models import Discriminator, Generator
from bigjax.models.transformer import MaskedSelfAttention
from configs import gan_celeba
from configs import gan_mnist
from experiments import biglearn_gan
from experiments import gan_setup

_B, _L, _P, _Z = 2, 16, 16, 4


def _random_params(model, seed, *args):
  """Random parameters of `model.init`'s shapes (no zero bias or token anywhere)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(leaf.dtype)
    return jnp.asarray(1 + 0.1 * noise if path[-1].key == "scale" else 0.2 * noise)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  patches = jnp.asarray(rng.uniform(-1, 1, (_B, _L, _P)), jnp.float32)
  source = np.zeros((_B, _L), bool)
  source[0, [1, 6, 11]] = True
  source[1, [0, 5, 9, 10]] = True
  target = ~source
  target[0, [2, 3]] = False
  z = jnp.asarray(rng.standard_normal((_B, _Z)), jnp.float32)
  return patches, source, target, z


# ----------------------------------------------------------------------------------------------
# L2 attention (Kim et al. 2021).


def test_l2_attention_matches_numpy_reference():
  """Logits -||q_i - q_j||^2 / sqrt(d) with one shared query/key projection, per head, over the
  allowed keys only."""
  b, length, dim, heads = 2, 5, 8, 2
  x = jax.random.normal(jax.random.key(3), (b, length, dim))
  key_mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], bool)
  attn = MaskedSelfAttention(heads, kind="l2")
  params = _random_params(attn, 4, x, key_mask)
  got = np.asarray(jax.jit(attn.apply)(params, x, key_mask))
  p = jax.tree.map(np.asarray, params["params"])
  assert set(p) == {"qv", "out"}
  qv = np.einsum("bld,dthe->blthe", np.asarray(x, np.float64), p["qv"]["kernel"]) + p["qv"]["bias"]
  q, v = qv[:, :, 0], qv[:, :, 1]
  dist = ((q[:, :, None] - q[:, None, :]) ** 2).sum(-1).transpose(0, 3, 1, 2)  # [B, H, Q, K]
  logits = np.where(key_mask[:, None, None, :], -dist / np.sqrt(dim // heads), -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", weights, v)
  want = np.einsum("bqhd,hde->bqe", out, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_unknown_attention_kind():
  attn = MaskedSelfAttention(2, kind="flash")
  with pytest.raises(ValueError, match="unknown attention kind 'flash'"):
    attn.init(jax.random.key(0), jnp.zeros((1, 3, 4)))


def _l2_disc():
  return Discriminator(_L, _P, dim=16, depth=2, num_heads=2, mlp_ratio=2.0, attention="l2")


def test_l2_discriminator_ignores_positions_outside_source_and_target():
  disc = _l2_disc()
  patches, source, target, _ = _inputs()
  params = _random_params(disc, 1, patches, source, target)
  apply = jax.jit(disc.apply)
  base = np.asarray(apply(params, patches, source, target))
  outside = ~(source | target)
  changed = jnp.where(outside[..., None], patches + 5.0, patches)
  np.testing.assert_array_equal(np.asarray(apply(params, changed, source, target)), base)
  inside = jnp.where(target[..., None], patches * 0.5, patches)
  assert np.all(np.asarray(apply(params, inside, source, target)) != base)


def test_r1_second_order_gradient_through_l2_attention():
  """The parameter gradient of the R1 penalty (grad of grad through L2 attention) is finite and
  matches central finite differences of the penalty along a random parameter direction."""
  disc = _l2_disc()
  patches, source, target, _ = _inputs()
  params = _random_params(disc, 2, patches, source, target)
  params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  disc = disc.clone(dtype=jnp.float64)
  with jax.enable_x64(True):
    x = jnp.asarray(patches, jnp.float64)

    def penalty(p):
      r1, _ = losses.r1_penalty(lambda y: disc.apply(p, y, source, target), x, weight=10.0)
      return jnp.sum(r1)

    grads = jax.jit(jax.grad(penalty))(params64)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(g).all() for g in leaves)
    rng = np.random.default_rng(0)
    direction = jax.tree.map(lambda a: rng.standard_normal(a.shape), params64)
    analytic = sum(
        float(np.sum(np.asarray(g) * d)) for g, d in zip(leaves, jax.tree.leaves(direction))
    )
    eps = 1e-5
    f = jax.jit(penalty)
    plus = f(jax.tree.map(lambda a, d: a + eps * d, params64, direction))
    minus = f(jax.tree.map(lambda a, d: a - eps * d, params64, direction))
    numeric = float(plus - minus) / (2 * eps)
  assert analytic == pytest.approx(numeric, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Generator head and noise merging.


def _gen(**kw):
  base = dict(
      encoder_dim=16,
      encoder_depth=1,
      encoder_heads=2,
      decoder_dim=16,
      decoder_depth=2,
      decoder_heads=2,
      noise_dim=_Z,
      noise_mlp_depth=2,
      noise_mlp_width=8,
      mlp_ratio=2.0,
  )
  base.update(kw)
  return Generator(_L, _P, **base)


@pytest.mark.parametrize(
    "kw",
    [
        dict(conv_head_layers=3, conv_head_width=4),
        dict(noise_every_layer=True, noise_merge="concat"),
        dict(
            conv_head_layers=2,
            conv_head_width=4,
            channels=1,
            noise_every_layer=True,
            noise_merge="concat",
        ),
    ],
)
def test_generator_variants_keep_the_contract(kw):
  """Source patches copied exactly, every non-source patch depends on z, and inputs outside S
  change nothing."""
  gen = _gen(**kw)
  patches, source, _, z = _inputs()
  params = _random_params(gen, 3, patches, source, z)
  apply = jax.jit(gen.apply)
  out = np.asarray(apply(params, patches, source, z))
  assert out.shape == (_B, _L, _P) and np.all(np.abs(out) <= 1)
  np.testing.assert_array_equal(out[source], np.asarray(patches)[source])
  out_z = np.asarray(apply(params, patches, source, z + 1.0))
  assert np.all(np.any(out_z != out, axis=-1)[~source])
  moved = jnp.where(source[..., None], patches, -patches)
  np.testing.assert_array_equal(np.asarray(apply(params, moved, source, z)), out)


def test_conv_head_starts_as_the_plain_head():
  """The last convolution starts at zero, so a freshly initialised conv head adds nothing: the
  generator equals the one without it on the shared parameters."""
  gen = _gen(conv_head_layers=3, conv_head_width=4)
  plain = _gen()
  patches, source, _, z = _inputs()
  params = jax.jit(gen.init)(jax.random.key(5), patches, source, z)
  assert params["params"]["conv_head_0"]["kernel"].shape == (3, 3, 1, 4)
  assert params["params"]["conv_head_2"]["kernel"].shape == (3, 3, 4, 1)
  shared = {"params": {k: v for k, v in params["params"].items() if not k.startswith("conv")}}
  np.testing.assert_allclose(
      np.asarray(gen.apply(params, patches, source, z)),
      np.asarray(plain.apply(shared, patches, source, z)),
      atol=1e-6,
  )


def test_conv_head_needs_a_square_image_geometry():
  gen = Generator(
      12,
      _P,
      encoder_dim=8,
      encoder_depth=1,
      encoder_heads=1,
      decoder_dim=8,
      decoder_depth=1,
      decoder_heads=1,
      noise_dim=_Z,
      noise_mlp_depth=1,
      noise_mlp_width=8,
      conv_head_layers=2,
  )
  with pytest.raises(ValueError, match="square image"):
    jax.eval_shape(
        gen.init,
        jax.random.key(0),
        jnp.zeros((1, 12, _P)),
        jnp.zeros((1, 12), bool),
        jnp.zeros((1, _Z)),
    )


def test_concat_merge_has_a_projection_per_decoder_block():
  gen = _gen(noise_every_layer=True, noise_merge="concat")
  patches, source, _, z = _inputs()
  shapes = jax.eval_shape(gen.init, jax.random.key(0), patches, source, z)["params"]["decoder"]
  assert shapes["merge_0"]["kernel"].shape == (32, 16)
  assert shapes["merge_1"]["kernel"].shape == (32, 16)


# ----------------------------------------------------------------------------------------------
# bfloat16 mixed precision.


def _tiny_config(dtype):
  c = gan_mnist.get_config("smoke")
  c.model.dtype = dtype
  return c


# Slow: XLA's CPU backend compiles the bfloat16 GAN step (smoke shapes already) for minutes on 2
# cores, and a smaller model would not exercise the mixed-precision paths this test is about.
@pytest.mark.slow
def test_bfloat16_step_is_finite_and_close_to_float32():
  """One iteration from the same state in float32 and in bfloat16: parameters and optimiser
  states stay float32, losses are finite and within bfloat16 rounding of the float32 ones, and
  the updated parameters agree closely."""
  images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 28, 28)), jnp.float32)
  results = {}
  # rbg keys: the step's random draws compile several times faster than threefry's.
  with jax.default_prng_impl("rbg"):
    init = jax.jit(lambda key: gan_setup.init_state(_tiny_config("float32"), key))
    state = init(jax.random.key(0))
    for dtype in ("float32", "bfloat16"):
      step = jax.jit(biglearn_gan.make_train_step(_tiny_config(dtype)))
      results[dtype] = step(state, images)
  new32, m32 = results["float32"]
  new16, m16 = results["bfloat16"]
  assert all(
      leaf.dtype == jnp.float32
      for leaf in jax.tree.leaves(new16.g_params)
      + jax.tree.leaves(new16.d_params)
      + jax.tree.leaves(new16.g_opt_state)
      if jnp.issubdtype(leaf.dtype, jnp.floating)
  )
  for key in ("d_loss", "g_loss", "r1", "real_logit", "fake_logit"):
    assert np.isfinite(m16[key]), key
    assert float(m16[key]) == pytest.approx(float(m32[key]), rel=0.05, abs=0.02), key
  # AdamW's first step moves every parameter by about lr in the sign of its gradient; compare
  # the updates (new - old) of all parameters: most must agree in sign with float32's.
  for name in ("g_params", "d_params"):
    old = np.concatenate([np.ravel(a) for a in jax.tree.leaves(getattr(state, name))])
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(getattr(new32, name))]) - old
    b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(getattr(new16, name))]) - old
    moved = np.abs(a) > 1e-6
    assert np.mean(np.sign(a[moved]) == np.sign(b[moved])) > 0.9, name


def test_bad_dtype_and_attention_are_config_errors():
  c = _tiny_config("float16")
  with pytest.raises(ValueError, match=r"model.dtype='float16'; choose one of"):
    gan_setup.validate_config(c)
  c = _tiny_config("float32")
  c.model.disc_attention = "l3"
  with pytest.raises(ValueError, match="model.disc_attention='l3'"):
    gan_setup.validate_config(c)


def test_signature_ignores_dtype_and_later_fields_at_their_defaults(tmp_path):
  """A float32 checkpoint restores into a bfloat16 run; a checkpoint written before a field
  existed matches the field at the value that reproduces the earlier models (older runs still
  restore), and only there."""
  c32, c16 = _tiny_config("float32"), _tiny_config("bfloat16")
  assert gan_setup.model_signature(c32) == gan_setup.model_signature(c16)
  old = {k: v for k, v in gan_setup.model_signature(c32).items() if k != "conv_head_layers"}
  ckpt = checkpoint.Checkpointer(str(tmp_path), signature=old)
  ckpt.save(1, {"x": jnp.zeros(2)})
  ckpt.close()
  check = lambda c: checkpoint.Checkpointer(
      str(tmp_path),
      signature=gan_setup.model_signature(c),
      signature_defaults=gan_setup.SIGNATURE_DEFAULTS,
  ).check_signature(1)
  check(c32)  # absent from the old checkpoint, at its default
  c32.model.conv_head_layers = 3
  assert gan_setup.model_signature(c32)["conv_head_layers"] == 3
  with pytest.raises(checkpoint.SignatureMismatchError, match="conv_head_layers"):
    check(c32)


# ----------------------------------------------------------------------------------------------
# Host prefetch.


def test_prefetcher_returns_every_step_in_order_computed_ahead():
  made = []
  lock = threading.Lock()

  def make(step):
    with lock:
      made.append(step)
    return step * 10

  with prefetch.Prefetcher(make, stop=6, size=2) as p:
    assert p.get(0) == 0
    time.sleep(0.05)
    with lock:
      assert {1, 2} <= set(made)  # the next two are under way while step 0 is consumed
    assert [p.get(s) for s in range(1, 6)] == [10, 20, 30, 40, 50]
  assert sorted(made) == list(range(6))  # nothing past stop, nothing twice


def test_prefetcher_raises_the_error_of_its_step_and_size_zero_is_inline():
  def make(step):
    if step == 2:
      raise OSError("disk gone")
    return threading.current_thread().name

  with prefetch.Prefetcher(make, stop=5, size=2) as p:
    assert p.get(0).startswith("bigjax-prefetch")
    p.get(1)
    with pytest.raises(OSError, match="disk gone"):
      p.get(2)
  with prefetch.Prefetcher(make, stop=5, size=0) as p:
    assert p.get(0) == threading.current_thread().name
  with pytest.raises(ValueError, match="prefetch size must be >= 0"):
    prefetch.Prefetcher(make, stop=5, size=-1)


# ----------------------------------------------------------------------------------------------
# CelebA: the configuration and a smoke run on fake files in the official layout.


def _fake_celeba(root, n=8):
  images = root / "img_align_celeba"
  images.mkdir(parents=True)
  rng = np.random.default_rng(0)
  lines = []
  for i in range(n):
    name = f"{i + 1:06d}.jpg"
    pixels = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / name, quality=95)
    lines.append(f"{name} {0 if i < n - 2 else 2}")
  (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
  return root


def test_celeba_paper_config_has_table_2_and_the_stabilisers():
  c = gan_celeba.get_config("paper")
  assert (c.data.dataset, c.data.image_size, c.model.patch_size, c.batch_size) == (
      "celeba",
      120,
      10,
      128,
  )
  assert (c.model.encoder_depth, c.model.encoder_heads, c.model.encoder_dim) == (6, 8, 256)
  assert (c.model.decoder_depth, c.model.decoder_heads, c.model.decoder_dim) == (6, 8, 512)
  assert (c.model.disc_depth, c.model.disc_heads, c.model.disc_dim) == (6, 8, 256)
  assert c.loss.r1_weight == 50 and c.optim.eps == 1e-5 and c.optim.learning_rate == 1e-4
  assert (c.optim.b1, c.optim.b2) == (0.1, 0.999)
  assert c.model.disc_attention == "l2" and c.model.conv_head_layers == 3
  assert c.model.noise_every_layer and c.model.noise_merge == "concat"
  gen, disc = gan_setup.build_models(c)
  assert (gen.num_patches, gen.patch_dim, gen.channels) == (144, 300, 3)
  assert disc.attention == "l2" and gen.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="data.source is empty"):
    gan_setup.validate_config(c)


def test_celeba_smoke_run_on_fake_files(tmp_path):
  root = _fake_celeba(tmp_path / "celeba")
  c = gan_celeba.get_config("smoke")
  c.data.source = str(root)
  summary = biglearn_gan.train_and_evaluate(c, str(tmp_path / "run"), progress=False)
  assert summary["step"] == 4 and summary["compilations"] == 1
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert len(rows) == 4 and all(np.isfinite(r["d_loss"]) and np.isfinite(r["r1"]) for r in rows)
  assert (tmp_path / "run" / "samples" / "step_0000004.png").exists()
  cached = os.listdir(root / "bigjax_cache")
  assert any(name.endswith(".npy") for name in cached)


def test_celeba_missing_directory_is_a_clear_error(tmp_path):
  c = gan_celeba.get_config("smoke")
  c.data.source = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    biglearn_gan.train_and_evaluate(c, str(tmp_path / "run"), progress=False)
