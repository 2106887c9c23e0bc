"""Tests of bigjax/training/sharding.py: the BigLearn-GAN step on 8 devices equals the step on one.

The comparison needs 8 CPU devices, which chex's `set_n_cpu_devices(8)` gives only before JAX
starts its backends. It runs in a subprocess (`_SCRIPT`) that prints one JSON line of facts: the
rest of the suite keeps one device, since the trainers build their mesh over `jax.devices()` and
8 devices would split every test's training batch (other numbers, batch sizes that must divide 8).

The comparison uses the smoke config with optim.eps = 1e-3 instead of 1e-8. Adam divides each
gradient by its own RMS, and some gradients are zero in exact arithmetic (the key bias of
attention: softmax ignores a constant added to all logits), so with eps = 1e-8 their rounding
noise, which differs with the order of the cross-device sum, becomes a +-learning_rate update
(measured: 1.5e-4 on d_params' qkv bias after two steps). With eps = 1e-3 Adam is linear in such
tiny gradients and every other update is unchanged in kind.
"""

import json
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from bigjax.training import sharding
import conftest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_DEVICES = 8

_SCRIPT = r"""
import json

import chex
chex.set_n_cpu_devices(8)  # before JAX starts its backends

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from bigjax.data import mnist
from bigjax.training import sharding
from configs import gan_mnist
from bigjax import training
from bigjax.training import data_order
from experiments import biglearn_gan
from experiments import gan_setup

devices = jax.devices()
config = gan_mnist.get_config("smoke")
config.optim.eps = 1e-3  # see the module docstring
images, _ = mnist.load("bundled", split="all")
rows = mnist.to_unit_range(images[data_order.batch_indices(0, len(images), 8, seed=0)])
init = jax.jit(lambda key: gan_setup.init_state(config, key))(jax.random.key(0))
init = jax.tree.map(np.asarray, init)

facts = dict(num_devices=len(devices))
results = {}
for n in (1, len(devices)):
  mesh = sharding.data_mesh(devices[:n])
  rep = sharding.replicated(mesh)
  sharding.check_batch_size(config.batch_size, mesh)
  state = jax.device_put(init, rep)  # a fresh copy: the step donates its state
  batch = sharding.global_batch(rows, mesh)
  step = biglearn_gan.jit_train_step(config, mesh, rep)
  metrics = []
  for _ in range(2):
    state, m = step(state, batch)
    metrics.append({k: float(v) for k, v in m.items()})
  facts[f"batch_devices_{n}"] = len(batch.sharding.device_set)
  facts[f"batch_spec_is_data_{n}"] = batch.sharding.spec == P("data")
  facts[f"batch_shard_shapes_{n}"] = sorted({tuple(s.data.shape) for s in batch.addressable_shards})
  leaves = jax.tree.leaves(state)
  facts[f"state_replicated_{n}"] = all(
      x.sharding.spec == P() and x.sharding.is_fully_replicated
      and len(x.sharding.device_set) == n for x in leaves)
  facts[f"metrics_{n}"] = metrics
  results[n] = jax.tree.map(np.asarray, state)

one, many = results[1], results[len(devices)]
facts["steps"] = [int(one.step), int(many.step)]
# max |one - many| / max(1, max |one|) over the leaves of each part of the state.
facts["max_diff"] = {
    name: max(float(np.max(np.abs(a.astype(np.float64) - b))) / max(1.0, float(np.max(np.abs(a))))
              for a, b in zip(jax.tree.leaves(getattr(one, name)),
                              jax.tree.leaves(getattr(many, name))))
    for name in ("g_params", "d_params", "g_ema_params", "g_opt_state", "d_opt_state")}
facts["rng_equal"] = bool(np.array_equal(one.rng, many.rng))
try:
  sharding.check_batch_size(12, sharding.data_mesh(devices))
except ValueError as e:
  facts["check_batch_size_error"] = str(e)
print("FACTS " + json.dumps(facts))
"""


@pytest.fixture(scope="module")
def eight_devices():
  """Facts printed by `_SCRIPT` on 8 fake CPU devices: two smoke train steps on a 1-device mesh
  and on the 8-device mesh, from the same state and batch."""
  result = subprocess.run(
      [sys.executable, "-c", _SCRIPT],
      cwd=REPO,
      env=conftest.subprocess_env(),
      capture_output=True,
      text=True,
      timeout=400,
  )
  assert result.returncode == 0, result.stderr[-4000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("FACTS ")][-1]
  return json.loads(line[len("FACTS ") :])


def test_sharded_step_equals_one_device(eight_devices):
  """Two steps with the batch split over 8 devices give the 1-device parameters, EMA and
  optimiser states up to float rounding (the gradient sum is reduced in another order): the
  difference is below 1e-5, absolute for values up to 1 and relative above."""
  facts = eight_devices
  assert facts["num_devices"] == NUM_DEVICES
  assert facts["steps"] == [2, 2]
  assert set(facts["max_diff"]) == {
      "g_params",
      "d_params",
      "g_ema_params",
      "g_opt_state",
      "d_opt_state",
  }
  for name, diff in facts["max_diff"].items():
    assert diff < 1e-5, (name, diff)
  assert facts["rng_equal"]
  for m1, m8 in zip(facts["metrics_1"], facts[f"metrics_{NUM_DEVICES}"]):
    assert m1.keys() == m8.keys()
    for key in m1:
      np.testing.assert_allclose(m8[key], m1[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_batch_is_split_and_state_replicated(eight_devices):
  facts = eight_devices
  assert facts[f"batch_devices_{NUM_DEVICES}"] == NUM_DEVICES
  assert facts[f"batch_spec_is_data_{NUM_DEVICES}"] and facts["batch_spec_is_data_1"]
  assert facts[f"batch_shard_shapes_{NUM_DEVICES}"] == [[1, 28, 28]]
  assert facts["batch_devices_1"] == 1 and facts["batch_shard_shapes_1"] == [[8, 28, 28]]
  assert facts[f"state_replicated_{NUM_DEVICES}"] and facts["state_replicated_1"]


def test_check_batch_size_on_eight_devices(eight_devices):
  message = eight_devices["check_batch_size_error"]
  assert "batch_size=12" in message and "8 devices" in message
  assert "--config.batch_size" in message and "multiple of 8" in message


def test_check_batch_size_message():
  """ValueError naming the batch size, the device count and the flag to change; only the
  mesh's device count matters."""
  fake_mesh = types.SimpleNamespace(devices=np.empty((3,), object))
  with pytest.raises(
      ValueError,
      match=r"batch_size=8 must be divisible by the 3 devices .*"
      r"--config.batch_size to a multiple of 3",
  ):
    sharding.check_batch_size(8, fake_mesh)
  sharding.check_batch_size(9, fake_mesh)
  sharding.check_batch_size(8, sharding.data_mesh())


def test_meshes_and_shardings_on_this_process():
  mesh = sharding.data_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.size == len(jax.devices())
  assert sharding.replicated(mesh).spec == jax.sharding.PartitionSpec()
  assert sharding.batch_sharded(mesh).spec == jax.sharding.PartitionSpec("data")
  assert sharding.process_slice(8) == slice(0, 8)
  rows = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
  batch = sharding.global_batch(rows, mesh)
  assert batch.shape == (4, 3) and batch.sharding == sharding.batch_sharded(mesh)
  np.testing.assert_array_equal(np.asarray(batch), rows)
