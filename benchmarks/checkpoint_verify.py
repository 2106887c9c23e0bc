"""What checkpoint verification costs: save + restore of the `cpu` BigLearn-GAN and permutation
model states, with and without digests (bigjax.training.checkpoint).

  python -m benchmarks.checkpoint_verify [--repeats 5]

Each repeat saves the state into a fresh directory (waiting for the asynchronous write to
finish) and restores it with `restore_latest`; the table gives the median seconds of each and
their sum, without digests (verify=False) and with them, and the ratio of the sums.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import jax

from bigjax import multimodal
from bigjax.training import checkpoint
from configs import gan_mnist
from configs import plm_mnist
from experiments import gan_setup
from experiments import plm_setup


def states():
  """{name: (state, signature)} of the two `cpu` training states, freshly initialised."""
  gan = gan_mnist.get_config("cpu")
  plm = plm_mnist.get_config("cpu")
  layout = multimodal.Layout(
      num_codes=int(plm.vq.model.num_codes), num_image_tokens=49, num_classes=10
  )
  model = plm_setup.build_model(plm, layout)
  return {
      "BigLearn-GAN cpu": (
          jax.jit(lambda k: gan_setup.init_state(gan, k))(jax.random.key(0)),
          gan_setup.model_signature(gan),
      ),
      "permutation model cpu": (
          jax.jit(lambda k: plm_setup.init_state(plm, model, layout, k))(jax.random.key(0)),
          plm_setup.model_signature(plm, layout),
      ),
  }


def measure(state, signature, *, verify: bool, repeats: int) -> dict[str, float]:
  saves, restores = [], []
  abstract = checkpoint.abstract(state)
  for _ in range(repeats):
    directory = tempfile.mkdtemp(prefix="bigjax_ckpt_")
    try:
      ckpt = checkpoint.Checkpointer(directory, signature=signature, verify=verify)
      start = time.perf_counter()
      ckpt.save(1, state)
      ckpt.wait()
      saves.append(time.perf_counter() - start)
      start = time.perf_counter()
      _, restored = ckpt.restore_latest(abstract)
      jax.block_until_ready(restored)
      restores.append(time.perf_counter() - start)
      ckpt.close()
    finally:
      shutil.rmtree(directory)
  save, restore = statistics.median(saves), statistics.median(restores)
  return dict(save=save, restore=restore, total=save + restore)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  print("| state | parameters and optimiser (MB) | verify | save s | restore s | total s |")
  print("|---|---|---|---|---|---|")
  for name, (state, signature) in states().items():
    mb = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / 2**20
    rows = {v: measure(state, signature, verify=v, repeats=args.repeats) for v in (False, True)}
    for v, r in rows.items():
      print(
          f"| {name} | {mb:.1f} | {'yes' if v else 'no'} | {r['save']:.3f} | "
          f"{r['restore']:.3f} | {r['total']:.3f} |"
      )
    print(f"| {name}: with / without | | | | | {rows[True]['total'] / rows[False]['total']:.3f} |")


if __name__ == "__main__":
  main()
