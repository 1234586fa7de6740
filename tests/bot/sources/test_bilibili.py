"""BilibiliSource end to end against tests.fakes.bilibili: bootstrap, auth, heartbeat, frames, reconnects."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from bot.clock import ManualClock, SystemClock
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources.base import ReconnectPolicy, SourceState
from bot.sources.bilibili import USER_AGENT, BilibiliSource, DanmuHost, parse_cookie_header, parse_host_list
from tests.fakes import bilibili as fake

HASHER = ViewerHasher.for_tests()
LOGGER = "bot.sources.bilibili"


class Collector:
    """The `emit` callable: records Events and lets a test wait for a condition on them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.events))

    async def wait_texts(self, *texts: str) -> None:
        await self.wait_for(lambda events: set(texts) <= {e.text for e in events if e.kind is EventKind.CHAT})

    async def wait_up(self, count: int = 1) -> None:
        """Wait for the `count`-th source_up, then give the new connection's tasks a moment to start."""
        await self.wait_for(lambda events: [e.event for e in events].count("source_up") >= count)
        await asyncio.sleep(0.01)

    def chats(self) -> list[str]:
        return [e.text for e in self.events if e.kind is EventKind.CHAT]

    def system(self) -> list[str | None]:
        return [e.event for e in self.events if e.kind is EventKind.SYSTEM]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition the code under test makes true on its own schedule."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def make_source(server: fake.FakeBilibili, **overrides: object) -> BilibiliSource:
    options: dict[str, object] = {
        "hasher": HASHER,
        "clock": SystemClock(),
        "room": "demo",
        "api_base": server.base_url,
        "ws_url": server.ws_url,
        "policy": ReconnectPolicy(base_s=0.01, max_s=0.05, rng=random.Random(7)),
        "heartbeat_s": 30.0,
        "auth_timeout_s": 2.0,
    }
    options.update(overrides)
    return BilibiliSource(server.short_id, **options)  # type: ignore[arg-type]


@asynccontextmanager
async def running(source: BilibiliSource, collector: Collector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run(collector))
    try:
        yield task
    finally:
        source.stop()
        await asyncio.wait_for(task, 3)
        assert source.status.state is SourceState.STOPPED


@pytest.fixture
async def server() -> AsyncIterator[fake.FakeBilibili]:
    async with fake.FakeBilibili() as srv:
        yield srv
        assert srv.violations == []


async def test_bootstrap_and_auth_handshake(server: fake.FakeBilibili) -> None:
    source, sink = make_source(server), Collector()
    async with running(source, sink):
        await sink.wait_up()
        assert source.status.state is SourceState.CONNECTED
    assert [path for path, _, _ in server.requests] == [
        "/x/web-interface/nav",
        "/",
        "/room/v1/Room/get_info",
        "/xlive/web-room/v1/index/getDanmuInfo",
    ]
    assert server.requests[2][1] == {"room_id": "1"}  # the short id, resolved by room init
    assert server.auths == [
        {
            "uid": 0,
            "roomid": 1017,
            "protover": 3,
            "platform": "web",
            "type": 2,
            "buvid": "FAKE-BUVID3-0001infoc",
            "key": "tk1",
        }
    ]
    headers = server.ws_headers[0]
    assert headers["User-Agent"] == USER_AGENT
    assert "buvid3=FAKE-BUVID3-0001infoc" in headers["Cookie"]
    assert sink.system()[:1] == ["source_up"]
    assert sink.events[0].room == "demo" and sink.events[0].platform == "bilibili"
    assert source.status.name == "bilibili:1"


async def test_logged_in_cookie_sets_uid_and_is_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    async with fake.FakeBilibili(sessdata="s3cr3t-sessdata") as server:
        source = make_source(
            server, cookie="SESSDATA=s3cr3t-sessdata; bili_jct=csrf-token-x", store_names=True
        )
        sink = Collector()
        async with running(source, sink):
            await server.wait_authed()
        assert server.violations == []
    assert server.auths[0]["uid"] == server.viewer_mid
    nav_cookie = server.requests[0][2]
    assert "SESSDATA=s3cr3t-sessdata" in nav_cookie
    assert "s3cr3t" not in caplog.text and "csrf-token-x" not in caplog.text
    assert "not logged in" not in caplog.text


