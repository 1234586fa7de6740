"""App with live sources: several rooms and platforms in one process, a merged room, the ingest listener."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import App, build_source, read_cookie
from bot.config import BilibiliSourceConfig, Config, parse_config
from bot.errors import ConfigError, LivebotError
from bot.events import Event, EventKind
from bot.sources.base import SourceState
from bot.sources.bilibili import BilibiliSource
from tests.fakes import bilibili as fake
from tests.fakes.barragegrab import FakeBarrageGrab
from tests.fakes.generic_push import until


def live_config(tmp_path: Path, bili: fake.FakeBilibili, grab: FakeBarrageGrab, **extra: Any) -> Config:
    fast = {"reconnect_base_s": 0.01, "reconnect_max_s": 0.05}
    return parse_config({
        "data_dir": str(tmp_path),
        "screen": {"enabled": False},
        "status": {"terminal": False},
        "advisors": {"enabled": False},
        "ingest": {"enabled": True, "port": 0},
        "rooms": [
            {"name": "bili", "sources": [{
                "kind": "bilibili", "room_id": bili.short_id, "api_base": bili.base_url,
                "ws_url": bili.ws_url, **fast,
            }]},
            # A merged room: Douyin through BarrageGrab plus Kuaishou events pushed to the ingest listener.
            {"name": "dy", "sources": [
                {"kind": "douyin", "url": grab.url, **fast},
                {"kind": "generic", "match": ["kuaishou:3x9demo"]},
            ]},
        ],
        **extra,
    })


@asynccontextmanager
async def running_app(app: App) -> AsyncIterator[list[Event]]:
    applied: list[Event] = []
    app.pipeline.before_apply.append(applied.append)
    task = asyncio.create_task(app.run())
    try:
        yield applied
    finally:
        app.request_stop()
        await asyncio.wait_for(task, 20)


async def test_two_rooms_two_platforms_and_pushed_events(tmp_path: Path) -> None:
    async with fake.FakeBilibili() as bili, FakeBarrageGrab() as grab:
        app = App(live_config(tmp_path, bili, grab), out=io.StringIO())
        assert app.ingest is not None
        assert set(app.states["bili"].sources) == {"bilibili:1"}
        assert set(app.states["dy"].sources) == {"douyin", "generic-ingest"}
        async with running_app(app) as applied:
            await bili.wait_authed()
            await asyncio.wait_for(grab.wait_clients(1), 5)
            await asyncio.wait_for(app.ingest.server.wait_started(), 5)
            await bili.push(fake.zlib_frame(fake.danmu("主播好", id_str="b-1")))
            await grab.push_example(1)
            async with aiohttp.ClientSession() as http, http.ws_connect(app.ingest.server.url) as ws:
                await ws.send_json([
                    {"platform": "kuaishou", "room": "3x9demo", "kind": "chat", "ts": 1767225600123,
                     "id": "k-1", "user": {"id": "u1001"}, "text": "有XL码吗"},
                    {"platform": "kuaishou", "room": "elsewhere", "kind": "chat", "ts": 1767225600124,
                     "user": {"id": "u1002"}, "text": "没人认领"},
                    {"platform": "kuaishou", "room": "elsewhere", "kind": "chat", "ts": 1767225600125,
                     "user": {"id": "u1003"}, "text": "还是没人"},
                ])
                await until(lambda: sum(ev.kind is EventKind.CHAT for ev in applied) >= 3)
                await until(lambda: sum(app.ingest.unmatched.values()) == 2)  # type: ignore[union-attr]
            statuses = [s.status for s in app.sources]
            assert all(s.state is SourceState.CONNECTED for s in statuses)
        chats = [ev for ev in applied if ev.kind is EventKind.CHAT]
        by_room = {r: sorted((ev.platform, ev.text) for ev in chats if ev.room == r) for r in ("bili", "dy")}
        assert by_room == {
            "bili": [("bilibili", "主播好")],
            "dy": [("douyin", "这个有大码吗"), ("kuaishou", "有XL码吗")],
        }
        assert {ev.room for ev in applied} == {"bili", "dy"}
        assert app.ingest.unmatched == {"kuaishou:elsewhere": 2}
        assert app.ingest.routed == {"dy": 1}
        # Every Event keeps its own platform; source_up/down system events were emitted by the sources.
        assert {(ev.room, ev.event) for ev in applied if ev.kind is EventKind.SYSTEM} >= {
            ("bili", "source_up"), ("dy", "source_up")
        }
        # Clean shutdown: every source stopped, every socket closed.
        assert all(s.status.state is SourceState.STOPPED for s in app.sources)
        await until(lambda: grab.clients == 0)
        await bili.wait_for(lambda: not bili._live)
        assert bili.violations == []
        assert app.pipeline.stats.stored == len(applied)


async def test_unmatched_keys_are_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bot.sources.generic_ws import GenericIngestServer
    from bot.sources.ingest import MAX_TRACKED_KEYS, OTHER_KEY, IngestRouter
    from tests.fakes.generic_push import EventCollector

    server = GenericIngestServer(port=0, hasher=lambda p, u: u)  # type: ignore[arg-type]
    router = IngestRouter(server, {"taobao:shop42": "tb", "kuaishou:*": "ks", "kuaishou:vip": "vip"})
    assert router.rooms == {"tb", "ks", "vip"}

    def ev(platform: str, room: str, msg_id: str | None = None) -> Event:
        return Event(platform, room, EventKind.CHAT, 1, 1, msg_id=msg_id, text="x")

    assert router.route(ev("taobao", "shop42")) == ev("taobao", "tb")
    assert router.route(ev("kuaishou", "vip", "m")) == ev("kuaishou", "vip", "m")  # exact beats wildcard
    assert router.route(ev("kuaishou", "any", "m")) == ev("kuaishou", "ks", "any/m")  # ids kept apart
    with caplog.at_level("WARNING", logger="bot.sources.ingest"):
        for _ in range(3):
            assert router.route(ev("taobao", "shop43")) is None
    assert router.unmatched == {"taobao:shop43": 3}
    assert [r.getMessage() for r in caplog.records].count(
        "room=* platform=generic no room takes pushed events of 'taobao:shop43' (add it to a room's generic "
        "source `match`); they are counted and dropped"
    ) == 1
    for i in range(MAX_TRACKED_KEYS + 5):
        router.route(ev("custom", f"r{i}"))
    assert len(router.unmatched) == MAX_TRACKED_KEYS + 1 and router.unmatched[OTHER_KEY] == 6

    collector = EventCollector()
    task = asyncio.create_task(router.run(collector))
    await asyncio.wait_for(server.wait_started(), 5)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as ws:
        await ws.send_json({"platform": "taobao", "room": "shop42", "kind": "chat", "ts": 5,
                            "user": {"id": "u"}, "text": "在吗"})
        got = await collector.next()
    assert (got.room, got.platform, got.text) == ("tb", "taobao", "在吗")
    router.stop()
    await asyncio.wait_for(task, 5)
    assert router.status.state is SourceState.STOPPED


def test_build_source_reads_the_cookie_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cookie = tmp_path / "bili.cookie"
    cookie.write_text("# copied 2026-01-01\nCookie: SESSDATA=abc%2C1; bili_jct=x;\n buvid3=y\n", "utf-8")
    cookie.chmod(0o600)
    cfg = parse_config({"data_dir": str(tmp_path), "rooms": [
        {"name": "b", "sources": [{"kind": "bilibili", "room_id": 7, "cookie_file": str(cookie)}]}
    ]})
    src_cfg = cfg.rooms[0].sources[0]
    assert isinstance(src_cfg, BilibiliSourceConfig)
    assert read_cookie(src_cfg, "k") == "SESSDATA=abc%2C1; bili_jct=x; buvid3=y"
    from bot.clock import SystemClock
    from bot.privacy import ViewerHasher

    hasher = ViewerHasher.for_tests()
    src = build_source(cfg.rooms[0], 0, src_cfg, clock=SystemClock(), hasher=hasher, cfg=cfg)
    assert isinstance(src, BilibiliSource) and src.room == "b" and src.room_id == 7
    assert not caplog.records
    if os.name == "posix":
        cookie.chmod(0o644)
        with caplog.at_level("WARNING"):
            read_cookie(src_cfg, "k")
        assert "readable by other users" in caplog.text and "SESSDATA" not in caplog.text


@pytest.mark.parametrize(
    ("source", "env", "key", "message"),
    [
        ({"cookie_file": "missing.cookie"}, {}, "rooms[0].sources[1].cookie_file", "cookie file not found"),
        ({"cookie_file": "empty.cookie"}, {}, "rooms[0].sources[1].cookie_file", "holds no cookie"),
        ({"cookie_env": "LIVEBOT_TEST_COOKIE"}, {}, "rooms[0].sources[1].cookie_env", "is not set"),
    ],
)
def test_app_reports_cookie_problems_before_opening_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: dict[str, str], env: dict[str, str], key: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIVEBOT_TEST_COOKIE", raising=False)
    (tmp_path / "empty.cookie").write_text("\n# nothing\n", encoding="utf-8")
    cfg = parse_config({"data_dir": str(tmp_path / "data"), "screen": {"enabled": False}, "rooms": [
        {"name": "b", "sources": [{"kind": "simulator"}, {"kind": "bilibili", "room_id": 7, **source}]}
    ]})
    with pytest.raises(ConfigError, match=message) as info:
        App(cfg, out=io.StringIO())
    assert info.value.key == key
    assert not (tmp_path / "data" / "livebot.db").exists()


def test_cookie_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEBOT_TEST_COOKIE", " SESSDATA=s; buvid3=b ")
    src_cfg = BilibiliSourceConfig(room_id=1, cookie_env="LIVEBOT_TEST_COOKIE")
    assert read_cookie(src_cfg, "k") == "SESSDATA=s; buvid3=b"


def test_run_shortcuts_build_one_live_room(tmp_path: Path) -> None:
    from bot.cli import build_parser, live_room_config

    base = parse_config({"data_dir": str(tmp_path), "classifier": {"name": "snownlp"},
                         "rooms": [{"name": "demo", "script": "food"}]})

    def shortcut(*argv: str) -> Config:
        args = build_parser().parse_args(["run", *argv])
        return live_room_config(base, bilibili=args.bilibili, cookie_file=args.bilibili_cookie_file,
                                douyin=args.douyin, douyin_room=args.douyin_room)

    assert shortcut() is base
    bili = shortcut("--bilibili", "21452505", "--bilibili-cookie-file", "c.cookie")
    assert [r.name for r in bili.rooms] == ["bilibili-21452505"] and bili.rooms[0].script == "food"
    assert bili.rooms[0].sources == (BilibiliSourceConfig(room_id=21452505, cookie_file="c.cookie"),)
    assert bili.classifier.name == "snownlp" and bili.data_dir == str(tmp_path)  # the rest stays as loaded
    douyin = shortcut("--douyin")
    assert douyin.rooms[0].name == "douyin"
    assert douyin.rooms[0].sources[0].url == "ws://127.0.0.1:8888/"  # type: ignore[union-attr]
    other_pc = shortcut("--douyin", "ws://192.168.1.20:8888/", "--douyin-room", "123456789012")
    assert other_pc.rooms[0].name == "douyin-123456789012"
    merged = shortcut("--bilibili", "7", "--douyin")
    assert [r.name for r in merged.rooms] == ["live"]
    assert [s.kind for s in merged.rooms[0].sources] == ["bilibili", "douyin"]
    with pytest.raises(LivebotError, match="needs --bilibili"):
        shortcut("--bilibili-cookie-file", "c.cookie")
    with pytest.raises(ConfigError, match=r"rooms\[0\]\.sources\[0\]\.url"):
        shortcut("--douyin", "http://nope")
    with pytest.raises(SystemExit):
        shortcut("--bilibili", "0")
