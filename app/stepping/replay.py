"""The step log replayed: θ and state after the logged steps, from the checkpoint before them.

The core is deterministic, so a logged step (`app.store.steplog.LoggedStep`: the gradient as the
core received it, t, the schedule's state, the configuration, the loss, `partial`) applied to
the state before it gives the state after it, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import orjson
from optaas_state import GLOBAL_PREFIX, PARAM_SLOT, array_key, is_accumulation_key, split_key

from app.optim import Optimizer, OptimizerState, SparseRows
from app.optim.base import Gradient, values_of
from app.store.steplog import CorruptLogError, LoggedStep


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


def replay(
    arrays: dict[str, np.ndarray],
    entries: Iterable[LoggedStep],
    written_at: Mapping[str, Sequence[int]] | None = None,
    chunk_bytes: Mapping[str, int] | None = None,
) -> bool:
    """Apply the logged steps, in order, to the checkpoint `arrays` (writable), in place.

    Each step runs through the core as it ran the first time (same inputs, same configuration,
    same order of tensors), so the result is the state the step left, bit for bit.

    A spread checkpoint wrote each chunk of an array at a version of its own (`written_at`: by
    key, each chunk's; 0, or no key, for a whole checkpoint's): a logged step applies to the
    chunks written before it only. A step that applies to every chunk runs as above; one that
    does not must be `replays_by_parts`, and runs per tensor over the runs of its chunks behind
    it (`_replay_parts`). Returns whether every entry replays by parts (a spread checkpoint may
    then follow them).
    """
    newest = max((max(written, default=0) for written in (written_at or {}).values()), default=0)
    optimizers: dict[bytes, Optimizer] = {}
    by_parts = True
    for entry in entries:
        signature = orjson.dumps([entry.config, entry.names], option=orjson.OPT_SORT_KEYS)
        optimizer = optimizers.get(signature)
        if optimizer is None:
            optimizer = optimizers[signature] = Optimizer(entry.config, entry.names)
        parts = replays_by_parts(optimizer, entry)
        by_parts = by_parts and parts
        if newest < entry.version:
            _replay_whole(optimizer, arrays, entry)
        elif parts:
            _replay_parts(optimizer, arrays, entry, written_at or {}, chunk_bytes or {})
        else:
            raise CorruptLogError(
                f"logged step to version {entry.version} applies to some chunks only, "
                "but does not replay by parts"
            )
    return by_parts


def replays_by_parts(optimizer: Optimizer, entry: LoggedStep) -> bool:
    """Whether the logged step can be applied to parts of its tensors apart: its rule is
    `Optimizer.piecewise` and no gradient came as sparse rows (a step of some rows)."""
    return optimizer.piecewise and not entry.rows


def _replay_whole(optimizer: Optimizer, arrays: dict[str, np.ndarray], entry: LoggedStep) -> None:
    params, slots = split_stored(arrays, entry.names)
    state = OptimizerState.from_arrays(entry.step, slots, entry.schedule_state)
    result = optimizer.step(
        params, state, logged_gradients(entry), loss=entry.loss, partial=entry.partial
    )
    if result.skipped:
        raise CorruptLogError(f"logged step to version {entry.version} did not apply")
    arrays.update(stored_arrays(params, state))


def _replay_parts(
    optimizer: Optimizer,
    arrays: dict[str, np.ndarray],
    entry: LoggedStep,
    written_at: Mapping[str, Sequence[int]],
    chunk_bytes: Mapping[str, int],
) -> None:
    """Apply `entry` to the chunks written before it, tensor by tensor: each run of such
    consecutive chunks is one call of the core on flat slices of θ, the gradient and the slots
    of θ's shape, with the tensor's 0-d slots as the entry logged them before the step — or,
    for the run from chunk 0, which holds them, the stored ones, which that run advances."""
    for name, gradient in entry.gradients.items():
        param_key = array_key(PARAM_SLOT, name)
        param = arrays[param_key]
        chunks = tuple(written_at.get(param_key, (0,)))
        keys = _state_keys(arrays, name)
        for key in keys:
            expected = chunks if arrays[key].ndim else chunks[:1]
            if tuple(written_at.get(key, (0,))) != expected:
                raise CorruptLogError(f"{key!r} was checkpointed apart from {param_key!r}")
        runs = _runs_before(chunks, entry.version)
        if runs == [(0, len(chunks))]:  # every chunk of it: the tensor whole
            slots = {split_key(key)[0]: arrays[key] for key in keys}
            slots.update(_scalars(arrays, entry, keys, own=True))
            state = OptimizerState(entry.step, {name: slots}, dict(entry.schedule_state))
            optimizer.step({name: param}, state, {name: gradient}, partial=True)
            continue
        elements = chunk_bytes.get(param_key, param.nbytes) // param.itemsize
        flat = {key: arrays[key].reshape(-1) for key in (param_key, *keys) if arrays[key].ndim}
        for first, last in runs:
            lo, hi = first * elements, min(last * elements, param.size)
            slots = {split_key(key)[0]: array[lo:hi] for key, array in flat.items()}
            slots.update(_scalars(arrays, entry, keys, own=first == 0))
            part = slots.pop(PARAM_SLOT)
            state = OptimizerState(entry.step, {name: slots}, dict(entry.schedule_state))
            optimizer.step({name: part}, state, {name: gradient.reshape(-1)[lo:hi]}, partial=True)


def _state_keys(arrays: Mapping[str, np.ndarray], name: str) -> list[str]:
    """The stored keys of tensor `name`'s slots (θ, accumulated sums and globals excluded)."""
    keys = []
    for key in arrays:
        if key.startswith(GLOBAL_PREFIX) or is_accumulation_key(key):
            continue
        slot, tensor = split_key(key)
        if tensor == name and slot != PARAM_SLOT:
            keys.append(key)
    return keys


