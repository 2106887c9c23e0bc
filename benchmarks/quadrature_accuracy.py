"""Accuracy of the Gauss-Hermite quadrature KL against scipy's adaptive integration.

The paper's 2-GMM problem (Eq. (7)): worst absolute error of KL[p_theta || q] over grid points
theta in [-2, 2]^2, in float64, for several quadrature orders; 1-D (the x1 marginal, against
scipy.integrate.quad with the components' means as breakpoints) and the 2-D joint (its exact
value equals the 1-D KL of the x1 marginals, x2 being an independent identical factor),
unrotated (the hardest case: the log-sum-exp near-kink lies along a node line) and at 15 deg.

  python -m benchmarks.quadrature_accuracy
"""

from __future__ import annotations

import jax
import numpy as np
from scipy import integrate
from scipy.special import logsumexp

from bigjax.mixtures import divergences, surfaces, two_gmm


def kl_quad_1d(m1: float, m2: float, sigma2: float) -> float:
  def log_mix(x, means):
    x = np.asarray(x)[..., None]
    return (
        logsumexp(-0.5 * (x - np.asarray(means)) ** 2 / sigma2, -1)
        - 0.5 * np.log(2 * np.pi * sigma2)
        + np.log(0.5)
    )

  f = lambda x: np.exp(log_mix(x, [m1, m2])) * (log_mix(x, [m1, m2]) - log_mix(x, [-1, 1]))
  pts = sorted({m1, m2, -1.0, 1.0, 0.0, (m1 + m2) / 2})
  s = np.sqrt(sigma2)
  return integrate.quad(
      f, min(pts) - 12 * s, max(pts) + 12 * s, points=pts, limit=500, epsabs=1e-13, epsrel=1e-13
  )[0]


def main():
  axis = np.linspace(-2, 2, 9)
  print("| sigma^2 | task | order | nodes per component | max abs error |")
  print("|---|---|---|---|---|")
  with jax.enable_x64(True):
    for sigma2 in (0.1, 0.02):
      target, model_fn = two_gmm.target(sigma2), two_gmm.model_fn(sigma2)
      thetas = surfaces.grid_2d(axis, axis)
      exact = np.array([kl_quad_1d(a, b, sigma2) for a, b in np.asarray(thetas)])
      for name, task, orders in [
          ("x1 marginal (1-D)", surfaces.MatchingTask("marginal", (0,)), (128, 256, 512, 1024)),
          ("joint (2-D), 0 deg", surfaces.MatchingTask("joint"), (256, 512, 1024)),
          (
              "joint (2-D), 15 deg",
              surfaces.MatchingTask("joint", transform=two_gmm.rotation_deg(15)),
              (256, 512),
          ),
      ]:
        dim = 1 if task.kind == "marginal" else 2
        for n in orders:
          values = np.asarray(
              surfaces.loss_surfaces(target, model_fn, thetas, [task], num_points=n)
          )[0]
          nodes = len(divergences.gauss_hermite_rule(n, dim)[1])
          default = " (default)" if divergences.DEFAULT_NUM_POINTS[dim] == n else ""
          print(
              f"| {sigma2} | {name} | {n}{default} | {nodes} | "
              f"{np.abs(values - exact).max():.1e} |",
              flush=True,
          )


if __name__ == "__main__":
  main()
