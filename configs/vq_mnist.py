"""The vector quantiser that turns 28x28 digits into 7x7 token grids (experiments/vq_mnist.py).

Launch (ARG is one of the variants below; `cpu` is the default):
  python -m experiments.vq_mnist --config configs/vq_mnist.py:cpu --workdir /tmp/vq_cpu
  python -m experiments.vq_mnist --config configs/vq_mnist.py:paper \
      --workdir /tmp/vq_paper --config.data.source=/path/to/mnist_idx_dir
A run resumes by itself from the newest checkpoint in --workdir; one that has finished is only
evaluated again. Load the result with `experiments.vq_mnist.load(workdir)`.

Variants:
  cpu     the bundled subset (train on its 7,000 "train" digits, test on its 1,000 "test"
          digits), widths (32, 64), 128 codes of dimension 16, 500 steps at batch 128.
  paper   the same model on full MNIST (source "auto": 60,000 train / 10,000 test digits),
          10,000 steps at batch 256; meant for a GPU.
  smoke   a tiny model for tests: widths (8, 16), 32 codes, 60 steps at batch 32, about 15 s;
          test MSE 0.256, 31 of 32 codes used.

Expected result (`cpu`, measured on 2 CPU cores shared with other jobs, load average ~4): test
MSE 0.0167 in [-1, 1] pixel space (0.0042 in [0, 1]; train 0.0168) on the bundled 1,000
held-out digits, 126 of the 128 codes used on them (perplexity 98), 170 s wall clock including
compilation and evaluation. A blank (all-background) reconstruction has MSE 0.452.
"""

from __future__ import annotations

import ml_collections

from configs import common

VARIANTS = ("cpu", "paper", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.new_config(__file__, arg, VARIANTS, default="cpu")
  variant = c.variant
  # AdamW steps (warm-up, then cosine decay to 1% at the end); the seed draws the parameters,
  # the codebook's initialisation, the data order and the dead-code restarts.
  common.add_loop_fields(c, num_steps=500, batch_size=128, checkpoint_every=500, log_every=50)
  c.learning_rate = 5e-3  # peak learning rate of the encoder and decoder
  c.weight_decay = 1e-4  # AdamW's decoupled weight decay

  c.data = ml_collections.ConfigDict()
  # "bundled" (8,000 real digits shipped in bigjax/data), "auto", "tfds", an .npz path or a
  # directory of the original IDX files; see bigjax.data.mnist.load. Labels are not needed.
  c.data.source = "bundled"
  c.data.train_split = "train"  # bundled: the first 7,000 digits
  c.data.test_split = "test"  # bundled: the last 1,000, never trained on

  c.model = ml_collections.ConfigDict()
  c.model.widths = (32, 64)  # channels of the stride-2 stages; 2 stages: 7x7 token grids
  c.model.code_dim = 16  # D, the dimension of the encoder outputs and code vectors
  c.model.num_codes = 128  # K, the vocabulary of the tokens

  c.loss = ml_collections.ConfigDict()
  c.loss.commitment_weight = 0.25  # beta of beta * mean (z - sg(z_q))^2 (VQ-VAE's 0.25)

  c.codebook = ml_collections.ConfigDict()
  c.codebook.decay = 0.99  # EMA decay of the code counts and sums
  # Restart codes whose EMA count (encoder outputs per batch) falls below this with a random
  # encoder output of the batch. At most 1: a restarted code starts with count 1.
  c.codebook.dead_code_threshold = 1.0

  if variant == "paper":
    c.update(dict(num_steps=10_000, batch_size=256, checkpoint_every=1_000, log_every=100))
    c.data.source = "auto"
  elif variant == "smoke":
    c.update(
        dict(num_steps=60, batch_size=32, learning_rate=3e-3, checkpoint_every=30, log_every=20)
    )
    c.model.update(dict(widths=(8, 16), num_codes=32))
  return c
