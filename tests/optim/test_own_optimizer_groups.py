"""Groups that hold an optimizer of their own (optax's `multi_transform`), what the core tells
about each tensor's group, Muon's refusal of tensors that are not 2-D, and the eval view."""

import numpy as np
import pytest

from app.optim import (
    HyperParameterError,
    Optimizer,
    OptimizerState,
    UnsupportedTensor,
    optimizer_defaults,
)

NAMES = ["encoder.weight", "encoder.bias", "head.weight", "head.bias"]
MIXED = {
    "optimizer": {"type": "adamw", "lr": 3e-3},
    "groups": [
        {"match": ["*.weight"], "optimizer": {"type": "muon", "lr": 0.02}},
        {"match": ["head.bias"], "lr": 1e-2},
    ],
}


def model(dtype=np.float64):
    rng = np.random.default_rng(3)
    shapes = {
        "encoder.weight": (5, 4),
        "encoder.bias": (5,),
        "head.weight": (2, 5),
        "head.bias": (2,),
    }
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}


def test_each_tensor_takes_its_groups_type_and_hyperparameters():
    optimizer = Optimizer(MIXED, NAMES)
    assert optimizer.hyperparameters_of("encoder.weight") == {
        **optimizer_defaults("muon"),
        "type": "muon",
        "lr": 0.02,
    }
    assert optimizer.hyperparameters_of("encoder.bias")["type"] == "adamw"
    assert optimizer.hyperparameters_of("head.bias") == {
        **optimizer_defaults("adamw"),
        "type": "adamw",
        "lr": 1e-2,
    }
    assert optimizer.group_of["head.weight"].spec_path == "groups.0.optimizer"
    assert optimizer.group_of["head.bias"].spec_path == "optimizer"


def test_each_tensor_keeps_its_own_optimizers_slots_and_they_round_trip():
    optimizer = Optimizer(MIXED, NAMES)
    params = model()
    state = optimizer.init(params)
    rng = np.random.default_rng(0)
    for _ in range(3):
        optimizer.step(params, state, {n: rng.standard_normal(v.shape) for n, v in params.items()})
    assert set(state.slots["encoder.weight"]) == {"momentum_buffer", "step"}
    assert set(state.slots["encoder.bias"]) == {"exp_avg", "exp_avg_sq", "step"}
    copy = OptimizerState.from_arrays(state.step, state.to_arrays(), state.schedule)
    for name, slots in state.slots.items():
        assert copy.slots[name].keys() == slots.keys()
        for slot, value in slots.items():
            np.testing.assert_array_equal(copy.slots[name][slot], value)


def test_fresh_slots_for_one_tensor_are_its_groups():
    optimizer = Optimizer(MIXED, NAMES)
    fresh = optimizer.fresh_slots("head.weight", np.ones((2, 5)))
    assert set(fresh) == {"momentum_buffer", "step"} and int(fresh["step"]) == 0
    fresh = optimizer.fresh_slots("head.bias", np.ones(2))
    assert set(fresh) == {"exp_avg", "exp_avg_sq", "step"}


INVALID = [
    (
        [{"match": ["*"], "optimizer": {"type": "nope"}}],
        "groups.0.optimizer.type",
    ),
    (
        [{"match": ["*"], "optimizer": {"type": "muon", "betas": [0.9, 0.9]}}],
        "groups.0.optimizer.betas",
    ),
    ([{"match": ["*"], "optimizer": {"lr": 0.1}}], "groups.0.optimizer.type"),
    ([{"match": ["*"], "optimizer": "muon"}], "groups.0.optimizer"),
    (
        [{"match": ["*.weight"], "optimizer": {"type": "muon"}, "lr": 0.1}],
        "groups.0.lr",
    ),
    (
        [
            {"match": ["*.weight"], "optimizer": {"type": "muon"}},
            {"match": ["head.*"], "lr": 0.1},
        ],
        "groups.1.match",
    ),
    (
        [
            {"match": ["head.*"], "lr": 0.1},
            {"match": ["head.weight"], "optimizer": {"type": "sgd"}},
        ],
        "groups.1.match",
    ),
    ([{"match": ["*"], "optimizer": {"type": "lamb", "b3": 0.9}}], "groups.0.optimizer.b3"),
]


@pytest.mark.parametrize(("groups", "field"), INVALID)
def test_invalid_groups_name_the_field(groups, field):
    with pytest.raises(HyperParameterError) as raised:
        Optimizer({"optimizer": {"type": "adamw"}, "groups": groups}, NAMES)
    assert raised.value.field == field


