r"""Trains the vector quantiser that turns 28x28 digits into 7x7 token grids (App. E.1).

  python -m experiments.vq_mnist --config configs/vq_mnist.py:cpu --workdir /tmp/vq_cpu

Load the result with `experiments.vq_setup.load(workdir)`. The loss is the reconstruction's
mean squared error in [-1, 1] pixel space plus commitment_weight * mean (z - sg(z_q))^2; the
encoder and decoder follow its gradient (AdamW), the codebook follows exponential moving
averages of the encoder outputs assigned to each code, with dead codes restarted from the batch
(`vq.ema_update`). The codebook starts as random encoder outputs of the first batch, so no code
starts dead.

`train` writes into its workdir:
  config.json           the config (`vq_setup.load` rebuilds the models from it)
  checkpoints/<step>/   Orbax checkpoints (params, optimiser state, codebook, step) with the
                        model signature; a run resumes from the newest
  metrics.jsonl         one row per `log_every` steps: step, loss, mse, commitment, the batch's
                        codebook perplexity and fraction of codes used, seconds (and
                        TensorBoard events)
  vq.json               the summary once training has finished (test MSE, codebook usage,
                        steps, timings); removed while a run continues training, so `load`
                        never pairs the parameters of one step with the numbers of another
  reconstructions.png   test digits (odd rows) over their reconstructions (even rows)
"""

from __future__ import annotations

import os
import time
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bigjax.data import mnist
from bigjax.models import vq
from bigjax.training import batch_fn, distributed, loop, programs, sharding, write_json
from experiments import cli
from experiments.vq_setup import (
    SUMMARY_FILE,
    VQState,
    build_models,
    init_state,
    load_split,
    make_optimizer,
    model_signature,
    validate_config,
)

DATA_STREAM = 1  # bigjax.training.data_order (the same order as the classifier's, as before)


RECONSTRUCTIONS_FILE = "reconstructions.png"


