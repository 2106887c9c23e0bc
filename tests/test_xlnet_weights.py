"""HF XLNet directories in and out of bigjax's XLNet: every tensor accounted for, HF loads what we
save and gives the same logits, and bad directories fail with the tensor or file named."""

import copy
import json
import os
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bigjax.evaluation.chunked import by_value
from bigjax.models import xlnet_weights
from conftest import rbg_key

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CONFIG = dict(vocab_size=61, d_model=32, n_layer=2, n_head=4, d_inner=48, num_labels=3)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
  """Perturbed tiny HF models saved with save_pretrained: {"lm": dir, "cls": dir, "base": dir},
  the models, and one batch of inputs."""
  torch.manual_seed(0)
  config = transformers.XLNetConfig(**CONFIG)
  models = dict(
      lm=transformers.XLNetLMHeadModel(config).eval(),
      cls=transformers.XLNetForSequenceClassification(config).eval(),
      base=transformers.XLNetModel(config).eval(),
  )
  dirs = {}
  with torch.no_grad():
    for name, model in models.items():
      for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))
      dirs[name] = str(tmp_path_factory.mktemp(name))
      model.save_pretrained(dirs[name])
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 61, (2, 7))
  mask = np.ones((2, 7), np.int64)
  mask[1, :2] = 0
  segments = np.array([[0, 0, 0, 1, 1, 1, 2]] * 2)
  inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=segments)
  return dirs, models, inputs


def _hf_out(model, inputs):
  with torch.no_grad():
    out = model(**{k: torch.tensor(v) for k, v in inputs.items()})
  return (out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits).numpy()


def _ours(model, params, inputs, key):
  return np.asarray(_jit_apply(model, key)(params, inputs))


@by_value
def _jit_apply(model, key):
  """`model`'s output `key`, jitted once per model and output in a process."""
  return jax.jit(lambda p, x: model.apply(p, **x)[key])


@pytest.mark.parametrize("name, key", [("lm", "lm_logits"), ("cls", "logits"), ("base", "content")])
def test_load_gives_hf_outputs(hf, name, key):
  dirs, models, inputs = hf
  model, params = xlnet_weights.load_pretrained(dirs[name])
  assert model.lm_head == (name == "lm") and model.num_labels == (3 if name == "cls" else 0)
  np.testing.assert_allclose(
      _ours(model, params, inputs, key), _hf_out(models[name], inputs), atol=1e-5
  )


@pytest.mark.parametrize(
    "heads, hf_class, key",
    [
        (dict(lm_head=True, num_labels=0), "XLNetLMHeadModel", "lm_logits"),
        (dict(lm_head=False, num_labels=3), "XLNetForSequenceClassification", "logits"),
    ],
)
def test_saved_directory_loads_in_hf_with_the_same_logits(hf, tmp_path, heads, hf_class, key):
  dirs, _, inputs = hf
  source = dirs["lm"] if heads["lm_head"] else dirs["cls"]
  model, params = xlnet_weights.load_pretrained(source, **heads)
  xlnet_weights.save_pretrained(
      model, params, str(tmp_path), config=xlnet_weights.read_config(source)
  )
  loaded, info = getattr(transformers, hf_class).from_pretrained(
      str(tmp_path), output_loading_info=True
  )
  assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
  np.testing.assert_allclose(
      _hf_out(loaded.eval(), inputs), _ours(model, params, inputs, key), atol=1e-5
  )


