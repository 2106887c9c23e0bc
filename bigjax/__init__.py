"""bigjax: JAX/Flax research code for Big Cooperative Learning (Cong, 2024).

Where the paper lives (one hop from each equation to its code):

  tasks         (S, T) samplers of Eq. (6)'s task distribution q(S, T): per-example boolean
                source/target masks [B, L] (Table 1, App. D.3), and source sets for evaluation
  losses        Eq. (8) (BigLearn-GAN), the R1 penalty, the communication matchings of App. D.2
                (Eq. (12) there), Eq. (15) (permutation LM), mode seeking, L1 reconstruction
  permutation   factorisation orders z and XLNet permutation masks for Eq. (15); App. E.1's
                mix of classification and LM tasks (`mixed_orders`)
  multimodal    App. E.1: the token layout of (image tokens, label), p(y | x), and sampling
  finetuning    App. E.2: Eq. (16) (FT), Eq. (15) over the text and the label as one sequence,
                Eq. (17) (big-learn) for XLNet, and completions
  mixtures/     Gaussian mixtures and their matchings: the 2-D simulations of Sec. 3.3 / App. B
                (Eq. (7): two_gmm, surfaces, optima) and the 25-GMM exploration of Sec. 4.1 /
                App. C (Eq. (10): matching); gmm, divergences and linalg underneath
  models/       Flax (Linen) models: the BigLearn-GAN generator and discriminator (Sec. 3.4,
                App. D.1), the two-stream permutation transformer (App. E.1), the VQ-VAE, the
                MNIST judge, XLNet with Hugging Face's weights (App. E.2)
  data/         MNIST (bundled 8k subset, IDX, .npz, tfds), CelebA, text tasks and tokeniser,
                augmentation
  training/     the one training loop every trainer uses (restore, logs, TensorBoard,
                checkpoints, hooks), run loading, data order, sharding
  evaluation/   sample metrics (Fréchet distance, label agreement, diversity) and model FLOPs

The experiments that reproduce the paper's figures and tables are the repository's
`experiments/` (entry points) and `configs/`; they are not part of the installed package.
"""

__version__ = "0.1.0"
