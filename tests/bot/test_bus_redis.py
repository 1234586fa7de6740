"""Redis Streams bus against a real redis-server: publish, consume, acknowledge, claim after a crash.

Delivery is at-least-once; with the worker taking over on the same data directory (one Store here),
duplicates are dropped by msg_id, so every event ends up in the store exactly once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.bus import BusRole, LocalBus, make_bus
from bot.clock import SystemClock
from bot.config import parse_config
from bot.errors import ConfigError
from bot.events import Event, EventKind
from bot.outputs.store import Store
from bot.pipeline import Pipeline
from nlp.analyzer import Analysis, Analyzer
from tests.bot.redis_server import redis_server

redis = pytest.importorskip("redis")
from bot.bus_redis import GROUP, RedisBus, decode_event  # noqa: E402

T0 = 1_767_268_800_000


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest.fixture
async def url(server: str) -> AsyncIterator[str]:
    client = redis.asyncio.Redis.from_url(server)
    await client.flushall()
    await client.aclose()
    yield server


@pytest.fixture
async def r(url: str) -> AsyncIterator[Any]:
    client = redis.asyncio.Redis.from_url(url)
    yield client
    await client.aclose()


def chat(i: int, room: str = "r1") -> Event:
    ts = T0 + i
    return Event(
        "bilibili", room, EventKind.CHAT, ts, ts, msg_id=f"{room}-{i}", user_id=f"{i:016x}",
        text=f"第{i}条 这个多少钱", stats=None,
    )


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for a condition the code under test will reach (a bound for a broken build, not a timing)."""
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


class GatedAnalyzer:
    """A real Analyzer that lets `free` batches through, then waits in its thread for the gate."""

    def __init__(self, free: int) -> None:
        self.inner = Analyzer("rules")
        self.free = free
        self.gate = threading.Event()

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        if self.free > 0:
            self.free -= 1
        elif not self.gate.wait(30):
            raise RuntimeError("gate never opened")
        return self.inner.analyze(texts)


def pipeline(store: Store | None, analyzer: Any = None) -> Pipeline:
    return Pipeline(
        analyzer or Analyzer("rules"), clock=SystemClock(), store=store, batch_size=10, max_wait_ms=1
    )


async def publish_all(url: str, events: list[Event]) -> None:
    pub = RedisBus(url, pipeline(None), role=BusRole.SOURCES)
    await pub.start()
    for ev in events:
        await pub.publish(ev)
    await pub.stop_intake()  # flushes
    await pub.close()
    assert pub.stats.published == len(events)


async def shut_down(bus: RedisBus, pipe: Pipeline, task: asyncio.Task[None]) -> None:
    """The App's shutdown order: stop intake, drain the pipeline, acknowledge and release, close the store."""
    await bus.stop_intake()
    await pipe.stop()
    await task
    await bus.close()
    pipe.close()


async def pending(r: Any, room: str) -> int:
    return int((await r.xpending(f"livebot:events:{room}", GROUP))["pending"])


def stored(store: Store) -> tuple[int, int]:
    total, distinct = store.execute("SELECT COUNT(*), COUNT(DISTINCT msg_id) FROM events")[0]
    return int(total), int(distinct)


async def test_publish_consume_store_and_acknowledge(url: str, r: Any, tmp_path: Path) -> None:
    events = [chat(i, room=f"r{i % 2}") for i in range(300)]
    with Store.open(tmp_path / "s.db") as store:
        pipe = pipeline(store)
        bus = RedisBus(url, pipe, role=BusRole.ALL, store=store, lease_ms=300)
        task = asyncio.create_task(pipe.run())
        await bus.start()
        for ev in events:
            await bus.publish(ev)
        await until(lambda: pipe.stats.stored == 300)
        await shut_down(bus, pipe, task)
        assert stored(store) == (300, 300)
        back = {ev.msg_id: ev for ev, _ in store.iter_events(pipe.sessions["r0"])}
        assert back["r0-10"] == events[10]  # the bus keeps every field, hashed user id and times included
        assert set(pipe.sessions) == {"r0", "r1"}
    assert bus.stats.acked == 300 and bus.stats.consumed == 300
    assert await pending(r, "r0") == 0 and await pending(r, "r1") == 0
    assert await r.scard("livebot:rooms") == 2
    assert not await r.exists("livebot:owner:r0")  # released on close


