r"""A small MNIST classifier that bigjax trains and checkpoints itself, for evaluating samples.

Generated digits are scored with this network instead of a downloaded Inception model: its
labels give `metrics.label_agreement` (does a completion keep the digit's identity?) and its
penultimate-layer features give `metrics.frechet_distance` (an FID on MNIST features).

  python -m experiments.mnist_classifier --config configs/mnist_classifier.py:cpu \
      --workdir /tmp/clf_cpu

  model, params, info = classifier.load("/tmp/clf_cpu", image_size=28)
  predict = classifier.make_predict(model, params)
  labels, probs, features = predict(images_uint8)      # [N], [N, 10], [N, feature_dim]

A *partial-digit* classifier (`data.source_patch` > 0, `configs/mnist_classifier.py:partial`)
is trained on digits of which only some patches are given, and estimates p(y | x_S): its mean
probability of the true label is the label agreement that an exact sampler of q(x_T | x_S)
would reach (the reference `experiments.gan_eval --posterior_classifier_dir` reports):

  labels, probs, features = predict(images_uint8, source_pixels)   # source_pixels bool [N, H, W]

`train` writes into its workdir:
  config.json           the config (`load` rebuilds the model from it)
  checkpoints/<step>/   Orbax checkpoints with the model signature; a run resumes from the newest
  metrics.jsonl         one row per `log_every` steps: step, loss, batch accuracy, seconds
  classifier.json       the summary once training has finished (test accuracy, steps, timings);
                        removed while a run continues training, so `load` never pairs the
                        parameters of one step with the accuracy of another
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from bigjax import checkpoint as ckpt_lib
from bigjax import mnist
from bigjax.models.patches import patch_masks_to_pixels

__all__ = ["Classifier", "ClassifierState", "abstract_state", "build_model", "init_state", "load",
           "make_predict", "model_signature", "train", "validate_config"]

NUM_CLASSES = 10
SUMMARY_FILE = "classifier.json"
CONFIG_FILE = "config.json"
_TRAIN_COMMAND = ("python -m experiments.mnist_classifier --config configs/mnist_classifier.py:"
                  "{variant}{size} --workdir {workdir}")


def _train_command(workdir: str, image_size: int | None = None, source_patch: int = 0) -> str:
  """The command that trains a classifier for `image_size` digits, whole (source_patch 0) or
  partial ones of that patch size."""
  size = "" if image_size in (None, 28) else f" --config.data.image_size={int(image_size)}"
  variant = f"partial --config.data.source_patch={int(source_patch)}" if source_patch else "cpu"
  return _TRAIN_COMMAND.format(variant=variant, size=size, workdir=workdir)


# ----------------------------------------------------------------------------------------------
# The model.

class Classifier(nn.Module):
  """A small CNN for grayscale digits.

  One stage per entry of `widths`: a 3x3 convolution with that many channels, ReLU, 2x2 max
  pooling. Then the flattened maps -> Dense(feature_dim) -> ReLU (the *features*) -> dropout
  (training only) -> Dense(10) logits. No batch statistics: the model is a pure function of
  (params, images). Any image size works (sizes not divisible by 2^len(widths) are floored by
  the pooling); the first Dense layer's shape depends on it, so parameters fit one size only.

  With `source_patch` > 0 the classifier reads partial digits: it also takes the bool pixel
  mask of the given pixels, sees the image with every other pixel set to background plus the
  mask (as +-1) as a second channel, and so tells a black given pixel from a missing one.

  Attributes:
    widths: channels of each conv stage, e.g. (16, 32).
    feature_dim: width of the feature layer.
    dropout: dropout rate on the features during training.
    image_size: the side the parameters were made for; when set, `__call__` checks its input
      against it (a clearer error than Flax's Dense shape mismatch). None: not checked.
    source_patch: 0 for whole digits; P > 0 for partial digits made of given P x P patches
      (the patch size is what training drew masks with; `__call__` takes any pixel mask).
  """
  widths: Sequence[int] = (16, 32)
  feature_dim: int = 128
  dropout: float = 0.3
  image_size: int | None = None
  source_patch: int = 0

  @nn.compact
  def __call__(self, images: jax.Array, source: jax.Array | None = None, *,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Logits and features of a batch of digits.

    Args:
      images: float [B, H, W] in [-1, 1] (`mnist.to_unit_range` of uint8 pixels).
      source: bool [B, H, W], the given pixels: required when `source_patch` > 0, refused
        otherwise.
      train: apply dropout (needs a "dropout" PRNG key in `rngs`).

    Returns:
      (logits [B, 10], features [B, feature_dim]).
    """
    if images.ndim != 3:
      raise ValueError(f"Classifier expects grayscale images [B, H, W], got shape "
                       f"{images.shape}.")
    if self.image_size is not None and images.shape[1:] != (self.image_size,) * 2:
      raise ValueError(f"this Classifier was built for {self.image_size}x{self.image_size} "
                       f"images, got {images.shape[1]}x{images.shape[2]}.")
    if self.source_patch:
      if source is None or source.shape != images.shape:
        raise ValueError(
            f"this classifier reads partial digits (source_patch={self.source_patch}): pass "
            f"`source`, the bool [B, H, W] mask of the given pixels, shaped like the images "
            f"{images.shape}; got {None if source is None else source.shape}.")
      x = jnp.stack([jnp.where(source, images, -1.0), jnp.where(source, 1.0, -1.0)], axis=-1)
    elif source is not None:
      raise ValueError("this classifier reads whole digits; a source mask is only for one "
                       "trained with data.source_patch > 0 (configs/mnist_classifier.py:partial).")
    else:
      x = images[..., None]
    for width in self.widths:
      x = nn.relu(nn.Conv(int(width), (3, 3), padding="SAME")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    features = nn.relu(nn.Dense(self.feature_dim)(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    return nn.Dense(NUM_CLASSES)(x), features


def _source_patch(config) -> int:
  """The config's data.source_patch (0 for whole digits; configs written before the field have
  none)."""
  return int(config.data.get("source_patch", 0))


def build_model(config) -> Classifier:
  m = config.model
  return Classifier(widths=tuple(int(w) for w in m.widths), feature_dim=int(m.feature_dim),
                    dropout=float(m.dropout), image_size=int(config.data.image_size),
                    source_patch=_source_patch(config))


def model_signature(config) -> dict[str, Any]:
  """What a checkpoint must agree on to be restored into this config's state (JSON types:
  Orbax stores the signature as JSON, so tuples are lists here). `source_patch` is in it only
  when set, so whole-digit classifiers saved before the field existed still restore."""
  m = config.model
  signature = dict(image_size=int(config.data.image_size), widths=[int(w) for w in m.widths],
                   feature_dim=int(m.feature_dim), dropout=float(m.dropout))
  if _source_patch(config):
    signature["source_patch"] = _source_patch(config)
  return signature


# ----------------------------------------------------------------------------------------------
# Config checks and data.

def validate_config(config) -> None:
  """Raises ValueError for an inconsistent config, before anything is loaded or compiled."""
  def fail(msg):
    raise ValueError(f"configs/mnist_classifier.py ({config.get('variant', '?')}): {msg}")
  for name in ("num_steps", "batch_size", "checkpoint_every", "log_every"):
    if isinstance(config[name], bool) or not isinstance(config[name], int) or config[name] < 1:
      fail(f"{name} must be a positive integer, got {config[name]!r}.")
  size = config.data.image_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    fail(f"data.image_size must be a positive integer, got {size!r}.")
  widths = config.model.widths
  if (not isinstance(widths, (tuple, list)) or not widths
      or not all(isinstance(w, int) and w >= 1 for w in widths)):
    fail(f"model.widths must be a non-empty tuple of positive ints, got {widths!r}.")
  if size < 2 ** len(widths):
    fail(f"data.image_size={size} is too small for {len(widths)} 2x2 poolings "
         f"(model.widths={tuple(widths)}); use fewer stages or larger images.")
  if not (isinstance(config.model.feature_dim, int) and config.model.feature_dim >= 1):
    fail(f"model.feature_dim must be a positive int, got {config.model.feature_dim!r}.")
  if not 0.0 <= config.model.dropout < 1.0:
    fail(f"model.dropout must be in [0, 1), got {config.model.dropout}.")
  if not config.learning_rate > 0:
    fail(f"learning_rate must be > 0, got {config.learning_rate}.")
  if not config.weight_decay >= 0:
    fail(f"weight_decay must be >= 0, got {config.weight_decay}.")
  if not (isinstance(config.data.max_shift, int) and 0 <= config.data.max_shift < size):
    fail(f"data.max_shift must be an int in [0, image_size), got {config.data.max_shift!r}.")
  patch = config.data.get("source_patch", 0)
  if isinstance(patch, bool) or not isinstance(patch, int) or patch < 0 or (
      patch and size % patch):
    fail(f"data.source_patch must be 0 (whole digits) or a patch size that divides "
         f"data.image_size={size} (the GAN run's model.patch_size), got {patch!r}.")


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [N, S, S] digits of `split` at the config's image size, and int32 labels [N]."""
  images, labels = mnist.load(config.data.source, split=split)
  if labels.size and labels.min() < 0:
    raise ValueError(f"MNIST source {config.data.source!r} (split {split!r}) has no labels; "
                     "the classifier needs labelled digits (an .npz needs a `labels` array).")
  size = int(config.data.image_size)
  if images.shape[1:] != (size, size):
    images = mnist.resize(images, size)
  return images, labels


def batch_indices(step: int, num_images: int, batch_size: int, seed: int) -> np.ndarray:
  """Rows of the batch at `step`: a fresh permutation per epoch seeded by (seed, epoch), the
  last incomplete batch of each epoch dropped. A pure function of step, so a resumed run sees
  the batches the uninterrupted run would have seen."""
  steps_per_epoch = num_images // batch_size
  epoch, i = divmod(int(step), steps_per_epoch)
  perm = np.random.default_rng([int(seed), 1, epoch]).permutation(num_images)
  return perm[i * batch_size:(i + 1) * batch_size]


def random_sources(rng: jax.Array, batch: int, image_size: int, patch: int) -> jax.Array:
  """bool [B, S, S] pixel masks of the given pixels, for training a partial-digit classifier.

  Each example gets k ~ uniform{0, ..., L} of its L = (S / patch)^2 patches: the first k in
  raster order (an initial portion, Fig. 5b) for half of the examples, k uniformly random ones
  for the other half; the two kinds of source set `experiments.gan_eval` measures.
  """
  length = (image_size // patch) ** 2
  k_count, k_kind, k_order = jax.random.split(rng, 3)
  count = jax.random.randint(k_count, (batch, 1), 0, length + 1)
  ranks = jnp.argsort(jnp.argsort(jax.random.uniform(k_order, (batch, length)), axis=-1),
                      axis=-1)
  initial = jax.random.bernoulli(k_kind, 0.5, (batch, 1))
  ranks = jnp.where(initial, jnp.arange(length)[None], ranks)
  return patch_masks_to_pixels(ranks < count, (image_size, image_size), patch)


def random_shift(rng: jax.Array, images: jax.Array, max_shift: int) -> jax.Array:
  """Shifts each image [B, H, W] (in [-1, 1]) by an independent random offset of up to
  `max_shift` pixels along each axis, filling with background (-1)."""
  if max_shift == 0:
    return images
  _, h, w = images.shape
  padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift)),
                   constant_values=-1.0)
  offsets = jax.random.randint(rng, (images.shape[0], 2), 0, 2 * max_shift + 1)
  return jax.vmap(lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1]), (h, w)))(padded, offsets)


