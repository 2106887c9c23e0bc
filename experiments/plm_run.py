"""A trained permutation model and what it can do (App. E.1): load, encode and decode digits,
classify (p(y | x')), generate (p(x', y), p(x' | y)) and complete (p(x'_T | x'_S[, y])).

  run = plm_run.load_run("/tmp/plm_cpu")
  labels, probs = plm_run.classify(run, images_uint8)              # [N], [N, 10]
  images, labels = plm_run.generate(run, 16, label=3)              # p(x' | y = 3), guided
  completions, source, labels = plm_run.complete(run, images_uint8, source_ratio=0.5)

Sampling and classification run in padded chunks of CHUNK rows: one compiled program for any
number of rows.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bigjax import multimodal
from bigjax import tasks
from bigjax.evaluation.chunked import by_value, map_chunks
from bigjax.models import vq
from bigjax.models.two_stream import TwoStreamTransformer
from bigjax.training import runs
from experiments import plm_setup
from experiments.plm_setup import Quantiser, classification_all_targets

CHUNK = 100  # rows per compiled sampling/classification call (the last chunk is padded)


class Run(NamedTuple):
  config: ml_collections.ConfigDict
  layout: multimodal.Layout
  model: TwoStreamTransformer
  params: Any
  quantiser: Quantiser


def load_run(workdir: str) -> Run:
  """The finished (or newest checkpointed) permutation model in `workdir` and its quantiser.

  Raises:
    FileNotFoundError: `workdir` has no config.json or no checkpoint; the message says how to
      train one.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  config = runs.read_config(workdir, plm_setup.kind())
  quantiser = plm_setup.load_quantiser(config, workdir)
  layout = plm_setup.layout_of(quantiser)
  run = runs.load(workdir, plm_setup.kind(layout))
  return Run(
      run.config, layout, plm_setup.build_model(run.config, layout), run.state.params, quantiser
  )


