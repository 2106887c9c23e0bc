"""Reading a Hugging Face XLNet directory's files: config.json as JSON and the weights
(model.safetensors, its shards, or pytorch_model.bin) as float32 numpy arrays, every unreadable,
damaged or non-finite file refused with its name. `bigjax.models.xlnet_weights` checks the config
and maps the tensors onto the Flax model (paper App. E.2).

Reading safetensors needs only `safetensors` and numpy; pytorch_model.bin needs torch.
"""

from __future__ import annotations

import json
import os

import numpy as np

FORMAT_HINT = (
    "a directory as transformers' save_pretrained writes it: config.json and "
    "model.safetensors (or model.safetensors.index.json, or pytorch_model.bin)"
)


def read_json(path: str, fix: str):
  """A JSON file, or ValueError naming it (and the line of a syntax error) with `fix`."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not UTF-8 text (byte {e.start}); {fix}.") from None
  except json.JSONDecodeError as e:
    raise ValueError(
        f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); {fix}."
    ) from None


def read_state_dict(model_dir: str) -> dict[str, np.ndarray]:
  """All tensors of an HF checkpoint as float32 numpy arrays, by HF name.

  Reads model.safetensors (or its shards, via model.safetensors.index.json) with
  `safetensors.numpy`, no torch; pytorch_model.bin needs torch.
  """
  files = os.listdir(model_dir) if os.path.isdir(model_dir) else []
  if "model.safetensors" in files or "model.safetensors.index.json" in files:
    from safetensors.numpy import load_file

    if "model.safetensors" in files:
      shards = ["model.safetensors"]
    else:
      shards = _shards(os.path.join(model_dir, "model.safetensors.index.json"))
    state = {}
    for shard in shards:
      path = os.path.join(model_dir, shard)
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{model_dir}/model.safetensors.index.json names the shard {shard!r}, which is not "
            "there; copy the whole checkpoint directory again."
        )
      try:
        tensors = load_file(path)
      except Exception as e:  # safetensors' SafetensorError, a truncated or foreign file
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated or damaged: "
            "download or save the checkpoint again."
        ) from None
      _check_finite(tensors, path)
      state.update(tensors)
  elif "pytorch_model.bin" in files:
    try:
      import torch
    except ImportError:
      raise ImportError(
          f"{model_dir}/pytorch_model.bin needs torch to read (pip install "
          "torch==2.13.0), or convert it once to model.safetensors."
      ) from None
    path = os.path.join(model_dir, "pytorch_model.bin")
    try:
      loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors of a truncated or foreign file
      raise ValueError(
          f"{path} could not be read by torch.load ({type(e).__name__}: {e}); it may be "
          "truncated or damaged: download or save the checkpoint again."
      ) from None
    state = {k: v.detach().float().numpy() for k, v in loaded.items()}
    _check_finite(state, path)
  else:
    raise FileNotFoundError(f"no weights in {model_dir!r}; expected {FORMAT_HINT}.")
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


def _shards(index_path: str) -> list[str]:
  index = read_json(index_path, "copy the checkpoint directory again")
  weight_map = index.get("weight_map") if isinstance(index, dict) else None
  if not isinstance(weight_map, dict) or not weight_map:
    raise ValueError(
        f"{index_path} has no 'weight_map' (tensor name -> shard file); it is not a "
        "safetensors index as save_pretrained writes it: copy the checkpoint directory again."
    )
  return sorted(set(weight_map.values()))


def _check_finite(tensors: dict, path: str) -> None:
  """Refuses NaN/inf weights at load, naming the file and tensor (the loss would be NaN at the
  first step)."""
  for name, value in tensors.items():
    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16":
      finite = np.isfinite(value.astype(np.float32))
      if not finite.all():
        raise ValueError(
            f"{path}: tensor {name!r} holds {int(value.size - finite.sum())} NaN or inf "
            f"values (first at index {tuple(int(i) for i in np.argwhere(~finite)[0])}); the "
            "checkpoint is damaged or was saved after training diverged: use another one."
        )
