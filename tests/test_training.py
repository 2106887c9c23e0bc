"""bigjax.training: the loop (on a tiny regression), the data order, the run loader, the writer."""

import json
import os
import shutil
import types
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from bigjax import training
from bigjax.training import checkpoint
from bigjax.training import data_order
from bigjax.training import loop
from bigjax.training import runs
from bigjax.training import writer as writer_lib

# y = x . w_true + noise: a state, a step and a batch function in a few lines.
_X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
_Y = _X @ np.array([1.0, -2.0, 0.5], np.float32)
_OPT = optax.sgd(0.1)


class _State(NamedTuple):
  step: jax.Array
  w: jax.Array
  opt: Any


def _init():
  w = jnp.zeros(3)
  return _State(step=jnp.zeros((), jnp.int32), w=w, opt=_OPT.init(w))


def _step(state, x, y):
  loss, g = jax.value_and_grad(lambda w: jnp.mean((x @ w - y) ** 2))(state.w)
  updates, opt = _OPT.update(g, state.opt)
  return _State(state.step + 1, state.w + updates, opt), dict(loss=loss)


def _batch(step):
  idx = data_order.batch_indices(step, len(_X), 8, seed=0)
  return _X[idx], _Y[idx]


def _train(workdir, num_steps, **kwargs):
  args = dict(
      config=ml_collections.ConfigDict(dict(lr=0.1)),
      init_state=lambda: jax.jit(_init)(),
      step_fn=jax.jit(_step, donate_argnums=0),
      batch_fn=_batch,
      num_steps=num_steps,
      signature=dict(dim=3),
      log_every=2,
      checkpoint_every=4,
      progress=False,
  )
  args.update(kwargs)
  return training.train(str(workdir), **args)


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_a_run_writes_its_logs_checkpoints_and_hooks(tmp_path):
  seen = []
  hooks = [
      loop.Hook(lambda step, s: dict(w0=float(s.w[0])), every=3, log="metrics.jsonl"),
      loop.Hook(lambda step, s: dict(norm=float(jnp.linalg.norm(s.w))), every=5, log="eval.jsonl"),
      loop.Hook(lambda step, s: seen.append(step) or {"grid": np.zeros((4, 5), np.uint8)}, every=0),
  ]
  state, summary = _train(tmp_path, 10, hooks=hooks)
  assert summary["step"] == 10 and summary["resumed_from"] is None
  assert int(state.step) == 10 and summary["compile_seconds"] is not None
  rows = _rows(tmp_path / "metrics.jsonl")
  # log_every=2, plus the steps where a hook is due (3, 5, 6, 9): each row the mean of its
  # window, checked before any hook or save of that step.
  assert [r["step"] for r in rows] == [2, 3, 4, 5, 6, 8, 9, 10]
  assert [r["step"] for r in rows if "w0" in r] == [3, 6, 9, 10]  # at_end
  assert all(r["loss"] > 0 and r["steps_per_sec"] > 0 and "seconds" in r for r in rows)
  assert rows[-1]["loss"] < rows[0]["loss"]
  assert [r["step"] for r in _rows(tmp_path / "eval.jsonl")] == [5, 10]
  assert seen == [10]  # every=0: only at the end
  assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["4", "8", "10"]
  with open(tmp_path / "config.json") as f:
    assert json.load(f) == dict(lr=0.1)
  events = writer_lib.read_events(str(tmp_path))
  assert [s for s, _ in events["metrics/loss"]] == [r["step"] for r in rows]
  assert [s for s, _ in events["eval/norm"]] == [5, 10]
  assert [s for s, _ in events["grid"]] == [10] and events["grid"][0][1][:4] == b"\x89PNG"
  assert summary["compilations"] == 1


def test_resume_continues_exactly_and_cuts_the_logs_back(tmp_path):
  full, _ = _train(tmp_path / "full", 12)
  # Interrupted after step 8 was saved, with rows and events of steps 9-10 already written.
  part = tmp_path / "part"
  _train(part, 10)
  for name in os.listdir(part / "checkpoints"):
    if int(name) > 8:
      shutil.rmtree(part / "checkpoints" / name)
  state, summary = _train(part, 12)
  assert summary["resumed_from"] == 8
  np.testing.assert_array_equal(np.asarray(state.w), np.asarray(full.w))
  rows, full_rows = _rows(part / "metrics.jsonl"), _rows(tmp_path / "full" / "metrics.jsonl")
  assert [r["step"] for r in rows] == [r["step"] for r in full_rows]
  assert [r["loss"] for r in rows] == [r["loss"] for r in full_rows]
  # TensorBoard forgets the interrupted run's steps after 8, as the JSON-lines log does.
  assert [s for s, _ in writer_lib.read_events(str(part))["metrics/loss"]] == [
      r["step"] for r in rows
  ]


