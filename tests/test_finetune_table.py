"""Table 4's fair statistics (experiments.finetune_table / finetune_report) on hand-made sweep
results, the training subsets (bigjax.data.glue.subset / halves) and the sweep's data-size axis.
No training here: the runs are dicts shaped as experiments.finetune writes them."""

import itertools
import json

import numpy as np
import pytest

from bigjax import stats
from bigjax.data import glue
from configs import finetune as finetune_config
from experiments import finetune_report, finetune_sweep, finetune_table

LRS, SEEDS, BETAS = (1e-4, 2e-4, 4e-4), (0, 1, 2), (0.0, 0.4, 0.8)


def _accuracy(lr, beta, seed, size):
  """A made-up dev accuracy (fraction): FT best at the middle lr; beta 0.4 gains 1 point at
  size 250 and loses 1 at full size, beta 0.8 loses 2 everywhere; a seed effect shared by the
  methods (so pairs cancel it)."""
  base = {1e-4: 0.60, 2e-4: 0.70, 4e-4: 0.65}[lr] + 0.01 * seed
  gain = {0.0: 0.0, 0.4: 0.01 if size == 250 else -0.01, 0.8: -0.02}[beta]
  return base + gain


def _run(lr, beta, seed, size, *, halves=True, epochs=3):
  final = _accuracy(lr, beta, seed, size)
  rows = []
  for e in range(1, epochs + 1):
    acc = final - 0.02 * (epochs - e)  # climbing: the best epoch is the last
    row = dict(epoch=e, accuracy=acc, nll=1.0 - acc)
    if halves:  # half A slightly above the full dev, half B below
      row.update(
          half_a_accuracy=acc + 0.005,
          half_a_nll=1 - acc,
          half_b_accuracy=acc - 0.005,
          half_b_nll=1 - acc,
      )
    rows.append(row)
  r = dict(
      task="lexname",
      method="FT" if not beta else "big-learn",
      beta=beta,
      learning_rate=lr,
      num_epochs=epochs,
      warmup_steps=30,
      seed=seed,
      seconds=10.0 * (1 + 2 * (beta > 0)),
      dev={k: v for k, v in rows[-1].items() if k != "epoch"},
      best_epoch=epochs,
      best_dev={k: v for k, v in rows[-1].items() if k != "epoch"},
      epochs=rows,
  )
  if size is not None:
    r["train_limit"] = size
  return r


def _results(sizes=(250, None), **kw):
  return [_run(lr, b, s, n, **kw) for n, s, lr, b in itertools.product(sizes, SEEDS, LRS, BETAS)]


def test_paired_statistics_equal_the_hand_computation():
  table = finetune_table.table4("lexname", _results())
  assert list(table["sizes"]) == ["250", "all"]
  small, full = table["sizes"]["250"], table["sizes"]["all"]
  # beta 0.4: +1 point in each of 3 cells x 3 seeds at size 250, -1 at full size.
  p = small["paired"]["0.4"]["final"]
  assert (p["pairs"], p["wins"], p["losses"], p["seeds"], p["cells"]) == (9, 9, 0, 3, 3)
  assert p["mean"] == pytest.approx(1.0) and p["interval"] == pytest.approx([1.0, 1.0])
  assert p["sign_test_p"] == pytest.approx(2 / 2**9)
  assert p["sign_flip_p"] == pytest.approx(2 / 2**3)  # 3 seeds: the smallest attainable
  assert full["paired"]["0.4"]["final"]["mean"] == pytest.approx(-1.0)
  assert full["paired"]["0.8"]["final"]["losses"] == 9
  # Overall: each pair's difference averaged over the betas, (+1 - 2) / 2 at size 250.
  assert small["paired"]["overall"]["final"]["mean"] == pytest.approx(-0.5)
  # NLL differences: 1 - accuracy, so -0.01 nats where big-learn gains a point.
  assert small["paired"]["0.4"]["nll"]["mean"] == pytest.approx(-0.01)
  # Holm over the family of 2 sizes x 2 betas, from the sign-flip p-values (all 0.25).
  holm = [
      table["sizes"][s]["paired"][b]["final"]["holm_p"]
      for s in ("250", "all")
      for b in ("0.4", "0.8")
  ]
  assert holm == pytest.approx(stats.holm([0.25] * 4))
  # The pooled paired line of the paper's view counts every pair of every size.
  assert table["paired"]["pairs"] == 2 * 2 * 9


