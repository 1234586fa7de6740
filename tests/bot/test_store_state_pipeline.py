"""Store, RoomState and pipeline together, with the real rules analyzer and a real SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bot.clock import ManualClock
from bot.events import Event, EventKind
from bot.outputs.store import SCHEMA_VERSION, Store, make_session_id
from bot.pipeline import Pipeline
from bot.state import RoomState
from nlp.analyzer import Analyzer

T0 = 1_767_268_800_000  # 2026-01-01 20:00 CST


def chat(i: int, text: str, *, t: int | None = None, user: str | None = None, msg_id: str | None = None) -> Event:
    ts = T0 + i * 1000 if t is None else t
    return Event("test", "r1", EventKind.CHAT, ts, ts, msg_id=msg_id, user_id=user or f"{i:016x}", text=text)


def test_session_id_format() -> None:
    assert make_session_id("demo", T0) == "20260101-200000-demo"


def test_store_roundtrip_and_schema_version(tmp_path: Path) -> None:
    analyzer = Analyzer("rules")
    events = [chat(0, "这个多少钱"), chat(1, "好看爱了"), Event("test", "r1", EventKind.LIKE, T0, T0, count=30)]
    analyses = [*analyzer.analyze([events[0].text, events[1].text]), None]
    with Store.open(tmp_path / "db" / "x.db") as store:
        sid = store.start_session("r1", T0, source="test")
        store.write_batch(sid, events, analyses)
        back = list(store.iter_events(sid))
        assert [e for e, _ in back] == events
        assert back[0][1] is not None and back[0][1].confusion and "price" in back[0][1].topics
        assert back[2][1] is None
        assert store.count_events(sid) == 3 and store.count_events(sid, "like") == 1
    conn = sqlite3.connect(tmp_path / "db" / "x.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Reopening continues ids and resumes the session id.
    with Store.open(tmp_path / "db" / "x.db") as store:
        assert store.start_session("r1", T0 + 5000, session_id=sid) == sid
        store.write_batch(sid, [chat(9, "来了")], [None])
        assert store.count_events(sid) == 4
        assert len(store.sessions()) == 1


def test_store_keeps_only_hashes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "x.db") as store:
        sid = store.start_session("r1", T0)
        store.write_batch(sid, [chat(0, "你好", user="abcdef0123456789")], [None])
        assert store.execute("SELECT user_id, user_name FROM events") == [("abcdef0123456789", None)]


def test_roomstate_windows_and_questions() -> None:
    analyzer = Analyzer("rules")
    st = RoomState("r1")
    texts = ["这个多少钱", "多少钱啊", "价格多少", "好看", "160斤穿什么码", "太贵了吧"]
    events = [chat(i, t) for i, t in enumerate(texts)]
    for ev, an in zip(events, analyzer.analyze(texts), strict=True):
        st.apply(ev, an)
    st.apply(Event("test", "r1", EventKind.STATS, T0 + 5000, T0 + 5000, stats={"online": 321}))
    st.apply(Event("test", "r1", EventKind.GIFT, T0 + 5000, T0 + 5000, count=2, value=1.5, gift_name="小心心"))
    w = st.window(60)
    assert w.comments == 6 and w.analyzed == 6
    assert w.gifts == 2 and w.gift_value == pytest.approx(1.5)
    assert st.online == 321 and st.totals.peak_online == 321
    assert w.topic_confused.get("price", 0) >= 3
    groups = st.questions(60)
    price = [g for g in groups if g.topic == "price"]
    assert price and price[0].count >= 3  # 多少钱 / 多少钱啊 / 价格多少 merged
    # 10 s window ending at t=5 s still holds everything; 4 minutes later nothing.
    assert st.window(10).comments == 6
    st.advance(T0 + 245_000)
    assert st.window(60).comments == 0
    assert st.window(300).comments == 6
    assert st.totals.comments == 6
    snap = st.snapshot()
    assert snap["totals"]["gifts"] == 2 and len(snap["timeline"]) == 30


async def test_pipeline_stores_everything_and_drops_duplicates(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Store.open(tmp_path / "p.db") as store:
        pipe = Pipeline(Analyzer("rules"), clock=clock, store=store, batch_size=8, max_wait_ms=1, overflow="block")
        task = asyncio.create_task(pipe.run())
        for i in range(50):
            await pipe.submit(chat(i, f"第{i}条 多少钱", msg_id=f"m{i}"))
        await pipe.submit(chat(3, "重复", msg_id="m3"))
        await pipe.stop()
        await task
        pipe.close()
        assert pipe.stats.duplicates == 1
        sid = pipe.sessions["r1"]
        assert store.count_events(sid) == 50
        assert pipe.states["r1"].totals.comments == 50
        assert store.execute("SELECT COUNT(*) FROM analyses")[0][0] == 50


async def test_pipeline_full_queue_sheds_analysis_but_keeps_events(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Store.open(tmp_path / "p.db") as store:
        pipe = Pipeline(Analyzer("rules"), clock=clock, store=store, queue_size=100, batch_size=10, max_wait_ms=1)
        # Fill before the consumer starts: the 150 events past the queue size are shed, not lost.
        for i in range(250):
            await pipe.submit(chat(i, "发货了吗"))
        assert pipe.stats.shed == 150
        assert pipe.states["r1"].degraded
        task = asyncio.create_task(pipe.run())
        await pipe.stop()
        await task
        pipe.close()
        sid = pipe.sessions["r1"]
        assert store.count_events(sid) == 250
        assert store.execute("SELECT COUNT(*) FROM analyses")[0][0] == 100
        st = pipe.states["r1"]
        assert st.totals.comments == 250 and st.totals.unanalyzed == 150
        assert not st.degraded


async def test_batch_fill_wait_counts_from_when_the_comment_was_received() -> None:
    # max_wait bounds how long a comment waits for its batch to fill. A comment that already waited that
    # long (it queued while the previous batch was being analysed) is analysed with what is queued, at
    # once; a fresh one still waits for company.
    clock = ManualClock(T0)
    pipe = Pipeline(Analyzer("rules"), clock=clock, store=None, batch_size=100, max_wait_ms=3000)
    task = asyncio.create_task(pipe.run())
    try:
        await pipe.submit(chat(0, "多少钱", t=T0 - 5000))
        async with asyncio.timeout(2):
            while pipe.stats.analyzed < 1:
                await asyncio.sleep(0.01)
        await pipe.submit(chat(1, "好看", t=T0))
        await asyncio.sleep(0.5)
        assert pipe.stats.analyzed == 1  # the fresh comment is still waiting for its batch to fill
    finally:
        await pipe.stop()
        await task
        pipe.close()
    assert pipe.stats.analyzed == 2


def test_status_line_names_the_top_question_in_chinese() -> None:
    from bot.app import format_status

    analyzer = Analyzer("rules")
    st = RoomState("r1")
    texts = ["这个多少钱", "多少钱啊", "价格多少"]
    for ev, an in zip([chat(i, t) for i, t in enumerate(texts)], analyzer.analyze(texts), strict=True):
        st.apply(ev, an)
    line = format_status(st)
    assert line.startswith("[r1] 弹幕 3/分")
    assert "热问[价格]" in line and "×3" in line and "延迟" not in line
    # A platform whose comments arrive 6 s late is called out (its viewers hear every answer late), once
    # five of its comments in the last minute say so (DelayThresholds' default, as the alert's).
    for i in range(4):
        t = T0 + 3000 + i
        st.apply(Event(platform="taobao", room="r1", kind=EventKind.CHAT, ts=t - 6000, received_ts=t, text="来了"))
    assert "延迟" not in format_status(st)
    for i in range(4, 5):
        t = T0 + 3000 + i
        st.apply(Event(platform="taobao", room="r1", kind=EventKind.CHAT, ts=t - 6000, received_ts=t, text="来了"))
    assert "| ⚠淘宝延迟 6.0 秒 |" in format_status(st)
