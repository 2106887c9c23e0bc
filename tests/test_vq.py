"""Tests of bigjax.models.vq (the vector quantiser) and experiments/vq_mnist.py (smoke variant).

The math (nearest codes, straight-through gradients, EMA updates, restarts, usage) is checked
against numpy brute force and hand-computed values; the trainer is run once per module and the
other tests load, resume or copy that run.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from bigjax.data import mnist
from bigjax.models import vq
from configs import vq_mnist as vq_config
from experiments import vq_mnist
from experiments import vq_setup

from conftest import rbg_key as _key

# The smoke variant reaches test MSE 0.256 (in [-1, 1]) with 31 of its 32 codes in use (measured
# on 2 CPU cores); a blank (all -1) reconstruction has MSE 0.452 on the bundled test digits.
SMOKE_MAX_MSE = 0.40
SMOKE_MIN_FRACTION_USED = 0.5


@pytest.fixture(scope="module")
def tiny():
  """(encoder, decoder, params, codebook vectors [8, 4]) of an untrained tiny quantiser."""
  encoder, decoder = vq.VQEncoder(widths=(4, 8), code_dim=4), vq.VQDecoder(
      widths=(4, 8), code_dim=4
  )
  x = jnp.zeros((2, 28, 28))
  params = dict(encoder=encoder.init(_key(0), x))
  params["decoder"] = decoder.init(_key(1), encoder.apply(params["encoder"], x))
  return encoder, decoder, params, vq.init_codebook(_key(2), 8, 4).vectors


@pytest.fixture(scope="module")
def test_digits():
  return mnist.load("bundled", split="test")[0]


# ----------------------------------------------------------------------------------------------
# Models.


def test_encoder_and_decoder_shapes():
  x = jnp.linspace(-1, 1, 3 * 28 * 28).reshape(3, 28, 28)
  for widths, side in (((8, 16), 7), ((8,), 14)):
    encoder, decoder = vq.VQEncoder(widths=widths, code_dim=5), vq.VQDecoder(
        widths=widths, code_dim=5
    )
    enc_params = encoder.init(_key(0), x)
    z = encoder.apply(enc_params, x)
    assert z.shape == (3, side, side, 5) and z.dtype == jnp.float32
    assert vq.grid_size(widths) == side
    dec_params = decoder.init(_key(1), z)
    out = decoder.apply(dec_params, 10.0 * z)
    assert out.shape == (3, 28, 28)
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
  with pytest.raises(ValueError, match="cannot be halved 3 times"):
    vq.VQEncoder(widths=(4, 8, 16)).init(_key(0), x)
  with pytest.raises(ValueError, match="drop the channel axis"):
    vq.VQEncoder().init(_key(0), x[..., None])
  with pytest.raises(ValueError, match="code_dim=16"):
    vq.VQDecoder().init(_key(0), jnp.zeros((1, 7, 7, 5)))


def test_decoder_clip_has_an_identity_gradient():
  decoder = vq.VQDecoder(widths=(4,), code_dim=2)
  z = jax.random.normal(_key(3), (1, 14, 14, 2))
  params = decoder.init(_key(4), z)
  raw = jax.tree.map(lambda p: 100.0 * p, params)  # outputs far outside [-1, 1]
  out = decoder.apply(raw, z)
  assert float(jnp.abs(out).max()) == 1.0
  grads = jax.grad(lambda p: decoder.apply(p, z).sum())(raw)
  assert float(jnp.abs(grads["params"]["ConvTranspose_0"]["bias"]).sum()) == pytest.approx(
      28 * 28, rel=1e-6
  )  # d/d bias of sum(output) is the number of output pixels


# ----------------------------------------------------------------------------------------------
# quantize, ema_update, codebook_usage.


def test_quantize_picks_the_nearest_code():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
  vectors = rng.standard_normal((11, 6)).astype(np.float32)
  z_q, indices = jax.jit(vq.quantize)(z, vectors)
  expected = np.argmin(((z[..., None, :] - vectors) ** 2).sum(-1), axis=-1)
  assert indices.dtype == jnp.int32 and indices.shape == (2, 3, 5)
  np.testing.assert_array_equal(indices, expected)
  np.testing.assert_allclose(z_q, vectors[expected], atol=1e-6)


def test_quantize_straight_through_gradient_is_the_identity():
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.standard_normal((4, 3, 3, 2)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((4, 3, 3, 2)), jnp.float32)
  vectors = jnp.asarray(rng.standard_normal((5, 2)), jnp.float32)
  grad = jax.jit(jax.grad(lambda z: jnp.sum(w * vq.quantize(z, vectors)[0])))(z)
  np.testing.assert_allclose(grad, w, rtol=1e-6)


def _hand_codebook():
  vectors = jnp.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
  return vq.Codebook(vectors, jnp.ones(3), vectors)


# Three outputs: two assigned to code 0, one to code 1, none to code 2.
_Z = jnp.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
_INDICES = jnp.array([0, 0, 1], jnp.int32)


def test_ema_update_with_decay_zero_moves_codes_to_their_means():
  update = jax.jit(
      lambda cb, z, i: vq.ema_update(cb, z, i, decay=0.0, rng=_key(0), dead_code_threshold=0.0)
  )
  new = update(_hand_codebook(), _Z, _INDICES)
  np.testing.assert_allclose(new.counts, [2.0, 1.0, 0.0])
  np.testing.assert_allclose(new.sums, [[4.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
  np.testing.assert_allclose(new.vectors[:2], [[2.0, 0.0], [0.0, 2.0]], rtol=1e-4)


def test_ema_update_with_decay_half_matches_hand_values():
  update = jax.jit(
      lambda cb, z, i, eps: vq.ema_update(
          cb, z, i, decay=0.5, rng=_key(0), dead_code_threshold=0.0, epsilon=eps
      )
  )
  # counts 0.5 [1, 1, 1] + 0.5 [2, 1, 0] = [1.5, 1, 0.5]; sums 0.5 vectors + 0.5 batch sums.
  new = update(_hand_codebook(), _Z, _INDICES, 1e-5)
  np.testing.assert_allclose(new.counts, [1.5, 1.0, 0.5])
  np.testing.assert_allclose(new.sums, [[2.0, 0.0], [0.5, 1.5], [2.5, 2.5]])
  np.testing.assert_allclose(new.vectors, [[4 / 3, 0.0], [0.5, 1.5], [5.0, 5.0]], rtol=1e-4)
  # Laplace smoothing with epsilon 1: N~ = (N + 1) / (3 + 3) * 3 = [1.25, 1, 0.75].
  smoothed = update(_hand_codebook(), _Z, _INDICES, 1.0)
  np.testing.assert_allclose(
      smoothed.vectors, [[2 / 1.25, 0.0], [0.5, 1.5], [2.5 / 0.75, 2.5 / 0.75]], rtol=1e-6
  )


def test_dead_codes_are_restarted_from_the_batch():
  update = jax.jit(
      lambda cb, z, i, key: vq.ema_update(cb, z, i, decay=0.5, rng=key, dead_code_threshold=0.75)
  )
  restarted = set()
  for seed in range(6):
    new = update(_hand_codebook(), _Z, _INDICES, _key(seed))
    # Code 2 (EMA count 0.5 < 0.75) becomes one of the batch's outputs, with count 1.
    row = np.asarray(new.vectors[2])
    assert any(np.array_equal(row, z) for z in np.asarray(_Z)), row
    restarted.add(tuple(row))
    np.testing.assert_allclose(new.counts, [1.5, 1.0, 1.0])
    np.testing.assert_array_equal(new.sums[2], new.vectors[2])
    # The live codes keep their EMA values.
    np.testing.assert_allclose(new.vectors[:2], [[4 / 3, 0.0], [0.5, 1.5]], rtol=1e-4)
  assert len(restarted) > 1  # drawn with rng, not always the same row


def test_codebook_usage_of_known_indices():
  usage = jax.jit(vq.codebook_usage, static_argnums=1)
  half = usage(jnp.array([[0, 0], [1, 1]]), 4)
  assert float(half["fraction_used"]) == 0.5 and int(half["num_used"]) == 2
  assert float(half["perplexity"]) == pytest.approx(2.0, rel=1e-6)
  full = usage(jnp.arange(4), 4)
  assert float(full["fraction_used"]) == 1.0
  assert float(full["perplexity"]) == pytest.approx(4.0, rel=1e-6)
  one = vq.codebook_usage(np.zeros(10, np.int32), 8)  # numpy input works too
  assert float(one["perplexity"]) == pytest.approx(1.0) and float(one["fraction_used"]) == 0.125
  # Frequencies (3/4, 1/4): exp(-(3/4 log 3/4 + 1/4 log 1/4)).
  skewed = usage(jnp.array([2, 2, 2, 5]), 8)
  assert float(skewed["perplexity"]) == pytest.approx(
      np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))), rel=1e-6
  )


def test_codebook_from_samples_uses_distinct_encoder_outputs():
  z = jnp.arange(2 * 3 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 3, 2)
  codebook = vq.codebook_from_samples(_key(0), z, 10)
  rows = {tuple(r) for r in np.asarray(z).reshape(-1, 2)}
  assert codebook.vectors.shape == (10, 2)
  assert len({tuple(v) for v in np.asarray(codebook.vectors)}) == 10
  assert all(tuple(v) in rows for v in np.asarray(codebook.vectors))
  np.testing.assert_array_equal(codebook.counts, np.ones(10))
  with pytest.raises(ValueError, match="at least num_codes=19"):
    vq.codebook_from_samples(_key(0), z, 19)


# ----------------------------------------------------------------------------------------------
# encode / decode.


def test_encode_and_decode_shapes_dtypes_and_chunking(tiny, test_digits):
  encoder, decoder, params, vectors = tiny
  images = test_digits[:37]
  tokens = vq.encode(encoder, params, vectors, images, batch_size=16)
  assert tokens.dtype == np.int32 and tokens.shape == (37, 7, 7)
  assert tokens.min() >= 0 and tokens.max() < 8
  np.testing.assert_array_equal(tokens, vq.encode(encoder, params, vectors, images))
  decoded = vq.decode(decoder, params, vectors, tokens, batch_size=16)
  assert decoded.dtype == np.uint8 and decoded.shape == (37, 28, 28)
  np.testing.assert_array_equal(decoded, vq.decode(decoder, params, vectors, tokens))
  assert vq.encode(encoder, params, vectors, images[:0]).shape == (0, 7, 7)
  assert vq.decode(decoder, params, vectors, tokens[:0]).shape == (0, 28, 28)


def test_encode_rejects_bad_images(tiny, test_digits):
  encoder, _, params, vectors = tiny
  images = test_digits[:4]
  with pytest.raises(TypeError, match="uint8.*from_unit_range"):
    vq.encode(encoder, params, vectors, mnist.to_unit_range(images))
  with pytest.raises(ValueError, match=r"\[N, 28, 28\].*drop the channel axis"):
    vq.encode(encoder, params, vectors, images[..., None])
  with pytest.raises(ValueError, match=r"\[N, 28, 28\], got \(4, 64, 64\)"):
    vq.encode(encoder, params, vectors, mnist.resize(images, 64))
  with pytest.raises(ValueError, match=r"codebook_vectors must be \[K, code_dim=4\]"):
    vq.encode(encoder, params, vectors[:, :3], images)
  with pytest.raises(ValueError, match="'encoder'"):
    vq.encode(encoder, params["encoder"], vectors, images)
  with pytest.raises(ValueError, match="batch_size"):
    vq.encode(encoder, params, vectors, images, batch_size=0)


def test_decode_rejects_bad_tokens(tiny):
  _, decoder, params, vectors = tiny
  tokens = np.zeros((3, 7, 7), np.int32)
  bad = tokens.copy()
  bad[1, 2, 3] = 8
  with pytest.raises(ValueError, match=r"in \[0, 8\).*got 8 at index \(1, 2, 3\)"):
    vq.decode(decoder, params, vectors, bad)
  bad[1, 2, 3] = -1
  with pytest.raises(ValueError, match=r"in \[0, 8\).*got -1"):
    vq.decode(decoder, params, vectors, bad)
  with pytest.raises(ValueError, match=r"\[N, 7, 7\].*reshape\(-1, 7, 7\)"):
    vq.decode(decoder, params, vectors, tokens.reshape(3, 49))
  with pytest.raises(ValueError, match=r"\[N, 7, 7\], got \(3, 14, 14\)"):
    vq.decode(decoder, params, vectors, np.zeros((3, 14, 14), np.int32))
  with pytest.raises(TypeError, match="integer tokens"):
    vq.decode(decoder, params, vectors, tokens.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# The trainer (smoke variant).


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(workdir, summary) of one smoke-variant training run."""
  workdir = str(tmp_path_factory.mktemp("vq") / "smoke")
  summary = vq_mnist.train(vq_config.get_config("smoke"), workdir, progress=False)
  return workdir, summary


