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
