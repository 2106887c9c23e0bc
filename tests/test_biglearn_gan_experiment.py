"""Tests of experiments/biglearn_gan.py and configs/gan_mnist.py (smoke variant: a few steps).

Compiling the smoke train step is the expensive part (10-30 s on 2 CPU cores), so the runs
share the module-scoped fixtures below and the suite's persistent compilation cache
(conftest.py): only the first run compiles, later runs (and the `python -m` subprocess) load the
same executable. That the resumed runs reproduce the uninterrupted ones bit for bit is
therefore a property of the checkpointed state and of the data order, not of XLA compiling the
same program twice to the same code.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from bigjax.training import checkpoint
from bigjax.training import programs
from bigjax.training import sharding
from configs import gan_mnist
from bigjax import training
from bigjax.training import data_order
from experiments import biglearn_gan
from experiments import gan_setup
import conftest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS_KEYS = ("d_loss", "g_loss", "r1", "real_logit", "fake_logit", "d_grad_norm", "g_grad_norm")


def _smoke(**overrides):
  c = gan_mnist.get_config("smoke")
  for key, value in overrides.items():
    node = c
    *path, name = key.split(".")
    for part in path:
      node = node[part]
    node[name] = value
  return c


def _train(workdir, **overrides):
  return biglearn_gan.train_and_evaluate(_smoke(**overrides), str(workdir), progress=False)


def _steps_on_disk(workdir):
  """Step folders Orbax has finalised (a save in progress is a temporary folder until then)."""
  directory = os.path.join(str(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _restore(workdir, config=None):
  """(step, state as numpy) of the newest restorable checkpoint in `workdir`."""
  config = config or _smoke()
  shapes = jax.eval_shape(lambda key: gan_setup.init_state(config, key), jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
  ckpt = checkpoint.Checkpointer(
      os.path.join(str(workdir), "checkpoints"),
      signature=gan_setup.model_signature(config),
      max_to_keep=config.keep_checkpoints,
  )
  try:
    step, state = ckpt.restore_latest(abstract)
  finally:
    ckpt.close()
  return step, jax.tree.map(np.asarray, state)


def _assert_states_equal(a, b):
  """Bit-identical GANStates: step, both players' parameters, the EMA, optimiser states, rng."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def _metrics(workdir):
  with open(os.path.join(str(workdir), "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def _read_json(path):
  with open(path) as f:
    return json.load(f)


def _recording_jit_train_step(monkeypatch):
  """Wraps biglearn_gan.jit_train_step so that the run's last output state can be read after
  train_and_evaluate returns (the same jitted program: nothing new to compile)."""
  real = biglearn_gan.jit_train_step
  last = {}

  def patched(config, mesh, state_sharding):
    step_fn = real(config, mesh, state_sharding)

    def recorded(state, batch):
      last["state"], metrics = step_fn(state, batch)
      return last["state"], metrics

    return recorded

  monkeypatch.setattr(biglearn_gan, "jit_train_step", patched)
  return last


# ----------------------------------------------------------------------------------------------
# One uninterrupted smoke run (4 steps, checkpoints at 2 and 4), and the same run in two halves.


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("gan_a")
  return workdir, _train(workdir)


@pytest.fixture(scope="module")
def state_a(run_a):
  return _restore(run_a[0])


@pytest.fixture(scope="module")
def run_b(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("gan_b")
  first = _train(workdir, num_steps=2)
  metrics_after_first = _metrics(workdir)
  second = _train(workdir, num_steps=4)
  return workdir, first, second, metrics_after_first


def test_smoke_run_writes_every_file(run_a):
  """config.json, run.json, one finite metrics row per step, checkpoints 2 and 4, a PNG."""
  workdir, summary = run_a
  config = _smoke()
  assert _read_json(workdir / "config.json") == json.loads(config.to_json())
  run = _read_json(workdir / "run.json")
  assert run["compilations"] == 1  # the step compiles once per run
  assert run == summary
  assert run["variant"] == "smoke" and run["step"] == 4 and run["resumed_from"] is None
  assert run["backend"] == "cpu" and run["jax"] == jax.__version__ and run["devices"]
  assert run["seconds"] > 0 and run["compile_seconds"] > 0
  rows = _metrics(workdir)
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for row in rows:
    for key in LOSS_KEYS + ("images_per_sec", "seconds"):
      assert np.isfinite(row[key]), (row["step"], key)
    assert row["r1"] >= 0 and row["d_grad_norm"] > 0 and row["g_grad_norm"] > 0
    assert row["images_per_sec"] >= 0
  # The first row's window holds no timed step (the compile is excluded), hence 0 there.
  assert all(r["images_per_sec"] > 0 for r in rows[1:])
  assert _steps_on_disk(workdir) == [2, 4]
  png = workdir / "samples" / "step_0000004.png"
  assert png.stat().st_size > 0
  with Image.open(png) as im:
    assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
  assert sorted(os.listdir(workdir / "samples")) == ["step_0000004.png"]


def test_checkpoint_holds_the_trained_state(run_a, state_a):
  """Step 4 is the newest checkpoint; it holds step=4 and parameters that moved off init."""
  step, state = state_a
  assert step == 4 and isinstance(state, gan_setup.GANState) and int(state.step) == 4
  # Jitted as in train_and_evaluate, so that the compilation cache has it.
  init_fn = jax.jit(
      lambda key: gan_setup.init_state(_smoke(), key),
      out_shardings=sharding.replicated(sharding.data_mesh()),
  )
  init = jax.tree.map(np.asarray, init_fn(jax.random.key(0)))
  np.testing.assert_array_equal(state.rng, init.rng)
  for name in ("g_params", "d_params", "g_ema_params"):
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(getattr(state, name)), jax.tree.leaves(getattr(init, name)))
    ]
    assert any(moved), name


def test_a_config_trained_again_in_a_process_reuses_its_programs():
  """The jitted step and initialiser are built once per config (and mesh) in a process
  (bigjax.training.programs): a rerun, a resume after an error or a test traces nothing again.
  A changed field builds new ones."""
  mesh = sharding.data_mesh()
  replicated = sharding.replicated(mesh)
  step = biglearn_gan.jit_train_step(_smoke(), mesh, replicated)
  assert biglearn_gan.jit_train_step(_smoke(), mesh, replicated) is step
  assert (
      biglearn_gan.jit_train_step(_smoke(**{"loss.r1_weight": 0.5}), mesh, replicated) is not step
  )
  # How long a run is and how often it logs and saves are not the step's (STEP_IGNORES).
  longer = _smoke(num_steps=12, checkpoint_every=4, log_every=3, seed=7)
  assert biglearn_gan.jit_train_step(longer, mesh, replicated) is step
  init = programs.jit_init(_smoke(), biglearn_gan.init_state, replicated)
  assert programs.jit_init(_smoke(), biglearn_gan.init_state, replicated) is init
  assert programs.jit_init(_smoke(seed=1), biglearn_gan.init_state, replicated) is not init
  # The GAN's own initialiser ignores STEP_IGNORES too (the key carries the seed).
  gan_init = biglearn_gan.jit_init_state(_smoke(), biglearn_gan.init_state, replicated)
  assert biglearn_gan.jit_init_state(longer, biglearn_gan.init_state, replicated) is gan_init
  chex.assert_trees_all_equal(
      gan_init(jax.random.key(3)),
      programs.jit_init(longer, biglearn_gan.init_state, replicated)(jax.random.key(3)),
  )


def test_resume_is_exact(run_a, run_b, state_a):
  """Two runs to 2 then 4 steps end in exactly the state of one run to 4 steps, and the
  metrics file of the resumed run has each step once, with the uninterrupted run's losses."""
  workdir_b, first, second, metrics_after_first = run_b
  assert first["step"] == 2 and first["resumed_from"] is None
  assert [r["step"] for r in metrics_after_first] == [1, 2]
  assert second["step"] == 4 and second["resumed_from"] == 2
  assert _read_json(workdir_b / "run.json")["resumed_from"] == 2
  step_b, state_b = _restore(workdir_b)
  assert step_b == 4
  _assert_states_equal(state_b, state_a[1])
  rows_a, rows_b = _metrics(run_a[0]), _metrics(workdir_b)
  assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
  for ra, rb in zip(rows_a, rows_b):
    assert {k: ra[k] for k in LOSS_KEYS} == {k: rb[k] for k in LOSS_KEYS}, ra["step"]
  assert sorted(os.listdir(workdir_b / "samples")) == ["step_0000002.png", "step_0000004.png"]


def test_kill_9_then_resume_equals_uninterrupted(tmp_path):
  """`python -m experiments.biglearn_gan` killed with SIGKILL once a checkpoint >= 4 exists
  (possibly in the middle of a save or of deleting an old step) resumes from a step > 0 and
  ends, K steps in, exactly where an uninterrupted run to K ends."""
  killed = tmp_path / "killed"
  log_path = tmp_path / "killed.log"
  cmd = [
      sys.executable,
      "-m",
      "experiments.biglearn_gan",
      "--config",
      "configs/gan_mnist.py:smoke",
      "--workdir",
      str(killed),
      "--config.num_steps=40",
      "--config.checkpoint_every=2",
      "--config.sample_every=1000",
  ]
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=conftest.subprocess_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
      deadline = time.monotonic() + 120
      while not any(s >= 4 for s in _steps_on_disk(killed)):
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log_path.read_text()}"
        assert time.monotonic() < deadline, f"no checkpoint >= 4:\n{log_path.read_text()}"
        time.sleep(0.02)
      os.kill(proc.pid, signal.SIGKILL)
    finally:
      if proc.poll() is None:
        proc.kill()
      proc.wait()
  assert proc.returncode == -signal.SIGKILL, "finished before it was killed"
  on_disk = _steps_on_disk(killed)
  k = min(max(on_disk) + 2, 40)

  resumed = _train(killed, num_steps=k, sample_every=1000)
  assert resumed["step"] == k
  assert resumed["resumed_from"] in on_disk and resumed["resumed_from"] > 0
  fresh = tmp_path / "fresh"
  _train(fresh, num_steps=k, sample_every=1000)
  step_killed, state_killed = _restore(killed)
  step_fresh, state_fresh = _restore(fresh)
  assert step_killed == step_fresh == k
  _assert_states_equal(state_killed, state_fresh)
  rows_killed, rows_fresh = _metrics(killed), _metrics(fresh)
  assert [r["step"] for r in rows_killed] == list(range(1, k + 1))
  for rk, rf in zip(rows_killed, rows_fresh):
    assert {key: rk[key] for key in LOSS_KEYS} == {key: rf[key] for key in LOSS_KEYS}, rk["step"]


