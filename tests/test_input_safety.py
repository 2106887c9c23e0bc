"""Bad inputs get clear errors naming the file/field and the fix (issue 27): the mixtures'
(item 12; good ones unchanged, the checks out of traced code), and the fine-tuning setup's
pretraining vocabulary (item 6), corpus encoding and model vocabulary (item 11)."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bigjax.data import tokenizer as xtok
from bigjax.mixtures import gmm
from bigjax.training import checkpoint as ckpt_lib
from experiments import finetune_setup as setup


def _two_components():
  return gmm.create(np.array([[0.0, 0.0], [3.0, 1.0]]), np.stack([np.eye(2), 2 * np.eye(2)]))


def test_create_refuses_an_upper_triangular_scale_tril():
  upper = np.array([[[1.0, 0.5], [0.0, 1.0]]])  # was silently read as the identity
  with pytest.raises(ValueError, match=r"above the diagonal at \(0, 0, 1\).*swapaxes"):
    gmm.create(np.zeros((1, 2)), scale_tril=upper)
  g = gmm.create(np.zeros((1, 2)), scale_tril=np.swapaxes(upper, -1, -2))
  np.testing.assert_array_equal(g.scale_tril, np.swapaxes(upper, -1, -2))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_create_refuses_non_finite_scale_tril(bad):
  with pytest.raises(ValueError, match=r"scale_tril contains NaN or inf at \(0, 1, 0\)"):
    gmm.create(np.zeros((1, 2)), scale_tril=np.array([[[1.0, 0.0], [bad, 1.0]]]))


def test_scale_tril_checks_stay_out_of_jit():
  tril = np.array([[[1.0, 0.0], [0.5, 2.0]]])
  eager = gmm.create(np.zeros((1, 2)), scale_tril=tril)
  jitted = jax.jit(lambda t: gmm.create(jnp.zeros((1, 2)), scale_tril=t))(tril)
  np.testing.assert_array_equal(eager.scale_tril, jitted.scale_tril)


@pytest.mark.parametrize("covariances", [1.0, None])
def test_create_refuses_zero_dimensions(covariances):
  kw = dict(scale_tril=np.zeros((2, 0, 0))) if covariances is None else {}
  with pytest.raises(ValueError, match=r"D = 0 dimensions.*D >= 1"):
    gmm.create(np.zeros((2, 0)), covariances, **kw)


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e200])
def test_conditional_refuses_non_finite_values(value):
  with pytest.raises(ValueError, match=r"values contains NaN or inf at \(0,\)"):
    gmm.conditional(_two_components(), [0], [value])


def test_conditional_refuses_values_beyond_every_component():
  # Finite in float32, but its squared distance overflows: every evidence term is -inf.
  with pytest.raises(ValueError, match="so far from every component"):
    gmm.conditional(_two_components(), [0], [1e30])


def test_conditional_checks_do_not_change_good_results_or_jit():
  g = _two_components()
  eager = gmm.conditional(g, [0], [1.5])
  jitted = jax.jit(gmm.conditional, static_argnums=1)(g, (0,), jnp.array([1.5]))
  for a, b in zip(eager, jitted):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert np.all(np.isfinite(eager.log_weights))
  nan_in_jit = jax.jit(gmm.conditional, static_argnums=1)(g, (0,), jnp.array([np.nan]))
  assert np.all(np.isnan(nan_in_jit.log_weights))  # traced: unchecked, as documented


# ----------------------------------------------------------------------------- fine-tuning inputs

needs_tokenizer = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sentencepiece", "transformers")),
    reason="needs sentencepiece and transformers",
)

_WORDS = "the a cat dog bird fish tree river stone house runs sits sees small large red old".split()


def _corpus(path, seed=0, lines=300):
  rng = np.random.default_rng(seed)
  text = "\n".join(" ".join(rng.choice(_WORDS, rng.integers(3, 10))) + "." for _ in range(lines))
  path.write_text(text + "\n", encoding="utf-8")
  return str(path)


def _pretrain_config(corpus, vocab_size):
  return ml_collections.ConfigDict(dict(data=dict(corpus=corpus, vocab_size=vocab_size)))


@needs_tokenizer
def test_pretraining_never_reuses_a_leftover_vocabulary(tmp_path, monkeypatch):
  """Issue 27, item 6: a failed start's WORKDIR/model/spiece.model (here 30 pieces) was reused
  whatever the corpus or vocab_size (the config said 40)."""
  corpus = _corpus(tmp_path / "corpus.txt")
  workdir = tmp_path / "run"
  xtok.train_sentencepiece(corpus, str(workdir / "model"), vocab_size=30)  # the leftover
  model_dir = setup.pretraining_tokenizer(_pretrain_config(corpus, 40), str(workdir))
  assert len(xtok.load_tokenizer(model_dir)) == 40
  assert not [n for n in os.listdir(workdir) if n != "model"]  # no scratch left behind
  trained = (workdir / "model" / "spiece.model").read_bytes()

  def no_training(*args, **kwargs):
    raise AssertionError("retrained a vocabulary that matches its record")

  monkeypatch.setattr(xtok, "train_sentencepiece", no_training)
  assert setup.pretraining_tokenizer(_pretrain_config(corpus, 40), str(workdir)) == model_dir
  assert (workdir / "model" / "spiece.model").read_bytes() == trained
  monkeypatch.undo()
  _corpus(tmp_path / "corpus.txt", seed=1)  # the same path, another corpus; still no checkpoint
  setup.pretraining_tokenizer(_pretrain_config(corpus, 40), str(workdir))
  assert (workdir / "model" / "spiece.model").read_bytes() != trained


@needs_tokenizer
def test_a_pretrained_run_refuses_another_vocabulary(tmp_path):
  corpus = _corpus(tmp_path / "corpus.txt")
  workdir = tmp_path / "run"
  setup.pretraining_tokenizer(_pretrain_config(corpus, 40), str(workdir))
  os.makedirs(workdir / "checkpoints" / "12")  # the run trained on that vocabulary
  with pytest.raises(ckpt_lib.SignatureMismatchError, match="pretrained with the vocabulary"):
    setup.pretraining_tokenizer(_pretrain_config(corpus, 44), str(workdir))
  assert len(xtok.load_tokenizer(str(workdir / "model"))) == 40


@needs_tokenizer
def test_a_non_utf8_corpus_is_named_with_its_line(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_bytes(b"the cat sits.\nthe dog runs.\nna\xefve caf\xe9.\n")
  with pytest.raises(ValueError, match=r"corpus.txt: line 3 is not UTF-8.*data.corpus"):
    setup.pretraining_tokenizer(_pretrain_config(str(corpus), 40), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "model")


@needs_tokenizer
def test_a_model_with_fewer_rows_than_the_tokenizer_has_pieces_is_refused(tmp_path):
  """Issue 27, item 11: was caught only as a NaN loss at step 1."""
  model_dir = tmp_path / "xlnet"
  xtok.train_sentencepiece(_corpus(tmp_path / "corpus.txt"), str(model_dir), vocab_size=40)
  config = dict(model_type="xlnet", vocab_size=40, d_model=16, n_layer=1, n_head=2, d_inner=32)
  (model_dir / "config.json").write_text(json.dumps(config))
  run = ml_collections.ConfigDict(dict(model_dir=str(model_dir)))
  assert setup.hf_config_of(run)["vocab_size"] == 40
  (model_dir / "config.json").write_text(json.dumps({**config, "vocab_size": 30}))
  with pytest.raises(
      ValueError,
      match=r"config.json: vocab_size=30 is smaller than the "
      r"tokenizer's 40 pieces .*token ids 30..39",
  ):
    setup.hf_config_of(run)


# ----------------------------------------------------------------------------- plm_mnist


class _Trained(Exception):
  pass


def test_the_nested_quantiser_trains_on_the_runs_digits(tmp_path, monkeypatch):
  """Issue 27: with --config.data.source=X.npz the nested quantiser still trained on the bundled
  digits, the .npz's held-out rows among them."""
  from configs import plm_mnist as plm_config
  from experiments import plm_setup, plm_train, vq_mnist

  seen = {}

  def record(vq_config, directory, **kwargs):
    seen.update(vq_config.data.to_dict(), directory=directory)
    raise _Trained

  monkeypatch.setattr(vq_mnist, "train", record)
  config = plm_config.get_config("smoke")
  config.data.source = str(tmp_path / "digits.npz")
  config.data.train_split, config.data.test_split = "test", "train"
  with pytest.raises(_Trained):
    plm_train.prepare_quantiser(config, str(tmp_path / "run"), progress=False)
  assert (seen["source"], seen["train_split"], seen["test_split"]) == (
      config.data.source,
      "test",
      "train",
  )
  assert config.vq.data.source == "bundled"  # the caller's config is left alone
  default = plm_config.get_config("smoke")
  assert plm_setup.with_run_data(default) is default  # matching data: nothing changes


def test_a_shared_quantiser_of_other_digits_is_refused(tmp_path):
  from configs import plm_mnist as plm_config
  from experiments import plm_setup

  config = plm_config.get_config("smoke")
  config.vq_dir = str(tmp_path / "vq")
  config.data.source = str(tmp_path / "digits.npz")
  with pytest.raises(ValueError, match=r"trained on data \{'source': 'bundled'"):
    plm_setup.check_shared_quantiser(config, plm_config.get_config("smoke").vq)
  plm_setup.check_shared_quantiser(config, plm_setup.with_run_data(config).vq)
