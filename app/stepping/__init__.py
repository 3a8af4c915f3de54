"""The stepping layer, between the use-cases (`app.service`) and the store (`app.store`).

It owns what a step does with a session's arrays — the working sets a process keeps between
steps, the step log and its replay, when a step writes a checkpoint, and whether an answer
made after the commit needs a copy of θ — so that the store keeps rows and bytes only (it
never imports the optimizer core) and the use-cases never see how arrays are kept.

- `arrays`: `SessionArrays` (load, save, working set, a step's write) and `WorkingSets` (this
  process's cache of one database), `checkpoint_logged_sessions` at a clean stop;
- `working_sets`: `WorkingSet` and the bounded `WorkingSetCache`;
- `replay`: the log replayed through the core, onto each chunk from the version it was
  written at; `stored_arrays` / `split_stored` (θ and state ↔ stored keys);
- `spread`: the pieces a spread checkpoint writes, oldest first;
- `outcome`: `Stepped`, a step's result as the service gives it to the API.
"""

from app.stepping.arrays import (
    SessionArrays,
    StepWrite,
    WorkingSets,
    checkpoint_logged_sessions,
    working_sets_of,
)
from app.stepping.outcome import Stepped
from app.stepping.replay import replay, split_stored, stored_arrays
from app.stepping.working_sets import WorkingSet, WorkingSetCache

__all__ = [
    "SessionArrays",
    "StepWrite",
    "Stepped",
    "WorkingSet",
    "WorkingSetCache",
    "WorkingSets",
    "checkpoint_logged_sessions",
    "replay",
    "split_stored",
    "stored_arrays",
    "working_sets_of",
]
