"""Training infrastructure shared by every bigjax trainer (and usable by other JAX projects).

loop         `train`: the one resumable loop (restore, logs, progress, metrics with the
             non-finite stop, checkpoints, periodic `Hook`s, compile count)
data_order   `batch_indices`: the rows of step s's batch, a pure function of (seed, stream, s);
             `batch_fn`: a loop's batch function over in-memory arrays (sharded on a mesh)
optimizers   `warmup_cosine_adamw`; `adamw_direction` + `warmup_linear_lr` (rate as an argument)
checkpoint   Orbax checkpoints with a model signature and fallback to older steps
rundir       `claim`: a run directory checked, marked and locked for the one process writing it
runs         `load`: a finished run's migrated config and restored state (`RunKind`)
writer       metrics rows as JSON lines and TensorBoard events
sharding     a 1-D data-parallel mesh, replicated state, process-local batches
distributed  `initialize`: the processes of a run joined (flags, JAX_* variables, or a cluster
             JAX detects); `agree`, `main_first`, `barrier` across them
prefetch     host-side batch prefetch in a background thread
programs     `by_config`, `jit_init`: a trainer's jitted step and initialiser built once per
             config in a process
"""

from bigjax.training.checkpoint import NonFiniteLossError, SignatureMismatchError, write_json
from bigjax.training.data_order import batch_fn, batch_indices
from bigjax.training.loop import ConfigMismatchError, Hook, environment, train
from bigjax.training.rundir import NotARunDirectoryError, RunLockedError

__all__ = [
    "ConfigMismatchError",
    "Hook",
    "NonFiniteLossError",
    "NotARunDirectoryError",
    "RunLockedError",
    "SignatureMismatchError",
    "batch_fn",
    "batch_indices",
    "environment",
    "train",
    "write_json",
]
