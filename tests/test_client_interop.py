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
    torch_optimizers,
    torch_param_groups,
    torch_state_dict,
)

from app.optim import Optimizer, OptimizerState, SparseRows
from app.tensors import tensors_from_safetensors
from tests.optim.reference import (
    assert_moved_alike,
    muon_in_input_dtype,
    torch_default_dtype,
    torch_gradient,
)
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
        copies = {name: _copy(grad) for name, grad in grads.items()}
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
            "globals": {name: value.copy() for name, value in self.state.globals.items()},
        }


def _copy(grad):
    if isinstance(grad, SparseRows):
        return SparseRows(grad.rows.copy(), grad.values.copy())
    return np.array(grad)


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


def torch_run_exported(case, seed, steps=STEPS):
    """`steps` steps of local torch on `problem(seed)` (which holds twice as many gradients),
    and the export of where they left it: (optimizer, parameters, gradients, export)."""
    _, torch_class, settings = TORCH_CASES[case]
    theta0, grads = problem(seed, 2 * steps)
    parameters = torch_parameters(theta0)
    optimizer = torch_class(list(parameters.values()), **settings)
    for g in grads[:steps]:
        torch_step(optimizer, parameters, g)
    # torch's SGD keeps no step count: the export is told how many steps it took.
    export = export_from_torch(
        optimizer, parameters, step=steps if case == "sgd-momentum" else None
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


# -- the rest of torch.optim: Adafactor, Muon, Rprop, ASGD, SparseAdam; Muon beside AdamW -----

MATRICES = {"wide": (3, 5), "tall": (6, 2)}
TABLES = {"embedding": (8, 3), "blocks": (5, 2, 2)}
MIXED_SHAPES = {
    "layer.weight": (5, 4),
    "layer.bias": (5,),
    "head.weight": (3, 5),
    "head.bias": (3,),
}
MUON_AND_ADAMW = {
    "optimizer": {"type": "adamw", "lr": 3e-3, "weight_decay": 0.01},
    "groups": [{"match": ["*.weight"], "optimizer": {"type": "muon", "lr": 0.02}}],
}

# optaas spec, torch class, torch settings, shapes, sparse row gradients: options exercised.
MORE_TORCH_CASES = {
    "adafactor": (  # w is factored (row_var, col_var), b and the scalar keep `variance`
        {"type": "adafactor", "lr": 0.05, "weight_decay": 0.1, "eps": [1e-30, 1e-2]},
        torch.optim.Adafactor,
        {"lr": 0.05, "weight_decay": 0.1, "eps": (1e-30, 1e-2)},
        {**SHAPES, "cube": (2, 3, 2), "scalar": ()},
        False,
    ),
    "muon": (
        {"type": "muon", "lr": 0.02, "adjust_lr_fn": "match_rms_adamw", "nesterov": False},
        torch.optim.Muon,
        {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw", "nesterov": False},
        MATRICES,
        False,
    ),
    "rprop": (
        {"type": "rprop", "lr": 0.05, "etas": [0.4, 1.3], "step_sizes": [1e-4, 0.5]},
        torch.optim.Rprop,
        {"lr": 0.05, "etas": (0.4, 1.3), "step_sizes": (1e-4, 0.5)},
        SHAPES,
        False,
    ),
    "asgd": (  # averaging from step 20: `ax` carries over too
        {"type": "asgd", "lr": 0.05, "t0": 20, "lambd": 0.01, "weight_decay": 0.1},
        torch.optim.ASGD,
        {"lr": 0.05, "t0": 20, "lambd": 0.01, "weight_decay": 0.1},
        SHAPES,
        False,
    ),
    "sparse_adam": (  # sparse COO gradients in torch, rows here; repeated rows summed
        {"type": "sparse_adam", "lr": 0.01, "betas": [0.8, 0.99]},
        torch.optim.SparseAdam,
        {"lr": 0.01, "betas": (0.8, 0.99)},
        TABLES,
        True,
    ),
}


def more_problem(case, seed, steps=2 * STEPS):
    """θ₀ and `steps` (100) gradients for a case: dense, or sparse rows (some steps touch
    none)."""
    *_, shapes, sparse = MORE_TORCH_CASES[case]
    rng = np.random.default_rng(seed)
    theta0 = random_arrays(rng, shapes, "float64")
    grads = []
    for _ in range(steps):
        if not sparse:
            grads.append(random_arrays(rng, shapes, "float64"))
            continue
        step = {}
        for name, shape in shapes.items():
            rows = rng.integers(0, shape[0], int(rng.integers(0, 6)))
            step[name] = SparseRows(rows, rng.standard_normal((len(rows), *shape[1:])))
        grads.append(step)
    return theta0, grads


def torch_steps(optimizers, parameters, grads):
    """torch's steps (sparse rows as uncoalesced sparse COO tensors, as `nn.Embedding(sparse=
    True)` makes them), Muon's Newton–Schulz in float64 as the contract's reference, and
    float64 the default dtype (ASGD computes its η_t as a tensor of the default dtype)."""
    with muon_in_input_dtype(), torch_default_dtype(np.float64):
        for g in grads:
            for name, parameter in parameters.items():
                parameter.grad = torch_gradient(_copy(g[name]), tuple(parameter.shape))
            for optimizer in optimizers:
                optimizer.step()


def numpy_of(parameters):
    return {name: tensor.detach().numpy().copy() for name, tensor in parameters.items()}


@pytest.mark.parametrize("case", MORE_TORCH_CASES)
def test_fifty_here_then_fifty_in_torch_equal_a_hundred_here(case):
    """The export's slots are torch's state_dict entries (Adafactor's row and column factors,
    ASGD's average, SparseAdam's int step, Muon without one): torch continues the run."""
    spec, *_ = MORE_TORCH_CASES[case]
    theta0, grads = more_problem(case, 10)
    core = CoreSession({"optimizer": spec}, theta0)
    for g in grads[:STEPS]:
        core.step(g)
    export = core.export()
    for g in grads[STEPS:]:
        core.step(g)

    parameters = torch_parameters({name: np.zeros_like(array) for name, array in theta0.items()})
    optimizer = torch_optimizer(export, parameters)
    torch_steps([optimizer], parameters, grads[STEPS:])
    assert_moved_alike(core.params, numpy_of(parameters), theta0, 1e-9)
    if case == "asgd":  # the weights to evaluate carried over as well
        averages = {name: optimizer.state[parameters[name]]["ax"].numpy() for name in theta0}
        assert_moved_alike(core.engine.eval_params(core.params, core.state), averages, theta0, 1e-9)


@pytest.mark.parametrize("case", MORE_TORCH_CASES)
def test_fifty_in_torch_then_fifty_here_equal_a_hundred_in_torch(case):
    _, torch_class, settings, *_ = MORE_TORCH_CASES[case]
    theta0, grads = more_problem(case, 11)
    parameters = torch_parameters(theta0)
    optimizer = torch_class(list(parameters.values()), **settings)
    torch_steps([optimizer], parameters, grads[:STEPS])
    # torch's Muon keeps no step count: the export is told how many steps it took.
    export = export_from_torch(optimizer, parameters, step=STEPS if case == "muon" else None)
    torch_steps([optimizer], parameters, grads[STEPS:])

    assert export["step"] == STEPS and export["config"]["optimizer"]["type"] == case
    core = CoreSession.from_export(json.loads(json.dumps(export_to_json(export))))
    for g in grads[STEPS:]:
        core.step(g)
    assert_moved_alike(core.params, numpy_of(parameters), theta0, 1e-9)


def test_adafactor_keeps_torchs_row_and_column_factors():
    spec, *_ = MORE_TORCH_CASES["adafactor"]
    theta0, grads = more_problem("adafactor", 12)
    core = CoreSession({"optimizer": spec}, theta0)
    core.step(grads[0])
    state_dict = torch_state_dict(core.export())
    assert state_dict["param_groups"][0]["eps"] == (1e-30, 1e-2)
    w, b, cube, scalar = (state_dict["state"][index] for index in range(4))
    assert set(w) == {"row_var", "col_var", "step"} and set(b) == {"variance", "step"}
    assert (tuple(w["row_var"].shape), tuple(w["col_var"].shape)) == ((3, 1), (1, 2))
    assert (tuple(cube["row_var"].shape), tuple(cube["col_var"].shape)) == ((2, 3, 1), (2, 1, 2))
    assert tuple(scalar["variance"].shape) == () and w["step"].item() == 1.0


def test_sparse_adam_and_muon_keep_steps_as_torch_does():
    theta0, grads = more_problem("sparse_adam", 13)
    core = CoreSession({"optimizer": {"type": "sparse_adam"}}, theta0)
    core.step(grads[0])
    core.step({name: np.ones_like(array) for name, array in theta0.items()})
    state = torch_state_dict(core.export())["state"]
    assert state[0]["step"] == 2 and type(state[0]["step"]) is int  # torch's SparseAdam's int
    muon = CoreSession({"optimizer": {"type": "muon"}}, {"w": np.ones((2, 3))})
    muon.step({"w": np.arange(6.0).reshape(2, 3)})
    assert set(torch_state_dict(muon.export())["state"][0]) == {"momentum_buffer"}


def test_muon_with_maximize_has_no_torch_counterpart():
    core = CoreSession({"optimizer": {"type": "muon", "maximize": True}}, {"w": np.ones((2, 2))})
    with pytest.raises(ValueError, match="muon with maximize=True"):
        torch_state_dict(core.export())


def test_muon_and_adamw_groups_are_two_torch_optimizers_both_ways():
    """Muon for the matrices, the session's AdamW for the rest (a group with its own
    optimizer): one torch optimizer per type continues the run, and the pair converts back
    to an export whose group names its own optimizer."""
    rng = np.random.default_rng(14)
    theta0 = random_arrays(rng, MIXED_SHAPES, "float64")
    grads = [random_arrays(rng, MIXED_SHAPES, "float64") for _ in range(2 * STEPS)]
    core = CoreSession(MUON_AND_ADAMW, theta0)
    for g in grads[:STEPS]:
        core.step(g)
    export = core.export()
    for g in grads[STEPS:]:
        core.step(g)

    parameters = torch_parameters({name: np.zeros_like(array) for name, array in theta0.items()})
    with pytest.raises(ValueError, match=r"\['adamw', 'muon'\].*torch_optimizers"):
        torch_optimizer(export, parameters)
    optimizers = torch_optimizers(export, parameters)
    assert list(optimizers) == ["adamw", "muon"]
    adamw, muon = optimizers.values()
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    assert adamw.param_groups[0]["param_names"] == ["layer.bias", "head.bias"]
    assert muon.param_groups[0]["param_names"] == ["layer.weight", "head.weight"]
    assert (muon.param_groups[0]["lr"], adamw.param_groups[0]["weight_decay"]) == (0.02, 0.01)
    assert set(torch_state_dict(export, optimizer_type="muon")["state"]) == {0, 1}
    torch_steps([adamw, muon], parameters, grads[STEPS:])
    assert_moved_alike(core.params, numpy_of(parameters), theta0, 1e-9)

    # … and back: a pair of torch optimizers after 50 steps, continued here.
    parameters = torch_parameters(theta0)
    matrices = [parameters["layer.weight"], parameters["head.weight"]]
    vectors = [parameters["layer.bias"], parameters["head.bias"]]
    pair = [
        torch.optim.AdamW(vectors, lr=3e-3, weight_decay=0.01),
        torch.optim.Muon(matrices, lr=0.02),
    ]
    torch_steps(pair, parameters, grads[:STEPS])
    back = export_from_torch(pair, parameters)
    torch_steps(pair, parameters, grads[STEPS:])
    assert back["step"] == STEPS  # AdamW's count; Muon's tensors take it
    assert back["config"]["optimizer"]["type"] == "adamw"
    [group] = back["config"]["groups"]
    assert group["match"] == ["layer.weight", "head.weight"]
    assert group["optimizer"]["type"] == "muon" and group["optimizer"]["lr"] == 0.02
    again = CoreSession.from_export(json.loads(json.dumps(export_to_json(back))))
    for g in grads[STEPS:]:
        again.step(g)
    assert_moved_alike(again.params, numpy_of(parameters), theta0, 1e-9)


def test_torch_optimizers_that_share_a_tensor_are_refused():
    parameters = torch_parameters({"w": np.ones((2, 2))})
    both = [torch.optim.SGD([parameters["w"]]), torch.optim.Muon([parameters["w"]])]
    with pytest.raises(ValueError, match=r"it optimizes \['w'\] more than once"):
        export_from_torch(both, parameters, step=0)


# -- the export's JSON and safetensors forms ---------------------------------------------------


def exported(layout):
    theta0 = {"params": np.arange(6.0).reshape(2, 3)} if layout == "single" else problem(8)[0]
    core = CoreSession({"optimizer": {"type": "nadam"}}, theta0)  # nadam: a 0-d slot too
    grads = {name: np.ones_like(array) for name, array in theta0.items()}
    core.step(grads)
    return core.export(layout)


def assert_same_export(ours, theirs):
    arrays = ("params", "state", "globals")
    assert {key: ours[key] for key in ours if key not in arrays} == {
        key: theirs[key] for key in theirs if key not in arrays
    }
    assert ours["globals"].keys() == theirs["globals"].keys()
    for name, value in ours["globals"].items():
        np.testing.assert_array_equal(value, theirs["globals"][name])
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
