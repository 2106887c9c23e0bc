"""XLNet tokenisation for GLUE-style classification (paper App. E.2), and SentencePiece training.

XLNet's input for a sentence pair (A, B), as `transformers.XLNetTokenizer` builds it and the
original `run_classifier.py` did:

  tokens          <pad> ... <pad>  A_1 .. A_n  <sep>  B_1 .. B_m  <sep>  <cls>
  token_type_ids    0   ...   0     0  ..  0     0     1  ..  1     1      2
  attention_mask    0   ...   0     1  ..  1     1     1  ..  1     1      1

Padding is on the left, so `<cls>` is always the last position (the one XLNet's
sequence-summary head reads). A single sentence is `A <sep> <cls>` (segments 0 .. 0, 2). Pairs
longer than `max_length` (128 in App. E.2) are cut with "longest_first": one token at a time from
the end of the longer sentence; `encode` counts the examples that lost tokens.

`train_sentencepiece` makes a vocabulary with XLNet's special-token ids (SPECIAL_TOKENS), so that
`load_tokenizer` on its directory behaves as on the real `xlnet-base-cased` one.

Needs `transformers`, `sentencepiece` and `protobuf` (imported inside the functions).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import NamedTuple
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "SPECIAL_TOKENS",
    "SEGMENT_A",
    "SEGMENT_B",
    "SEGMENT_CLS",
    "Encoded",
    "load_tokenizer",
    "check_sentencepiece_file",
    "encode",
    "train_sentencepiece",
]

# XLNet's vocabulary layout (xlnet-base-cased's spiece.model; transformers' XLNetTokenizer).
SPECIAL_TOKENS = {
    "<unk>": 0,
    "<s>": 1,
    "</s>": 2,
    "<cls>": 3,
    "<sep>": 4,
    "<pad>": 5,
    "<mask>": 6,
    "<eod>": 7,
    "<eop>": 8,
}
SEGMENT_A, SEGMENT_B, SEGMENT_CLS = 0, 1, 2
_MISSING = (
    "the tokenizer needs transformers, sentencepiece and protobuf: pip install "
    "transformers sentencepiece protobuf"
)


class Encoded(NamedTuple):
  """A tokenised batch, left-padded to max_length.

  input_ids: int32 [N, L]; token_type_ids: int32 [N, L] (0 A, 1 B, 2 <cls>, 0 padding);
  attention_mask: int32 [N, L] (1 real token); num_truncated: examples that lost tokens.
  """

  input_ids: np.ndarray
  token_type_ids: np.ndarray
  attention_mask: np.ndarray
  num_truncated: int


def load_tokenizer(model_dir: str, *, check_special_tokens: bool = True):
  """`transformers.XLNetTokenizer.from_pretrained(model_dir, local_files_only=True)`.

  (`XLNetTokenizer(vocab_file=...)` would silently ignore the file in transformers 5.)

  Args:
    model_dir: a directory with spiece.model (e.g. xlnet-base-cased's, or `train_sentencepiece`'s)
      or tokenizer.json.
    check_special_tokens: raise if the special tokens do not have XLNet's ids (SPECIAL_TOKENS).

  Returns:
    the tokenizer (padding side "left").
  """
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(f"no tokenizer directory {model_dir!r}.")
  if not {"spiece.model", "tokenizer.json"} & set(os.listdir(model_dir)):
    raise FileNotFoundError(
        f"{model_dir!r} has neither spiece.model nor tokenizer.json; give "
        "the xlnet-base-cased directory or one from train_sentencepiece."
    )
  try:
    from transformers import XLNetTokenizer
  except ImportError:
    raise ImportError(_MISSING) from None
  spm_file = os.path.join(model_dir, "spiece.model")
  if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
    check_sentencepiece_file(spm_file)
  try:
    tokenizer = XLNetTokenizer.from_pretrained(model_dir, local_files_only=True)
  except (ValueError, OSError, RuntimeError) as e:
    raise ValueError(
        f"{model_dir}: transformers could not read its tokenizer files ({e}); copy spiece.model "
        "(or tokenizer.json) again from the model's source, or retrain it with "
        "train_sentencepiece."
    ) from None
  if check_special_tokens:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if ids != SPECIAL_TOKENS:
      wrong = {t: i for t, i in ids.items() if i != SPECIAL_TOKENS[t]}
      raise ValueError(
          f"{model_dir}: special tokens {wrong} do not have XLNet's ids "
          f"{SPECIAL_TOKENS}; train the vocabulary with train_sentencepiece."
      )
  if tokenizer.padding_side != "left":
    raise ValueError(
        f"{model_dir}: padding side {tokenizer.padding_side!r}; XLNet pads on the "
        "left (its tokenizer_config.json must not override padding_side)."
    )
  return tokenizer


def check_sentencepiece_file(path: str) -> None:
  """Raises ValueError naming `path` when it is not a SentencePiece model (transformers would
  fall back to reading it as tiktoken and say "tiktoken is required")."""
  try:
    import sentencepiece as spm
  except ImportError:
    raise ImportError(_MISSING) from None
  try:
    spm.SentencePieceProcessor(model_file=path)
  except (RuntimeError, OSError) as e:
    raise ValueError(
        f"{path} is not a SentencePiece model ({e}); it is damaged or another kind of file: "
        "copy it again from the model's source, or retrain it with train_sentencepiece."
    ) from None


def encode(
    tokenizer, first: Sequence[str], second: Sequence[str] | None = None, *, max_length: int = 128
) -> Encoded:
  """Sentences (or pairs) -> XLNet's classification input, left-padded to max_length.

  Args:
    tokenizer: from `load_tokenizer`.
    first: N sentences A.
    second: N sentences B, or None for single-sentence tasks (SST-2).
    max_length: L, the length of every row (128 in App. E.2); longer inputs are truncated
      longest-first, and counted.

  Returns:
    Encoded (see its docstring).
  """
  first = list(first)
  if second is not None:
    second = list(second)
    if len(second) != len(first):
      raise ValueError(f"{len(first)} first sentences but {len(second)} second sentences.")
  specials = 2 if second is None else 3
  if max_length < specials + (1 if second is None else 2):
    raise ValueError(
        f"max_length={max_length} leaves no room for the text: XLNet adds "
        f"{specials} special tokens."
    )
  for name, texts in (("first", first), ("second", second or [])):
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
      raise TypeError(f"{name} sentence {bad[0]} is {type(texts[bad[0]]).__name__}, not str.")
  if not first:
    empty = np.zeros((0, max_length), np.int32)
    return Encoded(empty, empty.copy(), empty.copy(), 0)
  budget = max_length - specials  # text tokens a row holds
  left = tokenizer.truncation_side == "left"
  ids_a, len_a = _token_ids(tokenizer, first, keep=budget, from_end=left)
  ids_b, len_b = (
      _token_ids(tokenizer, second, keep=budget, from_end=left)
      if second is not None
      else ([[]] * len(first), [0] * len(first))
  )
  sep, cls, pad = tokenizer.sep_token_id, tokenizer.cls_token_id, tokenizer.pad_token_id
  pad_type = tokenizer.pad_token_type_id
  input_ids = np.full((len(first), max_length), pad, np.int32)
  token_type_ids = np.full((len(first), max_length), pad_type, np.int32)
  attention_mask = np.zeros((len(first), max_length), np.int32)
  for row, (a, b, n_a, n_b) in enumerate(zip(ids_a, ids_b, len_a, len_b)):
    keep_a, keep_b = _longest_first(n_a, n_b, budget)
    a = a[len(a) - keep_a :] if left else a[:keep_a]
    b = b[len(b) - keep_b :] if left else b[:keep_b]
    if second is None:
      ids, types = a + [sep, cls], [SEGMENT_A] * (keep_a + 1) + [SEGMENT_CLS]
    else:
      ids = a + [sep] + b + [sep, cls]
      types = [SEGMENT_A] * (keep_a + 1) + [SEGMENT_B] * (keep_b + 1) + [SEGMENT_CLS]
    cols = (
        slice(max_length - len(ids), None) if tokenizer.padding_side == "left" else slice(len(ids))
    )
    input_ids[row, cols], token_type_ids[row, cols], attention_mask[row, cols] = ids, types, 1
  truncated = np.asarray(len_a) + np.asarray(len_b) > budget
  return Encoded(input_ids, token_type_ids, attention_mask, int(np.sum(truncated)))


# A text longer than this is tokenised in pieces cut at single spaces between words, so the
# fast tokenizer never holds a long text at once: memory stays linear in the text's length.
_CHUNK_CHARS = 4096
# Texts given to one call of the fast tokenizer, by total characters.
_BATCH_CHARS = 1 << 20


def _token_ids(
    tokenizer, texts: Sequence[str], *, keep: int, from_end: bool
) -> tuple[list[list[int]], list[int]]:
  """The text tokens of each text (no special tokens), at most `keep` of them (its first, or its
  last when `from_end`), and each text's full token count, in one tokenisation.

  A text of more than _CHUNK_CHARS characters is tokenised in pieces, cut at a space with a
  non-space character on each side. The tokenizer normalises character by character and then
  splits words at whitespace (XLNet's: Replace, NFKD, StripAccents, a character map, then
  WhitespaceSplit and Metaspace), so a word never spans such a cut and the pieces' tokens,
  concatenated, are the whole text's tokens (the tests compare both on cut texts).
  """
  pieces, owner = [], []
  for i, text in enumerate(texts):
    for piece in _pieces(text):
      pieces.append(piece)
      owner.append(i)
  ids = [[] for _ in texts]
  counts = [0] * len(texts)
  start = 0
  while start < len(pieces):
    stop, size = start, 0
    while stop < len(pieces) and (stop == start or size + len(pieces[stop]) <= _BATCH_CHARS):
      size += len(pieces[stop])
      stop += 1
    batch = tokenizer(pieces[start:stop], add_special_tokens=False)["input_ids"]
    for i, piece_ids in zip(owner[start:stop], batch):
      counts[i] += len(piece_ids)
      if from_end:
        ids[i] = (ids[i] + piece_ids)[-keep:]
      elif len(ids[i]) < keep:
        ids[i] += piece_ids[: keep - len(ids[i])]
    start = stop
  return ids, counts


def _pieces(text: str) -> list[str]:
  """`text` cut into pieces of about _CHUNK_CHARS characters at spaces between two words (one
  piece when it is shorter, or has no such space)."""
  good = lambda i: i > 0 and not text[i - 1].isspace() and not text[i + 1 : i + 2].isspace()
  pieces, start = [], 0
  while len(text) - start > _CHUNK_CHARS:
    cut = text.rfind(" ", start + 1, start + _CHUNK_CHARS)
    while cut > start and not good(cut):
      cut = text.rfind(" ", start + 1, cut)
    if cut <= start:  # no space in the window: the next one after it
      cut = text.find(" ", start + _CHUNK_CHARS)
      while cut > 0 and not good(cut):
        cut = text.find(" ", cut + 1)
      if cut < 0 or cut == len(text) - 1:
        break
    pieces.append(text[start:cut])
    start = cut + 1
  pieces.append(text[start:])
  return pieces


def _longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
  """Tokens kept of a pair of n_a and n_b text tokens in `budget`: the "longest_first" rule of
  the tokenizers library (TruncationStrategy::LongestFirst), tie included (equal lengths:
  the second sequence gets the odd token)."""
  if n_a + n_b <= budget:
    return n_a, n_b
  short, long = sorted((n_a, n_b))
  keep_short, keep_long = short, (short if short > budget else max(short, budget - short))
  if keep_short + keep_long > budget:
    keep_short = budget // 2
    keep_long = keep_short + budget % 2
  keep_a, keep_b = (keep_long, keep_short) if n_a > n_b else (keep_short, keep_long)
  return min(n_a, keep_a), min(n_b, keep_b)


def train_sentencepiece(
    corpus: str | Iterable[str],
    model_dir: str,
    *,
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 0.99995,
    user_defined_symbols: Sequence[str] = (),
    input_sentence_size: int = 10_000_000,
    seed: int = 0,
) -> str:
  """Trains a SentencePiece model with XLNet's special-token layout, into model_dir/spiece.model.

  Atomic: trained in a temporary directory inside model_dir and renamed into place, so a
  failed or killed training leaves model_dir's previous files (or none), never a partial model.

  As the original XLNet vocabulary: `<unk>`, `<s>`, `</s>` are ids 0-2, the control symbols
  `<cls> <sep> <pad> <mask> <eod>` ids 3-7, the user-defined `<eop>` id 8 (SPECIAL_TOKENS), then
  `user_defined_symbols`, then the learned pieces.

  Args:
    corpus: a text file (one sentence per line) or an iterable of sentences.
    model_dir: output directory (created); `load_tokenizer(model_dir)` reads it.
    vocab_size: total size, special tokens included; SentencePiece says the largest the corpus
      allows if it is too big.
    model_type: "unigram" (XLNet's) or "bpe".
    character_coverage: share of characters covered by the vocabulary.
    user_defined_symbols: extra pieces kept whole (the original added . ( ) " - and others).
    input_sentence_size: sentences sampled from a large corpus.
    seed: seed of SentencePiece's sampling (its trainer is otherwise deterministic).

  Returns:
    model_dir.
  """
  try:
    import sentencepiece as spm
  except ImportError:
    raise ImportError(_MISSING) from None
  kwargs = dict(input=corpus) if isinstance(corpus, str) else dict(sentence_iterator=iter(corpus))
  if isinstance(corpus, str) and not os.path.isfile(corpus):
    raise FileNotFoundError(f"no corpus file {corpus!r}.")
  os.makedirs(model_dir, exist_ok=True)
  scratch = tempfile.mkdtemp(prefix=".spiece-", dir=model_dir)
  try:
    _train_into(
        spm,
        kwargs,
        scratch,
        seed,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        user_defined_symbols=user_defined_symbols,
        input_sentence_size=input_sentence_size,
    )
    for name in ("spiece.vocab", "spiece.model"):  # the model last: it marks a finished one
      os.replace(os.path.join(scratch, name), os.path.join(model_dir, name))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return model_dir


def _train_into(
    spm,
    kwargs,
    directory,
    seed,
    *,
    vocab_size,
    model_type,
    character_coverage,
    user_defined_symbols,
    input_sentence_size,
) -> None:
  """SentencePiece's trainer, writing directory/spiece.{model,vocab}, and its special ids checked."""
  spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
        **kwargs,
        model_prefix=os.path.join(directory, "spiece"),
        vocab_size=int(vocab_size),
        model_type=model_type,
        character_coverage=character_coverage,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        control_symbols=["<cls>", "<sep>", "<pad>", "<mask>", "<eod>"],
        user_defined_symbols=["<eop>", *user_defined_symbols],
        input_sentence_size=int(input_sentence_size),
        shuffle_input_sentence=True,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise ValueError(
        f"SentencePiece could not train a {vocab_size}-piece vocabulary on this " f"corpus: {e}"
    ) from None
  processor = spm.SentencePieceProcessor(model_file=os.path.join(directory, "spiece.model"))
  got = {processor.id_to_piece(i): i for i in range(len(SPECIAL_TOKENS))}
  if got != SPECIAL_TOKENS:  # a guard on SentencePiece's own id assignment
    raise RuntimeError(f"SentencePiece placed the special tokens as {got}, not {SPECIAL_TOKENS}.")
