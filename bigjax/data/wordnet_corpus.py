r"""Rebuilds the WordNet gloss corpus (the unlabelled text of App. E.2's WordNet comparison) from
WordNet 3.0's database files, e.g. Debian's `wordnet-base` (/usr/share/wordnet/data.adj, .adv,
.noun, .verb).

  apt-get install wordnet-base     # or: apt-get download wordnet-base && dpkg-deb -x *.deb root
  python -m bigjax.data.wordnet_corpus --wordnet_dir /usr/share/wordnet --out corpus.txt

Every synset's gloss (its definition and usage examples, the text after " | " on its line of a
data file) is one line, in the order of the files (adj, adv, noun, verb) and of their lines.
Glosses whose definition (the gloss up to its first `; "`) is a sentence of an example of the
given task files are left out, so pretraining never reads a held-out example: by default the
dev files of the two tasks shipped with bigjax (bigjax/data/wordnet); add the test files you
hold with --exclude. (The corpus the project's maintainers pretrained on left out the dev and
test examples' glosses: 112,034 lines; with the dev files alone this gives 114,736.)

WordNet's licence (bigjax/data/wordnet/README.md) travels with every copy of the result.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence

from bigjax.data import glue

__all__ = ["PARTS_OF_SPEECH", "glosses", "definition", "task_sentences", "build_corpus"]

PARTS_OF_SPEECH = ("adj", "adv", "noun", "verb")


def glosses(wordnet_dir: str) -> list[str]:
  """Every synset's gloss in `wordnet_dir`'s data.adj, data.adv, data.noun and data.verb, in
  file order (the licence lines, which start with two spaces, skipped)."""
  out = []
  for pos in PARTS_OF_SPEECH:
    path = os.path.join(wordnet_dir, f"data.{pos}")
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"no {path}: give the folder of WordNet 3.0's data.* files "
          "(Debian's wordnet-base installs them in /usr/share/wordnet)."
      )
    with open(path, encoding="utf-8", errors="replace") as f:
      for line in f:
        if line.startswith("  ") or " | " not in line:
          continue
        out.append(line.split(" | ", 1)[1].strip())
  return out


def definition(gloss: str) -> str:
  """A gloss's definition: the text before its first usage example (`; "`)."""
  return gloss.split('; "', 1)[0].strip()


def task_sentences(paths: Iterable[tuple[str, str]]) -> set[str]:
  """The sentences of (task, TSV file) pairs, e.g. ("lexname", ".../dev.tsv")."""
  out = set()
  for task, path in paths:
    examples = glue.read_tsv(task, path, labelled=False)
    out.update(examples.first)
    out.update(examples.second or [])
  return out


def shipped_dev_files() -> list[tuple[str, str]]:
  return [(t, os.path.join(glue.wordnet_dir(t), "dev.tsv")) for t in ("lexname", "hypernym")]


def build_corpus(
    wordnet_dir: str, out: str, *, exclude: Sequence[tuple[str, str]] | None = None
) -> int:
  """Writes the corpus (module docstring) to `out` atomically; returns its number of lines.

  Args:
    wordnet_dir: the folder of WordNet's data.* files.
    out: the text file written.
    exclude: (task, TSV) pairs whose examples' glosses are left out; None: the shipped dev
      files of lexname and hypernym.
  """
  held = task_sentences(shipped_dev_files() if exclude is None else exclude)
  kept = [g for g in glosses(wordnet_dir) if definition(g) not in held]
  tmp = out + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("\n".join(kept) + "\n")
  os.replace(tmp, out)
  return len(kept)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--wordnet_dir", default="/usr/share/wordnet")
  parser.add_argument("--out", required=True)
  parser.add_argument(
      "--exclude",
      nargs="*",
      default=[],
      metavar="TASK:FILE.tsv",
      help="more task files whose examples' glosses are left out, e.g. "
      "lexname:/data/lexname/test.tsv (the shipped dev files always are)",
  )
  args = parser.parse_args(argv)
  extra = []
  for item in args.exclude:
    task, sep, path = item.partition(":")
    if not sep or task not in ("lexname", "hypernym"):
      parser.error(f"--exclude {item!r}: write TASK:FILE.tsv with TASK lexname or hypernym.")
    extra.append((task, path))
  n = build_corpus(args.wordnet_dir, args.out, exclude=shipped_dev_files() + extra)
  print(f"{n} glosses written to {args.out}")


if __name__ == "__main__":
  main()
