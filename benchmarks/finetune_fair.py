r"""One table of FT against big-learn over several fine-tuning sweeps (tasks x data sizes), with
the sweeps' sign-flip p-values Holm-adjusted over the whole family (every task x data size x
beta), as benchmarks/RESULTS.md reports them.

  python -m benchmarks.finetune_fair /tmp/wn23/lexname_n250 /tmp/wn23/lexname_n1000

Reads each sweep's table4.json (experiments.finetune_table; a sweep from before it is read
after `python -m experiments.finetune_sweep` with the same flags recomputes it); writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os

from bigjax import stats


def rows(sweep_dirs: list[str]) -> list[dict]:
  out = []
  for d in sweep_dirs:
    with open(os.path.join(d, "table4.json")) as f:
      table = json.load(f)
    for size, entry in table.get("sizes", {}).items():
      for beta, paired in entry.get("paired", {}).items():
        if beta == "overall" or "final" not in paired:
          continue
        f = paired["final"]
        methods = entry["methods"]
        eq = entry["equal_count"][beta]
        sel = entry.get("selected", {}).get("paired", {}).get(beta)
        out.append(
            dict(
                task=table["task"],
                size=size,
                beta=beta,
                final=f,
                best_epoch=paired.get("best_epoch"),
                nll=paired.get("nll"),
                selected=sel,
                best=(eq["best"], eq["ft_best_same_runs"]),
                median=(eq["median"], eq["ft_median_same_runs"]),
                iqr=(methods[beta]["iqr"], methods["FT"]["iqr"]),
                cost=methods[beta].get("seconds", 0) / max(methods["FT"].get("seconds", 1), 1e-9),
                ft_optimum=entry.get("ft_optimum"),
                p=f.get("sign_flip_p", f["sign_test_p"]),
            )
        )
  for r, p in zip(out, stats.holm([r["p"] for r in out]) if out else []):
    r["holm_p"] = p
  return out


def _ci(s) -> str:
  if not s:
    return "-"
  return f"{s['mean']:+.2f} [{s['interval'][0]:+.2f}, {s['interval'][1]:+.2f}]"


def markdown(table: list[dict]) -> str:
  lines = [
      "| task | train examples | beta | pairs | final: big-learn - FT [95% CI] | two-level CI | "
      "W/T/L | sign-flip p | Holm p | best epoch: diff [CI] | selected on half, reported on "
      "the other: diff [CI] | best (BL / FT) | median (BL / FT) | IQR (BL / FT) | dev NLL diff "
      "| cost BL / FT | FT optimum on the grid's edge |",
      "|" + "---|" * 17,
  ]
  for r in table:
    f, two = r["final"], r["final"].get("two_level_interval")
    opt = r["ft_optimum"] or {}
    edge = [k for k, v in opt.get("on_edge", {}).items() if v]
    lines.append(
        f"| {r['task']} | {r['size']} | {r['beta']} | {f['pairs']} | {_ci(f)} | "
        + (f"[{two[0]:+.2f}, {two[1]:+.2f}]" if two else "-")
        + f" | {f['wins']}/{f['ties']}/{f['losses']} | {r['p']:.3f} | {r['holm_p']:.3f} | "
        f"{_ci(r['best_epoch'])} | {_ci(r['selected'])} | {r['best'][0]:.2f} / {r['best'][1]:.2f}"
        f" | {r['median'][0]:.2f} / {r['median'][1]:.2f} | {r['iqr'][0]:.2f} / {r['iqr'][1]:.2f}"
        f" | {(r['nll'] or {}).get('mean', float('nan')):+.4f} | {r['cost']:.2f}x | {', '.join(edge) or 'no'} |"
    )
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("sweeps", nargs="+", help="sweep directories (each with table4.json)")
  args = parser.parse_args()
  print(markdown(rows(args.sweeps)), end="")


if __name__ == "__main__":
  main()
