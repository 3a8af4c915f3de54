"""The new types' invalid values: `HyperParameterError` naming the field by its dotted path
(torch's own checks, a little stricter where torch accepts nonsense), and every field typed."""

import typing

import pytest

from app.optim import HyperParameterError, Optimizer, optimizer_defaults
from app.optim.optimizers import OPTIMIZERS

NEW_TYPES = [
    "adafactor",
    "muon",
    "rprop",
    "asgd",
    "sparse_adam",
    "yogi",
    "lamb",
    "lars",
    "adabelief",
    "novograd",
    "adan",
]

INVALID = [
    ({"type": "adafactor", "lr": -1}, "lr"),
    ({"type": "adafactor", "beta2_decay": 0.5}, "beta2_decay"),
    ({"type": "adafactor", "eps": [None]}, "eps"),
    ({"type": "adafactor", "eps": [-1.0, 1e-3]}, "eps"),
    ({"type": "adafactor", "eps": [None, "x"]}, "eps"),
    ({"type": "adafactor", "d": 0.5}, "d"),
    ({"type": "adafactor", "weight_decay": -0.1}, "weight_decay"),
    ({"type": "muon", "momentum": 1.0}, "momentum"),
    ({"type": "muon", "nesterov": "yes"}, "nesterov"),
    ({"type": "muon", "ns_coefficients": [1.0, 2.0]}, "ns_coefficients"),
    ({"type": "muon", "ns_coefficients": [1.0, 2.0, float("inf")]}, "ns_coefficients"),
    ({"type": "muon", "ns_steps": 100}, "ns_steps"),
    ({"type": "muon", "ns_steps": 2.5}, "ns_steps"),
    ({"type": "muon", "eps": 0.0}, "eps"),
    ({"type": "muon", "adjust_lr_fn": "sqrt"}, "adjust_lr_fn"),
    ({"type": "muon", "weight_decay": -1}, "weight_decay"),
    ({"type": "rprop", "etas": [1.2, 0.5]}, "etas"),
    ({"type": "rprop", "etas": [0.5, 1.0]}, "etas"),
    ({"type": "rprop", "step_sizes": [1.0, 0.1]}, "step_sizes"),
    ({"type": "rprop", "step_sizes": [-1.0, 0.1]}, "step_sizes"),
    ({"type": "rprop", "weight_decay": 0.1}, "weight_decay"),
    ({"type": "asgd", "lambd": -1}, "lambd"),
    ({"type": "asgd", "alpha": -0.5}, "alpha"),
    ({"type": "asgd", "t0": -1}, "t0"),
    ({"type": "sparse_adam", "lr": 0.0}, "lr"),
    ({"type": "sparse_adam", "eps": 0.0}, "eps"),
    ({"type": "sparse_adam", "betas": [0.9, 1.0]}, "betas"),
    ({"type": "yogi", "b1": 1.0}, "b1"),
    ({"type": "yogi", "eps": -1}, "eps"),
    ({"type": "yogi", "betas": [0.9, 0.99]}, "betas"),
    ({"type": "lamb", "b2": -0.1}, "b2"),
    ({"type": "lamb", "eps_root": -1}, "eps_root"),
    ({"type": "lamb", "mask": "all"}, "mask"),
    ({"type": "lars", "trust_coefficient": -1}, "trust_coefficient"),
    ({"type": "lars", "momentum": 1.5}, "momentum"),
    ({"type": "lars", "weight_decay_mask": None}, "weight_decay_mask"),
    ({"type": "lars", "trust_ratio_mask": 1}, "trust_ratio_mask"),
    ({"type": "adabelief", "nesterov": 0}, "nesterov"),
    ({"type": "adabelief", "eps_root": -1e-16}, "eps_root"),
    ({"type": "novograd", "weight_decay": -1}, "weight_decay"),
    ({"type": "adan", "b3": 1.0}, "b3"),
    ({"type": "adan", "mask": 1}, "mask"),
]


@pytest.mark.parametrize(("spec", "field"), INVALID)
def test_invalid_values_name_the_field(spec, field):
    with pytest.raises(HyperParameterError) as raised:
        Optimizer({"optimizer": spec}, ["w"])
    assert raised.value.field == f"optimizer.{field}"


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_every_type_takes_maximize_and_its_defaults(kind):
    defaults = optimizer_defaults(kind)
    assert defaults["maximize"] is False
    assert "lr" in defaults
    Optimizer({"optimizer": {"type": kind, **defaults}}, ["w"])


@pytest.mark.parametrize("kind", NEW_TYPES)
def test_every_field_is_typed_and_has_a_default(kind):
    """The wire models are derived from these signatures: each field needs a type and a
    default that the type admits (a tuple for a pair, None only where the type allows it)."""
    hints = typing.get_type_hints(OPTIMIZERS[kind])
    for name, default in optimizer_defaults(kind).items():
        hint = hints[name]
        assert hint is not typing.Any, name
        if default is None:
            assert type(None) in typing.get_args(hint), name
        elif isinstance(default, list):
            assert typing.get_origin(hint) is tuple, name
            assert len(typing.get_args(hint)) == len(default), name
