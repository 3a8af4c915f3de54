"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from app.api.deps import DatabaseDep
from app.api.openapi import problems
from app.errors import DatabaseUnavailable

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", summary="Liveness")
async def healthz() -> Health:
    """The process answers HTTP."""
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness",
    responses=problems(503),
)
async def readyz(database: DatabaseDep) -> Health:
    """The database answers a query."""
    try:
        await run_in_threadpool(database.ping)
    except SQLAlchemyError as error:
        raise DatabaseUnavailable(f"the database does not answer: {type(error).__name__}") from None
    return Health(status="ok")


# HEAD as well as GET, for probes that send it: routes of their own, for operation ids of
# their own.
router.add_api_route(
    "/healthz", healthz, methods=["HEAD"], name="healthz_head", summary="Liveness (HEAD)"
)
router.add_api_route(
    "/readyz",
    readyz,
    methods=["HEAD"],
    name="readyz_head",
    summary="Readiness (HEAD)",
    responses=problems(503),
)
