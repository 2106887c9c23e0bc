"""experiments.finetune / finetune_sweep / finetune_eval (App. E.2) on tiny models and GLUE-layout
files the tests write: pretraining from scratch, FT and big-learn runs, the sweep's Table 4 and
Fig. 18, scoring any file, resuming, and the refusals."""

import json
import os
import pathlib

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

import conftest
from bigjax.models import xlnet_weights
from bigjax import training
from bigjax.training import SignatureMismatchError
from configs import finetune as finetune_config
from experiments import finetune, finetune_eval, finetune_setup, finetune_sweep
from test_text_data import _sentences


def _write_rte(directory, n_train=16, n_dev=8, seed=0, bad_label=False):
  """RTE-layout files: label entailment when the pair's sentences start with the same word."""
  os.makedirs(directory, exist_ok=True)
  sentences = _sentences(2 * (n_train + n_dev), seed=seed, low=3, high=9)
  rows = []
  for i in range(n_train + n_dev):
    a, b = sentences[2 * i], sentences[2 * i + 1]
    if i % 2:
      b = a.split()[0] + " " + b
    label = "entailment" if a.split()[0] == b.split()[0] else "not_entailment"
    rows.append(f"{i}\t{a}\t{b}\t{label}")
  if bad_label:
    rows[n_train] = rows[n_train].rsplit("\t", 1)[0] + "\tmaybe"
  head = "index\tsentence1\tsentence2\tlabel\n"
  with open(os.path.join(directory, "train.tsv"), "w") as f:
    f.write(head + "\n".join(rows[:n_train]) + "\n")
  with open(os.path.join(directory, "dev.tsv"), "w") as f:
    f.write(head + "\n".join(rows[n_train:]) + "\n")
  with open(os.path.join(directory, "test.tsv"), "w") as f:
    f.write(
        "index\tsentence1\tsentence2\n"
        + "\n".join("\t".join(r.split("\t")[:3]) for r in rows[n_train:])
        + "\n"
    )
  return str(directory)


def pretrain_tiny(root) -> tuple[str, dict]:
  """A tiny XLNet pretrained from scratch with Eq. (15) (mode "pretrain") under `root` (a
  pathlib.Path): (workdir, summary)."""
  corpus = root / "corpus.txt"
  corpus.write_text("\n".join(_sentences(240, seed=3)) + "\n")
  config = finetune_config.get_config("smoke_pretrain")
  config.data.corpus = str(corpus)
  config.data.vocab_size = 70
  workdir = str(root / "run")
  return workdir, finetune.train(config, workdir, progress=False)


def shared_pretrained(tmp_path_factory) -> tuple[str, dict]:
  """`pretrain_tiny`'s (workdir, summary), trained once per test run (conftest.shared_dir; also
  read by test_multiprocess_runs): read it only."""
  root = conftest.shared_dir(
      tmp_path_factory, "tiny_pretrained", lambda path: pretrain_tiny(pathlib.Path(path))
  )
  workdir = os.path.join(root, "run")
  with open(os.path.join(workdir, finetune_setup.SUMMARY_FILE)) as f:
    return workdir, json.load(f)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  return shared_pretrained(tmp_path_factory)


@pytest.fixture(scope="module")
def rte_dir(tmp_path_factory):
  return _write_rte(tmp_path_factory.mktemp("glue") / "RTE")


def _smoke(model_dir, task_dir, **overrides):
  config = finetune_config.get_config("smoke")
  config.task = "rte"
  config.model_dir = model_dir
  config.data.task_dir = task_dir
  config.update(overrides)
  return config


def _tree_state(directory):
  return {
      os.path.relpath(os.path.join(r, n), directory): os.stat(os.path.join(r, n)).st_mtime_ns
      for r, _, files in os.walk(directory)
      for n in files
  }