async def test_expired_cookie_continues_anonymously(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with fake.FakeBilibili(sessdata="current") as server:
        source, sink = make_source(server, cookie="SESSDATA=expired; buvid3=mine"), Collector()
        async with running(source, sink):
            await server.wait_authed()
    assert server.auths[0]["uid"] == 0
    assert server.auths[0]["buvid"] == "mine"
    assert "/" not in [path for path, _, _ in server.requests]  # buvid3 already set: no home page fetch
    assert "not logged in (expired SESSDATA?)" in caplog.text
    assert "room=demo platform=bilibili" in caplog.text


async def test_heartbeat_every_interval_on_the_clock(server: fake.FakeBilibili) -> None:
    clock = ManualClock()
    source, sink = make_source(server, clock=clock, heartbeat_s=30.0), Collector()
    async with running(source, sink):
        await sink.wait_up()
        await server.wait_for(lambda: server.heartbeats == 1)  # sent right after AUTH_REPLY
        await until(lambda: source.popularity == 1)
        for expected in (2, 3):
            server.popularity = expected * 1000
            clock.advance(30)
            await server.wait_for(lambda n=expected: server.heartbeats >= n)
            await until(lambda n=expected: source.popularity == n * 1000)  # the reply arrived
        assert server.heartbeats == 3
        assert server.heartbeat_bodies == [b"{}"] * 3
        assert source.status.state is SourceState.CONNECTED
    assert server.connections == 1


async def test_silence_past_the_receive_timeout_reconnects() -> None:
    clock = ManualClock()
    async with fake.FakeBilibili(answer_heartbeats=False) as server:
        source, sink = make_source(server, clock=clock, heartbeat_s=30.0), Collector()
        async with running(source, sink):
            await sink.wait_up()
            clock.advance(34)
            await asyncio.sleep(0.05)
            assert server.connections == 1
            clock.advance(2)  # 36 s of silence > heartbeat_s + 5
            await sink.wait_for(lambda events: "source_down" in [e.event for e in events])
            while server.connections < 2:  # the backoff sleeps on the manual clock too
                clock.advance(0.1)
                await asyncio.sleep(0.01)
            await sink.wait_up(2)
        assert server.violations == []
    assert source.status.reconnects == 1
    assert sink.system() == ["source_up", "source_down", "source_up"]


async def test_compressed_multi_packet_frames(server: fake.FakeBilibili) -> None:
    source, sink = make_source(server), Collector()
    async with running(source, sink):
        await server.wait_authed()
        await server.push(
            fake.zlib_frame(
                fake.danmu("第一条", id_str="d1"), fake.send_gift(tid="g1", num=2), fake.super_chat()
            )
        )
        await server.push(
            fake.brotli_frame(
                fake.interact_word_v2(),
                fake.send_gift_v2({"gift_name": "小心心", "tid": "g2"}),
                fake.like_click(),
                fake.watched_change(17000),
                fake.online_rank_count(42),
                fake.guard_buy(),
                fake.live(),
            )
        )
        await server.push(fake.plain_frame(fake.danmu("第二条", id_str="d2"), fake.preparing()))
        await sink.wait_for(lambda events: "live_end" in [e.event for e in events])
    kinds = [(e.kind.value, e.event or e.gift_name or e.text or e.stats) for e in sink.events]
    assert kinds == [
        ("system", "source_up"),
        ("chat", "第一条"),
        ("gift", "小花花"),
        ("gift", "醒目留言"),
        ("enter", None),
        ("gift", "小心心"),
        ("like", None),
        ("stats", {"viewers_total": 17000}),
        ("stats", {"online": 42}),
        ("gift", "舰长"),
        ("system", "live_start"),
        ("chat", "第二条"),
        ("system", "live_end"),
    ]
    assert source.status.messages == 12
    assert source.status.errors == 0
    assert source.status.last_message_ms is not None


async def test_drop_reconnect_resume_without_duplicates(server: fake.FakeBilibili) -> None:
    source, sink = make_source(server), Collector()
    async with running(source, sink):
        await server.wait_authed()
        await server.push(fake.brotli_frame(fake.danmu("a", id_str="id-a"), fake.danmu("b", id_str="id-b")))
        await sink.wait_texts("a", "b")
        await server.drop()
        await server.wait_authed(2)
        # The server replays "b" after the reconnect; it must not be counted twice.
        await server.push(fake.brotli_frame(fake.danmu("b", id_str="id-b"), fake.danmu("c", id_str="id-c")))
        await sink.wait_texts("c")
    assert sink.chats() == ["a", "b", "c"]
    assert source.duplicates_dropped == 1
    assert sink.system() == ["source_up", "source_down", "source_up"]
    assert source.status.reconnects == 1
    assert [auth["key"] for auth in server.auths] == ["tk1", "tk1"]  # one drop: no new bootstrap
    assert source.bootstraps == 1


async def test_malformed_frames_are_logged_and_skipped(
    server: fake.FakeBilibili, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    source, sink = make_source(server), Collector()
    names = list(fake.MALFORMED)
    async with running(source, sink):
        await server.wait_authed()
        for index, name in enumerate(names):
            await server.push(fake.MALFORMED[name])
            await server.push(fake.plain_frame(fake.danmu(f"ok{index}", id_str=f"id{index}")))
        await server.push(fake.MALFORMED["bad_brotli"] + fake.brotli_frame(fake.danmu("after", id_str="z")))
        await sink.wait_texts("after")
    assert sink.chats() == [f"ok{i}" for i in range(len(names))] + ["after"]
    assert server.connections == 1  # bad input never costs the connection
    assert source.status.errors == len(names) + 1
    assert source.status.last_error is not None and "brotli" in source.status.last_error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipped a bad packet" in w and "truncated header" in w for w in warnings)
    assert all(w.startswith("room=demo platform=bilibili ") for w in warnings)
    # Repeats of one kind of problem are logged once at WARNING, then at DEBUG.
    assert sum("bad brotli" in w for w in warnings) == 1


async def test_malformed_command_payload_is_skipped(server: fake.FakeBilibili) -> None:
    source, sink = make_source(server), Collector()
    async with running(source, sink):
        await server.wait_authed()
        await server.push(
            fake.plain_frame({"cmd": "GUARD_BUY", "data": {"uid": 1}}, fake.danmu("fine", id_str="f"))
        )
        await sink.wait_texts("fine")
    assert source.status.errors == 1
    assert "GUARD_BUY: missing data.price" in (source.status.last_error or "")


async def test_unknown_cmd_counted_and_logged_once(
    server: fake.FakeBilibili, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    source, sink = make_source(server), Collector()
    async with running(source, sink):
        await server.wait_authed()
        await server.push(fake.brotli_frame({"cmd": "NEW_THING", "data": {}}, {"cmd": "NEW_THING:1"}))
        await server.push(
            fake.plain_frame({"cmd": "NEW_THING"}, {"cmd": "OTHER_THING"}, fake.danmu("x", id_str="x"))
        )
        await sink.wait_texts("x")
    assert source.status.unknown_kinds == {"NEW_THING": 3, "OTHER_THING": 1}
    unknown_logs = [r for r in caplog.records if "unknown cmd" in r.getMessage()]
    assert [r.levelno for r in unknown_logs] == [logging.WARNING, logging.WARNING]
    assert source.status.as_dict(0)["unknown_kinds"] == {"NEW_THING": 3, "OTHER_THING": 1}


async def test_rejected_auth_forces_a_new_bootstrap() -> None:
    async with fake.FakeBilibili(reject_auths=1) as server:
        source, sink = make_source(server), Collector()
        async with running(source, sink):
            await sink.wait_up()
        assert server.violations == []
    assert [auth["key"] for auth in server.auths] == ["tk1", "tk2"]
    assert server.tokens == ["tk1", "tk2"]
    assert source.bootstraps == 2
    # The WBI key is cached (bilibili.md §6): the second bootstrap skips nav.
    assert [path for path, _, _ in server.requests].count("/x/web-interface/nav") == 1
    assert sink.system() == ["source_up"]  # never up before the rejection
    assert "auth rejected" in (source.status.last_error or "")


async def test_missing_auth_reply_times_out_and_bootstraps_again() -> None:
    async with fake.FakeBilibili(silent_auths=1) as server:
        source, sink = make_source(server, auth_timeout_s=0.2), Collector()
        async with running(source, sink):
            await server.wait_authed(1)
    assert server.connections == 2
    assert [auth["key"] for auth in server.auths] == ["tk1", "tk2"]
    assert source.status.errors == 1 and source.status.last_error == "no auth reply"


async def test_hosts_rotate_after_a_failed_connect(server: fake.FakeBilibili) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}/sub"
    source, sink = make_source(server, ws_url=[dead, server.ws_url]), Collector()
    async with running(source, sink):
        await sink.wait_up()
        assert source.current_url == server.ws_url
    assert source.status.reconnects == 1
    assert "connect to ws://127.0.0.1" in (source.status.last_error or "")


async def test_degraded_start_without_room_init_or_token() -> None:
    async with fake.FakeBilibili(fail_room_init=True, fail_danmu_info=True) as server:
        source = BilibiliSource(
            1017, hasher=HASHER, clock=SystemClock(), api_base=server.base_url, ws_url=server.ws_url
        )
        sink = Collector()
        async with running(source, sink):
            await server.wait_authed()
        assert server.violations == []
    assert server.auths[0]["roomid"] == 1017
    assert "key" not in server.auths[0]


async def test_stop_interrupts_the_backoff(server: fake.FakeBilibili) -> None:
    slow = ReconnectPolicy(base_s=60, max_s=60, rng=random.Random(1))
    source, sink = make_source(server, policy=slow), Collector()
    task = asyncio.create_task(source.run(sink))
    await sink.wait_up()
    await server.drop()
    await sink.wait_for(lambda events: "source_down" in [e.event for e in events])
    assert source.status.state is SourceState.RECONNECTING
    assert source.status.down_since_ms is not None
    source.stop()
    await asyncio.wait_for(task, 1)
    assert source.status.state is SourceState.STOPPED
    assert sink.system() == ["source_up", "source_down"]


async def test_stop_while_connected_emits_no_source_down(server: fake.FakeBilibili) -> None:
    source, sink = make_source(server), Collector()
    async with running(source, sink) as task:
        await sink.wait_up()
        with pytest.raises(RuntimeError, match="already running"):
            await source.run(sink)
    assert task.done() and task.exception() is None
    assert sink.system() == ["source_up"]
    await server.wait_for(lambda: not server._live)  # the socket was closed


async def test_stop_before_run_returns_at_once() -> None:
    source = BilibiliSource(1017, hasher=HASHER, clock=SystemClock(), api_base="http://127.0.0.1:9")
    source.stop()
    await asyncio.wait_for(source.run(Collector()), 1)
    assert source.status.state is SourceState.STOPPED


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="room_id"):
        BilibiliSource(0, hasher=HASHER, clock=SystemClock())
    with pytest.raises(ValueError, match="heartbeat_s"):
        BilibiliSource(1, hasher=HASHER, clock=SystemClock(), heartbeat_s=0)


def test_cookie_and_host_list_parsing() -> None:
    assert parse_cookie_header(" SESSDATA=a%2Cb*c ; buvid3=x-y;junk; =v") == {
        "SESSDATA": "a%2Cb*c",
        "buvid3": "x-y",
    }
    hosts = parse_host_list(
        [
            {"host": "zj-cn-live-comet.chat.bilibili.com", "port": 2243, "wss_port": 443, "ws_port": 2244},
            {"host": "", "wss_port": 443},
            {"host": "x", "wss_port": "443"},
            "junk",
        ]
    )
    assert hosts == (DanmuHost("zj-cn-live-comet.chat.bilibili.com", 443),)
    assert hosts[0].url == "wss://zj-cn-live-comet.chat.bilibili.com:443/sub"
    assert parse_host_list(None) == ()


async def test_large_frames_are_decoded_off_the_loop_in_order(
    server: fake.FakeBilibili, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.sources import bilibili

    monkeypatch.setattr(bilibili, "EXECUTOR_FRAME_BYTES", 64)
    source, sink = make_source(server), Collector()
    async with running(source, sink):
        await sink.wait_up()
        for i in range(5):
            await server.push(
                fake.brotli_frame(*(fake.danmu(f"{i}-{j}", id_str=f"{i}-{j}") for j in range(3)))
            )
        await sink.wait_texts("4-2")
    assert sink.chats() == [f"{i}-{j}" for i in range(5) for j in range(3)]


async def test_repeated_failures_bootstrap_again(server: fake.FakeBilibili) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}/sub"
    source, sink = make_source(server, ws_url=dead), Collector()
    async with running(source, sink):
        # The server's side of the second bootstrap: the source counts a bootstrap as it starts one.
        await until(lambda: len(server.tokens) >= 2)
    # Every max(3, len(host_list)) failed attempts in a row redo the bootstrap (bilibili.md §5).
    assert source.bootstraps >= 2
    assert source.status.reconnects >= 3
    assert server.tokens[:2] == ["tk1", "tk2"]
    assert source.status.state is SourceState.STOPPED


async def test_rejected_wbi_signature_degrades_to_no_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with fake.FakeBilibili(stale_wbi_key=True) as server:
        source, sink = make_source(server), Collector()
        async with running(source, sink):
            await sink.wait_up()
        assert server.violations == []
    assert server.tokens == []
    assert "key" not in server.auths[0]
    assert "getDanmuInfo returned code -352" in caplog.text