# ----------------------------------------------------------------------------------------------
# A corrupt newest checkpoint, and a workdir written by another model.


def _copy_with_corrupt_step_4(run_a, destination):
  shutil.copytree(run_a[0], destination)
  state_dir = destination / "checkpoints" / "4" / "state"
  for root, _, files in os.walk(state_dir):
    for name in files:
      os.remove(os.path.join(root, name))
  return destination


@pytest.fixture(scope="module")
def fallback_run(run_a, tmp_path_factory):
  """A copy of run A with step 4 corrupted, trained again to 4 steps; returns the workdir, the
  summary and the run's final in-memory state."""
  workdir = _copy_with_corrupt_step_4(run_a, tmp_path_factory.mktemp("fallback") / "run")
  with pytest.MonkeyPatch.context() as monkeypatch:
    last = _recording_jit_train_step(monkeypatch)
    summary = _train(workdir)
  return workdir, summary, jax.tree.map(np.asarray, last["state"])


def test_restore_latest_skips_a_corrupt_newest_step(run_a, tmp_path, caplog):
  """Step 4's state item emptied: Checkpointer.restore_latest returns step 2, with a warning."""
  workdir = _copy_with_corrupt_step_4(run_a, tmp_path / "run")
  with caplog.at_level("WARNING"):
    step, state = _restore(workdir)
  assert step == 2 and int(state.step) == 2
  assert any(
      "restored step 2 of" in r.getMessage()
      and "newer steps failed" in r.getMessage()
      and "step 4" in r.getMessage()
      for r in caplog.records
  )


