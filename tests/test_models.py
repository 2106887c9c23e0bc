"""Tests for bigjax.models: patches <-> images, and the BigLearn-GAN generator and discriminator
(shapes, which inputs can influence which outputs, parameter counts)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigjax import tasks
from bigjax.models import (
    Discriminator,
    Encoder,
    Generator,
    NoiseMapping,
    patch_masks_to_pixels,
    patchify,
    unpatchify,
)
from bigjax.models.transformer import MaskedSelfAttention
from conftest import rbg_key as _key

# ----------------------------------------------------------------------------------------------
# Patches.

_patchify = jax.jit(patchify, static_argnums=1)
_unpatchify = jax.jit(unpatchify, static_argnums=(1, 2))
_to_pixels = jax.jit(patch_masks_to_pixels, static_argnums=(1, 2))


@pytest.mark.parametrize(
    "shape, p", [((2, 28, 28), 7), ((2, 16, 12), 4), ((3, 16, 16, 3), 4), ((1, 8, 4, 2), 2)]
)
def test_patchify_round_trip(shape, p):
  """unpatchify(patchify(x)) == x exactly, for [B, H, W] and [B, H, W, C], square or not."""
  images = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  h, w = shape[1:3]
  c = shape[3] if len(shape) == 4 else 1
  patches = _patchify(jnp.asarray(images), p)
  assert patches.shape == (shape[0], (h // p) * (w // p), p * p * c)
  back = np.asarray(_unpatchify(patches, shape[1:], p))
  np.testing.assert_array_equal(back, images)


def test_patchify_raster_order():
  """Patch l covers rows (l // (W/p)) p .. and columns (l % (W/p)) p .., pixels inside a patch in
  (row, column, channel) order."""
  b, h, w, c, p = 2, 8, 12, 3, 4
  images = np.random.default_rng(1).normal(size=(b, h, w, c)).astype(np.float32)
  patches = np.asarray(_patchify(jnp.asarray(images), p))
  per_row = w // p
  for l in range(patches.shape[1]):
    r, col = (l // per_row) * p, (l % per_row) * p
    np.testing.assert_array_equal(patches[:, l], images[:, r : r + p, col : col + p].reshape(b, -1))
  # An image whose pixel value is its patch index gives constant patches 0, 1, 2, ...
  index = np.repeat(np.repeat(np.arange(6).reshape(2, 3), p, 0), p, 1)[None].astype(np.float32)
  np.testing.assert_array_equal(
      np.asarray(_patchify(jnp.asarray(index), p)),
      np.broadcast_to(np.arange(6)[None, :, None], (1, 6, p * p)),
  )


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: patchify(jnp.zeros((1, 28, 28)), 5), id="patchify"),
        pytest.param(lambda: patchify(jnp.zeros((1, 28, 30, 1)), 7), id="patchify-width"),
        pytest.param(lambda: unpatchify(jnp.zeros((1, 16, 49)), (28, 28), 6), id="unpatchify"),
        pytest.param(
            lambda: patch_masks_to_pixels(jnp.zeros((1, 16), bool), (28, 27), 7), id="pixels"
        ),
    ],
)
def test_patch_size_must_divide_the_image(call):
  """A patch size that does not divide the image raises a ValueError that says what to do."""
  with pytest.raises(ValueError, match=r"is not divisible by patch_size=\d+: choose a patch size"):
    call()


def test_patch_shape_errors():
  """Images of the wrong rank and patches that do not tile the image raise ValueError."""
  with pytest.raises(ValueError, match=r"images must be \[B, H, W\] or \[B, H, W, C\]"):
    patchify(jnp.zeros((28, 28)), 7)
  with pytest.raises(ValueError, match=r"do not tile an image of shape \(28, 28\)"):
    unpatchify(jnp.zeros((1, 15, 49)), (28, 28), 7)
  with pytest.raises(ValueError, match=r"expected \[B, 16, 147\]"):
    unpatchify(jnp.zeros((1, 16, 49)), (28, 28, 3), 7)


def test_patch_masks_to_pixels():
  """A True patch marks exactly the pixels that patchify puts in that patch."""
  mask = np.zeros((2, 16), bool)
  mask[0, [0, 5, 15]] = True
  mask[1, 7] = True
  pixels = np.asarray(_to_pixels(jnp.asarray(mask), (28, 28), 7))
  assert pixels.shape == (2, 28, 28) and pixels.dtype == np.bool_
  assert pixels.sum() == 4 * 49
  assert pixels[0, :7, :7].all() and pixels[0, 7:14, 7:14].all() and pixels[0, 21:, 21:].all()
  assert pixels[1, 7:14, 21:28].all()
  # Consistent with patchify: the pixel mask, patchified, is the patch mask on every pixel.
  np.testing.assert_array_equal(
      np.asarray(_patchify(jnp.asarray(pixels), 7)), np.repeat(mask[..., None], 49, axis=-1)
  )


# ----------------------------------------------------------------------------------------------
# Tiny models: L = 16 patches of 4x4 on 16x16 single-channel images.

_B, _L, _P, _Z = 3, 16, 16, 8

_GEN = Generator(
    _L,
    _P,
    encoder_dim=32,
    encoder_depth=1,
    encoder_heads=2,
    decoder_dim=48,
    decoder_depth=1,
    decoder_heads=2,
    noise_dim=_Z,
    noise_mlp_depth=2,
    noise_mlp_width=16,
    mlp_ratio=2.0,
)
_DISC = Discriminator(_L, _P, dim=32, depth=1, num_heads=2, mlp_ratio=2.0)

_gen_apply = jax.jit(_GEN.apply)
_gen_encode = jax.jit(functools.partial(_GEN.apply, method=Generator.encode))
_disc_apply = jax.jit(_DISC.apply)


_SOURCE = np.zeros((_B, _L), bool)
_TARGET = np.zeros((_B, _L), bool)
_SOURCE[0, [1, 6, 11]] = True
_TARGET[0, [0, 2, 3, 7, 8, 9, 12, 13, 14, 15]] = True
_SOURCE[1, [0, 5]] = True
_TARGET[1, [1, 2, 3, 4, 6, 7, 8, 9, 10]] = True
_SOURCE[2, [3, 4, 8, 9, 10, 14, 15]] = True
_TARGET[2, [0, 1, 2, 12]] = True


def _inputs():
  """Patches in [-1, 1] [B, L, P], fixed (S, T) masks (numpy; each row with positions in S, in T
  and outside both) and noise z [B, Z]."""
  rng = np.random.default_rng(0)
  patches = jnp.asarray(rng.uniform(-1.0, 1.0, (_B, _L, _P)), jnp.float32)
  z = jnp.asarray(rng.standard_normal((_B, _Z)), jnp.float32)
  return patches, _SOURCE.copy(), _TARGET.copy(), z


def _random_params(model, seed, *args):
  """Parameters of `model.init(key, *args)`'s shapes (via jax.eval_shape), filled with random
  values in numpy: LayerNorm scales 1 + N(0, 0.1^2), everything else N(0, 0.2^2), so no bias or
  token is zero. Compiling `init` would cost more than most tests below together."""
  shapes = jax.eval_shape(model.init, _key(0), *args)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(leaf.dtype)
    return jnp.asarray(1 + 0.1 * noise if path[-1].key == "scale" else 0.2 * noise)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.cache
def _gen_params():
  patches, source, _, z = _inputs()
  return _random_params(_GEN, 100, patches, source, z)


@functools.cache
def _disc_params():
  patches, source, target, _ = _inputs()
  return _random_params(_DISC, 101, patches, source, target)


def _some_source_and_non_source():
  """The fixed inputs, asserting that every row has positions in S, outside S, and outside
  S u T, with S and T disjoint."""
  patches, source, target, z = _inputs()
  assert source.any(-1).all() and (~source).any(-1).all()
  assert (~(source | target)).any(-1).all() and not (source & target).any()
  return patches, source, target, z


def _assert_changed_everywhere(a, b, where):
  """a and b differ in at least one coordinate of every patch selected by `where` [B, L]."""
  differs = np.any(np.asarray(a) != np.asarray(b), axis=-1)
  assert np.all(differs[where]), differs


# ----------------------------------------------------------------------------------------------
# Generator.


def test_generator_output_shape_and_range():
  """[B, L, P] float32 patches in [-1, 1] (tanh head)."""
  patches, source, _, z = _some_source_and_non_source()
  out = np.asarray(_gen_apply(_gen_params(), patches, source, z))
  assert out.shape == (_B, _L, _P) and out.dtype == np.float32
  assert np.all(np.abs(out) <= 1.0) and np.all(np.isfinite(out))


@pytest.mark.parametrize("case", ["fixed", "biglearn", "empty"])
def test_generator_copies_source_patches(case):
  """out[S] == patches[S] exactly, for fixed masks, random biglearn masks and S empty (joint)."""
  patches, source, _, z = _some_source_and_non_source()
  if case == "empty":
    source = np.zeros_like(source)
  elif case == "biglearn":
    # Eager with a batch of 10000 and the first rows kept: the compiled Beta sampler of
    # test_tasks.py is reused when the files run together (a new compile costs seconds).
    source = np.asarray(tasks.biglearn(_key(3), 10000, _L)[0][:_B])
    assert source.any() and (~source).any()
  out = np.asarray(_gen_apply(_gen_params(), patches, source, z))
  np.testing.assert_array_equal(out[source], np.asarray(patches)[source])
  # The generated patches are not copies of the inputs.
  assert not np.any(np.all(out[~source] == np.asarray(patches)[~source], axis=-1))


def test_generator_is_deterministic_and_depends_on_noise():
  """Fixed (params, z): the same output; another z: different patches at every non-source
  position, the same source patches."""
  patches, source, _, z = _some_source_and_non_source()
  params = _gen_params()
  out = np.asarray(_gen_apply(params, patches, source, z))
  np.testing.assert_array_equal(np.asarray(_gen_apply(params, patches, source, z)), out)
  other = np.asarray(_gen_apply(params, patches, source, z + 1.0))
  _assert_changed_everywhere(out, other, ~source)
  np.testing.assert_array_equal(other[source], out[source])


def test_generator_ignores_non_source_inputs():
  """Perturbing every patch outside S changes neither the G-encoder codes nor the output (the
  non-source inputs are never read), and the codes are zero outside S."""
  patches, source, _, z = _some_source_and_non_source()
  params = _gen_params()
  noise = jax.random.normal(_key(5), patches.shape)
  moved = jnp.where(jnp.asarray(source)[..., None], patches, patches + 10.0 * noise)
  codes = np.asarray(_gen_encode(params, patches, source))
  assert codes.shape == (_B, _L, 32)
  np.testing.assert_array_equal(codes[~source], 0.0)
  assert np.all(np.any(codes[source] != 0, axis=-1))
  np.testing.assert_array_equal(np.asarray(_gen_encode(params, moved, source)), codes)
  np.testing.assert_array_equal(
      np.asarray(_gen_apply(params, moved, source, z)),
      np.asarray(_gen_apply(params, patches, source, z)),
  )


def test_generator_conditions_on_source_patches():
  """Changing one source patch of example 0 changes the codes of its source positions and every
  generated patch of example 0, and nothing in the other examples."""
  patches, source, _, z = _some_source_and_non_source()
  params = _gen_params()
  pos = int(np.argmax(source[0]))
  moved = patches.at[0, pos].add(0.5)
  out = np.asarray(_gen_apply(params, patches, source, z))
  out_moved = np.asarray(_gen_apply(params, moved, source, z))
  _assert_changed_everywhere(out[:1], out_moved[:1], ~source[:1])
  np.testing.assert_array_equal(out_moved[1:], out[1:])
  codes = np.asarray(_gen_encode(params, patches, source))
  codes_moved = np.asarray(_gen_encode(params, moved, source))
  _assert_changed_everywhere(codes[:1], codes_moved[:1], source[:1])


def test_generator_encoder_equals_encoder_on_the_source_tokens_alone():
  """The G-encoder codes at S equal the Encoder run on the |S| source tokens alone (as MAE
  gathers them): the non-source positions are masked out of attention, not merely zeroed."""
  patches, source, _, _ = _inputs()
  p = _gen_params()["params"]
  codes = np.asarray(_gen_encode(_gen_params(), patches, source))
  idx = np.flatnonzero(source[0])
  tokens = (
      patches[0, idx] @ p["patch_embed"]["kernel"]
      + p["patch_embed"]["bias"]
      + p["encoder_pos"][0, idx]
  )[None]
  encoder = Encoder(_GEN.encoder_depth, _GEN.encoder_heads, _GEN.mlp_ratio)
  alone = np.asarray(jax.jit(encoder.apply)({"params": p["encoder"]}, tokens))[0]
  np.testing.assert_allclose(codes[0, idx], alone, rtol=1e-5, atol=1e-5)


def test_generator_rejects_wrong_shapes():
  """Wrong L, P, rank, mask shape or noise size raise ValueError with the expected shapes."""
  patches, source, _, z = _inputs()
  params = _gen_params()
  with pytest.raises(
      ValueError, match=r"patches must be \[B, 16, 16\] for this generator, got " r"\(3, 15, 16\)"
  ):
    _gen_apply(params, patches[:, 1:], source[:, 1:], z)
  with pytest.raises(ValueError, match=r"patches must be \[B, 16, 16\]"):
    _gen_apply(params, patches[..., :8], source, z)
  with pytest.raises(ValueError, match=r"patches must be \[B, 16, 16\]"):
    _gen_encode(params, patches[0], source[0])
  with pytest.raises(ValueError, match=r"source_mask must be \[B, L\] = \(3, 16\), got \(3, 15\)"):
    _gen_apply(params, patches, source[:, 1:], z)
  with pytest.raises(ValueError, match=r"z must be \[B, noise_dim\] = \(3, 8\), got \(3, 9\)"):
    _gen_apply(params, patches, source, jnp.zeros((_B, _Z + 1)))


# ----------------------------------------------------------------------------------------------
# Discriminator.


def test_discriminator_logits_shape():
  """One finite float32 logit per example."""
  patches, source, target, _ = _inputs()
  logits = np.asarray(_disc_apply(_disc_params(), patches, source, target))
  assert logits.shape == (_B,) and logits.dtype == np.float32 and np.all(np.isfinite(logits))


def test_discriminator_ignores_positions_outside_source_and_target():
  """Perturbing every patch outside S u T leaves the logits exactly unchanged."""
  patches, source, target, _ = _inputs()
  outside = ~(source | target)
  assert outside.any()
  params = _disc_params()
  moved = jnp.where(jnp.asarray(outside)[..., None], patches + 7.0, patches)
  np.testing.assert_array_equal(
      np.asarray(_disc_apply(params, moved, source, target)),
      np.asarray(_disc_apply(params, patches, source, target)),
  )


@pytest.mark.parametrize("which", ["target", "source"])
def test_discriminator_reads_source_and_target_patches(which):
  """Perturbing one patch in T (or in S) of each example changes every logit."""
  patches, source, target, _ = _inputs()
  mask = target if which == "target" else source
  assert mask.any(-1).all()
  params = _disc_params()
  pos = np.argmax(mask, axis=-1)
  moved = patches.at[np.arange(_B), pos].add(0.3)
  logits = np.asarray(_disc_apply(params, patches, source, target))
  assert np.all(np.asarray(_disc_apply(params, moved, source, target)) != logits)


def test_discriminator_distinguishes_source_from_target():
  """Moving one position from T to S (same patches, same union S u T) changes the logit: the
  [M_s] and [M_t] tokens tell the roles apart."""
  patches, source, target, _ = _inputs()
  params = _disc_params()
  pos = np.argmax(target, axis=-1)
  source2, target2 = source.copy(), target.copy()
  source2[np.arange(_B), pos] = True
  target2[np.arange(_B), pos] = False
  keep = target2.any(-1)
  assert keep.any()
  logits = np.asarray(_disc_apply(params, patches, source, target))
  swapped = np.asarray(_disc_apply(params, patches, source2, target2))
  assert np.all(swapped != logits)
  # Swapping the whole roles (S <-> T) changes it too.
  assert np.all(np.asarray(_disc_apply(params, patches, target, source)) != logits)


def test_discriminator_examples_are_independent():
  """Changing example 0 (its patches and its masks) leaves the other logits exactly unchanged."""
  patches, source, target, _ = _inputs()
  params = _disc_params()
  logits = np.asarray(_disc_apply(params, patches, source, target))
  source2, target2 = source.copy(), target.copy()
  source2[0], target2[0] = False, True
  moved = np.asarray(_disc_apply(params, patches.at[0].add(1.0), source2, target2))
  assert moved[0] != logits[0]
  np.testing.assert_array_equal(moved[1:], logits[1:])


def test_discriminator_equals_encoder_on_the_visible_tokens_alone():
  """The logit equals CLS + the |S u T| visible tokens run through the encoder alone: positions
  outside S u T are masked out of attention, not merely zeroed."""
  patches, source, target, _ = _inputs()
  p = _disc_params()["params"]
  logits = np.asarray(_disc_apply(_disc_params(), patches, source, target))
  idx = np.flatnonzero(source[0] | target[0])
  tokens = (
      patches[0, idx] @ p["patch_embed"]["kernel"]
      + p["patch_embed"]["bias"]
      + p["pos"][0, idx]
      + source[0, idx, None] * p["source_token"]
      + target[0, idx, None] * p["target_token"]
  )
  tokens = jnp.concatenate([p["cls"][0], tokens])[None]
  encoder = Encoder(_DISC.depth, _DISC.num_heads, _DISC.mlp_ratio)
  h = jax.jit(encoder.apply)({"params": p["encoder"]}, tokens)[0, 0]
  alone = float(h @ p["head"]["kernel"][:, 0] + p["head"]["bias"][0])
  np.testing.assert_allclose(logits[0], alone, rtol=1e-5, atol=1e-5)


def test_discriminator_rejects_wrong_shapes():
  """Wrong patch or mask shapes raise ValueError."""
  patches, source, target, _ = _inputs()
  params = _disc_params()
  with pytest.raises(
      ValueError,
      match=r"patches must be \[B, 16, 16\] for this discriminator, " r"got \(3, 16, 15\)",
  ):
    _disc_apply(params, patches[..., 1:], source, target)
  with pytest.raises(
      ValueError, match=r"masks must be \[B, L\] = \(3, 16\), got \(3, 16\) and " r"\(2, 16\)"
  ):
    _disc_apply(params, patches, source, target[1:])


# ----------------------------------------------------------------------------------------------
# Masked attention against a numpy reference.


def test_masked_self_attention_matches_numpy_reference():
  """Softmax attention over the allowed keys only, per head; a masked key changes nothing."""
  b, length, dim, heads = 2, 5, 8, 2
  x = jax.random.normal(_key(7), (b, length, dim))
  key_mask = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], bool)
  attn = MaskedSelfAttention(heads)
  params = _random_params(attn, 8, x, key_mask)
  got = np.asarray(jax.jit(attn.apply)(params, x, key_mask))
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  xn = np.asarray(x, np.float64)
  qkv = np.einsum("bld,dthe->blthe", xn, p["qkv"]["kernel"]) + p["qkv"]["bias"]
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dim // heads)
  logits = np.where(key_mask[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", weights, v)
  want = np.einsum("bqhd,hde->bqe", out, p["out"]["kernel"]) + p["out"]["bias"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Parameter counts, by hand from the module definitions.


def _dense(n_in, n_out):
  return n_in * n_out + n_out


def _encoder_count(dim, depth, mlp_ratio):
  """Encoder: per block, qkv (D -> 3D) and out (D -> D) projections with biases, two LayerNorms,
  a D -> M -> D MLP; then a final LayerNorm."""
  hidden = int(mlp_ratio * dim)
  block = (
      _dense(dim, 3 * dim)
      + _dense(dim, dim)
      + 2 * 2 * dim
      + _dense(dim, hidden)
      + _dense(hidden, dim)
  )
  return depth * block + 2 * dim


def _generator_count(g):
  e, d, length = g.encoder_dim, g.decoder_dim, g.num_patches
  widths = [g.noise_dim] + [g.noise_mlp_width] * g.noise_mlp_depth
  noise = (
      sum(_dense(a, b) for a, b in zip(widths[:-1], widths[1:]))
      + _dense(widths[-1], length * d)
      + 2 * d
  )  # MLP, to_patches, LayerNorm
  return (
      _dense(g.patch_dim, e)
      + length * e
      + _encoder_count(e, g.encoder_depth, g.mlp_ratio)
      + _dense(e, d)
      + 2 * d
      + noise
      + length * d
      + _encoder_count(d, g.decoder_depth, g.mlp_ratio)
      + _dense(d, g.patch_dim)
  )


def _discriminator_count(m):
  d = m.dim
  return (
      _dense(m.patch_dim, d)
      + m.num_patches * d
      + 3 * d
      + _encoder_count(d, m.depth, m.mlp_ratio)
      + _dense(d, 1)
  )


def _count(params):
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))


def test_parameter_counts_of_tiny_models():
  """The initialised tiny models have exactly the hand-computed number of parameters."""
  # Generator: patch_embed 544 + encoder_pos 512 + G-encoder 8608 + bridge 1584 + [M], [M_n] 96
  # + noise MLP 144 + 272, to_patches 13056, LayerNorm 96 + decoder_pos 768 + G-decoder 19056
  # + head 784.
  assert _generator_count(_GEN) == 45_520
  # Discriminator: patch_embed 544 + pos 512 + [M_s], [M_t], CLS 96 + encoder 8608 + head 33.
  assert _discriminator_count(_DISC) == 9_793
  # The parameters `init` creates (traced by jax.eval_shape: the same tree, without compiling).
  assert _count(_gen_params()) == 45_520
  assert _count(_disc_params()) == 9_793


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(
            Generator(49, 49, encoder_depth=2, decoder_depth=3, noise_mlp_depth=3),
            id="generator-mnist",
        ),
        pytest.param(Generator(64, 192, noise_mlp_depth=0, mlp_ratio=3.0), id="generator-no-mlp"),
        pytest.param(Discriminator(64, 192, depth=2, mlp_ratio=2.5), id="discriminator"),
    ],
)
def test_parameter_counts_of_larger_models(model):
  """The same formulas for larger configurations (shapes only, via jax.eval_shape)."""
  length, p = model.num_patches, model.patch_dim
  x = jax.ShapeDtypeStruct((1, length, p), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)
  if isinstance(model, Generator):
    z = jax.ShapeDtypeStruct((1, model.noise_dim), jnp.float32)
    shapes = jax.eval_shape(model.init, _key(0), x, mask, z)
    want = _generator_count(model)
  else:
    shapes = jax.eval_shape(model.init, _key(0), x, mask, mask)
    want = _discriminator_count(model)
  assert _count(shapes) == want


def test_noise_mapping_and_encoder_shapes():
  """NoiseMapping: z [B, Z] -> [B, L, D]; Encoder keeps [B, L, D] (shapes only)."""
  z = jax.ShapeDtypeStruct((2, 5), jnp.float32)
  out = jax.eval_shape(
      lambda z: NoiseMapping(7, 12, depth=2, width=9).init_with_output(_key(0), z)[0], z
  )
  assert out.shape == (2, 7, 12)
  x = jax.ShapeDtypeStruct((2, 7, 12), jnp.float32)
  out = jax.eval_shape(lambda x: Encoder(2, 3).init_with_output(_key(0), x)[0], x)
  assert out.shape == (2, 7, 12)


# ----------------------------------------------------------------------------------------------
# Options beyond the paper's MNIST models.


def test_minibatch_std_discriminator_sees_identical_draws():
  """With minibatch_std_group=G the logit of example i depends on the other members of its
  group (i, i + B/G, ...) and on nothing outside S u T; a batch of identical examples gets a
  different logit from the same example among varied ones. B % G != 0 is refused."""
  disc = Discriminator(_L, _P, dim=32, depth=1, num_heads=2, mlp_ratio=2.0, minibatch_std_group=2)
  b = 4
  rng = np.random.default_rng(3)
  patches = jnp.asarray(rng.uniform(-1, 1, (b, _L, _P)), jnp.float32)
  source = jnp.zeros((b, _L), bool)
  target = jnp.ones((b, _L), bool).at[:, -1].set(False)
  params = _random_params(disc, 5, patches, source, target)
  apply = jax.jit(disc.apply)
  logits = np.asarray(apply(params, patches, source, target))
  # Example 0's group is {0, 2}: changing example 2 moves logit 0, changing example 1 does not.
  moved_2 = np.asarray(apply(params, patches.at[2, 0].add(0.5), source, target))
  moved_1 = np.asarray(apply(params, patches.at[1, 0].add(0.5), source, target))
  assert moved_2[0] != logits[0] and moved_1[0] == logits[0]
  outside = np.asarray(apply(params, patches.at[:, -1].add(3.0), source, target))
  np.testing.assert_array_equal(outside, logits)
  same = jnp.broadcast_to(patches[:1], patches.shape)
  assert np.asarray(apply(params, same, source, target))[0] != logits[0]
  with pytest.raises(ValueError, match="divisible by minibatch_std_group"):
    apply(params, patches[:3], source[:3], target[:3])


def test_noise_every_layer_keeps_the_contract():
  """noise_every_layer=True: same parameter shapes, source patches still copied, the noise
  still changes the non-source patches, and the output differs from the default wiring."""
  gen = Generator(
      _L,
      _P,
      encoder_dim=32,
      encoder_depth=1,
      encoder_heads=2,
      decoder_dim=48,
      decoder_depth=2,
      decoder_heads=2,
      noise_dim=_Z,
      noise_mlp_depth=2,
      noise_mlp_width=16,
      mlp_ratio=2.0,
      noise_every_layer=True,
  )
  base = gen.clone(noise_every_layer=False)
  patches, source, _, z = _inputs()
  params = _random_params(gen, 7, patches, source, z)
  assert jax.tree.map(
      jnp.shape, jax.eval_shape(base.init, _key(0), patches, source, z)
  ) == jax.tree.map(jnp.shape, params)
  out = np.asarray(jax.jit(gen.apply)(params, patches, source, z))
  np.testing.assert_array_equal(out[source], np.asarray(patches)[source])
  out_z = np.asarray(jax.jit(gen.apply)(params, patches, source, z + 1.0))
  assert np.all(np.any(out_z != out, axis=-1)[~source])
  assert not np.allclose(out, np.asarray(jax.jit(base.apply)(params, patches, source, z)))
