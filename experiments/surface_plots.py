"""Figures of the loss-surface experiment: heat maps in the paper's style and trajectory GIFs."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from bigjax.mixtures import gmm as gmm_lib
from bigjax.mixtures import two_gmm


def _heatmap(ax, axis, surface, optima, title):
  extent = (axis[0], axis[-1], axis[0], axis[-1])
  vmin, vmax = float(surface.min()), float(surface.max())
  # A square-root colour scale shows the shallow local basins next to the steep walls.
  norm = mcolors.PowerNorm(0.5, vmin=min(vmin, 0.0), vmax=max(vmax, vmin + 1e-12))
  im = ax.imshow(
      surface.T,
      origin="lower",
      extent=extent,
      cmap="viridis",
      norm=norm,
      aspect="equal",
      interpolation="nearest",
  )
  local = [m for m in optima["local"] if m not in optima["global"]]
  if local and not optima["flat"]:
    pos = np.array([m["position"] for m in local])
    ax.scatter(
        pos[:, 0],
        pos[:, 1],
        marker="o",
        s=28,
        facecolors="none",
        edgecolors="white",
        linewidths=1.2,
        label="local minima",
    )
  if optima["global"] and not optima["flat"]:
    pos = np.array([m["position"] for m in optima["global"]])
    ax.scatter(
        pos[:, 0],
        pos[:, 1],
        marker="*",
        s=110,
        c="red",
        edgecolors="white",
        linewidths=0.5,
        label="global minima",
    )
  ax.set_title(title, fontsize=8)
  ax.set_xlabel(r"$\mu_1$", fontsize=8)
  ax.set_ylabel(r"$\mu_2$", fontsize=8)
  ax.tick_params(labelsize=6)
  return im


def _data_axes(ax, config, record):
  """The data distribution a panel matches: q(y), q(y_T) or q(y_T | y_S = v)."""
  q = two_gmm.target(config.sigma2)
  q = gmm_lib.add_noise(
      gmm_lib.transform(q, two_gmm.rotation_deg(record["angle_deg"])), record["noise_var"]
  )
  if record["kind"] == "joint":
    g = np.linspace(-2.5, 2.5, 150)
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1)
    dens = np.exp(np.asarray(gmm_lib.log_prob(q, pts)))
    ax.imshow(dens.T, origin="lower", extent=(g[0], g[-1], g[0], g[-1]), cmap="magma")
    ax.set_xlabel(r"$y_1$", fontsize=8)
    ax.set_ylabel(r"$y_2$", fontsize=8)
  else:
    if record["kind"] == "marginal":
      d = gmm_lib.marginal(q, record["target_dims"])
      label = rf"$q(y_{record['target_dims'][0] + 1})$"
    else:
      d = gmm_lib.conditional(q, record["given_dims"], np.asarray(record["given_values"]))
      label = (
          rf"$q(y_{record['target_dims'][0] + 1} \mid y_{record['given_dims'][0] + 1}"
          rf"={record['given_values'][0]:.2f})$"
      )
    y = np.linspace(-2.5, 2.5, 400)
    ax.plot(y, np.exp(np.asarray(gmm_lib.log_prob(d, y[:, None]))), color="C3")
    ax.set_title(label, fontsize=8)
    ax.set_yticks([])
  ax.tick_params(labelsize=6)


def plot_surfaces(path, config, records, axis, surfaces, all_optima):
  """One heat map per panel (averages last), optionally above a row of data densities."""
  n = len(records)
  ncols = max(1, min(int(config.ncols), n))
  nrows = math.ceil(n / ncols)
  data_rows = nrows if config.show_data else 0
  fig, axes = plt.subplots(
      nrows + data_rows, ncols, squeeze=False, figsize=(2.3 * ncols, 2.3 * (nrows + data_rows))
  )
  for ax in axes.ravel():
    ax.set_visible(False)
  for i, r in enumerate(records):
    row, col = divmod(i, ncols)
    if config.show_data and r["kind"] != "average":
      ax = axes[2 * row, col]
      ax.set_visible(True)
      _data_axes(ax, config, r)
    ax = axes[(2 * row + 1) if config.show_data else row, col]
    ax.set_visible(True)
    title = r["name"] if r["kind"] != "average" else f"{r['name']} ({len(r['members'])})"
    im = _heatmap(ax, axis, surfaces[r["name"]], all_optima[r["name"]], title)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=5)
  fig.suptitle(
      f"{config.variant}: {config.divergence} loss surfaces, "
      rf"$\sigma^2$={config.sigma2}; red stars: global minima, circles: local minima",
      fontsize=9,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def _trajectory_figure(config, axis, surface, name, traj, modes, step):
  fig, axes = plt.subplots(1, len(modes), squeeze=False, figsize=(3.6 * len(modes), 3.4))
  extent = (axis[0], axis[-1], axis[0], axis[-1])
  norm = mcolors.PowerNorm(0.5, vmin=min(float(surface.min()), 0.0), vmax=float(surface.max()))
  for ax, (mode, inner) in zip(axes[0], modes):
    ax.imshow(surface.T, origin="lower", extent=extent, cmap="viridis", norm=norm)
    for path in traj[f"{mode}_thetas"][:, : step + 1]:
      ax.plot(path[:, 0], path[:, 1], color="white", lw=1.0)
      ax.plot(path[0, 0], path[0, 1], "o", color="white", ms=4)
      ax.plot(path[-1, 0], path[-1, 1], "o", color="orange", ms=5)
    for opt in two_gmm.GLOBAL_OPTIMA:
      ax.plot(*opt, "*", color="red", ms=10)
    ax.set_xlim(axis[0], axis[-1])
    ax.set_ylim(axis[0], axis[-1])
    ax.set_title(f"{mode} ({inner} step{'s' if inner > 1 else ''}/task), step {step}", fontsize=8)
    ax.tick_params(labelsize=6)
  fig.suptitle(f"SGD on theta over {name}", fontsize=9)
  fig.tight_layout()
  return fig


def plot_trajectories(workdir, config, axis, surface, name, traj):
  """trajectories.png (final paths) and trajectories.gif (their progress)."""
  t = config.trajectories
  modes = [(m, int(i)) for m, i in t.modes]
  num_steps = int(t.num_steps)
  fig = _trajectory_figure(config, axis, surface, name, traj, modes, num_steps)
  fig.savefig(os.path.join(workdir, "trajectories.png"), dpi=130)
  plt.close(fig)
  frames = []
  for step in np.unique(np.linspace(0, num_steps, max(2, int(t.gif_frames))).astype(int)):
    fig = _trajectory_figure(config, axis, surface, name, traj, modes, int(step))
    fig.canvas.draw()
    frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]))
    plt.close(fig)
  frames[0].save(
      os.path.join(workdir, "trajectories.gif"),
      save_all=True,
      append_images=frames[1:],
      duration=int(1000 / max(1, int(t.gif_fps))),
      loop=0,
  )
