"""`GET /v1/sessions/{id}/history`: a session's steps and configuration changes, paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app import service
from app.api.answers import json_bytes
from app.api.bodies import JSON_MEDIA_TYPE
from app.api.deps import DatabaseDep, TokenDep
from app.api.idempotency import Answer
from app.api.openapi import problems
from app.api.runner import run_use_case
from app.schemas import HistoryPage

HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 1000
MAX_CURSOR = 2**63 - 1  # seq is a BIGINT

router = APIRouter(prefix="/v1/sessions", tags=["history"])


@router.get(
    "/{session_id}/history",
    response_model=HistoryPage,
    summary="Read the history",
    response_description="Records in the order they happened, and the cursor of the next page.",
    responses=problems(401, 404, 422),
)
async def get_history(
    session_id: str,
    database: DatabaseDep,
    token: TokenDep,
    after: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_CURSOR,
            description="Show records with `seq` greater than this (0: from the start).",
        ),
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=HISTORY_MAX_LIMIT, description="Most records in this page.")
    ] = HISTORY_DEFAULT_LIMIT,
) -> Response:
    """Every step the session took — `{step, lr, loss, grad_norm, update_norm, skipped, at,
    duration_ms}`, skipped ones included — and every change of its configuration, in order.

    Page with `after`: start at 0, then pass `next` until it is null. To follow a running
    session, poll with `after` = the `seq` of the last record seen. Sessions keep the newest
    `OPTAAS_HISTORY_MAX_RECORDS` records (older ones are pruned).
    """
    return await run_use_case(
        database,
        lambda db: service.get_history(db, session_id, token, after=after, limit=limit),
        lambda page: Answer(200, {"Content-Type": JSON_MEDIA_TYPE}, json_bytes(history_view(page))),
        write=False,
    )


def history_view(page: service.HistoryPage) -> HistoryPage:
    """The page's wire form: each record's fields as `HistoryRecord` shows them."""
    return HistoryPage.model_validate(
        {"records": page.records, "next": page.next}, from_attributes=True
    )
