r"""Big-learn's mechanisms apart (issue 23, item 5): paired differences between groups of
fine-tuning runs that differ in one switch of experiments.finetune_step.

  python -m benchmarks.finetune_mechanisms /tmp/wn23/mech

The directory holds one folder per group (its name is the group's), each with runs/<name>/ run
directories of experiments.finetune (result.json). Every group is compared with the FT group
(`--ft`, default "ft") and, when it is a big-learn group, with the plain big-learn group (`--bl`,
default "bl"): runs pair by learning rate, epochs, warm-up, data size and seed
(experiments.finetune_table's pairing; by all of them but the epochs when the two groups train
for different numbers of epochs, as the compute-matched FT does), and each difference is reported as
bigjax.stats.paired_summary gives it (mean, 95% bootstrap interval, wins/ties/losses), for the
final and the best-epoch dev accuracy and the final dev NLL, with the groups' wall-time ratio.
Reads only; writes nothing.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

from benchmarks.finetune_fair import _ci
from bigjax import stats
from experiments.finetune_table import CELL, differences, size_of

VALUES = {
    "final": lambda r: 100.0 * r["dev"]["accuracy"],
    "best_epoch": lambda r: 100.0 * r["best_dev"]["accuracy"],
    "nll": lambda r: r["dev"]["nll"],
}


def groups(root: str) -> dict[str, list[dict]]:
  """{group: its finished runs' result.json}, the groups in name order."""
  out = {}
  for d in sorted(glob.glob(os.path.join(root, "*", "runs"))):
    runs = []
    for path in sorted(glob.glob(os.path.join(d, "*", "result.json"))):
      with open(path) as f:
        runs.append(json.load(f))
    if runs:
      out[os.path.basename(os.path.dirname(d))] = runs
  return out


def compare(base: list[dict], other: list[dict]) -> dict | None:
  """The paired differences other - base per VALUES (None when no run pairs). Groups trained
  for different numbers of epochs (a compute-matched FT) pair by learning rate, warm-up, data
  size and seed."""
  out = {}
  for size in sorted({size_of(r) for r in other}):
    b = [r for r in base if size_of(r) == size]
    o = [r for r in other if size_of(r) == size]
    fields = CELL
    if {r["num_epochs"] for r in b} != {r["num_epochs"] for r in o}:
      fields = tuple(f for f in CELL if f != "num_epochs")
    for name, value in VALUES.items():
      d = differences(b, o, value, fields)
      if not np.all(np.isnan(d)):
        out.setdefault(size, {})[name] = stats.paired_summary(d)
    if size in out:
      seconds = lambda rs: float(np.mean([r["seconds"] for r in rs]))
      out[size]["cost"] = seconds(o) / seconds(b)
  return out or None


def table(runs: dict[str, list[dict]], ft: str, bl: str) -> list[dict]:
  rows = []
  for name, group in runs.items():
    for base in (ft, bl):
      if name in (ft, base) or base not in runs or (base == bl and group[0]["beta"] == 0):
        continue
      for size, entry in (compare(runs[base], group) or {}).items():
        rows.append(dict(group=name, base=base, size=size, **entry))
  return rows


def markdown(rows: list[dict]) -> str:
  lines = [
      "| group | against | train examples | pairs | final: diff [95% CI] | W/T/L | best epoch: "
      "diff [CI] | dev NLL: diff [CI] | wall time ratio |",
      "|" + "---|" * 9,
  ]
  for r in rows:
    f = r["final"]
    lines.append(
        f"| {r['group']} | {r['base']} | {r['size']} | {f['pairs']} | {_ci(f)} | "
        f"{f['wins']}/{f['ties']}/{f['losses']} | {_ci(r.get('best_epoch'))} | "
        f"{_ci(r.get('nll'))} | {r['cost']:.2f}x |"
    )
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("root", help="a folder of groups, each with runs/<name>/result.json")
  parser.add_argument("--ft", default="ft", help="the FT group's folder name")
  parser.add_argument("--bl", default="bl", help="the plain big-learn group's folder name")
  args = parser.parse_args()
  print(markdown(table(groups(args.root), args.ft, args.bl)), end="")


if __name__ == "__main__":
  main()
