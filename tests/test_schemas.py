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
from app.optim.catalog import CATALOG
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


def test_the_same_optimizer_and_schedule_types():
    assert set(OPTIMIZER_MODELS) == set(OPTIMIZER_TYPES) == {entry.type for entry in CATALOG}
    assert len(CATALOG) == len(OPTIMIZER_TYPES)
    assert set(SCHEDULE_MODELS) == set(SCHEDULE_TYPES)


def test_optimizer_models_are_named_as_the_catalog_names_them():
    titles = [entry.title for entry in CATALOG]
    assert len(set(titles)) == len(titles)
    assert [OPTIMIZER_MODELS[entry.type].__name__ for entry in CATALOG] == titles


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("muon", "ns_coefficients", [3.0, -4.0]),  # a triple
        ("adafactor", "eps", [1e-3]),  # a pair
        ("rprop", "etas", "0.5, 1.2"),
        ("lars", "weight_decay_mask", "yes"),
        ("prodigy", "slice_p", 1.5),
        ("muon", "adjust_lr_fn", "sideways"),
        ("dog", "init_eta", "auto"),
        ("custom", "momentum", {"dampening": 0.1}),  # beta is required
    ],
)
def test_new_types_check_field_types_and_name_the_field(kind, field, value):
    with pytest.raises(ValidationError) as raised:
        SessionConfig.model_validate({"optimizer": {"type": kind, field: value}})
    locations = [error["loc"] for error in raised.value.errors()]
    assert all(location[:3] == ("optimizer", kind, field) for location in locations), locations


def test_options_take_null_where_the_reference_does():
    spec = {"type": "prodigy", "growth_rate": None, "beta3": None}
    assert SessionConfig.model_validate({"optimizer": spec}).optimizer.growth_rate is None
    adafactor = {"type": "adafactor", "eps": [None, 1e-3]}
    assert SessionConfig.model_validate({"optimizer": adafactor}).optimizer.eps == (None, 1e-3)


def test_a_group_holds_a_whole_optimizer_spec_or_overrides():
    config = SessionConfig.model_validate(
        {
            "optimizer": {"type": "adamw"},
            "groups": [
                {"match": ["*.weight"], "optimizer": {"type": "muon", "lr": 0.02}},
                {"match": ["*.bias"], "lr": 0.1},
            ],
        }
    ).model_dump(mode="json")
    own, overrides = config["groups"]
    assert own["optimizer"] == {**optimizer_defaults("muon"), "type": "muon", "lr": 0.02}
    assert overrides == {"match": ["*.bias"], "lr": 0.1}  # no `optimizer: null` stored
    with pytest.raises(ValidationError) as raised:
        group = {"match": ["w"], "optimizer": {"type": "x"}}
        SessionConfig.model_validate({"optimizer": {"type": "adamw"}, "groups": [group]})
    assert raised.value.errors()[0]["loc"] == ("groups", 0, "optimizer")


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
