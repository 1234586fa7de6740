"""Host screen: HTTP routes, the websocket protocol, access control and the hub's fan-out.

Each test drives a real aiohttp client against the real app (TestServer, or ScreenServer on port 0).
Time is a ManualClock: the 2 Hz snapshot loop moves only when a test advances it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from bot.advisors.base import Severity, Suggestion, SuggestionKind, SuggestionState
from bot.clock import ManualClock
from bot.errors import ConfigError, ProtocolError, SinkError
from bot.events import Event, EventKind
from bot.outputs.screen import Hub, RoomActions, ScreenServer, make_app
from bot.outputs.screen.app import AccessGuard, is_loopback
from bot.outputs.screen.hub import Client, HubStats
from bot.outputs.screen.protocol import MAX_MESSAGE_BYTES, ActionName, parse_message
from bot.outputs.store import Store
from bot.state import RoomState
from nlp.analyzer import Analyzer

T0 = 1_767_268_800_000
ROOM = "demo"
TOKEN = "view-secret-4f1c"
CONTROL = "control-secret-9a7e"


def chat(i: int, text: str, ts: int) -> Event:
    return Event("test", ROOM, EventKind.CHAT, ts, ts, user_id=f"{i:016x}", text=text)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer("rules")


class Room:
    """A RoomState fed with analysed comments, a store session and the screen's action handler."""

    def __init__(self, analyzer: Analyzer, store: Store, clock: ManualClock) -> None:
        self.state = RoomState(ROOM)
        self.store = store
        self.clock = clock
        self.analyzer = analyzer
        self.session = store.start_session(ROOM, T0, source="test")
        self.sessions = {ROOM: self.session}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.actions = RoomActions({ROOM: self.state}, clock=clock, store=store, sessions=self.sessions)
        self.provider_calls = 0
        self.n = 0

    def feed(self, *texts: str) -> None:
        # Spread over the 100 ms steps just before now, so every window that ends now sees them.
        now = self.clock.now_ms()
        events = [chat(self.n + i, t, now - (len(texts) - i) * 100) for i, t in enumerate(texts)]
        self.n += len(texts)
        for ev, an in zip(events, self.analyzer.analyze(list(texts)), strict=True):
            self.state.apply(ev, an)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        self.provider_calls += 1
        return {ROOM: self.state.snapshot(self.clock.now_ms())}

    async def handle(self, room: str, action: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((room, action))
        return await self.actions(room, action)

    def suggestion(
        self, key: str = "a", *, ttl_s: int = 90, kind: SuggestionKind = SuggestionKind.SCRIPT_SWITCH,
        save: bool = True,
    ) -> Suggestion:
        now = self.clock.now_ms()
        s = Suggestion(
            id=f"sg{key}", room=ROOM, kind=kind, created_ts=now, expires_ts=now + ttl_s * 1000,
            text="切到「尺码答疑」", reason="近60秒 18% 的弹幕在问尺码", examples=("160斤穿什么码",),
            severity=Severity.WARNING,
        )
        self.state.record_suggestion(s)
        if save:
            self.store.save_suggestion(self.session, s)
        return s

    def stored_state(self, sid: str) -> str:
        rows = {r["id"]: r for r in self.store.suggestions(self.session)}
        return str(rows[sid]["state"])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + 60_000)


@pytest.fixture
def room(analyzer: Analyzer, tmp_path: Path, clock: ManualClock) -> Iterator[Room]:
    store = Store.open(tmp_path / "screen.db")
    r = Room(analyzer, store, clock)
    r.feed("这个多少钱", "好看爱了", "160斤穿什么码", "什么时候发货", "主播好美")
    yield r
    store.close()


