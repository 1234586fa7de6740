"""Tickers: the one clock that drives advisor ticks. The only module that imports APScheduler.

Live, `LiveTicker` runs interval jobs on APScheduler's `AsyncIOScheduler` (wall time). Replay, `VirtualTicker`
fires the same jobs on event time: the replay calls `advance(ts)` before applying each event, and every
interval boundary up to `ts` fires in order (gaps in the log are caught up tick by tick), so a 3-hour log
runs in seconds and ticks land at exactly the same event times on every run.

Errors raised by a job never escape into the scheduler or get lost: both tickers send them to one error
path (`on_error(job_name, exc)`, default: log with traceback) and count them per job (PTB `Job.run` does the
same with `process_error`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.clock import Clock

log = logging.getLogger(__name__)

JobFn = Callable[[int], Awaitable[None] | None]
"""A job gets the tick time (Unix ms: wall time live, event time in replay)."""
ErrorHandler = Callable[[str, BaseException], None]


class Ticker(Protocol):
    def add_job(self, name: str, interval_s: float, fn: JobFn) -> None:
        """Run `fn(now_ms)` every `interval_s` seconds once started."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def running(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Job:
    name: str
    interval_ms: int
    fn: JobFn


def _check_job(name: str, interval_s: float, names: set[str]) -> int:
    if interval_s <= 0:
        raise ValueError(f"job {name!r}: interval_s must be positive, got {interval_s}")
    if name in names:
        raise ValueError(f"job {name!r} is already scheduled")
    return max(1, round(interval_s * 1000))


class _ErrorPath:
    def __init__(self, on_error: ErrorHandler | None) -> None:
        self._on_error = on_error
        self.errors: Counter[str] = Counter()

    def report(self, name: str, exc: BaseException) -> None:
        self.errors[name] += 1
        if self._on_error is not None:
            try:
                self._on_error(name, exc)
                return
            except Exception:
                log.exception("error handler failed for job %s", name)
        log.error("job %s failed (%d so far)", name, self.errors[name], exc_info=exc)


class LiveTicker:
    """Interval jobs on APScheduler's AsyncIOScheduler; start/stop inside the running event loop."""

    def __init__(self, clock: Clock, *, on_error: ErrorHandler | None = None) -> None:
        self._clock = clock
        self._jobs: list[_Job] = []
        self._errors = _ErrorPath(on_error)
        self._scheduler: AsyncIOScheduler | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return self._scheduler is not None

    @property
    def errors(self) -> Counter[str]:
        return self._errors.errors

    def add_job(self, name: str, interval_s: float, fn: JobFn) -> None:
        job = _Job(name, _check_job(name, interval_s, {j.name for j in self._jobs}), fn)
        self._jobs.append(job)
        if self._scheduler is not None:
            self._schedule(self._scheduler, job)

    def _schedule(self, scheduler: AsyncIOScheduler, job: _Job) -> None:
        # coalesce + max_instances=1: a slow tick is never run twice at once, and missed ones collapse.
        scheduler.add_job(
            self._run, "interval", seconds=job.interval_ms / 1000, args=[job], id=job.name, name=job.name,
            max_instances=1, coalesce=True, misfire_grace_time=None,
        )

    async def start(self) -> None:
        if self._scheduler is not None:
            raise RuntimeError("LiveTicker is already running")
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
        for job in self._jobs:
            self._schedule(scheduler, job)
        scheduler.start()
        self._scheduler = scheduler

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop scheduling; jobs already running finish (bounded by `timeout_s`)."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        scheduler.shutdown(wait=False)
        if self._inflight:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.gather(*self._inflight, return_exceptions=True)
            except TimeoutError:
                log.error("%d ticker job(s) still running after %.1f s; cancelled",
                          len(self._inflight), timeout_s)
                for t in self._inflight:
                    t.cancel()

    async def fire(self, name: str) -> None:
        """Run one job now, outside its schedule (e.g. the last advisor tick at shutdown)."""
        for job in self._jobs:
            if job.name == name:
                await self._run(job)
                return
        raise KeyError(f"no job named {name!r}")

    async def _run(self, job: _Job) -> None:
        # The job runs in its own task, shielded: the scheduler shutting down cancels this wrapper, never
        # a tick halfway through updating advisor memory or writing a suggestion.
        task = asyncio.ensure_future(self._call(job))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)

    async def _call(self, job: _Job) -> None:
        try:
            result = job.fn(self._clock.now_ms())
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._errors.report(job.name, exc)


class VirtualTicker:
    """Fires jobs on event time: call `advance(ts)` before applying an event stamped `ts`.

    Boundaries are multiples of each job's interval since the Unix epoch, so they do not depend on where
    a log happens to start being read. Jobs must be synchronous here (replay has no wall time to wait on).
    """

    def __init__(self, *, on_error: ErrorHandler | None = None) -> None:
        self._jobs: list[_Job] = []
        self._next: dict[str, int] = {}
        self._errors = _ErrorPath(on_error)
        self._running = False
        self.now_ms: int | None = None
        self.fired = 0

    @property
    def running(self) -> bool:
        return self._running

    @property
    def errors(self) -> Counter[str]:
        return self._errors.errors

    def add_job(self, name: str, interval_s: float, fn: JobFn) -> None:
        job = _Job(name, _check_job(name, interval_s, {j.name for j in self._jobs}), fn)
        self._jobs.append(job)
        if self.now_ms is not None:
            self._next[name] = (self.now_ms // job.interval_ms + 1) * job.interval_ms

    async def start(self) -> None:
        if self._running:
            raise RuntimeError("VirtualTicker is already running")
        self._running = True

    async def stop(self) -> None:
        self._running = False

    def advance(self, now_ms: int) -> int:
        """Fire every boundary up to and including `now_ms`, oldest first; returns the ticks fired.

        Time never goes backwards: an out-of-order event earlier than the last tick fires nothing.
        """
        if self.now_ms is None:
            self.now_ms = now_ms
            for job in self._jobs:
                self._next.setdefault(job.name, (now_ms // job.interval_ms + 1) * job.interval_ms)
            return 0
        if now_ms <= self.now_ms:
            return 0
        fired = 0
        while True:
            due = [(self._next[j.name], i, j) for i, j in enumerate(self._jobs)
                   if self._next[j.name] <= now_ms]
            if not due:
                break
            at, _, job = min(due, key=lambda d: (d[0], d[1]))
            self._next[job.name] = at + job.interval_ms
            self._call(job, at)
            fired += 1
        self.now_ms = now_ms
        self.fired += fired
        return fired

    def _call(self, job: _Job, at: int) -> None:
        try:
            result = job.fn(at)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    f"VirtualTicker job {job.name!r} returned an awaitable; replay jobs are synchronous"
                )
        except Exception as exc:
            self._errors.report(job.name, exc)
