"""The README's code runs as written."""
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _block(marker: str) -> str:
  """The python block that follows `<!-- marker -->` in the README."""
  with open(README) as f:
    text = f.read()
  match = re.search(rf"<!-- {marker} -->\s*```python\n(.*?)```", text, re.S)
  assert match, f"no python block after <!-- {marker} --> in README.md"
  return match.group(1)


def test_the_embedding_example_trains_a_generator_for_every_task(capsys):
  namespace = {}
  exec(compile(_block("embed-example"), "README.md:embed-example", "exec"), namespace)
  d_losses, g_losses = zip(*[(float(d), float(g)) for d, g in namespace["history"]])
  assert all(map(lambda v: v == v and abs(v) < 1e3, d_losses + g_losses))   # finite
  # Completions follow the given half's sign (zeros would be 0.57 off, the wrong sign 1.1).
  assert namespace["error"] < 0.35
  assert "completion error" in capsys.readouterr().out


def test_the_xlnet_blocks_run_on_a_tiny_model_and_glue_files(tmp_path, monkeypatch, capsys):
  """Sections 2-6 of "XLNet in Flax": a tiny perturbed HF XLNet with a SentencePiece vocabulary
  stands in for xlnet-base-cased, and GLUE files in GLUE's layouts for glue_data/."""
  import numpy as np
  import pytest
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("tensorflow_datasets")
  import test_text_data as text
  from bigjax.data import tokenizer as xtok
  from bigjax.models import xlnet_weights

  monkeypatch.chdir(tmp_path)
  (tmp_path / "corpus.txt").write_text("\n".join(text._sentences(400)) + "\n")
  xtok.train_sentencepiece("corpus.txt", "xlnet-base-cased", vocab_size=70)
  torch.manual_seed(0)
  hf = transformers.XLNetLMHeadModel(transformers.XLNetConfig(
      vocab_size=70, d_model=32, n_layer=2, n_head=4, d_inner=48)).eval()
  hf.save_pretrained("xlnet-base-cased")
  for task, files in text.GLUE_FILES.items():
    (tmp_path / "glue_data" / task).mkdir(parents=True)
    for name, content in files.items():
      (tmp_path / "glue_data" / task / name).write_text(content, encoding="utf-8")
  text._fake_download(monkeypatch, tmp_path / "glue_data")

  namespace = {}
  for marker in ("xlnet-load", "xlnet-query", "xlnet-save", "xlnet-tfds", "xlnet-wordnet"):
    exec(compile(_block(marker), f"README.md:{marker}", "exec"), namespace)
  out = capsys.readouterr().out
  assert "0 of 1 pairs truncated" in out and "{'accuracy': " in out
  assert "(2, 128, 32) (2, 128, 70)" in out
  assert len(namespace["dev"].first) == 1                      # the tfds route's RTE dev
  assert namespace["batch"].input_ids.shape == (5000, 128)     # the shipped lexname train
  saved = transformers.XLNetForSequenceClassification.from_pretrained("xlnet-rte").eval()
  x = namespace["x"]
  with torch.no_grad():
    logits = saved(**{k: torch.tensor(np.asarray(v, np.int64)) for k, v in
                      (("input_ids", x.input_ids), ("token_type_ids", x.token_type_ids),
                       ("attention_mask", x.attention_mask))}).logits.numpy()
  assert namespace["model"].num_labels == 10                  # section 6's model
  model, params = xlnet_weights.load_pretrained("xlnet-rte")   # section 4's, read back
  ours = model.apply(params, x.input_ids, token_type_ids=x.token_type_ids,
                     attention_mask=x.attention_mask)["logits"]
  assert np.abs(np.asarray(ours) - logits).max() < 1e-4
