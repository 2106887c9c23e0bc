"""XLNet tokenisation on a SentencePiece model trained here, and GLUE / WordNet files in GLUE's
exact layouts written here (paper App. E.2). Nothing is downloaded and nothing outside the test's
own temporary directory is read."""

import os
import sys

import jax
import numpy as np
import pytest

from bigjax.data import glue
from bigjax.data import tokenizer as xtok

pytest.importorskip("sentencepiece")
pytest.importorskip("transformers")

WORDS = (
    "the a cat dog bird fish man woman child tree river stone house city runs sits sees "
    "eats likes finds small large red green old young quickly slowly near under over "
    "with without and but because music paper light water fire"
).split()


def _sentences(n, seed=0, low=3, high=12):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, rng.integers(low, high))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("spm")
  corpus = root / "corpus.txt"
  corpus.write_text("\n".join(_sentences(400)) + "\n")
  return xtok.train_sentencepiece(str(corpus), str(root / "vocab"), vocab_size=70)


@pytest.fixture(scope="module")
def tokenizer(spm_dir):
  return xtok.load_tokenizer(spm_dir)


def test_trained_vocabulary_has_xlnets_special_ids(tokenizer):
  assert {t: tokenizer.convert_tokens_to_ids(t) for t in xtok.SPECIAL_TOKENS} == (
      xtok.SPECIAL_TOKENS
  )
  assert tokenizer.padding_side == "left" and len(tokenizer) == 70


def test_pair_and_single_formats(tokenizer):
  a, b = "the cat sees a dog.", "a red bird sits near the river."
  ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
  ids_b = tokenizer(b, add_special_tokens=False)["input_ids"]
  out = xtok.encode(tokenizer, [a], [b], max_length=32)
  n = len(ids_a) + len(ids_b) + 3
  pad = 32 - n
  np.testing.assert_array_equal(out.input_ids[0], [5] * pad + ids_a + [4] + ids_b + [4, 3])
  np.testing.assert_array_equal(
      out.token_type_ids[0], [0] * (pad + len(ids_a) + 1) + [1] * (len(ids_b) + 1) + [2]
  )
  np.testing.assert_array_equal(out.attention_mask[0], [0] * pad + [1] * n)
  assert out.num_truncated == 0 and out.input_ids.dtype == np.int32
  single = xtok.encode(tokenizer, [a], max_length=16)
  np.testing.assert_array_equal(single.input_ids[0, -len(ids_a) - 2 :], ids_a + [4, 3])
  np.testing.assert_array_equal(single.token_type_ids[0, -2:], [0, 2])


def test_longest_first_truncation_is_counted(tokenizer):
  long_a = " ".join(["the small green cat"] * 20)
  first = [long_a, "a dog.", long_a]
  second = ["a fish.", "the tree.", long_a]
  out = xtok.encode(tokenizer, first, second, max_length=24)
  assert out.num_truncated == 2 and out.input_ids.shape == (3, 24)
  assert np.all(out.input_ids[:, -1] == 3) and np.all(out.attention_mask[[0, 2]] == 1)
  ids_b = tokenizer("a fish.", add_special_tokens=False)["input_ids"]
  # The longer sentence loses the tokens: B of row 0 stays whole.
  np.testing.assert_array_equal(out.input_ids[0, -len(ids_b) - 2 : -2], ids_b)
  assert np.sum(out.token_type_ids[0] == 1) == len(ids_b) + 1
  # Two equally long sentences share the cut (within one token).
  segments = out.token_type_ids[2]
  assert abs(np.sum(segments == 0) - np.sum(segments == 1)) <= 1


def _hf_encode(tokenizer, first, second, max_length):
  """What `encode` computed before issue 27: the fast tokenizer's own truncation and padding
  (memory quadratic in a long pair's length), as the reference for short inputs."""
  out = tokenizer(
      first,
      second,
      max_length=max_length,
      truncation="longest_first",
      padding="max_length",
      return_token_type_ids=True,
      return_attention_mask=True,
      return_tensors="np",
  )
  full = tokenizer(first, second, add_special_tokens=True, truncation=False)["input_ids"]
  return (
      out["input_ids"],
      out["token_type_ids"],
      out["attention_mask"],
      sum(len(ids) > max_length for ids in full),
  )


