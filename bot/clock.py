"""Time: the only module that reads the wall clock (STYLE.md *Time*).

Live mode uses SystemClock; tests use ManualClock; replay uses EventTimeClock, which follows
event time so a 3-hour log runs in seconds and gives the same suggestions every run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Current time, Unix milliseconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time; sleeping really sleeps."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def monotonic() -> float:
    """Monotonic seconds, for measuring durations (benchmarks, rate limits)."""
    return time.perf_counter()


class ManualClock:
    """A clock that moves only when told; sleepers wake when time passes their deadline."""

    def __init__(self, start_ms: int = 1_767_268_800_000) -> None:
        self._now = start_ms
        self._sleepers: list[tuple[int, asyncio.Future[None]]] = []

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward; refuses to go backwards (like trio's MockClock.jump)."""
        if seconds < 0:
            raise ValueError(f"ManualClock cannot go backwards (advance({seconds}))")
        self.set(self._now + round(seconds * 1000))

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError(f"ManualClock cannot go backwards ({now_ms} < {self._now})")
        self._now = now_ms
        due = [s for s in self._sleepers if s[0] <= now_ms]
        self._sleepers = [s for s in self._sleepers if s[0] > now_ms]
        for _, fut in due:
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + round(seconds * 1000), fut))
        await fut


class EventTimeClock(ManualClock):
    """Replay clock: time is the latest event time seen; it never moves backwards.

    Out-of-order events (common in merged logs) are observed without moving time back.
    """

    def __init__(self, start_ms: int = 0) -> None:
        super().__init__(start_ms)

    def observe(self, ts_ms: int) -> None:
        if ts_ms > self.now_ms():
            self.set(ts_ms)
