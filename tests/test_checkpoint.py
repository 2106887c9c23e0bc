"""Unit tests of bigjax/training/checkpoint.py on a tiny pytree (a dict of arrays and an AdamW
state)."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bigjax.training import checkpoint

SIGNATURE = dict(dim=3, depth=1, ratio=2.0, ema=True)


def _state(scale=1.0):
  """A small training-state-like pytree: parameters, an optax AdamW state and a step."""
  params = dict(w=scale * jnp.arange(6.0).reshape(2, 3), b=jnp.full((3,), scale))
  opt_state = optax.adamw(1e-3).init(params)
  return dict(step=jnp.asarray(int(scale), jnp.int32), params=params, opt_state=opt_state)


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def _save(directory, states, *, signature=SIGNATURE, max_to_keep=3):
  """Saves {step: state} with one Checkpointer and waits for the asynchronous saves."""
  ckpt = checkpoint.Checkpointer(str(directory), signature=signature, max_to_keep=max_to_keep)
  try:
    for step, state in states.items():
      ckpt.save(step, state)
    ckpt.wait()
    return ckpt.all_steps()
  finally:
    ckpt.close()


def _restore_latest(directory, abstract_state, *, signature=SIGNATURE):
  ckpt = checkpoint.Checkpointer(str(directory), signature=signature)
  try:
    return ckpt.restore_latest(abstract_state)
  finally:
    ckpt.close()


def _corrupt(directory, step):
  """Empties the `state` item of a saved step, as a kill in the middle of a delete can."""
  state_dir = os.path.join(str(directory), str(step), "state")
  assert os.path.isdir(state_dir)
  for root, _, files in os.walk(state_dir):
    for name in files:
      os.remove(os.path.join(root, name))


def test_round_trip_keeps_values_and_optax_types(tmp_path):
  """What is restored into `abstract(state)` equals what was saved, leaf for leaf, with the
  optax state's NamedTuple types (ScaleByAdamState, ...) rather than plain dicts or lists."""
  state = _state(2.0)
  _, opt = optax.adamw(1e-3).update(state["params"], state["opt_state"], state["params"])
  state["opt_state"] = opt  # non-trivial moments and count
  assert _save(tmp_path, {7: state}) == [7]
  step, restored = _restore_latest(tmp_path, checkpoint.abstract(state))
  assert step == 7
  _assert_trees_equal(restored, state)
  assert type(restored["opt_state"]) is type(state["opt_state"])
  adam = restored["opt_state"][0]
  assert isinstance(adam, optax.ScaleByAdamState) and int(adam.count) == 1
  assert isinstance(restored["params"]["w"], jax.Array)


def test_abstract_gives_shapes_dtypes_and_shardings():
  state = _state()
  abstract = checkpoint.abstract(state)
  for a, x in zip(jax.tree.leaves(abstract), jax.tree.leaves(state)):
    assert isinstance(a, jax.ShapeDtypeStruct)
    assert a.shape == x.shape and a.dtype == x.dtype and a.sharding == x.sharding


def test_max_to_keep_keeps_the_newest_steps(tmp_path):
  states = {step: _state(float(step)) for step in (1, 2, 3, 4, 5)}
  assert _save(tmp_path, states, max_to_keep=2) == [4, 5]
  assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [4, 5]
  step, restored = _restore_latest(tmp_path, checkpoint.abstract(_state()))
  assert step == 5
  _assert_trees_equal(restored, states[5])


