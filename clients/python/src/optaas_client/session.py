"""A session: one optimisation run on the server, as a handle with a method per endpoint.

`Session` converts numpy to the wire form (JSON lists, or safetensors above the client's
`binary_threshold` elements) and back; `StepInfo` is what a step reported, `Pending` a gradient
an accumulating session received without completing its step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from optaas_state import SAFETENSORS_MEDIA_TYPE, tensors_to_safetensors

from optaas_client.errors import UnsupportedMediaType
from optaas_client.exports import export_from_json, export_from_safetensors
from optaas_client.tensors import (
    Params,
    Tensor,
    as_tensors,
    from_wire,
    in_form,
    json_content,
    media_type,
    read_safetensors,
    safetensors_tensors,
    tensors_from_safetensors,
    wire_form,
)
from optaas_client.transport import JSON_MEDIA_TYPE

if TYPE_CHECKING:
    from optaas_client.client import Client

HISTORY_PAGE_LIMIT = 1000
"""The largest page `GET …/history` serves."""


@dataclass(frozen=True)
class StepInfo:
    """What the latest step reported. A binary (safetensors) answer is sure to carry `step`
    and `lr` only (in its `__metadata__`); what it leaves out is None."""

    step: int
    lr: float | None
    grad_norm: float | None = None
    update_norm: float | None = None
    skipped: bool | None = None


@dataclass(frozen=True)
class Pending:
    """A gradient an `accumulate: K` session received without completing its step (202).

    The session is at step `step` (t, the updates applied so far); `received` of K gradients
    are in, `missing` still to come. The step they make is t + 1: `wait()` waits for it.
    """

    session: Session
    step: int
    received: int
    missing: int

    @property
    def wait_for_step(self) -> int:
        return self.step + 1

    def wait(self, timeout: float | None = None) -> Params:
        """The parameters once the session reaches step t + 1 (`StepWaitTimeout` if not)."""
        return self.session.params(wait_for_step=self.wait_for_step, timeout=timeout)


class Session:
    """A handle on one session: step it, read it, change it, fork, export or delete it.

    `step_count` is t as last seen; `last_step` what the latest `step()` reported.
    Handles are cheap and hold no state the server does not have.
    """

    def __init__(self, client: Client, session_id: str, token: str) -> None:
        self.client = client
        self.id = session_id
        self.token = token
        self.view: dict[str, Any] = {}
        self.step_count: int | None = None
        self.last_step: StepInfo | None = None

    @classmethod
    def _from_created(cls, client: Client, created: Mapping[str, Any]) -> Session:
        handle = cls(client, str(created["id"]), str(created["token"]))
        handle._remember(created)
        return handle

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, step={self.step_count})"

    # -- what it is ----------------------------------------------------------------------

    @property
    def layout(self) -> str:
        return str(self._view()["layout"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._view()["dtype"])

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(shape) for name, shape in self._view()["shapes"].items()}

    @property
    def size(self) -> int:
        """Elements over all tensors."""
        return sum(math.prod(shape) for shape in self.shapes.values())

    def info(self) -> dict[str, Any]:
        """The session as the service shows it: config with every default, step, shapes, …"""
        view = self._get(f"/v1/sessions/{self.id}").json()
        self._remember(view)
        return view

    # -- stepping ------------------------------------------------------------------------

    def step(
        self,
        gradients: Any,
        loss: float | None = None,
        *,
        partial: bool = False,
        if_match: int | None = None,
        return_params: bool | str = True,
        wait: bool = False,
        wait_timeout: float | None = None,
        binary: bool | None = None,
    ) -> Params | Pending | None:
        """Post one gradient; the new parameters, in the session's form.

        A tensor's gradient may be `SparseRows` (an embedding table's: the rows a batch
        touched); the answer then holds, for that tensor, only the rows the step changed, as
        `SparseRows` (`rows.apply_to(table)` writes them) — unless `return_params="full"`,
        which asks for every tensor whole. `partial`: the gradient holds a subset of the
        tensors. `if_match=t`: apply only if the session is at step t (else
        `PreconditionFailed`). `return_params=False`: the answer leaves θ out and this returns
        None. On an `accumulate: K` session a gradient that does not complete the step returns
        a `Pending` — or, with `wait`, the parameters once the step is made (waiting up to
        `wait_timeout` seconds). `binary` forces safetensors on or off (default: by the
        session's size).
        """
        tensors = as_tensors(gradients, self.dtype)
        # Partial steps travel as JSON, whose body has a `partial` member for it.
        binary = not partial and self.client._use_binary(self.size, binary)
        response = self._post_step(
            tensors, isinstance(gradients, Mapping), loss, partial, if_match, return_params, binary
        )
        if response.status_code == 202:
            pending = self._pending(response.json())
            return pending.wait(wait_timeout) if wait else pending
        if media_type(response) == SAFETENSORS_MEDIA_TYPE:
            arrays, metadata = read_safetensors(response.content)
            self._remember_step(_step_info_from_metadata(metadata))
            return self._params_in_order(arrays) if return_params else None
        answer = response.json()
        self._remember_step(
            StepInfo(
                step=answer["step"],
                lr=answer["lr"],
                grad_norm=answer.get("grad_norm"),
                update_norm=answer.get("update_norm"),
                skipped=answer.get("skipped"),
            )
        )
        if not return_params:
            return None
        return from_wire(answer["params"], self.dtype, self.layout)

    def _post_step(
        self,
        tensors: dict[str, Tensor],
        named: bool,
        loss: float | None,
        partial: bool,
        if_match: int | None,
        return_params: bool | str,
        binary: bool,
    ) -> httpx.Response:
        """POST …/step: a safetensors file (`loss` in its metadata) when `binary`, answered in
        safetensors unless θ is left out; JSON otherwise, or when the server refuses the file."""
        path = f"/v1/sessions/{self.id}/step"
        headers = {} if if_match is None else {"If-Match": f'"{int(if_match)}"'}
        query = {"return": _return_query(return_params)}
        if binary:
            # Metadata values are JSON text: "0.42", and NaN as Python's json writes it.
            metadata = {} if loss is None else {"loss": json.dumps(float(loss))}
            binary_headers = {**headers, "Content-Type": SAFETENSORS_MEDIA_TYPE}
            if return_params:
                binary_headers["Accept"] = SAFETENSORS_MEDIA_TYPE
            try:
                return self._post(
                    path,
                    tensors_to_safetensors(safetensors_tensors(tensors), metadata),
                    headers=binary_headers,
                    params=query,
                )
            except UnsupportedMediaType:
                self.client.binary_supported = False  # an older server: JSON from now on
        body: dict[str, Any] = {"gradients": wire_form(tensors, not named)}
        if loss is not None:
            body["loss"] = float(loss)
        if partial:
            body["partial"] = True
        return self._post(path, json_content(body), headers=headers, params=query)

    def _pending(self, answer: Mapping[str, Any]) -> Pending:
        self.step_count = int(answer["step"])
        return Pending(self, int(answer["step"]), int(answer["received"]), int(answer["missing"]))

    # -- reading -------------------------------------------------------------------------

    def params(
        self,
        *,
        for_eval: bool = False,
        wait_for_step: int | None = None,
        timeout: float | None = None,
        binary: bool | None = None,
    ) -> Params:
        """θ_t in the session's form. With `wait_for_step=t`, waits (up to `timeout` seconds,
        the server's default if None) until the session has reached step t; a wait that runs
        out raises `StepWaitTimeout`. `for_eval=True` asks for the weights to evaluate instead
        (`?for=eval`): schedule-free's x, ASGD's average, θ itself for the other types."""
        query: dict[str, Any] = {"for": "eval"} if for_eval else {}
        if wait_for_step is not None:
            query["wait_for_step"] = int(wait_for_step)
        if timeout is not None:
            query["timeout"] = timeout
        # The read timeout must outlast the server's wait.
        request_timeout = None if wait_for_step is None else self.client.timeout + (timeout or 0)
        accept = SAFETENSORS_MEDIA_TYPE if self.client._use_binary(self.size, binary) else None
        response = self._get(
            f"/v1/sessions/{self.id}/params", params=query, accept=accept, timeout=request_timeout
        )
        if media_type(response) == SAFETENSORS_MEDIA_TYPE:
            arrays, metadata = read_safetensors(response.content)
            if "step" in metadata:
                self.step_count = int(metadata["step"])
            return self._params_in_order(arrays)
        answer = response.json()
        self.step_count = int(answer["step"])
        return from_wire(answer["params"], self.dtype, self.layout)

    def history(self, *, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """The history records with `seq > after`, oldest first (every one, or `limit`): steps
        `{seq, kind: "step", step, lr, loss, grad_norm, update_norm, skipped, at, duration_ms}`
        and changes `{seq, kind: "change", step, at, changes}`. Reads page after page."""
        records: list[dict[str, Any]] = []
        cursor: int | None = after
        while cursor is not None and (limit is None or len(records) < limit):
            wanted = HISTORY_PAGE_LIMIT if limit is None else limit - len(records)
            page = self._get(
                f"/v1/sessions/{self.id}/history",
                params={"after": cursor, "limit": min(wanted, HISTORY_PAGE_LIMIT)},
            ).json()
            records.extend(page["records"])
            cursor = page["next"]
        return records

    def export(self, *, binary: bool | None = None) -> dict[str, Any]:
        """The full state (`GET …/state`): config, t, θ and every optimizer slot, as numpy.

        The dict is the `optaas-state/1` export format with arrays in place of nested lists;
        `Client.import_session` and `torch_state_dict` take it.
        """
        accept = SAFETENSORS_MEDIA_TYPE if self.client._use_binary(self.size, binary) else None
        response = self._get(f"/v1/sessions/{self.id}/state", accept=accept)
        if media_type(response) == SAFETENSORS_MEDIA_TYPE:
            return export_from_safetensors(response.content)
        return export_from_json(response.json())

    # -- changing ------------------------------------------------------------------------

    def patch(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """Change hyper-parameters or the schedule mid-run; t and the state are kept.

        `session.patch(optimizer={"lr": 1e-4})`, `session.patch(schedule={"type": "cosine",
        "total_steps": 1000})`: the fields given (`changes` and keywords together) are sent as
        they are; the answer, the session's new view, is returned.
        """
        body = {**(changes or {}), **fields}
        response = self.client.request(
            "PATCH", f"/v1/sessions/{self.id}", token=self.token, content=json_content(body)
        )
        view = response.json()
        self._remember(view)
        return view

    def fork(self, changes: Mapping[str, Any] | None = None, /, **fields: Any) -> Session:
        """A new session (new id and token) with this one's θ, state and t; optional overrides
        as in `patch`. Forking creates a session, so the client's `api_key` goes with it."""
        body = {**(changes or {}), **fields}
        response = self._post(
            f"/v1/sessions/{self.id}/fork",
            json_content(body),
            headers=self.client._api_key_header(),
        )
        return Session._from_created(self.client, response.json())

    def delete(self) -> None:
        """Delete the session and everything stored for it."""
        self.client.request(
            "DELETE", f"/v1/sessions/{self.id}", token=self.token, retried_404_is_gone=True
        )

    # -- internals -----------------------------------------------------------------------

    def _get(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        accept: str | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {"Accept": f"{accept}, {JSON_MEDIA_TYPE};q=0.5"} if accept else None
        return self.client.request(
            "GET", path, token=self.token, params=params, headers=headers, timeout=timeout
        )

    def _post(
        self,
        path: str,
        content: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        return self.client.request(
            "POST", path, token=self.token, content=content, headers=headers, params=params
        )

    def _view(self) -> dict[str, Any]:
        if not self.view:
            self.info()
        return self.view

    def _remember(self, view: Mapping[str, Any]) -> None:
        self.view = {key: value for key, value in view.items() if key != "token"}
        self.step_count = int(view["step"])

    def _remember_step(self, info: StepInfo) -> None:
        self.last_step = info
        self.step_count = info.step

    def _params_in_order(self, arrays: Mapping[str, np.ndarray]) -> Params:
        """A safetensors answer's tensors in the session's order and form and dtype (a tensor
        with `rows/<tensor>` beside it as `SparseRows`)."""
        return in_form(tensors_from_safetensors(arrays, self.shapes, self.dtype), self.layout)


def _return_query(return_params: bool | str) -> str:
    """`?return=`: `params` (θ, changed rows only for sparse gradients), `full` or `none`."""
    if return_params == "full":
        return "full"
    if isinstance(return_params, str):
        raise ValueError(f'return_params is True, False or "full", not {return_params!r}')
    return "params" if return_params else "none"


def _step_info_from_metadata(metadata: Mapping[str, str]) -> StepInfo:
    """A binary step answer's numbers: `__metadata__` values are JSON text (`"1"`, `"0.001"`,
    `"null"`, `"true"`); non-finite numbers count as absent, as JSON answers write them."""

    def read(key: str) -> Any:
        value = json.loads(metadata[key]) if key in metadata else None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    return StepInfo(
        step=int(read("step")),
        lr=read("lr"),
        grad_norm=read("grad_norm"),
        update_norm=read("update_norm"),
        skipped=read("skipped"),
    )
