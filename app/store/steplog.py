"""The step log: what a step must leave on disk, and how θ and state are rebuilt from it.

When a step is acknowledged, the database must hold enough to know θ and the optimizer's state
after it. Rewriting all of them does that, at the cost of θ + state bytes per step (Adam: three
times the parameters). The gradient is enough too: the core is deterministic, so the state
after a step is the core applied to the state before it and to the step's inputs — the
gradient as the core received it (in the session's dtype), `t`, the schedule's state, the
configuration, the loss and `partial`. So a step may instead append those inputs to the
session's log, and the arrays are written in full (a *checkpoint*) only now and then.

The log lives beside the checkpoint, in the session's `session_arrays` rows, under keys that no
slot can have (slot names are identifiers):

- `~log/<version>`: the step's inputs other than the gradient, as JSON (`dtype` = "json");
- `~log/<version>/<tensor>`: the gradient of each tensor the step carried (raw bytes, as θ);
  for a sparse row gradient its values, and its rows (int64) under `~log/<version>#rows/<tensor>`
  (`#` sorts before `/` and ends no version, so the rows stay apart from every tensor's key;
  `LoggedStep.rows`, which the stepping layer joins to the values again).

`<version>` is the session's version after the step, zero-padded, so keys sort in step order.
The store reads the checkpoint and the log in one statement (one snapshot: `ArrayStore.read`)
and writes a checkpoint, which drops the log, or appends an entry; with spread checkpoints
(`app.stepping.spread`) it rewrites some chunks, each recording the version it was written at,
and drops the entries every chunk is past (`drop_log_through`). An entry then also keeps the
0-d slots of its tensors as they were before the step (`LoggedStep.scalars`), so that a chunk
written at an earlier version than its tensor's first can replay it. Replaying the log onto the
checkpoint is the stepping layer's (`app.stepping.replay`), which runs the optimizer core: the
store keeps rows and bytes and never runs it. A logged step's configuration travels with it,
so a configuration changed between two logged steps replays correctly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.store import codec

LOG_PREFIX = "~log/"
"""Keys of log rows start with this; a slot name never does."""
ROWS_SUFFIX = "#rows"
"""`~log/<version>#rows/<tensor>`: the rows of a logged sparse row gradient."""
META_DTYPE = "json"
_VERSION_DIGITS = 20


class CorruptLogError(RuntimeError):
    """The log does not replay onto its checkpoint (a bug, or rows changed by hand)."""


@dataclass(frozen=True)
class LoggedStep:
    """One applied step's inputs, as the core received them (enough to apply it again)."""

    version: int
    """The session's version after the step."""
    step: int
    """t before the step."""
    names: list[str]
    """The session's tensors, in its order (the order the core sums norms in)."""
    config: dict[str, Any]
    """The core's configuration the step ran with."""
    schedule_state: dict[str, float]
    """The schedule's state before the step."""
    loss: float | None
    partial: bool
    gradients: dict[str, np.ndarray]
    """The gradients by tensor, in the session's dtype, before the core used them (for a sparse
    row gradient: its values)."""
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    """The rows of the tensors whose gradient was sparse rows (int64), by tensor."""
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    """The 0-d slots of the tensors it carried as they were before the step, by stored key
    (`<slot>/<tensor>`: the per-tensor `step` count, NAdam's `mu_product`, …), so that a part
    of a tensor checkpointed at another version than the rest can replay this step apart
    (`app.stepping.replay`). Kept in the entry's JSON, each as its dtype and hex bytes."""

    @property
    def nbytes(self) -> int:
        """The bytes its gradients take in the log."""
        arrays = [*self.gradients.values(), *self.rows.values()]
        return sum(array.nbytes for array in arrays)


def is_log_key(key: str) -> bool:
    return key.startswith(LOG_PREFIX)


def entry_key(version: int) -> str:
    """The key of a logged step's own row; its gradients' keys extend it (`…/<tensor>`)."""
    return f"{LOG_PREFIX}{version:0{_VERSION_DIGITS}d}"


def log_rows(entry: LoggedStep) -> list[dict[str, Any]]:
    """The `session_arrays` rows (key, dtype, shape, data) that keep `entry`."""
    base = entry_key(entry.version)
    meta = {
        "step": entry.step,
        "names": entry.names,
        "config": entry.config,
        "schedule_state": entry.schedule_state,
        # repr keeps NaN and ±Inf, which reduce_on_plateau treats unlike a missing loss
        "loss": None if entry.loss is None else repr(float(entry.loss)),
        "partial": entry.partial,
        "tensors": list(entry.gradients),
        "scalars": {
            key: [codec.dtype_name(value), bytes(codec.encode(value).data).hex()]
            for key, value in entry.scalars.items()
        },
    }
    rows = [{"key": base, "dtype": META_DTYPE, "shape": [], "data": orjson.dumps(meta)}]
    for name, gradient in entry.gradients.items():
        if name in entry.rows:
            rows.append(_array_row(f"{base}{ROWS_SUFFIX}/{name}", entry.rows[name]))
        rows.append(_array_row(f"{base}/{name}", gradient))
    return rows


def _array_row(key: str, array: np.ndarray) -> dict[str, Any]:
    encoded = codec.encode(array)
    return {"key": key, "dtype": encoded.dtype, "shape": encoded.shape, "data": encoded.data}


def read_log(rows: Iterable[tuple[str, str, list[int], bytes]]) -> list[LoggedStep]:
    """The logged steps in `rows` (key, dtype, shape, data), in step order."""
    metas: dict[str, dict[str, Any]] = {}
    tensors: dict[str, dict[str, np.ndarray]] = {}
    for key, dtype, shape, data in rows:
        base, _, tensor = key.partition("/")[2].partition("/")
        if not tensor:
            metas[base] = orjson.loads(data)
        else:
            tensors.setdefault(base, {})[tensor] = codec.decode(dtype, shape, data, writable=True)
    entries = []
    for base in sorted(metas):
        meta = metas[base]
        given = tensors.get(base, {})
        if set(given) != set(meta["tensors"]):
            raise CorruptLogError(f"log entry {base} lacks some of its gradients")
        rows = tensors.get(base + ROWS_SUFFIX, {})
        if not set(rows) <= set(given):
            raise CorruptLogError(f"log entry {base} has rows of a tensor without values")
        entries.append(
            LoggedStep(
                version=int(base),
                step=meta["step"],
                names=meta["names"],
                config=meta["config"],
                schedule_state=meta["schedule_state"],
                loss=None if meta["loss"] is None else float(meta["loss"]),
                partial=meta["partial"],
                gradients={name: given[name] for name in meta["tensors"]},
                rows=rows,
                scalars={
                    key: codec.decode(dtype, [], bytes.fromhex(data), writable=True)
                    for key, (dtype, data) in meta.get("scalars", {}).items()
                },
            )
        )
    return entries