def test_two_types_on_one_tensor_name_the_tensor_and_both_groups():
    groups = [
        {"match": ["*.weight"], "optimizer": {"type": "muon"}},
        {"match": ["head.*"], "lr": 0.1},
    ]
    with pytest.raises(
        HyperParameterError, match=r"groups\.0 \(muon\) and groups\.1 \(adamw\)"
    ) as raised:
        Optimizer({"optimizer": {"type": "adamw"}, "groups": groups}, NAMES)
    assert raised.value.extras == {"field": "groups.1.match", "tensor": "head.weight"}


def test_groups_of_the_same_type_may_overlap_and_the_first_wins():
    groups = [
        {"match": ["head.*"], "optimizer": {"type": "sgd", "lr": 0.5}},
        {"match": ["*.bias"], "optimizer": {"type": "sgd", "lr": 0.1}},
    ]
    optimizer = Optimizer({"optimizer": {"type": "sgd"}, "groups": groups}, NAMES)
    assert optimizer.hyperparameters_of("head.bias")["lr"] == 0.5
    assert optimizer.hyperparameters_of("encoder.bias")["lr"] == 0.1


@pytest.mark.parametrize(
    ("config", "tensor", "field"),
    [
        ({"optimizer": {"type": "muon"}}, "encoder.bias", "optimizer.type"),
        (
            {
                "optimizer": {"type": "adamw"},
                "groups": [{"match": ["encoder.*"], "optimizer": {"type": "muon"}}],
            },
            "encoder.bias",
            "groups.0.optimizer.type",
        ),
    ],
)
def test_muon_refuses_a_tensor_that_is_not_2d_naming_it(config, tensor, field):
    optimizer = Optimizer(config, NAMES)
    with pytest.raises(UnsupportedTensor, match="2-D") as raised:
        optimizer.init(model())
    assert raised.value.tensor == tensor
    assert raised.value.extras == {"tensor": tensor, "field": field}
    with pytest.raises(UnsupportedTensor):
        optimizer.fresh_slots(tensor, np.ones(5))


def test_weights_to_evaluate_are_theta_where_no_block_defines_them():
    optimizer = Optimizer(MIXED, NAMES)
    params = model()
    state = optimizer.init(params)
    optimizer.step(params, state, {n: np.ones_like(v) for n, v in params.items()})
    for name, weights in optimizer.eval_params(params, state).items():
        assert weights is params[name]


def test_weights_to_evaluate_mix_asgds_average_and_theta_by_group():
    config = {
        "optimizer": {"type": "sgd", "lr": 0.1},
        "groups": [{"match": ["encoder.*"], "optimizer": {"type": "asgd", "lr": 0.1, "t0": 0}}],
    }
    optimizer = Optimizer(config, NAMES)
    params = model()
    state = optimizer.init(params)
    rng = np.random.default_rng(1)
    for _ in range(5):
        optimizer.step(params, state, {n: rng.standard_normal(v.shape) for n, v in params.items()})
    weights = optimizer.eval_params(params, state)
    assert weights["head.weight"] is params["head.weight"]
    assert weights["encoder.weight"] is state.slots["encoder.weight"]["ax"]
    assert not np.array_equal(weights["encoder.weight"], params["encoder.weight"])


def test_a_state_without_the_average_yet_evaluates_at_theta():
    """A configuration changed to ASGD mid-run: until a step makes `ax`, θ is evaluated."""
    params = model()
    state = Optimizer({"optimizer": {"type": "sgd"}}, NAMES).init(params)
    asgd = Optimizer({"optimizer": {"type": "asgd"}}, NAMES)
    for name, weights in asgd.eval_params(params, state).items():
        assert weights is params[name]


@pytest.mark.parametrize(
    ("base", "own"),
    [
        ({"type": "prodigy"}, {"type": "adamw"}),
        ({"type": "adamw"}, {"type": "schedule_free_adamw"}),
        ({"type": "dog"}, {"type": "dog"}),
    ],
)
def test_a_whole_step_rule_shares_its_session_with_no_group_optimizer(base, own):
    config = {"optimizer": base, "groups": [{"match": ["head.*"], "optimizer": own}]}
    with pytest.raises(HyperParameterError) as raised:
        Optimizer(config, NAMES)
    assert raised.value.field == "groups.0.optimizer.type"
    assert "learning-rate-free" in raised.value.detail