async def test_shutdown_drains_what_was_published(url: str, r: Any, tmp_path: Path) -> None:
    # One process, sources and worker: stop right after publishing; nothing stays unread in Redis.
    with Store.open(tmp_path / "s.db") as store:
        pipe = pipeline(store)
        bus = RedisBus(url, pipe, role=BusRole.ALL, store=store, lease_ms=300)
        task = asyncio.create_task(pipe.run())
        await bus.start()
        await until(lambda: bool(bus.owned) or bus._registered)
        for i in range(500):
            await bus.publish(chat(i))
        await until(lambda: bus.stats.published == 500)
        await until(lambda: "r1" in bus.owned)
        await shut_down(bus, pipe, task)
        assert stored(store) == (500, 500)
    assert await pending(r, "r1") == 0


async def test_killed_worker_is_taken_over_and_nothing_is_lost(url: str, r: Any, tmp_path: Path) -> None:
    n = 200
    await publish_all(url, [chat(i) for i in range(n)])
    with Store.open(tmp_path / "s.db") as store:
        # Worker A stores 3 batches, then its analyzer hangs; it never acknowledges (as if it died
        # between the commit and the XACK), then it is killed with everything read still pending.
        slow = GatedAnalyzer(free=3)
        pipe_a = pipeline(store, slow)
        a = RedisBus(url, pipe_a, role=BusRole.WORKER, store=store, name="worker-a", lease_ms=300,
                     read_count=50)

        async def no_ack() -> None:
            return None

        a._flush_acks = no_ack  # type: ignore[method-assign]
        task_a = asyncio.create_task(pipe_a.run())
        await a.start()
        await until(lambda: a.stats.consumed == n and pipe_a.stats.stored == 30)
        await until(lambda: "r1" in a._sessions_shared)
        await a.abort()
        task_a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task_a
        assert await pending(r, "r1") == n  # all of A's, none acknowledged

        pipe_b = pipeline(store)
        b = RedisBus(url, pipe_b, role=BusRole.WORKER, store=store, name="worker-b", lease_ms=300)
        task_b = asyncio.create_task(pipe_b.run())
        await b.start()
        # A's lease runs out, B takes the room and claims A's pending entries.
        await until(lambda: pipe_b.stats.stored == n - 30)
        await shut_down(b, pipe_b, task_b)
        slow.gate.set()
        pipe_a.close()
        assert stored(store) == (n, n)  # exactly once: the 30 A stored were recognised
        assert len(store.sessions()) == 1  # B continued A's session
        assert b.stats.claimed == n and b.stats.duplicates == 30
    assert await pending(r, "r1") == 0