@pytest.fixture
def hub(room: Room, clock: ManualClock) -> Hub:
    return Hub(snapshot_provider=room.snapshots, action_handler=room.handle, clock=clock, snapshot_hz=2.0)


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[TestClient[Any, Any]]:
    guard = AccessGuard(loopback=True, token="", control_token="")
    async with TestClient(TestServer(make_app(hub, guard), host="127.0.0.1")) as c:
        yield c


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 3.0) -> dict[str, Any]:
    """The next message of type `kind`, skipping others (snapshots arrive whenever the clock ticks)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                raise AssertionError(f"socket closed while waiting for {kind}: {msg!r}")
            data = json.loads(msg.data)
            if data["type"] == kind:
                return data


async def greeting(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], dict[str, Any]]:
    hello = json.loads((await ws.receive()).data)
    snap = json.loads((await ws.receive()).data)
    return hello, snap


# -- protocol (sans I/O) ---------------------------------------------------------------------------


def test_parse_valid_actions() -> None:
    raw = {"type": "action", "action": "accept", "id": "sg1", "room": "demo", "req": "r1"}
    a = parse_message(json.dumps(raw))
    assert (a.action, a.id, a.room, a.req) == (ActionName.ACCEPT, "sg1", "demo", "r1")
    assert a.as_dict() == {"type": "action", "action": "accept", "room": "demo", "id": "sg1"}
    s = parse_message('{"type":"action","action":"snooze","id":"x"}')
    assert s.seconds == 120
    seg = parse_message('{"type":"action","action":"set_segment","segment":"尺码答疑"}')
    assert seg.segment == "尺码答疑" and seg.room is None
    assert parse_message('{"type":"action","action":"pause_prompts"}').action is ActionName.PAUSE_PROMPTS


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("not json", None),
        ("[1, 2]", None),
        ('{"type": "hello"}', "type"),
        ('{"type": "action", "action": "launch"}', "action"),
        ('{"type": "action", "action": "accept"}', "id"),
        ('{"type": "action", "action": "accept", "id": 7}', "id"),
        ('{"type": "action", "action": "accept", "id": "' + "x" * 65 + '"}', "id"),
        ('{"type": "action", "action": "accept", "id": "a\\nb"}', "id"),
        ('{"type": "action", "action": "set_segment"}', "segment"),
        ('{"type": "action", "action": "snooze", "id": "a", "seconds": 99999}', "seconds"),
        ('{"type": "action", "action": "snooze", "id": "a", "seconds": true}', "seconds"),
        ('{"type": "action", "action": "dismiss", "id": "a", "seconds": 30}', "seconds"),
        ('{"type": "action", "action": "accept", "id": "a", "admin": true}', "admin"),
    ],
)
def test_parse_rejects_bad_messages(text: str, key: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(text)
    assert info.value.key == key


def test_parse_rejects_oversized_text() -> None:
    with pytest.raises(ProtocolError, match="larger than 4096 bytes"):
        parse_message('{"type":"action","action":"accept","id":"a","req":"' + "字" * 2000 + '"}')


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("screen.example", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- HTTP ------------------------------------------------------------------------------------------


async def test_pages_and_assets_are_served_locally_with_security_headers(
    client: TestClient[Any, Any],
) -> None:
    for path, marker in (("/", "主播屏"), ("/control", "场控")):
        r = await client.get(path)
        assert r.status == 200
        body = await r.text()
        assert marker in body
        assert "http://" not in body and "https://" not in body  # no CDN, nothing external
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
    for asset in ("screen.css", "common.js", "gauges.js", "host.js", "control.js", "icon.svg"):
        r = await client.get(f"/static/{asset}")
        assert r.status == 200, asset
    r = await client.get("/static/../app.py")
    assert r.status in (403, 404)


async def test_loopback_bind_refuses_foreign_host_header(client: TestClient[Any, Any]) -> None:
    # DNS rebinding: evil.example re-pointed at 127.0.0.1 arrives with its own Host header.
    r = await client.get("/", headers={"Host": "evil.example:8765"})
    assert r.status == 421
    r = await client.get("/", headers={"Host": "localhost:8765"})
    assert r.status == 200


# -- websocket protocol -----------------------------------------------------------------------------


async def test_snapshot_on_connect(client: TestClient[Any, Any], room: Room) -> None:
    async with client.ws_connect("/ws") as ws:
        hello, snap = await greeting(ws)
    assert hello["type"] == "status" and hello["hello"] is True
    assert hello["can_control"] is True and hello["rooms"] == [ROOM]
    assert snap["type"] == "snapshot" and snap["server_ms"] == room.clock.now_ms()
    demo = snap["rooms"][ROOM]
    assert demo["totals"]["comments"] == 5
    assert {"windows", "questions", "timeline", "sources"} <= set(demo)
    assert "advisor" not in demo


async def test_periodic_snapshots_follow_the_clock(
    client: TestClient[Any, Any], hub: Hub, room: Room, clock: ManualClock
) -> None:
    # The app's own 2 Hz loop (cleanup_ctx) runs on the manual clock: it ticks when time moves.
    async with client.ws_connect("/ws") as ws:
        _, first = await greeting(ws)
        assert first["rooms"][ROOM]["totals"]["comments"] == 5
        room.feed("尺码怎么选", "有优惠券吗")
        for expected_ms in (clock.now_ms() + 500, clock.now_ms() + 1000):
            clock.advance(0.5)
            snap = await next_of(ws, "snapshot")
            assert snap["server_ms"] == expected_ms
            assert snap["rooms"][ROOM]["totals"]["comments"] == 7


async def test_suggestion_is_pushed_immediately(client: TestClient[Any, Any], hub: Hub, room: Room) -> None:
    async with client.ws_connect("/ws") as ws:
        await greeting(ws)
        s = room.suggestion()
        hub.publish_suggestion(ROOM, s.to_json())
        # No clock movement: the suggestion must not wait for the next snapshot tick.
        msg = json.loads((await ws.receive(timeout=2)).data)
    assert msg["type"] == "suggestion"
    assert msg["id"] == s.id and msg["text"] == s.text and msg["state"] == "pending" and msg["room"] == ROOM


async def test_new_page_receives_pending_suggestions_only(
    client: TestClient[Any, Any], hub: Hub, room: Room, clock: ManualClock
) -> None:
    pending = room.suggestion("p")
    decided = room.suggestion("d")
    short = room.suggestion("s", ttl_s=1)
    hub.publish_suggestion(ROOM, pending.to_json())
    hub.publish_suggestion(ROOM, {**decided.to_json(), "state": "accepted"})
    hub.publish_suggestion(ROOM, short.to_json())
    clock.advance(2)
    async with client.ws_connect("/ws") as ws:
        await greeting(ws)
        msg = json.loads((await ws.receive(timeout=2)).data)
        assert msg["type"] == "suggestion" and msg["id"] == pending.id
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.2)


async def test_accept_reaches_the_handler_the_store_and_every_page(
    client: TestClient[Any, Any], hub: Hub, room: Room
) -> None:
    s = room.suggestion()
    hub.publish_suggestion(ROOM, s.to_json())
    async with client.ws_connect("/ws") as host, client.ws_connect("/ws") as control:
        await greeting(host)
        await greeting(control)
        await next_of(host, "suggestion")
        await next_of(control, "suggestion")
        await control.send_json({"type": "action", "action": "accept", "id": s.id, "room": ROOM, "req": "r1"})
        result = await next_of(control, "action_result")
        pushed = await next_of(host, "suggestion")
    assert result == {"type": "action_result", "ok": True, "action": "accept", "room": ROOM, "id": s.id,
                      "req": "r1"}
    assert pushed["id"] == s.id and pushed["state"] == "accepted"
    assert room.calls == [(ROOM, {"type": "action", "action": "accept", "room": ROOM, "id": s.id})]
    assert room.state.suggestions[-1].state is SuggestionState.ACCEPTED
    assert room.stored_state(s.id) == "accepted"
    assert hub.pending_suggestions() == []


async def test_dismiss_snooze_segment_and_engine_only_actions(
    client: TestClient[Any, Any], room: Room, clock: ManualClock
) -> None:
    a, b = room.suggestion("a"), room.suggestion("b", save=False)
    async with client.ws_connect("/ws") as ws:
        await greeting(ws)
        await ws.send_json({"type": "action", "action": "dismiss", "id": a.id})
        r = await next_of(ws, "action_result")
        assert r["ok"] is True and r["room"] == ROOM  # the only room is implied
        assert room.stored_state(a.id) == "dismissed"

        await ws.send_json({"type": "action", "action": "dismiss", "id": a.id})
        assert (await next_of(ws, "action_result"))["ok"] is True  # idempotent
        await ws.send_json({"type": "action", "action": "accept", "id": a.id})
        r = await next_of(ws, "action_result")
        assert (r["ok"], r["error"]) == (False, "already_decided")

        await ws.send_json({"type": "action", "action": "snooze", "id": b.id, "seconds": 60})
        r = await next_of(ws, "action_result")
        assert r["ok"] is True and r["snoozed_until"] == clock.now_ms() + 60_000
        pushed = await next_of(ws, "suggestion")
        assert pushed["state"] == "pending" and pushed["data"]["snoozed_until"] == r["snoozed_until"]

        # A suggestion the store never saw is saved whole when it is decided.
        await ws.send_json({"type": "action", "action": "accept", "id": b.id})
        assert (await next_of(ws, "action_result"))["ok"] is True
        assert room.stored_state(b.id) == "accepted"

        await ws.send_json({"type": "action", "action": "set_segment", "segment": "尺码答疑"})
        r = await next_of(ws, "action_result")
        assert r["ok"] is True and r["segment"] == "尺码答疑"
        assert room.state.segment == "尺码答疑"

        await ws.send_json({"type": "action", "action": "coupon_dropped"})
        r = await next_of(ws, "action_result")
        assert (r["ok"], r["error"]) == (False, "no_engine")

        await ws.send_json({"type": "action", "action": "accept", "id": "nope"})
        assert (await next_of(ws, "action_result"))["error"] == "not_found"
        await ws.send_json({"type": "action", "action": "accept", "id": a.id, "room": "other"})
        assert (await next_of(ws, "action_result"))["error"] == "unknown_room"


async def test_expired_suggestion_cannot_be_accepted(
    client: TestClient[Any, Any], room: Room, clock: ManualClock
) -> None:
    s = room.suggestion(ttl_s=5)
    clock.advance(6)
    async with client.ws_connect("/ws") as ws:
        await greeting(ws)
        await ws.send_json({"type": "action", "action": "accept", "id": s.id})
        r = await next_of(ws, "action_result")
    assert (r["ok"], r["error"]) == (False, "expired")
    assert room.stored_state(s.id) == "expired"


async def test_handler_failure_is_reported_not_raised(room: Room, clock: ManualClock) -> None:
    async def broken(room_name: str, action: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    hub = Hub(snapshot_provider=room.snapshots, action_handler=broken, clock=clock)
    guard = AccessGuard(loopback=True, token="", control_token="")
    async with TestClient(TestServer(make_app(hub, guard), host="127.0.0.1")) as c, c.ws_connect("/ws") as ws:
        await greeting(ws)
        await ws.send_json({"type": "action", "action": "pause_prompts"})
        r = await next_of(ws, "action_result")
        assert (r["ok"], r["error"]) == (False, "internal")
        await ws.send_json({"type": "action", "action": "resume_prompts"})
        assert (await next_of(ws, "action_result"))["error"] == "internal"  # the socket lives on


# -- rejected input ----------------------------------------------------------------------------------


async def test_malformed_messages_get_an_error_and_the_socket_lives_on(
    client: TestClient[Any, Any], room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bot.outputs.screen")
    async with client.ws_connect("/ws") as ws:
        await greeting(ws)
        await ws.send_str("{not json")
        err = await next_of(ws, "error")
        assert err["error"] == "malformed" and err["message"]
        await ws.send_bytes(b"\x00\x01")
        assert (await next_of(ws, "error"))["error"] == "binary"
        await ws.send_json({"type": "action", "action": "set_segment", "segment": "逼单"})
        assert (await next_of(ws, "action_result"))["ok"] is True
    assert room.calls and room.calls[-1][1]["action"] == "set_segment"
    assert "message rejected (malformed" in caplog.text


async def test_too_many_bad_messages_close_the_socket(client: TestClient[Any, Any]) -> None:
    async with client.ws_connect("/ws") as ws:
        await greeting(ws)
        for _ in range(10):
            await ws.send_str('{"type": "nope"}')
        async with asyncio.timeout(3):
            while (msg := await ws.receive()).type is WSMsgType.TEXT:
                pass
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert ws.close_code == WSCloseCode.POLICY_VIOLATION


async def test_oversized_message_closes_the_socket_with_1009(
    client: TestClient[Any, Any], room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bot.outputs.screen")
    async with client.ws_connect("/ws") as ws:
        await greeting(ws)
        await ws.send_str('{"type":"action","action":"accept","id":"' + "x" * MAX_MESSAGE_BYTES + '"}')
        async with asyncio.timeout(3):
            while (await ws.receive()).type is WSMsgType.TEXT:
                pass
        assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG
    assert room.calls == []
    assert "ws_error" in caplog.text


# -- access control -------------------------------------------------------------------------------


def test_non_loopback_bind_requires_both_tokens() -> None:
    def make(**kw: Any) -> ScreenServer:
        async def handler(room: str, action: dict[str, Any]) -> dict[str, Any]:
            return {}

        return ScreenServer(snapshot_provider=dict, action_handler=handler, **kw)

    with pytest.raises(ConfigError, match="screen.token") as info:
        make(host="0.0.0.0", port=0)
    assert info.value.key == "screen.token"
    with pytest.raises(ConfigError, match="screen.control_token"):
        make(host="192.168.1.20", port=0, token=TOKEN)
    with pytest.raises(ConfigError, match="must differ"):
        make(host="0.0.0.0", port=0, token=TOKEN, control_token=TOKEN)
    assert make(host="127.0.0.1", port=0).guard.loopback


@pytest.fixture
async def exposed(room: Room, clock: ManualClock) -> AsyncIterator[ScreenServer]:
    """Bound to every interface (tokens required); the tests connect through 127.0.0.1."""
    srv = ScreenServer(
        host="0.0.0.0", port=0, token=TOKEN, control_token=CONTROL, snapshot_provider=room.snapshots,
        action_handler=room.handle, clock=clock,
    )
    async with srv:
        yield srv


async def test_tokens_gate_viewing_and_control_and_are_never_logged(
    exposed: ScreenServer, room: Room, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    base = exposed.url
    assert base.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as http:
        for path, token, status in (
            ("", None, 403), ("", "wrong", 403), ("", TOKEN, 200), ("", CONTROL, 200),
            ("control", None, 403), ("control", TOKEN, 403), ("control", CONTROL, 200),
        ):
            params = {"token": token} if token else {}
            async with http.get(base + path, params=params) as r:
                assert r.status == status, (path, token)
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(base + "ws")
        assert info.value.status == 403

        s = room.suggestion()
        exposed.publish_suggestion(ROOM, s.to_json())
        async with http.ws_connect(base + "ws", params={"token": TOKEN}) as viewer:
            hello, snap = await greeting(viewer)
            assert hello["can_control"] is False and ROOM in snap["rooms"]
            await viewer.send_json({"type": "action", "action": "accept", "id": s.id})
            r = await next_of(viewer, "action_result")
            assert (r["ok"], r["error"]) == (False, "forbidden")
        assert room.calls == []

        async with http.ws_connect(base + "ws", params={"token": CONTROL}) as control:
            hello, _ = await greeting(control)
            assert hello["can_control"] is True
            await control.send_json({"type": "action", "action": "accept", "id": s.id})
            assert (await next_of(control, "action_result"))["ok"] is True
    assert room.stored_state(s.id) == "accepted"
    assert "refused" in caplog.text  # refusals are logged, tokens never are
    for secret in (TOKEN, CONTROL, "wrong"):
        assert secret not in caplog.text


async def test_bad_origin_is_refused(client: TestClient[Any, Any]) -> None:
    own = f"http://127.0.0.1:{client.port}"
    for origin in ("http://evil.example", f"http://evil.example:{client.port}", "null",
                   f"http://127.0.0.1:{client.port + 1}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/ws", origin=origin)
        assert info.value.status == 403, origin
    async with client.ws_connect("/ws", origin=own) as ws:
        hello, _ = await greeting(ws)
        assert hello["hello"] is True


# -- fan-out and slow clients -------------------------------------------------------------------------


async def test_fifty_clients_receive_each_snapshot_serialised_once(
    client: TestClient[Any, Any], hub: Hub, room: Room, clock: ManualClock
) -> None:
    sockets = [await client.ws_connect("/ws") for _ in range(50)]
    try:
        for ws in sockets:
            await greeting(ws)
        assert len(hub.clients) == 50
        calls = room.provider_calls
        room.feed("链接在哪")
        hub.broadcast_snapshot()
        assert room.provider_calls == calls + 1
        snaps = await asyncio.gather(*(next_of(ws, "snapshot") for ws in sockets))
        assert {s["rooms"][ROOM]["totals"]["comments"] for s in snaps} == {6}
        hub.publish_suggestion(ROOM, room.suggestion().to_json())
        got = await asyncio.gather(*(next_of(ws, "suggestion") for ws in sockets))
        assert len({g["id"] for g in got}) == 1
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


class _StuckSocket:
    """A page on a dead network: send_str blocks until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.sent: list[str] = []
        self.closed = False

    async def send_str(self, data: str) -> None:
        await self.release.wait()
        self.sent.append(data)

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed = True


