"""Table 4 as Markdown and Fig. 18 (paper App. E.2) from experiments.finetune_table's numbers:
the paper's view (all runs; big-learn's betas pooled), then per data size the paired
differences with their intervals and tests, the best and median over equal numbers of runs, the
half-dev selection and where FT's optimum lies in the grid."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from experiments.finetune_table import differences, size_of


def _f(x, digits: int = 2) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def _p(x) -> str:
  return "-" if x is None else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def _paired_row(name: str, e: dict[str, Any]) -> str:
  f = e["final"]
  two = f.get("two_level_interval")
  best = e.get("best_epoch")
  nll = e.get("nll")
  return (
      f"| {name} | {f['pairs']} | {f['mean']:+.2f} [{f['interval'][0]:+.2f}, "
      f"{f['interval'][1]:+.2f}] | "
      + (f"[{two[0]:+.2f}, {two[1]:+.2f}]" if two else "-")
      + f" | {f['wins']}/{f['ties']}/{f['losses']} | {_p(f['sign_test_p'])} | "
      f"{_p(f.get('sign_flip_p'))} | {_p(f.get('holm_p'))} | "
      + (
          f"{best['mean']:+.2f} [{best['interval'][0]:+.2f}, {best['interval'][1]:+.2f}]"
          if best
          else "-"
      )
      + " | "
      + (f"{nll['mean']:+.4f}" if nll else "-")
      + " |"
  )


def table4_markdown(table: dict[str, Any]) -> str:
  m = table["metric"]
  f1 = any("f1" in e for e in table["methods"].values())
  lines = [
      f"# Table 4 ({table['task']}, dev {m} in %, {table['runs']} runs"
      f"{', ' + str(len(table['failed'])) + ' failed' if table['failed'] else ''})",
      "",
      "All runs of the sweep, the paper's way (FT = beta 0; big-learn = every beta > 0 pooled: "
      "its best is a maximum over more runs than FT's).",
      "",
      f"| method | runs | best {m}{' / F1' if f1 else ''} | median {m} | IQR | "
      "seed std (mean / max) |",
      "|---|---|---|---|---|---|",
  ]
  for name, e in table["methods"].items():
    if not e.get("runs"):
      lines.append(f"| {name} | 0 | | | | |")
      continue
    s = e["seed_spread"]
    spread = f"{s['mean_std']:.2f} / {s['max_std']:.2f}" if s.get("groups") else "-"
    best = f"{e['best']:.2f}" + (f" / {e['f1']['best']:.2f}" if "f1" in e else "")
    lines.append(
        f"| {name} | {e['runs']} | {best} | {e['median']:.2f} | {e['iqr']:.2f} | {spread} |"
    )
  lines += ["", "| beta | runs | best | median | IQR |", "|---|---|---|---|---|"]
  for beta, e in table["betas"].items():
    lines.append(f"| {beta} | {e['runs']} | {e['best']:.2f} | {e['median']:.2f} | {e['iqr']:.2f} |")
  if "paired" in table:
    p = table["paired"]
    lines += [
        "",
        f"Paired with the FT run of the same learning rate, epochs, warm-up, data size and seed: "
        f"big-learn wins {p['wins']}, ties {p['ties']}, loses {p['losses']} of "
        f"{p['pairs']} (mean gain {p['mean_gain']:+.2f} points).",
    ]
  for size, entry in table.get("sizes", {}).items():
    lines += _size_markdown(size, entry, m)
  return "\n".join(lines) + "\n"


def _size_markdown(size: str, entry: dict[str, Any], m: str) -> list[str]:
  lines = [
      "",
      f"## {size} training examples ({entry['runs']} runs)",
      "",
      "| method | runs | final: best / median / IQR | best epoch: best / median | peaked at "
      "the last epoch | dev NLL median | seconds per run |",
      "|---|---|---|---|---|---|---|",
  ]
  for name, e in entry["methods"].items():
    if not e.get("runs"):
      continue
    be = e.get("best_epoch") or {}
    lines.append(
        f"| {'FT' if name == 'FT' else 'beta ' + name} | {e['runs']} | {e['best']:.2f} / "
        f"{e['median']:.2f} / {e['iqr']:.2f} | {_f(be.get('best'))} / {_f(be.get('median'))} | "
        f"{e.get('not_converged', '-')} | {_f((e.get('nll') or {}).get('median'), 4)} | "
        f"{_f(e.get('seconds'), 1)} |"
    )
  if "paired" not in entry:
    return lines
  lines += [
      "",
      f"Paired differences big-learn - FT (points of {m}; NLL in nats, negative = big-learn "
      "lower), same cell and seed; 95% bootstrap interval over pairs, and over cells then seeds:",
      "",
      "| beta | pairs | final: mean [95% CI] | two-level CI | wins/ties/losses | sign test p | "
      "sign-flip p | Holm p | best epoch: mean [95% CI] | dev NLL |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for beta, e in entry["paired"].items():
    if "final" in e:
      lines.append(_paired_row(beta, e))
  eq = entry["equal_count"]
  lines += ["", "Best and median over equal numbers of runs:", ""]
  for beta, e in eq.items():
    if beta in ("FT", "big-learn"):
      continue
    lines.append(
        f"- beta {beta} ({e['runs']} runs) against FT's same cells and seeds: best "
        f"{e['best']:.2f} vs {e['ft_best_same_runs']:.2f}, median {e['median']:.2f} vs "
        f"{e['ft_median_same_runs']:.2f}."
    )
  if "big-learn" in eq:
    b = eq["big-learn"]
    lines.append(
        f"- big-learn over all betas ({b['runs']} runs): expected best of {b['draws']} runs "
        f"{b['expected_best_of_ft_count']:.2f} vs FT's best {eq['FT']['best']:.2f} "
        f"({eq['FT']['runs']} runs); the paper's way, best of all {b['runs']}: "
        f"{b['paper_best_of_all_betas']:.2f}."
    )
  sel = entry.get("selected")
  if sel:
    lines += [
        "",
        "Selected on one half of dev, reported on the other (and swapped; each run at its best "
        "epoch on the selecting half):",
        "",
        "| method | cell chosen on A | on B | reported (mean of both) |",
        "|---|---|---|---|",
    ]
    cell = lambda c: f"lr {c['learning_rate']:g}, {c['num_epochs']} ep, wu {c['warmup_steps']}"
    for name, e in sel.items():
      if name == "paired":
        continue
      lines.append(
          f"| {'FT' if name == 'FT' else 'beta ' + name} | {cell(e['a_to_b']['cell'])} | "
          f"{cell(e['b_to_a']['cell'])} | {e['report']:.2f} |"
      )
    for beta, p in sel["paired"].items():
      lines.append(
          f"\nSelected beta {beta} - selected FT, paired by seed over both directions: "
          f"{p['mean']:+.2f} [{p['interval'][0]:+.2f}, {p['interval'][1]:+.2f}], "
          f"{p['wins']}/{p['ties']}/{p['losses']}, sign test p {_p(p['sign_test_p'])}."
      )
  opt = entry.get("ft_optimum")
  if opt:
    edges = [k for k, v in opt["on_edge"].items() if v]
    lines.append(
        f"\nFT's best cell (seed mean at the best epoch): {opt['mean']:.2f} at "
        + ", ".join(f"{k} {v:g}" for k, v in opt["cell"].items())
        + (f"; on the grid's edge in {', '.join(edges)}." if edges else "; inside the grid.")
    )
  return lines


def figure(table: dict[str, Any], results: list[dict], path: str) -> None:
  """Fig. 18: box plots of the runs' final dev metric (FT beside big-learn, and per beta), and
  the paired differences big-learn - FT per beta and data size."""
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  metric = table["metric"]
  done = [r for r in results if "failed" not in r]
  value = lambda rs: [100.0 * r["dev"][metric] for r in rs]
  groups = [
      ("FT", value([r for r in done if r["beta"] == 0])),
      ("big-learn", value([r for r in done if r["beta"] > 0])),
  ]
  betas = sorted({r["beta"] for r in done})
  per_beta = [(f"{b:g}", value([r for r in done if r["beta"] == b])) for b in betas]
  ft = [r for r in done if r["beta"] == 0]
  diffs = []
  for size in table.get("sizes", {}):
    for b in betas:
      if b:
        runs = [r for r in done if r["beta"] == b and size_of(r) == size]
        base = [r for r in ft if size_of(r) == size]
        d = differences(base, runs, lambda r: 100.0 * r["dev"][metric]).ravel()
        d = d[~np.isnan(d)]
        if d.size:
          diffs.append((f"{size}\n{b:g}", list(d)))
  panels = [(groups, "FT vs big-learn"), (per_beta, r"by $\beta_{BigLearn}$ (0 is FT)")]
  if diffs:
    panels.append((diffs, "paired: big-learn - FT\n(data size, beta)"))
  fig, axes = plt.subplots(
      1,
      len(panels),
      figsize=(4.5 * len(panels), 3.8),
      gridspec_kw=dict(width_ratios=[2, 3, 3][: len(panels)]),
  )
  for k, (ax, (data, title)) in enumerate(zip(axes, panels)):
    data = [(n, v) for n, v in data if v]
    ax.boxplot([v for _, v in data], widths=0.5)
    ax.set_xticks(range(1, len(data) + 1), [n for n, _ in data])
    for i, (_, v) in enumerate(data):
      jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(v))
      ax.scatter(
          i + 1 + jitter, v, s=9, alpha=0.6, color="C1" if k < 2 and i == 0 else "C0", zorder=3
      )
    ax.set_title(title)
    ax.set_ylabel(f"dev {metric} (%)" if k < 2 else f"difference ({metric} points)")
    if k == 2:
      ax.axhline(0.0, color="k", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle(f"{table['task']}: {table['runs']} runs")
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=150)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)
