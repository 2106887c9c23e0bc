"""Gaussian mixtures and the matching losses between them: the paper's simulations.

gmm          full-covariance Gaussian mixtures as pytrees (log_prob, sample, marginal,
             conditional, transform, add_noise, rotation, random_orthogonal)
linalg       small-matrix linear algebra in pure jax.numpy (Cholesky, triangular solve, QR,
             rotations, Haar-random orthogonal matrices)
divergences  KL and Jensen-Shannon between mixtures, by quadrature or Monte Carlo
matching     the matching tasks of Eq. (6) between mixtures (joint, transformed marginal,
             transformed conditional, noised) as reverse-KL losses: the 25-GMM exploration
             (Sec. 4.1, App. C)
matching_task
             one matching task of Eq. (6) (MatchingTask) and its loss under a chosen divergence
surfaces     loss surfaces of matching tasks over parameter grids, in one jitted call
             (Sec. 3.3, App. B)
trajectories SGD trajectories that sample one matching task at a time (Fig. 8b, 9b)
two_gmm      the tailored 2-D simulation of Sec. 3.3 / App. B (data, model, rotations)
optima       local and global minima of sampled surfaces
"""
