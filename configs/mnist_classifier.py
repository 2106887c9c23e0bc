"""The MNIST classifier that scores generated digits (bigjax.models.classifier, trained by
experiments/mnist_classifier.py).

Launch (ARG is one of the variants below; `cpu` is the default):
  python -m experiments.mnist_classifier --config configs/mnist_classifier.py:cpu \
      --workdir /tmp/clf_cpu
  python -m experiments.mnist_classifier --config configs/mnist_classifier.py:paper \
      --workdir /tmp/clf_paper --config.data.source=/path/to/mnist_idx_dir
A run resumes by itself from the newest checkpoint in --workdir. The classifier must be trained
at the size of the images it scores: `--config.data.image_size=64` for the GAN's paper variant.

Variants:
  cpu     28x28, the bundled subset (train on its 7,000 "train" digits, test on its 1,000 "test"
          digits), conv widths (16, 32), 1,200 steps at batch 128.
  paper   64x64 (the 28x28 digits resized, as the GAN's paper variant), full MNIST (source
          "auto": 60,000 train / 10,000 test digits), widths (32, 64, 128), 6,000 steps; meant
          for a GPU.
  partial a partial-digit classifier for the `cpu` GAN run (28x28, patch 7): trained on digits
          of which only some 7x7 patches are given (a random number, an initial portion or a
          random set), it estimates p(y | x_S); `experiments.gan_eval
          --posterior_classifier_dir` reads it as the label agreement an exact sampler of
          q(x_T | x_S) would reach. Widths (32, 64, 128), 5,000 steps. Set data.source_patch
          to the GAN run's model.patch_size.
  smoke   a tiny model for tests: 150 steps at batch 64, a few seconds; test accuracy 0.949.

Expected result (`cpu`, measured on 2 CPU cores shared with other jobs): test accuracy 0.987 on
the bundled 1,000 held-out digits (0.9965 on 2,000 of its training digits), 91 s wall clock
including compilation and evaluation. `partial` (shared cores): 99.5% on whole digits, 92.4%
given a random half of the 16 patches (mean probability of the true label 0.883), 1,013 s.
"""

from __future__ import annotations

import ml_collections

from configs import common

VARIANTS = ("cpu", "paper", "partial", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.new_config(__file__, arg, VARIANTS, default="cpu")
  variant = c.variant
  # AdamW steps (warm-up, then cosine decay to 1% at the end); the seed draws the parameters,
  # the data order, the shifts and the dropout.
  common.add_loop_fields(c, num_steps=1_200, batch_size=128, checkpoint_every=500, log_every=50)
  c.learning_rate = 3e-3  # peak learning rate
  c.weight_decay = 1e-4  # AdamW's decoupled weight decay

  c.data = ml_collections.ConfigDict()
  # "bundled" (8,000 real digits shipped in bigjax/data), "auto", "tfds", an .npz path or a
  # directory of the original IDX files; see bigjax.data.mnist.load. The classifier needs labels.
  c.data.source = "bundled"
  c.data.train_split = "train"  # bundled: the first 7,000 digits
  c.data.test_split = "test"  # bundled: the last 1,000, never trained on
  c.data.image_size = 28  # digits are resized from 28x28 when this differs
  c.data.max_shift = 2  # augmentation: random shifts by up to this many pixels
  # > 0: a partial-digit classifier of p(y | x_S) for a GAN run with this model.patch_size; each
  # training digit keeps k ~ uniform{0..L} of its patches (the first k, or k random ones).
  c.data.source_patch = 0

  c.model = ml_collections.ConfigDict()
  c.model.widths = (16, 32)  # channels of each 3x3 conv + 2x2 max-pool stage
  c.model.feature_dim = 128  # the features (for Frechet distances) are this layer
  c.model.dropout = 0.3  # on the features, training only

  if variant == "paper":
    c.update(dict(num_steps=6_000, learning_rate=2e-3, checkpoint_every=1_000, log_every=100))
    # max_shift: 2 pixels at 28x28, scaled.
    c.data.update(dict(source="auto", image_size=64, max_shift=4))
    c.model.widths = (32, 64, 128)
  elif variant == "partial":
    c.num_steps = 5_000
    c.data.source_patch = 7
    c.model.widths = (32, 64, 128)
  elif variant == "smoke":
    c.update(
        dict(num_steps=150, batch_size=64, checkpoint_every=50, log_every=25, learning_rate=5e-3)
    )
    c.model.update(dict(widths=(8, 16), feature_dim=64, dropout=0.0))
  return c
