r"""Trains the vector quantiser that turns 28x28 digits into 7x7 token grids (App. E.1).

  python -m experiments.vq_mnist --config configs/vq_mnist.py:cpu --workdir /tmp/vq_cpu

  encoder, decoder, params, codebook_vectors, info = vq_mnist.load("/tmp/vq_cpu")
  tokens = vq.encode(encoder, params, codebook_vectors, images_uint8)   # int32 [N, 7, 7]
  images = vq.decode(decoder, params, codebook_vectors, tokens)         # uint8 [N, 28, 28]

(`vq` is `bigjax.models.vq`.) The loss is the reconstruction's mean squared error in [-1, 1]
pixel space plus commitment_weight * mean (z - sg(z_q))^2; the encoder and decoder follow its
gradient (AdamW), the codebook follows exponential moving averages of the encoder outputs
assigned to each code, with dead codes restarted from the batch (`vq.ema_update`). The codebook
starts as random encoder outputs of the first batch, so no code starts dead.

`train` writes into its workdir:
  config.json           the config (`load` rebuilds the models from it)
  checkpoints/<step>/   Orbax checkpoints (params, optimiser state, codebook, step) with the
                        model signature; a run resumes from the newest
  metrics.jsonl         one row per `log_every` steps: step, loss, mse, commitment, the batch's
                        codebook perplexity and fraction of codes used, seconds
  vq.json               the summary once training has finished (test MSE, codebook usage,
                        steps, timings); removed while a run continues training, so `load`
                        never pairs the parameters of one step with the numbers of another
  reconstructions.png   test digits (odd rows) over their reconstructions (even rows)
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, NamedTuple

from absl import app
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from bigjax import checkpoint as ckpt_lib
from bigjax import mnist
from bigjax.evaluation.classifier import batch_indices
from bigjax.models import vq
from experiments import cli

__all__ = ["VQState", "abstract_state", "build_models", "evaluate", "init_state", "load",
           "make_train_step", "model_signature", "train", "validate_config"]

SUMMARY_FILE = "vq.json"
CONFIG_FILE = "config.json"
RECONSTRUCTIONS_FILE = "reconstructions.png"
_TRAIN_COMMAND = "python -m experiments.vq_mnist --config configs/vq_mnist.py:{variant} " \
                 "--workdir {workdir}"


# ----------------------------------------------------------------------------------------------
# Models, config checks and data.

def build_models(config) -> tuple[vq.VQEncoder, vq.VQDecoder]:
  """The config's (encoder, decoder); the codebook size is config.model.num_codes."""
  m = config.model
  widths = tuple(int(w) for w in m.widths)
  return (vq.VQEncoder(widths=widths, code_dim=int(m.code_dim)),
          vq.VQDecoder(widths=widths, code_dim=int(m.code_dim)))


def model_signature(config) -> dict[str, Any]:
  """What a checkpoint must agree on to be restored into this config's state (JSON types)."""
  m = config.model
  return dict(widths=[int(w) for w in m.widths], code_dim=int(m.code_dim),
              num_codes=int(m.num_codes), image_size=vq.IMAGE_SIZE)


def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  def fail(msg):
    raise ValueError(f"configs/vq_mnist.py ({config.get('variant', '?')}): {msg}")
  for name in ("num_steps", "batch_size", "checkpoint_every", "log_every"):
    if isinstance(config[name], bool) or not isinstance(config[name], int) or config[name] < 1:
      fail(f"{name} must be a positive integer, got {config[name]!r}.")
  m = config.model
  widths = m.widths
  if (not isinstance(widths, (tuple, list)) or not widths
      or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)):
    fail(f"model.widths must be a non-empty tuple of positive ints, got {widths!r}.")
  try:
    side = vq.grid_size(widths)
  except ValueError as e:
    fail(f"model.widths: {e}")
  for name in ("code_dim", "num_codes"):
    if isinstance(m[name], bool) or not isinstance(m[name], int) or m[name] < 1:
      fail(f"model.{name} must be a positive integer, got {m[name]!r}.")
  if m.num_codes > config.batch_size * side * side:
    fail(f"model.num_codes={m.num_codes} exceeds the {config.batch_size * side * side} encoder "
         f"outputs of one batch (batch_size={config.batch_size} x {side}x{side}), from which "
         "the codebook is initialised; use fewer codes or a larger batch.")
  if not config.learning_rate > 0:
    fail(f"learning_rate must be > 0, got {config.learning_rate}.")
  if not config.weight_decay >= 0:
    fail(f"weight_decay must be >= 0, got {config.weight_decay}.")
  if not config.loss.commitment_weight >= 0:
    fail(f"loss.commitment_weight must be >= 0, got {config.loss.commitment_weight}.")
  if not 0.0 <= config.codebook.decay < 1.0:
    fail(f"codebook.decay must be in [0, 1), got {config.codebook.decay}.")
  if not 0.0 <= config.codebook.dead_code_threshold <= 1.0:
    fail(f"codebook.dead_code_threshold must be in [0, 1] (a restarted code starts with EMA "
         f"count 1, so a larger threshold restarts codes in use), got "
         f"{config.codebook.dead_code_threshold}.")


