"""Backpressure: bounded queue and store backlog, visible degradation, recovery, nothing lost.

The slow parts are real components held at a gate (a threading.Event), never sleeps: the test decides
exactly when the analyzer or the store may go on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.clock import ManualClock, SystemClock
from bot.events import Event, EventKind
from bot.outputs.store import Store
from bot.pipeline import Pipeline
from nlp.analyzer import Analysis, Analyzer

T0 = 1_767_268_800_000


def chat(i: int, ts: int, room: str = "r1") -> Event:
    return Event(
        "test", room, EventKind.CHAT, ts, ts, msg_id=f"m{i}", user_id=f"{i:016x}", text=f"第{i}条 多少钱"
    )


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a condition the code under test will reach (a bound for a broken build, not a timing)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


class GatedAnalyzer:
    """A real Analyzer whose analyze() waits in its worker thread until the test opens the gate."""

    def __init__(self, inner: Analyzer) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        self.calls += 1
        self.entered.set()
        if not self.gate.wait(30):
            raise RuntimeError("gate never opened")
        return self.inner.analyze(texts)


class CountingAnalyzer:
    def __init__(self, inner: Analyzer) -> None:
        self.inner = inner
        self.texts = 0

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        self.texts += len(texts)
        return self.inner.analyze(texts)


class GatedStore:
    """A real Store whose first write waits until the test opens the gate; counts the writes."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.writes: list[int] = []

    def write_batch(self, session_id: str, events: Sequence[Event], analyses: Sequence[Any]) -> None:
        if not self.gate.wait(30):
            raise RuntimeError("gate never opened")
        self.writes.append(len(events))
        self.inner.write_batch(session_id, events, analyses)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_slow_analyzer_sheds_stores_everything_and_recovers(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    slow = GatedAnalyzer(Analyzer("rules"))
    with Store.open(tmp_path / "p.db") as store:
        pipe = Pipeline(slow, clock=clock, store=store, queue_size=50, batch_size=10, max_wait_ms=1)  # type: ignore[arg-type]
        task = asyncio.create_task(pipe.run())
        await pipe.submit(chat(0, T0))
        await asyncio.to_thread(slow.entered.wait, 10)  # the first batch is stuck in the analyzer
        for i in range(1, 201):
            await pipe.submit(chat(i, T0))  # never blocks: 50 queue up, the rest is shed
        assert pipe.queue_depth == 50
        assert pipe.stats.shed == 150
        assert pipe.analysis_mode == "shedding"
        st = pipe.states["r1"]
        assert st.degraded and st.snapshot()["degraded"] is True
        assert st.totals.comments == 150 and st.totals.unanalyzed == 150  # counted at once, without NLP

        slow.gate.set()
        await until(lambda: pipe.queue_depth == 0 and pipe.stats.analyzed == 51)
        assert pipe.analysis_mode == "normal"
        assert not st.degraded
        await pipe.stop()
        await task
        pipe.close()
        sid = pipe.sessions["r1"]
        assert store.count_events(sid) == 201
        assert store.execute("SELECT COUNT(DISTINCT msg_id) FROM events")[0][0] == 201
        assert store.execute("SELECT COUNT(*) FROM analyses")[0][0] == 51
        assert pipe.stats.as_dict()["shed"] == 150 and pipe.stats.stored == 201


async def test_fallback_classifier_while_behind_then_back(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    primary = CountingAnalyzer(Analyzer("rules"))
    fast = CountingAnalyzer(Analyzer("rules"))
    analyzed = asyncio.Event()
    with Store.open(tmp_path / "p.db") as store:
        pipe = Pipeline(
            primary, clock=clock, store=store, batch_size=10, max_wait_ms=1,  # type: ignore[arg-type]
            fallback=fast, degrade_lag_ms=1000,  # type: ignore[arg-type]
        )
        pipe.hooks.append(lambda batch, _: analyzed.set())
        for i in range(30):
            await pipe.submit(chat(i, T0))
        clock.advance(1.5)  # the analyzer starts 1.5 s late: every batch is behind
        task = asyncio.create_task(pipe.run())
        await until(lambda: pipe.stats.analyzed == 30)
        assert fast.texts == 30 and primary.texts == 0
        assert pipe.stats.fallback == 30
        assert pipe.analysis_mode == "fallback"
        assert pipe.states["r1"].degraded

        # Fresh events on an empty queue: caught up, the configured analyzer takes over again.
        analyzed.clear()
        for i in range(30, 35):
            await pipe.submit(chat(i, clock.now_ms()))
        await until(lambda: pipe.stats.analyzed == 35)
        assert primary.texts == 5 and fast.texts == 30
        assert pipe.analysis_mode == "normal"
        assert not pipe.states["r1"].degraded
        await pipe.stop()
        await task
        pipe.close()
        assert store.count_events(pipe.sessions["r1"]) == 35
        assert store.execute("SELECT COUNT(*) FROM analyses")[0][0] == 35


async def test_sampling_while_behind_without_a_fallback(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Store.open(tmp_path / "p.db") as store:
        pipe = Pipeline(
            Analyzer("rules"), clock=clock, store=store, batch_size=10, max_wait_ms=1, degrade_lag_ms=1000
        )
        for i in range(30):
            await pipe.submit(chat(i, T0))
        clock.advance(3.0)  # 3 s late: every 3rd comment is analysed
        task = asyncio.create_task(pipe.run())
        await until(lambda: pipe.stats.analyzed + pipe.stats.sampled_out == 30)
        assert pipe.stats.analyzed == 10 and pipe.stats.sampled_out == 20
        assert pipe.analysis_mode == "sampling"
        st = pipe.states["r1"]
        assert st.degraded and st.totals.comments == 30 and st.totals.unanalyzed == 20

        for i in range(30, 35):
            await pipe.submit(chat(i, clock.now_ms()))
        await until(lambda: pipe.stats.analyzed == 15)
        assert pipe.analysis_mode == "normal" and not st.degraded
        await pipe.stop()
        await task
        pipe.close()
        assert store.count_events(pipe.sessions["r1"]) == 35
        assert store.execute("SELECT COUNT(*) FROM analyses")[0][0] == 15


def test_replay_pipelines_never_degrade() -> None:
    pipe = Pipeline(Analyzer("rules"), clock=ManualClock(T0))
    assert pipe._plan([chat(0, T0 - 3_600_000)]) == (pipe._analyzer, 1)


async def test_slow_store_bounds_the_backlog_and_slows_the_source(tmp_path: Path) -> None:
    with Store.open(tmp_path / "p.db") as real:
        store = GatedStore(real)
        pipe = Pipeline(
            Analyzer("rules"), clock=SystemClock(), store=store,  # type: ignore[arg-type]
            queue_size=50, batch_size=10, max_wait_ms=1, store_backlog=100,
        )
        task = asyncio.create_task(pipe.run())
        total = 400

        async def produce() -> None:
            for i in range(total):
                await pipe.submit(chat(i, T0 + i))

        producer = asyncio.create_task(produce())
        # The first write is stuck: the backlog fills to its cap, the consumer waits, the queue fills,
        # shed events need backlog space too, so finally the source itself waits.
        await until(lambda: pipe.stats.store_waits >= 2)
        assert not producer.done()
        assert pipe.queue_depth <= 50 and pipe.stats.shed > 0
        assert pipe.store_backlog <= 100 + 10
        assert pipe.stats.received < total

        store.gate.set()
        await producer
        await pipe.stop()
        await task
        pipe.close()
        assert pipe.stats.store_backlog_max <= 100 + 10
        assert real.count_events(pipe.sessions["r1"]) == total
        assert pipe.stats.stored == total and pipe.stats.store_errors == 0
        # Batches that waited for the store went in together: fewer, bigger transactions.
        assert len(store.writes) < pipe.stats.batches + pipe.stats.shed
        assert max(store.writes) > 10


async def test_on_stored_reports_committed_events_only(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    seen: list[str | None] = []
    with Store.open(tmp_path / "p.db") as store:
        pipe = Pipeline(Analyzer("rules"), clock=clock, store=store, batch_size=4, max_wait_ms=1)
        pipe.on_stored.append(lambda events: seen.extend(ev.msg_id for ev in events))
        task = asyncio.create_task(pipe.run())
        for i in range(10):
            await pipe.submit(chat(i, T0))
        assert await pipe.offer(chat(3, T0)) is False  # a duplicate is refused, and said so
        await pipe.stop()
        await task
        pipe.close()
    assert sorted(seen) == sorted(f"m{i}" for i in range(10))


def test_store_backlog_must_be_positive() -> None:
    with pytest.raises(ValueError, match="store_backlog"):
        Pipeline(Analyzer("rules"), clock=ManualClock(T0), store_backlog=0)