class _FastSocket(_StuckSocket):
    def __init__(self) -> None:
        super().__init__()
        self.release.set()


def _client(ws: _StuckSocket, stats: HubStats, *, max_messages: int = 1000, timeout: float = 30.0) -> Client:
    c = Client(ws, can_control=False, peer="test", max_pending_messages=max_messages,  # type: ignore[arg-type]
               max_pending_snapshots=2, send_timeout_s=timeout, stats=stats)
    c.task = asyncio.create_task(c.write_loop())
    return c


async def test_slow_client_drops_old_snapshots_keeps_suggestions_and_never_blocks_others() -> None:
    stats = HubStats()
    slow_ws, fast_ws = _StuckSocket(), _FastSocket()
    slow, fast = _client(slow_ws, stats), _client(fast_ws, stats)
    slow.push_snapshot("snap-0")
    await asyncio.sleep(0)  # the slow writer is now stuck inside send_str("snap-0")
    for i in range(1, 6):
        for c in (slow, fast):
            c.push_snapshot(f"snap-{i}")
        if i == 3:
            for c in (slow, fast):
                c.push("suggestion-1")
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert fast_ws.sent == ["snap-1", "snap-2", "suggestion-1", "snap-3", "snap-4", "snap-5"]
    assert slow_ws.sent == []
    slow_ws.release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    # Suggestions jump the queue; only the two newest snapshots were kept.
    assert slow_ws.sent == ["snap-0", "suggestion-1", "snap-4", "snap-5"]
    assert stats.snapshots_dropped == 3
    for c in (slow, fast):
        c.close()
        await c.task


