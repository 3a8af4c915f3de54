"""The Python client of optaas: a server-side optimizer as if it were a local one.

    from optaas_client import Client

    with Client("http://127.0.0.1:8000") as client:
        session = client.create_session({"w": w0, "b": b0}, optimizer={"type": "adam", "lr": 1e-3})
        for batch in batches:
            params = session.step(gradients(params, batch), loss=loss)

numpy in, numpy out: parameters and gradients are one array (the `single` form) or a mapping of
named arrays (the `named` form), and answers come back in the session's form as arrays of its
dtype. Above `binary_threshold` elements, tensors travel as safetensors files instead of JSON.

Every request has a timeout. Connection errors, timeouts, 429 and 5xx answers are retried with
exponential backoff (and `Retry-After` when the server sends one); every POST and PATCH carries an
`Idempotency-Key`, made once per call and sent with each retry of it, so a retried step is applied
once. Error answers (RFC 9457 problem+json) are raised as typed exceptions (`ShapeMismatch`,
`SessionNotFound`, `PreconditionFailed`, …), all of them `OptaasClientError`s.

The modules, one job each: `errors`, `transport` (retries and idempotency keys), `client` and
`session` (the resources), `tensors` (numpy on the wire), `exports` (the `optaas-state/1`
format as numpy; its keys and layout are `optaas_state`'s, which the server shares),
`torch_interop` (exports ↔ torch.optim) and `remote` (`RemoteOptimizer`). torch is optional
and imported by the last two only when used: importing this package imports neither torch nor
anything of the server.
"""

from typing import TYPE_CHECKING, Any

from optaas_client.client import Client
from optaas_client.errors import (
    ApiError,
    AuthenticationRequired,
    BadRequest,
    ConnectionFailed,
    IdempotencyKeyExpired,
    IdempotencyKeyReused,
    InvalidContent,
    InvalidHyperParameter,
    NonFiniteGradient,
    NotFound,
    OptaasClientError,
    PayloadTooLarge,
    PreconditionFailed,
    ProtocolError,
    ServerError,
    ServiceUnavailable,
    SessionNotFound,
    ShapeMismatch,
    StepWaitTimeout,
    UnsupportedMediaType,
    ValidationFailed,
    error_for,
)
from optaas_client.exports import (
    export_from_json,
    export_from_safetensors,
    export_to_json,
    export_to_safetensors,
)
from optaas_client.session import Pending, Session, StepInfo
from optaas_client.tensors import SparseRows
from optaas_client.torch_interop import (
    export_from_torch,
    torch_optimizer,
    torch_optimizers,
    torch_param_groups,
    torch_state_dict,
)
from optaas_client.transport import RetryPolicy, Transport

if TYPE_CHECKING:
    from optaas_client.remote import RemoteOptimizer

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AuthenticationRequired",
    "BadRequest",
    "Client",
    "ConnectionFailed",
    "IdempotencyKeyExpired",
    "IdempotencyKeyReused",
    "InvalidContent",
    "InvalidHyperParameter",
    "NonFiniteGradient",
    "NotFound",
    "OptaasClientError",
    "PayloadTooLarge",
    "Pending",
    "PreconditionFailed",
    "ProtocolError",
    "RemoteOptimizer",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailable",
    "Session",
    "SessionNotFound",
    "ShapeMismatch",
    "SparseRows",
    "StepInfo",
    "StepWaitTimeout",
    "Transport",
    "UnsupportedMediaType",
    "ValidationFailed",
    "error_for",
    "export_from_json",
    "export_from_safetensors",
    "export_from_torch",
    "export_to_json",
    "export_to_safetensors",
    "torch_optimizer",
    "torch_optimizers",
    "torch_param_groups",
    "torch_state_dict",
]


def __getattr__(name: str) -> Any:
    # `RemoteOptimizer` subclasses torch.optim.Optimizer: made on first use, so that importing
    # the package does not import torch.
    if name == "RemoteOptimizer":
        from optaas_client import remote

        return remote.RemoteOptimizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
