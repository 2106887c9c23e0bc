"""bigjax: JAX/Flax research code for Big Cooperative Learning (Cong, 2024).

Modules:
  gmm          full-covariance Gaussian mixtures as pytrees (log_prob, sample, marginal,
               conditional, transform, add_noise, rotation, random_orthogonal)
  divergences  KL and Jensen-Shannon between mixtures, by quadrature or Monte Carlo
  surfaces     loss surfaces of matching tasks over parameter grids, in one jitted call
  optima       local and global minima of sampled surfaces
  two_gmm      the paper's tailored 2-D simulation (Sec. 3.3, App. B)
  matching     reverse-KL matching losses of the 25-GMM exploration (Sec. 4.1, App. C)
  linalg       small-matrix linear algebra in pure jax.numpy
  tasks        (S, T) samplers: per-example boolean source/target masks [B, L] (Table 1, App. D.3)
  losses       BigLearn-GAN objectives: Eq. (8), R1, Eq. (12) communication, mode seeking
  models       Flax (Linen) BigLearn-GAN generator and discriminator, patchify/unpatchify
  mnist        MNIST loading (bundled 8k subset, IDX files, .npz, tfds) and resizing
  checkpoint   Orbax checkpoints with a model signature and fallback to older steps
  sharding     a 1-D data-parallel mesh, replicated state, process-local batches
"""
__version__ = "0.1.0"
