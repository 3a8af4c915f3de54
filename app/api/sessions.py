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
from app.api.deps import ApiKeyDep, DatabaseDep, JsonBodyDep, SettingsDep, TokenDep
from app.api.openapi import json_request, problems
from app.schemas import (
    CreatedSession,
    CreateSession,
    ParamsResponse,
    SessionView,
    StepRequest,
    StepResponse,
)
from app.store.database import Database

Result = TypeVar("Result", bound=BaseModel | None)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


def etag(step: int) -> str:
    """The session's step count as a strong entity tag."""
    return f'"{step}"'


def json_bytes(model: BaseModel, *, exclude: set[str] | None = None) -> bytes:
    # model_dump in python mode hands numpy arrays through untouched; orjson writes them
    # (float32 as the shortest text that reads back to the same float32).
    return orjson.dumps(
        model.model_dump(exclude=exclude),
        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z,
    )


async def run_use_case(
    database: Database,
    use_case: Callable[[Session], Result],
    *,
    write: bool,
    exclude: set[str] | None = None,
) -> tuple[Result, bytes]:
    """In the thread pool: run `use_case` in one transaction, commit, then write its JSON."""

    def run() -> tuple[Result, bytes]:
        with database.transaction(write=write) as db:
            result = use_case(db)
        return result, b"" if result is None else json_bytes(result, exclude=exclude)

    return await run_in_threadpool(run)


@router.post(
    "",
    status_code=201,
    response_model=CreatedSession,
    summary="Create a session",
    response_description="The new session; its `token` is shown only here.",
    openapi_extra=json_request(CreateSession),
    responses=problems(400, 401, 413, 415, 422),
)
async def create_session(
    request: Request, database: DatabaseDep, _api_key: ApiKeyDep, body: JsonBodyDep
) -> Response:
    """A new optimisation run at t = 0 with θ₀ = `params`. Keep the `token`: it is not stored."""
    created, content = await run_use_case(
        database,
        lambda db: service.create_session(db, parse_json(body, CreateSession)),
        write=True,
    )
    location = request.app.url_path_for("get_session", session_id=str(created.id))
    return Response(
        content,
        status_code=201,
        media_type=JSON_MEDIA_TYPE,
        headers={"Location": str(location), "ETag": etag(created.step)},
    )


@router.get(
    "/{session_id}",
    response_model=SessionView,
    summary="Read a session",
    responses=problems(401, 404),
)
async def get_session(session_id: str, database: DatabaseDep, token: TokenDep) -> Response:
    """Its config with every default filled in, `step`, shapes, dtype, timestamps, last loss."""
    view, content = await run_use_case(
        database, lambda db: service.get_session(db, session_id, token), write=False
    )
    return Response(content, media_type=JSON_MEDIA_TYPE, headers={"ETag": etag(view.step)})


@router.delete(
    "/{session_id}",
    status_code=204,
    summary="Delete a session",
    response_class=Response,
    responses=problems(401, 404),
)
async def delete_session(session_id: str, database: DatabaseDep, token: TokenDep) -> Response:
    """The session and everything stored for it."""
    await run_use_case(
        database, lambda db: service.delete_session(db, session_id, token), write=True
    )
    return Response(status_code=204)


@router.post(
    "/{session_id}/step",
    response_model=StepResponse,
    summary="Apply one gradient",
    openapi_extra=json_request(StepRequest),
    responses=problems(400, 401, 404, 413, 415, 422),
)
async def step_session(
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    body: JsonBodyDep,
    settings: SettingsDep,
    returns: Annotated[
        Literal["params", "none"],
        Query(alias="return", description="`none` leaves `params` out of the answer."),
    ] = "params",
) -> Response:
    """θ ← θ − η_t/(σ_t + eps) · m_t for the posted gradient; answers with the new θ.

    The gradient must match every parameter's name and shape (unless `partial`). Steps on one
    session are applied one at a time; the `ETag` header carries the new step count.
    """
    return_params = returns == "params"
    result, content = await run_use_case(
        database,
        lambda db: service.step(
            db,
            session_id,
            token,
            parse_json(body, StepRequest),
            return_params=return_params,
            history_max_records=settings.history_max_records,
        ),
        write=True,
        exclude=None if return_params else {"params"},
    )
    return Response(content, media_type=JSON_MEDIA_TYPE, headers={"ETag": etag(result.step)})


@router.get(
    "/{session_id}/params",
    response_model=ParamsResponse,
    summary="Read the parameters",
    responses=problems(401, 404),
)
async def get_params(session_id: str, database: DatabaseDep, token: TokenDep) -> Response:
    """θ_t in the form the session was created with, and the step count t."""
    params, content = await run_use_case(
        database, lambda db: service.get_params(db, session_id, token), write=False
    )
    return Response(content, media_type=JSON_MEDIA_TYPE, headers={"ETag": etag(params.step)})