def test_resume_falls_back_to_the_older_step(fallback_run, state_a):
  """train_and_evaluate resumes from step 2 when step 4 is corrupt and trains to the same
  state as the uninterrupted run."""
  workdir, summary, final = fallback_run
  assert summary["resumed_from"] == 2 and summary["step"] == 4
  _assert_states_equal(final, state_a[1])
  assert [r["step"] for r in _metrics(workdir)] == [1, 2, 3, 4]


def test_resume_after_fallback_checkpoints_its_last_step(fallback_run, state_a):
  workdir, _, _ = fallback_run
  step, state = _restore(workdir)
  assert step == 4
  _assert_states_equal(state, state_a[1])


@pytest.fixture(scope="module")
def mismatch(run_a, tmp_path_factory):
  """train_and_evaluate with encoder_dim=32 on a copy of run A (encoder_dim=16): the error, and
  config.json before and after."""
  workdir = tmp_path_factory.mktemp("mismatch") / "run"
  shutil.copytree(run_a[0], workdir)
  before = _read_json(workdir / "config.json")
  with pytest.raises(checkpoint.SignatureMismatchError) as info:
    _train(workdir, **{"model.encoder_dim": 32})
  return info.value, before, _read_json(workdir / "config.json"), workdir


def test_other_model_shape_is_refused(mismatch):
  error, _, _, workdir = mismatch
  assert isinstance(error, ValueError)
  message = str(error)
  assert "encoder_dim: checkpoint 16, now 32" in message
  assert "--workdir" in message and "step 4" in message
  for unchanged in ("decoder_dim", "patch_size", "image_size"):
    assert unchanged not in message
  assert _steps_on_disk(workdir) == [2, 4]


