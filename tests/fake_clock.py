"""A clock that moves only when a test moves it (`app.clock.Clock`), for `create_app(clock=…)`.

Retention, pruning and waits for a step then take no real time: a test `advance`s the clock past
a key's retention instead of sleeping through it. Sleepers on this clock (the pruning task, a
wait's polls) nap a few real milliseconds at a time until the clock has passed their deadline,
so requests go on meanwhile and a wait never times out on its own; `wait_for_sleepers` lets a
test move the clock only once a request is waiting.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

NAP_SECONDS = 0.002
"""How often, in real time, a sleeper looks whether the clock has passed its deadline."""


class FakeClock:
    """Starts at the real time of its making; `advance(seconds)` is the only thing that moves it."""

    def __init__(self) -> None:
        self._start = datetime.now(UTC)
        self._elapsed = 0.0
        self._sleeping = 0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.monotonic())

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        deadline = self.monotonic() + seconds
        with self._lock:
            self._sleeping += 1
        try:
            while self.monotonic() < deadline:
                await asyncio.sleep(NAP_SECONDS)
        finally:
            with self._lock:
                self._sleeping -= 1

    @property
    def sleeping(self) -> int:
        """How many sleeps are under way."""
        with self._lock:
            return self._sleeping

    def wait_for_sleepers(self, count: int, timeout: float = 30.0) -> None:
        """Return (in real time) once at least `count` sleeps are under way."""
        deadline = time.monotonic() + timeout
        while self.sleeping < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.sleeping} of {count} sleepers after {timeout} s")
            time.sleep(NAP_SECONDS)
