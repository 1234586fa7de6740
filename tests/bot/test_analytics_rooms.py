"""watch_only benchmark rooms and the analytics wiring: App snapshots, replay session meta, the report."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from bot.analytics_trend import AnalyticsSettings
from bot.app import App, build_engines, replay_file
from bot.clock import ManualClock
from bot.config import parse_config
from bot.events import Event, EventKind
from bot.outputs.report import write_reports
from bot.outputs.store import Store
from tests.bot.test_analytics import T0, A

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "apparel_show.jsonl"


def _config(tmp_path: Path) -> dict[str, object]:
    return {
        "data_dir": str(tmp_path / "data"), "screen": {"enabled": False}, "status": {"terminal": False},
        "rooms": [{"name": "demo"}, {"name": "rival", "watch_only": True}],
    }


def test_watch_only_rooms_get_no_advisors() -> None:
    cfg = parse_config({"rooms": [{"name": "demo"}, {"name": "rival", "watch_only": True}]})
    assert set(build_engines(cfg)) == {"demo"}
    assert AnalyticsSettings.from_config(cfg).watch_only == {"rival"}


def test_live_snapshots_carry_analytics_and_the_benchmark(tmp_path: Path) -> None:
    clock = ManualClock(T0 + 61_000)
    app = App(parse_config(_config(tmp_path)), clock=clock, out=io.StringIO())
    try:
        assert set(app.engines) == {"demo"}
        demo, rival = app.states["demo"], app.states["rival"]
        feed = [
            (demo, Event(platform="douyin", room="demo", kind=EventKind.ENTER, ts=T0, received_ts=T0,
                         user_id="a")),
            (demo, Event(platform="douyin", room="demo", kind=EventKind.CHAT, ts=T0 + 50_000,
                         received_ts=T0 + 50_000, user_id="a", text="160斤穿什么码")),
            (demo, Event(platform="douyin", room="demo", kind=EventKind.ENTER, ts=T0 + 55_000,
                         received_ts=T0 + 55_000, user_id="b")),
            (rival, Event(platform="douyin", room="rival", kind=EventKind.CHAT, ts=T0 + 58_000,
                          received_ts=T0 + 58_000, user_id="r", text="有券吗")),
        ]
        for st, ev in feed:
            topics = ("size_fit",) if st is demo else ("coupon",)
            an = A(ev.text, confusion=True, topics=topics) if ev.text else None
            app.analytics.observe(ev)
            st.apply(ev, an)
        app.engines["demo"].tick(demo, T0 + 60_000)  # the show starts in 开场, which answers no topic
        snaps = app.screen_snapshots()
        a = snaps["demo"]["analytics"]
        assert "advisor" in snaps["demo"] and "advisor" not in snaps["rival"]
        # a: entered, stayed 50 s and asked; b: just entered → 2 viewers, 1 stayed, 1 interacted
        f = a["funnel"]
        assert (f["viewers"], f["active"], f["interacted"], f["followed"]) == (2, 1, 1, 0)
        assert f["interaction_rate"] == 0.5 and f["avg_watch_s"] == 25.0
        assert a["need_match"] == {"segment": "开场", "questions": 1, "answered": 0, "share": 0.0,
                                   "unclassified": 0, "missing": [["size_fit", 1]]}
        assert [b["room"] for b in a["benchmarks"]] == ["demo", "rival"]
        assert a["benchmarks"][1]["watch_only"] is True
        assert a["benchmarks"][1]["questions"][0]["example"] == "有券吗"
        r = snaps["rival"]["analytics"]
        assert r["watch_only"] is True and r["benchmarks"] == [] and r["outcomes"] == []
        assert r["need_match"] is None
    finally:
        app.pipeline.close()
        if app.store is not None:
            app.store.close()


def test_replay_of_a_watch_only_room_and_the_benchmark_in_our_report(tmp_path: Path) -> None:
    lines = SCENARIO.read_text(encoding="utf-8").splitlines()[:400]
    log = tmp_path / "show.jsonl"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = parse_config(_config(tmp_path))
    with Store.open(tmp_path / "r.db") as store:
        ours = asyncio.run(replay_file(log, cfg, room="demo", store=store))
        theirs = asyncio.run(replay_file(log, cfg, room="rival", store=store))
        assert ours.suggestions and theirs.suggestions == []
        assert ours.session_id is not None and theirs.session_id is not None
        assert store.suggestions(theirs.session_id) == []
        meta = store.session(ours.session_id).meta  # type: ignore[union-attr]
        assert meta["script"] == "apparel" and meta["segments"][0]["name"] == "开场"
        assert store.session(theirs.session_id).meta["watch_only"] is True  # type: ignore[union-attr]
        settings = AnalyticsSettings.from_config(cfg)
        (report,) = write_reports([(store, ours.session_id)], None, analytics=settings)
        keys = [s.key for s in report.extra_sections]
        assert keys == ["score", "funnel", "returning", "need", "outcomes", "benchmark", "coverage"]
        bench = next(s.html for s in report.extra_sections if s.key == "benchmark")
        assert "rival" in bench and "demo (我们)" in bench
        need = next(s.html for s in report.extra_sections if s.key == "need")
        assert "整场需求匹配" in need


def test_delay_chips_and_status_follow_the_configured_lag_threshold(tmp_path: Path) -> None:
    """`platform_lag_s = 3`: the alert fires at 3 s, so the screens' chip and the status line say late at
    3 s too (not at a fixed 5 s), and from 60 % of it (1.8 s) the host sees the chip."""
    from bot.app import format_status

    cfg = _config(tmp_path) | {"advisors": {"alerts": {"platform_lag_s": 3.0, "platform_lag_min_comments": 2}}}
    clock = ManualClock(T0 + 61_000)
    app = App(parse_config(cfg), clock=clock, out=io.StringIO())
    try:
        demo = app.states["demo"]
        for i, (platform, delay) in enumerate([("taobao", 3500), ("taobao", 3500), ("douyin", 2000),
                                               ("douyin", 2000), ("kuaishou", 500)]):
            t = T0 + 60_000 + i
            demo.apply(Event(platform=platform, room="demo", kind=EventKind.CHAT, ts=t - delay, received_ts=t,
                             text="来了"), A("来了"))
        delays = app.screen_snapshots()["demo"]["platform_delay"]
        assert {p: d["level"] for p, d in delays.items()} == {"taobao": "late", "douyin": "slow", "kuaishou": None}
        line = format_status(demo)
        assert "⚠淘宝延迟 3.5 秒" in line and "抖音" not in line
    finally:
        app.pipeline.close()
        if app.store is not None:
            app.store.close()
