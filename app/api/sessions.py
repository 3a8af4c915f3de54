"""`/v1/sessions`: create, read, step, change, fork, export, import and delete sessions; read
their parameters (waiting for a step, if asked).

Each endpoint does its blocking work — parsing, the database, numpy, JSON of big arrays — in one
call into the thread pool, inside one transaction that commits before the response is sent: an
acknowledged step is a committed step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app import exports, service
from app.api import inputs
from app.api.admission import (
    CreationCallerDep,
    GateDep,
    StepFactsDep,
    creation_admission,
    fork_admission,
    import_admission,
    patch_admission,
    step_admission,
)
from app.api.answers import (
    StreamedAnswer,
    accepted_answer,
    created_answer,
    info_answer,
    params_response,
    safetensors_answer,
    session_answer,
    state_answer,
    step_metadata,
    step_response,
)
from app.api.bodies import (
    TensorBody,
    parse_json,
    parse_settings_file,
    read_body,
    tensor_body,
    validate,
)
from app.api.conditions import IfMatchDep, if_match
from app.api.deps import (
    ClockDep,
    DatabaseDep,
    JsonBodyDep,
    SafetensorsAnswerDep,
    SettingsDep,
    TensorBodyDep,
    TokenDep,
    answer_in_safetensors,
    bearer_credentials,
    session_token,
)
from app.api.direct import direct_route
from app.api.errors import validation_problem
from app.api.idempotency import (
    Answer,
    IdempotencyDep,
    creation_scope,
    idempotency_keeper,
    session_scope,
)
from app.api.openapi import (
    CREATE_FILE,
    IMPORT_FILE,
    PARAMS_ANSWER_FILE,
    STATE_ANSWER_FILE,
    STEP_ANSWER_FILE,
    STEP_FILE,
    accepted_step_response,
    json_request,
    problems,
    session_headers,
    tensor_request,
)
from app.api.runner import run_use_case
from app.api.waiting import query_problem, wait_seconds, wait_until_step
from app.exports import SessionState
from app.schemas import (
    MAX_STEP,
    CreatedSession,
    CreateSession,
    ParamsResponse,
    SessionPatch,
    SessionView,
    StateExport,
    StateHeader,
    StepRequest,
    StepResponse,
)
from app.service import Accepted, Created, GradientPost, Params, SessionInfo, Stepped
from app.store.models import SessionRecord
from app.tensors import tensors_from_safetensors

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.post(
    "",
    status_code=201,
    response_model=CreatedSession,
    summary="Create a session",
    response_description="The new session; its `token` is shown only here.",
    openapi_extra=tensor_request(CreateSession, CREATE_FILE, "Idempotency-Key"),
    responses={
        **session_headers(201, location=True),
        **problems(400, 401, 408, 413, 415, 422, 429, 503),
    },
    dependencies=[Depends(creation_admission)],
)
async def create_session(
    request: Request,
    database: DatabaseDep,
    caller: CreationCallerDep,
    body: TensorBodyDep,
    keeper: IdempotencyDep,
) -> Response:
    """A new optimisation run at t = 0 with θ₀ = `params`. Keep the `token`: it is not stored.

    Large models: send θ₀ as a safetensors file (`Content-Type: application/vnd.safetensors`),
    tensors by name, with the rest of the JSON body as JSON text under `optaas` in its
    `__metadata__`. With an `Idempotency-Key` (unique per API key, or per address on a server
    without keys), a retry gets the same session back.
    """

    if keeper is not None:
        keeper.scope(creation_scope("create", caller))
    return await run_use_case(
        database,
        service.create_session,
        lambda created: created_answer(request, created),
        write=True,
        parse=lambda: inputs.new_session(read_creation(body)),
        keeper=keeper,
    )


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
        info_answer,
        write=False,
    )


@router.delete(
    "/{session_id}",
    status_code=204,
    summary="Delete a session",
    response_class=Response,
    responses=problems(401, 404, 503),
)
async def delete_session(
    session_id: str, database: DatabaseDep, token: TokenDep, gate: GateDep
) -> Response:
    """The session and everything stored for it (its idempotency records included)."""
    response = await run_use_case(
        database,
        lambda db: service.delete_session(db, session_id, token),
        lambda _: Answer(204, {}, b""),
        write=True,
    )
    gate.forget(session_id)
    return response


async def step_session(
    request: Request,
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    body: TensorBodyDep,
    keeper: IdempotencyDep,
    precondition: IfMatchDep,
    settings: SettingsDep,
    binary_answer: SafetensorsAnswerDep,
    facts: StepFactsDep,
    returns: Annotated[
        Literal["params", "full", "none"],
        Query(
            alias="return",
            description=(
                "`params`: θ, where a tensor stepped by sparse rows shows only the rows it "
                "changed; `full`: every tensor whole; `none` leaves `params` out."
            ),
        ),
    ] = "params",
) -> Response:
    """θ ← θ − η_t/(σ_t + eps) · m_t for the posted gradient; answers with the new θ.

    The gradient must match every parameter's name and shape (unless `partial`). Steps on one
    session are applied one at a time; the `ETag` header carries the new step count. With
    `If-Match` the step is applied only at that step (else 412); with an `Idempotency-Key` it
    is applied once, and a retry gets the same answer (`Idempotent-Replayed: true`).

    With `accumulate` K > 1, the first K−1 gradients of a step answer 202 with how many are
    still `missing` (and `Location`: where to wait for the step); the K-th applies their mean
    and answers 200 as above.

    Binary form: send the gradients as a safetensors file (`Content-Type:
    application/vnd.safetensors`, tensors by name, `loss` and `partial` in `__metadata__`);
    ask for `Accept: application/vnd.safetensors` to get θ back as one (`step`, `lr`,
    `grad_norm`, `update_norm`, `skipped` in its `__metadata__`). Either may go with JSON.

    Sparse rows (embedding tables; `sparse_adam`, `adagrad` and `sgd` without momentum): a
    tensor's gradient may be `{"rows": [i, …], "values": [[…], …]}` (in a file: the integer
    vector `rows/<tensor>` beside `<tensor>`), repeated rows summed. The answer then holds,
    for that tensor, only the rows the step changed, in the same form (`?return=full`: whole).
    """
    return_params = returns != "none"

    def check(record: SessionRecord) -> None:  # with the session locked
        if keeper is not None:
            keeper.scope(session_scope(record.id), record.id)
        if precondition is not None:
            precondition.require(record.step)

    def apply(db: Session, post: GradientPost) -> Stepped | Accepted:
        return service.step(
            db,
            session_id,
            token,
            post,
            return_params=return_params,
            full_tensors=returns == "full",
            guard=check,
            history_max_records=settings.history_max_records,
        )

    def answer(result: Stepped | Accepted) -> Answer | StreamedAnswer:
        if isinstance(result, Accepted):
            return accepted_answer(request, session_id, result)
        if binary_answer:
            return safetensors_answer(result.params, result.step, step_metadata(result))
        exclude = None if return_params else {"params"}
        return session_answer(step_response(result), result.step, exclude=exclude)

    # Either answer is made after the commit, from θ the runner detaches first (a copy only of
    # a working set the next step may update in place); a safetensors file is then streamed
    # from those arrays, with no copy of its own.
    return await run_use_case(
        database,
        apply,
        answer,
        write=True,
        parse=lambda: inputs.gradient_post(body, facts),
        keeper=keeper,
        inline=tiny_step(facts, body),
    )


STEP_RETURNS = ("params", "full", "none")


async def direct_step(request: Request) -> Response | None:
    """`step_session` with its dependencies called by hand, in the order FastAPI resolves them
    (the route's admission, then the parameters as declared): the step route's `DirectRoute`
    handler. A query other than one valid `return` is left to FastAPI (None), which validates
    it as it always did."""
    returns = "params"
    if request.scope["query_string"]:
        given = request.query_params
        if list(given) != ["return"] or len(given.getlist("return")) != 1:
            return None
        returns = given["return"]
        if returns not in STEP_RETURNS:
            return None
    state = request.app.state
    session_id = request.path_params["session_id"]
    token = await session_token(await bearer_credentials(request))
    facts = await step_admission(
        request, session_id, token, state.database, state.settings, state.session_gate
    )
    body = await tensor_body(request)
    keeper = await idempotency_keeper(request, state.settings, await read_body(request))
    return await step_session(
        request,
        session_id,
        state.database,
        token,
        body,
        keeper,
        await if_match(request),
        state.settings,
        await answer_in_safetensors(request),
        facts,
        returns,  # type: ignore[arg-type]
    )


router.add_api_route(
    "/{session_id}/step",
    step_session,
    methods=["POST"],
    response_model=StepResponse,
    summary="Apply one gradient",
    openapi_extra=tensor_request(StepRequest, STEP_FILE, "Idempotency-Key", "If-Match"),
    responses={
        **session_headers(200, binary=STEP_ANSWER_FILE),
        **accepted_step_response(),
        **problems(400, 401, 404, 408, 412, 413, 415, 422, 503),
    },
    dependencies=[Depends(step_admission)],
    route_class_override=direct_route(direct_step),
)


INLINE_STEP_ELEMENTS = 4096
"""Parameters of a session whose steps run on the event loop (`run_use_case(inline=True)`): a
step of this size (parse, update, answer) costs less CPU than a hand-off to a thread and back."""
INLINE_STEP_BODY_BYTES = 64 * 1024


def tiny_step(facts: service.SessionFacts, body: TensorBody) -> bool:
    """Whether a step is small enough to run on the event loop: a small session, a small body."""
    return facts.elements <= INLINE_STEP_ELEMENTS and len(body.data) <= INLINE_STEP_BODY_BYTES


@router.get(
    "/{session_id}/params",
    response_model=ParamsResponse,
    summary="Read the parameters",
    responses={
        **session_headers(200, binary=PARAMS_ANSWER_FILE),
        **problems(401, 404, 408, 422, 503),
    },
)
async def get_params(
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    settings: SettingsDep,
    clock: ClockDep,
    binary_answer: SafetensorsAnswerDep,
    wait_for_step: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_STEP,
            description=(
                "Answer once the session has reached this step (t ≥ it), e.g. the "
                "`wait_for_step` of a 202; 408 if it has not within `timeout`."
            ),
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        Query(
            ge=0,
            allow_inf_nan=False,
            description=(
                "Seconds to wait for `wait_for_step` (default 10, at most the server's "
                "`OPTAAS_MAX_WAIT_SECONDS`)."
            ),
        ),
    ] = None,
    view: Annotated[
        Literal["eval"] | None,
        Query(
            alias="for",
            description=(
                "`eval`: the weights to evaluate and ship rather than θ — schedule-free's x "
                "(θ is y, where gradients are taken), ASGD's average `ax`; θ itself for the "
                "other types."
            ),
        ),
    ] = None,
) -> Response:
    """θ_t in the form the session was created with, and the step count t (`?for=eval`: the
    weights to evaluate, see below).

    With `wait_for_step`, the answer waits until the session has reached that step — say the
    step a worker's accumulated gradient is part of — or until `timeout`, when it is a 408 that
    says at which step the session is (and, while gradients are being accumulated, how many
    are still missing). Waiting holds no database connection: the session's step is read ten
    times a second, so it works across server processes.

    With `Accept: application/vnd.safetensors`: a safetensors file of θ_t by tensor name (the
    single form's tensor is `params`), `step` in its `__metadata__`.
    """

    def answer(params: Params) -> Answer | StreamedAnswer:
        if binary_answer:
            return safetensors_answer(params.params, params.step, {"step": str(params.step)})
        return session_answer(params_response(params), params.step)

    if wait_for_step is not None:
        seconds = wait_seconds(timeout, settings)
        await wait_until_step(database, session_id, token, wait_for_step, seconds, clock)
    elif timeout is not None:
        raise query_problem("timeout", "timeout needs wait_for_step", "missing_dependency")
    return await run_use_case(
        database,
        lambda db: service.get_params(db, session_id, token, for_eval=view == "eval"),
        answer,
        write=False,
    )


@contextmanager
def patch_problems() -> Iterator[None]:
    """A patched config of the wrong shape is the body's 422, located as in the patch."""
    try:
        yield
    except ValidationError as error:
        raise validation_problem(list(error.errors()), prefix=("body",)) from None


@router.patch(
    "/{session_id}",
    response_model=SessionView,
    summary="Change hyper-parameters mid-run",
    openapi_extra=json_request(SessionPatch, "If-Match"),
    responses={**session_headers(200), **problems(400, 401, 404, 408, 412, 413, 415, 422, 503)},
    dependencies=[Depends(patch_admission)],
)
async def patch_session(
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    body: JsonBodyDep,
    precondition: IfMatchDep,
    settings: SettingsDep,
) -> Response:
    """Change the optimizer's hyper-parameters, the schedule, clipping, `nonfinite`, `groups`,
    `accumulate` or the name; t, θ and the state are kept, and the change is recorded in the
    history.

    The body is a JSON merge patch (RFC 7396) of the session's config: `{"optimizer": {"lr":
    0.005}}` changes lr alone; `null` restores a field's default; an object with another `type`
    replaces the old one whole (a new schedule). The optimizer's `type` cannot change (422
    `optimizer-type-change`: fork the session instead). Steps are applied under the old config
    or the new one, never a mix. With `If-Match` the change is made only at that step (else
    412). Pending accumulated gradients are kept and join the next step.
    """

    def check(record: SessionRecord) -> None:  # with the session locked
        if precondition is not None:
            precondition.require(record.step)

    def change(db: Session, patch: dict[str, Any]) -> SessionInfo:
        with patch_problems():
            return service.patch_session(
                db,
                session_id,
                token,
                patch,
                guard=check,
                history_max_records=settings.history_max_records,
            )

    return await run_use_case(
        database,
        change,
        info_answer,
        write=True,
        parse=lambda: inputs.config_patch(body),
    )


@router.post(
    "/{session_id}/fork",
    status_code=201,
    response_model=CreatedSession,
    summary="Fork a session",
    response_description="The new session; its `token` is shown only here.",
    openapi_extra=json_request(SessionPatch, "Idempotency-Key", "If-Match", required=False),
    responses={
        **session_headers(201, location=True),
        **problems(400, 401, 404, 408, 412, 413, 415, 422, 429, 503),
    },
    dependencies=[Depends(fork_admission)],
)
async def fork_session(
    request: Request,
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    body: JsonBodyDep,
    keeper: IdempotencyDep,
    precondition: IfMatchDep,
    settings: SettingsDep,
) -> Response:
    """A new session — new id, new token — with the same θ, state, t and config; the body
    (optional) overrides the config as a PATCH would, the optimizer's type included (slots the
    new optimizer keeps start fresh). Both sessions then go their own ways.

    Needs the source's token, and `X-API-Key` when the server has API keys (it creates a
    session). With `If-Match` the fork is made only at that step; with an `Idempotency-Key`
    (unique among the source's keys) a retry gets the same fork back.
    """

    def check(source: SessionRecord) -> None:  # with the source locked
        if keeper is not None:
            keeper.scope(session_scope(source.id), source.id)
        if precondition is not None:
            precondition.require(source.step)

    def fork(db: Session, overrides: dict[str, Any]) -> Created:
        with patch_problems():
            return service.fork_session(
                db,
                session_id,
                token,
                overrides,
                guard=check,
                history_max_records=settings.history_max_records,
            )

    return await run_use_case(
        database,
        fork,
        lambda created: created_answer(request, created),
        write=True,
        parse=lambda: inputs.config_patch(body, optional=True),
        keeper=keeper,
    )


def read_creation(body: TensorBody) -> CreateSession:
    """Blocking: a creation from a JSON body, or from a safetensors file of θ₀ with the
    settings in its `__metadata__` (400 / 422 on failure)."""
    if body.binary:
        return parse_settings_file(body.data, CreateSession, "params")
    return parse_json(body.data, CreateSession, tensors=("params",))


@router.get(
    "/{session_id}/state",
    response_model=StateExport,
    summary="Export a session",
    response_description="The export (`optaas-state/1`), in JSON or as a safetensors file.",
    responses={**session_headers(200, binary=STATE_ANSWER_FILE), **problems(401, 404, 503)},
)
async def get_state(
    session_id: str, database: DatabaseDep, token: TokenDep, binary: SafetensorsAnswerDep
) -> Response:
    """Everything needed to continue the run elsewhere: the config with every default, t, θ and
    every state slot under torch's names (`exp_avg`, `exp_avg_sq`, `momentum_buffer`, …, and
    each tensor's own `step`), the schedule's state and the last loss.

    JSON by default; with `Accept: application/vnd.safetensors` a safetensors file whose
    tensors are `param/<tensor>` (θ) and `<slot>/<tensor>`, the rest in its `__metadata__`.
    `POST /v1/sessions/import` takes either back. Gradients pending in an accumulation are not
    part of an export.
    """
    return await run_use_case(
        database,
        lambda db: service.export_state(db, session_id, token),
        lambda state: state_answer(state, binary=binary),
        write=True,  # the session is locked while read: one consistent step
    )


@router.post(
    "/import",
    status_code=201,
    response_model=CreatedSession,
    summary="Import a session",
    response_description="The new session; its `token` is shown only here.",
    openapi_extra=tensor_request(StateExport, IMPORT_FILE, "Idempotency-Key"),
    responses={
        **session_headers(201, location=True),
        **problems(400, 401, 408, 413, 415, 422, 429, 503),
    },
    dependencies=[Depends(import_admission)],
)
async def import_session(
    request: Request,
    database: DatabaseDep,
    caller: CreationCallerDep,
    body: TensorBodyDep,
    keeper: IdempotencyDep,
) -> Response:
    """A new session (new id and token) from an export (`GET …/state`), in JSON or as a
    safetensors file: it continues the run exactly where the export left it.

    Everything is checked first, and a problem is a 422 that names it, with nothing created:
    the format, the config (as for a creation), every tensor's θ and exactly the state slots
    its optimizer keeps (names, shapes, dtype, finite values), step counts from 0 to t. A body
    that is no JSON or safetensors file is a 400. Needs `X-API-Key` when the server has API
    keys; with an `Idempotency-Key` (unique per API key, or per address on a server without
    keys) a retry gets the same session back.
    """

    if keeper is not None:
        keeper.scope(creation_scope("import", caller))
    return await run_use_case(
        database,
        service.import_session,
        lambda created: created_answer(request, created),
        write=True,
        parse=lambda: read_export(body),
        keeper=keeper,
    )


def read_export(body: TensorBody) -> SessionState:
    """Blocking: an export's content from a JSON or safetensors body (400 / 422 on failure)."""
    if not body.binary:
        return exports.from_document(parse_json(body.data, StateExport))
    arrays, metadata = tensors_from_safetensors(body.data)
    header = validate(exports.header_document(metadata), StateHeader, prefix=("metadata",))
    return exports.from_safetensors(header, arrays)
