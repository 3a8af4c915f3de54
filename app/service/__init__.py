"""The use-cases: create, read, step, change, fork, export, import and delete sessions. The one
place the layers meet.

Each function runs inside the caller's unit of work (`db`, a SQLAlchemy session in a
transaction) and never commits: the API edge commits before it answers. Domain values come in,
parsed by the API before the transaction (θ and gradients as numpy arrays by tensor name in the
session's dtype: `NewSession`, `GradientPost`; merge patches as plain documents; `SessionState`),
and go out (`Stepped`, `Params`, the views), which the API encodes. The optimizer core
(`app.optim`) does the arithmetic, the stepping layer (`app.stepping`) keeps the arrays, the
repository (`app.store`) the rows.

One module per job: `auth` (tokens), `records` (what every use-case reads off a row),
`sessions` (create, read, delete), `stepping` (a step), `accumulation` (posts summed toward a
step), `changes` (PATCH and fork), `transfer` (export and import). The names callers use are
re-exported here: `from app import service; service.step(...)`.
"""

from app.service.accumulation import (
    Accepted,
    Batch,
    accumulate,
    accumulates,
    accumulation_key,
    pending_sums,
    reset_accumulation,
)
from app.service.auth import (
    TOKEN_BYTES,
    SessionFacts,
    authorized_record,
    hash_token,
    session_facts,
    token_matches,
)
from app.service.changes import (
    fork_session,
    merge_patch,
    patch_session,
    patched_config,
)
from app.service.records import (
    SERVICE_FIELDS,
    Created,
    SessionInfo,
    core_config,
    session_info,
    split_arrays,
    tensor_names,
)
from app.service.sessions import (
    HistoryPage,
    NewSession,
    Params,
    Progress,
    SchedulePreview,
    add_session,
    create_session,
    created_session,
    current_info,
    delete_session,
    get_history,
    get_params,
    get_progress,
    get_session,
    preview_schedule,
)
from app.service.stepping import (
    GradientPost,
    logged_step,
    step,
    step_accumulated,
    working_state,
)
from app.service.transfer import (
    PLATEAU_BEST,
    export_state,
    import_session,
)
from app.stepping import Stepped, stored_arrays

__all__ = [
    "PLATEAU_BEST",
    "SERVICE_FIELDS",
    "TOKEN_BYTES",
    "Accepted",
    "Batch",
    "Created",
    "GradientPost",
    "HistoryPage",
    "NewSession",
    "Params",
    "Progress",
    "SchedulePreview",
    "SessionFacts",
    "SessionInfo",
    "Stepped",
    "accumulate",
    "accumulates",
    "accumulation_key",
    "add_session",
    "authorized_record",
    "core_config",
    "create_session",
    "created_session",
    "current_info",
    "delete_session",
    "export_state",
    "fork_session",
    "get_history",
    "get_params",
    "get_progress",
    "get_session",
    "hash_token",
    "import_session",
    "logged_step",
    "merge_patch",
    "patch_session",
    "patched_config",
    "pending_sums",
    "preview_schedule",
    "reset_accumulation",
    "session_facts",
    "session_info",
    "split_arrays",
    "step",
    "step_accumulated",
    "stored_arrays",
    "tensor_names",
    "token_matches",
    "working_state",
]
