"""The server's clock: what the time is, and waiting for it to pass, behind one protocol.

Everything that decides by time — an idempotency key's retention and its pruning, a wait for a
step — reads it from the app's clock (`create_app(clock=…)`, `app.state.clock`), so a test can
move time on instead of sleeping through it. The server uses `SYSTEM_CLOCK`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time for what is stored, a monotonic one for intervals, and sleeping."""

    def now(self) -> datetime:
        """The current time, timezone-aware in UTC (stored timestamps are compared with it)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: for deadlines within a request."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...


class SystemClock:
    """The machine's clocks and asyncio's sleep."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
