"""Checks of experiment configs, with one wording for every trainer's errors.

check = config_checks.Checker(config, "configs/vq_mnist.py")
check.loop_fields()                    # num_steps, batch_size, checkpoint_every, ... >= 1
check.integer("model.code_dim")        # a positive int (bools are not ints here)
check.integer("eval_every", minimum=0)
check.fail("model.widths must ...")    # ValueError: "configs/vq_mnist.py (smoke): model..."
"""

from __future__ import annotations

from typing import Any

LOOP_FIELDS = ("num_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every")


class Checker:
  """Raises ValueError naming the config file and variant and what is wrong."""

  def __init__(self, config, name: str):
    self.config, self.name = config, name

  def fail(self, msg: str) -> None:
    raise ValueError(f"{self.name} ({self.config.get('variant', '?')}): {msg}")

  def get(self, key: str) -> Any:
    node = self.config
    for part in key.split("."):
      node = node[part]
    return node

  def integer(self, key: str, *, minimum: int = 1, below: int | None = None) -> int:
    """config[key] (dotted), an int >= minimum (and < below), or a clear error."""
    v = self.get(key)
    if (
        isinstance(v, bool)
        or not isinstance(v, int)
        or v < minimum
        or (below is not None and v >= below)
    ):
      want = (
          f"an int in [{minimum}, {below})"
          if below is not None
          else "a positive integer"
          if minimum == 1
          else f"an integer >= {minimum}"
      )
      self.fail(f"{key} must be {want}, got {v!r}.")
    return v

  def held_out(self, train_key: str, test_key: str) -> None:
    """The test split is not trained on: two different splits, neither of them "all"."""
    train, test = self.get(train_key), self.get(test_key)
    if train == test or "all" in (train, test):
      self.fail(
          f"{train_key}={train!r} and {test_key}={test!r}: the test split would hold "
          "training digits, so its numbers would not be held out. Use 'train' and "
          "'test'."
      )

  def loop_fields(self) -> None:
    """The training loop's fields (bigjax.training.train): positive integers."""
    for name in LOOP_FIELDS:
      self.integer(name)