# ----------------------------------------------------------------------------------------------
# Training.

class ClassifierState(NamedTuple):
  """The training state, one pytree (checkpointed as is)."""
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW with a linear warm-up (the first 5% of the steps, at most 100) then cosine decay to
  1% of `learning_rate` at `num_steps`."""
  warmup = max(1, min(100, config.num_steps // 20))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, warmup, max(config.num_steps, warmup + 1),
      end_value=config.learning_rate * 0.01)
  return optax.adamw(schedule, weight_decay=config.weight_decay)


def init_state(config, rng: jax.Array) -> ClassifierState:
  model = build_model(config)
  size = int(config.data.image_size)
  source = jnp.ones((1, size, size), bool) if model.source_patch else None
  params = model.init(rng, jnp.zeros((1, size, size), jnp.float32), source)
  return ClassifierState(step=jnp.zeros((), jnp.int32), params=params,
                         opt_state=make_optimizer(config).init(params))


def abstract_state(config) -> ClassifierState:
  """The state's shapes and dtypes on the first local device, to restore a checkpoint into
  without initialising (and compiling the initialisation of) parameters first."""
  shapes = jax.eval_shape(lambda: init_state(config, jax.random.key(0)))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)


def make_train_step(config) -> Callable:
  """(state, images [B, H, W] in [-1, 1], labels [B]) -> (state, metrics), jitted, the state
  donated. Augmentation, source-mask (partial-digit classifiers) and dropout keys are
  `fold_in(key(seed), step)`."""
  model = build_model(config)
  opt = make_optimizer(config)
  max_shift = int(config.data.max_shift)
  seed = int(config.seed)

  def train_step(state: ClassifierState, images: jax.Array, labels: jax.Array):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    k_shift, k_dropout = jax.random.split(rng)
    images = random_shift(k_shift, images, max_shift)
    source = None
    if model.source_patch:   # its own key: whole-digit runs draw what they drew before
      source = random_sources(jax.random.fold_in(rng, 1), images.shape[0], images.shape[1],
                              model.source_patch)

    def loss_fn(params):
      logits, _ = model.apply(params, images, source, train=True, rngs={"dropout": k_dropout})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(loss=loss, accuracy=accuracy, grad_norm=optax.tree.norm(grads))
    return ClassifierState(state.step + 1, params, opt_state), metrics

  return jax.jit(train_step, donate_argnums=0)


def train(config: ml_collections.ConfigDict, workdir: str, *,
          progress: bool = True) -> dict[str, Any]:
  """Trains (or resumes) the config's classifier in `workdir`, then evaluates it.

  Args:
    config: a `configs/mnist_classifier.py` config.
    workdir: where config.json, checkpoints/, metrics.jsonl and classifier.json go. A run
      resumes from the newest checkpoint there; one that already reached `num_steps` is only
      evaluated again.
    progress: show a tqdm progress bar.

  Returns:
    The summary also written to classifier.json: test_accuracy, num_test, num_train, steps,
    resumed_from (the step restored, None for a fresh run), seconds (this call), image_size,
    source, train_split, test_split, variant, feature_dim. A partial-digit classifier's
    test_accuracy is on whole digits; it also has source_patch, test_accuracy_random_half and
    test_true_label_prob_random_half (given a random half of each test digit's patches).

  Raises:
    ValueError: an inconsistent config or unlabelled data.
    bigjax.checkpoint.SignatureMismatchError: `workdir` holds another model's checkpoints.
    FloatingPointError: the loss became NaN or inf (nothing is saved after that).
  """
  validate_config(config)
  t0 = time.perf_counter()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  train_images, train_labels = load_split(config, config.data.train_split)
  test_images, test_labels = load_split(config, config.data.test_split)
  if len(train_images) < config.batch_size:
    raise ValueError(f"the training split has {len(train_images)} images, fewer than "
                     f"batch_size={config.batch_size}.")

  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       signature=model_signature(config), max_to_keep=3)
  try:
    restored_step, state = checkpointer.restore_latest(abstract_state(config))
    if state is None:
      state = jax.jit(lambda key: init_state(config, key))(jax.random.key(int(config.seed)))
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
                  disable=not progress, desc=f"MNIST classifier {config.get('variant', '')}",
                  unit="step", dynamic_ncols=True)
  try:
    for step in range(start, config.num_steps):
      idx = batch_indices(step, len(train_images), config.batch_size, config.seed)
      state, metrics = train_step(state, mnist.to_unit_range(train_images[idx]),
                                  train_labels[idx])
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
      bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}")
      if save:
        checkpointer.save(done, state)
        last_saved = done
  finally:
    bar.close()
    checkpointer.close()

  model = build_model(config)
  predict = make_predict(model, state.params)
  partial = {}
  if model.source_patch:
    size = int(config.data.image_size)
    whole = np.ones(test_images.shape, bool)
    labels, _, _ = predict(test_images, whole)
    # A random half of the patches of each test digit (fixed draws).
    length = (size // model.source_patch) ** 2
    order = np.random.default_rng([int(config.seed), 2]).random((len(test_images), length))
    half = np.argsort(np.argsort(order, axis=1), axis=1) < length // 2
    half = np.asarray(patch_masks_to_pixels(jnp.asarray(half), (size, size), model.source_patch))
    half_labels, half_probs, _ = predict(test_images, half)
    partial = dict(source_patch=model.source_patch,
                   test_accuracy_random_half=float(np.mean(half_labels == test_labels)),
                   test_true_label_prob_random_half=float(
                       np.mean(half_probs[np.arange(len(test_labels)), test_labels])))
  else:
    labels, _, _ = predict(test_images)
  summary = dict(
      variant=config.get("variant"), test_accuracy=float(np.mean(labels == test_labels)),
      num_test=int(len(test_labels)), num_train=int(len(train_labels)), steps=int(state.step),
      resumed_from=restored_step, seconds=time.perf_counter() - t0,
      image_size=int(config.data.image_size), feature_dim=int(config.model.feature_dim),
      source=str(config.data.source), train_split=config.data.train_split,
      test_split=config.data.test_split, **partial)
  ckpt_lib.write_json(summary_path, summary)
  return summary


# ----------------------------------------------------------------------------------------------
# Loading and predicting.

def load(workdir: str, *, image_size: int | None = None, source_patch: int | None = None
         ) -> tuple[Classifier, Any, dict[str, Any]]:
  """The classifier trained in `workdir` by `train` (or experiments/mnist_classifier.py).

  Args:
    workdir: the training run's directory.
    image_size: the side of the images it will classify; a classifier trained on another size
      raises a ValueError (None: no check).
    source_patch: 0 to require a whole-digit classifier, P > 0 a partial-digit one trained
      with P x P source patches; anything else raises a ValueError (None: no check).

  Returns:
    (model, params, info): the Flax module (its `image_size` set), its parameters, and the
    summary from classifier.json (test_accuracy, steps, image_size, ...).

  Raises:
    FileNotFoundError: no finished classifier in `workdir`; the message gives the command that
      trains (or finishes training) one.
    ValueError: `image_size` or `source_patch` differs from the classifier's.
  """
  workdir = os.path.abspath(os.fspath(workdir))
  config_path = os.path.join(workdir, CONFIG_FILE)
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(workdir) or not os.path.isfile(config_path):
    why = "does not exist" if not os.path.isdir(workdir) else f"has no {CONFIG_FILE}"
    raise FileNotFoundError(
        f"no MNIST classifier in {workdir} (the directory {why}); train one with "
        f"`{_train_command(workdir, image_size)}` (about 1-2 minutes on 2 CPU cores).")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  command = ("python -m experiments.mnist_classifier --config configs/mnist_classifier.py:"
             f"{config.get('variant') or 'cpu'} --workdir {workdir}")
  if not os.path.isfile(summary_path):
    raise FileNotFoundError(
        f"the MNIST classifier in {workdir} has not finished training (no {SUMMARY_FILE}); "
        f"rerun the command that started it, e.g. `{command}` (plus its --config.* overrides), "
        "to resume it.")
  with open(summary_path) as f:
    info = json.load(f)
  trained_size = int(info["image_size"])
  if image_size is not None and int(image_size) != trained_size:
    other = os.path.join(os.path.dirname(workdir),
                         f"{os.path.basename(workdir)}_{int(image_size)}px")
    raise ValueError(
        f"the classifier in {workdir} was trained on {trained_size}x{trained_size} digits, the "
        f"images are {int(image_size)}x{int(image_size)}: train one with "
        f"`{_train_command(other, image_size)}` and load that.")
  trained_patch = int(info.get("source_patch", 0))
  if source_patch is not None and int(source_patch) != trained_patch:
    kind = lambda p: f"partial digits of {p}x{p} patches" if p else "whole digits"
    raise ValueError(
        f"the classifier in {workdir} reads {kind(trained_patch)}, and {kind(int(source_patch))} "
        f"are needed here: train one with "
        f"`{_train_command('OTHER_DIR', trained_size, int(source_patch))}` and pass that.")
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(f"{workdir} has {SUMMARY_FILE} but no checkpoints/ folder; train "
                            f"the classifier again with `{command}`.")
  checkpointer = ckpt_lib.Checkpointer(checkpoints, signature=model_signature(config),
                                       max_to_keep=3)
  try:
    step, restored = checkpointer.restore_latest(abstract_state(config))
  finally:
    checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {checkpoints}; train the classifier with "
                            f"`{command}`.")
  if step != info["steps"]:
    raise RuntimeError(f"the newest readable checkpoint in {checkpoints} is step {step}, but "
                       f"{SUMMARY_FILE} describes step {info['steps']}; rerun `{command}` (with "
                       "its --config.* overrides) to finish and evaluate the run.")
  return build_model(config), restored.params, info


def make_predict(model: Classifier, params: Any, batch_size: int = 500
                 ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """A function that classifies uint8 digits in fixed-size jitted chunks.

  Args:
    model: a Classifier with `image_size` set (as `load` returns it), or None to accept any
      square size the parameters fit.
    params: its parameters.
    batch_size: images per compiled call; the last chunk is padded, so it compiles once.

  Returns:
    predict(images uint8 [N, H, W], source=None) -> (labels int32 [N], probs float32 [N, 10],
    features float32 [N, feature_dim]), numpy arrays. `source` (bool [N, H, W], the given
    pixels) is required by a partial-digit classifier (`model.source_patch` > 0) and refused by
    a whole-digit one. It raises TypeError for a dtype other than uint8 and ValueError for a
    shape other than [N, image_size, image_size].
  """
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")

  @jax.jit
  def apply(p, x, source):
    logits, features = model.apply(p, x, source)
    return jnp.argmax(logits, -1).astype(jnp.int32), jax.nn.softmax(logits), features

  def predict(images: np.ndarray, source: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(images)
    if model.source_patch and source is None:
      raise ValueError(f"this classifier reads partial digits (source_patch="
                       f"{model.source_patch}): call predict(images, source) with the bool "
                       "[N, H, W] mask of the given pixels.")
    if not model.source_patch and source is not None:
      raise ValueError("this classifier reads whole digits; predict takes a source mask only "
                       "for one trained with data.source_patch > 0.")
    if source is not None:
      source = np.asarray(source)
      if source.dtype != bool or source.shape != images.shape:
        raise ValueError(f"source must be a bool mask shaped like the images {images.shape}, "
                         f"got {source.dtype} {source.shape}.")
    if images.dtype != np.uint8:
      hint = (" (for generator outputs in [-1, 1] use bigjax.mnist.from_unit_range; for floats "
              "in [0, 1], np.round(255 * x).astype(np.uint8))"
              if np.issubdtype(images.dtype, np.floating) else "")
      raise TypeError(f"predict expects uint8 pixels in [0, 255], got dtype {images.dtype}"
                      f"{hint}.")
    if images.ndim != 3:
      raise ValueError(f"predict expects grayscale images [N, H, W], got shape {images.shape}"
                       f"{' (drop the channel axis)' if images.ndim == 4 else ''}.")
    size = model.image_size
    if size is not None and images.shape[1:] != (size, size):
      raise ValueError(f"the classifier was trained on {size}x{size} digits, got "
                       f"{images.shape[1]}x{images.shape[2]} images (resize them with "
                       f"bigjax.mnist.resize(images, {size}) or use a classifier trained at "
                       "this size).")
    n = len(images)
    outs = []
    for start in range(0, n, batch_size):
      chunk = images[start:start + batch_size]
      given = None if source is None else source[start:start + batch_size]
      if len(chunk) < batch_size:
        pad = [(0, batch_size - len(chunk)), (0, 0), (0, 0)]
        chunk = np.pad(chunk, pad)
        given = None if given is None else np.pad(given, pad)
      outs.append(jax.device_get(apply(params, mnist.to_unit_range(chunk), given)))
    if not outs:
      return (np.zeros((0,), np.int32), np.zeros((0, NUM_CLASSES), np.float32),
              np.zeros((0, model.feature_dim), np.float32))
    labels, probs, features = (np.concatenate(parts)[:n] for parts in zip(*outs))
    return labels, probs.astype(np.float32), features.astype(np.float32)

  return predict
