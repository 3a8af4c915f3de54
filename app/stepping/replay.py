"""The step log replayed: θ and state after the logged steps, from the checkpoint before them.

The core is deterministic, so a logged step (`app.store.steplog.LoggedStep`: the gradient as the
core received it, t, the schedule's state, the configuration, the loss, `partial`) applied to
the state before it gives the state after it, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import orjson
from optaas_state import PARAM_SLOT, is_accumulation_key

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
            params, state, logged_gradients(entry), loss=entry.loss, partial=entry.partial
        )
        if result.skipped:
            raise CorruptLogError(f"logged step to version {entry.version} did not apply")
        arrays.update(stored_arrays(params, state))


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
