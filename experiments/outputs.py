"""Writing run outputs so that a kill mid-write never leaves a truncated file (the library's
`bigjax.checkpoint.write_json`, which bigjax's own trainers use too)."""
from bigjax.checkpoint import write_json

__all__ = ["write_json"]
