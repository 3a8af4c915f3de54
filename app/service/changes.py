"""Changes to a running session: PATCH (a JSON merge patch of its config) and fork,
with the state fitted to the new config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.errors import InvalidContent, OptimizerTypeChange
from app.optim import Optimizer, OptimizerState, build_schedule
from app.schemas import SessionConfig
from app.service.accumulation import pending_sums
from app.service.auth import authorized_record
from app.service.records import Created, SessionInfo, core_config, split_arrays, tensor_names
from app.service.sessions import add_session, created_session, current_info
from app.stepping import SessionArrays, stored_arrays
from app.store.history import HistoryRepository
from app.store.models import SessionRecord
from app.store.repository import SessionRepository
from app.tensors import Layout


def patch_session(
    db: Session,
    session_id: str,
    token: str,
    patch: Mapping[str, Any],
    *,
    guard: Callable[[SessionRecord], None] | None = None,
    history_max_records: int,
) -> SessionInfo:
    """Change the session's configuration (and name) mid-run; t, θ and the state are kept.

    `patch` is merged into the config (`merge_patch`), and the result is validated as a
    creation's would be. The optimizer's type cannot change (422 `optimizer-type-change`: fork
    instead). The state is fitted to the new config (`_fit_slots`), and the change is recorded
    in the history, all with the session locked: a step sees the old config or the new one.
    Pending accumulated gradients are kept; they join the step the new config applies.
    """
    repository = SessionRepository(db)
    record = authorized_record(repository, session_id, token, for_update=True)
    if guard is not None:
        guard(record)
    name, config = patched_config(record, patch, allow_type_change=False)
    old, new = {"name": record.name, **record.config}, {"name": name, **config}
    if new == old:
        return current_info(record)
    if _slots_may_differ(record.config, config):
        arrays = SessionArrays(db).load(record.id, writable=True)
        params, slots = split_arrays(record, arrays)
        state = OptimizerState.from_arrays(record.step, slots, {})
        _fit_slots(state, params, config, record.config)
        kept = {**stored_arrays(params, state), **pending_sums(arrays)}
        SessionArrays(db).save(record.id, kept)
    record.schedule_state = _fit_schedule_state(record.schedule_state, config)
    record.name, record.config = name, config
    repository.touch(record)
    HistoryRepository(db, history_max_records).record_change(
        record.id, step=record.step, old=old, new=new
    )
    return current_info(record)


def fork_session(
    db: Session,
    session_id: str,
    token: str,
    overrides: Mapping[str, Any],
    *,
    guard: Callable[[SessionRecord], None] | None = None,
    history_max_records: int,
) -> Created:
    """A new session (new id and token) with the source's θ, state, t and last loss.

    `overrides` change the copy's config as a PATCH would, its optimizer type included (slots
    the new optimizer keeps start fresh, the others are dropped). The source is locked while it
    is read, so the copy is of one step. Gradients pending in the source's accumulation are not
    copied. The fork's history starts with the change its overrides made, if any.
    """
    repository = SessionRepository(db)
    source = authorized_record(repository, session_id, token, for_update=True)
    if guard is not None:
        guard(source)
    name, config = patched_config(source, overrides, allow_type_change=True)
    params, slots = split_arrays(source, SessionArrays(db).load(source.id, writable=True))
    schedule_state = _fit_schedule_state(source.schedule_state, config)
    state = OptimizerState.from_arrays(source.step, slots, schedule_state)
    if _slots_may_differ(source.config, config):
        _fit_slots(state, params, config, source.config)
    layout = Layout(source.layout)
    record, new_token = add_session(
        repository, name, layout, params, config, state, last_loss=source.last_loss
    )
    HistoryRepository(db, history_max_records).record_change(
        record.id,
        step=record.step,
        old={"name": source.name, **source.config},
        new={"name": name, **config},
    )
    optimizer = Optimizer(core_config(config), list(params))
    return created_session(record, optimizer.lr(state), new_token)


def patched_config(
    record: SessionRecord, patch: Mapping[str, Any], *, allow_type_change: bool
) -> tuple[str | None, dict[str, Any]]:
    """The session's name and config with `patch` merged in, validated as a creation's config.

    Raises pydantic's `ValidationError` (locations as in the patch) for a config of the wrong
    shape, `HyperParameterError` for a bad value, `OptimizerTypeChange` for a new optimizer
    type unless `allow_type_change`.
    """
    given = dict(patch)
    name = given.pop("name", record.name)
    if "optimizer" in given:
        _check_optimizer_patch(record.config["optimizer"]["type"], given, allow_type_change)
    merged = merge_patch(record.config, given)
    config = SessionConfig.model_validate(merged).model_dump(mode="json")
    names = tensor_names(record)
    optimizer = Optimizer(core_config(config), names)  # the core's value checks
    if not allow_type_change:
        _check_types_kept(Optimizer(core_config(record.config), names), optimizer)
    return name, config


def _check_types_kept(old: Optimizer, new: Optimizer) -> None:
    """`OptimizerTypeChange` for the first tensor whose optimizer type the change would change —
    a group's optimizer of another type, or the tensor regrouped under another type: its slots
    would not carry over. A fork may do it."""
    for name in old.names:
        before, after = old.group_of[name], new.group_of[name]
        if before.type != after.type:
            raise OptimizerTypeChange(
                f"tensor {name!r} would change its optimizer type mid-run ({before.type!r} → "
                f"{after.type!r}): its state does not carry over. Fork the session with the new "
                'groups instead: POST /v1/sessions/{id}/fork with {"groups": […]}',
                field=f"{after.spec_path}.type",
                tensor=name,
            )


def _check_optimizer_patch(current: str, given: Mapping[str, Any], allow_type_change: bool) -> None:
    if given["optimizer"] is None:
        raise InvalidContent(
            'optimizer cannot be removed; give the fields to change, e.g. {"lr": 0.001}',
            field="optimizer",
        )
    wanted = given["optimizer"].get("type", current)
    if wanted != current and not allow_type_change:
        raise OptimizerTypeChange(
            f"the optimizer type cannot change mid-run ({current!r} → {wanted!r}): its state "
            "does not carry over. Fork the session with the new optimizer instead: "
            f'POST /v1/sessions/{{id}}/fork with {{"optimizer": {{"type": "{wanted}", …}}}}',
            field="optimizer.type",
        )


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` merged into `target`: RFC 7396 JSON merge patch, plus one rule for tagged objects.

    Objects are merged key by key, `null` removes a key (so its default applies), anything else
    replaces. An object whose `type` differs from the target's replaces it whole, its fields
    belonging to another type (a warm-up replaced by a cosine schedule keeps no warmup_steps).
    """
    merged = dict(target)
    for key, value in patch.items():
        current = merged.get(key)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            same_type = value.get("type", current.get("type")) == current.get("type")
            merged[key] = merge_patch(current if same_type else {}, value)
        elif isinstance(value, Mapping):
            merged[key] = merge_patch({}, value)
        else:
            merged[key] = value
    return merged


def _slots_may_differ(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return old["optimizer"] != new["optimizer"] or old.get("groups") != new.get("groups")


def _fit_slots(
    state: OptimizerState,
    params: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    old_config: Mapping[str, Any],
) -> None:
    """Give each tensor exactly the slots its optimizer under `config` keeps, and the session
    the global quantities it keeps, in place (`Optimizer.fit_slots`: kept ones stay, missing
    ones start fresh, unused ones go). Globals (the learning-rate-free types' d, distances,
    weight sums) of another optimizer type are dropped: they start as at a first step."""
    if config["optimizer"]["type"] != old_config["optimizer"]["type"]:
        state.globals = {}
    Optimizer(core_config(config), list(params)).fit_slots(state, params)


def _fit_schedule_state(
    schedule_state: Mapping[str, float], config: Mapping[str, Any]
) -> dict[str, float]:
    """The schedule's state under `config`: kept if the new schedule keeps the same state
    (reduce_on_plateau with other settings, or under a warm-up: its reductions and best loss
    carry over, so a new lr is reduced as many times), fresh otherwise."""
    fresh = build_schedule(config.get("schedule")).init()
    if fresh and set(fresh) <= set(schedule_state):
        return dict(schedule_state)
    return fresh
