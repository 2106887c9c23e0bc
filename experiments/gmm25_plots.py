"""Figures of the 25-GMM experiment: Fig. 4 / 11 style snapshots, a GIF, modes vs iteration.

  python -m experiments.gmm25_plots WORKDIR [WORKDIR ...]   # redraw from metrics.npz/summary.json

Only matplotlib (Agg) and PIL; reads the arrays `experiments.gmm25` recorded.
"""

from __future__ import annotations

import io
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

_LIM = 6.5


def _density(means, scale_tril, weights, xx, yy):
  """Mixture density on a grid, in numpy (float64) for drawing only."""
  pts = np.stack([xx.ravel(), yy.ravel()], -1)
  total = np.zeros(len(pts))
  for mu, tril, w in zip(means, scale_tril, weights):
    cov = tril @ tril.T
    inv = np.linalg.inv(cov)
    diff = pts - mu
    maha = np.einsum("ni,ij,nj->n", diff, inv, diff)
    total += w * np.exp(-0.5 * maha) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
  return total.reshape(xx.shape)


def _grid(n=160):
  axis = np.linspace(-_LIM, _LIM, n)
  return np.meshgrid(axis, axis, indexing="xy")


def _draw(ax, target_density, xx, yy, means, tril, weights, title):
  ax.contour(xx, yy, target_density, levels=6, colors="0.6", linewidths=0.6)
  dens = _density(means, tril, weights, xx, yy)
  ax.contour(xx, yy, dens, levels=8, cmap="viridis", linewidths=0.8)
  ax.scatter(means[:, 0], means[:, 1], s=6, c="r", zorder=3)
  ax.set_xlim(-_LIM, _LIM)
  ax.set_ylim(-_LIM, _LIM)
  ax.set_aspect("equal")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=9)


def _target_density(modes, data_var, xx, yy):
  k = len(modes)
  tril = np.broadcast_to(np.sqrt(data_var) * np.eye(2), (k, 2, 2))
  return _density(modes, tril, np.full(k, 1.0 / k), xx, yy)


def plot_snapshots(path, config, metrics, modes, seed):
  """Target (grey) and model (colour) contours at config.snapshot_iterations (Fig. 4/11)."""
  its = list(metrics["iterations"])
  chosen = [i for i in config.snapshot_iterations if i in its] or [its[-1]]
  if its[-1] not in chosen:
    chosen.append(its[-1])
  xx, yy = _grid()
  target = _target_density(modes, config.data_var, xx, yy)
  fig, axes = plt.subplots(1, len(chosen) + 1, figsize=(3 * (len(chosen) + 1), 3.2))
  axes[0].contour(xx, yy, target, levels=6, cmap="Greys")
  axes[0].set_title("target q", fontsize=9)
  axes[0].set_aspect("equal")
  axes[0].set_xlim(-_LIM, _LIM)
  axes[0].set_ylim(-_LIM, _LIM)
  key = f"modes_recovered_r{config.recover_radii[0]}"
  for ax, it in zip(axes[1:], chosen):
    r = its.index(it)
    _draw(
        ax,
        target,
        xx,
        yy,
        metrics["means"][seed, r],
        metrics["scale_tril"][seed, r],
        metrics["weights"][seed, r],
        f"iteration {it}: {int(metrics[key][seed, r])}/{len(modes)} modes",
    )
  fig.suptitle(f"{config.variant}, seed {seed}", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_gif(path, config, metrics, modes, seed):
  """One seed's model density over the run, as an animated GIF."""
  its = list(metrics["iterations"])
  frames_idx = np.unique(
      np.linspace(0, len(its) - 1, max(2, int(config.gif_frames))).round().astype(int)
  )
  xx, yy = _grid(100)
  target = _target_density(modes, config.data_var, xx, yy)
  key = f"modes_recovered_r{config.recover_radii[0]}"
  frames = []
  for r in frames_idx:
    fig, ax = plt.subplots(figsize=(3.2, 3.4))
    _draw(
        ax,
        target,
        xx,
        yy,
        metrics["means"][seed, r],
        metrics["scale_tril"][seed, r],
        metrics["weights"][seed, r],
        f"{config.variant} it {its[r]}: {int(metrics[key][seed, r])} modes",
    )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=70)
    plt.close(fig)
    buf.seek(0)
    frames.append(Image.open(buf).convert("P", palette=Image.ADAPTIVE))
  frames[0].save(path, save_all=True, append_images=frames[1:], duration=150, loop=0)


def plot_modes(path, config, metrics, num_modes):
  """Modes recovered (r = first radius) versus outer iteration, one line per seed."""
  key = f"modes_recovered_r{config.recover_radii[0]}"
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for row in metrics[key]:
    ax.plot(metrics["iterations"], row, lw=0.8, alpha=0.7)
  ax.plot(metrics["iterations"], np.median(metrics[key], 0), "k", lw=2, label="median")
  ax.set_xlabel("outer iteration")
  ax.set_ylabel(f"modes recovered (r={config.recover_radii[0]})")
  ax.set_ylim(0, num_modes + 0.5)
  ax.set_title(f"{config.variant}: {metrics[key].shape[0]} seeds")
  ax.legend(loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_all(workdir, config, metrics, modes):
  seed = min(int(config.plot_seed), metrics["means"].shape[0] - 1)
  plot_snapshots(os.path.join(workdir, "snapshots.png"), config, metrics, modes, seed)
  plot_gif(os.path.join(workdir, "trajectory.gif"), config, metrics, modes, seed)
  plot_modes(os.path.join(workdir, "modes.png"), config, metrics, len(modes))


def main(argv):
  import ml_collections  # pylint: disable=import-outside-toplevel
  from bigjax.mixtures import gmm  # pylint: disable=import-outside-toplevel

  for workdir in argv[1:]:
    with open(os.path.join(workdir, "summary.json")) as f:
      config = ml_collections.ConfigDict(json.load(f)["config"])
    metrics = dict(np.load(os.path.join(workdir, "metrics.npz")))
    plot_all(
        workdir, config, metrics, np.asarray(gmm.grid_mixture(config.grid, config.data_var).means)
    )


if __name__ == "__main__":
  main(sys.argv)