def test_pretrained_lm_with_a_new_classifier(hf, tmp_path):
  """The App. E.2 start: xlnet-base-cased (an LM checkpoint) plus a freshly initialised
  classifier; saved, both HF classes load it without missing weights."""
  dirs, models, inputs = hf
  with pytest.raises(ValueError, match=r"missing from the checkpoint.*logits_proj.*new_heads_rng"):
    xlnet_weights.load_pretrained(dirs["lm"], num_labels=2)
  model, params = xlnet_weights.load_pretrained(dirs["lm"], num_labels=2, new_heads_rng=rbg_key(0))
  assert params["params"]["logits_proj"]["kernel"].shape == (32, 2)
  np.testing.assert_allclose(
      _ours(model, params, inputs, "lm_logits"), _hf_out(models["lm"], inputs), atol=1e-5
  )
  xlnet_weights.save_pretrained(model, params, str(tmp_path), label_names=["no", "yes"])
  for hf_class in ("XLNetLMHeadModel", "XLNetForSequenceClassification"):
    loaded, info = getattr(transformers, hf_class).from_pretrained(
        str(tmp_path), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"]
  assert loaded.config.id2label == {0: "no", 1: "yes"}
  np.testing.assert_allclose(
      _hf_out(loaded.eval(), inputs), _ours(model, params, inputs, "logits"), atol=1e-5
  )
  # Turning the LM head off drops lm_loss.bias by choice, not by accident.
  model, params = xlnet_weights.load_pretrained(dirs["lm"], lm_head=False)
  assert "lm_loss" not in params["params"]


def test_state_dict_round_trip_is_exact(hf):
  dirs, _, _ = hf
  model, params = xlnet_weights.load_pretrained(dirs["cls"])
  state = xlnet_weights.params_to_state_dict(params, model)
  assert state.keys() == load_file(os.path.join(dirs["cls"], "model.safetensors")).keys()
  again = xlnet_weights.state_dict_to_params(state, model)
  jax.tree.map(np.testing.assert_array_equal, params, again)


def _copy(source, target, *, drop=(), add=None, config=None):
  os.makedirs(target, exist_ok=True)
  state = load_file(os.path.join(source, "model.safetensors"))
  for key in drop:
    del state[key]
  state.update(add or {})
  save_file(state, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(source, "config.json")) as f:
    cfg = json.load(f)
  cfg.update(config or {})
  with open(os.path.join(target, "config.json"), "w") as f:
    json.dump(cfg, f)
  return str(target)


def test_missing_unexpected_and_misshapen_tensors_are_named(hf, tmp_path):
  dirs, _, _ = hf
  bad = _copy(dirs["lm"], tmp_path / "a", drop=["transformer.layer.1.ff.layer_1.bias"])
  with pytest.raises(ValueError, match=r"missing.*transformer\.layer\.1\.ff\.layer_1\.bias"):
    xlnet_weights.load_pretrained(bad)
  extra = {
      "transformer.layer.2.rel_attn.q": np.zeros((32, 4, 8), np.float32),
      "pooler.dense.weight": np.zeros((3, 3), np.float32),
  }
  bad = _copy(dirs["lm"], tmp_path / "b", add=extra)
  with pytest.raises(ValueError, match=r"2 unexpected.*pooler\.dense\.weight.*layer\.2\.rel_attn"):
    xlnet_weights.load_pretrained(bad)
  bad = _copy(dirs["cls"], tmp_path / "d", drop=["logits_proj.bias"])
  with pytest.raises(ValueError, match=r"part of a head.*logits_proj\.weight"):
    xlnet_weights.load_pretrained(bad, new_heads_rng=rbg_key(0))
  bad = _copy(dirs["lm"], tmp_path / "c", config=dict(d_inner=64))
  with pytest.raises(ValueError, match=r"layer_1\.weight has shape \(48, 32\).*\(64, 32\)"):
    xlnet_weights.load_pretrained(bad)


def test_legacy_config_fields(hf, tmp_path):
  """xlnet-base-cased's config.json as the hub has it: n_token, mem_len null, untie_r, and
  task_specific_params; the fields the port does not use are kept on save."""
  dirs, models, inputs = hf
  legacy = dict(
      n_token=61,
      mem_len=None,
      reuse_len=None,
      untie_r=True,
      task_specific_params={"text-generation": {"do_sample": True, "max_length": 250}},
  )
  source = _copy(dirs["lm"], tmp_path / "legacy", config=legacy)
  with open(os.path.join(source, "config.json")) as f:
    cfg = json.load(f)
  del cfg["vocab_size"]
  with open(os.path.join(source, "config.json"), "w") as f:
    json.dump(cfg, f)
  model, params = xlnet_weights.load_pretrained(source)
  assert model.vocab_size == 61
  xlnet_weights.save_pretrained(
      model, params, str(tmp_path / "out"), config=xlnet_weights.read_config(source)
  )
  saved = xlnet_weights.read_config(str(tmp_path / "out"))
  assert saved["untie_r"] and saved["task_specific_params"] == legacy["task_specific_params"]
  np.testing.assert_allclose(
      _ours(model, params, inputs, "lm_logits"), _hf_out(models["lm"], inputs), atol=1e-5
  )


def test_bad_directories_are_refused(hf, tmp_path):
  dirs, _, _ = hf
  with pytest.raises(FileNotFoundError, match="no model directory"):
    xlnet_weights.load_pretrained(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    xlnet_weights.load_pretrained(str(tmp_path))
  bert = _copy(dirs["lm"], tmp_path / "bert", config=dict(model_type="bert"))
  with pytest.raises(ValueError, match="model_type='bert', not 'xlnet'"):
    xlnet_weights.load_pretrained(bert)
  uni = _copy(dirs["lm"], tmp_path / "uni", config=dict(attn_type="uni"))
  with pytest.raises(ValueError, match="attn_type='uni'"):
    xlnet_weights.load_pretrained(uni)
  os.remove(os.path.join(bert, "model.safetensors"))
  with open(os.path.join(bert, "config.json"), "w") as f:
    json.dump(dict(model_type="xlnet"), f)
  with pytest.raises(FileNotFoundError, match="no weights"):
    xlnet_weights.load_pretrained(bert)


def test_pytorch_bin_with_its_tied_copy(hf, tmp_path, monkeypatch):
  dirs, models, inputs = hf
  state = models["lm"].state_dict()
  assert "lm_loss.weight" in state
  _copy(dirs["lm"], tmp_path)
  os.remove(tmp_path / "model.safetensors")
  torch.save(state, tmp_path / "pytorch_model.bin")
  model, params = xlnet_weights.load_pretrained(str(tmp_path))
  np.testing.assert_allclose(
      _ours(model, params, inputs, "lm_logits"), _hf_out(models["lm"], inputs), atol=1e-5
  )
  state = {k: v.clone() for k, v in state.items()}
  state["lm_loss.weight"] += 1
  torch.save(state, tmp_path / "pytorch_model.bin")
  with pytest.raises(ValueError, match="untied"):
    xlnet_weights.load_pretrained(str(tmp_path))
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(ImportError, match="needs torch"):
    xlnet_weights.load_pretrained(str(tmp_path))


def test_sharded_safetensors(hf, tmp_path):
  dirs, models, inputs = hf
  models["cls"].save_pretrained(str(tmp_path), max_shard_size="20KB")
  assert "model.safetensors.index.json" in os.listdir(tmp_path)
  model, params = xlnet_weights.load_pretrained(str(tmp_path))
  np.testing.assert_allclose(
      _ours(model, params, inputs, "logits"), _hf_out(models["cls"], inputs), atol=1e-5
  )


def test_bfloat16_checkpoint_is_read_as_float32(hf, tmp_path):
  dirs, models, _ = hf
  copy.deepcopy(models["base"]).to(torch.bfloat16).save_pretrained(str(tmp_path))
  model, params = xlnet_weights.load_pretrained(str(tmp_path))
  table = params["params"]["transformer"]["word_embedding"]["embedding"]
  want = models["base"].word_embedding.weight.detach().to(torch.bfloat16).float().numpy()
  assert table.dtype == np.float32
  np.testing.assert_array_equal(table, want)


def test_safetensors_are_read_without_torch(hf, tmp_path, monkeypatch):
  dirs, models, inputs = hf
  want = _hf_out(models["cls"], inputs)
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
  model, params = xlnet_weights.load_pretrained(dirs["cls"])
  xlnet_weights.save_pretrained(model, params, str(tmp_path))
  model, params = xlnet_weights.load_pretrained(str(tmp_path))
  np.testing.assert_allclose(_ours(model, params, inputs, "logits"), want, atol=1e-5)


# ----------------------------------------------------------------------------- issue 27


def _write(path, text, mode="w"):
  with open(path, mode) as f:
    f.write(text)


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"model_type": "xlnet", "d_model": 32,', r"config.json is not valid JSON \(line 1"),
        ('["xlnet"]', r"config.json holds a JSON list, not an object"),
        ('{"model_type": "xlnet", "n_layer": "two"}', r"config.json: field 'n_layer' is 'two'"),
        ('{"model_type": "xlnet", "d_model": 32.5}', r"config.json: field 'd_model' is 32.5"),
        ('{"model_type": "xlnet", "vocab_size": 0}', r"field 'vocab_size' is 0; .* >= 1"),
    ],
)
def test_a_broken_config_json_is_named(hf, tmp_path, text, match):
  folder = _copy(hf[0]["lm"], tmp_path / "m")
  _write(os.path.join(folder, "config.json"), text)
  with pytest.raises(ValueError, match=match):
    xlnet_weights.load_pretrained(folder)


