"""What bigjax's configs share: the variant check of `get_config(arg)` and the fields of the
training loop (`bigjax.training.train`) that every trainer's config has."""

from __future__ import annotations

import os
from collections.abc import Sequence

import ml_collections


def new_config(
    file: str, arg: str | None, variants: Sequence[str], *, default: str
) -> ml_collections.ConfigDict:
  """A ConfigDict with `variant` set to `arg` (or `default`), after checking it is one of
  `variants` of the config file `file` (its __file__)."""
  variant = arg or default
  if variant not in variants:
    raise ValueError(
        f"unknown variant {variant!r} for configs/{os.path.basename(file)}; choose "
        f"one of {', '.join(variants)}."
    )
  return ml_collections.ConfigDict(dict(variant=variant))


def add_loop_fields(
    c: ml_collections.ConfigDict,
    *,
    num_steps: int,
    batch_size: int,
    checkpoint_every: int,
    log_every: int,
) -> ml_collections.ConfigDict:
  """The training loop's fields, with their comments; returns `c`."""
  c.seed = 0  # parameters, data order and every random draw follow it
  c.num_steps = num_steps  # optimiser steps of the whole run
  c.batch_size = batch_size  # global batch (split over all devices)
  c.checkpoint_every = checkpoint_every  # save every N steps (and at the end); resume from the
  c.keep_checkpoints = 3  #   newest of the last N saved (Orbax max_to_keep)
  c.log_every = log_every  # metrics.jsonl row and progress-bar metrics every N steps
  add_process_fields(c)
  return c


def add_process_fields(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The multi-process field of every trainer's config; returns `c`."""
  # True: join the processes of a cluster JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU).
  # Processes started otherwise (`python -m bigjax.launch`, a job script) are joined from the
  # --coordinator_address/--num_processes/--process_id flags or JAX_* variables instead
  # (bigjax.training.distributed).
  c.distributed = False
  return c