def test_signature_mismatch_names_the_differences(tmp_path):
  """A checkpoint of another model shape is refused with SignatureMismatchError (a ValueError)
  naming every differing key, absent keys included, and pointing to a new --workdir."""
  _save(tmp_path, {3: _state()})
  other = dict(SIGNATURE, dim=5, heads=2)
  del other["ema"]
  with pytest.raises(checkpoint.SignatureMismatchError) as info:
    _restore_latest(tmp_path, checkpoint.abstract(_state()), signature=other)
  assert isinstance(info.value, ValueError)
  message = str(info.value)
  assert "step 3" in message and str(tmp_path) in message
  assert "dim: checkpoint 3, now 5" in message
  assert "heads: checkpoint '<absent>', now 2" in message
  assert "ema: checkpoint True, now '<absent>'" in message
  assert "depth" not in message and "ratio" not in message  # equal keys are not listed
  assert "--workdir" in message


def test_same_signature_in_another_key_order_is_accepted(tmp_path):
  _save(tmp_path, {1: _state()})
  reordered = dict(reversed(list(SIGNATURE.items())))
  step, _ = _restore_latest(tmp_path, checkpoint.abstract(_state()), signature=reordered)
  assert step == 1


def test_empty_directory_restores_nothing(tmp_path):
  directory = tmp_path / "checkpoints"
  assert _restore_latest(directory, checkpoint.abstract(_state())) == (None, None)
  assert directory.is_dir()  # created, so a later save has somewhere to go


def test_falls_back_to_an_older_step_when_the_newest_is_corrupt(tmp_path, caplog):
  """The newest step fails to restore: the next older one is returned, with a warning that
  names the step that failed."""
  states = {2: _state(2.0), 4: _state(4.0)}
  _save(tmp_path, states)
  _corrupt(tmp_path, 4)
  with caplog.at_level(logging.WARNING):
    step, restored = _restore_latest(tmp_path, checkpoint.abstract(_state()))
  assert step == 2
  _assert_trees_equal(restored, states[2])
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any("restored step 2" in w and "step 4" in w for w in warnings), warnings


def test_every_step_corrupt_raises_runtime_error(tmp_path):
  _save(tmp_path, {2: _state(2.0), 4: _state(4.0)})
  _corrupt(tmp_path, 2)
  _corrupt(tmp_path, 4)
  with pytest.raises(
      RuntimeError, match=r"no checkpoint in .* could be restored: step 4: .*; " r"step 2: "
  ):
    _restore_latest(tmp_path, checkpoint.abstract(_state()))


def test_saving_again_over_a_corrupt_step_replaces_it(tmp_path):
  """The trainer's pattern after a fallback: restore step 2 (pruning the unreadable step 4, as
  the trainer that owns the directory does), train, save step 4 again."""
  _save(tmp_path, {2: _state(2.0), 4: _state(4.0)})
  _corrupt(tmp_path, 4)
  ckpt = checkpoint.Checkpointer(str(tmp_path), signature=SIGNATURE)
  try:
    step, _ = ckpt.restore_latest(checkpoint.abstract(_state()), prune=True)
    assert step == 2
    ckpt.save(4, _state(4.0))
  finally:
    ckpt.close()
  step, restored = _restore_latest(tmp_path, checkpoint.abstract(_state()))
  assert step == 4
  _assert_trees_equal(restored, _state(4.0))


def test_average_metrics_means_and_first_non_finite_step():
  values = [dict(loss=1.0, acc=0.5), dict(loss=3.0, acc=1.0)]
  assert checkpoint.average_metrics(
      values, last_step=10, last_saved=None, directory="d", fix="Lower it."
  ) == dict(loss=2.0, acc=0.75)
  values = [
      dict(loss=1.0, acc=0.5),
      dict(loss=float("nan"), acc=float("inf")),
      dict(loss=float("nan"), acc=1.0),
  ]
  with pytest.raises(
      checkpoint.NonFiniteLossError,
      match=r"non-finite loss, acc at step 9;.*last good checkpoint is step 5 in "
      r"/ckpt\. Lower it\.",
  ):
    checkpoint.average_metrics(
        values, last_step=10, last_saved=5, directory="/ckpt", fix="Lower it."
    )
  assert issubclass(checkpoint.NonFiniteLossError, FloatingPointError)
