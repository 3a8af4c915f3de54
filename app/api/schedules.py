"""`POST /v1/schedules/preview`: the learning rates a schedule gives, without a session."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from app import service
from app.api.admission import preview_admission
from app.api.answers import json_bytes
from app.api.bodies import JSON_MEDIA_TYPE, parse_json
from app.api.deps import JsonBodyDep
from app.api.openapi import json_request, problems
from app.schemas import SchedulePreview, SchedulePreviewRequest

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])


@router.post(
    "/preview",
    response_model=SchedulePreview,
    summary="Preview a schedule",
    openapi_extra=json_request(SchedulePreviewRequest),
    responses=problems(400, 408, 413, 415, 422, 429),
    dependencies=[Depends(preview_admission)],
)
async def preview_schedule(body: JsonBodyDep) -> Response:
    """`[η_0, …, η_{N−1}]` for `schedule` at base rate `lr`: the rates steps 0 … N−1 of a
    session with this schedule would use. No session or token needed.

    `reduce_on_plateau` is fed no losses here, so it previews as constant. An invalid schedule
    is a 422 naming the field (e.g. `schedule.then.total_steps`). Previews are rate limited
    per API key (per address without one): 429 with `Retry-After` above the limit.
    """

    def preview() -> bytes:
        request = parse_json(body, SchedulePreviewRequest)
        optimizer = request.optimizer
        rates = service.preview_schedule(
            request.schedule.model_dump(mode="json"),
            request.steps,
            lr=request.lr,
            optimizer=None if optimizer is None else optimizer.model_dump(mode="json"),
        )
        return json_bytes(SchedulePreview(lr=rates.lr, estimated=rates.estimated))

    return Response(await run_in_threadpool(preview), media_type=JSON_MEDIA_TYPE)
