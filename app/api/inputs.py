"""Request bodies → the service's domain values, in the thread pool, before any transaction.

Everything here is blocking (JSON and safetensors parsing, numbers into numpy) and runs before
the session is locked, so no lock is held while a body is read: the service then takes arrays
by tensor name in the session's dtype, and configuration documents as plain values. A body
that cannot be parsed is a 400 / 422 with nothing changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.api.bodies import TensorBody, parse_json, parse_tensor_body
from app.optim.base import Gradient
from app.schemas import CreateSession, SessionConfig, SessionPatch, StepRequest
from app.service import GradientPost, NewSession, SessionFacts
from app.tensors import (
    NamedTensors,
    gradients_from_json,
    gradients_from_safetensors,
    initial_tensors,
)


def gradient_post(body: TensorBody, facts: SessionFacts) -> GradientPost:
    """A step's body (JSON or a safetensors file) as the gradients by tensor name in the
    session's dtype, with its loss and `partial`. Names and shapes are the core's to check."""
    request = parse_tensor_body(body, StepRequest, "gradients")
    gradients = gradient_arrays(request.gradients, facts)
    return GradientPost(gradients, loss=request.loss, partial=request.partial)


def gradient_arrays(gradients: Any, facts: SessionFacts) -> dict[str, Gradient]:
    """The posted gradients by tensor name, in the session's dtype: arrays, or `SparseRows`.

    JSON gradients come in the session's form (one array, or an object of named arrays; a
    tensor's may be `{"rows", "values"}`); a safetensors file's tensors (`NamedTensors`) are by
    name in either form (the single form's tensor is `params`; `rows/<tensor>` beside one
    makes it sparse rows).
    """
    dtype = np.dtype(facts.dtype)
    if isinstance(gradients, NamedTensors):
        return gradients_from_safetensors(gradients, facts.names, dtype, field="gradients")
    return gradients_from_json(gradients, facts.layout, dtype, field="gradients")


def new_session(request: CreateSession) -> NewSession:
    """A creation request as the service takes it: the config with every default filled in,
    and θ₀ by tensor name in the requested dtype (a file's tensors used where they are)."""
    config = request.model_dump(mode="json", include=set(SessionConfig.model_fields))
    layout, params = initial_tensors(request.params, np.dtype(request.dtype))
    return NewSession(request.name, config, layout, params)


def config_patch(body: bytes | bytearray, *, optional: bool = False) -> dict[str, Any]:
    """A PATCH (or fork) body as the merge patch it is: the fields the client set, validated
    as `SessionPatch` (`null` kept: it restores a default). An empty body is no change when
    `optional` (a fork without overrides)."""
    if optional and not body.strip():
        return {}
    return parse_json(body, SessionPatch).model_dump(mode="json", exclude_unset=True)
