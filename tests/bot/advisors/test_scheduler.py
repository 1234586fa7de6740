from __future__ import annotations

import asyncio
import logging

import pytest

from bot.clock import ManualClock
from bot.scheduler import LiveTicker, VirtualTicker

T0 = 1_767_268_800_000


def test_virtual_ticker_fires_every_boundary_in_order_and_catches_up() -> None:
    ticker = VirtualTicker()
    fired: list[tuple[str, int]] = []
    ticker.add_job("fast", 1.0, lambda now: fired.append(("fast", now)))
    ticker.add_job("slow", 5.0, lambda now: fired.append(("slow", now)))
    assert ticker.advance(T0 + 300) == 0  # the first event anchors time
    assert ticker.advance(T0 + 999) == 0
    assert ticker.advance(T0 + 1000) == 1 and fired == [("fast", T0 + 1000)]
    # A 6-second gap in the log: every boundary is caught up, oldest first, jobs in registration order.
    fired.clear()
    assert ticker.advance(T0 + 7500) == 7
    assert fired == [
        ("fast", T0 + 2000), ("fast", T0 + 3000), ("fast", T0 + 4000), ("fast", T0 + 5000),
        ("slow", T0 + 5000), ("fast", T0 + 6000), ("fast", T0 + 7000),
    ]
    # An out-of-order (older) event never moves time back.
    fired.clear()
    assert ticker.advance(T0 + 2000) == 0 and fired == []
    assert ticker.now_ms == T0 + 7500


def test_virtual_ticker_counts_exact_ticks() -> None:
    ticker = VirtualTicker()
    times: list[int] = []
    ticker.add_job("advisors", 1.0, times.append)
    ticker.advance(T0)
    ticker.advance(T0 + 6500)
    assert times == [T0 + 1000 * k for k in range(1, 7)]
    assert ticker.fired == 6


def test_virtual_ticker_errors_go_to_one_path_and_ticking_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str]] = []
    ticker = VirtualTicker(on_error=lambda name, exc: seen.append((name, str(exc))))
    calls: list[int] = []

    def flaky(now: int) -> None:
        calls.append(now)
        if len(calls) == 2:
            raise RuntimeError("boom")

    async def not_allowed(now: int) -> None:
        return None

    ticker.add_job("flaky", 1.0, flaky)
    ticker.add_job("async", 2.0, not_allowed)
    ticker.advance(T0)
    ticker.advance(T0 + 3000)
    assert len(calls) == 3
    assert ("flaky", "boom") in seen
    assert any(name == "async" and "replay jobs are synchronous" in msg for name, msg in seen)
    assert ticker.errors == {"flaky": 1, "async": 1}
    # Without a handler, errors are logged with their traceback.
    quiet = VirtualTicker()
    quiet.add_job("bad", 1.0, lambda now: 1 / 0)
    with caplog.at_level(logging.ERROR, logger="bot.scheduler"):
        quiet.advance(T0)
        quiet.advance(T0 + 1000)
    assert "job bad failed (1 so far)" in caplog.text and "ZeroDivisionError" in caplog.text


def test_job_validation() -> None:
    ticker = VirtualTicker()
    ticker.add_job("a", 1.0, lambda now: None)
    with pytest.raises(ValueError, match="already scheduled"):
        ticker.add_job("a", 1.0, lambda now: None)
    with pytest.raises(ValueError, match="must be positive"):
        ticker.add_job("b", 0, lambda now: None)


async def test_virtual_ticker_lifecycle() -> None:
    ticker = VirtualTicker()
    await ticker.start()
    assert ticker.running
    with pytest.raises(RuntimeError, match="already running"):
        await ticker.start()
    await ticker.stop()
    assert not ticker.running


async def test_live_ticker_runs_jobs_on_apscheduler_with_clock_time() -> None:
    clock = ManualClock(T0)
    ticker = LiveTicker(clock)
    seen: list[int] = []
    done = asyncio.Event()

    async def job(now: int) -> None:
        seen.append(now)
        if len(seen) == 3:
            done.set()

    ticker.add_job("advisors", 0.02, job)
    await ticker.start()
    assert ticker.running
    with pytest.raises(RuntimeError, match="already running"):
        await ticker.start()
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await ticker.stop()
    assert not ticker.running
    assert seen[:3] == [T0, T0, T0]  # the job gets the clock's time, not APScheduler's
    count = len(seen)
    await ticker.fire("advisors")  # the last tick at shutdown runs outside the schedule
    assert len(seen) == count + 1
    with pytest.raises(KeyError):
        await ticker.fire("nope")


async def test_live_ticker_routes_errors_and_keeps_running() -> None:
    errors: list[tuple[str, BaseException]] = []
    ticker = LiveTicker(ManualClock(T0), on_error=lambda name, exc: errors.append((name, exc)))
    runs = 0
    again = asyncio.Event()

    def job(now: int) -> None:
        nonlocal runs
        runs += 1
        if runs >= 3:
            again.set()
        raise ValueError(f"bad tick {runs}")

    ticker.add_job("advisors", 0.02, job)
    await ticker.start()
    try:
        async with asyncio.timeout(10):
            await again.wait()
    finally:
        await ticker.stop()
    assert len(errors) >= 3 and all(name == "advisors" for name, _ in errors)
    assert isinstance(errors[0][1], ValueError)
    assert ticker.errors["advisors"] == len(errors)


async def test_live_ticker_stop_lets_a_running_tick_finish() -> None:
    ticker = LiveTicker(ManualClock(T0))
    started = asyncio.Event()
    gate = asyncio.Event()
    finished: list[bool] = []

    async def slow(now: int) -> None:
        started.set()
        await gate.wait()
        finished.append(True)

    ticker.add_job("slow", 0.02, slow)
    await ticker.start()
    async with asyncio.timeout(10):
        await started.wait()
    stopping = asyncio.create_task(ticker.stop())
    await asyncio.sleep(0)  # let stop() begin: it must wait for the tick, not cancel it
    assert not stopping.done()
    gate.set()
    async with asyncio.timeout(10):
        await stopping
    assert finished == [True]
