"""A session's whole run exported, and an export imported (checked in full first)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from optaas_state import STEP_SLOT
from sqlalchemy.orm import Session

from app.errors import InvalidContent
from app.exports import SessionState
from app.optim import HyperParameterError, Optimizer, OptimizerState
from app.service.auth import authorized_record
from app.service.records import Created, core_config, split_arrays, tensor_names
from app.service.sessions import add_session, created_session
from app.stepping import SessionArrays
from app.store.repository import SessionRepository
from app.tensors import SINGLE_TENSOR_NAME, Layout

PLATEAU_BEST = "best"
"""`reduce_on_plateau`'s best loss: absent from its state until a loss improves on nothing."""


def export_state(db: Session, session_id: str, token: str) -> SessionState:
    """The session's whole run — config, t, θ, every slot — as one consistent snapshot (the
    session is locked while it is read, so no step lands between its row and its arrays).
    Pending accumulated gradients are not part of it."""
    repository = SessionRepository(db)
    record = authorized_record(repository, session_id, token, for_update=True)
    params, slots = split_arrays(record, SessionArrays(db).load(record.id, writable=True))
    state = OptimizerState.from_arrays(record.step, slots, record.schedule_state)
    optimizer = Optimizer(core_config(record.config), tensor_names(record))
    return SessionState(
        id=str(record.id),
        name=record.name,
        dtype=record.dtype,
        layout=Layout(record.layout),
        tensors=tensor_names(record),
        config=record.config,
        step=record.step,
        schedule_state=record.schedule_state,
        last_loss=record.last_loss,
        params=params,
        slots={name: state.slots.get(name, {}) for name in params},
        globals=state.globals,
        rates=[
            optimizer.schedule.rate(record.step, group.lr, record.schedule_state)
            for group in optimizer.groups
        ],
    )


def import_session(db: Session, imported: SessionState) -> Created:
    """A new session (new id and token) that continues the exported run exactly.

    Everything is checked before anything is stored (422 naming what is wrong): the config as a
    creation's (`config.…` fields), the tensors (θ for each name of `tensors`, in the export's
    dtype, finite), and for each tensor exactly the slots its optimizer keeps — names, shapes,
    dtypes (`step` an int64 from 0 to t), finite values — and the schedule's state. A tensor
    given as `{"step": 0}` alone starts with the slots of a new session's tensor.
    """
    names = imported.tensors
    if imported.layout is Layout.SINGLE and names != [SINGLE_TENSOR_NAME]:
        raise InvalidContent(
            f"an export of layout 'single' has one tensor, named {SINGLE_TENSOR_NAME!r}",
            field="tensors",
        )
    _require_same_names(imported.params, names, "params", "θ")
    _require_same_names(imported.slots, names, "state", "state")
    try:
        optimizer = Optimizer(core_config(imported.config), names)
    except HyperParameterError as error:
        raise error.within("config") from None
    dtype = np.dtype(imported.dtype)
    params = {name: imported.params[name] for name in names}
    for name, array in params.items():
        _check_array(imported, imported.param_field(name), name, array, array.shape, dtype)
    # One tensor's fresh slots at a time: checking a large model's state never holds a second
    # copy of all of it.
    slots = {
        name: _imported_slots(imported, name, optimizer.fresh_slots(name, params[name]))
        for name in names
    }
    _check_schedule_state(imported.schedule_state, optimizer.schedule.init())
    if imported.last_loss is not None and not math.isfinite(imported.last_loss):
        raise InvalidContent("last_loss must be a finite number or null", field="last_loss")
    globals_ = _imported_globals(imported, optimizer.global_templates(params))
    state = OptimizerState(imported.step, slots, dict(imported.schedule_state), globals_)
    record, token = add_session(
        SessionRepository(db),
        imported.name,
        imported.layout,
        params,
        imported.config,
        state,
        last_loss=imported.last_loss,
    )
    return created_session(record, optimizer.lr(state), token)


def _require_same_names(
    by_tensor: Mapping[str, Any], names: list[str], field: str, what: str
) -> None:
    missing = [name for name in names if name not in by_tensor]
    if missing:
        raise InvalidContent(
            f"the export has no {what} for tensor {missing[0]!r} (of its tensors {names[:20]})",
            field=field,
            tensor=missing[0],
        )
    unknown = [name for name in by_tensor if name not in set(names)]
    if unknown:
        raise InvalidContent(
            f"the export has {what} for {unknown[0]!r}, which is not one of its tensors",
            field=field,
            tensor=unknown[0],
        )