def _copy(trained, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(trained[0], workdir)
  return workdir


def test_smoke_training_writes_its_outputs(trained):
  workdir, summary = trained
  assert summary["test_mse"] <= SMOKE_MAX_MSE, summary
  assert summary["test_fraction_used"] >= SMOKE_MIN_FRACTION_USED, summary
  assert summary["test_mse_01"] == pytest.approx(summary["test_mse"] / 4)
  assert 1.0 <= summary["test_perplexity"] <= 32
  assert summary["steps"] == 60 and summary["resumed_from"] is None
  assert summary["num_test"] == 1000 and summary["num_train"] == 7000
  assert summary["grid_size"] == 7 and summary["num_codes"] == 32
  with open(os.path.join(workdir, "vq.json")) as f:
    assert json.load(f) == summary
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [20, 30, 40, 60]
  with open(os.path.join(workdir, "reconstructions.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_load_roundtrip_reproduces_the_test_mse(trained, test_digits):
  workdir, summary = trained
  encoder, decoder, params, vectors, info = vq_setup.load(workdir)
  assert info == summary and vectors.shape == (32, 16)
  tokens = vq.encode(encoder, params, vectors, test_digits)
  assert tokens.shape == (1000, 7, 7) and tokens.dtype == np.int32
  decoded = vq.decode(decoder, params, vectors, tokens)
  assert decoded.shape == (1000, 28, 28) and decoded.dtype == np.uint8
  error = (decoded.astype(np.float64) - test_digits) / 127.5
  assert np.mean(error**2) == pytest.approx(summary["test_mse"], rel=1e-12)
  usage = vq.codebook_usage(tokens, 32)
  assert float(usage["fraction_used"]) == summary["test_fraction_used"]


def test_a_finished_run_is_only_evaluated_again(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  summary = conftest.rerun_finished(vq_mnist.train, vq_config.get_config("smoke"), workdir)
  assert summary["resumed_from"] == 60 and summary["steps"] == 60
  assert summary["test_mse"] == trained[1]["test_mse"]
  assert summary["test_perplexity"] == trained[1]["test_perplexity"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == ["30", "60"]


def test_load_without_a_quantiser_says_how_to_train_one(trained, tmp_path):
  command = "python -m experiments.vq_mnist --config configs/vq_mnist.py:cpu"
  with pytest.raises(FileNotFoundError, match="does not exist.*" + command):
    vq_setup.load(str(tmp_path / "nothing_here"))
  os.makedirs(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="has no config.json.*" + command):
    vq_setup.load(str(tmp_path / "empty"))
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, "vq.json"))  # as during an unfinished run
  with pytest.raises(FileNotFoundError, match="not finished training.*vq_mnist.py:smoke"):
    vq_setup.load(workdir)


def test_config_variants_and_validation():
  for variant in vq_config.VARIANTS:
    vq_setup.validate_config(vq_config.get_config(variant))
  assert vq_config.get_config("paper").data.source == "auto"
  with pytest.raises(ValueError, match="unknown variant"):
    vq_config.get_config("big")
  config = vq_config.get_config("smoke")
  config.codebook.dead_code_threshold = 2.0
  with pytest.raises(ValueError, match="dead_code_threshold"):
    vq_setup.validate_config(config)
  config = vq_config.get_config("smoke")
  config.model.widths = (4, 8, 16)
  with pytest.raises(ValueError, match="cannot be halved 3 times"):
    vq_setup.validate_config(config)
  config = vq_config.get_config("smoke")
  config.model.num_codes = 32 * 49 + 1
  with pytest.raises(ValueError, match="num_codes"):
    vq_setup.validate_config(config)
