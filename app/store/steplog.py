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
  (`#` sorts before `/` and ends no version, so the rows stay apart from every tensor's key).

`<version>` is the session's version after the step, zero-padded, so keys sort in step order.
Reading a session's arrays (`SessionRepository.load_arrays`) reads the checkpoint and the log in
one statement (one snapshot) and replays the log onto the checkpoint, so every reader sees θ
and state as of the last commit and no caller needs to know about the log; writing arrays
(`save_arrays`) writes a checkpoint, which drops the log. A logged step's configuration travels
with it, so a configuration changed between two logged steps replays correctly.

This is the one place the store uses the optimizer core: to replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from optaas_state import PARAM_SLOT, is_accumulation_key

from app.optim import Optimizer, OptimizerState, SparseRows
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
    gradients: dict[str, np.ndarray | SparseRows]
    """The gradients by tensor, in the session's dtype, before the core used them (dense, or
    sparse rows)."""

    @property
    def nbytes(self) -> int:
        """The bytes its gradients take in the log."""
        return sum(
            gradient.rows.nbytes + gradient.values.nbytes
            if isinstance(gradient, SparseRows)
            else gradient.nbytes
            for gradient in self.gradients.values()
        )


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
    }
    rows = [{"key": base, "dtype": META_DTYPE, "shape": [], "data": orjson.dumps(meta)}]
    for name, gradient in entry.gradients.items():
        if isinstance(gradient, SparseRows):
            rows.append(_array_row(f"{base}{ROWS_SUFFIX}/{name}", gradient.rows))
            gradient = gradient.values
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
        given: dict[str, np.ndarray | SparseRows] = dict(tensors.get(base, {}))
        if set(given) != set(meta["tensors"]):
            raise CorruptLogError(f"log entry {base} lacks some of its gradients")
        for name, rows in tensors.get(base + ROWS_SUFFIX, {}).items():
            if name not in given:
                raise CorruptLogError(f"log entry {base} has rows of {name!r} without values")
            given[name] = SparseRows(rows, given[name])
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
            )
        )
    return entries


def stored_arrays(params: Mapping[str, np.ndarray], state: OptimizerState) -> dict[str, np.ndarray]:
    """θ under `param/<tensor>` and every state slot under `<slot>/<tensor>`."""
    arrays = {f"{PARAM_SLOT}/{name}": array for name, array in params.items()}
    arrays.update(state.to_arrays())
    return arrays


def split_stored(
    arrays: Mapping[str, np.ndarray], names: Iterable[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Stored arrays → (θ by tensor name in the order of `names`, the state slots as keyed).

    The pending sums of an accumulation (`accum/<tensor>`) are neither."""
    prefix = f"{PARAM_SLOT}/"
    params = {name: arrays[prefix + name] for name in names}
    slots = {
        key: array
        for key, array in arrays.items()
        if not key.startswith(prefix) and not is_accumulation_key(key)
    }
    return params, slots


def replay(arrays: dict[str, np.ndarray], entries: Iterable[LoggedStep]) -> None:
    """Apply the logged steps, in order, to the checkpoint `arrays` (writable), in place.

    Each step runs through the core as it ran the first time (same inputs, same configuration,
    same order of tensors), so the result is the state the step left, bit for bit.
    """
    optimizers: dict[bytes, Optimizer] = {}
    for entry in entries:
        signature = orjson.dumps([entry.config, entry.names], option=orjson.OPT_SORT_KEYS)
        optimizer = optimizers.get(signature)
        if optimizer is None:
            optimizer = optimizers[signature] = Optimizer(entry.config, entry.names)
        params, slots = split_stored(arrays, entry.names)
        state = OptimizerState.from_arrays(entry.step, slots, entry.schedule_state)
        result = optimizer.step(
            params, state, entry.gradients, loss=entry.loss, partial=entry.partial
        )
        if result.skipped:
            raise CorruptLogError(f"logged step to version {entry.version} did not apply")
        arrays.update(stored_arrays(params, state))