def test_refused_run_leaves_config_json_alone(mismatch):
  _, before, after, _ = mismatch
  assert after == before


# ----------------------------------------------------------------------------------------------
# Config errors, non-finite losses, data order.


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model.patch_size": 5}, r"image_size=28 is not divisible by model.patch_size=5"),
        ({"tasks.sampler": "nope"}, r"tasks.sampler='nope'; choose one of"),
        ({"num_steps": 0}, r"num_steps must be a positive integer, got 0"),
        ({"num_steps": -3}, r"num_steps must be a positive integer"),
        ({"batch_size": 0}, r"batch_size must be a positive integer"),
        ({"model.encoder_heads": 3}, r"encoder_dim=16 is not divisible by model.encoder_heads=3"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
        ({"optim.learning_rate": 0.0}, r"learning_rate and optim.disc_lr_scale must be > 0"),
        ({"loss.r1_weight": -1.0}, r"r1_weight"),
        ({"loss.reconstruction_weight": -1.0}, r"loss.reconstruction_weight must be >= 0"),
        # These ended in a bare ZeroDivisionError.
        ({"model.patch_size": 0}, r"model.patch_size must be a positive integer, got 0"),
        ({"model.encoder_heads": 0}, r"model.encoder_heads must be a positive integer, got 0"),
    ],
)
def test_bad_config_fails_before_anything_runs(change, message, tmp_path, monkeypatch):
  """validate_config raises ValueError, and train_and_evaluate raises it before it writes,
  loads or compiles anything."""

  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before checking the config")

  monkeypatch.setattr(biglearn_gan, "jit_train_step", no_compile)
  monkeypatch.setattr(biglearn_gan, "init_state", no_compile)
  config = _smoke(**change)
  with pytest.raises(ValueError, match=message):
    gan_setup.validate_config(config)
  with pytest.raises(ValueError, match=message):
    biglearn_gan.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
  assert not (tmp_path / "run").exists()


def test_every_variant_is_valid():
  for variant in gan_mnist.VARIANTS:
    gan_setup.validate_config(gan_mnist.get_config(variant))
  with pytest.raises(ValueError, match="unknown variant 'nope'"):
    gan_mnist.get_config("nope")


def test_unknown_config_key_on_the_command_line(tmp_path):
  """An override of a key the config does not have exits non-zero, naming the key, before a
  workdir is created (ml_collections raises AttributeError while the flags are parsed)."""
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "experiments.biglearn_gan",
          "--config",
          "configs/gan_mnist.py:smoke",
          "--config.model.bogus=1",
          "--workdir",
          str(tmp_path / "run"),
      ],
      cwd=REPO,
      env=conftest.subprocess_env(),
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode != 0
  assert "bogus" in result.stderr
  assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_before_saving(tmp_path, monkeypatch):
  """A NaN d_loss at the third step (index 2) raises NonFiniteLossError naming step 3 and the
  last good checkpoint (2); nothing from step 3 on is saved or logged. The NaN is put into the
  jitted step's metrics (wrapping jit_train_step rather than make_train_step keeps the cached
  executable: no second compile)."""
  real = biglearn_gan.jit_train_step

  def nan_at_step_index_2(config, mesh, state_sharding):
    step_fn = real(config, mesh, state_sharding)

    def step(state, batch):
      index = int(state.step)  # read before the call donates `state`
      state, metrics = step_fn(state, batch)
      if index == 2:
        metrics = dict(metrics, d_loss=jnp.full_like(metrics["d_loss"], jnp.nan))
      return state, metrics

    return step

  monkeypatch.setattr(biglearn_gan, "jit_train_step", nan_at_step_index_2)
  workdir = tmp_path / "run"
  with pytest.raises(
      training.NonFiniteLossError,
      match=r"non-finite d_loss at step 3;.*last good checkpoint is step 2 in ",
  ):
    _train(workdir)
  assert _steps_on_disk(workdir) == [2]
  assert [r["step"] for r in _metrics(workdir)] == [1, 2]
  assert not (workdir / "run.json").exists()