def test_best_and_median_over_equal_numbers_of_runs():
  table = finetune_table.table4("lexname", _results())
  eq = table["sizes"]["250"]["equal_count"]
  ft = [100 * _accuracy(lr, 0.0, s, 250) for lr in LRS for s in SEEDS]
  b4 = [100 * _accuracy(lr, 0.4, s, 250) for lr in LRS for s in SEEDS]
  b8 = [100 * _accuracy(lr, 0.8, s, 250) for lr in LRS for s in SEEDS]
  assert eq["FT"]["best"] == pytest.approx(max(ft)) and eq["FT"]["runs"] == 9
  assert eq["0.4"]["best"] == pytest.approx(max(b4))
  assert eq["0.4"]["ft_best_same_runs"] == pytest.approx(max(ft))
  assert eq["0.4"]["median"] == pytest.approx(np.median(b4))
  pooled = eq["big-learn"]
  assert pooled["runs"] == 18 and pooled["draws"] == 9
  assert pooled["paper_best_of_all_betas"] == pytest.approx(max(b4 + b8))
  brute = np.mean([max(c) for c in itertools.combinations(b4 + b8, 9)])
  assert pooled["expected_best_of_ft_count"] == pytest.approx(brute)
  assert pooled["expected_best_of_ft_count"] < pooled["paper_best_of_all_betas"]


def test_selection_on_one_half_reported_on_the_other():
  table = finetune_table.table4("lexname", _results())
  sel = table["sizes"]["all"]["selected"]
  # FT's best cell is lr 2e-4 on either half; reported on the other half, seed-averaged.
  for direction, shift in (("a_to_b", -0.5), ("b_to_a", +0.5)):
    assert sel["FT"][direction]["cell"]["learning_rate"] == 2e-4
    want = np.mean([100 * _accuracy(2e-4, 0.0, s, None) + shift for s in SEEDS])
    assert sel["FT"][direction]["report"] == pytest.approx(want)
  assert sel["FT"]["report"] == pytest.approx(
      np.mean([100 * _accuracy(2e-4, 0, s, None) for s in SEEDS])
  )
  assert sel["paired"]["0.4"]["mean"] == pytest.approx(-1.0)
  assert sel["paired"]["0.4"]["pairs"] == len(SEEDS)  # one per seed, both directions averaged
  # Every run peaked at its last epoch, and FT's optimum is inside the lr grid.
  assert table["sizes"]["all"]["methods"]["FT"]["not_converged"] == 9
  opt = table["sizes"]["all"]["ft_optimum"]
  assert opt["cell"]["learning_rate"] == 2e-4 and not opt["on_edge"]["learning_rate"]


def test_runs_from_before_the_halves_and_sizes_still_make_a_table(tmp_path):
  old = _results(sizes=(None,), halves=False)
  for r in old:
    assert "train_limit" not in r
  table = finetune_table.table4("lexname", old)
  assert list(table["sizes"]) == ["all"] and table["sizes"]["all"]["selected"] == {}
  assert table["sizes"]["all"]["paired"]["0.4"]["final"]["mean"] == pytest.approx(-1.0)
  text = finetune_report.table4_markdown(table)
  assert "| FT | 9 |" in text and "## all training examples" in text
  assert "Selected on one half" not in text
  finetune_report.figure(table, old, str(tmp_path / "fig18.png"))
  assert (tmp_path / "fig18.png").stat().st_size > 0
  json.dumps(table)  # table4.json


def test_the_report_shows_every_size(tmp_path):
  results = _results()
  table = finetune_table.table4("lexname", results)
  text = finetune_report.table4_markdown(table)
  for size in ("250", "all"):
    assert f"## {size} training examples" in text
  assert "| 0.4 | 9 | +1.00 [+1.00, +1.00]" in text
  assert "the paper's way, best of all 18" in text
  assert "Selected beta 0.4 - selected FT" in text
  finetune_report.figure(table, results, str(tmp_path / "fig18.png"))


def test_the_training_subset_is_fixed_seeded_and_nested():
  ex = glue.Examples([f"s{i}" for i in range(50)], None, np.arange(50, dtype=np.int32) % 3)
  a, b = glue.subset(ex, 20), glue.subset(ex, 20)
  assert a.first == b.first and len(a.first) == 20
  # Labels stay with their sentences; the small subset is inside the large one.
  assert all(ex.labels[int(s[1:])] == y for s, y in zip(a.first, a.labels))
  assert set(glue.subset(ex, 5).first) <= set(a.first)
  assert glue.subset(ex, None) is ex and len(glue.subset(ex, 50).first) == 50
  for bad in (0, -3, 51, 2.5, True):
    with pytest.raises(ValueError, match="data.train_limit"):
      glue.subset(ex, bad)
  h1, h2 = glue.halves(9)
  assert len(h1) == 4 and len(h2) == 5 and not set(h1) & set(h2)
  assert sorted(np.concatenate([h1, h2])) == list(range(9))


