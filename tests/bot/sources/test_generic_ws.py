"""Generic JSON websockets: the /ingest server and the reconnecting client, against real sockets on port 0."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from bot.clock import ManualClock
from bot.errors import ConfigError, SourceError
from bot.events import EventKind
from bot.privacy import ViewerHasher
from bot.sources.base import ReconnectPolicy, SourceState
from bot.sources.generic_json import MAX_MESSAGE_BYTES
from bot.sources.generic_ws import GenericIngestServer, GenericWsClient, is_loopback, safe_url
from tests.fakes.generic_push import EventCollector, GenericPushServer, running, until

HASHER = ViewerHasher.for_tests()
NOW = 1_767_225_600_000


def _chat(msg_id: str = "m-1", **over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "platform": "kuaishou",
        "room": "3x9demo",
        "kind": "chat",
        "ts": NOW,
        "id": msg_id,
        "user": {"id": "u1001", "name": "小北"},
        "text": "这个有XL码吗",
    }
    obj.update(over)
    return obj


def _fast_policy() -> ReconnectPolicy:
    return ReconnectPolicy(base_s=0.01, max_s=0.02)


@pytest.fixture
async def server() -> AsyncIterator[tuple[GenericIngestServer, EventCollector]]:
    srv = GenericIngestServer(port=0, hasher=HASHER, clock=ManualClock(NOW))
    out = EventCollector()
    async with running(srv, out):
        await asyncio.wait_for(srv.wait_started(), 5)
        yield srv, out


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)


# --- server ---


async def test_server_emits_valid_events_with_hashed_ids(server: Any, session: aiohttp.ClientSession) -> None:
    srv, out = server
    assert srv.status.state is SourceState.CONNECTED
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str(json.dumps(_chat(), ensure_ascii=False))
        ev = await out.next()
    assert (ev.platform, ev.room, ev.kind, ev.text, ev.msg_id) == (
        "kuaishou",
        "3x9demo",
        EventKind.CHAT,
        "这个有XL码吗",
        "m-1",
    )
    assert ev.user_id == HASHER("kuaishou", "u1001")
    assert ev.user_name is None
    assert ev.received_ts == NOW
    assert srv.status.messages == 1
    assert srv.status.last_message_ms == NOW


async def test_batch_keeps_valid_events_and_reports_the_bad_one(
    server: Any, session: aiohttp.ClientSession
) -> None:
    srv, out = server
    batch = [_chat("a"), _chat("b", ts="yesterday"), _chat("c")]
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str(json.dumps(batch))
        assert await _receive_json(ws) == {"error": "ts: expected an integer, got string", "index": 1}
        assert [e.msg_id for e in await out.take(2)] == ["a", "c"]
        # the connection stays open
        await ws.send_str(json.dumps(_chat("d")))
        assert (await out.next()).msg_id == "d"
        assert not ws.closed
    assert srv.status.messages == 3
    assert srv.status.errors == 1
    assert srv.status.last_error == "ts: expected an integer, got string"


async def test_non_json_gets_error_frame_and_connection_stays(
    server: Any, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    srv, out = server
    caplog.set_level(logging.WARNING, logger="bot.sources.generic_ws")
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str("this is not json")
        reply = await _receive_json(ws)
        assert reply["index"] == 0
        assert reply["error"].startswith("message is not valid JSON")
        await ws.send_bytes(b'{"platform":"x"}')
        assert await _receive_json(ws) == {
            "error": "binary frames are not accepted; send JSON as text frames",
            "index": 0,
        }
        await ws.send_str(json.dumps(_chat()))
        assert (await out.next()).msg_id == "m-1"
    assert srv.status.errors == 2
    lines = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("room=* platform=generic rejected event at index 0: message is not valid JSON")
        for line in lines
    ), lines


async def test_unknown_kind_is_counted(server: Any, session: aiohttp.ClientSession) -> None:
    srv, _out = server
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str(json.dumps([_chat("a", kind="poll"), _chat("b", kind="poll")]))
        assert (await _receive_json(ws))["error"] == "kind: unknown kind 'poll'"
        assert (await _receive_json(ws))["index"] == 1
    assert srv.status.unknown_kinds == {"poll": 2}


async def test_oversized_message_closes_with_1009(server: Any, session: aiohttp.ClientSession) -> None:
    srv, out = server
    big = json.dumps(_chat(text="大" * MAX_MESSAGE_BYTES))
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str(big)
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert ws.close_code == 1009
    assert out.events == []
    # a message just under the cap is fine
    fits = json.dumps(_chat(text="x" * (MAX_MESSAGE_BYTES - 400)))
    assert len(fits.encode()) <= MAX_MESSAGE_BYTES
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str(fits)
        assert (await out.next()).msg_id == "m-1"


async def test_duplicate_ids_are_dropped_per_room(server: Any, session: aiohttp.ClientSession) -> None:
    srv, out = server
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str(json.dumps([_chat("a"), _chat("a"), _chat("a", room="other"), _chat("b")]))
        got = await out.take(3)
    assert [(e.room, e.msg_id) for e in got] == [("3x9demo", "a"), ("other", "a"), ("3x9demo", "b")]
    assert srv.duplicates == 1


async def test_ts_far_off_is_kept_and_counted(server: Any, session: aiohttp.ClientSession) -> None:
    srv, out = server
    async with session.ws_connect(srv.url) as ws:
        await ws.send_str(json.dumps(_chat(ts=NOW - 3 * 24 * 3600 * 1000)))
        assert (await out.next()).ts == NOW - 3 * 24 * 3600 * 1000
    assert srv.ts_skewed == 1


async def test_room_override_and_store_names(session: aiohttp.ClientSession) -> None:
    srv = GenericIngestServer(port=0, hasher=HASHER, room="main", store_names=True)
    out = EventCollector()
    async with running(srv, out):
        await srv.wait_started()
        assert srv.status.room == "main"
        async with session.ws_connect(srv.url) as ws:
            await ws.send_str(json.dumps(_chat()))
            ev = await out.next()
    assert (ev.room, ev.user_name) == ("main", "小北")


async def test_origin_from_a_web_page_is_refused(server: Any, session: aiohttp.ClientSession) -> None:
    srv, out = server
    async with session.ws_connect(srv.url, origin="https://evil.example") as ws:
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert ws.close_code == 1008
    assert srv.refused == 1
    assert out.events == []


def test_token_required_off_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.10")
    assert not is_loopback("")
    with pytest.raises(ConfigError, match="token is required .* '0.0.0.0'") as info:
        GenericIngestServer(port=0, hasher=HASHER, host="0.0.0.0")
    assert info.value.key == "token"
    with pytest.raises(ConfigError, match="token must not be empty"):
        GenericIngestServer(port=0, hasher=HASHER, host="0.0.0.0", token="")
    with pytest.raises(ConfigError, match="port 70000 is out of range"):
        GenericIngestServer(port=70000, hasher=HASHER)


async def test_token_checked_on_non_loopback_bind(session: aiohttp.ClientSession) -> None:
    srv = GenericIngestServer(port=0, hasher=HASHER, host="0.0.0.0", token="s3cret")
    out = EventCollector()
    async with running(srv, out):
        await srv.wait_started()
        url = srv.url  # ws://127.0.0.1:<port>/ingest: the server listens on every interface
        attempts: list[dict[str, Any]] = [
            {},
            {"headers": {"Authorization": "Bearer wrong"}},
            {"params": {"token": "nope"}},
        ]
        for kwargs in attempts:
            async with session.ws_connect(url, **kwargs) as ws:
                msg = await ws.receive(timeout=5)
                assert msg.type is WSMsgType.CLOSE, kwargs
                assert ws.close_code == 1008
        async with session.ws_connect(url, headers={"Authorization": "Bearer s3cret"}) as ws:
            await ws.send_str(json.dumps(_chat("h")))
            assert (await out.next()).msg_id == "h"
        async with session.ws_connect(url, params={"token": "s3cret"}) as ws:
            await ws.send_str(json.dumps(_chat("q")))
            assert (await out.next()).msg_id == "q"
    assert srv.refused == 3
    assert srv.connections_total == 2


async def test_stop_closes_sources_with_going_away(session: aiohttp.ClientSession) -> None:
    srv = GenericIngestServer(port=0, hasher=HASHER)
    task = asyncio.create_task(srv.run(EventCollector()))
    await asyncio.wait_for(srv.wait_started(), 5)
    async with session.ws_connect(srv.url) as ws:
        srv.stop()
        msg = await ws.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE
        assert ws.close_code == 1001
    await asyncio.wait_for(task, 5)
    assert srv.status.state is SourceState.STOPPED
    with pytest.raises(RuntimeError, match="only be called once"):
        await srv.run(EventCollector())


async def test_port_in_use_is_a_source_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        srv = GenericIngestServer(port=port, hasher=HASHER)
        with pytest.raises(SourceError, match=f"cannot listen on 127.0.0.1:{port}"):
            await asyncio.wait_for(srv.run(EventCollector()), 5)
    assert srv.status.state is SourceState.FAILED


# --- client ---


async def test_client_receives_events_and_sends_token() -> None:
    async with GenericPushServer(token="tok") as upstream:
        client = GenericWsClient(upstream.url, hasher=HASHER, token="tok", policy=_fast_policy())
        out = EventCollector()
        async with running(client, out):
            await asyncio.wait_for(upstream.wait_clients(1), 5)
            await upstream.push([_chat("a"), _chat("b", kind="like", text=None, count=3)])
            await upstream.push("garbage")
            await upstream.push(_chat("c"))
            got = await out.take(3)
        assert [(e.kind, e.msg_id) for e in got] == [
            (EventKind.CHAT, "a"),
            (EventKind.LIKE, "b"),
            (EventKind.CHAT, "c"),
        ]
        assert got[1].count == 3
        assert upstream.authorization == ["Bearer tok"]
        assert upstream.received == []
        assert client.status.messages == 3
        assert client.status.errors == 1
        assert client.status.room == "*"
        assert client.status.state is SourceState.STOPPED


async def test_client_reconnects_and_drops_replayed_duplicates() -> None:
    async with GenericPushServer(replay_on_connect=2) as upstream:
        client = GenericWsClient(upstream.url, hasher=HASHER, room="main", policy=_fast_policy())
        out = EventCollector()
        async with running(client, out):
            up = await out.next()
            assert (up.kind, up.event, up.room) == (EventKind.SYSTEM, "source_up", "main")
            for msg_id in ("1", "2", "3"):
                await upstream.push(_chat(msg_id))
            assert [e.msg_id for e in await out.take(3)] == ["1", "2", "3"]

            await upstream.drop_clients()
            down, up_again = await out.take(2)
            assert (down.event, up_again.event) == ("source_down", "source_up")
            # the upstream resent "2" and "3" on connect: both dropped; new messages flow
            await upstream.push(_chat("4"))
            assert (await out.next()).msg_id == "4"
        assert [e.msg_id for e in out.events if e.kind is EventKind.CHAT] == ["1", "2", "3", "4"]
        assert all(e.room == "main" for e in out.events)
        assert client.duplicates == 2
        assert client.status.reconnects == 1
        assert client.connects == 2
        assert client.status.last_error == "closed by the server (code 1012)"


async def test_client_retries_until_upstream_comes_up() -> None:
    upstream = GenericPushServer()
    await upstream.start()
    url = upstream.url
    await upstream.stop()  # nothing listens on the port now
    client = GenericWsClient(url, hasher=HASHER, policy=_fast_policy(), system_events=False)
    out = EventCollector()
    async with running(client, out):
        await until(lambda: client.status.reconnects >= 2)
        assert client.status.state is SourceState.RECONNECTING
        assert client.status.down_since_ms is not None
        assert "ClientConnectorError" in (client.status.last_error or "")
        await upstream.start()  # same port
        try:
            await asyncio.wait_for(client.wait_connected(), 5)
            assert client.status.state is SourceState.CONNECTED
            assert client.status.down_since_ms is None
            await upstream.push(_chat())
            assert (await out.next()).msg_id == "m-1"
            assert client.policy.retry_count == 0  # reset by one good message
            assert client.policy.total_retry_count >= 2
        finally:
            await upstream.stop()


async def test_client_backoff_follows_the_clock() -> None:
    clock = ManualClock(NOW)
    async with GenericPushServer() as upstream:
        policy = ReconnectPolicy(base_s=2.0, max_s=2.0)
        client = GenericWsClient(upstream.url, hasher=HASHER, clock=clock, policy=policy, system_events=False)
        async with running(client, EventCollector()):
            await asyncio.wait_for(upstream.wait_connections(1), 5)
            await upstream.drop_clients()
            await until(lambda: client.status.state is SourceState.RECONNECTING)
            for _ in range(20):
                await asyncio.sleep(0)
            assert upstream.connections_total == 1  # still backing off: the clock has not moved
            clock.advance(2.0)  # the delay is at most max_s
            await asyncio.wait_for(upstream.wait_connections(2), 5)
            await asyncio.wait_for(client.wait_connected(), 5)


async def test_client_stop_while_backing_off_returns_promptly() -> None:
    client = GenericWsClient(
        "ws://127.0.0.1:9/",
        hasher=HASHER,
        clock=ManualClock(NOW),
        policy=ReconnectPolicy(base_s=60, max_s=60),
    )
    task = asyncio.create_task(client.run(EventCollector()))
    await until(lambda: client.status.state is SourceState.RECONNECTING)
    client.stop()
    await asyncio.wait_for(task, 5)
    assert client.status.state is SourceState.STOPPED
    assert not client.running


def test_logged_urls_never_carry_tokens() -> None:
    assert safe_url("wss://user:pw@example.com:8443/push?token=abc#x") == "wss://example.com:8443/push"
    assert safe_url("ws://[::1]:9000/ingest?token=abc") == "ws://[::1]:9000/ingest"
    assert safe_url("ws://127.0.0.1:8888/") == "ws://127.0.0.1:8888/"
