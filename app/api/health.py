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