def _odd_texts(n, seed):
  """Sentences of 0 to ~60 words, with double spaces, tabs, accents, zero-width spaces and
  repeated quotes, so cuts between words meet what the normaliser changes."""
  rng = np.random.default_rng(seed)
  extra = ["  ", "\t", "caf\u00e9", "\u200b", "``quoted''", "na\u0308ive", " \u3000", "x"]
  texts = []
  for _ in range(n):
    words = list(rng.choice(WORDS + extra, rng.integers(0, 60)))
    texts.append(" ".join(words))
  return texts


_MAX_LENGTHS = (5, 6, 7, 24, 25, 128)


@pytest.fixture(scope="module")
def odd_pairs(tokenizer):
  """(first, second, {max_length: (the fast tokenizer's pair encoding, its single-text one)}):
  the reference, computed once for every chunk size below (it took about 2.1 s of the 2.3 s
  each parameter took when every parameter computed it)."""
  first, second = _odd_texts(40, seed=1), _odd_texts(40, seed=2)
  second[:4] = first[:4]  # equal lengths: the tie rule
  second[4] = ""
  want = {
      n: (_hf_encode(tokenizer, first, second, n), _hf_encode(tokenizer, first, None, n))
      for n in _MAX_LENGTHS
  }
  return first, second, want


@pytest.mark.parametrize("chunk_chars", [None, 7, 30])
def test_encode_equals_the_fast_tokenizers_truncation(
    tokenizer, odd_pairs, monkeypatch, chunk_chars
):
  """Bit-identical to the tokenizer's own longest-first truncation, ties and odd budgets
  included, whether a text is tokenised whole or in pieces (chunk_chars forces pieces)."""
  if chunk_chars:
    monkeypatch.setattr(xtok, "_CHUNK_CHARS", chunk_chars)
  first, second, want = odd_pairs
  for max_length in _MAX_LENGTHS:
    got = xtok.encode(tokenizer, first, second, max_length=max_length)
    for g, w in zip(got, want[max_length][0]):
      np.testing.assert_array_equal(g, w)
    single = xtok.encode(tokenizer, first, max_length=max_length)
    for g, w in zip(single, want[max_length][1]):
      np.testing.assert_array_equal(g, w)


