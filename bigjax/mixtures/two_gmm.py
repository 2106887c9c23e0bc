"""The paper's tailored 2-D simulation (Sec. 3.3, Eq. (7), App. B): data, model and task families.

q(x) = 1/2 N(x | (-1, 0), sigma^2 I) + 1/2 N(x | (1, 0), sigma^2 I) and
p_theta(x) = 1/2 N(x | (mu1, 0), sigma^2 I) + 1/2 N(x | (mu2, 0), sigma^2 I), theta = (mu1, mu2).
The global optima of every matching task are theta = (-1, 1) and (1, -1), with loss 0.
Rotations are y = A x with A = [[cos a, sin a], [-sin a, cos a]], as in the reference code.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np

from bigjax.mixtures import gmm as gmm_lib
from bigjax.mixtures.gmm import GMM

GLOBAL_OPTIMA = ((-1.0, 1.0), (1.0, -1.0))


def _check_sigma2(sigma2: float) -> float:
  sigma2 = float(sigma2)
  if not sigma2 > 0 or not math.isfinite(sigma2):
    raise ValueError(f"sigma2 must be a positive finite variance, got {sigma2}.")
  return sigma2


def target(sigma2: float) -> GMM:
  """The data q(x) of Eq. (7) with component variance `sigma2`."""
  sigma2 = _check_sigma2(sigma2)
  return gmm_lib.create(np.array([[-1.0, 0.0], [1.0, 0.0]]), np.full(2, sigma2))


@functools.cache
def model_fn(sigma2: float):
  """theta = (mu1, mu2) -> p_theta(x) of Eq. (7).

  Cached per `sigma2`, so repeated calls return the same function object and
  `surfaces.loss_surfaces` reuses its compilation.
  """
  sigma2 = _check_sigma2(sigma2)

  def model(theta) -> GMM:
    theta = jnp.asarray(theta)
    means = jnp.stack([theta, jnp.zeros_like(theta)], -1)  # [2, 2]
    tril = jnp.sqrt(jnp.asarray(sigma2, means.dtype)) * jnp.eye(2, dtype=means.dtype)
    return GMM(
        jnp.full((2,), -math.log(2.0), means.dtype), means, jnp.broadcast_to(tril, (2, 2, 2))
    )

  return model


def rotation_deg(angle_deg: float) -> np.ndarray:
  """The reference rotation for an angle in degrees, as float64 numpy."""
  a = math.radians(angle_deg)
  return np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])


def conditional_values(angle_deg: float, sigma2: float, num: int = 7) -> np.ndarray:
  """The reference's condition values for y1 | y2 = v under a rotation.

  v runs over `num` evenly spaced values in [-v_max, v_max], where v_max is the largest
  second coordinate of the four points (+-(1 + 3 sigma), +-3 sigma) after rotation.
  """
  sigma = math.sqrt(_check_sigma2(sigma2))
  corners = np.array([[sx * (1 + 3 * sigma), sy * 3 * sigma] for sx in (-1, 1) for sy in (-1, 1)])
  v_max = float(np.max(corners @ rotation_deg(angle_deg)[1]))
  return np.linspace(-v_max, v_max, num)
