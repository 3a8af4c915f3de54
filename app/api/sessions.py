"""`/v1/sessions`: create, read, step and delete sessions; read their parameters.

Each endpoint does its blocking work — parsing, the database, numpy, JSON of big arrays — in one
call into the thread pool, inside one transaction that commits before the response is sent: an
acknowledged step is a committed step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import service
from app.api.bodies import JSON_MEDIA_TYPE, parse_json, parse_tensor_body
from app.api.conditions import IfMatchDep, etag
from app.api.deps import (
    ApiKeyDep,
    DatabaseDep,
    JsonBodyDep,
    SafetensorsAnswerDep,
    SettingsDep,
    TensorBodyDep,
    TokenDep,
)
from app.api.idempotency import (
    Answer,
    IdempotencyDep,
    IdempotencyKeeper,
    Replay,
    creation_scope,
    session_scope,
)
from app.api.openapi import (
    PARAMS_ANSWER_FILE,
    STEP_ANSWER_FILE,
    STEP_FILE,
    json_request,
    problems,
    session_headers,
    tensor_request,
)
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
from app.tensors import SAFETENSORS_MEDIA_TYPE, tensors_by_name, tensors_to_safetensors

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
    answer_in_transaction: bool = False,
) -> Response:
    """In the thread pool: run `use_case` in one transaction, commit, then answer.

    With an `Idempotency-Key` (`keeper`), the use case names the key's scope, and the answer is
    made inside the transaction and kept with the change it reports; a repeat of a request
    that was applied gets the kept answer instead (see `app.api.idempotency`). With
    `answer_in_transaction` the answer is made before the commit too (when making it is quick,
    as a safetensors file is: the result may then show arrays that the commit hands on).
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
                if keeper is not None or answer_in_transaction:
                    made = answer(result)
                    if keeper is not None:
                        keeper.keep(db, made)
                    return made.response()
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
        return service.create_session(db, parse_json(body, CreateSession, tensors=("params",)))

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
    openapi_extra=tensor_request(StepRequest, STEP_FILE, "Idempotency-Key", "If-Match"),
    responses={
        **session_headers(200, binary=STEP_ANSWER_FILE),
        **problems(400, 401, 404, 412, 413, 415, 422, 503),
    },
)
async def step_session(
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    body: TensorBodyDep,
    keeper: IdempotencyDep,
    precondition: IfMatchDep,
    settings: SettingsDep,
    binary_answer: SafetensorsAnswerDep,
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

    Binary form: send the gradients as a safetensors file (`Content-Type:
    application/vnd.safetensors`, tensors by name, `loss` and `partial` in `__metadata__`);
    ask for `Accept: application/vnd.safetensors` to get θ back as one (`step`, `lr`,
    `grad_norm`, `update_norm`, `skipped` in its `__metadata__`). Either may go with JSON.
    """
    return_params = returns == "params"
    # Made before the commit, a safetensors answer can show θ as it is, where the next step
    # would update it in place afterwards (a memory:// step's arrays are never updated again).
    copies_saved = binary_answer and database.arrays.reuses_working_sets
    in_transaction = keeper is not None or copies_saved

    def check(record: SessionRecord) -> None:  # with the session locked
        if keeper is not None:
            keeper.scope(session_scope(record.id), record.id)
        if precondition is not None:
            precondition.require(record.step)

    def apply(db: Session) -> StepResponse:
        request = parse_tensor_body(body, StepRequest, "gradients")
        return service.step(
            db,
            session_id,
            token,
            request,
            return_params=return_params,
            guard=check,
            history_max_records=settings.history_max_records,
            answer_after_commit=not in_transaction,
        )

    def answer(result: StepResponse) -> Answer:
        if binary_answer:
            return safetensors_answer(result.params, result.step, step_metadata(result))
        return session_answer(result, result.step, exclude=None if return_params else {"params"})

    return await run_use_case(
        database, apply, answer, write=True, keeper=keeper, answer_in_transaction=copies_saved
    )


@router.get(
    "/{session_id}/params",
    response_model=ParamsResponse,
    summary="Read the parameters",
    responses=session_headers(200, binary=PARAMS_ANSWER_FILE) | problems(401, 404, 503),
)
async def get_params(
    session_id: str, database: DatabaseDep, token: TokenDep, binary_answer: SafetensorsAnswerDep
) -> Response:
    """θ_t in the form the session was created with, and the step count t.

    With `Accept: application/vnd.safetensors`: a safetensors file of θ_t by tensor name (the
    single form's tensor is `params`), `step` in its `__metadata__`.
    """

    def answer(params: ParamsResponse) -> Answer:
        if binary_answer:
            return safetensors_answer(params.params, params.step, {"step": str(params.step)})
        return session_answer(params, params.step)

    return await run_use_case(
        database,
        lambda db: service.get_params(db, session_id, token),
        answer,
        write=False,
    )


def step_metadata(result: StepResponse) -> dict[str, str]:
    """A step's numbers as a safetensors answer's `__metadata__`: each as JSON text."""
    return {
        name: orjson.dumps(getattr(result, name)).decode()
        for name in ("step", "lr", "grad_norm", "update_norm", "skipped")
    }


def safetensors_answer(params: Any, step: int, metadata: dict[str, str]) -> Answer:
    """A safetensors answer showing a session at `step`: θ by tensor name (none if `params` is
    None, e.g. `?return=none`) and `metadata`; its `ETag` goes with it."""
    tensors = {} if params is None else tensors_by_name(params)
    headers = {"Content-Type": SAFETENSORS_MEDIA_TYPE, "ETag": etag(step)}
    return Answer(200, headers, tensors_to_safetensors(tensors, metadata))
