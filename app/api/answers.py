"""Answers of the session endpoints: JSON (orjson, numpy arrays as they are) or safetensors,
each with the `ETag` of the step it shows; `Location` for new sessions and accepted steps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from optaas_state import PIECE_BYTES, in_pieces, safetensors_pieces
from pydantic import BaseModel

from app import exports
from app.api.bodies import JSON_MEDIA_TYPE
from app.api.conditions import etag
from app.api.idempotency import Answer
from app.exports import SessionState
from app.optim import SparseRows
from app.schemas import (
    CreatedSession,
    ParamsResponse,
    SessionView,
    StepAccepted,
    StepResponse,
)
from app.service import Accepted, Created, Params, SessionInfo, Stepped
from app.tensors import (
    SAFETENSORS_MEDIA_TYPE,
    tensors_by_name,
    tensors_to_json,
)


def json_bytes(model: BaseModel, *, exclude: set[str] | None = None) -> bytes:
    # model_dump in python mode hands numpy arrays through untouched; orjson writes them
    # (float32 as the shortest text that reads back to the same float32).
    return orjson.dumps(
        model.model_dump(exclude=exclude),
        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z,
    )


def session_answer(
    model: BaseModel,
    step: int,
    *,
    status: int = 200,
    exclude: set[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """A JSON answer that shows a session at `step`: its `ETag` goes with it."""
    headers = {"Content-Type": JSON_MEDIA_TYPE, "ETag": etag(step), **(headers or {})}
    return Answer(status, headers, json_bytes(model, exclude=exclude))


def session_view(info: SessionInfo) -> SessionView:
    """The session's wire view: its config's fields beside its identity and progress (every
    other field of `SessionInfo`, by the same name)."""
    facts = {field.name: getattr(info, field.name) for field in fields(info)}
    return SessionView(**facts.pop("config"), **facts)


def info_answer(info: SessionInfo) -> Answer:
    """200 with the session's view and the `ETag` of its step."""
    return session_answer(session_view(info), info.step)


def accepted_answer(request: Request, session_id: str, accepted: Accepted) -> Answer:
    """202: the gradient is counted toward the next step; `Location` is where to wait for it."""
    params = request.app.url_path_for("get_params", session_id=session_id)
    location = f"{params}?wait_for_step={accepted.wait_for_step}"
    view = StepAccepted(
        step=accepted.step,
        received=accepted.received,
        missing=accepted.missing,
        wait_for_step=accepted.wait_for_step,
    )
    return session_answer(view, accepted.step, status=202, headers={"Location": location})


def step_response(stepped: Stepped) -> StepResponse:
    """A step's JSON answer: θ in the session's form (None: not asked for)."""
    params = stepped.params
    return StepResponse(
        step=stepped.step,
        lr=stepped.lr,
        params=None if params is None else tensors_to_json(stepped.layout, params),
        grad_norm=stepped.grad_norm,
        update_norm=stepped.update_norm,
        skipped=stepped.skipped,
    )


def params_response(params: Params) -> ParamsResponse:
    """θ_t's JSON answer, in the session's form."""
    return ParamsResponse(step=params.step, params=tensors_to_json(params.layout, params.params))


def step_metadata(result: Stepped) -> dict[str, str]:
    """A step's numbers as a safetensors answer's `__metadata__`: each as JSON text."""
    return {
        name: orjson.dumps(getattr(result, name)).decode()
        for name in ("step", "lr", "grad_norm", "update_norm", "skipped")
    }


def safetensors_answer(
    params: Mapping[str, np.ndarray | SparseRows] | None, step: int, metadata: dict[str, str]
) -> StreamedAnswer:
    """A safetensors answer showing a session at `step`: θ by tensor name (none if `params` is
    None, e.g. `?return=none`; a tensor's changed rows as `rows/<tensor>` beside its values)
    and `metadata`; its `ETag` goes with it. Sent from views of the arrays, so `params` must
    stay as they are until it is sent (a step's θ detached from the working set)."""
    tensors = {} if params is None else tensors_by_name(dict(params))
    headers = {"Content-Type": SAFETENSORS_MEDIA_TYPE, "ETag": etag(step)}
    return StreamedAnswer(200, headers, safetensors_pieces(tensors, metadata))


def created_answer(request: Request, created: Created) -> Answer:
    """201 with the new session (its token shown this once), its `Location` and `ETag`."""
    info = created.session
    location = request.app.url_path_for("get_session", session_id=str(info.id))
    view = CreatedSession(**session_view(info).model_dump(), token=created.token)
    return session_answer(view, info.step, status=201, headers={"Location": location})


def state_answer(state: SessionState, *, binary: bool) -> Answer | StreamedAnswer:
    """The export. As a safetensors file it is streamed from the arrays (no second whole copy
    of θ and the state is made for the body); the JSON document is made whole."""
    headers = {"ETag": etag(state.step), "Vary": "Accept"}
    if binary:
        headers["Content-Type"] = SAFETENSORS_MEDIA_TYPE
        return StreamedAnswer(200, headers, exports.safetensors_pieces_of(state))
    return Answer(200, {"Content-Type": JSON_MEDIA_TYPE, **headers}, exports.to_json(state))


@dataclass(frozen=True)
class StreamedAnswer:
    """An answer whose body is sent piece by piece (views of arrays, at most `PIECE_BYTES`
    each), never joined into one bytes object; its `Content-Length` is known beforehand.

    A body of one piece or less is sent whole (streaming it would cost more than the copy).
    One bytes object of hundreds of MB handed to the socket would be copied again by asyncio's
    transport (Python 3.11 keeps what a send did not take in a buffer of its own), so a large
    answer sent whole costs its size twice over in memory and time."""

    status: int
    headers: dict[str, str]
    pieces: Sequence[bytes | memoryview]

    def kept(self) -> Answer:
        """The answer as bytes of its own (one copy of the arrays): to keep with an
        `Idempotency-Key`, or to send after the arrays it views may have changed."""
        return Answer(self.status, self.headers, b"".join(self.pieces))

    def response(self) -> Response:
        length = sum(memoryview(piece).nbytes for piece in self.pieces)
        if length <= PIECE_BYTES:
            return self.kept().response()
        return StreamingResponse(
            self._body(),
            status_code=self.status,
            headers={**self.headers, "Content-Length": str(length)},
        )

    async def _body(self) -> AsyncIterator[memoryview]:
        # An asynchronous iterator: Starlette would hand each piece of a synchronous one to
        # the thread pool and back.
        for piece in self.pieces:
            for part in in_pieces(piece):
                yield part