async def test_client_far_behind_is_disconnected_instead_of_losing_suggestions() -> None:
    stats = HubStats()
    ws = _StuckSocket()
    c = _client(ws, stats, max_messages=3)
    for i in range(4):
        c.push(f"suggestion-{i}")
    await asyncio.sleep(0)
    ws.release.set()
    await asyncio.wait_for(c.task, 2)
    assert ws.closed and stats.slow_disconnects == 1


async def test_send_timeout_disconnects_a_stuck_client() -> None:
    stats = HubStats()
    ws = _StuckSocket()
    c = _client(ws, stats, timeout=0.05)
    c.push("suggestion-1")
    await asyncio.wait_for(c.task, 2)
    assert ws.closed and stats.slow_disconnects == 1


# -- lifecycle -----------------------------------------------------------------------------------------


async def test_server_lifecycle_and_going_away_on_stop(room: Room, clock: ManualClock) -> None:
    srv = ScreenServer(host="127.0.0.1", port=0, snapshot_provider=room.snapshots, action_handler=room.handle,
                       clock=clock)
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.url
    await srv.start()
    with pytest.raises(RuntimeError, match="already running"):
        await srv.start()
    port = int(srv.url.rsplit(":", 1)[1].strip("/"))
    assert srv.control_url == srv.url + "control"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(srv.url + "ws")
        await greeting(ws)
        assert srv.clients == 1
        other = ScreenServer(host="127.0.0.1", port=port, snapshot_provider=room.snapshots,
                             action_handler=room.handle, clock=clock)
        with pytest.raises(SinkError, match=f"cannot listen on 127.0.0.1:{port}"):
            await other.start()
        await srv.stop()
        async with asyncio.timeout(3):
            while (msg := await ws.receive()).type is WSMsgType.TEXT:
                pass
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, WSCloseCode.GOING_AWAY)
        await ws.close()
    await srv.stop()  # idempotent
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        await srv.start()


