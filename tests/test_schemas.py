"""The wire models against the optimizer core: same types, same defaults, same field names."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from app.optim import (
    OPTIMIZER_TYPES,
    SCHEDULE_TYPES,
    optimizer_defaults,
    optimizer_fields,
    schedule_defaults,
)
from app.optim.learning_rate_free import LEARNING_RATE_FREE
from app.schemas import CreateSession, OptimizerSpec, ScheduleSpec, SessionConfig


def models_by_type(union: object) -> dict[str, type[BaseModel]]:
    members = typing.get_args(typing.get_args(union)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


OPTIMIZER_MODELS = models_by_type(OptimizerSpec)
SCHEDULE_MODELS = models_by_type(ScheduleSpec)


def wire_defaults(model: type[BaseModel]) -> dict[str, object]:
    """Each field that has a default, with it, as JSON would carry it."""
    defaults = {}
    for name, info in model.model_fields.items():
        if name == "type" or info.is_required():
            continue
        value = info.default_factory() if info.default is PydanticUndefined else info.default
        defaults[name] = value.model_dump() if isinstance(value, BaseModel) else value
    return {name: list(v) if isinstance(v, tuple) else v for name, v in defaults.items()}


NOT_ON_THE_WIRE_YET = set(LEARNING_RATE_FREE)
"""The learning-rate-free family is in the core; its wire models come with the service (they
will be derived from the factories' signatures)."""


def test_the_same_optimizer_and_schedule_types():
    assert set(OPTIMIZER_MODELS) == set(OPTIMIZER_TYPES) - NOT_ON_THE_WIRE_YET
    assert set(SCHEDULE_MODELS) == set(SCHEDULE_TYPES)


@pytest.mark.parametrize("kind", sorted(OPTIMIZER_MODELS))
def test_optimizer_fields_and_defaults_are_the_cores(kind):
    model = OPTIMIZER_MODELS[kind]
    assert set(model.model_fields) - {"type"} == set(optimizer_fields(kind))
    assert wire_defaults(model) == optimizer_defaults(kind)


@pytest.mark.parametrize("kind", sorted(SCHEDULE_MODELS))
def test_schedule_defaults_are_the_cores(kind):
    assert wire_defaults(SCHEDULE_MODELS[kind]) == schedule_defaults(kind)


def test_unknown_fields_and_types_are_named():
    with pytest.raises(ValidationError) as raised:
        SessionConfig.model_validate(
            {"optimizer": {"type": "adam", "betaz": 1}, "schedule": {"type": "sometimes"}}
        )
    errors = {tuple(error["loc"]): error["type"] for error in raised.value.errors()}
    assert errors[("optimizer", "adam", "betaz")] == "extra_forbidden"
    assert errors[("schedule",)] == "union_tag_invalid"


@pytest.mark.parametrize("value", ["0.1", True, None, [0.1]])
def test_numbers_are_numbers(value):
    with pytest.raises(ValidationError):
        SessionConfig.model_validate({"optimizer": {"type": "sgd", "lr": value}})


def test_create_body_defaults():
    body = CreateSession.model_validate({"params": [1.0], "optimizer": {"type": "sgd"}})
    assert body.model_dump(mode="json", exclude={"params", "optimizer"}) == {
        "name": None,
        "dtype": "float32",
        "schedule": {"type": "constant"},
        "clip_grad_norm": None,
        "clip_grad_value": None,
        "nonfinite": "reject",
        "groups": None,
        "accumulate": 1,
    }


def test_nested_schedules_are_validated_recursively():
    body = SessionConfig.model_validate(
        {
            "optimizer": {"type": "sgd"},
            "schedule": {
                "type": "sequential",
                "schedules": [
                    {"type": "warmup", "warmup_steps": 2},
                    {"type": "exponential", "gamma": 0.9},
                ],
                "milestones": [2],
            },
        }
    )
    assert body.model_dump(mode="json")["schedule"]["schedules"][0]["then"] == {"type": "constant"}
    with pytest.raises(ValidationError):
        SessionConfig.model_validate(
            {
                "optimizer": {"type": "sgd"},
                "schedule": {"type": "warmup", "warmup_steps": 2, "then": {"type": "x"}},
            }
        )