def test_an_integral_float_field_reads_as_before(hf, tmp_path):
  folder = _copy(hf[0]["lm"], tmp_path / "m", config=dict(d_model=32.0, clamp_len=-1))
  assert xlnet_weights.model_kwargs(xlnet_weights.read_config(folder))["d_model"] == 32


def test_truncated_and_unindexed_safetensors_are_named(hf, tmp_path):
  folder = _copy(hf[0]["lm"], tmp_path / "m")
  path = os.path.join(folder, "model.safetensors")
  with open(path, "rb") as f:
    data = f.read()
  _write(path, data[: len(data) // 2], "wb")
  with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file"):
    xlnet_weights.read_state_dict(folder)
  sharded = tmp_path / "sharded"
  hf[1]["cls"].save_pretrained(str(sharded), max_shard_size="20KB")
  index = sharded / "model.safetensors.index.json"
  _write(index, '{"metadata": {}}')
  with pytest.raises(ValueError, match=r"index.json has no 'weight_map'"):
    xlnet_weights.read_state_dict(str(sharded))
  _write(index, '{"weight_map": {"a": "model-00009-of-00009.safetensors"}}')
  with pytest.raises(FileNotFoundError, match=r"names the shard 'model-00009"):
    xlnet_weights.read_state_dict(str(sharded))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_at_load(hf, tmp_path, bad):
  source = load_file(os.path.join(hf[0]["lm"], "model.safetensors"))
  name = "transformer.layer.1.ff.layer_1.weight"
  damaged = source[name].copy()
  damaged[3, 5] = bad
  folder = _copy(hf[0]["lm"], tmp_path / "m", add={name: damaged})
  with pytest.raises(ValueError, match=rf"model.safetensors: tensor '{name}' holds 1 NaN or inf"):
    xlnet_weights.load_pretrained(folder)


def test_a_failed_save_leaves_the_directory_as_it_was(hf, tmp_path, monkeypatch):
  """A fault between the weights and config.json used to leave new weights beside the old
  config (a directory of mixed shapes that no longer loads)."""
  dirs, models, inputs = hf
  model, params = xlnet_weights.load_pretrained(dirs["lm"])
  target = str(tmp_path / "model")
  xlnet_weights.save_pretrained(model, params, target)
  _write(os.path.join(target, "spiece.model"), "the run's tokenizer")
  small = transformers.XLNetConfig(**{**CONFIG, "d_model": 16, "d_inner": 24})
  other_dir = str(tmp_path / "other")
  transformers.XLNetLMHeadModel(small).save_pretrained(other_dir)
  other, other_params = xlnet_weights.load_pretrained(other_dir)

  def fail(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(xlnet_weights.json, "dump", fail)
  with pytest.raises(OSError, match="No space left"):
    xlnet_weights.save_pretrained(other, other_params, target)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path)) == ["model", "other"]  # no scratch left behind
  again, again_params = xlnet_weights.load_pretrained(target)
  assert again.d_model == 32
  np.testing.assert_allclose(
      _ours(again, again_params, inputs, "lm_logits"), _hf_out(models["lm"], inputs), atol=1e-5
  )
  xlnet_weights.save_pretrained(other, other_params, target)  # a save that succeeds
  assert xlnet_weights.load_pretrained(target)[0].d_model == 16
  assert sorted(os.listdir(target)) == ["config.json", "model.safetensors", "spiece.model"]
  with open(os.path.join(target, "spiece.model")) as f:
    assert f.read() == "the run's tokenizer"
