r"""Speed of bigjax's Flax XLNet against transformers' PyTorch XLNet on this CPU (paper App. E.2).

  python -m benchmarks.xlnet_speed                      # base size, batch 8, length 128
  python -m benchmarks.xlnet_speed --repeats 1 --n_layer 2 --out /tmp/xlnet_speed.json

xlnet-base-cased's shapes (12 layers, d_model 768, 12 heads, vocab 32,000), random weights (the
same in both frameworks: the PyTorch model's, converted), eval mode (no dropout) in both, one
process, rows interleaved framework by framework. Two workloads:

  content  the content stream alone: XLNetForSequenceClassification, cross-entropy of the
           `<cls>` summary (the fine-tuning loss, Eq. (16));
  both     both streams: XLNetLMHeadModel with a random factorisation order over every position
           (bigjax.permutation.permutation_mask, target_mapping = identity, M = L) and the
           query stream's LM cross-entropy over the 32,000-token vocabulary (Eq. (15)).

"forward" is the logits, "forward+backward" the loss and its gradient w.r.t. every parameter.
float32 and bfloat16 (float32 parameters in both: bigjax's computation dtype, PyTorch's
torch.autocast). Seconds per step are the median of --repeats timed steps after one untimed step
(compilation, allocator warm-up), the two frameworks' steps timed in turn so that other load on
the machine hits both alike (the load average is printed); ratio = PyTorch seconds / bigjax
seconds (> 1: bigjax faster), of the medians, of the fastest steps, of the median CPU seconds of
the process (all threads), and of the fastest "quiet" steps, during which other processes used
under 5% of the machine (/proc/stat): on a shared machine only those are undisturbed. Prints a Markdown table and writes the rows as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bigjax import permutation
from bigjax.models import xlnet
from bigjax.models import xlnet_weights


def make_batch(batch: int, length: int, vocab_size: int, seed: int = 0) -> dict:
  """A full-length pair batch (segments 0 / 1 / 2 for `<cls>`), labels, and the permutation-LM
  masks: a random order with every position a target."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(9, vocab_size, (batch, length))
  segments = np.zeros((batch, length), np.int64)
  segments[:, length // 2 :] = 1
  segments[:, -1] = 2
  ranks = np.stack([rng.permutation(length) for _ in range(batch)])
  perm_mask = np.asarray(
      permutation.permutation_mask(ranks, np.ones((batch, length), bool)), np.float32
  )
  target_mapping = np.broadcast_to(np.eye(length, dtype=np.float32), (batch, length, length))
  return dict(
      input_ids=ids,
      token_type_ids=segments,
      attention_mask=np.ones_like(ids),
      perm_mask=perm_mask,
      target_mapping=np.ascontiguousarray(target_mapping),
      labels=rng.integers(0, 2, batch),
  )


def _busy_jiffies() -> tuple[int, int] | None:
  """(CPU ticks busy on the whole machine, ticks of this process) from /proc; None elsewhere."""
  try:
    with open("/proc/stat") as f:
      ticks = [int(v) for v in f.readline().split()[1:9]]
    with open("/proc/self/stat") as f:
      own = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return None
  return sum(ticks) - ticks[3] - ticks[4], int(own[11]) + int(own[12])


def _wait_for_quiet(seconds: float) -> None:
  """Sleeps in 0.5 s slices until other processes use under 5% of the machine, or `seconds`."""
  deadline = time.perf_counter() + seconds
  while time.perf_counter() < deadline:
    before = _busy_jiffies()
    if before is None:
      return
    time.sleep(0.5)
    after = _busy_jiffies()
    if after[0] - before[0] < 0.05 * 0.5 * os.sysconf("SC_CLK_TCK") * os.cpu_count():
      return


def _interleaved_times(steps: dict, repeats: int, *, wait_quiet: float = 0.0) -> dict:
  """Times of each {name: step}, in turn (A, B, A, B, ...) after one untimed call each
  (compilation, allocator warm-up), so that load from other processes hits all alike.

  Returns {name: dict(median, fastest, cpu, quiet, quiet_steps)}: median and fastest wall
  seconds, median CPU seconds (all threads of this process), and the fastest wall seconds among
  the "quiet" steps, those during which other processes used under 5% of the machine (Linux
  /proc; None if no step was quiet). With wait_quiet > 0, each step first waits up to that many
  seconds for such a moment."""
  for step in steps.values():
    step()
  ticks_per_s, cores = os.sysconf("SC_CLK_TCK"), os.cpu_count()
  rows = {name: [] for name in steps}
  for _ in range(repeats):
    for name, step in steps.items():
      _wait_for_quiet(wait_quiet)
      before = _busy_jiffies()
      start, start_cpu = time.perf_counter(), time.process_time()
      step()
      wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
      after = _busy_jiffies()
      others = (
          None
          if before is None
          else ((after[0] - before[0]) - (after[1] - before[1])) / (ticks_per_s * wall * cores)
      )
      rows[name].append((wall, cpu, others))
  out = {}
  for name, r in rows.items():
    quiet = [w for w, _, o in r if o is not None and o < 0.05]
    out[name] = dict(
        median=statistics.median(w for w, _, _ in r),
        fastest=min(w for w, _, _ in r),
        cpu=statistics.median(c for _, c, _ in r),
        quiet=min(quiet) if quiet else None,
        quiet_steps=len(quiet),
    )
  return out


def jax_steps(model, params, batch: dict, dtype) -> dict:
  """{(workload, pass): a function running one step to completion}."""
  model = model.clone(dtype=dtype)
  x = {
      k: jnp.asarray(v, jnp.int32 if v.dtype.kind == "i" else jnp.float32) for k, v in batch.items()
  }
  content = {k: x[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
  both = dict(content, perm_mask=x["perm_mask"], target_mapping=x["target_mapping"])

  def content_loss(p):
    logits = model.apply(p, **content)["logits"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, x["labels"]).mean()

  def both_loss(p):
    logits = model.apply(p, **both)["lm_logits"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, x["input_ids"]).mean()

  fns = {
      ("content", "forward"): jax.jit(lambda p: model.apply(p, **content)["logits"]),
      ("content", "forward+backward"): jax.jit(jax.value_and_grad(content_loss)),
      ("both", "forward"): jax.jit(lambda p: model.apply(p, **both)["lm_logits"]),
      ("both", "forward+backward"): jax.jit(jax.value_and_grad(both_loss)),
  }
  return {key: (lambda f=f: jax.block_until_ready(f(params))) for key, f in fns.items()}


def torch_steps(lm, cls, batch: dict, dtype) -> dict:
  """The same four steps for the PyTorch models; bfloat16 through torch.autocast (float32
  parameters, as bigjax): HF's query stream fails with the model cast to bfloat16 (its
  two-stream branch multiplies the float32 position encoding by bfloat16 weights)."""
  import contextlib
  import torch

  t = {k: torch.tensor(v) for k, v in batch.items()}
  content = {k: t[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
  both = dict(content, perm_mask=t["perm_mask"], target_mapping=t["target_mapping"])
  cast = (
      contextlib.nullcontext
      if dtype == torch.float32
      else lambda: torch.autocast("cpu", dtype=dtype)
  )

  def forward(model, kw):
    with torch.no_grad(), cast():
      return model(**kw, use_mems=False).logits

  def backward(model, kw, labels):
    model.zero_grad(set_to_none=True)
    with cast():
      out = model(**kw, labels=labels, use_mems=False)
    out.loss.backward()
    return out.loss

  return {
      ("content", "forward"): lambda: forward(cls, content),
      ("content", "forward+backward"): lambda: backward(cls, content, t["labels"]),
      ("both", "forward"): lambda: forward(lm, both),
      ("both", "forward+backward"): lambda: backward(lm, both, t["input_ids"]),
  }


def run(
    *,
    batch: int = 8,
    length: int = 128,
    n_layer: int = 12,
    repeats: int = 5,
    dtypes=("float32", "bfloat16"),
    workloads=("content", "both"),
    passes=("forward", "forward+backward"),
    with_torch: bool = True,
    wait_quiet: float = 0.0,
) -> list[dict]:
  import torch
  import transformers

  torch.manual_seed(0)
  config = transformers.XLNetConfig(
      vocab_size=32000, d_model=768, n_layer=n_layer, n_head=12, d_inner=3072, num_labels=2
  )
  lm = transformers.XLNetLMHeadModel(config).eval()
  cls = transformers.XLNetForSequenceClassification(config).eval()
  cls.transformer = lm.transformer
  state = {k: v.numpy() for k, v in list(lm.state_dict().items()) + list(cls.state_dict().items())}
  model = xlnet.XLNet(**xlnet_weights.model_kwargs(config.to_dict(), lm_head=True, num_labels=2))
  params = xlnet_weights.state_dict_to_params(state, model)
  data = make_batch(batch, length, config.vocab_size)
  rows = []
  for dtype in dtypes:
    frameworks = [("bigjax", jax_steps(model, params, data, getattr(jnp, dtype)))]
    if with_torch:
      frameworks.append(("pytorch", torch_steps(lm, cls, data, getattr(torch, dtype))))
    for key in frameworks[0][1]:
      if key[0] not in workloads or key[1] not in passes:
        continue
      row = dict(workload=key[0], step=key[1], dtype=dtype)
      timed = _interleaved_times(
          {name: steps[key] for name, steps in frameworks}, repeats, wait_quiet=wait_quiet
      )
      for name, t in timed.items():
        row[name] = t["median"]
        row.update({f"{name}_{k}": v for k, v in t.items() if k != "median"})
      if with_torch:
        for suffix in ("", "_fastest", "_cpu", "_quiet"):
          a, b = row["pytorch" + suffix], row["bigjax" + suffix]
          row["ratio" + suffix] = None if a is None or b is None else a / b
      print(
          " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
          flush=True,
      )
      rows.append(row)
  return rows


def table(rows: list[dict], *, batch: int, length: int) -> str:
  """Markdown: median seconds per step, and PyTorch / bigjax ratios of the median, the fastest
  step, the median CPU seconds and the fastest quiet step (with the quiet-step counts)."""
  lines = [
      "| workload | step | dtype | bigjax s/step | PyTorch s/step | ratio | ratio, fastest "
      "| ratio, CPU s | quiet: bigjax / PyTorch s (steps) | ratio, quiet | bigjax tokens/s |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  for r in rows:
    quiet = (
        f"{fmt(r['bigjax_quiet'])} / {fmt(r.get('pytorch_quiet'))} "
        f"({r['bigjax_quiet_steps']}, {r.get('pytorch_quiet_steps', 0)})"
    )
    cells = [fmt(r.get(k)) for k in ("pytorch", "ratio", "ratio_fastest", "ratio_cpu")]
    lines.append(
        f"| {r['workload']} | {r['step']} | {r['dtype']} | {r['bigjax']:.2f} | "
        + " | ".join(cells)
        + f" | {quiet} | {fmt(r.get('ratio_quiet'))} | "
        f"{batch * length / r['bigjax']:.0f} |"
    )
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--length", type=int, default=128)
  parser.add_argument("--n_layer", type=int, default=12, help="12 = xlnet-base-cased")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
      "--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"]
  )
  parser.add_argument(
      "--workloads", nargs="+", default=["content", "both"], choices=["content", "both"]
  )
  parser.add_argument(
      "--steps",
      nargs="+",
      default=["forward", "forward+backward"],
      choices=["forward", "forward+backward"],
  )
  parser.add_argument("--no_torch", action="store_true", help="bigjax rows only")
  parser.add_argument(
      "--wait_quiet",
      type=float,
      default=0.0,
      help="before each timed step, wait up to this many seconds for the other "
      "processes on the machine to go quiet (a shared machine)",
  )
  parser.add_argument("--out", default=None, help="JSON file for the rows")
  args = parser.parse_args(argv)
  import torch
  import transformers

  load_before = os.getloadavg()
  rows = run(
      batch=args.batch,
      length=args.length,
      n_layer=args.n_layer,
      repeats=args.repeats,
      dtypes=args.dtypes,
      workloads=args.workloads,
      passes=args.steps,
      with_torch=not args.no_torch,
      wait_quiet=args.wait_quiet,
  )
  machine = dict(
      cpu=platform.processor() or platform.machine(),
      cores=os.cpu_count(),
      load_average_before=load_before,
      load_average_after=os.getloadavg(),
      jax=jax.__version__,
      torch=torch.__version__,
      torch_threads=torch.get_num_threads(),
      transformers=transformers.__version__,
      batch=args.batch,
      length=args.length,
      n_layer=args.n_layer,
      repeats=args.repeats,
  )
  print(json.dumps(machine))
  print(table(rows, batch=args.batch, length=args.length))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(dict(machine=machine, rows=rows), f, indent=2)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