def _runs_before(chunks: Sequence[int], version: int) -> list[tuple[int, int]]:
    """[first, last) of each run of consecutive chunks written before `version`."""
    runs: list[tuple[int, int]] = []
    for index, written in enumerate(chunks):
        if written >= version:
            continue
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def _scalars(
    arrays: Mapping[str, np.ndarray], entry: LoggedStep, keys: Iterable[str], *, own: bool
) -> dict[str, np.ndarray]:
    """The tensor's 0-d slots for one run: the stored arrays (`own`: the run holding them,
    which must find them as the entry logged them), else copies of the logged ones."""
    scalars = {}
    for key in keys:
        if arrays[key].ndim:
            continue
        logged = entry.scalars.get(key)
        if own:
            if logged is not None and not np.array_equal(arrays[key], logged):
                raise CorruptLogError(f"{key!r} is not at logged step {entry.version}'s start")
            scalars[split_key(key)[0]] = arrays[key]
        elif logged is None:
            raise CorruptLogError(f"logged step to version {entry.version} lacks {key!r}")
        else:
            scalars[split_key(key)[0]] = logged.copy()
    return scalars


def logged_gradients(entry: LoggedStep) -> dict[str, Gradient]:
    """A logged step's gradients as the core took them: the values of a tensor with logged
    rows joined to them again as `SparseRows`."""
    return {
        name: SparseRows(entry.rows[name], values) if name in entry.rows else values
        for name, values in entry.gradients.items()
    }


def loggable_gradients(
    gradients: Mapping[str, Gradient],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(values by tensor, rows by tensor of the sparse ones): gradients as the log keeps them."""
    values = {name: values_of(gradient) for name, gradient in gradients.items()}
    rows = {
        name: np.asarray(gradient.rows, np.int64)
        for name, gradient in gradients.items()
        if isinstance(gradient, SparseRows)
    }
    return values, rows