_MEMORY_PROBE = """
import resource, sys
import numpy as np
from bigjax.data import tokenizer as xtok

tok = xtok.load_tokenizer(sys.argv[1])
words = "the cat sees a small red bird near the old river".split()
rng = np.random.default_rng(0)
a, b = (" ".join(rng.choice(words, 200_000)) for _ in range(2))
xtok.encode(tok, ["a warm up"], ["pair"], max_length=128)  # the tokenizer's threads and arenas
vm = [l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]
cap = int(vm) * 1024 + (2 << 30)  # what the quadratic path took for 200k words: > 14 GB
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = xtok.encode(tok, [a], [b], max_length=128)
grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(grew_mb, out.num_truncated, int(out.attention_mask.sum()))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_200000_word_pair_encodes_in_bounded_memory(spm_dir):
  """Issue 27: the fast tokenizer's pair truncation held memory quadratic in the pair's length
  (2,000 words: +327 MB; 200,000 words OOM at 14.5 GB). Now the peak grows by a few MB."""
  import subprocess

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(
      [sys.executable, "-c", _MEMORY_PROBE, spm_dir],
      capture_output=True,
      text=True,
      cwd=root,
      env={**os.environ, "PYTHONPATH": root},
  )
  assert done.returncode == 0, done.stderr[-2000:]
  grew_mb, truncated, tokens = done.stdout.split()
  assert int(truncated) == 1 and int(tokens) == 128
  assert float(grew_mb) < 100, f"encoding grew the peak RSS by {grew_mb} MB"


def test_tokenizer_errors(tokenizer, tmp_path):
  with pytest.raises(ValueError, match="2 first sentences but 1 second"):
    xtok.encode(tokenizer, ["a", "b"], ["c"])
  with pytest.raises(ValueError, match="no room"):
    xtok.encode(tokenizer, ["a"], ["b"], max_length=4)
  with pytest.raises(TypeError, match="first sentence 1 is float"):
    xtok.encode(tokenizer, ["a", float("nan")])
  with pytest.raises(FileNotFoundError, match="no tokenizer directory"):
    xtok.load_tokenizer(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="neither spiece.model"):
    xtok.load_tokenizer(str(tmp_path))
  with pytest.raises(ValueError, match="could not train"):
    xtok.train_sentencepiece(_sentences(20), str(tmp_path / "big"), vocab_size=5000)
  import sentencepiece as spm

  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_sentences(300)),
      model_prefix=str(tmp_path / "spiece"),
      vocab_size=60,
      minloglevel=2,
  )
  with pytest.raises(ValueError, match="do not have XLNet's ids"):
    xtok.load_tokenizer(str(tmp_path))


def test_saved_tokenizer_directory_loads(tokenizer, tmp_path):
  """What `XLNetTokenizer.save_pretrained` writes (tokenizer.json, no spiece.model) loads alike."""
  tokenizer.save_pretrained(str(tmp_path))
  if os.path.exists(tmp_path / "spiece.model"):
    os.remove(tmp_path / "spiece.model")
  again = xtok.load_tokenizer(str(tmp_path))
  a, b = ["the cat sees a dog."], ["a red bird."]
  for x, y in zip(
      xtok.encode(tokenizer, a, b, max_length=16), xtok.encode(again, a, b, max_length=16)
  ):
    np.testing.assert_array_equal(x, y)


def test_train_from_an_iterable(tmp_path):
  out = xtok.train_sentencepiece(
      iter(_sentences(300, seed=1)), str(tmp_path / "v"), vocab_size=60, user_defined_symbols=(".",)
  )
  tok = xtok.load_tokenizer(out)
  assert tok.convert_tokens_to_ids(".") == 9 and len(tok) == 60


# GLUE's layouts, byte for byte: MRPC's files start with a byte-order mark; quotes are text.
GLUE_FILES = {
    "RTE": {
        "train.tsv": 'index\tsentence1\tsentence2\tlabel\n0\tA man "runs".\tA person moves.'
        "\tentailment\n1\tThe cat sleeps.\tThe dog barks.\tnot_entailment\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tIt rains.\tIt is wet.\tentailment\n",
        "test.tsv": "index\tsentence1\tsentence2\n0\tBirds fly.\tBirds move.\n",
    },
    "MRPC": {
        "train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\t"
        'He said "yes".\tHe agreed.\n0\t2108705\t2108831\tShares rose.\t'
        "Rain fell.\n1\t1330381\t1330521\tIt is big.\tIt is large.\n",
        "dev.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA b.\tA b c.\n"
        "0\t3\t4\tX.\tY.\n",
        "test.tsv": "\ufeffindex\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t5\t6\tP.\tQ.\n",
    },
    "SST-2": {
        "train.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n"
        'unflinchingly bleak "and" desperate \t0\n',
        "dev.tsv": "sentence\tlabel\na gorgeous film . \t1\n",
        "test.tsv": "index\tsentence\n0\tuneasy mishmash of styles and genres .\n",
    },
    "lexname": {
        "train.tsv": "sentence\tlabel\na large bird\tnoun.animal\na tall plant\t" "noun.plant\n",
        "dev.tsv": "sentence\tlabel\nsomeone\tnoun.person\n",
    },
    "hypernym": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta dog\tan animal\t"
        "hypernym\n1\ta cup\ta river\tunrelated\n"
    },
}


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("glue_data")
  for task, files in GLUE_FILES.items():
    os.makedirs(root / task)
    for name, text in files.items():
      (root / task / name).write_text(text, encoding="utf-8")
  return root


def test_glue_tsv_layouts(glue_dir):
  rte = glue.load_tsv("rte", str(glue_dir / "RTE"), "train")
  assert rte.first == ['A man "runs".', "The cat sleeps."]
  assert rte.second == ["A person moves.", "The dog barks."]
  np.testing.assert_array_equal(rte.labels, [0, 1])
  mrpc = glue.load_tsv("mrpc", str(glue_dir / "MRPC"), "train")
  assert mrpc.first[0] == 'He said "yes".' and mrpc.second[2] == "It is large."
  np.testing.assert_array_equal(mrpc.labels, [1, 0, 1])
  sst = glue.load_tsv("sst2", str(glue_dir / "SST-2"), "train")
  assert sst.second is None and sst.first[1] == 'unflinchingly bleak "and" desperate '
  np.testing.assert_array_equal(sst.labels, [1, 0])
  for task, folder in (("rte", "RTE"), ("mrpc", "MRPC"), ("sst2", "SST-2")):
    test = glue.load_tsv(task, str(glue_dir / folder), "test")
    assert len(test.first) == 1 and np.all(test.labels == -1)
    assert glue.load_tsv(task, str(glue_dir / folder), "dev").labels.min() >= 0


def test_wordnet_tasks_read_by_the_same_loader(glue_dir):
  lex = glue.load_tsv("lexname", str(glue_dir / "lexname"), "train")
  np.testing.assert_array_equal(lex.labels, [1, 7])
  assert glue.TASKS["lexname"].num_labels == 10
  hyp = glue.load_tsv("hypernym", str(glue_dir / "hypernym"), "train")
  assert hyp.second == ["an animal", "a river"]
  np.testing.assert_array_equal(hyp.labels, [0, 1])


def test_shipped_wordnet_tasks():
  """The WordNet tasks shipped in bigjax/data/wordnet: sizes, every class, no dev text in train."""
  for task, sizes in (("lexname", (5000, 1000)), ("hypernym", (4000, 1000))):
    train, dev = (glue.load_tsv(task, glue.wordnet_dir(task), s) for s in ("train", "dev"))
    assert (len(train.first), len(dev.first)) == sizes
    assert set(train.labels.tolist()) == set(range(glue.TASKS[task].num_labels))
    assert not set(train.first) & set(dev.first)
  assert os.path.isfile(os.path.join(os.path.dirname(glue.wordnet_dir("lexname")), "README.md"))
  with pytest.raises(ValueError, match="ships the WordNet tasks"):
    glue.wordnet_dir("rte")


def test_glue_errors(glue_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no .*hypernym/dev.tsv.*holds: \['train.tsv'\]"):
    glue.load_tsv("hypernym", str(glue_dir / "hypernym"), "dev")
  (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\t2\nok\t1\n")
  with pytest.raises(ValueError, match=r"label '2' at .*train.tsv:2 is not one of \['0', '1'\]"):
    glue.load_tsv("sst2", str(tmp_path), "train")
  with pytest.raises(ValueError, match=r"columns \['sentence1', 'sentence2'\] missing"):
    glue.load_tsv("rte", str(tmp_path), "train")
  (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine\t1\textra\n")
  with pytest.raises(ValueError, match="line 2 has a different number"):
    glue.load_tsv("sst2", str(tmp_path), "dev")
  with pytest.raises(ValueError, match="unknown task 'cola'"):
    glue.load_tsv("cola", str(tmp_path), "dev")
  with pytest.raises(ValueError, match="split must be one of"):
    glue.load_tsv("sst2", str(tmp_path), "validation")


def test_metrics():
  predictions, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
  assert glue.accuracy(predictions, labels) == 0.6
  assert glue.f1(predictions, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
  assert glue.evaluate("mrpc", predictions, labels) == dict(accuracy=0.6, f1=2 / 3)
  assert glue.evaluate("rte", predictions, labels) == dict(accuracy=0.6)
  with pytest.raises(ValueError, match="unlabelled"):
    glue.evaluate("sst2", predictions, np.full(5, -1))
  with pytest.raises(ValueError, match="must be equal"):
    glue.accuracy(predictions, labels[:3])


def test_glue_to_xlnet_inputs(glue_dir, tokenizer):
  """The whole path: GLUE file -> XLNet input -> classifier logits of a small random XLNet."""
  from bigjax.models import xlnet

  rte = glue.load_tsv("rte", str(glue_dir / "RTE"), "train")
  batch = xtok.encode(tokenizer, rte.first, rte.second, max_length=24)
  model = xlnet.XLNet(
      vocab_size=len(tokenizer),
      d_model=16,
      n_layer=1,
      n_head=2,
      d_inner=16,
      lm_head=False,
      num_labels=glue.TASKS["rte"].num_labels,
  )
  inputs = dict(
      input_ids=batch.input_ids,
      token_type_ids=batch.token_type_ids,
      attention_mask=batch.attention_mask,
  )
  xlnet.check_inputs(
      batch.input_ids,
      vocab_size=len(tokenizer),
      **{k: v for k, v in inputs.items() if k != "input_ids"},
  )
  logits = jax.jit(lambda x: model.apply(model.init(jax.random.key(0), **x), **x))(inputs)
  assert logits["logits"].shape == (2, 2)


def _fake_download(monkeypatch, glue_dir):
  """tfds' download manager pointed at the local GLUE files (the real one needs the network)."""
  import tensorflow_datasets as tfds

  root = glue_dir / "msr"
  os.makedirs(root, exist_ok=True)
  (root / "dev_ids.tsv").write_text("1330381\t1330521\n")
  (root / "train.txt").write_text(GLUE_FILES["MRPC"]["train.tsv"], encoding="utf-8")
  (root / "test.txt").write_text(GLUE_FILES["MRPC"]["test.tsv"].lstrip("\ufeff"))
  files = dict(
      dev_ids=str(root / "dev_ids.tsv"), train=str(root / "train.txt"), test=str(root / "test.txt")
  )
  monkeypatch.setattr(
      tfds.download.DownloadManager, "download_and_extract", lambda self, url: str(glue_dir)
  )
  monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, urls: files)


