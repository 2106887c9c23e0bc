r"""Digests of everything the smoke runs write, to show that a change keeps results bit-identical.

  python -m benchmarks.run_digests --out /tmp/digests_new          # runs every smoke run
  python -m benchmarks.run_digests --compare /tmp/digests_old/digests.json \
      /tmp/digests_new/digests.json

Runs the smoke variant of every trainer and simulation through its command line (the MNIST
classifier, whole and partial; the quantiser; the BigLearn-GAN with its in-training
evaluation, and with the communication and reconstruction terms; the permutation model with
its quantiser, judge and eval.json; a loss-surface and a 25-GMM run), then records a digest of
every checkpointed array (Orbax's own restore, so any code version can read them), of every
array in every .npz, and the values of every JSON and JSON-lines file, with the timings
left out. `--compare` lists what differs between two such files. Run it from the checkout whose
code it should measure (e.g. a `git worktree` of the older commit).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

TIMING = {
    "seconds",
    "images_per_sec",
    "steps_per_sec",
    "compile_seconds",
    "classify_seconds",
    "sample_seconds",
    "train_seconds",
    "vq_seconds",
    "plot_seconds",
    "judge_dir",
    "dir",
    "workdir",
    "devices",
    "platform",
    "cpu_count",
}


def _digest(a) -> str:
  a = np.ascontiguousarray(np.asarray(a))
  return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


def _state_digest(step_dir: str) -> str:
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  tree = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
  leaves = sorted(
      jax.tree_util.tree_leaves_with_path(tree), key=lambda kv: jax.tree_util.keystr(kv[0])
  )
  return hashlib.sha256("".join(_digest(v) for _, v in leaves).encode()).hexdigest()[:16]


def _clean(obj):
  if isinstance(obj, dict):
    return {k: _clean(v) for k, v in obj.items() if k not in TIMING}
  return [_clean(v) for v in obj] if isinstance(obj, list) else obj


def describe(workdir: str) -> dict:
  """{relative path: digest or cleaned content} of a run directory."""
  out = {}
  files = lambda pattern: sorted(glob.glob(os.path.join(workdir, "**", pattern), recursive=True))
  for step_dir in files("checkpoints/*"):
    if os.path.basename(step_dir).isdigit():
      out["ckpt:" + os.path.relpath(step_dir, workdir)] = _state_digest(step_dir)
  for path in files("*.jsonl"):
    with open(path) as f:
      out[os.path.relpath(path, workdir)] = [_clean(json.loads(line)) for line in f if line.strip()]
  for path in files("*.json"):
    if os.path.basename(path) not in ("config.json", "run.json") and "checkpoints" not in path:
      with open(path) as f:
        out[os.path.relpath(path, workdir)] = _clean(json.load(f))
  for path in files("*.npz"):
    with np.load(path) as d:
      out[os.path.relpath(path, workdir)] = {k: _digest(d[k]) for k in sorted(d.files)}
  return out


def _runs(out: str) -> dict[str, list[list[str]]]:
  clf = os.path.join(out, "clf")
  smoke = lambda module, config, name, *extra: [
      "experiments." + module,
      "--config",
      f"configs/{config}.py:smoke",
      "--workdir",
      os.path.join(out, name),
      *extra,
  ]
  return {
      "clf": [smoke("mnist_classifier", "mnist_classifier", "clf")],
      "clf_partial": [
          smoke(
              "mnist_classifier", "mnist_classifier", "clf_partial", "--config.data.source_patch=7"
          )
      ],
      "vq": [smoke("vq_mnist", "vq_mnist", "vq")],
      "gan": [
          smoke(
              "biglearn_gan",
              "gan_mnist",
              "gan",
              "--config.data.split=train",
              "--config.eval.metrics_every=2",
              f"--config.eval.classifier_dir={clf}",
              "--config.eval.metrics_num_images=20",
              "--config.eval.metrics_num_samples=2",
          )
      ],
      "gan_terms": [
          smoke(
              "biglearn_gan",
              "gan_mnist",
              "gan_terms",
              "--config.data.split=train",
              "--config.loss.communication_weight=0.5",
              "--config.loss.reconstruction_weight=1.0",
          )
      ],
      "plm": [smoke("plm_mnist", "plm_mnist", "plm")],
      "surfaces": [smoke("loss_surfaces", "loss_surfaces", "surfaces", "--config.plots=False")],
      "gmm25": [smoke("gmm25", "gmm25", "gmm25")],
  }


def _flat(d, prefix=""):
  if isinstance(d, dict):
    return {k2: v2 for k, v in d.items() for k2, v2 in _flat(v, f"{prefix}/{k}").items()}
  if isinstance(d, list) and d and isinstance(d[0], (dict, list)):
    return {k2: v2 for i, v in enumerate(d) for k2, v2 in _flat(v, f"{prefix}[{i}]").items()}
  return {prefix: d}


def compare(a_path: str, b_path: str) -> int:
  """Prints, per run, how many entries are equal and which differ; returns the differences."""
  with open(a_path) as f, open(b_path) as g:
    a, b = json.load(f), json.load(g)
  total = 0
  for run in sorted(set(a) | set(b)):
    fa, fb = _flat(a.get(run, {})), _flat(b.get(run, {}))
    diff = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
    print(f"{run}: {len(set(fa) & set(fb)) - len(diff)} equal, {len(diff)} differ")
    for k in diff[:20]:
      print(f"  {k}: {str(fa.get(k, '<absent>'))[:60]} -> {str(fb.get(k, '<absent>'))[:60]}")
    total += len(diff)
  return total


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="Directory for the runs and digests.json.")
  parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="Two digests.json.")
  args = parser.parse_args(argv)
  if args.compare:
    compare(*args.compare)
    return
  if not args.out:
    parser.error("give --out DIR (to run) or --compare OLD NEW.")
  out = os.path.abspath(args.out)
  result = {}
  for name, commands in _runs(out).items():
    for command in commands:
      print("+ python -m", " ".join(command), flush=True)
      subprocess.run([sys.executable, "-m", *command], check=True, capture_output=True)
    result[name] = describe(os.path.join(out, name))
  with open(os.path.join(out, "digests.json"), "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  print("wrote", os.path.join(out, "digests.json"))


if __name__ == "__main__":
  main()
