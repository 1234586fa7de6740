"""Outcome analytics in a real browser (Debian's chromium through Python playwright): the trend page renders
its charts offline, the host view shows need match and the funnel, the control view shows the before/after
of an accepted suggestion and the benchmark room."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.advisors.base import Suggestion, SuggestionKind, SuggestionState
from bot.analytics import LiveAnalytics
from bot.analytics_trend import build_trend, render_trend
from bot.app import replay_file
from bot.config import parse_config
from bot.events import Event, EventKind
from bot.outputs.screen import ScreenServer
from bot.outputs.store import Store
from bot.sources.simulator import DEFAULT_START_TS, Simulator
from bot.state import RoomState
from tests.bot.test_analytics import COUPON, A, T, outcome_stream
from tests.browser import needs_chromium

DOCS = Path(__file__).resolve().parents[2] / "docs"

BROWSER_VIEWPORT = {"width": 1600, "height": 1000}

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
]




def _errors(page: Any) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    return errors


async def _simulated_shows(tmp_path: Path, store: Store) -> list[str]:
    """Five evening shows of the simulated room on consecutive days, replayed with the advisors on: the
    simulator's fan pool comes back every show, so the page has returning viewers and streaks to draw."""
    cfg = parse_config({"data_dir": str(tmp_path / "data"), "status": {"terminal": False},
                        "advisors": {"enabled": True}})
    ids = []
    for day, (rate, minutes) in enumerate(((1.0, 20), (1.2, 20), (1.5, 25), (1.2, 20), (1.8, 25))):
        sim = Simulator(seed=20 + day, rate=rate, room="旗舰店", start_ts=DEFAULT_START_TS + day * 86_400_000)
        log = tmp_path / f"show{day}.jsonl"
        log.write_text("\n".join(e.to_line() for e in sim.events(minutes * 60)) + "\n", encoding="utf-8")
        result = await replay_file(log, cfg, store=store)
        assert result.session_id is not None
        ids.append(result.session_id)
    return ids


async def test_trend_page_renders_offline(tmp_path: Path, browser: Any) -> None:
    store = Store.open(tmp_path / "livebot.db")
    try:
        ids = await _simulated_shows(tmp_path, store)
        rows = build_trend(store, ids)
    finally:
        store.close()
    assert [r.session_id for r in rows] == ids
    assert rows[0].returning is not None and rows[0].returning.returning == 0
    assert all(r.returning is not None and r.returning.returning > 0 for r in rows[1:])
    path = tmp_path / "trend.html"
    path.write_text(render_trend(rows), encoding="utf-8")
    page = await browser.new_page()
    errors = _errors(page)
    await page.goto(path.as_uri())
    # plotly draws all three charts from the inlined bundle (no network).
    await page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3",
                                 timeout=15_000)
    assert await page.locator("#trend-rows tbody tr").count() == 5
    bars = await page.locator("#fig-score .bars .point").count()
    assert bars == 5
    formula = await page.text_content("#trend-formula") or ""
    assert "10 × Σ(权重 × 得分)" in formula and "互动率" in formula
    # All 18 columns fit the page: nothing hides behind a horizontal scroll.
    widths = await page.eval_on_selector("#trend-rows", "t => [t.scrollWidth, t.parentElement.clientWidth]")
    assert widths[0] <= widths[1], widths
    DOCS.mkdir(exist_ok=True)
    await page.screenshot(path=str(DOCS / "screenshot-trend.png"), full_page=True)
    assert not errors, errors


def _rooms() -> dict[str, Any]:
    """Our room (an accepted coupon 2 minutes old, questions now) and a watch_only rival room."""
    live = LiveAnalytics(watch_only=["rival"])
    ours, rival = RoomState("demo"), RoomState("rival")
    for e, an in outcome_stream():
        live.observe(e)
        ours.apply(e, an)
        if e.kind is EventKind.CHAT:
            live.observe_analyzed([e], [an])
    now = T + 126_000
    asked = (("160斤穿什么码", "size_fit"), ("多少钱", "price"), ("XL有吗", "size_fit"))
    for i, (text, topic) in enumerate(asked):
        t = now - 5000 + i
        ev = Event(platform="douyin", room="demo", kind=EventKind.CHAT, ts=t, received_ts=t, user_id=f"q{i}",
                   text=text)
        live.observe(ev)
        ours.apply(ev, A(text, confusion=True, topics=(topic,)))
    ours.record_suggestion(Suggestion(
        id="c1", room="demo", kind=SuggestionKind.COUPON, created_ts=COUPON["created_ts"],
        expires_ts=T + 60_000, text="发券", reason="", topic="price", state=SuggestionState.ACCEPTED,
        data=dict(COUPON["data"]),
    ))
    for i in range(8):
        t = now - 50_000 + i * 5000
        an = A("有券吗", confusion=True, topics=("coupon",)) if i < 5 else A("好看", "pos")
        text = an.text
        ev = Event(platform="douyin", room="rival", kind=EventKind.CHAT, ts=t, received_ts=t, user_id=f"r{i}",
                   text=text)
        live.observe(ev)
        rival.apply(ev, an)
    states = {"demo": ours, "rival": rival}

    def snapshots() -> dict[str, Any]:
        out = {name: st.snapshot(now) for name, st in states.items()}
        out["demo"]["analytics"] = live.view("demo", ours, now, segment="价格", answers=("price", "coupon"),
                                             states=states)
        out["rival"]["analytics"] = live.view("rival", rival, now, states=states)
        return out

    return snapshots()