def load_split(config, split: str) -> np.ndarray:
  """uint8 [N, 28, 28] digits of `split` (labels are not needed)."""
  images, _ = mnist.load(config.data.source, split=split)
  return images


# ----------------------------------------------------------------------------------------------
# Training.

class VQState(NamedTuple):
  """The training state, one pytree (checkpointed as is)."""
  step: jax.Array
  params: Any           # {"encoder": variables, "decoder": variables}
  opt_state: Any
  codebook: vq.Codebook


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with a linear warm-up (the first 5% of the steps, at most 100) then cosine decay to
  1% of `learning_rate` at `num_steps`."""
  warmup = max(1, min(100, config.num_steps // 20))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, warmup, max(config.num_steps, warmup + 1),
      end_value=config.learning_rate * 0.01)
  return optax.adamw(schedule, weight_decay=config.weight_decay)


def init_state(config, rng: jax.Array, images: jax.Array) -> VQState:
  """Fresh parameters, and a codebook of random encoder outputs of `images`.

  Args:
    config: a configs/vq_mnist.py config.
    rng: PRNG key.
    images: float [B, 28, 28] in [-1, 1], the first training batch.
  """
  encoder, decoder = build_models(config)
  k_encoder, k_decoder, k_codebook = jax.random.split(rng, 3)
  encoder_vars = encoder.init(k_encoder, images)
  z = encoder.apply(encoder_vars, images)
  params = dict(encoder=encoder_vars, decoder=decoder.init(k_decoder, z))
  codebook = vq.codebook_from_samples(k_codebook, z, int(config.model.num_codes))
  return VQState(step=jnp.zeros((), jnp.int32), params=params,
                 opt_state=make_optimizer(config).init(params), codebook=codebook)


def abstract_state(config) -> VQState:
  """The state's shapes and dtypes on the first local device, to restore a checkpoint into
  without initialising (and compiling the initialisation of) parameters first."""
  images = jax.ShapeDtypeStruct((config.batch_size, vq.IMAGE_SIZE, vq.IMAGE_SIZE), jnp.float32)
  shapes = jax.eval_shape(lambda x: init_state(config, jax.random.key(0), x), images)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)


def make_train_step(config) -> Callable:
  """(state, images [B, 28, 28] in [-1, 1]) -> (state, metrics), jitted, the state donated.
  The dead-code restarts draw from `fold_in(key(seed), step)`."""
  encoder, decoder = build_models(config)
  opt = make_optimizer(config)
  num_codes = int(config.model.num_codes)
  beta = float(config.loss.commitment_weight)
  decay = float(config.codebook.decay)
  threshold = float(config.codebook.dead_code_threshold)
  seed = int(config.seed)

  def train_step(state: VQState, images: jax.Array):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
      z = encoder.apply(params["encoder"], images)
      z_q, indices = vq.quantize(z, state.codebook.vectors)
      reconstruction = decoder.apply(params["decoder"], z_q)
      mse = jnp.mean((reconstruction - images) ** 2)
      # The codebook moves by EMA, so only the commitment term pulls z (VQ-VAE Eq. (3)).
      commitment = jnp.mean((z - jax.lax.stop_gradient(z_q)) ** 2)
      return mse + beta * commitment, (z, indices, mse, commitment)

    (loss, (z, indices, mse, commitment)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    codebook = vq.ema_update(state.codebook, z, indices, decay=decay, rng=rng,
                             dead_code_threshold=threshold)
    usage = vq.codebook_usage(indices, num_codes)
    metrics = dict(loss=loss, mse=mse, commitment=commitment, perplexity=usage["perplexity"],
                   fraction_used=usage["fraction_used"], grad_norm=optax.tree.norm(grads))
    return VQState(state.step + 1, params, opt_state, codebook), metrics

  return jax.jit(train_step, donate_argnums=0)


def evaluate(encoder: vq.VQEncoder, decoder: vq.VQDecoder, params: Any,
             codebook_vectors: jax.Array, images: np.ndarray) -> tuple[dict[str, float],
                                                                      np.ndarray]:
  """Reconstruction error and codebook usage of uint8 digits, through `vq.encode`/`vq.decode`.

  Returns:
    ({mse: in [-1, 1] pixel space, mse_01: in [0, 1] space (= mse / 4), fraction_used,
    num_used, perplexity}, the uint8 reconstructions [N, 28, 28]).
  """
  tokens = vq.encode(encoder, params, codebook_vectors, images)
  reconstructions = vq.decode(decoder, params, codebook_vectors, tokens)
  error = reconstructions.astype(np.float64) - images.astype(np.float64)
  usage = jax.device_get(vq.codebook_usage(tokens, int(np.shape(codebook_vectors)[0])))
  return dict(mse=float(np.mean((error / 127.5) ** 2)), mse_01=float(np.mean((error / 255) ** 2)),
              fraction_used=float(usage["fraction_used"]), num_used=int(usage["num_used"]),
              perplexity=float(usage["perplexity"])), reconstructions


def save_reconstructions(path: str, images: np.ndarray, reconstructions: np.ndarray, *,
                         title: str, per_row: int = 16, pairs: int = 3) -> None:
  """A PNG of `pairs` rows of digits, each over a row of their reconstructions."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  n = min(len(images), per_row * pairs)
  per_row = min(per_row, max(n, 1))
  pairs = -(-n // per_row)
  side = images.shape[1]
  grid = np.full((2 * pairs * (side + 2), per_row * (side + 2)), 128, np.uint8)
  for i in range(n):
    r, c = divmod(i, per_row)
    for k, source in enumerate((images, reconstructions)):
      y, x = (2 * r + k) * (side + 2) + 1, c * (side + 2) + 1
      grid[y:y + side, x:x + side] = source[i]
  fig, ax = plt.subplots(figsize=(per_row * 0.5, 2 * pairs * 0.5 + 0.4))
  ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
  ax.set_axis_off()
  ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=120)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)