async def test_sink_send_pushes_a_suggestion(room: Room, clock: ManualClock) -> None:
    srv = ScreenServer(host="127.0.0.1", port=0, snapshot_provider=room.snapshots, action_handler=room.handle,
                       clock=clock)
    async with srv, aiohttp.ClientSession() as http, http.ws_connect(srv.url + "ws") as ws:
        await greeting(ws)
        s = room.suggestion(kind=SuggestionKind.COUPON)
        await srv.send(s)
        msg = await next_of(ws, "suggestion")
    assert msg["id"] == s.id and msg["kind"] == "coupon"


# -- App wiring ------------------------------------------------------------------------------------------


async def test_app_serves_the_screen_and_prints_both_urls(tmp_path: Path) -> None:
    import io

    from bot.app import App
    from bot.config import parse_config

    cfg = parse_config({
        "data_dir": str(tmp_path), "screen": {"port": 0}, "status": {"terminal": False},
        "rooms": [{"name": ROOM, "sources": [{"kind": "simulator", "rate": 20}]}],
    })
    out = io.StringIO()
    app = App(cfg, out=out)
    task = asyncio.create_task(app.run(duration_s=30))
    try:
        async with asyncio.timeout(10):
            while app.screen is None or not app.screen.running:
                await asyncio.sleep(0.02)
        assert app.screen is not None
        async with aiohttp.ClientSession() as http, http.ws_connect(app.screen.url + "ws") as ws:
            hello, snap = await greeting(ws)
            assert hello["rooms"] == [ROOM] and ROOM in snap["rooms"]
            await ws.send_json({"type": "action", "action": "set_segment", "segment": "逼单"})
            assert (await next_of(ws, "action_result"))["ok"] is True
        assert app.states[ROOM].segment == "逼单"
    finally:
        app.request_stop()
        await task
    printed = out.getvalue()
    assert f"主播屏: {app.screen.url}  场控: {app.screen.url}control" in printed
    assert not app.screen.running