def test_a_finished_run_takes_no_step_and_keeps_its_summary(tmp_path):
  _train(tmp_path, 4)
  (tmp_path / "summary.json").write_text("{}")
  state, summary = _train(tmp_path, 4, outdated_by_training=("summary.json",))
  assert summary["resumed_from"] == 4 and summary["compile_seconds"] is None
  assert (tmp_path / "summary.json").exists()
  _, summary = _train(tmp_path, 6, outdated_by_training=("summary.json",))
  assert summary["step"] == 6 and not (tmp_path / "summary.json").exists()


def test_a_non_finite_loss_stops_before_anything_is_saved(tmp_path):
  @jax.jit
  def step_fn(state, x, y):
    new, metrics = _step(state, x, y)
    return new, dict(loss=jnp.where(new.step == 3, jnp.nan, metrics["loss"]))

  with pytest.raises(training.NonFiniteLossError, match="non-finite loss at step 3.*Lower it"):
    _train(tmp_path, 8, step_fn=step_fn, log_every=4, fix="Lower it.")
  assert not os.listdir(tmp_path / "checkpoints")


def test_another_models_checkpoints_are_refused_and_nothing_is_written(tmp_path):
  _train(tmp_path, 4)
  before = (tmp_path / "config.json").read_text()
  with pytest.raises(training.SignatureMismatchError, match="dim: checkpoint 3, now 4"):
    _train(tmp_path, 8, signature=dict(dim=4), config=ml_collections.ConfigDict(dict(lr=1.0)))
  assert (tmp_path / "config.json").read_text() == before


def test_batch_indices_streams():
  a = data_order.batch_indices(0, 100, 10, seed=0)
  assert len(a) == 10 and len(set(a)) == 10
  np.testing.assert_array_equal(a, np.random.default_rng([0, 0]).permutation(100)[:10])
  b = data_order.batch_indices(0, 100, 10, seed=0, stream=2)
  np.testing.assert_array_equal(b, np.random.default_rng([0, 2, 0]).permutation(100)[:10])
  assert not np.array_equal(a, b)
  # Step 10 is the first batch of epoch 1.
  np.testing.assert_array_equal(
      data_order.batch_indices(10, 100, 10, seed=0, stream=2),
      np.random.default_rng([0, 2, 1]).permutation(100)[:10],
  )
  with pytest.raises(ValueError, match="batch_size=20 must be in"):
    data_order.batch_indices(0, 10, 20, seed=0)


def test_write_json_is_atomic_and_left_to_process_0(tmp_path, monkeypatch):
  path = str(tmp_path / "a.json")
  checkpoint.write_json(path, dict(x=1))
  assert json.load(open(path)) == dict(x=1) and not os.path.exists(path + ".tmp")
  monkeypatch.setattr(checkpoint, "jax", types.SimpleNamespace(process_index=lambda: 1))
  checkpoint.write_json(str(tmp_path / "b.json"), dict(x=2))
  assert not os.path.exists(tmp_path / "b.json")


def test_a_disabled_writer_writes_nothing(tmp_path):
  w = writer_lib.MetricWriter(str(tmp_path), enabled=False)
  w.row("metrics.jsonl", dict(step=1, loss=1.0))
  w.images(1, {"x": np.zeros((2, 2), np.uint8)})
  w.close()
  assert os.listdir(tmp_path) == []
  w = writer_lib.MetricWriter(str(tmp_path))
  with pytest.raises(ValueError, match="uint8"):
    w.images(1, {"x": np.zeros((2, 2), np.float32)})
  w.row("eval.jsonl", dict(step=2, a=dict(b=[1.0, 2.0]), ok=True))
  w.close()
  events = writer_lib.read_events(str(tmp_path))
  assert events == {"eval/a/b/0": [(2, 1.0)], "eval/a/b/1": [(2, 2.0)]}


def test_the_writer_does_not_import_torch(tmp_path):
  """tensorboardX imports torch when it is installed (1.5 s of every run's start); the writer
  imports it without, and torch still imports afterwards where it is installed."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from conftest import subprocess_env  # pylint: disable=import-outside-toplevel

  code = f"""
import sys
from bigjax.training import writer
w = writer.MetricWriter({str(tmp_path)!r})
w.row("metrics.jsonl", dict(step=1, loss=0.5))
w.close()
assert writer.read_events({str(tmp_path)!r}) == {{"metrics/loss": [(1, 0.5)]}}
print("torch" in sys.modules)
try:
  import torch
except ImportError:
  print("no torch")
