"""What a step gives back: its numbers and θ after it, by tensor name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from app.optim import SparseRows
from app.tensors import Layout


@dataclass(frozen=True)
class Stepped:
    """An applied (or skipped) step: t after it, the rate η_t it used, ‖g‖ and ‖Δθ‖ (None when
    not computed), whether it was skipped, and θ by tensor name (None: not asked for) in the
    session's `layout` — a tensor stepped by sparse rows as `SparseRows` of the rows it
    changed (their values gathered: copies already).

    `live`: θ is the working set's own arrays, which the next step of this process updates in
    place once this step's transaction commits. Whatever reads θ after the commit reads
    `detached()`, which copies it then and only then.
    """

    step: int
    lr: float
    grad_norm: float | None
    update_norm: float | None
    skipped: bool
    layout: Layout
    params: dict[str, np.ndarray | SparseRows] | None
    live: bool = False

    def detached(self) -> Stepped:
        """The same step with θ that no later step changes (copies if `live`)."""
        if not self.live or self.params is None:
            return self
        params = {
            name: array if isinstance(array, SparseRows) else array.copy()
            for name, array in self.params.items()
        }
        return dataclasses.replace(self, params=params, live=False)
