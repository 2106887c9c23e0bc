"""BigLearn-GAN on CelebA (paper Sec. 4.2, App. D.3; Table 2), with the stabilisers of App. D.3.

Launch (ARG is one of the variants below; `paper` is the default):
  python -m experiments.biglearn_gan --config configs/gan_celeba.py:paper --workdir /tmp/celeba \
      --config.data.source=/path/to/celeba
where /path/to/celeba holds the aligned CelebA images as distributed (img_align_celeba/*.jpg and
list_eval_partition.txt; download them by hand), or --config.data.source=tfds for a prepared
tensorflow-datasets `celeb_a` (see bigjax.data.celeba). The first run crops, resizes and caches the
images once (bigjax_cache/ next to them, or --config.data.cache_dir).

Variants:
  paper   Table 2: 120x120 faces, patch 10 (L = 144), G-encoder 6/8/256, G-decoder 6/8/512,
          D 6/8/256, R1 lambda 50, AdamW lr 1e-4 betas (0.1, 0.999) eps 1e-5, batch 128,
          |S|/L ~ Beta(0.5, 3), |T|/|L minus S| ~ Beta(3, 0.5); the App. D.3 stabilisers, each a
          switch (below); bfloat16 mixed precision. A GPU config: the
          paper trained 2-3 days on one RTX 3090.
  smoke   a tiny model on 20x20 crops for tests: a few steps in seconds (needs data.source).

App. D.3 stabilisers and their switches (all on in `paper`):
  (i)   a stronger gradient penalty:            loss.r1_weight = 50
  (ii)  L2 attention in the discriminator:      model.disc_attention = "l2"
  (iii) 3 convolutions at the generator head:   model.conv_head_layers = 3
  (iv)  noise embeddings into every G-decoder   model.noise_every_layer = True,
        layer, concatenated:                    model.noise_merge = "concat"
  (v)   a larger AdamW epsilon:                 optim.eps = 1e-5
The paper does not give the face crop; data.crop_size = 140 (the usual centre crop of the
178x218 aligned images) is ours.
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import gan_mnist

VARIANTS = ("paper", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.new_config(__file__, arg, VARIANTS, default="paper").variant
  c = gan_mnist.get_config("paper")  # Table 2 shares the architecture and the task mix
  c.variant = f"celeba_{variant}"
  c.batch_size = 128
  c.data = ml_collections.ConfigDict(
      dict(
          dataset="celeba",
          source="",  # required: an image folder (official layout) or "tfds"
          split="train",  # list_eval_partition.txt: train / validation / test / all
          image_size=120,
          crop_size=140,  # centre crop of the 178x218 aligned faces before resizing
          cache_dir="",  # "" = bigjax_cache/ next to the images
          prefetch=2,
      )
  )
  c.model.patch_size = 10
  c.model.disc_attention = "l2"
  c.model.conv_head_layers = 3
  c.model.conv_head_width = 64
  c.model.noise_every_layer = True
  c.model.noise_merge = "concat"
  c.model.dtype = "bfloat16"
  c.loss.r1_weight = 50.0
  c.optim.eps = 1e-5
  if variant == "smoke":
    c.update(dict(num_steps=4, checkpoint_every=2, log_every=1, sample_every=4, batch_size=4))
    c.data.update(dict(split="all", image_size=20))
    c.model.update(
        dict(
            patch_size=5,
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
            conv_head_width=8,
            dtype="float32",
        )
    )
    c.eval.update(dict(num_images=2, num_completions=2, num_joint=4))
  return c
