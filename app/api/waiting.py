"""Waiting for a step (`GET …/params?wait_for_step=`): short read transactions polled from the
event loop, holding no thread, connection or transaction in between."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from app import service
from app.api.errors import validation_problem
from app.clock import SYSTEM_CLOCK, Clock
from app.config import Settings
from app.errors import OptaasError, WaitTimedOut
from app.store.database import Database

DEFAULT_WAIT_SECONDS = 10.0
"""`timeout` of a wait when none is given (at most `OPTAAS_MAX_WAIT_SECONDS`)."""
FIRST_POLL_SECONDS = 0.01
MAX_POLL_SECONDS = 0.1
"""A waiting request reads the session's step after 10 ms, then ever less often, down to ten
times a second: a step is seen at most 0.1 s after it is committed, whichever process took it."""


def wait_seconds(timeout: float | None, settings: Settings) -> float:
    """The wait's length: `timeout`, or the default; over the server's cap it is a 422."""
    cap = settings.max_wait_seconds
    if timeout is None:
        return min(DEFAULT_WAIT_SECONDS, cap)
    if timeout > cap:
        raise query_problem(
            "timeout",
            f"Input should be less than or equal to {cap:g} (OPTAAS_MAX_WAIT_SECONDS)",
            "less_than_equal",
        )
    return timeout


def query_problem(parameter: str, message: str, kind: str) -> OptaasError:
    return validation_problem([{"loc": (parameter,), "msg": message, "type": kind}], ("query",))


async def wait_until_step(
    database: Database,
    session_id: str,
    token: str,
    target: int,
    timeout: float,
    clock: Clock = SYSTEM_CLOCK,
) -> None:
    """Return once the session is at step `target` or beyond; `WaitTimedOut` (408) after
    `timeout` seconds of `clock`. Each look is one short read transaction in the thread pool;
    between looks the request holds no thread, connection or transaction (10 ms, doubling to
    0.1 s)."""

    def look() -> service.Progress:
        with database.transaction(write=False) as db:
            return service.get_progress(db, session_id, token)

    deadline = clock.monotonic() + timeout
    delay = FIRST_POLL_SECONDS
    while True:
        progress = await run_in_threadpool(look)
        if progress.step >= target:
            return
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            raise timed_out(progress, target, timeout)
        await clock.sleep(min(delay, remaining))
        delay = min(2 * delay, MAX_POLL_SECONDS)


def timed_out(progress: service.Progress, target: int, timeout: float) -> WaitTimedOut:
    """The 408 of a wait for step `target`: where the session is, and what it waits for."""
    detail = f"waited {timeout:g} s for step {target}; the session is at step {progress.step}"
    extras: dict[str, int | float] = {
        "current_step": progress.step,
        "wait_for_step": target,
        "timeout": timeout,
    }
    if progress.accumulate > 1 or progress.accumulated:
        missing = max(0, progress.accumulate - progress.accumulated)
        detail += (
            f", with {progress.accumulated} of {progress.accumulate} gradients received for "
            f"step {progress.step + 1} ({missing} missing)"
        )
        extras.update(received=progress.accumulated, missing=missing)
    return WaitTimedOut(detail, **extras)
