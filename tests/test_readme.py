"""The README and the pages in docs/: their code runs as written, and their links resolve."""

from collections.abc import Iterator
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")

# The marked blocks of each page and the test that runs them; a marked block no test runs fails
# test_every_marked_block_is_run.
MARKED_BLOCKS = {
    "own_training_loop.md": ("embed-example",),
    "xlnet.md": ("xlnet-load", "xlnet-query", "xlnet-save", "xlnet-tfds", "xlnet-wordnet"),
    "finetuning.md": (
        "finetune-glue",
        "finetune-wordnet",
        "finetune-fair",
        "finetune-mechanisms",
        "finetune-variants",
    ),
    "distributed.md": ("launch",),  # run by test_multiprocess.py
}


def _read(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _block(page: str, marker: str, language: str = "python") -> str:
  """The `language` block that follows `<!-- marker -->` in docs/`page`."""
  match = re.search(
      rf"<!-- {marker} -->\s*```{language}\n(.*?)```", _read(os.path.join(DOCS, page)), re.S
  )
  assert match, f"no {language} block after <!-- {marker} --> in docs/{page}"
  return match.group(1)


def test_the_embedding_example_trains_a_generator_for_every_task(capsys):
  namespace = {}
  exec(
      compile(
          _block("own_training_loop.md", "embed-example"),
          "docs/own_training_loop.md:embed-example",
          "exec",
      ),
      namespace,
  )
  d_losses, g_losses = zip(*[(float(d), float(g)) for d, g in namespace["history"]])
  assert all(map(lambda v: v == v and abs(v) < 1e3, d_losses + g_losses))  # finite
  # Completions follow the given half's sign (zeros would be 0.57 off, the wrong sign 1.1).
  assert namespace["error"] < 0.35
  assert "completion error" in capsys.readouterr().out


def test_the_xlnet_blocks_run_on_a_tiny_model_and_glue_files(tmp_path, monkeypatch, capsys):
  """Sections 2-6 of "XLNet in Flax": a tiny perturbed HF XLNet with a SentencePiece vocabulary
  stands in for xlnet-base-cased, and GLUE files in GLUE's layouts for glue_data/."""
  import numpy as np
  import pytest

  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("tensorflow_datasets")
  import test_text_data as text
  from bigjax.data import tokenizer as xtok
  from bigjax.models import xlnet_weights

  monkeypatch.chdir(tmp_path)
  (tmp_path / "corpus.txt").write_text("\n".join(text._sentences(400)) + "\n")
  xtok.train_sentencepiece("corpus.txt", "xlnet-base-cased", vocab_size=70)
  torch.manual_seed(0)
  hf = transformers.XLNetLMHeadModel(
      transformers.XLNetConfig(vocab_size=70, d_model=32, n_layer=2, n_head=4, d_inner=48)
  ).eval()
  hf.save_pretrained("xlnet-base-cased")
  for task, files in text.GLUE_FILES.items():
    (tmp_path / "glue_data" / task).mkdir(parents=True)
    for name, content in files.items():
      (tmp_path / "glue_data" / task / name).write_text(content, encoding="utf-8")
  text._fake_download(monkeypatch, tmp_path / "glue_data")

  namespace = {}
  for marker in MARKED_BLOCKS["xlnet.md"]:
    exec(compile(_block("xlnet.md", marker), f"docs/xlnet.md:{marker}", "exec"), namespace)
  out = capsys.readouterr().out
  assert "0 of 1 pairs truncated" in out and "{'accuracy': " in out
  assert "(2, 128, 32) (2, 128, 70)" in out
  assert len(namespace["dev"].first) == 1  # the tfds route's RTE dev
  assert namespace["batch"].input_ids.shape == (5000, 128)  # the shipped lexname train
  saved = transformers.XLNetForSequenceClassification.from_pretrained("xlnet-rte").eval()
  x = namespace["x"]
  with torch.no_grad():
    logits = saved(
        **{
            k: torch.tensor(np.asarray(v, np.int64))
            for k, v in (
                ("input_ids", x.input_ids),
                ("token_type_ids", x.token_type_ids),
                ("attention_mask", x.attention_mask),
            )
        }
    ).logits.numpy()
  assert namespace["model"].num_labels == 10  # section 6's model
  model, params = xlnet_weights.load_pretrained("xlnet-rte")  # section 4's, read back
  ours = model.apply(
      params, x.input_ids, token_type_ids=x.token_type_ids, attention_mask=x.attention_mask
  )["logits"]
  assert np.abs(np.asarray(ours) - logits).max() < 1e-4


def _bash_commands(page: str, marker: str) -> list[list[str]]:
  """The `python -m ...` lines of the bash block after `<!-- marker -->` in docs/`page`, split as
  a shell would."""
  import shlex

  return [
      shlex.split(line)[2:]
      for line in _block(page, marker, "bash").splitlines()
      if line.startswith("python -m ")
  ]


def _flags(args: list[str]) -> dict[str, str]:
  out = {}
  i = 0
  while i < len(args):
    assert args[i].startswith("--"), f"documented command argument {args[i]!r} is not a flag"
    key, sep, value = args[i][2:].partition("=")
    if not sep:
      value, i = args[i + 1], i + 1
    out[key] = value
    i += 1
  return out


def _in(tmp_path, flags: dict[str, str]) -> dict[str, str]:
  """`flags` with the documented /tmp/... paths moved under the test's `tmp_path` (a test never
  writes outside it: another run's files there would be a sweep of other code)."""
  return {
      k: str(tmp_path / v[len("/tmp/") :]) if v.startswith("/tmp/") else v for k, v in flags.items()
  }


def _config_from(flags: dict[str, str], extra: dict[str, object]):
  """The experiment config a command line asks for (--config FILE:ARG and --config.K=V), with
  `extra` overrides on top."""
  import ast
  import importlib

  path, _, arg = flags["config"].partition(":")
  config = importlib.import_module("configs." + os.path.basename(path)[:-3]).get_config(arg)

  def put(key, value):
    *groups, name = key.split(".")
    node = config
    for g in groups:
      node = node[g]
    assert name in node, f"documented flag --config.{key} names no config field"
    node[name] = value

  for key, value in flags.items():
    if key.startswith("config."):
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass
      put(key[len("config.") :], value)
  for key, value in extra.items():
    put(key, value)
  return config


def test_the_glue_finetuning_commands_run_end_to_end_on_fixtures(tmp_path, monkeypatch):
  """The "Big learning as a fine-tuning strategy" GLUE commands, in-process, on a tiny random HF
  XLNet saved by transformers (standing in for xlnet-base-cased) and GLUE-layout files: each
  sweep on a two-run grid (FT and beta 0.4, the other grid fields at the documented run's values),
  then the scorer on the run docs/finetuning.md names."""
  import pytest

  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  import test_text_data as text
  from test_finetune_experiment import _write_rte
  from bigjax.data import tokenizer as xtok
  from experiments import finetune_eval, finetune_sweep

  monkeypatch.chdir(tmp_path)
  (tmp_path / "corpus.txt").write_text("\n".join(text._sentences(400)) + "\n")
  xtok.train_sentencepiece("corpus.txt", "xlnet-base-cased", vocab_size=70)
  torch.manual_seed(0)
  transformers.XLNetLMHeadModel(
      transformers.XLNetConfig(vocab_size=70, d_model=16, n_layer=1, n_head=2, d_inner=24)
  ).save_pretrained("xlnet-base-cased")
  _write_rte(tmp_path / "glue_data" / "RTE")
  sentences = text._sentences(48, seed=5)
  mrpc_head = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
  mrpc = [f"{i % 2}\t{i}\t{i + 100}\t{sentences[i]}\t{sentences[i + 24]}" for i in range(24)]
  sst = [f"{s}\t{i % 2}" for i, s in enumerate(sentences[:24])]
  for task, head, rows in (("MRPC", mrpc_head, mrpc), ("SST-2", "sentence\tlabel\n", sst)):
    os.makedirs(tmp_path / "glue_data" / task)
    (tmp_path / "glue_data" / task / "train.tsv").write_text(head + "\n".join(rows[:16]) + "\n")
    (tmp_path / "glue_data" / task / "dev.tsv").write_text(head + "\n".join(rows[16:]) + "\n")

  commands = _bash_commands("finetuning.md", "finetune-glue")
  assert [c[0] for c in commands] == ["experiments.finetune_sweep"] * 3 + [
      "experiments.finetune_eval"
  ]
  small = {
      "batch_size": 8,
      "sweep.learning_rates": (2e-5,),
      "sweep.num_epochs": (3,),
      "sweep.warmup_steps": (0,),
      "sweep.betas": (0.0, 0.4),
      "sweep.seeds": (0,),
  }
  for args in commands[:3]:
    flags = _in(tmp_path, _flags(args[1:]))
    table = finetune_sweep.sweep(_config_from(flags, small), flags["workdir"], progress=False)
    assert table["methods"]["FT"]["runs"] == 1 and table["methods"]["big-learn"]["runs"] == 1
    assert os.path.isfile(os.path.join(flags["workdir"], "fig18.png"))
  assert "f1" in table["methods"]["FT"] or table["task"] != "mrpc"
  flags = _in(tmp_path, _flags(commands[3][1:]))
  scores = finetune_eval.evaluate_file(flags["workdir"], flags["data"], flags["out"])
  with open(os.path.join(flags["workdir"], "result.json")) as f:
    assert scores["accuracy"] == __import__("json").load(f)["dev"]["accuracy"]


def test_the_wordnet_commands_name_real_modules_configs_and_fields(tmp_path):
  """The WordNet block: the corpus builder on WordNet-format files the test writes, and the
  pretraining and sweep command lines checked against their configs (their runs are the ones
  benchmarks/RESULTS.md reports; tests/test_finetune_experiment.py runs both modes small)."""
  import importlib
  from bigjax.data import wordnet_corpus
  from experiments import cli

  root = tmp_path / "wordnet-base" / "usr" / "share" / "wordnet"
  os.makedirs(root)
  dev = open(os.path.join(wordnet_corpus.glue.wordnet_dir("lexname"), "dev.tsv")).read()
  held_out = dev.splitlines()[1].split("\t")[0]
  for pos in wordnet_corpus.PARTS_OF_SPEECH:
    (root / f"data.{pos}").write_text(
        "  1 This software and database is being provided to you\n"
        f'00001740 03 n 01 thing 0 000 | a {pos} thing; "an example"\n'
        f'00001741 03 n 01 held 0 000 | {held_out}; "left out"\n'
    )
  commands = _bash_commands("finetuning.md", "finetune-wordnet")
  assert commands[0][0] == "bigjax.data.wordnet_corpus"
  flags = _flags(commands[0][1:])
  os.chdir(tmp_path)
  wordnet_corpus.main([f"--wordnet_dir={flags['wordnet_dir']}", f"--out={flags['out']}"])
  assert (tmp_path / "corpus.txt").read_text().splitlines() == [
      f'a {pos} thing; "an example"' for pos in wordnet_corpus.PARTS_OF_SPEECH
  ]
  for args in commands[1:]:
    importlib.import_module(args[0])
    assert cli.unknown_config_keys(["prog"] + args[1:], "configs/finetune.py") == []
    _config_from(_flags(args[1:]), {})


def test_the_fair_comparison_commands_name_real_configs_and_sizes():
  """The fair-comparison block: each sweep's flags are fields of configs/finetune.py and give
  a grid over one data size; the summary is benchmarks.finetune_fair (tested on hand-made
  tables in tests/test_finetune_table.py)."""
  import importlib
  from experiments import cli, finetune_sweep

  commands = _bash_commands("finetuning.md", "finetune-fair")
  sweeps = ["experiments.finetune_sweep"] * 6
  assert [c[0] for c in commands] == sweeps + ["benchmarks.finetune_fair"]
  tasks = ["lexname"] * 3 + ["hypernym"] * 3
  for args, size, task in zip(commands[:6], (250, 1000, None, 250, 1000, None), tasks):
    assert cli.unknown_config_keys(["prog"] + args[1:], "configs/finetune.py") == []
    config = _config_from(_flags(args[1:]), {})
    grid = finetune_sweep.points(config)
    assert {p["train_limit"] for p in grid} == {size}
    assert len(grid) == len(config.sweep.learning_rates) * 2 * len(config.sweep.seeds)
    assert config.plm.batch_size == 0  # Eq. (15) on the whole batch
    assert config.task == task
  # The summary reads every sweep of the block.
  assert commands[6][1:] == [_flags(args[1:])["workdir"] for args in commands[:6]]
  importlib.import_module(commands[6][0])


def test_the_variant_sweeps_sit_at_cells_of_the_fair_grids():
  """The variants block: each sweep is one cell (task, data size, learning rate, epochs) of
  the fair-comparison sweep of the same task and size, with one Eq. (15) option changed
  (plm.label_only on, or plm.batch_size, Eq. (15)'s share of the batch) and nothing else, so
  its FT runs repeat that sweep's; the summary reads every sweep of the block."""
  import importlib
  from experiments import cli, finetune_sweep

  fair = {}
  for args in _bash_commands("finetuning.md", "finetune-fair")[:-1]:
    config = _config_from(_flags(args[1:]), {})
    fair[config.task, finetune_sweep.points(config)[0]["train_limit"]] = config
  commands = _bash_commands("finetuning.md", "finetune-variants")
  assert [c[0] for c in commands] == ["experiments.finetune_sweep"] * 7 + [
      "benchmarks.finetune_fair"
  ]
  changed = []
  for args in commands[:7]:
    assert cli.unknown_config_keys(["prog"] + args[1:], "configs/finetune.py") == []
    config = _config_from(_flags(args[1:]), {})
    grid = finetune_sweep.points(config)
    (size,) = {p["train_limit"] for p in grid}
    base = fair[config.task, size]
    assert len(config.sweep.learning_rates) == len(config.sweep.num_epochs) == 1
    assert config.sweep.learning_rates[0] in base.sweep.learning_rates
    assert config.sweep.num_epochs[0] in base.sweep.num_epochs
    assert tuple(config.sweep.betas) == (0.0, 0.4) == tuple(base.sweep.betas)
    assert set(config.sweep.seeds) <= set(base.sweep.seeds)
    ours, theirs = finetune_sweep._shared(config), finetune_sweep._shared(base)
    diff = {k for k in ours["plm"] if ours["plm"][k] != theirs["plm"][k]}
    ours["plm"], theirs["plm"] = {}, {}
    assert ours == theirs, (config.task, size)  # only Eq. (15)'s options differ
    changed.append(diff)
  assert changed == [{"label_only"}] * 5 + [{"batch_size"}] * 2
  assert commands[7][1:] == [_flags(args[1:])["workdir"] for args in commands[:7]]
  importlib.import_module(commands[7][0])


def test_the_mechanism_script_runs_one_switch_per_group():
  """benchmarks/finetune_mechanisms.sh (docs/finetuning.md): every flag is a field of
  configs/finetune.py, and each group differs from FT or plain big-learn in one switch of
  experiments.finetune_step, at the documented cell."""
  import shlex
  import subprocess

  from experiments import cli, finetune_step

  block = _block("finetuning.md", "finetune-mechanisms", "bash").splitlines()
  assert block[0].startswith("bash benchmarks/finetune_mechanisms.sh ")
  assert _bash_commands("finetuning.md", "finetune-mechanisms")[0][0] == (
      "benchmarks.finetune_mechanisms"
  )
  script = os.path.join(REPO, "benchmarks", "finetune_mechanisms.sh")
  syntax = subprocess.run(["bash", "-n", script], capture_output=True, text=True, timeout=60)
  assert syntax.returncode == 0, syntax.stderr  # the shell parses it
  text = _read(script)
  common = shlex.split(re.search(r"common=\((.*?)\)", text, re.S).group(1))
  common = [a.replace("$model_dir", "models/wordnet_xlnet_small") for a in common]
  groups = {
      words[1]: words[3:]
      for words in (shlex.split(line) for line in text.splitlines() if line.startswith("  run "))
  }
  assert list(groups) == [
      "ft",
      "bl",
      "ft_body6",
      "bl_separate",
      "bl_label1",
      "bl_label_only",
      "ft_time",
  ]
  options = {}
  for group, flags in groups.items():
    args = common + flags + ["--config.seed=0"]
    assert cli.unknown_config_keys(["prog"] + args, "configs/finetune.py") == []
    config = _config_from(_flags(args), {})
    epochs = 25 if group == "ft_time" else 10  # compute-matched: as long as big-learn's 10
    assert (config.data.train_limit, config.num_epochs, config.learning_rate) == (
        1000,
        epochs,
        8e-4,
    )
    options[group] = finetune_step.step_options(config)
  changed = lambda a, b: {k for k in options[a] if options[a][k] != options[b][k]}
  assert changed("bl", "ft") == {"plm"}
  assert changed("ft_body6", "ft") == {"body_lr_scale"}
  assert changed("bl_separate", "bl") == {"separate_adam"}
  assert changed("bl_label1", "bl") == {"label_weight"}
  assert changed("bl_label_only", "bl") == {"label_only"}
  assert changed("ft_time", "ft") == set()


def test_the_quickstart_runs_what_ci_runs():
  """The README's Quickstart: its test command is the one .ci/run runs, and its first command
  names the loss-surface experiment."""
  import importlib.util

  match = re.search(r"^## Quickstart[^\n]*\n\s*```bash\n(.*?)```", _read(README), re.S | re.M)
  assert match, "README.md has no Quickstart section starting with a bash block"
  first, second = match.group(1).strip().splitlines()
  ci = [
      line.strip()
      for line in _read(os.path.join(REPO, ".ci", "run")).splitlines()
      if line.strip() and not line.lstrip().startswith("#")
  ]
  assert second.split(" && ")[-1] == ci[-1] == "python -m pytest -q -n 2 --dist loadfile"
  module = first.split(" && ")[-1].split()[2]
  assert module == "experiments.loss_surfaces" and importlib.util.find_spec(module)


def _outside_code(text: str) -> str:
  """`text` without its fenced code blocks and inline code spans."""
  text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
  return re.sub(r"`[^`\n]*`", "", text)


def _anchors(text: str) -> Iterator[str]:
  """GitHub's anchors for the headings of a Markdown text (lower case, punctuation dropped,
  spaces as hyphens, repeats numbered)."""
  seen: dict[str, int] = {}
  for heading in re.findall(r"^#{1,6} +(.+?) *$", _outside_code(text), re.M):
    slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    yield slug if not count else f"{slug}-{count}"


def _pages() -> list[str]:
  return [README, os.path.join(REPO, "CHANGELOG.md")] + sorted(
      os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md")
  )


def test_every_link_of_the_readme_and_the_pages_resolves():
  broken = []
  for page in _pages():
    for target in re.findall(r"\]\(([^)\s]+)\)", _outside_code(_read(page))):
      if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked here
        continue
      path, _, anchor = target.partition("#")
      path = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
      where = f"{os.path.relpath(page, REPO)}: ({target})"
      if not os.path.exists(path):
        broken.append(f"{where}: no file {os.path.relpath(path, REPO)}")
      elif anchor and anchor not in set(_anchors(_read(path))):
        broken.append(f"{where}: no heading with anchor #{anchor}")
  assert broken == []


def test_every_marked_block_is_run():
  found = {}
  for page in _pages():
    markers = re.findall(r"<!-- ([\w-]+) -->", _outside_code(_read(page)))
    if markers:
      found[os.path.relpath(page, DOCS)] = tuple(markers)
  assert found == MARKED_BLOCKS
