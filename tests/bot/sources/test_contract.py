"""One contract test over every Source implementation (nonebot `tests/test_driver.py`).

start → the source delivers one chat Event → stop() → run() returns → status STOPPED. Live sources run
against the fakes in tests/fakes/ on port 0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.clock import SystemClock
from bot.events import EventKind
from bot.privacy import ViewerHasher
from bot.sources.base import ReconnectPolicy, Source, SourceState
from bot.sources.bilibili import BilibiliSource
from bot.sources.douyin_push import DouyinPushSource
from bot.sources.generic_ws import GenericIngestServer, GenericWsClient
from bot.sources.ingest import IngestRouter
from bot.sources.replay import ReplaySource
from bot.sources.simulator import Simulator, SimulatorSource
from tests.fakes import bilibili as fake
from tests.fakes.barragegrab import FakeBarrageGrab
from tests.fakes.generic_push import EventCollector, GenericPushServer

HASHER = ViewerHasher.for_tests()
CHAT = {"platform": "custom", "room": "r1", "kind": "chat", "ts": 1767225600123, "user": {"id": "u1"},
        "text": "这个有XL码吗"}

Trigger = Callable[[], Awaitable[None]]
"""Makes the source's upstream produce one chat message."""
Setup = Callable[[Path], Any]  # an async context manager yielding (source, trigger, fake server or None)


@asynccontextmanager
async def simulator(tmp_path: Path) -> AsyncIterator[tuple[Source, Trigger, Any]]:
    clock = SystemClock()
    sim = Simulator(seed=3, rate=200.0, room="demo", start_ts=clock.now_ms())

    async def nothing() -> None:  # the simulated room talks on its own
        return None

    yield SimulatorSource(sim, clock=clock, hasher=HASHER), nothing, None


@asynccontextmanager
async def replay(tmp_path: Path) -> AsyncIterator[tuple[Source, Trigger, Any]]:
    log = tmp_path / "log.jsonl"
    later = {**CHAT, "ts": CHAT["ts"] + 3_600_000, "text": "一小时后"}
    log.write_text(json.dumps(CHAT) + "\n" + json.dumps(later) + "\n", encoding="utf-8")

    async def nothing() -> None:
        return None

    # Real-time pacing: the second line is an hour away, so stop() lands during the pacing wait.
    yield ReplaySource(log, hasher=HASHER, clock=SystemClock(), speed=1.0), nothing, None


@asynccontextmanager
async def bilibili(tmp_path: Path) -> AsyncIterator[tuple[Source, Trigger, Any]]:
    async with fake.FakeBilibili() as server:
        source = BilibiliSource(
            server.short_id, hasher=HASHER, clock=SystemClock(), room="demo", api_base=server.base_url,
            ws_url=server.ws_url, policy=ReconnectPolicy(base_s=0.01, max_s=0.05),
        )

        async def trigger() -> None:
            await server.wait_authed()
            await server.push(fake.zlib_frame(fake.danmu("这个有XL码吗", id_str="c-1")))

        yield source, trigger, server


@asynccontextmanager
async def douyin(tmp_path: Path) -> AsyncIterator[tuple[Source, Trigger, Any]]:
    async with FakeBarrageGrab() as server:
        source = DouyinPushSource(
            hasher=HASHER, room="demo", url=server.url, clock=SystemClock(),
            policy=ReconnectPolicy(base_s=0.01, max_s=0.05),
        )

        async def trigger() -> None:
            await asyncio.wait_for(server.wait_clients(1), 5)
            await server.push_example(1)

        yield source, trigger, server


@asynccontextmanager
async def generic_client(tmp_path: Path) -> AsyncIterator[tuple[Source, Trigger, Any]]:
    async with GenericPushServer() as server:
        source = GenericWsClient(
            server.url, hasher=HASHER, room="demo", clock=SystemClock(),
            policy=ReconnectPolicy(base_s=0.01, max_s=0.05),
        )

        async def trigger() -> None:
            await asyncio.wait_for(server.wait_clients(1), 5)
            await server.push(CHAT)

        yield source, trigger, server


async def _push_to(server: GenericIngestServer) -> None:
    await asyncio.wait_for(server.wait_started(), 5)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as ws:
        await ws.send_json(CHAT)


@asynccontextmanager
async def ingest_server(tmp_path: Path) -> AsyncIterator[tuple[Source, Trigger, Any]]:
    server = GenericIngestServer(port=0, hasher=HASHER, clock=SystemClock())
    yield server, lambda: _push_to(server), server


@asynccontextmanager
async def ingest_router(tmp_path: Path) -> AsyncIterator[tuple[Source, Trigger, Any]]:
    server = GenericIngestServer(port=0, hasher=HASHER, clock=SystemClock())
    yield IngestRouter(server, {"custom:r1": "demo"}), lambda: _push_to(server), server


SOURCES: dict[str, Setup] = {
    "simulator": simulator,
    "replay": replay,
    "bilibili": bilibili,
    "douyin": douyin,
    "generic_ws_client": generic_client,
    "generic_ingest_server": ingest_server,
    "generic_ingest_router": ingest_router,
}


@pytest.mark.parametrize("name", list(SOURCES))
async def test_start_receive_one_chat_stop(name: str, tmp_path: Path) -> None:
    async with SOURCES[name](tmp_path) as (source, trigger, _):
        assert source.status.state is SourceState.IDLE
        collector = EventCollector()
        task = asyncio.create_task(source.run(collector))
        try:
            await trigger()

            async def first_chat() -> Any:
                while True:
                    ev = await collector.next()
                    if ev.kind is EventKind.CHAT:
                        return ev

            chat = await asyncio.wait_for(first_chat(), 10)
            assert chat.text and chat.ts > 0 and chat.received_ts > 0
            assert chat.platform == source.status.platform or source.status.platform == "generic"
            assert source.status.state is SourceState.CONNECTED
        finally:
            source.stop()
            await asyncio.wait_for(task, 10)
        assert task.exception() is None
        assert source.status.state is SourceState.STOPPED


DROPS: dict[str, Callable[[Any], Awaitable[None]]] = {
    "bilibili": lambda server: server.drop(),
    "douyin": lambda server: server.drop_clients(),
    "generic_ws_client": lambda server: server.drop_clients(),
}


@pytest.mark.parametrize("name", list(DROPS))
async def test_lost_connection_sets_down_since_until_reconnected(name: str, tmp_path: Path) -> None:
    """What the source_down alert rule reads (bot.advisors.alerts): state and down_since_ms."""
    from tests.fakes.generic_push import until

    async with SOURCES[name](tmp_path) as (source, trigger, server):
        collector = EventCollector()
        task = asyncio.create_task(source.run(collector))
        try:
            await trigger()
            await until(lambda: source.status.state is SourceState.CONNECTED)
            assert source.status.down_since_ms is None
            await DROPS[name](server)
            await until(lambda: source.status.down_since_ms is not None)
            assert source.status.last_error
            await until(lambda: source.status.state is SourceState.CONNECTED)
            assert source.status.down_since_ms is None and source.status.reconnects >= 1
        finally:
            source.stop()
            await asyncio.wait_for(task, 10)
        assert [e.event for e in collector.events if e.kind is EventKind.SYSTEM][:3] == [
            "source_up", "source_down", "source_up"
        ]
