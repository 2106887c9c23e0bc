"""Loss surfaces of the paper's tailored 2-D simulation (Sec. 3.3, App. B; Fig. 2, 3, 7-10).

Launch (any ARG below; `all` is the default):
  python -m experiments.loss_surfaces --config configs/loss_surfaces.py:fig3 --workdir /tmp/fig3

Variants:
  fig2          sigma^2 = 0.1: joint, both marginals, both conditionals, original domain.
  fig3          rotations 15, 45, 60 deg: joint, y1/y2 marginals, y1|y2 and y2|y1 conditionals.
  fig7          sigma^2 = 0.02: the joint surface with its prominent local optima.
  fig8          the 12 rotated y1-marginals (0..165 deg) and their average, with SGD
                trajectories that sample one marginal per step (single-level) or take 50
                steps per sampled marginal (bi-level), drawn over the average, as a GIF.
                Expected: single-level stays in the local optima near (1, 1) / (-1, -1),
                bi-level reaches (-1, 1) or (1, -1) from all four starts.
  fig9          the 7x7 rotated conditionals y1 | y2 = v and their average, with a
                single-level SGD trajectory GIF. Expected: all four starts reach a global
                optimum without bi-level steps.
  fig10         multi-scale noising: the sigma^2 = 0.02 joint surface under growing noise.
  paper_family  exactly the reference's Fig. 3 family: joint, 12 rotated marginals, 7x7
                rotated conditionals, and the two averages (what benchmarks/ times).
  smoke         a 17x17 grid with one panel of each kind and a short trajectory (tests).
  all           fig2, fig3, fig7, fig8, fig9 and fig10 into workdir/<name>/.

Expected result: every surface has its global minima at the grid points nearest to
theta = (-1, 1) and (1, -1) with loss below 1e-6 there, while local minima move with the task
(optima.md in the workdir lists them). `fig3` takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import ml_collections

from configs import common

from bigjax.mixtures import two_gmm

FIGURES = ("fig2", "fig3", "fig7", "fig8", "fig9", "fig10")
VARIANTS = FIGURES + ("paper_family", "smoke", "all")


def _panel(
    name, kind, *, target_dims=(), given_dims=(), given_values=(), angle_deg=0.0, noise_var=0.0
):
  return dict(
      name=name,
      kind=kind,
      target_dims=tuple(target_dims),
      given_dims=tuple(given_dims),
      given_values=tuple(float(v) for v in given_values),
      angle_deg=float(angle_deg),
      noise_var=float(noise_var),
  )


def _original_domain(angle_deg, value=0.0, suffix=""):
  """Joint, both marginals and both conditionals under one rotation (one row of Fig. 2/3)."""
  return [
      _panel(f"joint{suffix}", "joint", angle_deg=angle_deg),
      _panel(f"marginal_y1{suffix}", "marginal", target_dims=(0,), angle_deg=angle_deg),
      _panel(f"marginal_y2{suffix}", "marginal", target_dims=(1,), angle_deg=angle_deg),
      _panel(
          f"cond_y1_given_y2{suffix}",
          "conditional",
          target_dims=(0,),
          given_dims=(1,),
          given_values=(value,),
          angle_deg=angle_deg,
      ),
      _panel(
          f"cond_y2_given_y1{suffix}",
          "conditional",
          target_dims=(1,),
          given_dims=(0,),
          given_values=(value,),
          angle_deg=angle_deg,
      ),
  ]


def _rotated_marginals(angles):
  return [
      _panel(f"marginal_y1_rot{a:03d}", "marginal", target_dims=(0,), angle_deg=a) for a in angles
  ]


def _rotated_conditionals(angles, sigma2, num_values):
  return [
      _panel(
          f"cond_y1_given_y2_rot{a:03d}_v{i}",
          "conditional",
          target_dims=(0,),
          given_dims=(1,),
          given_values=(v,),
          angle_deg=a,
      )
      for a in angles
      for i, v in enumerate(two_gmm.conditional_values(a, sigma2, num_values))
  ]


def _trajectories(**overrides):
  t = dict(
      enabled=False,
      average="",  # name of the average panel whose members are the tasks
      # Starting points theta0 = (mu1, mu2), one trajectory each.
      inits=((-1.9, -1.3), (1.6, 1.9), (-0.2, -1.9), (1.9, 0.4)),
      num_steps=2000,  # gradient steps per trajectory (same for every mode)
      learning_rate=0.05,  # plain SGD step size on theta
      # Modes: name -> inner steps on one sampled task (1 = single-level, >1 = bi-level).
      modes=(("single_level", 1),),
      seed=0,  # PRNG seed of the task draws
      gif_frames=50,  # frames of trajectories.gif
      gif_fps=10,
  )
  t.update(overrides)
  return t


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config of variant `arg` (see the module docstring)."""
  c = common.new_config(__file__, arg, VARIANTS, default="all")
  arg = c.variant
  c.sigma2 = 0.1  # component variance sigma^2 of data and model (Eq. (7))
  c.grid_min = -2.0  # mu1 and mu2 both run over linspace(grid_min, grid_max,
  c.grid_max = 2.0  #   grid_num), as in the reference code
  c.grid_num = 100
  c.panels = []  # matching tasks (see _panel); filled per variant below
  c.averages = []  # dict(name=..., members=(panel names...)): mean surfaces
  c.ncols = 5  # panels per row of surfaces.png
  c.show_data = False  # add a row with the (transformed) data density per panel
  c.divergence = "reverse_kl"  # reverse_kl (the paper's), forward_kl or js
  c.method = "quadrature"  # quadrature (deterministic, exact) or mc (the reference's)
  c.num_points = 0  # quadrature order per dimension; 0 = library default
  c.num_samples = 2000  # samples per grid point for method=mc (reference: 2000)
  c.seed = 0  # PRNG seed for method=mc
  c.x64 = False  # compute in float64
  c.max_chunk_mb = 256  # memory budget of one chunk of the surface computation
  c.plots = True  # write PNG figures and GIFs (False: arrays and tables only)
  c.figures = ()  # variant "all": the figure variants run into workdir/<name>
  c.trajectories = _trajectories()

  if arg == "all":
    c.figures = FIGURES
  elif arg == "fig2":
    c.panels = _original_domain(0.0)
    c.show_data = True
  elif arg == "fig3":
    c.panels = [p for a in (15, 45, 60) for p in _original_domain(a, suffix=f"_rot{a:03d}")]
    c.show_data = True
  elif arg == "fig7":
    c.sigma2 = 0.02
    c.panels = [_panel("joint", "joint")]
    c.ncols = 1
    c.show_data = True
  elif arg == "fig8":
    c.panels = _rotated_marginals(range(0, 180, 15))
    c.averages = [dict(name="average_marginals", members=tuple(p["name"] for p in c.panels))]
    c.ncols = 13
    c.trajectories = _trajectories(
        enabled=True, average="average_marginals", modes=(("single_level", 1), ("bi_level", 50))
    )
  elif arg == "fig9":
    c.panels = _rotated_conditionals(range(0, 91, 15), c.sigma2, 7)
    c.averages = [dict(name="average_conditionals", members=tuple(p["name"] for p in c.panels))]
    c.ncols = 7
    c.trajectories = _trajectories(enabled=True, average="average_conditionals")
  elif arg == "fig10":
    c.sigma2 = 0.02
    c.panels = [
        _panel(f"joint_noise{v:g}", "joint", noise_var=v) for v in (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
    ]
    c.averages = [dict(name="average_noise", members=tuple(p["name"] for p in c.panels))]
    c.ncols = 7
  elif arg == "paper_family":
    marginals = _rotated_marginals(range(0, 180, 15))
    conditionals = _rotated_conditionals(range(0, 91, 15), c.sigma2, 7)
    c.panels = [_panel("joint", "joint")] + marginals + conditionals
    c.averages = [
        dict(name="average_marginals", members=tuple(p["name"] for p in marginals)),
        dict(name="average_conditionals", members=tuple(p["name"] for p in conditionals)),
    ]
    c.ncols = 13
  elif arg == "smoke":
    c.grid_num = 17  # step 0.25: the optima (-1, 1), (1, -1) are grid points
    c.panels = [
        _panel("joint", "joint", angle_deg=30.0),
        _panel("marginal_y1_rot030", "marginal", target_dims=(0,), angle_deg=30.0),
        _panel("marginal_y1_rot120", "marginal", target_dims=(0,), angle_deg=120.0),
        _panel(
            "cond_y1_given_y2_rot045",
            "conditional",
            target_dims=(0,),
            given_dims=(1,),
            given_values=(0.2,),
            angle_deg=45.0,
        ),
        _panel("joint_noise0.1", "joint", noise_var=0.1),
    ]
    c.averages = [
        dict(name="average_marginals", members=("marginal_y1_rot030", "marginal_y1_rot120"))
    ]
    c.ncols = 6
    c.show_data = True
    c.trajectories = _trajectories(
        enabled=True,
        average="average_marginals",
        num_steps=20,
        inits=((-1.5, -1.0), (1.5, 0.5)),
        gif_frames=5,
        modes=(("single_level", 1), ("bi_level", 5)),
    )
  return c