def train(config: ml_collections.ConfigDict, workdir: str, *,
          progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the config's quantiser in `workdir`, then evaluates it.

  Args:
    config: a `configs/vq_mnist.py` config.
    workdir: where config.json, checkpoints/, metrics.jsonl, vq.json and reconstructions.png
      go. A run resumes from the newest checkpoint there; one that already reached `num_steps`
      is only evaluated again.
    progress: show a tqdm progress bar.

  Returns:
    The summary also written to vq.json: test_mse (in [-1, 1] pixel space), test_mse_01 (in
    [0, 1]), test_fraction_used, test_num_used, test_perplexity (codebook usage on the test
    digits), train_mse (on up to 1,000 training digits), num_test, num_train, steps,
    resumed_from (the step restored, None for a fresh run), seconds (this call), variant,
    widths, code_dim, num_codes, grid_size, source, train_split, test_split.

  Raises:
    ValueError: an inconsistent config.
    bigjax.checkpoint.SignatureMismatchError: `workdir` holds another model's checkpoints.
    FloatingPointError: the loss became NaN or inf (nothing is saved after that).
  """
  validate_config(config)
  t0 = time.perf_counter()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  train_images = load_split(config, config.data.train_split)
  test_images = load_split(config, config.data.test_split)
  if len(train_images) < config.batch_size:
    raise ValueError(f"the training split has {len(train_images)} images, fewer than "
                     f"batch_size={config.batch_size}.")

  def batch(step):
    return mnist.to_unit_range(
        train_images[batch_indices(step, len(train_images), config.batch_size, config.seed)])

  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       signature=model_signature(config), max_to_keep=3)
  try:
    restored_step, state = checkpointer.restore_latest(abstract_state(config))
    if state is None:
      state = jax.jit(lambda key, x: init_state(config, key, x))(
          jax.random.key(int(config.seed)), batch(0))
  except Exception:
    checkpointer.close()
    raise
  # Written only now: a refused resume (another model's checkpoints) leaves the files as they were.
  ckpt_lib.write_json(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))
  start = int(state.step)
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  if start < config.num_steps and os.path.exists(summary_path):
    os.remove(summary_path)   # it describes older parameters than the ones about to be saved
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  ckpt_lib.truncate_log(metrics_path, start)

  train_step = make_train_step(config) if start < config.num_steps else None
  pending, last_saved = [], restored_step
  bar = tqdm.tqdm(total=config.num_steps, initial=min(start, config.num_steps),
                  disable=not progress, desc=f"VQ MNIST {config.get('variant', '')}",
                  unit="step", dynamic_ncols=True)
  try:
    for step in range(start, config.num_steps):
      state, metrics = train_step(state, batch(step))
      pending.append(metrics)
      bar.update(1)
      done = step + 1
      save = done % config.checkpoint_every == 0 or done == config.num_steps
      if not (done % config.log_every == 0 or save):
        continue
      values = jax.device_get(pending)
      pending = []
      means = ckpt_lib.average_metrics(values, last_step=done, last_saved=last_saved,
                                       directory=checkpointer.directory,
                                       fix="Lower learning_rate.")
      row = dict(step=done, **means,
                 seconds=time.perf_counter() - t0)
      with open(metrics_path, "a") as f:
        f.write(json.dumps(row) + "\n")
      bar.set_postfix(mse=f"{row['mse']:.4f}", used=f"{row['fraction_used']:.2f}")
      if save:
        checkpointer.save(done, state)
        last_saved = done
  finally:
    bar.close()
    checkpointer.close()

  encoder, decoder = build_models(config)
  test, reconstructions = evaluate(encoder, decoder, state.params, state.codebook.vectors,
                                   test_images)
  train_metrics, _ = evaluate(encoder, decoder, state.params, state.codebook.vectors,
                              train_images[:1000])
  save_reconstructions(
      os.path.join(workdir, RECONSTRUCTIONS_FILE), test_images, reconstructions,
      title=f"test digits over their reconstructions (step {int(state.step)}, "
            f"MSE in [-1, 1] {test['mse']:.4f}, {test['num_used']}/{config.model.num_codes} "
            "codes used)")
  summary = dict(
      variant=config.get("variant"), test_mse=test["mse"], test_mse_01=test["mse_01"],
      test_fraction_used=test["fraction_used"], test_num_used=test["num_used"],
      test_perplexity=test["perplexity"], train_mse=train_metrics["mse"],
      num_test=int(len(test_images)), num_train=int(len(train_images)), steps=int(state.step),
      resumed_from=restored_step, seconds=time.perf_counter() - t0,
      widths=[int(w) for w in config.model.widths], code_dim=int(config.model.code_dim),
      num_codes=int(config.model.num_codes), grid_size=vq.grid_size(config.model.widths),
      source=str(config.data.source), train_split=config.data.train_split,
      test_split=config.data.test_split)
  ckpt_lib.write_json(summary_path, summary)
  return summary


# ----------------------------------------------------------------------------------------------
# Loading.

def load(workdir: str) -> tuple[vq.VQEncoder, vq.VQDecoder, Any, jax.Array, dict[str, Any]]:
  """The quantiser trained in `workdir` by `train` (or `python -m experiments.vq_mnist`).

  Args:
    workdir: the training run's directory.

  Returns:
    (encoder, decoder, params, codebook_vectors, info): the Flax modules, their variables
    {"encoder": ..., "decoder": ...}, the codebook [num_codes, code_dim], and the summary from
    vq.json (test_mse, steps, num_codes, grid_size, ...). Use them with `bigjax.models.vq.encode`
    and `bigjax.models.vq.decode`.

  Raises:
    FileNotFoundError: no finished quantiser in `workdir`; the message gives the command that
      trains (or finishes training) one.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  config_path = os.path.join(workdir, CONFIG_FILE)
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(workdir) or not os.path.isfile(config_path):
    why = "does not exist" if not os.path.isdir(workdir) else f"has no {CONFIG_FILE}"
    raise FileNotFoundError(
        f"no MNIST vector quantiser in {workdir} (the directory {why}); train one with "
        f"`{_TRAIN_COMMAND.format(variant='cpu', workdir=workdir)}`.")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  command = _TRAIN_COMMAND.format(variant=config.get("variant") or "cpu", workdir=workdir)
  if not os.path.isfile(summary_path):
    raise FileNotFoundError(
        f"the vector quantiser in {workdir} has not finished training (no {SUMMARY_FILE}); "
        f"rerun the command that started it, e.g. `{command}` (plus its --config.* overrides), "
        "to resume it.")
  with open(summary_path) as f:
    info = json.load(f)
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(f"{workdir} has {SUMMARY_FILE} but no checkpoints/ folder; train "
                            f"the quantiser again with `{command}`.")
  checkpointer = ckpt_lib.Checkpointer(checkpoints, signature=model_signature(config),
                                       max_to_keep=3)
  try:
    step, restored = checkpointer.restore_latest(abstract_state(config))
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {checkpoints}; train the quantiser with "
                            f"`{command}`.")
  if step != info["steps"]:
    raise RuntimeError(f"the newest readable checkpoint in {checkpoints} is step {step}, but "
                       f"{SUMMARY_FILE} describes step {info['steps']}; rerun `{command}` (with "
                       "its --config.* overrides) to finish and evaluate the run.")
  encoder, decoder = build_models(config)
  return encoder, decoder, restored.params, restored.codebook.vectors, info


# ----------------------------------------------------------------------------------------------
# The entry point.

def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the directory for the quantiser's "
                         "checkpoints, vq.json and reconstructions.png.")
  summary = train(_CONFIG.value, _WORKDIR.value)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  _CONFIG, _WORKDIR = cli.define_config_and_workdir(
      "vq_mnist.py",
      config_help="Config file and variant, e.g. configs/vq_mnist.py:cpu (the default).",
      workdir_help="Directory for the quantiser's checkpoints, metrics, vq.json and "
                   "reconstructions.png; a run resumes from the newest checkpoint found here.")
  app.run(main)
