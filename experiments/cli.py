"""The command line shared by the experiment entry points: `--config` (with its overrides
checked) and `--workdir`, then the experiment's function.

  if __name__ == "__main__":
    cli.run(train_and_evaluate, "gan_mnist.py", workdir_help="Directory for the run.")
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from typing import Any
from collections.abc import Callable

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
from ml_collections import config_flags

from bigjax.training import distributed


def _config_spec(argv: list[str], default: str) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return default


def unknown_config_keys(argv: list[str], default_config: str) -> list[str]:
  """Messages for `--config.KEY=VALUE` overrides in `argv` that name no field of the config
  (ml_collections would stop with a bare `AttributeError: "'KEY'"` traceback instead).

  Args:
    argv: the command line (sys.argv).
    default_config: the --config default, "path/to/file.py" or "path/to/file.py:ARG".
  """
  overrides = [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  if not overrides:
    return []
  path, _, arg = _config_spec(argv, default_config).partition(":")
  if not os.path.exists(path):
    return []  # config_flags reports a missing file itself
  spec = importlib.util.spec_from_file_location("_bigjax_cli_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  errors = []
  for key in overrides:
    node, prefix = config, "config"
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        fields = (
            ", ".join(sorted(node.keys()))
            if isinstance(node, ml_collections.ConfigDict)
            else "none: it is a value"
        )
        errors.append(f"--config.{key}: {prefix} has no field {part!r} (its fields: {fields}).")
        break
      node, prefix = node[part], f"{prefix}.{part}"
  return errors


def exit_on_unknown_config_keys(argv: list[str], default_config: str) -> None:
  """Exits with status 1 and a message naming every unknown `--config.*` key, if any."""
  errors = unknown_config_keys(argv, default_config)
  if errors:
    sys.exit("error: unknown config key(s):\n  " + "\n  ".join(errors))


_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def define_config_and_workdir(config_name: str, *, config_help: str, workdir_help: str):
  """Defines --config (configs/`config_name`, its default variant) and --workdir, after
  checking the command line's --config.* overrides (`exit_on_unknown_config_keys`), and the
  multi-process flags (--coordinator_address, --num_processes, --process_id; `join_processes`).

  Called only when an experiment runs as a program, so that tests can import several
  experiment modules into one process without duplicate absl flags.

  Returns:
    (config flag holder, workdir flag holder).
  """
  path = os.path.join(_CONFIGS, config_name)
  exit_on_unknown_config_keys(sys.argv, path)  # before ml_collections parses the overrides
  holders = (
      config_flags.DEFINE_config_file("config", path, config_help),
      flags.DEFINE_string("workdir", None, workdir_help),
  )
  _define_process_flags()
  return holders


def _define_process_flags() -> None:
  """The flags of a multi-process run (bigjax.training.distributed), once per program."""
  if "coordinator_address" in flags.FLAGS:
    return
  flags.DEFINE_string(
      "coordinator_address",
      None,
      "Multi-process runs: HOST:PORT of process 0's coordinator (default: "
      f"${distributed.ENV_COORDINATOR}; `python -m bigjax.launch` sets it).",
  )
  flags.DEFINE_integer(
      "num_processes",
      None,
      f"Multi-process runs: the number of processes (default: ${distributed.ENV_NUM_PROCESSES}).",
  )
  flags.DEFINE_integer(
      "process_id",
      None,
      f"Multi-process runs: this process's id, 0..num_processes-1 (default: "
      f"${distributed.ENV_PROCESS_ID}).",
  )


def fail_fast(fn: Callable[..., Any], *args, **kwargs) -> Any:
  """`fn(*args, **kwargs)`; in a multi-process run, a process whose call fails prints its error
  and exits at once (status 1). Otherwise it would wait in JAX's shutdown for the other
  processes (up to five minutes) while they wait for it in a collective, and neither the
  launcher nor the cluster would see the failure to stop the run."""
  try:
    return fn(*args, **kwargs)
  except BaseException:
    if not jax.distributed.is_initialized():
      raise
    traceback.print_exc()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)


def join_processes(config: ml_collections.ConfigDict) -> None:
  """Joins the run's processes (bigjax.training.distributed.initialize) from the flags of
  `define_config_and_workdir`, the environment, or `config.distributed` (a cluster JAX detects);
  a no-op for a single process. Called before the experiment touches any device."""
  distributed.initialize(
      flags.FLAGS.coordinator_address,
      flags.FLAGS.num_processes,
      flags.FLAGS.process_id,
      auto=bool(config.get("distributed", False)),
  )


def run(
    fn: Callable[[ml_collections.ConfigDict, str], dict[str, Any]],
    config_name: str,
    *,
    workdir_help: str,
    config_help: str | None = None,
) -> None:
  """Runs `fn(config, workdir)` as a program and prints the summary it returns as JSON (its
  `config` entry left out).

  Args:
    fn: the experiment's train-and-evaluate function.
    config_name: its config file under configs/, e.g. "gan_mnist.py".
    workdir_help: what --workdir holds (the flag's help, and the error when it is missing).
    config_help: the --config flag's help (default: names the file).
  """
  config_flag, workdir_flag = define_config_and_workdir(
      config_name,
      workdir_help=workdir_help,
      config_help=config_help
      or f"Config file and variant, configs/{config_name}:VARIANT "
      "(default: the file's default variant).",
  )

  def main(argv):
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not workdir_flag.value:
      raise app.UsageError(f"--workdir is required: {workdir_help[0].lower()}{workdir_help[1:]}")
    join_processes(config_flag.value)
    summary = fail_fast(fn, config_flag.value, workdir_flag.value)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))

  app.run(main)


def read_images(path: str, *, need_labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
  """The uint8 `images` (and `labels`, None when absent) of an --images .npz file, or a clear
  error: no file, no `images` array, an empty or non-uint8 one, or no `labels` when needed."""
  if not path:
    raise app.UsageError(
        "--images is required: an .npz with `images` uint8 [N, H, W] (and "
        "`labels` [N] where labels are given)."
    )
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--images {path} does not exist.")
  with np.load(path) as data:
    if "images" not in data:
      raise ValueError(
          f"{path} has no `images` array (found {sorted(data.keys())}); save one "
          "with np.savez(path, images=uint8 array [num_images, 28, 28])."
      )
    images = data["images"]
    labels = data["labels"] if "labels" in data else None
  if images.dtype != np.uint8:
    raise ValueError(
        f"`images` in {path} must be uint8 pixels in [0, 255], got {images.dtype} "
        "(for floats in [0, 1] save np.round(255 * x).astype(np.uint8))."
    )
  if not len(images):
    raise ValueError(
        f"`images` in {path} holds no image (shape {images.shape}); give at least " "one."
    )
  if need_labels and labels is None:
    raise ValueError(f"{path} has no `labels` array, which is needed here.")
  return images, labels
