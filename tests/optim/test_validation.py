"""Invalid configurations raise `HyperParameterError` naming the field by its dotted path."""

import pytest

from app.optim import HyperParameterError, OptimError, Optimizer

INVALID = [
    ({}, "optimizer"),
    ({"optimizer": {"type": "sgd"}, "extra": 1}, "extra"),
    ({"optimizer": {"lr": 0.1}}, "optimizer.type"),
    ({"optimizer": {"type": "adamx"}}, "optimizer.type"),
    ({"optimizer": "adam"}, "optimizer"),
    ({"optimizer": {"type": "adam", "momentum": 0.9}}, "optimizer.momentum"),
    (
        {"optimizer": {"type": "adamw", "decoupled_weight_decay": False}},
        "optimizer.decoupled_weight_decay",
    ),
    ({"optimizer": {"type": "sgd", "lr": -0.1}}, "optimizer.lr"),
    ({"optimizer": {"type": "sgd", "lr": "fast"}}, "optimizer.lr"),
    ({"optimizer": {"type": "sgd", "lr": float("nan")}}, "optimizer.lr"),
    ({"optimizer": {"type": "adam", "eps": -1e-8}}, "optimizer.eps"),
    ({"optimizer": {"type": "adam", "weight_decay": -0.1}}, "optimizer.weight_decay"),
    ({"optimizer": {"type": "adamw", "weight_decay": -0.1}}, "optimizer.weight_decay"),
    ({"optimizer": {"type": "sgd", "momentum": -0.9}}, "optimizer.momentum"),
    ({"optimizer": {"type": "rmsprop", "momentum": -0.9}}, "optimizer.momentum"),
    ({"optimizer": {"type": "adam", "betas": [0.9, 1.0]}}, "optimizer.betas"),
    ({"optimizer": {"type": "adam", "betas": [-0.1, 0.9]}}, "optimizer.betas"),
    ({"optimizer": {"type": "nadam", "betas": [0.9]}}, "optimizer.betas"),
    ({"optimizer": {"type": "lion", "betas": 0.9}}, "optimizer.betas"),
    ({"optimizer": {"type": "sgd", "nesterov": True}}, "optimizer.nesterov"),
    (
        {"optimizer": {"type": "sgd", "nesterov": True, "momentum": 0.9, "dampening": 0.1}},
        "optimizer.nesterov",
    ),
    ({"optimizer": {"type": "adadelta", "rho": 1.5}}, "optimizer.rho"),
    ({"optimizer": {"type": "adadelta", "rho": -0.5}}, "optimizer.rho"),
    ({"optimizer": {"type": "adagrad", "accumulator": "max"}}, "optimizer.accumulator"),
    ({"optimizer": {"type": "adagrad", "lr_decay": -1}}, "optimizer.lr_decay"),
    ({"optimizer": {"type": "rmsprop", "init": "one"}}, "optimizer.init"),
    ({"optimizer": {"type": "rmsprop", "centered": "yes"}}, "optimizer.centered"),
    ({"optimizer": {"type": "adam", "maximize": 1}}, "optimizer.maximize"),
    ({"optimizer": {"type": "nadam", "momentum_decay": -1}}, "optimizer.momentum_decay"),
    ({"optimizer": {"type": "custom", "momentum": {"dampening": 0.1}}}, "optimizer.momentum.beta"),
    ({"optimizer": {"type": "custom", "momentum": {"beta": 1.0}}}, "optimizer.momentum.beta"),
    ({"optimizer": {"type": "custom", "momentum": {"beta": 0.9, "x": 1}}}, "optimizer.momentum.x"),
    ({"optimizer": {"type": "custom", "momentum": 0.9}}, "optimizer.momentum"),
    ({"optimizer": {"type": "custom", "sigma": {"kind": "rms"}}}, "optimizer.sigma.kind"),
    ({"optimizer": {"type": "custom", "sigma": {"kind": "ema"}}}, "optimizer.sigma.alpha"),
    (
        {"optimizer": {"type": "custom", "sigma": {"kind": "sum", "alpha": 0.9}}},
        "optimizer.sigma.alpha",
    ),
    (
        {"optimizer": {"type": "custom", "sigma": {"kind": "mean", "bias_correction": True}}},
        "optimizer.sigma.bias_correction",
    ),
    ({"optimizer": {"type": "custom", "sigma": {}}}, "optimizer.sigma.kind"),
    ({"optimizer": {"type": "sgd"}, "groups": [{"lr": 0.1}]}, "groups.0.match"),
    ({"optimizer": {"type": "sgd"}, "groups": [{"match": "w*"}]}, "groups.0.match"),
    ({"optimizer": {"type": "sgd"}, "groups": [{"match": [3]}]}, "groups.0.match.0"),
    (
        {"optimizer": {"type": "sgd"}, "groups": [{"match": ["w"], "betas": [0.9, 0.9]}]},
        "groups.0.betas",
    ),
    ({"optimizer": {"type": "sgd"}, "groups": [{"match": ["w"], "type": "adam"}]}, "groups.0.type"),
    (
        {"optimizer": {"type": "sgd"}, "groups": [{"match": ["a"]}, {"match": ["w"], "lr": -1}]},
        "groups.1.lr",
    ),
    (
        {"optimizer": {"type": "sgd"}, "groups": [{"match": ["w"], "nesterov": True}]},
        "groups.0.nesterov",
    ),
    ({"optimizer": {"type": "sgd"}, "groups": {"match": ["w"]}}, "groups"),
    ({"optimizer": {"type": "sgd"}, "clip_grad_norm": 0.0}, "clip_grad_norm"),
    ({"optimizer": {"type": "sgd"}, "clip_grad_norm": -1.0}, "clip_grad_norm"),
    ({"optimizer": {"type": "sgd"}, "clip_grad_value": 0}, "clip_grad_value"),
    ({"optimizer": {"type": "sgd"}, "nonfinite": "zero"}, "nonfinite"),
    (
        {"optimizer": {"type": "sgd"}, "schedule": {"type": "cosine", "total_steps": 0}},
        "schedule.total_steps",
    ),
]


@pytest.mark.parametrize(("config", "field"), INVALID, ids=[f for _, f in INVALID])
def test_invalid_configuration_names_its_field(config, field):
    with pytest.raises(HyperParameterError) as raised:
        Optimizer(config, ["w"])
    error = raised.value
    assert error.field == field
    assert error.extras == {"field": field}
    assert field in str(error)
    assert isinstance(error, OptimError) and isinstance(error, ValueError)


def test_unknown_field_error_lists_the_allowed_ones():
    with pytest.raises(HyperParameterError) as raised:
        Optimizer({"optimizer": {"type": "adam", "beta1": 0.9}}, ["w"])
    assert "betas" in raised.value.detail and "beta1" in raised.value.detail


def test_valid_edge_values_are_accepted():
    Optimizer({"optimizer": {"type": "adam", "betas": [0.0, 0.0], "lr": 0, "eps": 0}}, ["w"])
    Optimizer({"optimizer": {"type": "adadelta", "rho": 1.0}}, ["w"])
    Optimizer({"optimizer": {"type": "adadelta", "rho": 0.0}}, ["w"])
    Optimizer({"optimizer": {"type": "sgd", "nesterov": True, "momentum": 0.9}}, ["w"])
    Optimizer(
        {
            "optimizer": {"type": "sgd"},
            "groups": [{"match": ["w"], "momentum": 0.9, "nesterov": True}],
            "clip_grad_norm": 1e-3,
            "clip_grad_value": 5,
            "nonfinite": "skip",
            "schedule": None,
        },
        ["w"],
    )