# -- with a real advisor engine ----------------------------------------------------------------------


@pytest.fixture
def engine_room(analyzer: Analyzer, tmp_path: Path, clock: ManualClock) -> Iterator[tuple[Room, Any]]:
    """A room whose price questions make the real engine announce a coupon (and alerts)."""
    from bot.advisors.engine import build_engine
    from bot.config import Config

    store = Store.open(tmp_path / "engine.db")
    r = Room(analyzer, store, clock)
    engine = build_engine(ROOM, Config().advisors, clock=clock)
    r.actions = RoomActions({ROOM: r.state}, clock=clock, store=store, sessions=r.sessions,
                            engine_for=lambda name: engine if name == ROOM else None)
    r.feed(*["这个多少钱", "太贵了吧", "有优惠券吗", "价格能便宜点吗", "怎么领券", "好贵啊"] * 5)
    yield r, engine
    store.close()


async def test_actions_are_routed_to_the_advisor_engine(
    engine_room: tuple[Room, Any], clock: ManualClock
) -> None:
    from bot.outputs.screen.view import advisor_view

    room, engine = engine_room
    clock.advance(5)
    new = engine.tick(room.state, clock.now_ms())
    coupon = next(s for s in new if s.kind is SuggestionKind.COUPON)
    alerts = [s for s in new if s.kind is SuggestionKind.ALERT]
    assert len(alerts) >= 2
    for s in new:
        room.store.save_suggestion(room.session, s)  # what the dispatcher's StoreSink does

    def provider() -> dict[str, dict[str, Any]]:
        snap = room.state.snapshot(clock.now_ms())
        snap["advisor"] = advisor_view(engine, clock.now_ms())
        return {ROOM: snap}

    hub = Hub(snapshot_provider=provider, action_handler=room.handle, clock=clock)
    for s in new:
        hub.publish_suggestion(ROOM, s.to_json())
    guard = AccessGuard(loopback=True, token="", control_token="")
    async with TestClient(TestServer(make_app(hub, guard), host="127.0.0.1")) as c, c.ws_connect("/ws") as ws:
        _, snap = await greeting(ws)
        adv = snap["rooms"][ROOM]["advisor"]
        assert adv["segment"] == "开场" and "尺码答疑" in adv["segments"] and adv["talking_points"]
        assert adv["coupon"]["pending_id"] == coupon.id and adv["coupon"]["budget_left"] == 12
        assert adv["coupon"]["reason"] == "价格犹豫，提前发"
        assert {p["id"] for p in adv["pending"]} == {s.id for s in new}

        async def act(**msg: Any) -> dict[str, Any]:
            await ws.send_json({"type": "action", **msg})
            return await next_of(ws, "action_result")

        r = await act(action="accept", id=coupon.id)
        assert r["ok"] is True
        assert (await next_of(ws, "suggestion"))["state"] == "accepted"
        assert room.stored_state(coupon.id) == "accepted"
        assert coupon.id not in {s.id for s in engine.pending}
        assert (await act(action="accept", id=coupon.id))["unchanged"] is True
        r = await act(action="dismiss", id=coupon.id)
        assert (r["ok"], r["error"]) == (False, "already_decided")

        r = await act(action="dismiss", id=alerts[0].id)
        assert r["ok"] is True and room.stored_state(alerts[0].id) == "dismissed"
        r = await act(action="snooze", id=alerts[1].id, seconds=300)
        assert r["ok"] is True and r["snoozed_until"] == clock.now_ms() + 300_000
        assert room.stored_state(alerts[1].id) == "dismissed"  # the engine's meaning of "not now"

        assert (await act(action="pause_prompts"))["ok"] is True
        assert engine.status(clock.now_ms())["prompts"]["paused"] is True
        assert (await act(action="resume_prompts"))["ok"] is True
        assert engine.status(clock.now_ms())["prompts"]["paused"] is False

        r = await act(action="set_segment", segment="尺码答疑")
        assert r["ok"] is True and room.state.segment == "尺码答疑"
        assert engine.status(clock.now_ms())["segment"] == "尺码答疑"
        r = await act(action="set_segment", segment="不存在的段落")
        assert (r["ok"], r["error"]) == (False, "rejected") and "不存在的段落" in r["message"]
        assert room.state.segment == "尺码答疑"

        assert (await act(action="coupon_dropped"))["ok"] is True  # the host's own drop is recorded
        # Both are kept in the store, so a resumed session's advisors continue from them.
        assert [m["key"] for m in room.store.marks(room.session, "segment")] == ["尺码答疑"]
        assert [m["ts"] for m in room.store.marks(room.session, "coupon")] == [clock.now_ms()]
        assert (await act(action="accept", id="unknown"))["error"] == "not_found"


