"""Writing run outputs so that a kill mid-write never leaves a truncated file."""
from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as JSON to `path` atomically (a temporary file, then a rename)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)
