"""`Optimizer.fit_slots`: after a change of configuration each tensor holds exactly the slots
its new chain keeps — kept ones as they were, missing ones fresh, unused ones dropped."""

from __future__ import annotations

import numpy as np

from app.optim import Optimizer, build_schedule


def test_fitting_keeps_shared_slots_starts_new_ones_and_drops_the_rest():
    params = {"w": np.ones((2, 3)), "b": np.ones(3)}
    adam = Optimizer({"optimizer": {"type": "adam"}}, list(params))
    state = adam.init(params)
    adam.step(params, state, {"w": np.full((2, 3), 0.5), "b": np.full(3, 0.5)})
    sgd = Optimizer({"optimizer": {"type": "sgd", "momentum": 0.9}}, list(params))
    sgd.fit_slots(state, params)
    for name, param in params.items():
        assert set(state.slots[name]) == {"step", "momentum_buffer"}
        assert int(state.slots[name]["step"]) == 1  # kept as it was
        assert state.slots[name]["momentum_buffer"].shape == param.shape
        assert set(state.slots[name]) == set(sgd.fresh_slots(name, param))


def test_a_schedule_states_its_initial_state_without_an_optimizer():
    assert build_schedule(None).init() == {}
    plateau = build_schedule({"type": "reduce_on_plateau"}).init()
    assert plateau == {"num_bad_epochs": 0.0, "cooldown_counter": 0.0, "num_reductions": 0.0}
