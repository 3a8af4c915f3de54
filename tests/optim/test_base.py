"""The vocabulary: chains refuse shared slots and late pre-processing; scratch lending."""

import numpy as np
import pytest

from app.optim.base import STEP_SLOT, GradientTransformation, Scratch, chain, slot_names
from app.optim.transforms import add_coupled_weight_decay, ema, negate, scale_by_rms, trace


def test_chain_state_is_the_union_of_its_blocks_slots():
    assert slot_names(chain(ema(0.9), scale_by_rms(0.99, 1e-8, slot="exp_avg_sq"))) == (
        "exp_avg",
        "exp_avg_sq",
    )


def test_two_blocks_sharing_a_slot_is_a_construction_error():
    with pytest.raises(ValueError, match="exp_avg"):
        chain(ema(0.9), ema(0.5))
    with pytest.raises(ValueError, match="momentum_buffer"):
        chain(trace(0.9), None, trace(0.5))


def test_the_engines_step_slot_is_reserved():
    def init(param):
        return {STEP_SLOT: np.zeros((), np.int64)}

    with pytest.raises(ValueError, match="step"):
        chain(GradientTransformation(init, lambda u, slots, ctx: u))


def test_pre_processing_must_come_first():
    chain(negate(), add_coupled_weight_decay(0.1), ema(0.9))
    with pytest.raises(ValueError, match="pre-processing"):
        chain(ema(0.9), negate())


def test_scratch_head_lends_the_start_of_the_buffers():
    scratch = Scratch((8,), np.dtype(np.float32))
    head = scratch.head(3)
    head.work[:] = 1.0
    assert head.work.shape == (3,) and head.work.dtype == np.float32
    np.testing.assert_array_equal(scratch.work[:3], np.ones(3))
    assert np.shares_memory(head.temp, scratch.temp)
