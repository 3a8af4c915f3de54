"""The client's export conversions on their own, no server: exports (the `optaas-state/1` format,
`optaas_state`) ↔ torch.optim state dicts, and the export's JSON and safetensors forms.

The exports here are made from the optimizer core's state the way the service's `GET …/state`
makes them (its `rates` included), and imported the way the service imports them (a tensor
exported as `{"step": 0}` alone starts fresh), so "50 steps in the core, convert, 50 more in
torch equals 100 in the core" checks the client's conversion — which knows nothing of the core
— against the core itself; tests/test_client_run_management.py does the same through a server.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy
import torch
from optaas_client import (
    export_from_json,
    export_from_safetensors,
    export_from_torch,
    export_to_json,
    export_to_safetensors,
    torch_optimizer,
    torch_param_groups,
    torch_state_dict,
)

from app.optim import Optimizer, OptimizerState
from app.tensors import tensors_from_safetensors
from tests.support import random_arrays

SHAPES = {"w": (3, 2), "b": (2,)}
STEPS = 50

# optaas spec, torch class, torch settings: the same optimizer, with its options exercised.
TORCH_CASES = {
    "adam": (
        {"type": "adam", "lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
        torch.optim.Adam,
        {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True},
    ),
    "adamw": (
        {"type": "adamw", "lr": 0.01, "betas": [0.8, 0.99]},
        torch.optim.AdamW,
        {"lr": 0.01, "betas": (0.8, 0.99)},
    ),
    "rmsprop": (
        {"type": "rmsprop", "lr": 0.01, "momentum": 0.9, "centered": True},
        torch.optim.RMSprop,
        {"lr": 0.01, "momentum": 0.9, "centered": True},
    ),
    "adagrad": (
        {"type": "adagrad", "lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
        torch.optim.Adagrad,
        {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
    ),
    "sgd-momentum": (
        {"type": "sgd", "lr": 0.01, "momentum": 0.9, "dampening": 0.1},
        torch.optim.SGD,
        {"lr": 0.01, "momentum": 0.9, "dampening": 0.1},
    ),
}


def problem(seed=0, steps=2 * STEPS):
    rng = np.random.default_rng(seed)
    theta0 = random_arrays(rng, SHAPES, "float64")
    grads = [random_arrays(rng, SHAPES, "float64") for _ in range(steps)]
    return theta0, grads


class CoreSession:
    """The core as a session holds it, and its export as `GET …/state` writes it."""

    def __init__(self, config, params, state=None):
        self.config = {"schedule": {"type": "constant"}, **config}
        self.engine = Optimizer(self.config, list(params))
        self.params = {name: np.array(array) for name, array in params.items()}
        self.state = state if state is not None else self.engine.init(self.params)

    @classmethod
    def from_export(cls, export):
        config = {key: export["config"][key] for key in ("optimizer", "schedule", "groups")}
        slots = {
            tensor: {
                slot: np.asarray(value, np.int64) if slot == "step" else np.array(value)
                for slot, value in tensor_slots.items()
            }
            for tensor, tensor_slots in export["state"].items()
        }
        params = {name: np.array(value) for name, value in export["params"].items()}
        fresh = Optimizer(config, list(params)).init(params).slots
        for tensor, tensor_slots in slots.items():
            if set(tensor_slots) == {"step"} and int(tensor_slots["step"]) == 0:
                slots[tensor] = fresh[tensor]  # never stepped: what the service's import gives it
        state = OptimizerState(export["step"], slots, export["schedule_state"])
        return cls(config, params, state)

    def step(self, grads, partial=False):
        copies = {name: np.array(array) for name, array in grads.items()}
        self.engine.step(self.params, self.state, copies, partial=partial)

    def export(self, layout="named"):
        params = {name: array.copy() for name, array in self.params.items()}
        return {
            "format": "optaas-state/1",
            "id": "00000000-0000-4000-8000-000000000000",
            "name": "core",
            "dtype": "float64",
            "layout": layout,
            "tensors": list(self.params),
            "config": {
                "clip_grad_norm": None,
                "clip_grad_value": None,
                "nonfinite": "reject",
                "groups": None,
                "accumulate": 1,
                **self.config,
                "optimizer": self.engine.base_group.hyperparameters,
            },
            "step": self.state.step,
            "schedule_state": dict(self.state.schedule),
            "last_loss": None,
            "rates": [
                self.engine.schedule.rate(self.state.step, group.lr, self.state.schedule)
                for group in self.engine.groups
            ],
            "params": params["params"] if layout == "single" else params,
            "state": {
                tensor: {
                    slot: int(value) if slot == "step" else value.copy()
                    for slot, value in slots.items()
                }
                for tensor, slots in self.state.slots.items()
            },
        }


def torch_parameters(values):
    return {
        name: torch.tensor(np.array(array), dtype=torch.float64, requires_grad=True)
        for name, array in values.items()
    }


def torch_step(optimizer, parameters, grads):
    for name, parameter in parameters.items():
        parameter.grad = None if name not in grads else torch.from_numpy(np.array(grads[name]))
    optimizer.step()


def assert_same_params(torch_params, numpy_params):
    for name, array in numpy_params.items():
        np.testing.assert_allclose(
            torch_params[name].detach().numpy(), array, rtol=1e-9, atol=0, err_msg=name
        )


@pytest.mark.parametrize("case", TORCH_CASES)
def test_an_export_continues_in_torch_as_in_the_core(case):
    spec, _, _ = TORCH_CASES[case]
    theta0, grads = problem()
    core = CoreSession({"optimizer": spec}, theta0)
    for g in grads[:STEPS]:
        core.step(g)
    export = core.export()
    for g in grads[STEPS:]:
        core.step(g)

    parameters = torch_parameters({name: np.zeros(shape) for name, shape in SHAPES.items()})
    optimizer = torch_optimizer(export, parameters)  # θ copied in, state loaded
    for g in grads[STEPS:]:
        torch_step(optimizer, parameters, g)
    assert_same_params(parameters, core.params)


def torch_run_exported(case, seed):
    """`STEPS` steps of local torch on `problem(seed)`, and the export of where they left it:
    (optimizer, parameters, gradients, export)."""
    _, torch_class, settings = TORCH_CASES[case]
    theta0, grads = problem(seed)
    parameters = torch_parameters(theta0)
    optimizer = torch_class(list(parameters.values()), **settings)
    for g in grads[:STEPS]:
        torch_step(optimizer, parameters, g)
    # torch's SGD keeps no step count: the export is told how many steps it took.
    export = export_from_torch(
        optimizer, parameters, step=STEPS if case == "sgd-momentum" else None
    )
    return optimizer, parameters, grads, export


@pytest.mark.parametrize("case", TORCH_CASES)
def test_torch_continues_in_the_core_as_in_torch(case):
    optimizer, parameters, grads, export = torch_run_exported(case, 1)
    for g in grads[STEPS:]:
        torch_step(optimizer, parameters, g)

    assert export["step"] == STEPS and export["tensors"] == ["w", "b"]
    core = CoreSession.from_export(json.loads(json.dumps(export_to_json(export))))
    for g in grads[STEPS:]:
        core.step(g)
    assert_same_params(parameters, core.params)


def test_torch_state_dict_loads_into_an_optimizer_the_user_made():
    spec, torch_class, _ = TORCH_CASES["adam"]
    theta0, grads = problem(2)
    core = CoreSession({"optimizer": spec}, theta0)
    for g in grads[:STEPS]:
        core.step(g)
    export = core.export()
    for g in grads[STEPS:]:
        core.step(g)

    parameters = torch_parameters(export["params"])
    optimizer = torch_class(list(parameters.values()), lr=123.0)  # settings come from the export
    optimizer.load_state_dict(torch_state_dict(export))
    assert optimizer.param_groups[0]["lr"] == 0.01 and optimizer.param_groups[0]["amsgrad"]
    assert optimizer.param_groups[0]["param_names"] == ["w", "b"]
    assert optimizer.state[parameters["w"]]["step"].item() == STEPS
    for g in grads[STEPS:]:
        torch_step(optimizer, parameters, g)
    assert_same_params(parameters, core.params)


def test_torch_state_dict_follows_the_order_given():
    theta0, _ = problem(3)
    core = CoreSession({"optimizer": {"type": "adam"}}, theta0)
    core.step(random_arrays(np.random.default_rng(3), SHAPES, "float64"))
    state_dict = torch_state_dict(core.export(), ["b", "w"])
    assert state_dict["param_groups"][0]["params"] == [0, 1]
    assert state_dict["param_groups"][0]["param_names"] == ["b", "w"]
    assert tuple(state_dict["state"][0]["exp_avg"].shape) == SHAPES["b"]
    assert state_dict["state"][1]["exp_avg"].dtype == torch.float64


def test_parameter_groups_convert_both_ways():
    """An optaas group (lr and weight decay of the tensors that match `bias*`) is a torch param
    group; torch's groups come back as optaas groups matching their tensors' exact names."""
    rng = np.random.default_rng(4)
    shapes = {"layer[0].weight": (2, 2), "bias?": (2,), "bias*": (2,)}
    theta0 = random_arrays(rng, shapes, "float64")
    grads = [random_arrays(rng, shapes, "float64") for _ in range(2 * STEPS)]
    config = {
        "optimizer": {"type": "adam", "lr": 0.01},
        "groups": [{"match": ["bias[*]"], "lr": 0.1, "weight_decay": 0.5}],
    }
    core = CoreSession(config, theta0)
    for g in grads[:STEPS]:
        core.step(g)
    export = core.export()
    export["config"]["groups"] = config["groups"]

    parameters = torch_parameters(theta0)
    groups = torch_param_groups(export, parameters)
    assert [group["param_names"] for group in groups] == [["layer[0].weight", "bias?"], ["bias*"]]
    assert [(group["lr"], group["weight_decay"]) for group in groups] == [(0.01, 0.0), (0.1, 0.5)]

    optimizer = torch_optimizer(export, parameters)
    for g in grads[STEPS:]:
        torch_step(optimizer, parameters, g)
        core.step(g)
    assert_same_params(parameters, core.params)

    back = export_from_torch(optimizer, parameters)
    assert back["config"]["optimizer"]["lr"] == 0.01
    assert back["config"]["groups"] == [{"match": ["bias[*]"], "lr": 0.1, "weight_decay": 0.5}]
    again = CoreSession.from_export(back)
    assert again.engine.group_of["bias*"] is not again.engine.base_group
    assert again.engine.group_of["bias?"] is again.engine.base_group  # `?` escaped, not a glob


def test_a_scheduled_rate_is_the_rate_at_the_exported_step():
    theta0, grads = problem(5)
    config = {
        "optimizer": {"type": "sgd", "lr": 0.8},
        "schedule": {"type": "exponential", "gamma": 0.5},
    }
    core = CoreSession(config, theta0)
    for g in grads[:3]:
        core.step(g)
    [group] = torch_state_dict(core.export())["param_groups"]
    assert (group["lr"], group["initial_lr"]) == (0.1, 0.8)  # 0.8 · 0.5³ for the 4th update


def test_tensors_never_stepped_keep_torch_fresh_state():
    """A partial step leaves `b` without updates: torch gets no state for it (and makes it on
    b's first gradient), and a torch tensor without state gets the service's fresh slots."""
    theta0, grads = problem(6)
    core = CoreSession({"optimizer": {"type": "adam", "lr": 0.01}}, theta0)
    for g in grads[:STEPS]:
        core.step({"w": g["w"]}, partial=True)
    export = core.export()
    assert export["state"]["b"]["step"] == 0
    assert set(torch_state_dict(export)["state"]) == {0}  # w only

    parameters = torch_parameters({name: np.zeros(shape) for name, shape in SHAPES.items()})
    optimizer = torch_optimizer(export, parameters)
    for g in grads[STEPS:]:
        torch_step(optimizer, parameters, g)
        core.step(g)
    assert_same_params(parameters, core.params)

    fresh = torch_parameters(theta0)
    untouched = torch.optim.Adam(list(fresh.values()))
    torch_step(untouched, fresh, {"w": grads[0]["w"]})
    back = export_from_torch(untouched, fresh)
    assert back["step"] == 1 and back["state"]["b"] == {"step": 0}  # torch holds nothing for b
    imported = CoreSession.from_export(back)  # … and the import starts it as the service does
    assert set(imported.state.slots["b"]) == {"exp_avg", "exp_avg_sq", "step"}
    np.testing.assert_array_equal(imported.state.slots["b"]["exp_avg"], np.zeros(2))
    for g in grads[1:STEPS]:
        torch_step(untouched, fresh, g)
        imported.step(g)
    assert_same_params(fresh, imported.params)


def test_conversions_refuse_what_torch_cannot_hold():
    theta0, _ = problem(7)
    lion = CoreSession({"optimizer": {"type": "lion"}}, theta0).export()
    with pytest.raises(ValueError, match="no 'lion' optimizer"):
        torch_state_dict(lion)
    lecture = CoreSession({"optimizer": {"type": "adagrad", "accumulator": "mean"}}, theta0)
    with pytest.raises(ValueError, match="accumulator='mean'"):
        torch_state_dict(lecture.export())
    adam = CoreSession({"optimizer": {"type": "adam"}}, theta0).export()
    with pytest.raises(ValueError, match=r"missing \['b'\], extra \['c'\]"):
        torch_state_dict(adam, ["w", "c"])

    parameters = torch_parameters(theta0)
    sgd = torch.optim.SGD(list(parameters.values()), lr=0.1, momentum=0.9)
    torch_step(sgd, parameters, {name: np.ones(shape) for name, shape in SHAPES.items()})
    with pytest.raises(ValueError, match="pass step="):
        export_from_torch(sgd, parameters)
    with pytest.raises(ValueError, match=r"it does not optimize \['extra'\]"):
        export_from_torch(sgd, {**parameters, "extra": torch.zeros(1, dtype=torch.float64)}, step=1)
    with pytest.raises(ValueError, match="1 of its tensors have no name"):
        export_from_torch(sgd, {"w": parameters["w"]}, step=1)
    mixed = {"w": torch.zeros(2, dtype=torch.float32), "b": torch.zeros(2, dtype=torch.float64)}
    with pytest.raises(ValueError, match="must all be float32 or all float64"):
        export_from_torch(torch.optim.Adam(list(mixed.values())), mixed)


# -- the export's JSON and safetensors forms ---------------------------------------------------


def exported(layout):
    theta0 = {"params": np.arange(6.0).reshape(2, 3)} if layout == "single" else problem(8)[0]
    core = CoreSession({"optimizer": {"type": "nadam"}}, theta0)  # nadam: a 0-d slot too
    grads = {name: np.ones_like(array) for name, array in theta0.items()}
    core.step(grads)
    return core.export(layout)


def assert_same_export(ours, theirs):
    assert {key: ours[key] for key in ours if key not in ("params", "state")} == {
        key: theirs[key] for key in theirs if key not in ("params", "state")
    }
    if ours["layout"] == "single":
        np.testing.assert_array_equal(ours["params"], theirs["params"])
    else:
        assert list(ours["params"]) == list(theirs["params"])
        for name in ours["params"]:
            np.testing.assert_array_equal(ours["params"][name], theirs["params"][name])
    assert ours["state"].keys() == theirs["state"].keys()
    for tensor, slots in ours["state"].items():
        assert slots.keys() == theirs["state"][tensor].keys()
        for slot, value in slots.items():
            np.testing.assert_array_equal(value, theirs["state"][tensor][slot])
            assert np.asarray(value).dtype == np.asarray(theirs["state"][tensor][slot]).dtype


@pytest.mark.parametrize("layout", ["named", "single"])
def test_an_export_round_trips_through_json(layout):
    export = exported(layout)
    document = json.loads(json.dumps(export_to_json(export)))
    assert document["state"][export["tensors"][0]]["step"] == 1
    assert isinstance(document["state"][export["tensors"][0]]["mu_product"], float)
    assert_same_export(export_from_json(document), export)


@pytest.mark.parametrize("layout", ["named", "single"])
def test_an_export_round_trips_through_safetensors_in_the_agreed_layout(layout):
    export = exported(layout)
    body = export_to_safetensors(export)
    arrays, metadata = tensors_from_safetensors(body)
    first = export["tensors"][0]
    assert arrays[f"param/{first}"].dtype == np.float64
    assert arrays[f"step/{first}"].dtype == np.int64 and arrays[f"step/{first}"].shape == ()
    assert arrays[f"mu_product/{first}"].shape == ()
    assert set(arrays) == {
        f"{slot}/{t}"
        for t in export["tensors"]
        for slot in ("param", "step", "exp_avg", "exp_avg_sq", "mu_product")
    }
    assert metadata["format"] == "optaas-state/1" and metadata["step"] == "1"
    assert json.loads(metadata["tensors"]) == export["tensors"]
    assert json.loads(metadata["config"]) == export["config"]
    assert json.loads(metadata["name"]) == "core" and metadata["layout"] == layout
    assert json.loads(metadata["last_loss"]) is None
    assert safetensors.numpy.load(body).keys() == arrays.keys()  # a plain safetensors file
    assert_same_export(export_from_safetensors(body), export)