@programs.by_config
def make_train_step(config, mesh: jax.sharding.Mesh | None = None) -> Callable:
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

    (loss, (z, indices, mse, commitment)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    codebook = vq.ema_update(
        state.codebook, z, indices, decay=decay, rng=rng, dead_code_threshold=threshold
    )
    usage = vq.codebook_usage(indices, num_codes)
    metrics = dict(
        loss=loss,
        mse=mse,
        commitment=commitment,
        perplexity=usage["perplexity"],
        fraction_used=usage["fraction_used"],
        grad_norm=optax.tree.norm(grads),
    )
    return VQState(state.step + 1, params, opt_state, codebook), metrics

  # Data parallel on `mesh` (bigjax.training.sharding): the state replicated, the batch split.
  mesh = mesh or sharding.data_mesh()
  replicated, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(
      train_step,
      in_shardings=(replicated,) + (split,) * 1,
      out_shardings=(replicated, replicated),
      donate_argnums=0,
  )


def evaluate(
    encoder: vq.VQEncoder,
    decoder: vq.VQDecoder,
    params: Any,
    codebook_vectors: jax.Array,
    images: np.ndarray,
) -> tuple[dict[str, float], np.ndarray]:
  """Reconstruction error and codebook usage of uint8 digits, through `vq.encode`/`vq.decode`.

  Returns:
    ({mse: in [-1, 1] pixel space, mse_01: in [0, 1] space (= mse / 4), fraction_used,
    num_used, perplexity}, the uint8 reconstructions [N, 28, 28]).
  """
  tokens = vq.encode(encoder, params, codebook_vectors, images)
  reconstructions = vq.decode(decoder, params, codebook_vectors, tokens)
  error = reconstructions.astype(np.float64) - images.astype(np.float64)
  usage = jax.device_get(vq.codebook_usage(tokens, int(np.shape(codebook_vectors)[0])))
  return (
      dict(
          mse=float(np.mean((error / 127.5) ** 2)),
          mse_01=float(np.mean((error / 255) ** 2)),
          fraction_used=float(usage["fraction_used"]),
          num_used=int(usage["num_used"]),
          perplexity=float(usage["perplexity"]),
      ),
      reconstructions,
  )


def save_reconstructions(
    path: str,
    images: np.ndarray,
    reconstructions: np.ndarray,
    *,
    title: str,
    per_row: int = 16,
    pairs: int = 3,
) -> None:
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
      grid[y : y + side, x : x + side] = source[i]
  fig, ax = plt.subplots(figsize=(per_row * 0.5, 2 * pairs * 0.5 + 0.4))
  ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
  ax.set_axis_off()
  ax.set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(path + ".tmp.png", dpi=120)
  plt.close(fig)
  os.replace(path + ".tmp.png", path)


def train(
    config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True
) -> dict[str, Any]:
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
    bigjax.training.SignatureMismatchError: `workdir` holds another model's checkpoints.
    bigjax.training.NonFiniteLossError: the loss became NaN or inf (nothing saved after it).
  """
  validate_config(config)
  t0 = time.perf_counter()
  distributed.initialize(auto=config.get("distributed", False))  # (once the entry point joined)
  workdir = os.path.abspath(workdir)
  train_images = load_split(config, config.data.train_split)
  test_images = load_split(config, config.data.test_split)
  mesh = sharding.data_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  replicated = sharding.replicated(mesh)
  batch = batch_fn(
      [train_images],
      config.batch_size,
      seed=config.seed,
      stream=DATA_STREAM,
      transform=lambda x: (mnist.to_unit_range(x),),
      mesh=mesh,
  )

  state, run = loop.train(
      workdir,
      config=config,
      init_state=lambda: programs.jit_init(config, init_state, replicated)(
          jax.random.key(int(config.seed)), batch(0)[0]
      ),
      step_fn=make_train_step(config, mesh),
      batch_fn=batch,
      num_steps=config.num_steps,
      signature=model_signature(config),
      log_every=config.log_every,
      checkpoint_every=config.checkpoint_every,
      keep_checkpoints=config.keep_checkpoints,
      outdated_by_training=(SUMMARY_FILE,),
      progress=progress,
      description=f"VQ MNIST {config.get('variant', '')}",
      show=("mse", "fraction_used"),
      fix="Lower learning_rate.",
      state_sharding=replicated,
  )

  state = sharding.local_view(state)  # this process's copy, for the evaluation
  encoder, decoder = build_models(config)
  test, reconstructions = evaluate(
      encoder, decoder, state.params, state.codebook.vectors, test_images
  )
  train_metrics, _ = evaluate(
      encoder, decoder, state.params, state.codebook.vectors, train_images[:1000]
  )
  if jax.process_index() == 0:
    save_reconstructions(
        os.path.join(workdir, RECONSTRUCTIONS_FILE),
        test_images,
        reconstructions,
        title=f"test digits over their reconstructions (step {run['step']}, MSE in [-1, 1] "
        f"{test['mse']:.4f}, {test['num_used']}/{config.model.num_codes} codes used)",
    )
  summary = dict(
      variant=config.get("variant"),
      test_mse=test["mse"],
      test_mse_01=test["mse_01"],
      test_fraction_used=test["fraction_used"],
      test_num_used=test["num_used"],
      test_perplexity=test["perplexity"],
      train_mse=train_metrics["mse"],
      num_test=int(len(test_images)),
      num_train=int(len(train_images)),
      steps=run["step"],
      resumed_from=run["resumed_from"],
      seconds=time.perf_counter() - t0,
      widths=[int(w) for w in config.model.widths],
      code_dim=int(config.model.code_dim),
      num_codes=int(config.model.num_codes),
      grid_size=vq.grid_size(config.model.widths),
      source=str(config.data.source),
      train_split=config.data.train_split,
      test_split=config.data.test_split,
      train_digits=mnist.describe_split(config.data.source, config.data.train_split),
      test_digits=mnist.describe_split(config.data.source, config.data.test_split),
  )
  write_json(os.path.join(workdir, SUMMARY_FILE), summary)
  distributed.barrier("vq_mnist: done")  # the run's files are complete for every process
  return summary


if __name__ == "__main__":
  cli.run(
      train,
      "vq_mnist.py",
      workdir_help="Directory for the quantiser's checkpoints, metrics, vq.json and "
      "reconstructions.png; a run resumes from the newest checkpoint found here.",
  )
