r"""Multi-modal big learning (paper App. E.1): one two-stream permutation model of (VQ tokens, label).

  python -m experiments.plm_mnist --config configs/plm_mnist.py:cpu --workdir /tmp/plm_cpu
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode classify --images IN.npz \
      --out OUT.npz
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode generate [--label 3] --out G.npz
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode complete --images IN.npz \
      --source_ratio 0.5 [--initial_portion] [--with_label] --out C.npz
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode figure --out FIG.png
  python -m experiments.plm_mnist --workdir /tmp/plm_cpu --mode evaluate

Training (`--mode train`, the default) is experiments/plm_train.py; the other modes use a
trained run through experiments/plm_run.py (the run API), plm_eval.py (eval.json) and
plm_figures.py (Fig. 17, PNG grids). What a run writes: experiments/plm_train.py.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import app
from absl import flags
from absl import logging
import numpy as np

from experiments import cli
from experiments import plm_eval
from experiments import plm_figures
from experiments import plm_run
from experiments import plm_train

MODES = ("train", "classify", "generate", "complete", "figure", "evaluate")


def _read_npz(path: str, *, need_labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
  images, labels = cli.read_images(path, need_labels=need_labels)
  return plm_run.check_images(images, f"`images` in {path}"), labels


def run_mode(
    mode: str,
    workdir: str,
    *,
    images: str = "",
    out: str = "",
    label: int | None = None,
    num_samples: int = 8,
    source_ratio: float = 0.5,
    initial_portion: bool = False,
    with_label: bool = False,
    seed: int = 0,
    guidance: float | None = None,
) -> dict[str, Any]:
  """One of the capabilities of a trained run (`--mode`); returns what main prints."""
  if mode not in MODES[1:]:
    raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}.")
  run = plm_run.load_run(workdir)
  if mode == "evaluate":
    return plm_eval.evaluate(run, workdir)
  if mode == "figure":
    path = out or os.path.join(workdir, "fig17.png")
    plm_figures.figure(run, path, seed=seed, guidance=guidance)
    return dict(figure=path)
  if mode == "classify":
    x, _ = _read_npz(images)
    labels, probs = plm_run.classify(run, x, seed=seed)
    path = out or os.path.join(workdir, "classified.npz")
    np.savez(path, labels=labels, probs=probs)
    return dict(
        out=path, num=int(len(labels)), label_counts=np.bincount(labels, minlength=10).tolist()
    )
  if mode == "generate":
    x, y = plm_run.generate(run, num_samples, label=label, seed=seed, guidance=guidance)
    path = out or os.path.join(workdir, "generated.npz")
    np.savez(path, images=x, labels=y)
    png = os.path.splitext(path)[0] + ".png"
    w = run.config.eval.guidance if guidance is None else guidance
    t = float(run.config.eval.temperature)
    how = (f", w={w:g}" if w and label is not None else "") + (f", T={t:g}" if t != 1 else "")
    title = (
        f"p(x' | y={label}){how}"
        if label is not None
        else f"joint p(x', y){how}: " + " ".join(str(int(v)) for v in y[:20])
    )
    plm_figures.save_grid(png, x, title)
    return dict(out=path, png=png, labels=y.tolist())
  x, labels = _read_npz(images, need_labels=with_label)
  completions, source, sampled = plm_run.complete(
      run,
      x,
      source_ratio=source_ratio,
      initial_portion=initial_portion,
      labels=labels if with_label else None,
      num_samples=num_samples,
      seed=seed,
      guidance=guidance,
  )
  path = out or os.path.join(workdir, "completed.npz")
  np.savez(path, completions=completions, source_mask=source, labels=sampled, images=x)
  png = os.path.splitext(path)[0] + ".png"
  plm_figures.save_grid(
      png,
      np.concatenate([x[:, None], completions], axis=1),
      f"ground truth, then {num_samples} completions from "
      f"{'the top' if initial_portion else 'a random'} {source_ratio:.0%} of "
      f"the tokens{' and the label' if with_label else ''}",
  )
  return dict(out=path, png=png)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the run's directory.")
  if _MODE.value == "train":
    cli.join_processes(_CONFIG.value)
    result = cli.fail_fast(plm_train.train_and_evaluate, _CONFIG.value, _WORKDIR.value)
  else:
    result = run_mode(
        _MODE.value,
        _WORKDIR.value,
        images=_IMAGES.value,
        out=_OUT.value,
        label=_LABEL.value,
        num_samples=_NUM_SAMPLES.value,
        source_ratio=_SOURCE_RATIO.value,
        initial_portion=_INITIAL.value,
        with_label=_WITH_LABEL.value,
        seed=_SEED.value,
        guidance=_GUIDANCE.value,
    )
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  _CONFIG, _WORKDIR = cli.define_config_and_workdir(
      "plm_mnist.py",
      config_help="Config file and variant, e.g. configs/plm_mnist.py:cpu (the default); used "
      "by --mode=train only (the other modes read the run's config.json).",
      workdir_help="The run's directory: checkpoints, quantiser, metrics, eval.json.",
  )
  _MODE = flags.DEFINE_enum("mode", "train", MODES, "What to do with --workdir.")
  _IMAGES = flags.DEFINE_string(
      "images",
      "",
      "classify/complete: .npz with uint8 `images` " "[N, 28, 28] (and `labels` for --with_label).",
  )
  _OUT = flags.DEFINE_string(
      "out", "", "Output .npz (a .png is written next to it) or, for " "figure, the .png."
  )
  _LABEL = flags.DEFINE_integer(
      "label", None, "generate: condition on this label (0-9); " "omitted: joint samples."
  )
  _NUM_SAMPLES = flags.DEFINE_integer(
      "num_samples", 8, "generate: samples; complete: draws " "per digit."
  )
  _SOURCE_RATIO = flags.DEFINE_float(
      "source_ratio", 0.5, "complete: fraction of image tokens " "given."
  )
  _INITIAL = flags.DEFINE_bool(
      "initial_portion",
      False,
      "complete: give the first tokens in " "raster order instead of random ones.",
  )
  _WITH_LABEL = flags.DEFINE_bool("with_label", False, "complete: give the label too.")
  _SEED = flags.DEFINE_integer("seed", 0, "Seed of masks, orders and draws.")
  _GUIDANCE = flags.DEFINE_float(
      "guidance",
      None,
      "generate/complete/figure: label guidance "
      "w >= 0 of samples given a label (default: the run's "
      "eval.guidance; 0: the model's p(x' | y)).",
  )
  app.run(main)
