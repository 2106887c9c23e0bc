"""Hugging Face XLNet directories in and out of `bigjax.models.xlnet.XLNet` (paper App. E.2).

A directory as `save_pretrained` writes it (config.json plus model.safetensors, a sharded
model.safetensors.index.json, or pytorch_model.bin) becomes (XLNet module, Flax params), and back:

  model, params = load_pretrained("xlnet-base-cased/", num_labels=2, new_heads_rng=rng)
  save_pretrained(model, params, "finetuned/")   # transformers' from_pretrained loads it

`PARAMETER_TABLE` is the one place where HF's tensor names meet the Flax tree: every tensor of a
checkpoint must match one row (unexpected keys are an error naming them), and every parameter the
model needs must be there (missing keys are an error naming them), with shapes checked. Heads are
explicit: a head the model has and the checkpoint lacks (the classifier of a pretrained LM
checkpoint) is initialised only from `new_heads_rng`; a head the checkpoint has and the caller
turned off (`lm_head=False`) is dropped by that choice. `lm_loss.weight` is HF's tied copy of the
word embedding: absent from HF's safetensors, accepted from old .bin files when equal to it.

Reading safetensors needs only `safetensors` and numpy; pytorch_model.bin needs torch.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np

from bigjax.models import xlnet
from bigjax.models import xlnet_files
from bigjax.models.xlnet_files import read_state_dict

__all__ = [
    "PARAMETER_TABLE",
    "read_config",
    "model_kwargs",
    "read_state_dict",
    "state_dict_to_params",
    "params_to_state_dict",
    "load_pretrained",
    "save_pretrained",
]

# HF state-dict name -> Flax parameter path, and how the tensor changes on the way in:
#   "" as is; "T" a torch Linear weight [out, in] becomes a Flax kernel [in, out].
# "{i}" is the layer index: the Flax layers are one nn.scan, so their parameters are stacked on a
# leading [n_layer] axis, and HF's layer i is row i of the Flax tensor.
PARAMETER_TABLE = (
    ("transformer.word_embedding.weight", "transformer/word_embedding/embedding", ""),
    ("transformer.mask_emb", "transformer/mask_emb", ""),
    ("transformer.layer.{i}.rel_attn.q", "transformer/layer/rel_attn/q", ""),
    ("transformer.layer.{i}.rel_attn.k", "transformer/layer/rel_attn/k", ""),
    ("transformer.layer.{i}.rel_attn.v", "transformer/layer/rel_attn/v", ""),
    ("transformer.layer.{i}.rel_attn.o", "transformer/layer/rel_attn/o", ""),
    ("transformer.layer.{i}.rel_attn.r", "transformer/layer/rel_attn/r", ""),
    ("transformer.layer.{i}.rel_attn.r_r_bias", "transformer/layer/rel_attn/r_r_bias", ""),
    ("transformer.layer.{i}.rel_attn.r_s_bias", "transformer/layer/rel_attn/r_s_bias", ""),
    ("transformer.layer.{i}.rel_attn.r_w_bias", "transformer/layer/rel_attn/r_w_bias", ""),
    ("transformer.layer.{i}.rel_attn.seg_embed", "transformer/layer/rel_attn/seg_embed", ""),
    (
        "transformer.layer.{i}.rel_attn.layer_norm.weight",
        "transformer/layer/rel_attn/layer_norm/scale",
        "",
    ),
    (
        "transformer.layer.{i}.rel_attn.layer_norm.bias",
        "transformer/layer/rel_attn/layer_norm/bias",
        "",
    ),
    ("transformer.layer.{i}.ff.layer_1.weight", "transformer/layer/ff/layer_1/kernel", "T"),
    ("transformer.layer.{i}.ff.layer_1.bias", "transformer/layer/ff/layer_1/bias", ""),
    ("transformer.layer.{i}.ff.layer_2.weight", "transformer/layer/ff/layer_2/kernel", "T"),
    ("transformer.layer.{i}.ff.layer_2.bias", "transformer/layer/ff/layer_2/bias", ""),
    ("transformer.layer.{i}.ff.layer_norm.weight", "transformer/layer/ff/layer_norm/scale", ""),
    ("transformer.layer.{i}.ff.layer_norm.bias", "transformer/layer/ff/layer_norm/bias", ""),
    ("lm_loss.bias", "lm_loss/bias", ""),
    ("sequence_summary.summary.weight", "sequence_summary/summary/kernel", "T"),
    ("sequence_summary.summary.bias", "sequence_summary/summary/bias", ""),
    ("logits_proj.weight", "logits_proj/kernel", "T"),
    ("logits_proj.bias", "logits_proj/bias", ""),
)
_TIED = "lm_loss.weight"  # HF ties it to transformer.word_embedding.weight
_HEADS = {"lm_loss": "lm_head", "sequence_summary": "classifier", "logits_proj": "classifier"}


def read_config(model_dir: str) -> dict:
  """config.json of an XLNet directory, checked for what bigjax's XLNet implements.

  Raises:
    FileNotFoundError: no directory or no config.json.
    ValueError: model_type is not "xlnet", or the config uses what the port leaves out.
  """
  path = os.path.join(model_dir, "config.json")
  if not os.path.isdir(model_dir):
    raise FileNotFoundError(
        f"no model directory {model_dir!r}; expected {xlnet_files.FORMAT_HINT}."
    )
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{model_dir!r} has no config.json; expected {xlnet_files.FORMAT_HINT}."
    )
  config = xlnet_files.read_json(
      path, "restore it from the model's source, or write it with save_pretrained"
  )
  if not isinstance(config, dict):
    raise ValueError(
        f"{path} holds a JSON {type(config).__name__}, not an object of config fields; "
        f"expected {xlnet_files.FORMAT_HINT}."
    )
  if config.get("model_type") != "xlnet":
    raise ValueError(
        f"{path} is model_type={config.get('model_type')!r}, not 'xlnet': this "
        "loader reads XLNet checkpoints only (e.g. xlnet-base-cased)."
    )
  try:
    model_kwargs(config)  # refuses unsupported settings now, with the reason
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  return config


def _integer(config: dict, key: str, default: int, minimum: int | None = 1) -> int:
  """config[key] (default when absent or null) as an int: an integer, or a float holding one."""
  value = default if config.get(key) is None else config[key]
  whole = isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value)
  if not whole or (minimum is not None and value < minimum):
    want = "an integer" + ("" if minimum is None else f" >= {minimum}")
    raise ValueError(f"field {key!r} is {value!r}; it must be {want} (HF XLNet's config).")
  return int(value)


def model_kwargs(
    config: dict, *, lm_head: bool = True, num_labels: int = 0, dtype=jnp.float32
) -> dict:
  """Keyword arguments of `XLNet(**kwargs)` for an HF XLNet config dict (defaults: HF's).

  Raises:
    ValueError: attn_type "uni", untied LM weights, d_head != d_model / n_head, an activation
      or summary setting the port does not implement.
  """
  get = lambda key, default: default if config.get(key) is None else config[key]
  d_model, n_head = _integer(config, "d_model", 1024), _integer(config, "n_head", 16)
  problems = []
  if get("attn_type", "bi") != "bi":
    problems.append(f"attn_type={config['attn_type']!r} (only 'bi' is implemented)")
  if not get("tie_word_embeddings", True):
    problems.append("tie_word_embeddings=False (the LM head is tied to the embedding)")
  if d_model % n_head or _integer(config, "d_head", d_model // n_head) != d_model // n_head:
    problems.append(f"d_head={config.get('d_head')} with d_model={d_model}, n_head={n_head}")
  if get("ff_activation", "gelu") not in xlnet.ACTIVATIONS:
    problems.append(f"ff_activation={config['ff_activation']!r}")
  if get("summary_type", "last") not in ("last", "first", "mean"):
    problems.append(f"summary_type={config['summary_type']!r}")
  if get("summary_proj_to_labels", False):
    problems.append("summary_proj_to_labels=True")
  activation = get("summary_activation", "tanh") or None
  if activation not in (None, "linear") and activation not in xlnet.ACTIVATIONS:
    problems.append(f"summary_activation={activation!r}")
  if problems:
    raise ValueError(
        "this XLNet config uses what bigjax's XLNet does not implement: "
        + "; ".join(problems)
        + "."
    )
  return dict(
      vocab_size=(
          _integer(config, "vocab_size", 32000)
          if config.get("vocab_size") is not None
          else _integer(config, "n_token", 32000)
      ),
      d_model=d_model,
      n_layer=_integer(config, "n_layer", 24),
      n_head=n_head,
      d_inner=_integer(config, "d_inner", 4096),
      ff_activation=get("ff_activation", "gelu"),
      layer_norm_eps=float(get("layer_norm_eps", 1e-12)),
      dropout=float(get("dropout", 0.1)),
      bi_data=bool(get("bi_data", False)),
      clamp_len=_integer(config, "clamp_len", -1, minimum=None),
      lm_head=bool(lm_head),
      num_labels=int(num_labels),
      summary_type=get("summary_type", "last"),
      summary_use_proj=bool(get("summary_use_proj", True)),
      summary_activation=None if activation == "linear" else activation,
      summary_first_dropout=float(get("summary_first_dropout", 0.0)),
      summary_last_dropout=float(get("summary_last_dropout", 0.1)),
      dtype=dtype,
  )


def _rows(n_layer: int):
  """(HF name, Flax path tuple, layer index or None, rule) for every table row and layer."""
  for hf, path, rule in PARAMETER_TABLE:
    for i in (range(n_layer) if "{i}" in hf else [None]):
      yield hf.format(i=i), tuple(path.split("/")), i, rule


def state_dict_to_params(state_dict: dict, model: xlnet.XLNet, *, new_heads_rng=None) -> dict:
  """HF tensors -> the Flax params of `model`, every tensor accounted for.

  Args:
    state_dict: {HF name: array} (`read_state_dict`); a base `XLNetModel` checkpoint (names
      without "transformer.") is accepted too.
    model: the XLNet module the params are for (its heads decide which tensors are expected).
    new_heads_rng: PRNG key to initialise heads the model has and the checkpoint lacks (HF's
      "newly initialized" weights, made explicit); None: such heads are an error.

  Returns:
    {"params": ...} for `model.apply`.

  Raises:
    ValueError: unexpected or missing tensors (named), wrong shapes, an lm_loss.weight that is
      not the word embedding.
  """
  state = dict(state_dict)
  if state and not any(k.startswith("transformer.") for k in state):
    state = {"transformer." + k: v for k, v in state.items()}  # a base XLNetModel
  shapes = flax.traverse_util.flatten_dict(_abstract_params(model)["params"])
  rows = [r for r in _rows(model.n_layer) if r[1] in shapes]
  known = {r[0] for r in rows}
  dropped = {r[0] for r in _rows(model.n_layer) if r[1] not in shapes and r[1][0] in _HEADS}
  tied = state.pop(_TIED, None)
  unexpected = sorted(k for k in state if k not in known and k not in dropped)
  if unexpected:
    raise ValueError(
        f"{len(unexpected)} unexpected tensors (not XLNet's, or more layers than "
        f"n_layer={model.n_layer}): {unexpected[:10]}."
    )
  missing = sorted(k for k in known if k not in state)
  missing_heads = {_HEADS.get(k.split(".")[0]) for k in missing}
  partial = sorted(
      k for k in known if _HEADS.get(k.split(".")[0]) in missing_heads - {None} and k in state
  )
  if partial:
    raise ValueError(
        f"the checkpoint holds part of a head ({partial}) but lacks {missing}: a "
        "head is loaded whole or initialised whole."
    )
  if missing and (None in missing_heads or new_heads_rng is None):
    fix = (
        ""
        if None in missing_heads
        else " Pass new_heads_rng to initialise the missing "
        "head(s), or turn them off (lm_head=False / num_labels=0)."
    )
    raise ValueError(f"{len(missing)} tensors missing from the checkpoint: {missing[:10]}.{fix}")
  flat, stacks = {}, {}
  if missing:
    fresh = flax.traverse_util.flatten_dict(xlnet.init_heads(model, new_heads_rng))
    flat.update({p: fresh[p] for hf, p, _, _ in rows if hf in missing})
  for hf, path, layer, rule in rows:
    if hf in missing:
      continue
    value = state[hf].T if rule == "T" else state[hf]
    want = tuple(shapes[path].shape[1:] if layer is not None else shapes[path].shape)
    if value.shape != want:
      raise ValueError(
          f"tensor {hf} has shape {state[hf].shape}; the model (config.json) "
          f"expects {want[::-1] if rule == 'T' else want}."
      )
    if layer is None:
      flat[path] = jnp.asarray(value)
    else:
      stacks.setdefault(path, [None] * model.n_layer)[layer] = value
  flat.update({p: jnp.asarray(np.stack(v)) for p, v in stacks.items()})
  wrong = [p for p in shapes if p not in flat or flat[p].shape != shapes[p].shape]
  if wrong:  # a guard on the table and init_heads
    raise AssertionError(f"converted params do not fit the model at {wrong[:5]}.")
  if tied is not None and not np.array_equal(tied, state["transformer.word_embedding.weight"]):
    raise ValueError(
        "lm_loss.weight differs from transformer.word_embedding.weight: an untied "
        "checkpoint, which XLNet (tie_word_embeddings=True) cannot represent."
    )
  return {"params": flax.traverse_util.unflatten_dict(flat)}


def params_to_state_dict(params: dict, model: xlnet.XLNet) -> dict[str, np.ndarray]:
  """Flax params of `model` -> {HF name: float32 array}, without the tied lm_loss.weight (as
  HF's safetensors)."""
  flat = flax.traverse_util.flatten_dict(params.get("params", params))
  extra = set(flat) - {r[1] for r in _rows(model.n_layer)}
  if extra:
    raise ValueError(f"params hold entries PARAMETER_TABLE does not know: {sorted(extra)[:10]}.")
  state = {}
  for hf, path, layer, rule in _rows(model.n_layer):
    if path in flat:
      value = np.asarray(flat[path], np.float32)
      value = value[layer] if layer is not None else value
      state[hf] = np.ascontiguousarray(value.T if rule == "T" else value)
  return state


def load_pretrained(
    model_dir: str,
    *,
    lm_head: bool | None = None,
    num_labels: int | None = None,
    new_heads_rng=None,
    dtype=jnp.float32,
):
  """An HF XLNet directory -> (XLNet module, params).

  Args:
    model_dir: HF directory (config.json + weights).
    lm_head: include the LM head; None: if the checkpoint has lm_loss.bias.
    num_labels: classifier classes (0: none); None: the checkpoint's (its logits_proj rows).
    new_heads_rng: PRNG key for heads asked for but absent from the checkpoint.
    dtype: computation dtype of the module (params stay float32).

  Returns:
    (model, {"params": ...}).
  """
  config = read_config(model_dir)
  state = read_state_dict(model_dir)
  if lm_head is None:
    lm_head = "lm_loss.bias" in state
  if num_labels is None:
    head = [state[k] for k in ("logits_proj.weight", "logits_proj.bias") if k in state]
    num_labels = head[0].shape[0] if head else 0
  model = xlnet.XLNet(**model_kwargs(config, lm_head=lm_head, num_labels=num_labels, dtype=dtype))
  return model, state_dict_to_params(state, model, new_heads_rng=new_heads_rng)


def save_pretrained(
    model: xlnet.XLNet,
    params: dict,
    model_dir: str,
    *,
    config: dict | None = None,
    label_names=None,
) -> None:
  """Writes config.json and model.safetensors that transformers' `from_pretrained` loads.

  Atomic: the directory is written whole into a temporary sibling (with model_dir's other
  files, e.g. spiece.model, copied; its old weights and config left out) and swapped in by
  renames, so a failure leaves model_dir as it was, never new weights beside an old config.

  Args:
    model: the XLNet module of `params`.
    params: its params.
    model_dir: output directory (created).
    config: the config dict it was loaded with (`read_config`), so fields the port does not use
      (token ids, task names) survive; the model's own fields override it.
    label_names: optional C class names (id2label); default LABEL_0..LABEL_{C-1}.
  """
  from safetensors.numpy import save_file

  out = dict(config or {})
  out.update(
      model_type="xlnet",
      vocab_size=model.vocab_size,
      d_model=model.d_model,
      n_layer=model.n_layer,
      n_head=model.n_head,
      d_head=model.d_model // model.n_head,
      d_inner=model.d_inner,
      ff_activation=model.ff_activation,
      attn_type="bi",
      layer_norm_eps=model.layer_norm_eps,
      dropout=model.dropout,
      bi_data=model.bi_data,
      clamp_len=model.clamp_len,
      summary_type=model.summary_type,
      summary_use_proj=model.summary_use_proj,
      summary_activation=model.summary_activation,
      summary_last_dropout=model.summary_last_dropout,
      tie_word_embeddings=True,
  )
  if model.summary_first_dropout:
    out["summary_first_dropout"] = model.summary_first_dropout
  out["architectures"] = (
      ["XLNetLMHeadModel"]
      if model.lm_head or not model.num_labels
      else ["XLNetForSequenceClassification"]
  )
  if model.num_labels:
    names = (
        list(label_names)
        if label_names is not None
        else [f"LABEL_{i}" for i in range(model.num_labels)]
    )
    if len(names) != model.num_labels:
      raise ValueError(f"label_names has {len(names)} names for num_labels={model.num_labels}.")
    out["id2label"] = {str(i): n for i, n in enumerate(names)}
    out["label2id"] = {n: i for i, n in enumerate(names)}
  state = params_to_state_dict(params, model)
  model_dir = os.path.abspath(model_dir)
  os.makedirs(os.path.dirname(model_dir), exist_ok=True)
  scratch = f"{model_dir}.partial-{secrets.token_hex(4)}"
  os.mkdir(scratch)
  try:
    for name in os.listdir(model_dir) if os.path.isdir(model_dir) else []:
      source = os.path.join(model_dir, name)
      if name == "config.json" or name.endswith((".safetensors", ".bin", ".index.json")):
        continue  # the old weights and config: replaced whole
      if os.path.isdir(source):
        shutil.copytree(source, os.path.join(scratch, name), symlinks=True)
      else:
        shutil.copy2(source, os.path.join(scratch, name), follow_symlinks=False)
    save_file(state, os.path.join(scratch, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(scratch, "config.json"), "w", encoding="utf-8") as f:
      json.dump(out, f, indent=2, sort_keys=True)
    _swap_in(scratch, model_dir)
  except BaseException:
    shutil.rmtree(scratch, ignore_errors=True)
    raise


def _swap_in(new: str, target: str) -> None:
  """Replaces the directory `target` by `new` with two renames (the old one removed after)."""
  if not os.path.exists(target):
    os.rename(new, target)
    return
  old = f"{target}.old-{secrets.token_hex(4)}"
  os.rename(target, old)
  try:
    os.rename(new, target)
  except BaseException:
    os.rename(old, target)
    raise
  shutil.rmtree(old, ignore_errors=True)


def _abstract_params(model: xlnet.XLNet):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((2, 4), np.int32)))
