"""`/v1/sessions`: create, read, step and delete sessions; read their parameters.

Each endpoint does its blocking work — parsing, the database, numpy, JSON of big arrays — in one
call into the thread pool, inside one transaction that commits before the response is sent: an
acknowledged step is a committed step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import service
from app.api.bodies import JSON_MEDIA_TYPE, parse_json
from app.api.conditions import IfMatchDep, etag
from app.api.deps import ApiKeyDep, DatabaseDep, JsonBodyDep, SettingsDep, TokenDep
from app.api.idempotency import (
    Answer,
    IdempotencyDep,
    IdempotencyKeeper,
    Replay,
    creation_scope,
    session_scope,
)
from app.api.openapi import json_request, problems, session_headers
from app.errors import OptaasError
from app.optim import OptimError
from app.schemas import (
    CreatedSession,
    CreateSession,
    ParamsResponse,
    SessionView,
    StepRequest,
    StepResponse,
)
from app.store.database import Database
from app.store.models import SessionRecord

Result = TypeVar("Result", bound=BaseModel | None)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


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


async def run_use_case(
    database: Database,
    use_case: Callable[[Session], Result],
    answer: Callable[[Result], Answer],
    *,
    write: bool,
    keeper: IdempotencyKeeper | None = None,
) -> Response:
    """In the thread pool: run `use_case` in one transaction, commit, then answer.

    With an `Idempotency-Key` (`keeper`), the use case names the key's scope, and the answer is
    made inside the transaction and kept with the change it reports; a repeat of a request
    that was applied gets the kept answer instead (see `app.api.idempotency`).
    """

    def run() -> Response:
        try:
            with database.transaction(write=write) as db:
                try:
                    result = use_case(db)
                except (OptaasError, OptimError):
                    if keeper is not None:  # a repeat that fails where its original did not
                        keeper.replay_if_kept(db)
                    raise
                if keeper is not None:
                    kept = answer(result)
                    keeper.keep(db, kept)
                    return kept.response()
        except Replay as replay:
            return replay.answer.response(replayed=True)
        return answer(result).response()

    return await run_in_threadpool(run)


@router.post(
    "",
    status_code=201,
    response_model=CreatedSession,
    summary="Create a session",
    response_description="The new session; its `token` is shown only here.",
    openapi_extra=json_request(CreateSession, "Idempotency-Key"),
    responses={**session_headers(201, location=True), **problems(400, 401, 413, 415, 422, 503)},
)
async def create_session(
    request: Request,
    database: DatabaseDep,
    api_key: ApiKeyDep,
    body: JsonBodyDep,
    keeper: IdempotencyDep,
) -> Response:
    """A new optimisation run at t = 0 with θ₀ = `params`. Keep the `token`: it is not stored.

    With an `Idempotency-Key` (unique per API key), a retry gets the same session back.
    """

    def create(db: Session) -> CreatedSession:
        if keeper is not None:
            keeper.scope(creation_scope("create", api_key))
        return service.create_session(db, parse_json(body, CreateSession))

    def answer(created: CreatedSession) -> Answer:
        location = request.app.url_path_for("get_session", session_id=str(created.id))
        return session_answer(created, created.step, status=201, headers={"Location": location})

    return await run_use_case(database, create, answer, write=True, keeper=keeper)


@router.get(
    "/{session_id}",
    response_model=SessionView,
    summary="Read a session",
    responses={**session_headers(200), **problems(401, 404, 503)},
)
async def get_session(session_id: str, database: DatabaseDep, token: TokenDep) -> Response:
    """Its config with every default filled in, `step`, shapes, dtype, timestamps, last loss."""
    return await run_use_case(
        database,
        lambda db: service.get_session(db, session_id, token),
        lambda view: session_answer(view, view.step),
        write=False,
    )


@router.delete(
    "/{session_id}",
    status_code=204,
    summary="Delete a session",
    response_class=Response,
    responses=problems(401, 404, 503),
)
async def delete_session(session_id: str, database: DatabaseDep, token: TokenDep) -> Response:
    """The session and everything stored for it (its idempotency records included)."""
    return await run_use_case(
        database,
        lambda db: service.delete_session(db, session_id, token),
        lambda _: Answer(204, {}, b""),
        write=True,
    )


@router.post(
    "/{session_id}/step",
    response_model=StepResponse,
    summary="Apply one gradient",
    openapi_extra=json_request(StepRequest, "Idempotency-Key", "If-Match"),
    responses={**session_headers(200), **problems(400, 401, 404, 412, 413, 415, 422, 503)},
)
async def step_session(
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    body: JsonBodyDep,
    keeper: IdempotencyDep,
    precondition: IfMatchDep,
    settings: SettingsDep,
    returns: Annotated[
        Literal["params", "none"],
        Query(alias="return", description="`none` leaves `params` out of the answer."),
    ] = "params",
) -> Response:
    """θ ← θ − η_t/(σ_t + eps) · m_t for the posted gradient; answers with the new θ.

    The gradient must match every parameter's name and shape (unless `partial`). Steps on one
    session are applied one at a time; the `ETag` header carries the new step count. With
    `If-Match` the step is applied only at that step (else 412); with an `Idempotency-Key` it
    is applied once, and a retry gets the same answer (`Idempotent-Replayed: true`).
    """
    return_params = returns == "params"

    def check(record: SessionRecord) -> None:  # with the session locked
        if keeper is not None:
            keeper.scope(session_scope(record.id), record.id)
        if precondition is not None:
            precondition.require(record.step)

    def apply(db: Session) -> StepResponse:
        request = parse_json(body, StepRequest)
        return service.step(
            db,
            session_id,
            token,
            request,
            return_params=return_params,
            guard=check,
            history_max_records=settings.history_max_records,
        )

    return await run_use_case(
        database,
        apply,
        lambda result: session_answer(
            result, result.step, exclude=None if return_params else {"params"}
        ),
        write=True,
        keeper=keeper,
    )


@router.get(
    "/{session_id}/params",
    response_model=ParamsResponse,
    summary="Read the parameters",
    responses={**session_headers(200), **problems(401, 404, 503)},
)
async def get_params(session_id: str, database: DatabaseDep, token: TokenDep) -> Response:
    """θ_t in the form the session was created with, and the step count t."""
    return await run_use_case(
        database,
        lambda db: service.get_params(db, session_id, token),
        lambda params: session_answer(params, params.step),
        write=False,
    )
