"""BigLearn-GAN on MNIST (paper Sec. 3.4, 4.2, App. D; Table 2, Algorithm 1).

Launch (ARG is one of the variants below; `cpu` is the default):
  python -m experiments.biglearn_gan --config configs/gan_mnist.py:cpu --workdir /tmp/gan_cpu
  python -m experiments.biglearn_gan --config configs/gan_mnist.py:paper --workdir /tmp/gan_paper \
      --config.data.source=/path/to/mnist_idx_dir
A run resumes by itself from the newest checkpoint in --workdir. Then, to complete digits:
  python -m experiments.gan_complete --workdir /tmp/gan_cpu --images IN.npz --source_ratio 0.5 \
      --num_samples 8 --seed 0 --out /tmp/completions.npz

Variants:
  paper   Table 2: 64x64 MNIST (the 28x28 digits resized), patch 8 (L = 64), G-encoder 6/8/256,
          G-decoder 6/8/512, D 6/8/256, R1 lambda 10, AdamW lr 1e-4 betas (0.1, 0.999), batch
          256, |S|/L ~ Beta(0.5, 3), |T|/|L minus S| ~ Beta(3, 0.5); bfloat16 mixed precision.
          Needs full MNIST (IDX files, an .npz, or tensorflow-datasets) and a GPU; the paper ran
          half a day on an RTX 3090.
  cpu     a small model on 28x28 digits, patch 7 (L = 16), the bundled subset's 7,000 training
          digits, lr 2e-4, R1 lambda 1, mode-seeking weight 0.3, L1 reconstruction weight 10;
          4,000 iterations, about 20 minutes on 2 CPU cores.
  smoke   a tiny model for tests: a few steps in seconds.

Expected result (`cpu`, measured on 2 CPU cores): about 20 minutes (19.4 alone before the
reconstruction term, which adds no matrix products); at step 4,000 the sample grid
(<workdir>/samples/step_0004000.png) shows varied joint generations that mostly read as digits,
and completions from half of the patches keep the true label for 60% (random S) and 64%
(initial portion) of the held-out digits, where an exact sampler would keep it for about 88%
(experiments/gan_eval.py; details and figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ml_collections

from configs import common

VARIANTS = ("paper", "cpu", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = common.new_config(__file__, arg, VARIANTS, default="cpu")
  variant = c.variant
  # num_steps: iterations of Algorithm 1 (one D step then one G step each); the seed draws the
  # parameters, data order, (S, T) and noise.
  common.add_loop_fields(
      c, num_steps=100_000, batch_size=256, checkpoint_every=2_000, log_every=100
  )
  c.sample_every = 2_000  # samples/step_XXXXXXX.png every N steps (and at the end)

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "mnist"
  # "bundled" (8,000 real digits shipped in bigjax/data), "auto", "tfds", an .npz path or a
  # directory of the original IDX files; see bigjax.data.mnist.load.
  c.data.source = "auto"
  c.data.split = "train"
  c.data.image_size = 64  # digits are resized from 28x28 when this differs
  c.data.prefetch = 2  # batches assembled ahead by a host thread (0 = on demand)

  c.model = ml_collections.ConfigDict()
  c.model.patch_size = 8
  c.model.encoder_dim = 256  # G-encoder
  c.model.encoder_depth = 6
  c.model.encoder_heads = 8
  c.model.decoder_dim = 512  # G-decoder
  c.model.decoder_depth = 6
  c.model.decoder_heads = 8
  c.model.noise_dim = 128  # z ~ N(0, I)
  c.model.noise_mlp_depth = 8  # App. D.1: an 8-layer MLP maps z to patch-wise embeddings
  c.model.noise_mlp_width = 256
  c.model.noise_every_layer = False  # True: noise embeddings into every G-decoder block
  c.model.disc_dim = 256  # discriminator
  c.model.disc_depth = 6
  c.model.disc_heads = 8
  c.model.disc_minibatch_std_group = 0  # > 0: minibatch-std feature in D (not in the paper)
  c.model.mlp_ratio = 4.0
  c.model.noise_merge = "add"  # with noise_every_layer: "add" or "concat" (+ linear map)
  c.model.conv_head_layers = 0  # 3x3 convolutions after the generator's linear head
  c.model.conv_head_width = 64
  c.model.disc_attention = "dot"  # "l2": L2 self-attention in D (Kim et al. 2021)
  # Computation dtype of both models: "bfloat16" = mixed precision (parameters, optimiser
  # states, softmax, logits and losses stay float32).
  c.model.dtype = "float32"

  c.tasks = ml_collections.ConfigDict()
  c.tasks.sampler = "biglearn"  # any name in bigjax.tasks.SAMPLERS
  c.tasks.per_example = True  # False: one (S, T) pair per batch, as in Algorithm 1 line 3
  c.tasks.source_alpha = 0.5  # |S| / L ~ Beta(source_alpha, source_beta)
  c.tasks.source_beta = 3.0
  c.tasks.target_alpha = 3.0  # |T| / |L minus S| ~ Beta(target_alpha, target_beta)
  c.tasks.target_beta = 0.5
  c.tasks.mask_ratio = 0.75  # mask_and_predict only

  c.loss = ml_collections.ConfigDict()
  c.loss.r1_weight = 10.0  # lambda of the R1 penalty on real data (Table 2)
  c.loss.saturating = False  # generator loss: Eq. (8) as written, or non-saturating
  c.loss.communication_weight = 0.0  # Eq. (12) communication matchings (App. D.2); 0 = off
  # Mode-seeking regulariser (Mao et al. 2019; not in the paper): keeps the generator using z.
  c.loss.mode_seeking_weight = 0.0
  # L1 reconstruction of the real pixels outside S for completions (|S| > 0), as in pix2pix
  # (Isola et al. 2017; not in the paper): ties completions to the given digit. 0 = off.
  c.loss.reconstruction_weight = 0.0

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-4  # both players, constant (App. D.3)
  c.optim.disc_lr_scale = 1.0  # discriminator lr = learning_rate * this (TTUR when > 1)
  c.optim.b1 = 0.1  # AdamW betas (0.1, 0.999) (App. D.3)
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8  # the CelebA run used 1e-5
  c.optim.weight_decay = 0.01  # PyTorch's AdamW default; the paper does not give one
  c.ema_decay = 0.999  # EMA of the generator's parameters for samples; 0 = off

  c.eval = ml_collections.ConfigDict()
  c.eval.num_images = 8  # digits completed in each sample grid
  c.eval.num_completions = 4  # noise draws per digit in the grids
  c.eval.num_joint = 32  # joint generations (S empty) per grid
  # Evaluation suite during training (experiments/gan_eval.py): every N steps (and at the end)
  # a row in <workdir>/eval.jsonl; 0 = off. Needs a classifier trained at the run's image size
  # (python -m experiments.mnist_classifier ... --workdir DIR) in classifier_dir.
  c.eval.metrics_every = 0
  c.eval.classifier_dir = ""
  c.eval.metrics_num_images = 500  # held-out digits
  c.eval.metrics_num_samples = 4  # noise draws per digit and source ratio

  if variant == "paper":
    c.model.dtype = "bfloat16"  # a GPU config; bfloat16 is slow on CPUs
  if variant == "cpu":
    c.update(
        dict(num_steps=4_000, checkpoint_every=500, log_every=50, sample_every=500, batch_size=64)
    )
    # The bundled "train" split: 7,000 digits; its "test" 1,000 are held out.
    c.data.update(dict(source="bundled", split="train", image_size=28))
    c.model.update(
        dict(
            patch_size=7,
            encoder_dim=64,
            encoder_depth=2,
            encoder_heads=4,
            decoder_dim=128,
            decoder_depth=3,
            decoder_heads=4,
            noise_dim=64,
            noise_mlp_width=128,
            disc_dim=128,
            disc_depth=3,
            disc_heads=4,
        )
    )
    c.optim.learning_rate = 2e-4
    # Without these two the small generator learns to ignore z within ~250 steps (completions
    # are most of the task mix and need no noise; joint generation then gives one image for every
    # z); see benchmarks/RESULTS.md for what was tried.
    c.loss.r1_weight = 1.0
    c.loss.mode_seeking_weight = 0.3
    # Completions of held-out digits from half of the patches keep their label for 60% with this
    # term and 45% without it (the paper's objective plus mode seeking): the small generator
    # otherwise uses the given pixels far less than they allow (benchmarks/RESULTS.md).
    c.loss.reconstruction_weight = 10.0
  elif variant == "smoke":
    c.update(dict(num_steps=4, checkpoint_every=2, log_every=1, sample_every=4, batch_size=8))
    c.data.update(dict(source="bundled", split="all", image_size=28))
    c.model.update(
        dict(
            patch_size=7,
            encoder_dim=16,
            encoder_depth=1,
            encoder_heads=2,
            decoder_dim=16,
            decoder_depth=1,
            decoder_heads=2,
            noise_dim=8,
            noise_mlp_depth=2,
            noise_mlp_width=16,
            disc_dim=16,
            disc_depth=1,
            disc_heads=2,
            mlp_ratio=2.0,
        )
    )
    c.eval.update(dict(num_images=2, num_completions=2, num_joint=4))
  return c
