"""`POST /v1/schedules/preview` over real HTTP, held to the core's `schedule_lrs`."""

from __future__ import annotations

import math

import pytest

from app.optim import SCHEDULE_TYPES, schedule_lrs
from app.schemas import PREVIEW_MAX_STEPS
from tests.support import post_json

COSINE = {"type": "cosine", "total_steps": 40, "min_lr": 0.001}
SCHEDULES = {
    "constant": {"type": "constant"},
    "step": {"type": "step", "step_size": 7, "gamma": 0.5},
    "multistep": {"type": "multistep", "milestones": [5, 20, 21]},
    "exponential": {"type": "exponential", "gamma": 0.95},
    "inverse_sqrt": {"type": "inverse_sqrt"},
    "linear": {"type": "linear", "start_factor": 0.1, "total_steps": 12},
    "polynomial": {"type": "polynomial", "total_steps": 30, "power": 2.0},
    "cosine": COSINE,
    "cosine_restarts": {"type": "cosine_restarts", "t_0": 8, "t_mult": 2},
    "one_cycle": {"type": "one_cycle", "max_lr": 0.3, "total_steps": 50},
    "noam": {"type": "noam", "d_model": 512, "warmup_steps": 10},
    "piecewise_constant": {
        "type": "piecewise_constant",
        "boundaries": [10, 30],
        "values": [0.1, 0.01, 0.001],
    },
    "warmup": {"type": "warmup", "warmup_steps": 10, "then": COSINE},
    "sequential": {
        "type": "sequential",
        "schedules": [
            {"type": "linear", "start_factor": 0.01, "total_steps": 10},
            {"type": "warmup", "warmup_steps": 5, "then": {"type": "exponential", "gamma": 0.9}},
            COSINE,
        ],
        "milestones": [10, 25],
    },
    "reduce_on_plateau": {"type": "reduce_on_plateau", "patience": 2},
}


def test_every_schedule_type_is_previewed():
    assert set(SCHEDULES) == SCHEDULE_TYPES


def preview(server, body: dict):
    with server.client() as client:
        return post_json(client, "/v1/schedules/preview", body)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_preview_equals_the_cores_rates(module_app, name):
    body = {"schedule": SCHEDULES[name], "lr": 0.05, "steps": 60}
    response = preview(module_app, body)
    assert response.status_code == 200, response.text
    rates = response.json()["lr"]
    assert rates == schedule_lrs(SCHEDULES[name], 0.05, 60)
    assert len(rates) == 60


def test_defaults_are_the_sessions_and_lr_defaults_to_one(module_app):
    response = preview(module_app, {"schedule": {"type": "step", "step_size": 2}, "steps": 5})
    assert response.status_code == 200, response.text
    assert response.json()["lr"] == schedule_lrs({"type": "step", "step_size": 2}, 1.0, 5)
    assert response.json()["lr"] == pytest.approx([0.1 ** (t // 2) for t in range(5)])  # γ^⌊t/2⌋


def test_largest_preview_is_served(module_app):
    response = preview(module_app, {"schedule": COSINE, "lr": 1.0, "steps": PREVIEW_MAX_STEPS})
    assert response.status_code == 200
    assert len(response.json()["lr"]) == PREVIEW_MAX_STEPS


def test_rates_beyond_a_float_are_null(module_app):
    huge = {"schedule": {"type": "constant"}, "lr": 1e308, "steps": 3}
    assert preview(module_app, huge).json()["lr"] == [1e308] * 3
    warmup = {"type": "warmup", "warmup_steps": 2}
    rates = schedule_lrs(warmup, 1.7e308, 3)
    assert not math.isfinite(rates[1])  # (t+1)·lr overflows before the division by 2
    body = {"schedule": warmup, "lr": 1.7e308, "steps": 3}
    assert preview(module_app, body).json()["lr"] == [rates[0], None, rates[2]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "schedule": {
                    "type": "warmup",
                    "warmup_steps": 5,
                    "then": {"type": "cosine", "total_steps": 0},
                },
                "steps": 3,
            },
            "schedule.then.total_steps",
        ),
        (
            {
                "schedule": {"type": "sequential", "schedules": [COSINE], "milestones": [3]},
                "steps": 3,
            },
            "schedule.milestones",
        ),
        ({"schedule": COSINE, "lr": -1.0, "steps": 3}, "lr"),
        ({"schedule": {"type": "exponential", "gamma": 1.5}, "steps": 3}, "schedule.gamma"),
    ],
    ids=["nested-field", "sequential-milestones", "negative-lr", "growing-exponential"],
)
def test_invalid_values_are_a_422_naming_the_field(module_app, body, field):
    response = preview(module_app, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"schedule": COSINE, "steps": 0}, ["body", "steps"]),
        ({"schedule": COSINE, "steps": PREVIEW_MAX_STEPS + 1}, ["body", "steps"]),
        ({"schedule": COSINE}, ["body", "steps"]),
        ({"schedule": {"type": "wobbly"}, "steps": 3}, ["body", "schedule"]),
        ({"schedule": {"type": "cosine", "total_steps": 5, "warp": 1}, "steps": 3}, None),
        ({"schedule": COSINE, "steps": 3, "extra": True}, ["body", "extra"]),
    ],
    ids=["zero-steps", "too-many-steps", "no-steps", "unknown-type", "unknown-field", "extra"],
)
def test_invalid_bodies_are_a_422_naming_the_place(module_app, body, location):
    response = preview(module_app, body)
    assert response.status_code == 422
    locations = [error["loc"] for error in response.json()["errors"]]
    if location is None:  # the unknown field, inside the chosen schedule type
        assert any(loc[-1] == "warp" for loc in locations), locations
    else:
        assert any(loc[: len(location)] == location for loc in locations), locations


def test_malformed_json_is_a_400(module_app):
    with module_app.client() as client:
        response = client.post(
            "/v1/schedules/preview",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert response.json()["type"] == "/problems/malformed-body"