async def test_host_and_control_views_show_the_analytics(browser: Any) -> None:
    snapshot = _rooms()

    async def handler(room: str, action: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "read_only"}

    srv = ScreenServer(host="127.0.0.1", port=0, snapshot_provider=lambda: snapshot, action_handler=handler)
    await srv.start()
    try:
        host = await browser.new_page()
        errors = _errors(host)
        await host.goto(srv.url + "?room=demo")
        await host.wait_for_selector("#need-match", timeout=10_000)
        # 3 questions in the last minute, 1 about price: 「价格」 answers 1 of 3.
        assert await host.text_content("#need-match") == "33%"
        assert "tone-bad" in (await host.get_attribute("#need-match", "class") or "")
        assert await host.text_content("#need-detail") == "1/3 个提问「价格」能回答 · 没答: 尺码 2"
        funnel = await host.text_content("#funnel") or ""
        assert funnel.startswith("35观众")  # 32 viewers of the before/after stream + 3 askers
        assert "意向 0/分" in (await host.text_content("#funnel-line") or "")

        control = await browser.new_page()
        errors += _errors(control)
        await control.goto(srv.control_url + "?room=demo")
        item = control.locator('#outcomes [data-id="c1"]')
        await item.wait_for(timeout=10_000)
        text = await item.text_content() or ""
        assert "弹幕/分5 → 10+5" in text and "价格疑问率30.0% → 5.0%−25.0 个百分点" in text
        assert "在线110 → 150+40" in text
        assert "不是对照实验" in (await control.text_content("#outcomes-card") or "")
        bench = await control.text_content("#benchmark-card") or ""
        assert "rival（对标）" in bench and "有券吗×5" in bench and "demo（我们）" in bench
        assert not errors, errors
    finally:
        await srv.stop()


async def test_screens_show_each_platforms_comment_delay(browser: Any) -> None:
    """A show streamed to Douyin and Taobao: Taobao's comments arrive 7 s after they were sent, Douyin's
    1.5 s. Both views show a late platform's delay beside the sources, over 5 s in red; only field control
    also sees the platforms that are fine."""
    room = RoomState("multi")
    for i in range(6):
        for platform, delay in (("douyin", 1500), ("taobao", 7000)):
            t = T + i * 1000
            room.apply(Event(platform=platform, room="multi", kind=EventKind.CHAT, ts=t - delay, received_ts=t,
                             text="来了"), A("来了"))

    async def handler(room: str, action: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": "read_only"}

    srv = ScreenServer(host="127.0.0.1", port=0, snapshot_provider=lambda: {"multi": room.snapshot()},
                       action_handler=handler)
    await srv.start()
    try:
        for url in (srv.url, srv.control_url):
            page = await browser.new_page()
            errors = _errors(page)
            await page.goto(url)
            taobao = page.locator('#sources .delay[data-platform="taobao"]')
            await taobao.wait_for(timeout=10_000)
            assert await taobao.text_content() == "淘宝 延迟 7.0 秒"
            assert "bad" in (await taobao.get_attribute("class") or "")
            douyin = page.locator('#sources .delay[data-platform="douyin"]')
            if url == srv.url:  # the host sees a platform's delay only when it is a problem (3 s and over)
                assert await douyin.count() == 0
                assert not errors, errors
                continue
            assert await douyin.text_content() == "抖音 延迟 1.5 秒"
            assert "ok" in (await douyin.get_attribute("class") or "").split()
            assert not errors, errors
    finally:
        await srv.stop()