async def test_graceful_handover_between_workers(url: str, r: Any, tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        pipe_a, pipe_b = pipeline(store), pipeline(store)
        a = RedisBus(url, pipe_a, role=BusRole.WORKER, store=store, name="a", lease_ms=300)
        b = RedisBus(url, pipe_b, role=BusRole.WORKER, store=store, name="b", lease_ms=300)
        await publish_all(url, [chat(i) for i in range(100)])
        tasks = [asyncio.create_task(p.run()) for p in (pipe_a, pipe_b)]
        await a.start()
        await until(lambda: pipe_a.stats.stored == 100)
        await b.start()
        await a.stop_intake()
        await pipe_a.stop()
        await tasks[0]
        await a.close()  # releases r1 at once
        await publish_all(url, [chat(i) for i in range(100, 200)])
        await until(lambda: pipe_b.stats.stored == 100)
        await b.stop_intake()
        await pipe_b.stop()
        await tasks[1]
        await b.close()
        for p in (pipe_a, pipe_b):
            p.close()
        assert stored(store) == (200, 200)
        assert len(store.sessions()) == 1
    assert await pending(r, "r1") == 0


async def test_workers_take_a_fair_share_of_rooms(url: str) -> None:
    await publish_all(url, [chat(i, room=f"room{i}") for i in range(4)])
    a = RedisBus(url, pipeline(None), role=BusRole.WORKER, name="a")
    b = RedisBus(url, pipeline(None), role=BusRole.WORKER, name="b")
    a._connect()
    b._connect()
    try:
        # Driven round by round: both register, then each takes its half.
        for bus in (a, b, a, b):
            await bus._maintain()
        assert len(a.owned) == 2 and len(b.owned) == 2 and not a.owned & b.owned
    finally:
        await a.close()
        await b.close()


async def test_a_joining_worker_gets_its_share_and_nothing_is_lost_or_doubled(
    url: str, r: Any, tmp_path: Path
) -> None:
    """Rebalancing: A owns all four rooms; B joins; A stops reading two of them, releases each once what
    it read is stored, and B takes them, restores their state from the shared store and reads on."""
    rooms = [f"room{i}" for i in range(4)]
    with Store.open(tmp_path / "s.db") as store:
        pipe_a, pipe_b = pipeline(store), pipeline(store)
        a = RedisBus(url, pipe_a, role=BusRole.WORKER, store=store, name="a", lease_ms=1000)
        b = RedisBus(url, pipe_b, role=BusRole.WORKER, store=store, name="b", lease_ms=1000)
        taken: list[tuple[str, str | None]] = []

        def restore(room: str, sid: str | None) -> None:
            taken.append((room, sid))
            if sid is not None:
                for ev, an in store.iter_events(sid):
                    pipe_b.remember(ev)
                    pipe_b.state(ev.room).apply(ev, an)

        b.on_take = restore
        await publish_all(url, [chat(i, room=rooms[i % 4]) for i in range(400)])
        tasks = [asyncio.create_task(p.run()) for p in (pipe_a, pipe_b)]
        await a.start()
        await until(lambda: pipe_a.stats.stored == 400)
        assert a.owned == set(rooms)
        await b.start()
        await until(lambda: len(a.owned) == 2 and len(b.owned) == 2)
        assert a.stats.rooms_handed_off == 2 and not a.owned & b.owned
        # B continues the handed-off rooms' sessions, with their state read back.
        assert sorted(room for room, _ in taken) == sorted(b.owned)
        for room in b.owned:
            sid = dict(taken)[room]
            assert sid is not None and sid.endswith(f"-{room}")
            assert pipe_b.state(room).totals.comments == 100
            assert room not in pipe_a.states and room not in pipe_a.sessions  # A won't end B's session
        await publish_all(url, [chat(i, room=rooms[i % 4]) for i in range(400, 800)])
        await until(lambda: pipe_a.stats.stored + pipe_b.stats.stored == 800)
        for room in b.owned:
            assert pipe_b.state(room).totals.comments == 200
        for bus, pipe, task in ((a, pipe_a, tasks[0]), (b, pipe_b, tasks[1])):
            await shut_down(bus, pipe, task)
        assert stored(store) == (800, 800)
        assert len(store.sessions()) == 4  # one per room, continued across the handover
        assert pipe_b.stats.stored == 200 and pipe_a.stats.stored == 600
    for room in rooms:
        assert await pending(r, room) == 0


async def test_bad_entries_are_counted_and_acknowledged(url: str, r: Any, tmp_path: Path) -> None:
    await r.xadd("livebot:events:r1", {"e": b"{not json"})
    await r.xadd("livebot:events:r1", {"other": b"x"})
    await r.sadd("livebot:rooms", "r1")
    await publish_all(url, [chat(1)])
    with Store.open(tmp_path / "s.db") as store:
        pipe = pipeline(store)
        bus = RedisBus(url, pipe, role=BusRole.WORKER, store=store, lease_ms=300)
        task = asyncio.create_task(pipe.run())
        await bus.start()
        await until(lambda: pipe.stats.stored == 1)
        await shut_down(bus, pipe, task)
    assert bus.stats.bad_entries == 2
    assert await pending(r, "r1") == 0


async def test_publish_waits_when_redis_is_unreachable_and_drops_nothing() -> None:
    bus = RedisBus("redis://127.0.0.1:1/0", pipeline(None), role=BusRole.SOURCES, publish_buffer=10)
    await bus.start()
    for i in range(10):
        await bus.publish(chat(i))
    blocked = asyncio.create_task(bus.publish(chat(10)))
    await until(lambda: bus.stats.publish_waits >= 1 and bus.stats.redis_errors >= 1)
    assert not blocked.done() and len(bus._outbox) == 10
    blocked.cancel()
    await bus.abort()


def test_decode_rejects_garbage_with_protocol_error() -> None:
    from bot.errors import ProtocolError

    with pytest.raises(ProtocolError, match="not JSON"):
        decode_event(b"\xff")
    with pytest.raises(ProtocolError):
        decode_event(b"[]")


def test_make_bus() -> None:
    pipe = pipeline(None)
    assert isinstance(make_bus(None, pipe), LocalBus)
    assert isinstance(make_bus("redis://127.0.0.1:6379/0", pipe, role="worker"), RedisBus)
    with pytest.raises(ConfigError, match="needs a shared bus"):
        make_bus(None, pipe, role="worker")
    with pytest.raises(ConfigError, match="unsupported bus"):
        make_bus("kafka://x", pipe)
    # [bus] settings reach the Redis bus: key prefix, stream cap, lease and claim times.
    cfg = parse_config({"bus": {"url": "redis://127.0.0.1:6379/0", "prefix": "shop1:", "maxlen": 5000,
                                "lease_ms": 3000, "claim_idle_ms": 9000}})
    bus = make_bus(cfg.bus.url, pipe, role=cfg.bus.role, settings=cfg.bus)
    assert isinstance(bus, RedisBus)
    assert bus.stream("a") == "shop1:events:a"
    assert (bus._maxlen, bus._lease_ms, bus._claim_idle_ms) == (5000, 3000, 9000)


def test_the_app_restores_a_room_the_bus_hands_it(tmp_path: Path) -> None:
    """The App hooks the bus: a room taken over from another worker continues from the shared store."""
    import io

    from bot.app import App

    cfg = parse_config({"data_dir": str(tmp_path), "status": {"terminal": False}, "screen": {"enabled": False},
                        "bus": {"url": "redis://127.0.0.1:1/0", "role": "worker"}, "rooms": [{"name": "r1"}]})
    with Store.open(cfg.store_path) as store:
        sid = store.start_session("r1", T0)
        events = [chat(i) for i in range(30)]
        store.write_batch(sid, events, Analyzer("rules").analyze([ev.text or "" for ev in events]))
    app = App(cfg, out=io.StringIO())
    try:
        assert isinstance(app.bus, RedisBus) and app.bus.on_take is not None
        app.bus.on_take("r1", sid)
        assert app.pipeline.state("r1").totals.comments == 30
        app.bus.on_take("r1", sid)  # taken again later in the same process: not counted twice
        assert app.pipeline.state("r1").totals.comments == 30
        app.bus.on_take("r1", None)  # a room nobody has analysed yet: nothing to read
        # Advisors tick only the rooms this worker owns: not before it takes r1, nor once it hands it off.
        engine = app.engines["r1"]
        asyncio.run(app._advisor_tick(T0 + 60_000))
        assert engine.ticks == 0
        app.bus.owned.add("r1")
        asyncio.run(app._advisor_tick(T0 + 61_000))
        assert engine.ticks == 1
        app.bus._handoff.add("r1")
        asyncio.run(app._advisor_tick(T0 + 62_000))
        assert engine.ticks == 1
    finally:
        assert app.store is not None
        app.store.close()


async def test_a_room_that_goes_quiet_is_released_and_its_session_ended(url: str, r: Any, tmp_path: Path) -> None:
    """Rooms whose show ended stop counting: after `session_idle_ms` without events (and nothing unread or
    unacknowledged) the owner releases the room and ends its session; the next event starts a new one."""
    with Store.open(tmp_path / "s.db") as store:
        pipe = pipeline(store)
        # A lease of 1 s: under CPU load a 300 ms one can lapse between renewals, which is another path.
        bus = RedisBus(url, pipe, role=BusRole.WORKER, store=store, name="a", lease_ms=1000, session_idle_ms=1500)
        task = asyncio.create_task(pipe.run())
        await publish_all(url, [chat(i, room="quiet") for i in range(20)] + [chat(i, room="busy") for i in range(20)])
        await bus.start()
        await until(lambda: pipe.stats.stored == 40)
        first = pipe.sessions["quiet"]
        stop = asyncio.Event()

        async def keep_busy() -> None:
            i = 100
            while not stop.is_set():
                await publish_all(url, [chat(i, room="busy")])
                i += 1
                await asyncio.sleep(0.2)

        feeder = asyncio.create_task(keep_busy())
        await until(lambda: bus.stats.rooms_idle == 1)
        assert "quiet" not in bus.owned and "busy" in bus.owned
        info = store.session(first)
        assert info is not None and info.ended_ts is not None and info.meta.get("ended_by") == "idle"
        assert not await r.exists("livebot:session:quiet") and await r.sismember("livebot:rooms", "quiet")
        # The show resumes: taken again, in a new session.
        later = 3_600_000  # an hour on: the next show's events
        await publish_all(url, [chat(later + i, room="quiet") for i in range(10)])
        await until(lambda: pipe.sessions.get("quiet") not in (None, first))
        await until(lambda: len(store.execute("SELECT id FROM events WHERE room = 'quiet'")) == 30)
        stop.set()
        await feeder
        await shut_down(bus, pipe, task)
        rows = store.execute("SELECT COUNT(*) FROM events WHERE room = 'quiet'")[0][0]
        assert rows == 30 and len(store.sessions("quiet")) == 2
    assert await pending(r, "quiet") == 0