def test_the_sweep_has_a_data_size_axis_with_old_names_kept():
  config = finetune_config.get_config("smoke")
  config.sweep.train_limits = (8, None)
  points = finetune_sweep.points(config)
  assert len(points) == 2 * 2 * 2  # betas x seeds x sizes
  names = {finetune_sweep.run_name(p) for p in points}
  assert "lr0.001_ep1_wu0_beta0_seed0" in names  # the whole split: the name runs always had
  assert "lr0.001_ep1_wu0_beta0_seed0_n8" in names
  c = finetune_sweep.run_config(config, [p for p in points if p["train_limit"] == 8][0])
  assert c.data.train_limit == 8 and "train_limit" not in c


def test_the_summary_over_sweeps_holm_adjusts_the_whole_family(tmp_path):
  from benchmarks import finetune_fair

  for name, sizes in (("a", (250,)), ("b", (None,))):
    (tmp_path / name).mkdir()
    table = finetune_table.table4("lexname", _results(sizes=sizes))
    (tmp_path / name / "table4.json").write_text(json.dumps(table))
  rows = finetune_fair.rows([str(tmp_path / "a"), str(tmp_path / "b")])
  assert [(r["size"], r["beta"]) for r in rows] == [
      ("250", "0.4"),
      ("250", "0.8"),
      ("all", "0.4"),
      ("all", "0.8"),
  ]
  assert [r["holm_p"] for r in rows] == pytest.approx(stats.holm([0.25] * 4))
  assert rows[0]["final"]["mean"] == pytest.approx(1.0) and rows[0]["cost"] == pytest.approx(3.0)
  text = finetune_fair.markdown(rows)
  assert "| lexname | 250 | 0.4 | 9 | +1.00 [+1.00, +1.00]" in text


def test_the_mechanism_groups_pair_against_ft_and_big_learn(tmp_path):
  """benchmarks.finetune_mechanisms: each group's runs paired by cell and seed with the FT
  group's (and a big-learn group's with the plain big-learn group's), differences by hand."""
  from benchmarks import finetune_mechanisms

  shift = {
      "ft": (0.0, 0.0),
      "bl": (0.4, -0.02),
      "bl_separate": (0.4, 0.01),
      "ft_body": (0.0, 0.005),
  }
  for group, (beta, delta) in shift.items():
    for seed in range(3):
      r = _run(4e-4, 0.0, seed, 1000)
      r.update(beta=beta, seconds=10.0 * (1 + 2 * (beta > 0)))
      r["dev"] = dict(r["dev"], accuracy=r["dev"]["accuracy"] + delta)
      d = tmp_path / group / "runs" / f"seed{seed}"
      d.mkdir(parents=True)
      (d / "result.json").write_text(json.dumps(r))
  (tmp_path / "empty" / "runs").mkdir(parents=True)  # a group without finished runs: skipped
  rows = finetune_mechanisms.table(finetune_mechanisms.groups(str(tmp_path)), "ft", "bl")
  got = {(r["group"], r["base"]): r for r in rows}
  assert set(got) == {
      ("bl", "ft"),
      ("bl_separate", "ft"),
      ("bl_separate", "bl"),
      ("ft_body", "ft"),
  }
  for (group, base), r in got.items():
    want = 100.0 * (shift[group][1] - shift[base][1])
    assert r["size"] == "1000" and r["final"]["pairs"] == 3
    np.testing.assert_allclose(r["final"]["mean"], want, atol=1e-9)
    assert r["cost"] == (3.0 if base == "ft" and shift[group][0] else 1.0)
  assert "| bl_separate | bl | 1000 | 3 | +3.00 [+3.00, +3.00] | 3/0/0 |" in (
      finetune_mechanisms.markdown(rows)
  )
  # A group trained for other epochs (compute-matched FT) pairs by everything else.
  for seed in range(3):
    r = _run(4e-4, 0.0, seed, 1000, epochs=7)
    r["dev"] = dict(r["dev"], accuracy=r["dev"]["accuracy"] + 0.03)
    (tmp_path / "ft_time" / "runs" / f"seed{seed}").mkdir(parents=True)
    (tmp_path / "ft_time" / "runs" / f"seed{seed}" / "result.json").write_text(json.dumps(r))
  rows = finetune_mechanisms.table(finetune_mechanisms.groups(str(tmp_path)), "ft", "bl")
  (matched,) = [r for r in rows if r["group"] == "ft_time"]
  assert matched["final"]["pairs"] == 3 and matched["base"] == "ft"
  np.testing.assert_allclose(matched["final"]["mean"], 3.0, atol=1e-9)