def test_pretraining_writes_its_losses_completions_and_an_hf_directory(pretrained):
  transformers = pytest.importorskip("transformers")
  workdir, summary = pretrained
  assert summary["method"] == "pretrain" and summary["steps"] == summary["steps_per_epoch"]
  assert np.isfinite(summary["heldout_nll_per_token"])
  assert np.isfinite(summary["unigram_nll_per_token"]) and summary["unigram_nll_per_token"] > 0
  assert len(summary["completions"]) == 2
  assert all(set(c) == {"given", "completion", "original"} for c in summary["completions"])
  with open(os.path.join(workdir, "heldout.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows][-1] == summary["steps"]
  model_dir = summary["model_dir"]
  assert os.path.isfile(os.path.join(model_dir, "spiece.model"))
  model, params = xlnet_weights.load_pretrained(model_dir)
  assert model.lm_head and model.num_labels == 0 and model.vocab_size == 70
  hf = transformers.XLNetLMHeadModel.from_pretrained(model_dir)
  assert hf.config.d_model == model.d_model


def test_a_run_scores_dev_each_epoch_resumes_and_scores_any_file(pretrained, rte_dir, tmp_path):
  model_dir = pretrained[1]["model_dir"]
  workdir = str(tmp_path / "run")
  config = _smoke(model_dir, rte_dir, num_epochs=2, beta=0.5)
  result = finetune.train(config, workdir, progress=False)
  assert result["method"] == "big-learn" and result["steps"] == 4
  assert [e["epoch"] for e in result["epochs"]] == [1, 2] and result["compilations"] == 1
  assert result["dev"] == {k: v for k, v in result["epochs"][-1].items() if k != "epoch"}
  assert result["num_dev"] == 8 and 0.0 <= result["dev"]["accuracy"] <= 1.0
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    row = json.loads(f.readlines()[-1])
  assert {"ft_loss", "plm_loss", "plm_text_nll", "learning_rate"} <= set(row)
  # Resumed: nothing trained again, the same numbers.
  again = finetune.train(config, workdir, progress=False)
  assert again["resumed_from"] == 4 and again["dev"] == result["dev"]
  # Issue 27.3: the finished run with another config used to rewrite config.json and
  # result.json to claim FT, lr 0.5, seed 7 without training anything.
  before = _tree_state(workdir)
  other = _smoke(model_dir, rte_dir, num_epochs=2, beta=0.0, learning_rate=0.5, seed=7)
  with pytest.raises(training.ConfigMismatchError, match="beta: 0.5 there, 0.0 now"):
    finetune.train(other, workdir, progress=False)
  assert _tree_state(workdir) == before

  before = _tree_state(workdir)
  scores = finetune_eval.evaluate_file(
      workdir, os.path.join(rte_dir, "dev.tsv"), str(tmp_path / "scores")
  )
  assert scores["accuracy"] == result["dev"]["accuracy"] and scores["examples"] == 8
  lines = (tmp_path / "scores" / "predictions.tsv").read_text().splitlines()
  assert (
      lines[0].split("\t") == ["index", "prediction", "label", "p(entailment)", "p(not_entailment)"]
      and len(lines) == 9
  )
  unlabelled = finetune_eval.evaluate_file(
      workdir, os.path.join(rte_dir, "test.tsv"), str(tmp_path / "test_scores")
  )
  assert "accuracy" not in unlabelled and unlabelled["examples"] == 8
  with pytest.raises(ValueError, match="only reads"):
    finetune_eval.evaluate_file(
        workdir, os.path.join(rte_dir, "dev.tsv"), os.path.join(workdir, "scores")
    )
  # Issue 27.13: --out through a link into the run, a directory as --data, a batch below 1.
  os.symlink(workdir, tmp_path / "link")
  with pytest.raises(ValueError, match="only reads"):
    finetune_eval.evaluate_file(
        workdir, os.path.join(rte_dir, "dev.tsv"), str(tmp_path / "link" / "scores")
    )
  with pytest.raises(IsADirectoryError, match="--data .* is a directory"):
    finetune_eval.evaluate_file(workdir, rte_dir, str(tmp_path / "s2"))
  with pytest.raises(ValueError, match="--batch_size must be a positive integer"):
    finetune_eval.evaluate_file(
        workdir, os.path.join(rte_dir, "dev.tsv"), str(tmp_path / "s3"), batch_size=-4
    )
  assert _tree_state(workdir) == before  # the scorer only read the run


def test_beta_zero_runs_are_ft(pretrained, rte_dir, tmp_path):
  model_dir = pretrained[1]["model_dir"]
  result = finetune.train(
      _smoke(model_dir, rte_dir, beta=0.0), str(tmp_path / "ft"), progress=False
  )
  assert result["method"] == "FT"
  with open(tmp_path / "ft" / "metrics.jsonl") as f:
    assert "plm_loss" not in json.loads(f.readline())


def test_the_sweep_writes_table4_and_fig18_and_never_redoes_a_finished_run(
    pretrained, rte_dir, tmp_path
):
  model_dir = pretrained[1]["model_dir"]
  workdir = str(tmp_path / "sweep")
  config = _smoke(model_dir, rte_dir)
  table = finetune_sweep.sweep(config, workdir, progress=False)
  assert table["runs"] == 4 and not table["failed"]
  assert table["methods"]["FT"]["runs"] == 2 and table["methods"]["big-learn"]["runs"] == 2
  assert table["methods"]["FT"]["seed_spread"]["groups"] == 1
  assert set(table["betas"]) == {"0", "0.5"} and table["paired"]["pairs"] == 2
  for name in ("table4.json", "table4.md", "fig18.png", "sweep.json"):
    assert os.path.isfile(os.path.join(workdir, name))
  assert "| FT | 2 |" in (tmp_path / "sweep" / "table4.md").read_text()
  runs = sorted(os.listdir(os.path.join(workdir, "runs")))
  assert runs == sorted(finetune_sweep.run_name(p) for p in finetune_sweep.points(config))

  # Issue 27.1's reproduction: a kill between a run's last checkpoint and its dev row left
  # neither dev.jsonl nor result.json, and every rerun failed with FileNotFoundError.
  cut = os.path.join(workdir, "runs", runs[2])
  with open(os.path.join(cut, "result.json")) as f:
    finished = json.load(f)
  os.remove(os.path.join(cut, "dev.jsonl"))
  os.remove(os.path.join(cut, "result.json"))
  assert finetune_sweep.sweep(config, workdir, progress=False)["methods"] == table["methods"]
  with open(os.path.join(cut, "result.json")) as f:
    repaired = json.load(f)
  assert repaired["epochs"] == finished["epochs"] and repaired["dev"] == finished["dev"]

  # Again: nothing is trained or rewritten; a torn result.json is finished from its checkpoint.
  results = {r: os.stat(os.path.join(workdir, "runs", r, "result.json")).st_mtime_ns for r in runs}
  with open(os.path.join(workdir, "runs", runs[0], "result.json"), "w") as f:
    f.write('{"dev": ')
  again = finetune_sweep.sweep(config, workdir, progress=False)
  assert again["methods"] == table["methods"]
  for r in runs[1:]:
    assert os.stat(os.path.join(workdir, "runs", r, "result.json")).st_mtime_ns == results[r]
  with open(os.path.join(workdir, "runs", runs[0], "result.json")) as f:
    redone = json.load(f)
  assert redone["resumed_from"] == redone["steps"]  # evaluated, not retrained

  # A sweep written before `distributed`, the data-size axis and the mechanism switches existed
  # (its run configs and sweep.json without them) resumes: nothing is retrained, the same table
  # comes out.
  for path in [os.path.join(workdir, "runs", r, "config.json") for r in runs]:
    with open(path) as f:
      held = json.load(f)
    del held["distributed"], held["data"]["train_limit"], held["sweep"]["train_limits"]
    _without_switches(held)
    with open(path, "w") as f:
      json.dump(held, f)
  with open(os.path.join(workdir, "sweep.json")) as f:
    held = json.load(f)
  del held["grid"]["train_limits"]
  _without_switches(held["shared"])
  with open(os.path.join(workdir, "sweep.json"), "w") as f:
    json.dump(held, f)
  assert finetune_sweep.sweep(config, workdir, progress=False)["methods"] == table["methods"]
  for r in runs[1:]:
    assert os.stat(os.path.join(workdir, "runs", r, "result.json")).st_mtime_ns == results[r]

  # Another config's sweep directory, and a run directory of another run: refused, unchanged.
  before = _tree_state(workdir)
  other = _smoke(model_dir, rte_dir)
  other.data.max_length = 20
  with pytest.raises(finetune_sweep.SweepMismatchError, match="data.max_length: 24 there, 20"):
    finetune_sweep.sweep(other, workdir, progress=False)
  run_config = os.path.join(workdir, "runs", runs[1], "config.json")
  with open(run_config) as f:
    held = json.load(f)
  held["learning_rate"] = 0.5
  with open(run_config, "w") as f:
    json.dump(held, f)
  before = _tree_state(workdir)
  with pytest.raises(finetune_sweep.SweepMismatchError, match="another config"):
    finetune_sweep.sweep(config, workdir, progress=False)
  assert _tree_state(workdir) == before

  # Issue 27.9: repeated or empty grid values, refused before anything is written.
  for field, values, match in (
      ("seeds", (0, 0), r"sweep.seeds=\(0, 0\) repeats 0"),
      ("learning_rates", (), "sweep.learning_rates is empty"),
  ):
    bad = _smoke(model_dir, rte_dir)
    bad.sweep[field] = values
    with pytest.raises(ValueError, match=match):
      finetune_sweep.sweep(bad, str(tmp_path / "bad_grid"), progress=False)
    assert not os.path.exists(tmp_path / "bad_grid")
  # Issue 27.13: a truncated sweep.json.
  with open(os.path.join(workdir, "sweep.json"), "w") as f:
    f.write('{"shared": ')
  with pytest.raises(finetune_sweep.SweepMismatchError, match="sweep.json is unreadable"):
    finetune_sweep.sweep(config, workdir, progress=False)


def test_bad_input_gets_clear_errors(pretrained, rte_dir, tmp_path):
  model_dir = pretrained[1]["model_dir"]
  with pytest.raises(FileNotFoundError, match="model_dir .*does not exist"):
    finetune.train(_smoke(str(tmp_path / "nowhere"), rte_dir), str(tmp_path / "a"))
  with pytest.raises(ValueError, match="needs --config.model_dir"):
    finetune.train(_smoke("", rte_dir), str(tmp_path / "a"))
  bad = _write_rte(tmp_path / "BAD", bad_label=True)
  with pytest.raises(ValueError, match="label 'maybe' .* is not one of"):
    finetune.train(_smoke(model_dir, bad), str(tmp_path / "b"))
  # A directory with a 3-way classifier for a 2-label task.
  import jax

  model, params = xlnet_weights.load_pretrained(
      model_dir, num_labels=3, new_heads_rng=jax.random.key(0)
  )
  three = str(tmp_path / "three")
  xlnet_weights.save_pretrained(model, params, three)
  with pytest.raises(FileNotFoundError, match="neither spiece.model"):
    finetune.train(_smoke(three, rte_dir), str(tmp_path / "c"))
  (tmp_path / "three" / "spiece.model").write_bytes(
      open(os.path.join(model_dir, "spiece.model"), "rb").read()
  )
  with pytest.raises(ValueError, match="3-way classifier"):
    finetune.train(_smoke(three, rte_dir), str(tmp_path / "c"))
  # A run directory of another model is refused before anything in it changes.
  from bigjax.models import xlnet

  small = xlnet.XLNet(vocab_size=70, d_model=24, n_layer=1, n_head=2, d_inner=24)
  other = str(tmp_path / "other")
  xlnet_weights.save_pretrained(
      small, small.init(jax.random.key(0), np.zeros((1, 4), np.int32)), other
  )
  (tmp_path / "other" / "spiece.model").write_bytes(
      open(os.path.join(model_dir, "spiece.model"), "rb").read()
  )
  workdir = str(tmp_path / "d")
  finetune.train(_smoke(model_dir, rte_dir, beta=0.0), workdir, progress=False)
  before = _tree_state(workdir)
  with pytest.raises(SignatureMismatchError, match="another model"):
    finetune.train(_smoke(other, rte_dir, beta=0.0), workdir, progress=False)
  assert _tree_state(workdir) == before
  pre = finetune_config.get_config("smoke_pretrain")
  pre.data.corpus = str(tmp_path / "corpus.txt")
  (tmp_path / "corpus.txt").write_text("a b c\n")
  with pytest.raises(ValueError, match="a sweep fine-tunes"):
    finetune_sweep.sweep(pre, str(tmp_path / "e"), progress=False)
  with pytest.raises(ValueError, match="tune on dev only"):
    finetune.train(_with(_smoke(model_dir, rte_dir), "data.dev_split", "test"), str(tmp_path / "f"))


def _without_switches(config: dict) -> None:
  """Removes the fields experiments.finetune_step added from a config.json / sweep.json dict."""
  del config["body_lr_scale"]
  for name in ("label_weight", "label_only", "separate_adam"):
    del config["plm"][name]


def _with(config, key, value):
  *groups, name = key.split(".")
  node = config
  for g in groups:
    node = node[g]
  node[name] = value
  return config


def test_run_directory_refusals(pretrained, rte_dir, tmp_path):
  """Issue 27.4, 27.7 and 27.13: a workdir that is the model directory or a file, a failed start
  (it used to leave xlnet_config.json and spiece.model, refusing the next start), a pretraining
  run given to the scorer."""
  model_dir = pretrained[1]["model_dir"]
  before = _tree_state(model_dir)
  with pytest.raises(training.NotARunDirectoryError, match="is a model directory"):
    finetune.train(_smoke(model_dir, rte_dir), model_dir, progress=False)
  assert _tree_state(model_dir) == before
  (tmp_path / "file").write_text("x")
  with pytest.raises(training.NotARunDirectoryError, match="is a file"):
    finetune.train(_smoke(model_dir, rte_dir), str(tmp_path / "file"), progress=False)
  # A model directory whose weights do not load: the start fails and claims nothing.
  broken = tmp_path / "broken"
  broken.mkdir()
  for name in os.listdir(model_dir):
    (broken / name).write_bytes((open(os.path.join(model_dir, name), "rb")).read())
  data = (broken / "model.safetensors").read_bytes()
  (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
  workdir = tmp_path / "run"
  with pytest.raises(Exception):  # noqa: B017 (the weights module names the file)
    finetune.train(_smoke(str(broken), rte_dir), str(workdir), progress=False)
  assert not os.path.exists(workdir)
  result = finetune.train(_smoke(model_dir, rte_dir, beta=0.0), str(workdir), progress=False)
  assert result["method"] == "FT"
  with pytest.raises(ValueError, match="is a pretraining run"):
    finetune_eval.evaluate_file(
        pretrained[0], os.path.join(rte_dir, "dev.tsv"), str(tmp_path / "s")
    )


def test_dev_splits_that_measure_nothing_are_refused_before_training(pretrained, tmp_path):
  """Issue 27.8: an empty dev split failed only after epoch 1 trained and saved; a dev file that
  is the training file (or a link to it) was reported as dev accuracy. And seed=-1 failed only
  after compilation."""
  model_dir = pretrained[1]["model_dir"]
  task = _write_rte(tmp_path / "RTE")
  dev = os.path.join(task, "dev.tsv")
  header = open(dev).readline()
  with open(dev, "w") as f:
    f.write(header)
  with pytest.raises(ValueError, match=r"dev.tsv \(data.dev_split='dev'\) holds no example"):
    finetune.train(_smoke(model_dir, task), str(tmp_path / "a"), progress=False)
  os.remove(dev)
  os.symlink(os.path.join(task, "train.tsv"), dev)
  with pytest.raises(ValueError, match="is the training file"):
    finetune.train(_smoke(model_dir, task), str(tmp_path / "a"), progress=False)
  os.remove(dev)
  with open(os.path.join(task, "train.tsv")) as f, open(dev, "w") as g:
    g.write(f.read())
  with pytest.raises(ValueError, match="is the training file"):
    finetune.train(_smoke(model_dir, task), str(tmp_path / "a"), progress=False)
  with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
    finetune.train(_smoke(model_dir, task, seed=-1), str(tmp_path / "a"), progress=False)
  assert not os.path.exists(tmp_path / "a")


def test_train_limit_fine_tunes_on_a_fixed_subset_and_refuses_bad_sizes(
    pretrained, rte_dir, tmp_path
):
  model_dir = pretrained[1]["model_dir"]
  config = _smoke(model_dir, rte_dir, beta=0.0)
  config.data.train_limit = 8
  result = finetune.train(config, str(tmp_path / "n8"), progress=False)
  assert result["num_train"] == 8 and result["train_limit"] == 8
  assert result["steps"] == 8 // config.batch_size * config.num_epochs
  # dev.jsonl holds each half of dev too (select on one, report on the other).
  with open(tmp_path / "n8" / "dev.jsonl") as f:
    row = json.loads(f.readline())
  assert {"half_a_accuracy", "half_b_accuracy", "half_a_nll", "half_b_nll"} <= set(row)
  # A bad size is refused before anything is written; in a sweep the grid sets it.
  for bad, match in ((0, "positive integer"), (-2, "positive integer"), (17, r"\[1, 16\]")):
    c = _smoke(model_dir, rte_dir)
    c.data.train_limit = bad
    with pytest.raises(ValueError, match=match):
      finetune.train(c, str(tmp_path / "bad"), progress=False)
    assert not os.path.exists(tmp_path / "bad")
  sweep = _smoke(model_dir, rte_dir)
  sweep.sweep.train_limits = (8, 17)
  with pytest.raises(ValueError, match=r"\[1, 16\]"):
    finetune_sweep.sweep(sweep, str(tmp_path / "bad_sweep"), progress=False)
  assert not os.path.exists(tmp_path / "bad_sweep")
  sweep = _smoke(model_dir, rte_dir)
  sweep.data.train_limit = 8
  with pytest.raises(ValueError, match="sweep.train_limits"):
    finetune_sweep.sweep(sweep, str(tmp_path / "bad_sweep2"), progress=False)
  assert not os.path.exists(tmp_path / "bad_sweep2")


def test_mechanism_switches(pretrained, rte_dir, tmp_path):
  """Issue 23, item 5 (experiments.finetune_step): one step with plm.separate_adam and
  body_lr_scale against AdamW applied by hand to each term's gradient; a beta = 0 run with the
  switches on is FT bit for bit; label_only and label_weight runs record themselves; bad
  values are refused before anything is written."""
  import jax
  import optax

  from bigjax import finetuning
  from bigjax.training import optimizers, sharding
  from experiments import finetune_setup as setup
  from experiments import finetune_step

  model_dir = pretrained[1]["model_dir"]
  config = _smoke(model_dir, rte_dir, beta=0.4, body_lr_scale=0.25)
  config.plm.separate_adam = True
  hf_config = setup.hf_config_of(config)
  models = setup.build_models(hf_config, 2)
  params = setup.init_params(config, models, jax.random.key(0))
  state = finetune_step.init_state(config, params, jax.random.key(1))
  assert isinstance(state.opt_state, tuple) and len(state.opt_state) == 2
  data = setup.load_split(config, model_dir, "train")
  ids, tt, am, labels = (np.asarray(a[:4]) for a in data.arrays())
  batch = dict(input_ids=ids, token_type_ids=tt, attention_mask=am, labels=labels)
  lr, beta = np.float32(1e-3), np.float32(0.4)

  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), 0)
  body = lambda path: [getattr(k, "key", None) for k in path[:3]] == [
      "xlnet",
      "params",
      "transformer",
  ]

  @jax.jit  # one program: op by op, the hand computation compiled about 500 small ones
  def by_hand(params):
    terms = lambda p: finetuning.biglearn_terms(
        models.classifier, models.lm, p["xlnet"], batch, key, label_embedding=p["label_embedding"]
    )
    g_ft = jax.grad(lambda p: terms(p)[0])(params)
    g_plm = jax.grad(lambda p: terms(p)[1])(params)
    adam = lambda wd, g: optimizers.adamw_direction(weight_decay=wd, grad_clip=1.0).update(
        g, optimizers.adamw_direction(weight_decay=wd, grad_clip=1.0).init(params), params
    )[0]
    direction = jax.tree.map(lambda a, b: a + beta * b, adam(0.0, g_ft), adam(0.0, g_plm))
    return jax.tree_util.tree_map_with_path(
        lambda path, p, u: p - lr * (0.25 if body(path) else 1.0) * u, params, direction
    )

  want = by_hand(params)
  distance = jax.jit(lambda a, b: optax.tree.norm(jax.tree.map(lambda x, y: x - y, a, b)))
  assert float(distance(want, params)) > 0  # (jitted: op by op, one program per leaf shape)
  step = finetune_step.compiled_step(  # (it donates the state: `params` is gone after it)
      json.dumps(hf_config, sort_keys=True),
      2,
      mesh=sharding.data_mesh(),
      **finetune_step.step_options(config),
  )
  new, metrics = step(state, ids, tt, am, labels, lr, beta)
  np.testing.assert_allclose(
      float(metrics["loss"]),
      float(metrics["ft_loss"]) + 0.4 * float(metrics["plm_loss"]),
      rtol=1e-6,
  )
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new.params, want
  )

  # beta = 0 with every plm.* switch on is the FT run, bit for bit.
  ft = finetune.train(_smoke(model_dir, rte_dir, beta=0.0), str(tmp_path / "ft"), progress=False)
  switched = _smoke(model_dir, rte_dir, beta=0.0)
  switched.plm.update(dict(separate_adam=True, label_only=True, label_weight=2.0))
  same = finetune.train(switched, str(tmp_path / "ft_switched"), progress=False)
  assert same["dev"] == ft["dev"] and same["method"] == "FT"
  assert (
      open(tmp_path / "ft_switched" / "dev.jsonl").read()
      == open(tmp_path / "ft" / "dev.jsonl").read()
  )

  # label_only: Eq. (15) has no text target; recorded in result.json.
  config = _smoke(model_dir, rte_dir, beta=0.4)
  config.plm.label_only = True
  result = finetune.train(config, str(tmp_path / "label_only"), progress=False)
  assert result["label_only"] is True and result["separate_adam"] is False
  assert result["body_lr_scale"] == 1.0 and result["label_weight"] is None
  with open(tmp_path / "label_only" / "metrics.jsonl") as f:
    row = json.loads(f.readline())
  assert row["plm_text_nll"] == 0.0  # one target, the label, per example of Eq. (15)
  assert row["plm_num_targets"] == (config.plm.batch_size or config.batch_size)

  for key, value, match in (
      ("body_lr_scale", 0.0, "body_lr_scale must be > 0"),
      ("plm.label_weight", -1.0, "plm.label_weight must be None or a number >= 0"),
  ):
    with pytest.raises(ValueError, match=match):
      finetune.train(_with(_smoke(model_dir, rte_dir), key, value), str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")
  pre = finetune_config.get_config("smoke_pretrain")
  pre.data.corpus = str(tmp_path / "corpus.txt")
  (tmp_path / "corpus.txt").write_text("a b c\n")
  pre.plm.label_only = True
  with pytest.raises(ValueError, match="fine-tuning settings"):
    finetune.train(pre, str(tmp_path / "bad"))
  assert not os.path.exists(tmp_path / "bad")
