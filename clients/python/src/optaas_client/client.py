"""The client: one optaas server, and the way to its sessions.

    from optaas_client import Client

    with Client("http://127.0.0.1:8000") as client:
        session = client.create_session({"w": w0, "b": b0}, optimizer={"type": "adam", "lr": 1e-3})
        for batch in batches:
            params = session.step(gradients(params, batch), loss=loss)

`Client` creates, imports and attaches sessions and previews schedules; `Session`
(`optaas_client.session`) is the rest. Every request goes through the client's `Transport`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np
from optaas_state import SAFETENSORS_MEDIA_TYPE

from optaas_client.exports import export_to_json, export_to_safetensors
from optaas_client.session import Session
from optaas_client.tensors import as_tensors, dtype_of, element_count, json_content, wire_form
from optaas_client.transport import JSON_MEDIA_TYPE, RetryPolicy, Transport

DEFAULT_URL = "http://127.0.0.1:8000"

DEFAULT_BINARY_THRESHOLD = 65_536
"""Sessions with at least this many elements (over all tensors) send and receive tensors as
safetensors. Below it JSON is cheap (a 65 536-element body is ~1 MB of text) and its step answers
are sure to carry `grad_norm` and `update_norm`, which the contract's binary answer need not."""


class Client:
    """One optaas server: create, import and attach sessions; preview schedules.

    `timeout` bounds every request (connecting: at most 5 s); `retries`, `backoff` and
    `max_delay` are the `RetryPolicy`. `binary_threshold`: sessions with at least this many
    elements use safetensors (`None`: never). `api_key` is sent as `X-API-Key` when creating
    or importing sessions. `transport` (an httpx transport) is for tests and special networks.
    The client is thread-safe and keeps connections open: `close()` it, or use `with`.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.25,
        max_delay: float = 30.0,
        binary_threshold: int | None = DEFAULT_BINARY_THRESHOLD,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        trust_env: bool = True,
    ) -> None:
        self.transport = Transport(
            url,
            timeout=timeout,
            retry=RetryPolicy(retries, backoff, max_delay),
            transport=transport,
            trust_env=trust_env,
        )
        self.binary_threshold = binary_threshold
        self.api_key = api_key
        self.binary_supported = True
        """Cleared when the server refuses safetensors (415): then JSON is used throughout."""

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def timeout(self) -> float:
        return self.transport.timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.transport.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- sessions ------------------------------------------------------------------------

    def create_session(
        self,
        params: Any,
        *,
        optimizer: Mapping[str, Any] | str,
        schedule: Mapping[str, Any] | None = None,
        dtype: str | None = None,
        name: str | None = None,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        nonfinite: str | None = None,
        groups: Sequence[Mapping[str, Any]] | None = None,
        accumulate: int | None = None,
    ) -> Session:
        """A new session at t = 0 with θ₀ = `params` (an array, or a mapping of named arrays).

        `optimizer` is a spec (`{"type": "adam", "lr": 1e-3}`) or just a type (`"adam"`);
        settings left as None take the service's defaults. `dtype` defaults to float64 when
        every array is float64, float32 otherwise.
        """
        spec = {"type": optimizer} if isinstance(optimizer, str) else dict(optimizer)
        dtype = dtype or dtype_of(params)
        tensors = as_tensors(params, np.dtype(dtype))
        body: dict[str, Any] = {
            "params": wire_form(tensors, not isinstance(params, Mapping)),
            "dtype": dtype,
            "optimizer": spec,
        }
        optional = {
            "name": name,
            "schedule": schedule,
            "clip_grad_norm": clip_grad_norm,
            "clip_grad_value": clip_grad_value,
            "nonfinite": nonfinite,
            "groups": groups,
            "accumulate": accumulate,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        response = self.request(
            "POST", "/v1/sessions", content=json_content(body), headers=self._api_key_header()
        )
        return Session._from_created(self, response.json())

    def session(self, session_id: str, token: str) -> Session:
        """A handle on an existing session (reads it once: a wrong id or token fails here)."""
        handle = Session(self, str(session_id), token)
        handle.info()
        return handle

    def import_session(self, export: Mapping[str, Any], *, binary: bool | None = None) -> Session:
        """A new session (new id and token) from an export (`Session.export()` or
        `export_from_torch(...)`), as a safetensors file when `binary` (default: by size)."""
        if self._use_binary(element_count(export["params"]), binary):
            content, content_type = export_to_safetensors(export), SAFETENSORS_MEDIA_TYPE
        else:
            content, content_type = json_content(export_to_json(export)), JSON_MEDIA_TYPE
        response = self.request(
            "POST",
            "/v1/sessions/import",
            content=content,
            headers={"Content-Type": content_type, **self._api_key_header()},
        )
        return Session._from_created(self, response.json())

    def preview_schedule(
        self,
        schedule: Mapping[str, Any],
        *,
        steps: int,
        lr: float | None = None,
        optimizer: Mapping[str, Any] | str | None = None,
    ) -> np.ndarray:
        """η_0 … η_{steps−1} of `schedule` at base rate `lr` (NaN where not finite); without
        `lr`, the `optimizer`'s (a spec or a type: its type's default lr), else 1."""
        body: dict[str, Any] = {"schedule": dict(schedule), "steps": steps}
        if lr is not None:
            body["lr"] = lr
        if optimizer is not None:
            body["optimizer"] = (
                {"type": optimizer} if isinstance(optimizer, str) else dict(optimizer)
            )
        response = self.request("POST", "/v1/schedules/preview", content=json_content(body))
        return np.array(response.json()["lr"], dtype=np.float64)

    def ready(self) -> bool:
        """Whether the server answers and its database too (`GET /readyz`), without retrying."""
        return self.transport.status_of("/readyz") == 200

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """Any request, through the transport (`Transport.request`: its options, retries,
        idempotency key and typed errors)."""
        return self.transport.request(method, path, **options)

    def _api_key_header(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def _use_binary(self, elements: int, binary: bool | None) -> bool:
        if binary is not None:
            return binary
        return (
            self.binary_supported
            and self.binary_threshold is not None
            and elements >= self.binary_threshold
        )