else:
  print(torch.ones(2).sum().item())
"""
  proc = subprocess.run(
      [sys.executable, "-c", code],
      env=subprocess_env(),
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  has_torch = importlib.util.find_spec("torch") is not None
  assert proc.stdout.splitlines() == ["False", "2.0" if has_torch else "no torch"]


def _kind(**kwargs):
  args = dict(
      name="toy run",
      train_command=lambda w, v: f"train {v or 'cpu'} into {w}",
      abstract_state=lambda config: jax.eval_shape(_init),
      signature=lambda config: dict(dim=3),
  )
  args.update(kwargs)
  return runs.RunKind(**args)


def test_runs_load_a_finished_run_and_say_what_is_missing(tmp_path):
  with pytest.raises(
      FileNotFoundError,
      match=r"no toy run in .*nothing \(the directory does "
      r"not exist\); train one with `train cpu into",
  ):
    runs.load(str(tmp_path / "nothing"), _kind())
  workdir = tmp_path / "run"
  _train(workdir, 4)
  migrated = lambda c: runs.add_defaults(c, {"new.field": 7, "lr": 5.0})
  run = runs.load(str(workdir), _kind(migrate=migrated))
  assert run.step == 4 and run.config.new.field == 7 and run.config.lr == 0.1
  assert float(jnp.abs(run.state.w).sum()) > 0
  kind = _kind(summary_file="done.json")
  with pytest.raises(FileNotFoundError, match="has not finished training.*train cpu into"):
    runs.load(str(workdir), kind)
  (workdir / "done.json").write_text(json.dumps(dict(steps=3)))
  with pytest.raises(RuntimeError, match="is step 4, but done.json describes step 3"):
    runs.load(str(workdir), kind)
  with pytest.raises(ValueError, match="not for you"):
    runs.load(
        str(workdir), _kind(), check=lambda c, s: (_ for _ in ()).throw(ValueError("not for you"))
    )


def test_batch_fn_indexes_transforms_and_checks():
  x, y = np.arange(20).reshape(10, 2), np.arange(10)
  batch = data_order.batch_fn([x, y], 4, seed=3, stream=1, transform=lambda a, b: (a * 2, b))
  a, b = batch(5)
  idx = data_order.batch_indices(5, 10, 4, seed=3, stream=1)
  np.testing.assert_array_equal(b, idx)
  np.testing.assert_array_equal(a, x[idx] * 2)
  with pytest.raises(ValueError, match="fewer than batch_size=16"):
    data_order.batch_fn([x], 16, seed=0)
  with pytest.raises(ValueError, match="different numbers of rows"):
    data_order.batch_fn([x, y[:5]], 2, seed=0)


def test_warmup_cosine_adamw_schedule():
  from bigjax.training import optimizers  # pylint: disable=import-outside-toplevel

  opt = optimizers.warmup_cosine_adamw(1.0, 100, warmup_steps=10, weight_decay=0.0)
  params = jnp.zeros(())
  state = opt.init(params)
  sizes = []
  for _ in range(100):
    updates, state = opt.update(jnp.ones(()), state, params)
    sizes.append(-float(updates))
  # Adam's first updates are ~lr: 0.1, 0.2, ... up to 1 at step 10, then down to ~0.01.
  np.testing.assert_allclose(sizes[:3], [0.0, 0.1, 0.2], atol=1e-3)
  assert max(sizes) == sizes[10] and sizes[-1] < 0.02
  clipped = optimizers.warmup_cosine_adamw(
      1.0, 100, warmup_steps=0, weight_decay=0.0, grad_clip=0.5
  )
  assert len(clipped.init(params)) == 2  # clip, then AdamW


def test_a_loss_that_goes_non_finite_after_a_resume_names_the_restored_step(tmp_path):
  """The message used to call the checkpoint the run resumed from "the last good checkpoint"
  and advise a lower learning rate, so a rerun looped on a corrupt step."""
  _train(tmp_path, 4)

  @jax.jit
  def step_fn(state, x, y):
    new, metrics = _step(state, x, y)
    return new, dict(loss=jnp.where(new.step == 6, jnp.nan, metrics["loss"]))

  with pytest.raises(
      training.NonFiniteLossError,
      match=r"non-finite loss at step 6;.* resumed from the checkpoint of step 4 "
      r".* 2 step\(s\) earlier and saved none since.*may hold a bad state",
  ):
    _train(tmp_path, 8, step_fn=step_fn, log_every=4, checkpoint_every=8)


def test_a_full_disk_stops_the_run_and_loses_no_finished_step(tmp_path, monkeypatch):
  """A save that fails (ENOSPC) stops training with the OSError; the steps saved before it
  still restore, and the rerun ends exactly where an uninterrupted run does."""
  full, _ = _train(tmp_path / "full", 12)
  real_save = checkpoint.Checkpointer.save

  def save(self, step, state):
    if step == 8:
      raise OSError(28, "No space left on device")
    real_save(self, step, state)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
  with pytest.raises(OSError, match="No space left on device"):
    _train(tmp_path / "run", 12)
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints"), key=int) == ["4"]
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)  # space again
  state, summary = _train(tmp_path / "run", 12)
  assert summary["resumed_from"] == 4
  np.testing.assert_array_equal(np.asarray(state.w), np.asarray(full.w))


def test_programs_are_built_once_per_config_and_arguments():
  """bigjax.training.programs.by_config: the same config (another object, the same fields) and
  arguments give the built program back; any changed field or argument builds another; the
  oldest is dropped past maxsize; an unhashable argument or a config JSON cannot hold builds
  anew each call."""
  from bigjax.training import programs

  built = []

  @programs.by_config(maxsize=2)
  def build(config, scale, *, shift=0):
    built.append((config, scale, shift))
    return object()

  def config(lr):
    return ml_collections.ConfigDict(dict(optim=dict(learning_rate=lr), steps=3))

  a = build(config(1e-3), 2)
  assert build(config(1e-3), 2) is a and len(built) == 1
  assert build(config(2e-3), 2) is not a  # a field changed
  assert build(config(1e-3), 3) is not a  # an argument changed; a third program evicts `a`
  assert len(built) == 3
  assert build(config(1e-3), 2) is not a and len(built) == 4  # built again
  b = build(config(1e-3), 2, shift=1)
  assert build(config(1e-3), 2, shift=1) is b
  assert build({"steps": 3}, 2) is build({"steps": 3}, 2)  # a plain mapping
  n = len(built)
  assert build(config(1e-3), [2]) is not build(config(1e-3), [2])  # unhashable argument
  assert build({"f": object()}, 2) is not build({"f": object()}, 2)  # not JSON
  assert len(built) == n + 4
  build.cache_clear()
  assert build(config(1e-3), 2, shift=1) is not b


def test_programs_share_configs_that_differ_only_in_ignored_fields():
  """by_config(ignore=...): configs that differ only in ignored fields share a program; the
  builder never sees their values (any use of one raises UnusedFieldError naming it, in Python
  and when jax traces it); the original config is unchanged; a field not in a config is skipped."""
  from bigjax.training import programs

  built = []

  @programs.by_config(ignore=("num_steps", "eval.every", "absent", "eval.absent"))
  def build(config):
    built.append(config)
    return jax.jit(lambda x: x * config.optim.learning_rate)

  def config(steps, every, lr=0.5):
    c = ml_collections.ConfigDict(
        dict(num_steps=steps, optim=dict(learning_rate=lr), eval=dict(every=every, n=3))
    )
    c.lock()
    return c

  first = config(10, 2)
  step = build(first)
  assert build(config(20, 5)) is step and len(built) == 1
  assert build(config(10, 2, lr=0.25)) is not step  # a field that is not ignored
  assert first.num_steps == 10 and first.eval.every == 2  # the caller's config is untouched
  np.testing.assert_allclose(step(jnp.float32(4.0)), 2.0)
  seen = built[0]
  assert seen.eval.n == 3 and "num_steps" in seen and "absent" not in seen
  uses = [
      lambda: seen.num_steps + 1,
      lambda: seen.num_steps > 0,
      lambda: bool(seen.eval.every),
      lambda: int(seen.num_steps),
      lambda: range(seen.num_steps),
      lambda: seen.num_steps.real,
      lambda: f"{seen.num_steps}",
      lambda: seen.get("num_steps", 5) == 5,
      lambda: np.asarray(seen.num_steps),
      lambda: jax.jit(lambda x: x * seen.num_steps)(1.0),
  ]
  for use in uses:
    with pytest.raises(programs.UnusedFieldError, match=r"config\.(num_steps|eval\.every)"):
      use()
  assert "num_steps" in repr(seen.num_steps)

  @programs.by_config(ignore=("num_steps",))
  def reads_it(config):
    return jax.jit(lambda x: x + config.num_steps)

  with pytest.raises(programs.UnusedFieldError, match="config.num_steps"):
    reads_it(config(10, 2))(jnp.float32(1.0))
  plain = {"num_steps": 3, "optim": {"learning_rate": 2.0}}
  assert build(plain) is build({"num_steps": 4, "optim": {"learning_rate": 2.0}})
  assert plain == {"num_steps": 3, "optim": {"learning_rate": 2.0}}  # a mapping is untouched
