"""A fine-tuning (or pretraining) run directory: the model config and tokenizer it holds beside
the loop's files, and its `RunKind` for `bigjax.training.runs` (App. E.2's runs; the trainer is
experiments.finetune, the scorer experiments.finetune_eval).

A run directory is self-contained: `xlnet_config.json` (the Hugging Face config of its model)
and `spiece.model` (its tokenizer), so a finished run is scored without the directory it was
fine-tuned from. The trainer checks them before training and writes them once its model's
state has loaded (`check_workdir`, then `prepare_workdir`).
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil

from bigjax.models import xlnet_weights
from bigjax.training import checkpoint as ckpt_lib
from bigjax.training import runs
from experiments.finetune_setup import (
    HF_CONFIG_FILE,
    SUMMARY_FILE,
    TOKENIZER_FILE,
    model_signature,
)
from experiments.finetune_step import ADDED_DEFAULTS, abstract_state

__all__ = [
    "check_workdir",
    "kind",
    "model_kwargs_equal",
    "prepare_workdir",
    "read_hf_config",
    "train_command",
]


def check_workdir(workdir: str, hf_config: dict, tokenizer_file: str) -> None:
  """Refuses a run directory that holds another model's config or tokenizer (nothing changed)."""
  config_path = os.path.join(workdir, HF_CONFIG_FILE)
  spm_path = os.path.join(workdir, TOKENIZER_FILE)
  if os.path.isfile(config_path):
    with open(config_path) as f:
      held = json.load(f)
    if model_kwargs_equal(held, hf_config) is False:
      raise ckpt_lib.SignatureMismatchError(
          f"{workdir} holds a run of another model ({config_path} differs from this run's "
          "model config); use a new --workdir, or the model_dir that run was trained from."
      )
  if os.path.isfile(spm_path) and not filecmp.cmp(spm_path, tokenizer_file, shallow=False):
    raise ckpt_lib.SignatureMismatchError(
        f"{workdir} holds a run with another tokenizer ({spm_path} differs from "
        f"{tokenizer_file}); use a new --workdir."
    )


def prepare_workdir(workdir: str, hf_config: dict, tokenizer_file: str) -> None:
  """Writes the run's model config and tokenizer into `workdir` (once; a run directory that holds
  another model's is refused, unchanged). The trainer calls it only once the model's state is
  restored or initialised, so a start that fails to load its model claims nothing."""
  check_workdir(workdir, hf_config, tokenizer_file)
  os.makedirs(workdir, exist_ok=True)
  config_path = os.path.join(workdir, HF_CONFIG_FILE)
  spm_path = os.path.join(workdir, TOKENIZER_FILE)
  if not os.path.isfile(spm_path):
    shutil.copyfile(tokenizer_file, spm_path + ".tmp")
    os.replace(spm_path + ".tmp", spm_path)
  if not os.path.isfile(config_path):
    ckpt_lib.write_json(config_path, hf_config)


def model_kwargs_equal(a: dict, b: dict) -> bool:
  return xlnet_weights.model_kwargs(a) == xlnet_weights.model_kwargs(b)


def read_hf_config(workdir: str) -> dict:
  path = os.path.join(workdir, HF_CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{workdir} has no {HF_CONFIG_FILE}: it is not a finished "
        f"fine-tuning or pretraining run; train one with "
        f"`{train_command(workdir, None)}`."
    )
  with open(path) as f:
    return json.load(f)


def train_command(workdir: str, variant: str | None = None) -> str:
  return (
      f"python -m experiments.finetune --config configs/finetune.py:{variant or 'lexname'} "
      f"--workdir {workdir} --config.model_dir=..."
  )


def kind(workdir: str | None = None) -> runs.RunKind:
  """The RunKind of fine-tuning (and pretraining) runs; the state's shapes come from the run's
  own xlnet_config.json, so `workdir` is needed to restore one."""
  hf = lambda: read_hf_config(workdir)
  return runs.RunKind(
      name="fine-tuning run",
      train_command=train_command,
      abstract_state=lambda config: abstract_state(config, hf()),
      signature=lambda config: model_signature(config, hf()),
      summary_file=SUMMARY_FILE,
      fields=("beta", "plm.target_fraction", "task"),
      migrate=lambda config: runs.add_defaults(config, ADDED_DEFAULTS),
  )