def _check_array(
    imported: SessionState,
    where: str,
    tensor: str,
    array: np.ndarray,
    shape: tuple[int, ...],
    dtype: np.dtype,
) -> None:
    """One array of an import: its shape, its dtype and finite values."""
    if array.shape != shape:
        raise InvalidContent(
            f"{where} has shape {list(array.shape)}, expected {list(shape)}",
            field=where,
            tensor=tensor,
            expected_shape=list(shape),
            got_shape=list(array.shape),
        )
    if array.dtype != dtype:
        raise InvalidContent(
            f"{where} is {array.dtype}, expected {dtype} (the export's dtype is {imported.dtype})",
            field=where,
            tensor=tensor,
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidContent(
            f"{where} holds NaN or ±Inf (a valid export has none)", field=where, tensor=tensor
        )


def _imported_slots(
    imported: SessionState, tensor: str, fresh: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The tensor's slots as imported, checked against `fresh` (what its chain starts with).

    A tensor exported as `{"step": 0}` alone has had no update (torch keeps no state for such a
    tensor): it gets `fresh`, as in a new session."""
    given = imported.slots[tensor]
    if set(given) == {STEP_SLOT} != set(fresh):
        _check_slots(imported, tensor, {STEP_SLOT: fresh[STEP_SLOT]})
        if int(given[STEP_SLOT]) == 0:
            return dict(fresh)
    _check_slots(imported, tensor, fresh)
    return dict(given)


def _check_slots(imported: SessionState, tensor: str, expected: Mapping[str, np.ndarray]) -> None:
    """The tensor's slots are exactly `expected`'s, shaped and typed alike, `step` in 0 … t."""
    given = imported.slots[tensor]
    optimizer = imported.config["optimizer"]["type"]
    for slot in expected:
        if slot not in given:
            raise InvalidContent(
                f"the state of {tensor!r} lacks {slot!r}, which this configuration's "
                f"{optimizer} keeps (slots: {sorted(expected)})",
                field=imported.slot_field(tensor, slot),
                tensor=tensor,
            )
    for slot in given:
        if slot not in expected:
            raise InvalidContent(
                f"the state of {tensor!r} has {slot!r}, which this configuration's {optimizer} "
                f"does not keep (slots: {sorted(expected)})",
                field=imported.slot_field(tensor, slot),
                tensor=tensor,
            )
    for slot, array in given.items():
        where = imported.slot_field(tensor, slot)
        _check_array(imported, where, tensor, array, expected[slot].shape, expected[slot].dtype)
        if slot == STEP_SLOT and not 0 <= int(array) <= imported.step:
            raise InvalidContent(
                f"{where} is {int(array)}: a tensor's update count must be from 0 to the "
                f"export's step ({imported.step})",
                field=where,
                tensor=tensor,
            )


def _imported_globals(
    imported: SessionState, templates: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The export's global quantities, checked against `templates` (those the configuration
    keeps once it has stepped: `Optimizer.global_templates`) — names, shapes, dtypes (JSON
    numbers are cast: a counter must be a whole number ≥ 0), finite values. One that is
    absent starts as at the first step (as a session's globals do: a Prodigy session that
    has seen only zero gradients has none yet)."""
    checked = {}
    for name, value in imported.globals.items():
        where = imported.global_field(name)
        template = templates.get(name)
        if template is None:
            kind = imported.config["optimizer"]["type"]
            raise InvalidContent(
                f"{where} is not a global quantity of this configuration's {kind} "
                f"(it keeps {sorted(templates)})",
                field=where,
            )
        if value.shape != template.shape:
            raise InvalidContent(
                f"{where} has shape {list(value.shape)}, expected {list(template.shape)}",
                field=where,
                expected_shape=list(template.shape),
                got_shape=list(value.shape),
            )
        checked[name] = _global_value(where, value, template.dtype)
    return checked


def _global_value(where: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """One global as `dtype`, cast from the number type it came in (JSON's numbers, or a
    file's dtype: a client's export read from JSON and sent as a file holds float64), a count
    from integers only. Finite, and a count ≥ 0."""
    if value.dtype.kind not in "iuf":
        raise InvalidContent(f"{where} must hold numbers, not {value.dtype}", field=where)
    if not np.isfinite(value).all():
        raise InvalidContent(f"{where} holds NaN or ±Inf (a valid export has none)", field=where)
    if dtype.kind == "i":
        if value.dtype.kind == "f" or (value < 0).any():
            raise InvalidContent(f"{where} is a count: a whole number ≥ 0", field=where)
        return value.astype(dtype)
    with np.errstate(over="ignore"):
        cast = value.astype(dtype)
    if not np.isfinite(cast).all():
        raise InvalidContent(f"{where} is beyond the range of {dtype}", field=where)
    return cast


def _check_schedule_state(given: Mapping[str, float], fresh: Mapping[str, float]) -> None:
    """`reduce_on_plateau`'s state: its counters (whole numbers ≥ 0) and optionally `best`
    (finite); {} for every other schedule."""
    allowed = {*fresh, PLATEAU_BEST} if fresh else set()
    for key, value in given.items():
        where = f"schedule_state.{key}"
        if key not in allowed:
            raise InvalidContent(
                f"{where} is not part of this schedule's state (it keeps {sorted(allowed)})",
                field=where,
            )
        counter = key in fresh
        if not math.isfinite(value) or (counter and (value < 0 or value != int(value))):
            kind = "a whole number ≥ 0" if counter else "a finite number"
            raise InvalidContent(f"{where} must be {kind}, not {value}", field=where)
    missing = sorted(set(fresh) - set(given))
    if missing:
        raise InvalidContent(
            f"schedule_state lacks {missing}, which this schedule keeps",
            field=f"schedule_state.{missing[0]}",
        )
