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
  tokenizer = XLNetTokenizer.from_pretrained(model_dir, local_files_only=True)
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
  lengths = [
      len(ids)
      for ids in tokenizer(first, second, add_special_tokens=True, truncation=False)["input_ids"]
  ]
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
  return Encoded(
      out["input_ids"].astype(np.int32),
      out["token_type_ids"].astype(np.int32),
      out["attention_mask"].astype(np.int32),
      int(np.sum(np.asarray(lengths) > max_length)),
  )


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
  os.makedirs(model_dir, exist_ok=True)
  kwargs = dict(input=corpus) if isinstance(corpus, str) else dict(sentence_iterator=iter(corpus))
  if isinstance(corpus, str) and not os.path.isfile(corpus):
    raise FileNotFoundError(f"no corpus file {corpus!r}.")
  spm.set_random_generator_seed(seed)
  try:
    spm.SentencePieceTrainer.train(
        **kwargs,
        model_prefix=os.path.join(model_dir, "spiece"),
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
  processor = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "spiece.model"))
  got = {processor.id_to_piece(i): i for i in range(len(SPECIAL_TOKENS))}
  if got != SPECIAL_TOKENS:  # a guard on SentencePiece's own id assignment
    raise RuntimeError(f"SentencePiece placed the special tokens as {got}, not {SPECIAL_TOKENS}.")
  return model_dir