def check_images(images, what: str = "images") -> np.ndarray:
  """uint8 [N, 28, 28] digits, or a clear error."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(
        f"{what} must be uint8 pixels in [0, 255], got dtype {images.dtype} (for "
        "floats in [0, 1] use np.round(255 * x).astype(np.uint8))."
    )
  if images.ndim != 3 or images.shape[1:] != (vq.IMAGE_SIZE, vq.IMAGE_SIZE):
    raise ValueError(
        f"{what} must be [N, {vq.IMAGE_SIZE}, {vq.IMAGE_SIZE}] digits, got shape "
        f"{images.shape} (resize other sizes with bigjax.data.mnist.resize)."
    )
  return images


def encode(run: Run, images) -> np.ndarray:
  """int32 [N, L-1] tokens of uint8 [N, 28, 28] digits."""
  images = check_images(images)
  q = run.quantiser
  return vq.encode(q.encoder, q.params, q.vectors, images).reshape(len(images), -1)


def decode(run: Run, tokens) -> np.ndarray:
  """uint8 [N, 28, 28] digits of int [N, L-1] tokens."""
  q = run.quantiser
  side = vq.grid_size(q.encoder.widths)
  tokens = multimodal.check_image_tokens(tokens, run.layout)
  return vq.decode(q.decoder, q.params, q.vectors, tokens.reshape(-1, side, side))


def classify(
    run: Run, images, *, num_orders: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """p(y | x'): (labels int32 [N], probs float32 [N, 10]) of uint8 [N, 28, 28] digits."""
  num_orders = int(num_orders or run.config.eval.num_orders)
  fn = make_classify(
      run.model,
      run.layout,
      all_targets=classification_all_targets(run.config),
      num_orders=num_orders,
  )
  return fn(run.params, encode(run, images), seed=seed)


@functools.lru_cache(maxsize=8)
def _sampler(model, layout, all_targets_, order, temperature, guidance):
  return jax.jit(
      functools.partial(
          multimodal.sample,
          model.apply,
          layout=layout,
          all_targets=all_targets_,
          order=order,
          temperature=temperature,
          guidance=guidance,
      )
  )


def sample_tokens(
    run: Run,
    tokens: np.ndarray,
    given: np.ndarray,
    *,
    seed: int,
    order: str | None = None,
    temperature: float | None = None,
    guidance: float | None = None,
) -> np.ndarray:
  """multimodal.sample in padded chunks of CHUNK rows; tokens/given [N, L] -> tokens [N, L].
  order, temperature and guidance default to the run's eval.* config."""
  if run.config.plm.objective != "permutation":
    raise ValueError(
        "this run was trained with plm.objective='classification' (the "
        "cross-entropy baseline): it models only p(y | x') and cannot generate or "
        "complete images. Use a run trained with the permutation objective."
    )
  fn = _sampler(
      run.model,
      run.layout,
      True,
      order or run.config.eval.order,
      float(run.config.eval.temperature if temperature is None else temperature),
      float(run.config.eval.guidance if guidance is None else guidance),
  )
  return map_chunks(functools.partial(fn, run.params), [tokens, given], size=CHUNK, seed=seed)[0]


def generate(
    run: Run,
    num: int,
    *,
    label: int | None = None,
    seed: int = 0,
    order: str | None = None,
    temperature: float | None = None,
    guidance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Joint samples p(x', y) (label None) or label-conditioned samples p(x' | y = label), the
  latter with label guidance `guidance` (multimodal.sample; None: the run's eval.guidance).

  Returns:
    (images uint8 [num, 28, 28], labels int32 [num]: the given label, or the sampled one).
  """
  if isinstance(num, bool) or not isinstance(num, int) or num < 1:
    raise ValueError(f"num must be a positive integer, got {num!r}.")
  if label is not None:
    multimodal.check_labels(np.array([label]), run.layout)
  return generate_rows(
      run,
      np.full(num, -1 if label is None else label, np.int32),
      seed=seed,
      order=order,
      temperature=temperature,
      guidance=guidance,
  )


def generate_rows(
    run: Run,
    labels: np.ndarray,
    *,
    seed: int = 0,
    order: str | None = None,
    temperature: float | None = None,
    guidance: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """One sample per row: conditioned on labels[i], or joint where labels[i] is -1 (one batched
  call for a mix of both, e.g. a figure). Returns (images uint8 [N, 28, 28], labels [N])."""
  layout = run.layout
  labels = np.asarray(labels, np.int32)
  given = np.zeros((len(labels), layout.length), bool)
  given[:, layout.label_position] = labels >= 0
  checked = multimodal.check_labels(np.maximum(labels, 0), layout)
  tokens = np.asarray(
      multimodal.join(np.zeros((len(labels), layout.num_image_tokens), np.int32), checked, layout)
  )
  out = sample_tokens(
      run, tokens, given, seed=seed, order=order, temperature=temperature, guidance=guidance
  )
  return decode(run, out[:, :-1]), out[:, -1] - layout.num_codes


def source_masks(
    num: int, num_image_tokens: int, ratio: float, *, initial_portion: bool, seed: int
) -> np.ndarray:
  """bool [num, L-1]: round(ratio (L-1)) given image tokens per row, random (seeded) or the
  first ones in raster order (bigjax.tasks.source_sets)."""
  if not 0.0 <= ratio <= 1.0:
    raise ValueError(f"source_ratio must be in [0, 1], got {ratio}.")
  k = int(round(ratio * num_image_tokens))
  return np.asarray(
      tasks.source_sets(
          jax.random.key(seed), num, num_image_tokens, k, initial_portion=initial_portion
      )
  )


def complete(
    run: Run,
    images,
    *,
    source_ratio: float,
    initial_portion: bool = False,
    labels=None,
    num_samples: int = 1,
    seed: int = 0,
    guidance: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """p(x'_T | x'_S[, y]): completions of digits from part of their tokens (and their label).

  Args:
    run: a trained run.
    images: uint8 [N, 28, 28].
    source_ratio: fraction of the image tokens given.
    initial_portion: give the first tokens in raster order (the top rows) instead of random ones.
    labels: optional int [N]: the label is given too.
    num_samples: draws per digit.
    seed: masks and draws.
    guidance: label guidance when `labels` are given (multimodal.sample; None: eval.guidance).

  Returns:
    (completions uint8 [N, num_samples, 28, 28], source_mask bool [N, L-1] over the token grid,
    sampled labels int32 [N, num_samples]).
  """
  tokens = encode(run, images)
  n, layout = len(tokens), run.layout
  if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
  source = source_masks(
      n, layout.num_image_tokens, source_ratio, initial_portion=initial_portion, seed=seed
  )
  given = np.concatenate([source, np.full((n, 1), labels is not None)], axis=1)
  y = np.zeros(n, np.int32) if labels is None else multimodal.check_labels(labels, layout)
  if len(y) != n:
    raise ValueError(f"got {len(y)} labels for {n} images.")
  full = np.asarray(multimodal.join(tokens, y, layout))
  full, given = np.repeat(full, num_samples, axis=0), np.repeat(given, num_samples, axis=0)
  out = sample_tokens(run, full, given, seed=seed + 1, guidance=guidance)
  images_out = decode(run, out[:, :-1]).reshape(n, num_samples, vq.IMAGE_SIZE, vq.IMAGE_SIZE)
  return images_out, source, (out[:, -1] - layout.num_codes).reshape(n, num_samples)


@by_value
def _jit_label_probs(
    model: TwoStreamTransformer, layout: multimodal.Layout, all_targets: bool, num_orders: int
):
  """(params, tokens, key) -> label probabilities, jitted: one function per model, layout and
  options in a process (`by_value`), so another classifier of the same model traces nothing
  again."""

  @jax.jit
  def chunk(params, tokens, key):
    return jnp.exp(
        multimodal.label_log_probs(
            model.apply,
            params,
            tokens,
            key,
            layout=layout,
            all_targets=all_targets,
            num_orders=num_orders,
        )
    )

  return chunk


def make_classify(
    model: TwoStreamTransformer, layout: multimodal.Layout, *, all_targets: bool, num_orders: int
):
  """classify(params, tokens int32 [N, L-1], seed) -> (labels [N], probs [N, C]) in numpy,
  in padded chunks of CHUNK rows (one compiled program for every N)."""
  chunk = _jit_label_probs(model, layout, all_targets, num_orders)

  def classify(params, tokens: np.ndarray, seed: int = 0):
    (probs,) = map_chunks(functools.partial(chunk, params), [tokens], size=CHUNK, seed=seed)
    return probs.argmax(-1).astype(np.int32), probs

  return classify