def test_batch_indices_are_a_pure_function_of_the_step():
  """Same step, same rows; an epoch's batches are disjoint and cover
  num_images // batch_size * batch_size rows; epochs and seeds permute differently."""
  num_images, batch_size, seed = 103, 8, 0
  steps_per_epoch = num_images // batch_size
  for step in (0, 5, 12, 13, 40):
    a = data_order.batch_indices(step, num_images, batch_size, seed=seed)
    np.testing.assert_array_equal(
        a, data_order.batch_indices(step, num_images, batch_size, seed=seed)
    )
    assert a.shape == (batch_size,) and a.min() >= 0 and a.max() < num_images
  epochs = []
  for epoch in range(3):
    rows = np.concatenate(
        [
            data_order.batch_indices(epoch * steps_per_epoch + i, num_images, batch_size, seed=seed)
            for i in range(steps_per_epoch)
        ]
    )
    assert len(np.unique(rows)) == len(rows) == steps_per_epoch * batch_size
    epochs.append(rows)
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])
  assert not np.array_equal(
      data_order.batch_indices(0, num_images, batch_size, seed=seed),
      data_order.batch_indices(0, num_images, batch_size, seed=seed + 1),
  )
  # Numpy integers and Python ints give the same batch (steps come from jax/np in places).
  np.testing.assert_array_equal(
      data_order.batch_indices(np.int64(7), num_images, batch_size, seed=seed),
      data_order.batch_indices(7, num_images, batch_size, seed=seed),
  )


def test_optional_objectives_and_models_train(tmp_path):
  """Every optional path in one smoke run: the Eq. (12) communication matchings, the
  mode-seeking and reconstruction terms, one (S, T) pair per batch from another sampler, noise
  embeddings into every G-decoder layer and the minibatch-std discriminator. Losses stay finite
  and are logged; with one pair per batch the generator sees the same S for all examples."""
  overrides = {
      "num_steps": 2,
      "checkpoint_every": 2,
      "sample_every": 2,
      "loss.communication_weight": 0.5,
      "loss.mode_seeking_weight": 1.0,
      "loss.reconstruction_weight": 10.0,
      "tasks.per_example": False,
      "tasks.sampler": "mask_and_predict",
      "model.noise_every_layer": True,
      "model.disc_minibatch_std_group": 2,
  }
  summary = _train(tmp_path, **overrides)
  assert summary["step"] == 2
  rows = _metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 2]
  for row in rows:
    for key in LOSS_KEYS + ("d_comm", "g_comm", "mode_seeking", "reconstruction"):
      assert np.isfinite(row[key]), (row["step"], key)
    assert row["d_comm"] > 0 and row["mode_seeking"] > 0 and row["reconstruction"] > 0
  config = _smoke(**overrides)
  source, target = biglearn_gan.sample_tasks(jax.random.key(1), config, 8, 16)
  assert (source == source[:1]).all() and (target == target[:1]).all()
  assert int(target[0].sum()) == 12  # mask_and_predict at ratio 0.75


def test_truncate_metrics_drops_rows_past_the_checkpoint_and_a_torn_last_row(tmp_path):
  """On resume, rows after the restored step go, and so does a half-written row of a run killed
  mid-append; complete rows are kept, each ending its line."""
  path = tmp_path / "metrics.jsonl"
  path.write_text(
      '{"step": 1, "d_loss": 1.0}\n{"step": 2, "d_loss": 0.9}\n'
      '{"step": 3, "d_loss": 0.8}\n{"step": 4, "d_lo'
  )
  checkpoint.truncate_log(str(path), 2)
  assert path.read_text() == '{"step": 1, "d_loss": 1.0}\n{"step": 2, "d_loss": 0.9}\n'
  path.write_text('{"step": 1}\n{"step": 2}')
  checkpoint.truncate_log(str(path), 5)
  assert path.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_a_config_error_found_only_when_the_step_is_traced_leaves_nothing_behind(tmp_path):
  """tasks.source_alpha=-1 passes the config checks and fails when the sampler is traced; that
  used to leave config.json, checkpoints/ and samples/ in a new workdir."""
  with pytest.raises(ValueError, match=r"source Beta parameters must both be > 0"):
    biglearn_gan.train_and_evaluate(
        _smoke(**{"tasks.source_alpha": -1.0}), str(tmp_path / "run"), progress=False
    )
  assert not (tmp_path / "run").exists()