def test_tfds_array_record_route(glue_dir, tmp_path, monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  data_dir = str(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match="not prepared"):
    glue.load_tfds("rte", "train", data_dir=data_dir)
  _fake_download(monkeypatch, glue_dir)
  for task, folder in (("rte", "RTE"), ("sst2", "SST-2"), ("mrpc", None)):
    glue.prepare_tfds(task, data_dir=data_dir)
    for split in ("train", "dev", "test"):
      ours = glue.load_tfds(task, split, data_dir=data_dir)
      if folder is None:  # tfds splits MRPC's train by the dev ids
        want = {"train": [1, 0], "dev": [1], "test": [-1]}[split]
        assert sorted(ours.labels.tolist()) == sorted(want)
        continue
      tsv = glue.load_tsv(task, str(glue_dir / folder), split)
      order = np.argsort(ours.first)  # tfds shuffles the examples
      assert [ours.first[i] for i in order] == sorted(tsv.first)
      np.testing.assert_array_equal(ours.labels[order], tsv.labels[np.argsort(tsv.first)])
  with pytest.raises(ValueError, match="not in tensorflow-datasets"):
    glue.load_tfds("lexname", "train", data_dir=data_dir)
  for name in ("tensorflow_datasets", "tensorflow_datasets.text"):  # as if not installed
    monkeypatch.setitem(sys.modules, name, None)
  with pytest.raises(ImportError, match="pip install tensorflow-datasets"):
    glue.load_tfds("rte", "train", data_dir=data_dir)


def test_a_corrupt_spiece_model_is_named(tmp_path):
  """Was: transformers fell back to tiktoken and said "tiktoken is required"."""
  (tmp_path / "spiece.model").write_bytes(b"\x08\x01garbage, not a SentencePiece model" * 4)
  with pytest.raises(ValueError, match=r"spiece.model is not a SentencePiece model.*retrain"):
    xtok.load_tokenizer(str(tmp_path))


def test_a_non_utf8_tsv_is_named_with_its_line(tmp_path):
  """Was: a raw UnicodeDecodeError naming neither the file nor the line."""
  path = tmp_path / "train.tsv"
  path.write_bytes(
      b"index\tsentence1\tsentence2\tlabel\n0\tIt rains.\tIt is wet.\tentailment\n"
      b"1\tCaf\xe9 noir.\tA drink.\tentailment\n"
  )
  with pytest.raises(
      ValueError, match=r"train.tsv: line 3 is not UTF-8 \(byte b'\\xe9' at column 6"
  ):
    glue.read_tsv("rte", str(path))


def test_a_failed_training_leaves_the_previous_vocabulary(spm_dir, tmp_path, monkeypatch):
  """Issue 27, item 6: SentencePiece wrote into model_dir/spiece.model directly, so a failed
  or killed training left a partial model where the previous one was."""
  import sentencepiece as spm

  folder = tmp_path / "vocab"
  folder.mkdir()
  before = open(os.path.join(spm_dir, "spiece.model"), "rb").read()
  (folder / "spiece.model").write_bytes(before)

  def killed(*, model_prefix, **kwargs):
    with open(model_prefix + ".model", "wb") as f:
      f.write(b"half a model")
    raise RuntimeError("killed mid-write")

  monkeypatch.setattr(spm.SentencePieceTrainer, "train", killed)
  with pytest.raises(ValueError, match="killed mid-write"):
    xtok.train_sentencepiece(_sentences(50), str(folder), vocab_size=40)
  assert os.listdir(folder) == ["spiece.model"]
  assert (folder / "spiece.model").read_bytes() == before