async def test_periodic_snapshot_is_built_room_by_room_and_lets_other_work_in_between(
    room: Room, clock: ManualClock
) -> None:
    """With `snapshot_steps` the 2 Hz broadcast yields to the loop between rooms (analysed batches must
    not wait for ten rooms' snapshots); a page that connects still gets the whole snapshot at once."""
    order: list[str] = []

    async def steps() -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for name in ("a", "b", "c"):
            if order:
                await asyncio.sleep(0)
            order.append(name)
            yield name, {"room": name, "now_ms": clock.now_ms()}

    def provider() -> dict[str, Any]:
        return {name: {"room": name} for name in ("a", "b", "c")}

    hub = Hub(snapshot_provider=provider, action_handler=room.handle, clock=clock, snapshot_steps=steps)
    guard = AccessGuard(loopback=True, token="", control_token="")
    async with TestClient(TestServer(make_app(hub, guard), host="127.0.0.1")) as c, c.ws_connect("/ws") as ws:
        _, first = await greeting(ws)
        assert list(first["rooms"]) == ["a", "b", "c"] and order == []  # the connect path: provider

        async def other_work() -> None:
            order.append("batch")

        broadcast = asyncio.create_task(hub.broadcast_snapshot_stepwise())
        other = asyncio.create_task(other_work())  # queued behind the broadcast's first step
        await asyncio.gather(broadcast, other)
        assert order == ["a", "batch", "b", "c"]
        snap = await next_of(ws, "snapshot")
        assert [r["room"] for r in snap["rooms"].values()] == ["a", "b", "c"]
        assert snap["rooms"]["b"]["now_ms"] == clock.now_ms()
