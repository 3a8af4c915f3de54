"""The optimizer core: pure numpy, no I/O. (θ, state, gradient, t) → (θ′, state′).

The facade the service uses is re-exported here; see docs/design.md.
"""

from app.optim.base import (
    GradientMismatch,
    HyperParameterError,
    NonFiniteGradient,
    OptimError,
    SparseRows,
    UnsupportedTensor,
)
from app.optim.engine import (
    Optimizer,
    OptimizerState,
    StepResult,
    get_num_threads,
    set_num_threads,
)
from app.optim.fused import warm_up
from app.optim.gradients import check_gradients, coalesce_rows
from app.optim.optimizers import (
    OPTIMIZER_TYPES,
    optimizer_defaults,
    optimizer_fields,
    optimizer_group_fields,
)
from app.optim.schedules import (
    ABSOLUTE_SCHEDULE_TYPES,
    SCHEDULE_TYPES,
    build_schedule,
    schedule_defaults,
    schedule_lrs,
)

__all__ = [
    "ABSOLUTE_SCHEDULE_TYPES",
    "OPTIMIZER_TYPES",
    "SCHEDULE_TYPES",
    "GradientMismatch",
    "HyperParameterError",
    "NonFiniteGradient",
    "OptimError",
    "Optimizer",
    "OptimizerState",
    "SparseRows",
    "StepResult",
    "UnsupportedTensor",
    "build_schedule",
    "check_gradients",
    "coalesce_rows",
    "get_num_threads",
    "optimizer_defaults",
    "optimizer_fields",
    "optimizer_group_fields",
    "schedule_defaults",
    "schedule_lrs",
    "set_num_threads",
    "warm_up",
]
