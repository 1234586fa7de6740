"""Replay report: the numbers equal what the authored log holds, comparison, CSV export, CLI, browser.

The authored log below is counted by hand (see `_authored_events`); the report is built the way
operations build it: the log is replayed through the real pipeline into a store, then read back.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bot.advisors.base import Suggestion, SuggestionKind, SuggestionState
from bot.app import replay_file
from bot.cli import main
from bot.config import Config, parse_config
from bot.events import Event, EventKind
from bot.outputs.report import render_comparison, render_report, write_csv, write_reports
from bot.outputs.report_data import (
    MINUTE_MS,
    MinuteRow,
    SessionReport,
    Targets,
    build_session_report,
    find_negative_moments,
    plan_segments,
)
from bot.outputs.store import Store
from tests.browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium

T0 = 1_767_268_800_000  # 2026-01-01 20:00:00 CST
WEEK_MS = 7 * 24 * 3600 * 1000
DOCS = Path(__file__).resolve().parents[3] / "docs"

# (second, viewer, text). Minute 0: 12 comments, 4 price questions (多少钱 / 多少米 / 价格多少 /
# 这个多少钱啊, one group). Minute 1: 10 comments, 3 size questions (160斤 ×2, 170斤 ×1, one group) and
# 1 shipping question. Minute 2: 8 comments, 7 of them negative, 1 price question. Minute 3: 10
# comments, 1 coupon question. Total 40 comments, 10 questions, 12 commenters (v01–v12).
CHATS: tuple[tuple[int, str, str], ...] = (
    (15, "v01", "多少钱"), (18, "v02", "多少米"), (21, "v03", "价格多少"), (24, "v04", "这个多少钱啊"),
    (30, "v05", "主播好漂亮"), (33, "v06", "好看"), (40, "v07", "晚上好"), (45, "v08", "来了"),
    (50, "v09", "来了"), (52, "v10", "晚上好"), (54, "v11", "哈哈哈"), (57, "v12", "主播好漂亮"),
    (62, "v01", "160斤穿什么码"), (66, "v02", "160斤什么码"), (70, "v07", "170斤穿什么码"),
    (75, "v08", "什么时候发货"), (80, "v09", "好看"), (85, "v10", "已拍"), (90, "v11", "冲冲冲"),
    (95, "v12", "晚上好"), (100, "v05", "哈哈哈"), (105, "v06", "来了"),
    (122, "v01", "质量太差了"), (126, "v02", "垃圾"), (130, "v03", "骗人的吧"), (134, "v04", "太贵了不值"),
    (138, "v07", "退款"), (142, "v08", "差评"), (146, "v09", "太失望了"), (150, "v10", "多少钱"),
    (182, "v11", "好看"), (185, "v12", "喜欢"), (188, "v05", "[赞][赞]"), (191, "v06", "已拍"),
    (194, "v03", "晚上好"), (197, "v04", "来了"), (200, "v09", "哈哈哈"), (203, "v10", "好用"),
    (206, "v01", "有券吗"), (210, "v02", "好看"),
)
NEGATIVE = ("质量太差了", "垃圾", "骗人的吧", "太贵了不值", "退款", "差评", "太失望了")
LAST_WEEK_MINUTE_2 = ("好看", "晚上好", "来了", "喜欢", "哈哈哈", "好用", "已拍", "多少钱")
VIEWERS = [f"v{i:02d}" for i in range(1, 13)]
# Hand counts of the authored log.
COMMENTS = 40
QUESTIONS = 10
LIKE_EVENTS = 241  # one tap of 2 every second (0–239 s) + one tap of 1 by v13, who does nothing else
LIKES = 240 * 2 + 1
GIFTS = 5 + 1 + 3
GIFT_VALUE = 0.5 + 10.0 + 0.3
ENTERS = 12
FOLLOWS = 2
SHARES = 1
PEAK_ONLINE = 240
UNIQUE_VIEWERS = 13  # v01–v12 and v13 (likes only)
EVENTS = 1 + 5 + ENTERS + COMMENTS + LIKE_EVENTS + 3 + FOLLOWS + SHARES  # system, stats, …
DURATION_S = 239


def _ev(
    t_s: int, kind: EventKind, user: str | None = None, *, t0: int = T0, room: str = "shop", **kw: Any
) -> Event:
    ts = t0 + t_s * 1000
    return Event(platform="douyin", room=room, kind=kind, ts=ts, received_ts=ts, user_id=user, **kw)


def _authored_events(t0: int = T0, *, negative: bool = True, room: str = "shop") -> list[Event]:
    def ev(t_s: int, kind: EventKind, user: str | None = None, **kw: Any) -> Event:
        return _ev(t_s, kind, user, t0=t0, room=room, **kw)

    events = [ev(0, EventKind.SYSTEM, event="live_start", text="直播开始")]
    events += [ev(t, EventKind.STATS, stats={"online": n}) for t, n in
               ((0, 100), (60, 150), (120, PEAK_ONLINE), (180, 180), (239, 120))]
    events += [ev(i + 1, EventKind.ENTER, v) for i, v in enumerate(VIEWERS)]
    calm = iter(LAST_WEEK_MINUTE_2)
    for t, v, text in CHATS:
        if not negative and 120 <= t < 180:
            text = next(calm)
        events.append(ev(t, EventKind.CHAT, v, text=text, msg_id=f"c{t}"))
    events += [ev(t, EventKind.LIKE, VIEWERS[t % 12], count=2) for t in range(240)]
    events.append(ev(100, EventKind.LIKE, "v13", count=1))
    events += [
        ev(50, EventKind.GIFT, "v05", gift_name="小心心", count=5, value=0.5),
        ev(110, EventKind.GIFT, "v06", gift_name="墨镜", count=1, value=10.0),
        ev(170, EventKind.GIFT, "v07", gift_name="小心心", count=3, value=0.3),
        ev(55, EventKind.FOLLOW, "v03"), ev(115, EventKind.FOLLOW, "v09"), ev(160, EventKind.SHARE, "v04"),
    ]
    events.sort(key=lambda e: e.ts)  # stable: same-second events keep the order above
    return events


def _write_log(path: Path, events: list[Event], *, broken_line: bool = True) -> Path:
    lines = [e.to_line() for e in events]
    if broken_line:
        lines.insert(40, '{"platform":"douyin","kind":"chat","ts":')  # cut off mid-line: bad_json
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(tmp_path: Path, *, advisors: bool = False) -> Config:
    return parse_config({
        "data_dir": str(tmp_path / "fixture-data"), "status": {"terminal": False},
        "advisors": {"enabled": advisors},
    })


def _replay(path: Path, cfg: Config, store: Store) -> str:
    result = asyncio.run(replay_file(path, cfg, store=store))
    assert result.session_id is not None
    return result.session_id


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return _write_log(tmp_path / "this_week.jsonl", _authored_events())


@pytest.fixture
def stored(tmp_path: Path, log: Path) -> tuple[Store, str]:
    store = Store.open(tmp_path / "report.db")
    sid = _replay(log, _config(tmp_path), store)
    yield store, sid
    store.close()


# -- the numbers ---------------------------------------------------------------------------------------


def test_headline_equals_hand_counts(stored: tuple[Store, str]) -> None:
    store, sid = stored
    r = build_session_report(store, sid)
    h = r.headline
    assert (h.comments, h.analyzed, h.events) == (COMMENTS, COMMENTS, EVENTS)
    assert (h.likes, h.gifts, h.enters, h.follows, h.shares) == (LIKES, GIFTS, ENTERS, FOLLOWS, SHARES)
    assert h.gift_value == pytest.approx(GIFT_VALUE)
    assert h.peak_online == PEAK_ONLINE
    assert (h.unique_viewers, h.commenters) == (UNIQUE_VIEWERS, 12)
    assert h.duration_s == DURATION_S
    assert h.comments_per_min == pytest.approx(COMMENTS / (DURATION_S / 60))
    assert h.confused == QUESTIONS
    assert h.confusion_rate == pytest.approx(QUESTIONS / COMMENTS)
    assert h.sentiment["neg"] == len(NEGATIVE)
    # Sentiment mix equals what the pipeline stored, counted independently of the report code.
    rows = store.execute(
        "SELECT a.sentiment, COUNT(*) FROM analyses a JOIN events e ON e.id = a.event_id"
        " WHERE e.session_id = ? GROUP BY a.sentiment", (sid,)
    )
    assert {k: v for k, v in h.sentiment.items() if v} == dict(rows)


def test_minute_series_equal_hand_counts(stored: tuple[Store, str]) -> None:
    r = build_session_report(*stored)
    assert [m.start_ts for m in r.minutes] == [T0 + i * MINUTE_MS for i in range(4)]
    assert [m.comments for m in r.minutes] == [12, 10, 8, 10]
    assert [m.confused for m in r.minutes] == [4, 4, 1, 1]
    assert [m.neg for m in r.minutes] == [0, 0, 7, 0]
    assert [m.likes for m in r.minutes] == [120, 121, 120, 120]
    assert [m.gifts for m in r.minutes] == [5, 1, 3, 0]
    assert [m.enters for m in r.minutes] == [12, 0, 0, 0]
    assert [m.online for m in r.minutes] == [100, 150, 240, 180]
    assert [m.confused_by_topic.get("size_fit", 0) for m in r.minutes] == [0, 3, 0, 0]
    assert sum(m.comments for m in r.minutes) == COMMENTS
    # Every viewer likes once a minute at least (the 12-viewer cycle); v13 too in minute 1.
    assert [m.active_viewers for m in r.minutes] == [12, 13, 12, 12]


def test_questions_grouped_by_topic_near_duplicates_merged(stored: tuple[Store, str]) -> None:
    r = build_session_report(*stored)
    assert dict(r.topics) == {"price": 5, "size_fit": 3, "shipping": 1, "coupon": 1}
    assert sum(n for _, n in r.topics) == QUESTIONS
    price = next(q for q in r.questions if q.topic == "price")
    assert price.count == 5  # 多少钱 ×2, 多少米, 价格多少, 这个多少钱啊: one question
    assert price.intent and price.label == "价格"
    assert price.examples[0] == "多少钱" and price.example_counts[0] == 2
    assert len(price.examples) == 3
    assert set(price.examples) <= {"多少钱", "多少米", "价格多少", "这个多少钱啊"}
    assert (price.peak_ts, price.peak_count) == (T0, 4)
    size = next(q for q in r.questions if q.topic == "size_fit")
    assert size.count == 3
    assert dict(size.quantities) == {"160斤": 2, "170斤": 1}
    assert (size.peak_ts, size.peak_count) == (T0 + MINUTE_MS, 3)
    assert r.questions_by_topic()[0][0] == "price"


def test_negative_moment_found_with_examples(stored: tuple[Store, str]) -> None:
    r = build_session_report(*stored)
    assert len(r.negative_moments) == 1
    mo = r.negative_moments[0]
    assert (mo.start_ts, mo.end_ts) == (T0 + 2 * MINUTE_MS, T0 + 3 * MINUTE_MS)
    assert (mo.negative, mo.analyzed) == (7, 8)
    assert mo.baseline == pytest.approx(7 / COMMENTS)
    assert set(mo.examples) <= set(NEGATIVE) and len(mo.examples) == 5
    assert mo.examples[0] == "太贵了不值"  # the most negative first


def test_segments_are_time_thirds_without_stopwords_or_emotes(stored: tuple[Store, str]) -> None:
    r = build_session_report(*stored)
    assert [s.source for s in r.segments] == ["time"] * 3
    assert [s.name.split()[0] for s in r.segments] == ["前段", "中段", "后段"]
    assert sum(s.comments for s in r.segments) == COMMENTS
    words = {w for s in r.segments for w, _ in s.keywords}
    assert "多少钱" in words or "钱" in words
    assert not words & {"[赞]", "赞]", "[", "的", "了", "吗", "啊"}
    assert not any(w.isdigit() for w in words)


def test_data_quality_counts_lines_and_skips(stored: tuple[Store, str], log: Path) -> None:
    r = build_session_report(*stored)
    q = r.data_quality
    assert q.path == str(log) and q.format == "jsonl" and q.encoding == "utf-8"
    assert q.lines_read == EVENTS + 1 and q.events_read == EVENTS
    assert dict(q.skipped) == {"bad_json": 1}
    assert (q.stored_events, q.comments, q.unanalyzed_comments) == (EVENTS, COMMENTS, 0)
    assert q.pipeline["received"] == EVENTS and q.pipeline["analyzed"] == COMMENTS
    assert q.classifiers == {Config().classifier.name: COMMENTS}  # the replay ran on the default classifier


def test_html_shows_the_numbers_and_is_self_contained(stored: tuple[Store, str]) -> None:
    r = build_session_report(*stored)
    page = render_report(r)

    def card(label: str, value: str) -> bool:
        return f'<div class="k">{label}</div><div class="v">{value}</div>' in page

    assert card("弹幕", str(COMMENTS))
    assert card("独立观众", str(UNIQUE_VIEWERS))
    assert card("点赞", f"{LIKES:,}")
    assert card("礼物", str(GIFTS)) and "¥10.80" in page
    assert card("进房", str(ENTERS)) and card("关注", str(FOLLOWS)) and card("分享", str(SHARES))
    assert card("峰值在线", str(PEAK_ONLINE))
    assert card("疑问率", "25.0%")
    assert card("弹幕 / 分钟", f"{COMMENTS / (DURATION_S / 60):,.1f}")
    assert card("时长", "3 分 59 秒")
    assert "×5</span>" in page and "多少钱" in page and "160斤 ×2" in page  # questions
    assert "太贵了不值" in page and "负面 87.5%" in page  # negative moment
    assert "JSON 无法解析 (bad_json) 1" in page  # data quality
    # Self-contained: plotly inlined once, no external script, stylesheet or font.
    assert page.count("Plotly.newPlot") == 1 and len(page) > 3_000_000
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    figure = json.loads(re.search(r'data-figure="fig-timeline">(.*?)</script>', page, re.S).group(1))
    titles = [a["text"] for a in figure["layout"]["annotations"]]
    assert titles[:5] == ["<b>弹幕 / 分钟</b>", "<b>情绪占比</b>", "<b>疑问率 · 按话题 (占已分析弹幕)</b>",
                          "<b>互动 / 分钟</b>", "<b>在线人数</b>"]
    comments = next(t for t in figure["data"] if t["name"] == "弹幕")
    assert comments["y"] == [12, 10, 8, 10]
    # One shared time axis: every x axis matches the first.
    xaxes = [k for k in figure["layout"] if k.startswith("xaxis")]
    assert len(xaxes) == 5 and all(figure["layout"][k].get("matches") == "x" for k in xaxes if k != "xaxis")
    # Without advisor suggestions the suggestion layer and the targets section are hidden.
    assert "节奏: 实际 vs 目标" not in page and "助手建议记录" not in page


def test_a_comment_cannot_break_out_of_the_page(tmp_path: Path) -> None:
    events = _authored_events()
    events.append(_ev(230, EventKind.CHAT, "v01", text="</script><script>alert(1)</script>多少钱?"))
    store = Store.open(tmp_path / "x.db")
    sid = _replay(_write_log(tmp_path / "x.jsonl", events), _config(tmp_path), store)
    page = render_report(build_session_report(store, sid))
    store.close()
    assert "<script>alert(1)" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page


# -- advisor layers ---------------------------------------------------------------------------------------


def _suggestion(kind: SuggestionKind, t_s: int, text: str, **kw: Any) -> Suggestion:
    ts = T0 + t_s * 1000
    return Suggestion(id=f"{kind}-{t_s}", room="shop", kind=kind, created_ts=ts, expires_ts=ts + 60_000,
                      text=text, reason="测试理由", **kw)


def test_suggestions_become_layers_segments_and_targets(stored: tuple[Store, str]) -> None:
    store, sid = stored
    store.save_suggestion(sid, _suggestion(SuggestionKind.SCRIPT_SWITCH, 118, "切到「尺码答疑」",
                                           segment="尺码答疑", data={"from_segment": "开场"}))
    store.set_suggestion_state(sid, "script_switch-118", "accepted", T0 + 120_000)
    for t in (30, 200):
        store.save_suggestion(sid, _suggestion(SuggestionKind.COUPON, t - 30, "30 秒后发券",
                                               data={"due_ts": T0 + t * 1000, "item": "限时优惠券"}))
    for t in (20, 60, 100, 140, 180, 220):
        store.save_suggestion(sid, _suggestion(SuggestionKind.PROMPT, t, "扣1", data={"prompt": "扣1"}))
    store.save_suggestion(sid, _suggestion(SuggestionKind.ALERT, 150, "负面激增", rule="negative_surge",
                                           state=SuggestionState.DISMISSED))
    r = build_session_report(store, sid, targets=Targets(prompts_per_min=4, prompts_min=3, prompts_max=5))
    assert [layer.key for layer in r.layers] == ["script_switch", "coupon", "prompt", "alert"]
    coupon = next(layer for layer in r.layers if layer.key == "coupon")
    assert [m.ts for m in coupon.markers] == [T0 + 30_000, T0 + 200_000] and coupon.vertical_lines
    assert [(s.name, s.start_ts, s.source) for s in r.segments] == [
        ("开场", T0, "runsheet"), ("尺码答疑", T0 + 120_000, "runsheet"),
    ]
    assert [b.label for b in r.bands] == ["开场", "尺码答疑"]
    targets = {t.label: t for t in r.targets}
    prompts = targets["互动口令 / 分钟"]
    assert prompts.achieved == f"{6 / (DURATION_S / 60):.1f}" and prompts.ok is False
    assert targets["优惠券间隔 (平均)"].achieved == "2 分 50 秒" and targets["优惠券间隔 (平均)"].ok
    assert targets["优惠券间隔 (最短)"].ok  # 170 s ≥ 90 s cooldown
    longest = targets["最长无券时段"]  # 0–30 s, 30–200 s, 200–239 s
    assert (longest.achieved, longest.note, longest.ok) == ("2 分 50 秒", "20:00–20:03", True)
    assert targets["促销推送 / 分钟 (峰值)"].achieved == "1"
    page = render_report(r)
    assert "节奏: 实际 vs 目标" in page and "助手建议记录" in page and "切到「尺码答疑」" in page
    figure = json.loads(re.search(r'data-figure="fig-timeline">(.*?)</script>', page, re.S).group(1))
    titles = [a["text"] for a in figure["layout"]["annotations"] if a["text"].startswith("<b>")]
    assert titles[0] == "<b>助手建议</b>"
    assert [a["text"] for a in figure["layout"]["annotations"] if not a["text"].startswith("<b>")] == [
        "开场", "尺码答疑",
    ]
    strip = [t for t in figure["data"] if t.get("mode") == "markers"]
    assert [t["name"] for t in strip] == ["切换话术", "优惠券", "互动口令", "提醒"]
    alert = strip[-1]
    assert alert["marker"]["symbol"] == ["triangle-up-open"]  # dismissed: open marker
    lines = [s for s in figure["layout"]["shapes"] if s["type"] == "line"]
    assert len(lines) == 2  # coupon drops across every panel


def test_plan_segments_sources_in_order() -> None:
    start, end = T0, T0 + 60 * MINUTE_MS
    sw = [
        {"kind": "script_switch", "segment": "产品讲解", "created_ts": T0 + 5 * MINUTE_MS, "state": "expired",
         "data": {"from_segment": "开场"}},
        {"kind": "script_switch", "segment": "尺码答疑", "created_ts": T0 + 20 * MINUTE_MS,
         "state": "expired"},
        # Lasted one minute: folded into the segment that replaced it.
        {"kind": "script_switch", "segment": "逼单", "created_ts": T0 + 40 * MINUTE_MS, "state": "expired"},
        {"kind": "script_switch", "segment": "福利互动", "created_ts": T0 + 41 * MINUTE_MS,
         "state": "expired"},
    ]
    plan = plan_segments(start, end, sw, {})
    assert [(p.name, (p.start_ts - T0) // MINUTE_MS) for p in plan] == [
        ("开场", 0), ("产品讲解", 5), ("尺码答疑", 20), ("福利互动", 40),
    ]
    recorded = {"segments": [{"ts": T0, "name": "开场"}, {"ts": T0 + 30 * MINUTE_MS, "name": "逼单"}]}
    assert [p.name for p in plan_segments(start, end, sw, recorded)] == ["开场", "逼单"]
    blocks = plan_segments(start, T0 + 180 * MINUTE_MS, [], {})
    assert len(blocks) == 6 and blocks[1].start_ts == T0 + 30 * MINUTE_MS and blocks[0].source == "time"
    assert len(plan_segments(start, T0 + 25 * MINUTE_MS, [], {})) == 3


def test_negative_moments_need_count_and_ratio() -> None:
    def minute(i: int, analyzed: int, neg: int) -> MinuteRow:
        return MinuteRow(index=i, start_ts=T0 + i * MINUTE_MS, analyzed=analyzed, neg=neg)

    rows = [minute(i, 100, 3) for i in range(10)]
    rows[4] = minute(4, 100, 30)  # a spike
    rows[8] = minute(8, 4, 4)  # 100 % negative but only 4: below the minimum count together with its window
    ex = [[f"例{i}"] for i in range(10)]
    moments = find_negative_moments(rows, ex, [{} for _ in rows])
    assert [(m.start_ts - T0) // MINUTE_MS for m in moments] == [4]
    assert moments[0].negative == 30 and moments[0].examples == ("例4",)
    assert find_negative_moments([minute(0, 0, 0)], [[]], [{}]) == ()


# -- comparison, CSV, CLI ----------------------------------------------------------------------------------


@pytest.fixture
def two_weeks(tmp_path: Path, log: Path) -> tuple[Path, Path]:
    last = _write_log(tmp_path / "last_week.jsonl", _authored_events(T0 - WEEK_MS, negative=False),
                      broken_line=False)
    return last, log


def test_comparison_puts_sessions_side_by_side(tmp_path: Path, two_weeks: tuple[Path, Path]) -> None:
    store = Store.open(tmp_path / "cmp.db")
    cfg = _config(tmp_path)
    ids = [_replay(p, cfg, store) for p in two_weeks]
    assert ids == ["20251225-200000-shop", "20260101-200000-shop"]
    reports = [build_session_report(store, sid) for sid in ids]
    store.close()
    assert [r.headline.sentiment["neg"] for r in reports] == [0, 7]
    page = render_comparison(reports)
    assert "shop 2025-12-25 20:00" in page and "shop 2026-01-01 20:00" in page
    assert "+17.5 个百分点" in page  # negative share 0 % → 17.5 %
    figure = json.loads(re.search(r'data-figure="fig-compare">(.*?)</script>', page, re.S).group(1))
    rate = [t for t in figure["data"] if t["yaxis"] == "y"]
    assert [t["y"] for t in rate] == [[12, 10, 8, 10], [12, 10, 8, 10]]
    neg = [t for t in figure["data"] if t["yaxis"] == "y2"]
    assert neg[1]["y"] == [0, 0, 87.5, 0]
    topics = json.loads(re.search(r'data-figure="fig-topics">(.*?)</script>', page, re.S).group(1))
    assert topics["data"][0]["x"][0] == "价格"
    with pytest.raises(ValueError, match="at least two"):
        render_comparison(reports[:1])


def test_csv_export_round_trips_with_bom(stored: tuple[Store, str], tmp_path: Path) -> None:
    r = build_session_report(*stored)
    paths = write_csv(r, tmp_path / "csv")
    assert [p.name for p in paths] == [f"{r.session_id}-minutes.csv", f"{r.session_id}-questions.csv"]
    assert paths[0].read_bytes().startswith(b"\xef\xbb\xbf")
    minutes = list(csv.DictReader(paths[0].open(encoding="utf-8-sig", newline="")))
    assert [int(m["弹幕"]) for m in minutes] == [12, 10, 8, 10]
    assert [m["开始时间"] for m in minutes] == ["2026-01-01 20:00", "2026-01-01 20:01", "2026-01-01 20:02",
                                                "2026-01-01 20:03"]
    assert sum(int(m["点赞"]) for m in minutes) == LIKES
    assert [m["负面占比"] for m in minutes] == ["0.0", "0.0", "0.875", "0.0"]
    assert [int(m["疑问_尺码"]) for m in minutes] == [0, 3, 0, 0]
    questions = list(csv.DictReader(paths[1].open(encoding="utf-8-sig", newline="")))
    assert sum(int(q["次数"]) for q in questions) == QUESTIONS
    first = questions[0]
    assert (first["话题"], first["代表问题"], first["次数"]) == ("价格", "价格", "5")
    assert first["高峰时间"] == "2026-01-01 20:00"
    assert first["原话1"] == "多少钱"
    size = next(q for q in questions if q["话题"] == "尺码")
    assert size["常见数值"] == "160斤×2、170斤×1"


def test_cli_report_from_store_and_from_logs(
    tmp_path: Path, stored: tuple[Store, str], two_weeks: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, sid = stored
    monkeypatch.chdir(tmp_path)  # the default config's data dir is ./data
    out = tmp_path / "out" / "report.html"
    csv_dir = tmp_path / "csv"
    assert main(["report", sid, "--db", str(store.path), "--out", str(out), "--csv", str(csv_dir)]) == 0
    assert f'<div class="k">弹幕</div><div class="v">{COMMENTS}</div>' in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in csv_dir.iterdir()) == [f"{sid}-minutes.csv", f"{sid}-questions.csv"]
    assert "报告已写入" in capsys.readouterr().out

    cmp = tmp_path / "cmp.html"
    assert main(["report", *map(str, two_weeks), "--out", str(cmp), "-q"]) == 0
    page = cmp.read_text(encoding="utf-8")
    assert "直播对比报告" in page and "20251225-200000-shop" in page and "20260101-200000-shop" in page
    assert not (tmp_path / "data" / "livebot.db").exists()  # logs went to temporary stores

    assert main(["report", "20990101-000000-nope", "--db", str(store.path), "--out", str(cmp)]) == 2
    err = capsys.readouterr().err
    assert "neither a log file nor a session" in err and sid in err
    assert main(["report", sid, "--db", str(store.path)]) == 2
    assert "--out FILE.html and/or --csv DIR" in capsys.readouterr().err


def test_cli_replay_writes_report_and_csv(tmp_path: Path, log: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    html_path = tmp_path / "r.html"
    rc = main(["replay", str(log), "--out", str(tmp_path / "store"), "--report", str(html_path),
               "--csv", str(tmp_path / "csv"), "-q"])
    assert rc == 0
    # The summary names the skipped line and the topics in Chinese, as the screen and the report do.
    summary = capsys.readouterr().out
    assert "跳过 1 (JSON 无法解析 1)" in summary and "第 41 行 JSON 无法解析: " in summary
    topics = next(line for line in summary.splitlines() if "疑问按话题" in line)
    assert "价格" in topics and "price" not in topics
    page = html_path.read_text(encoding="utf-8")
    assert f'<div class="k">独立观众</div><div class="v">{UNIQUE_VIEWERS}</div>' in page
    assert len(list((tmp_path / "csv").glob("*-minutes.csv"))) == 1


def test_write_reports_streams_a_generated_session(tmp_path: Path) -> None:
    """A 30-minute simulated room: every comment lands in one minute row and one segment."""
    from bot.sources.simulator import Simulator

    events = list(Simulator(seed=3, rate=2.0, room="sim").events(30 * 60))
    path = tmp_path / "sim.jsonl"
    path.write_text("\n".join(e.to_line() for e in events) + "\n", encoding="utf-8")
    store = Store.open(tmp_path / "sim.db")
    sid = _replay(path, _config(tmp_path), store)
    (r,) = write_reports([(store, sid)], tmp_path / "sim.html", csv_dir=tmp_path / "csv")
    store.close()
    comments = sum(1 for e in events if e.kind is EventKind.CHAT)
    assert r.headline.comments == comments == sum(m.comments for m in r.minutes)
    assert sum(s.comments for s in r.segments) == comments
    assert r.headline.unique_viewers == len({e.user_id for e in events if e.user_id})
    assert r.headline.likes == sum(e.count for e in events if e.kind is EventKind.LIKE)
    assert len(r.minutes) == 30 and len(r.segments) == 3
    assert r.questions[0].count >= r.questions[-1].count
    kinds = Counter(e.kind for e in events)
    assert r.headline.enters == kinds[EventKind.ENTER]


# -- browser --------------------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_report_renders_in_chromium_and_saves_screenshot(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    from bot.sources.simulator import Simulator

    # A 40-minute simulated show with the advisors on: the screenshot shows every layer.
    events = Simulator(seed=7, rate=3.0, room="旗舰店").events(40 * 60)
    path = tmp_path / "show.jsonl"
    path.write_text("\n".join(e.to_line() for e in events) + "\n", encoding="utf-8")
    store = Store.open(tmp_path / "show.db")
    sid = _replay(path, _config(tmp_path, advisors=True), store)
    (report,) = write_reports([(store, sid)], tmp_path / "report.html")
    store.close()
    _check_in_browser(
        sync_api, tmp_path, tmp_path / "report.html", report, screenshot=DOCS / "screenshot-report.png"
    )


def _check_in_browser(sync_api: Any, tmp_path: Path, page_path: Path, report: SessionReport, *,
                      screenshot: Path) -> None:
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, locale="zh-CN", device_scale_factor=1,
        )
        try:
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console: {m.text}")
                    if m.type in ("error", "warning") else None)
            # Opens offline: any request leaving the file fails (and shows up as a console error).
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else route.abort())
            page.goto(page_path.as_uri())
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=30_000
            )
            charts = page.evaluate(
                "() => Array.from(document.querySelectorAll('.chart')).map(d => ["
                " d.id, d.querySelectorAll('svg').length, d.querySelectorAll('.trace').length])"
            )
            assert charts and all(svgs > 0 and traces > 0 for _, svgs, traces in charts), charts
            # Chinese renders with a real CJK font: the headline is wider than a row of fallback boxes.
            h1 = page.evaluate("() => document.querySelector('h1').getBoundingClientRect().width")
            assert h1 > 100
            text = page.inner_text("main")
            assert "观众在问什么" in text and f"{report.headline.comments:,}" in text
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            height = page.evaluate("() => document.getElementById('questions').getBoundingClientRect().top")
            clip = {"x": 0, "y": 0, "width": 1280, "height": min(2400, height + 700)}
            page.screenshot(path=str(screenshot), clip=clip, full_page=True)
        finally:
            ctx.close()
    assert errors == []


def test_live_session_without_replay_stats_or_analyses(tmp_path: Path) -> None:
    """A session stored by `livebot run` whose comments were shed (not analysed) still reports."""
    store = Store.open(tmp_path / "live.db")
    sid = store.start_session("shop", T0, source="douyin")
    events = [_ev(t, EventKind.CHAT, f"v{t % 3}", text=text) for t, text in
              ((5, "这件连衣裙多少钱"), (20, "连衣裙好看"), (70, "[赞][赞]连衣裙"))]
    store.write_batch(sid, events, [None] * len(events))
    r = build_session_report(store, sid)
    store.close()
    assert (r.headline.comments, r.headline.analyzed, r.headline.confused) == (3, 0, 0)
    assert r.data_quality.unanalyzed_comments == 3 and r.data_quality.path is None
    assert [m.unanalyzed for m in r.minutes] == [2, 1]
    # Keywords come from jieba on the spot when a comment was not analysed; emote codes dropped.
    words = {w for s in r.segments for w, _ in s.keywords}
    assert "连衣裙" in words and not any("赞" in w for w in words)
    page = render_report(r)
    assert "本场弹幕未经分析" in page and "未分析 3" in page and "<th>文件</th>" not in page


def test_comparison_and_csv_carry_the_outcome_analytics(tmp_path: Path, two_weeks: tuple[Path, Path]) -> None:
    """With the analytics (what `livebot report` uses), a comparison adds their headline rows and the CSV
    their per-minute funnel; the figures agree with the report's own pass."""
    from bot.analytics_trend import AnalyticsSettings
    from bot.outputs.report import OUTCOME_MINUTE_COLUMNS, write_reports

    store = Store.open(tmp_path / "cmp.db")
    cfg = _config(tmp_path)
    ids = [_replay(p, cfg, store) for p in two_weeks]
    out = tmp_path / "cmp.html"
    reports = write_reports([(store, sid) for sid in ids], out, csv_dir=tmp_path / "csv",
                            analytics=AnalyticsSettings())
    store.close()
    page = out.read_text(encoding="utf-8")
    for label in ("互动率", "平均观看 (分钟)", "停留超 5 分钟", "购买意向 / 分钟", "本场评分 (0–10)"):
        assert f"<td>{label}</td>" in page, label
    # The second week's viewers all came the week before: returning share 100 %, first week has none ("—").
    assert reports[0].outcome is not None and reports[1].outcome is not None
    assert reports[0].outcome.returning_share is None and reports[1].outcome.returning_share == 1.0
    assert "<td>回访观众占比</td><td class=\"n\">—</td>" in page
    for r in reports:
        assert r.outcome is not None
        path = tmp_path / "csv" / f"{r.session_id}-minutes.csv"
        rows = list(csv.DictReader(path.open(encoding="utf-8-sig", newline="")))
        assert list(rows[0])[-len(OUTCOME_MINUTE_COLUMNS):] == list(OUTCOME_MINUTE_COLUMNS)
        assert sum(int(m["意向弹幕"]) for m in rows) == r.headline.buying_intent == sum(
            int(m["购买意向"]) for m in rows)
        assert sum(int(m["新观众"]) for m in rows) == r.outcome.viewers
        for m in rows:
            present, acting = int(m["在场观众"]), int(m["互动人数"])
            assert acting <= present and (m["互动率"] == "" if not present else
                                          float(m["互动率"]) == round(acting / present, 4))


def test_report_shows_each_platforms_comment_delay(tmp_path: Path) -> None:
    """A show on Douyin (comments 1–2 s late) and Taobao (6–8 s late, every 4th on time-ish): the data-quality
    section gives each platform's median, p90 and share over 5 s; a source without its own time (ts equal
    to received_ts, here kuaishou) has no reading rather than a 0 s one."""
    store = Store.open(tmp_path / "d.db")
    sid = store.start_session("multi", T0)
    events = []
    for i in range(40):
        t = T0 + i * 1000
        events += [
            Event(platform="douyin", room="multi", kind=EventKind.CHAT, ts=t - 1000 - 25 * i, received_ts=t,
                  text="来了"),
            Event(platform="taobao", room="multi", kind=EventKind.CHAT, ts=t - (2000 if i % 4 == 0 else 7000),
                  received_ts=t, text="在吗"),
            Event(platform="kuaishou", room="multi", kind=EventKind.CHAT, ts=t + 2, received_ts=t + 2, text="哈哈"),
        ]
    store.write_batch(sid, events, [None] * len(events))
    store.end_session(sid, T0 + 40_000)
    report = build_session_report(store, sid)
    store.close()
    delays = report.data_quality.platform_delays
    assert set(delays) == {"douyin", "taobao"}
    dy, tb = delays["douyin"], delays["taobao"]
    assert (dy.comments, dy.median_ms, dy.p90_ms, dy.late_share) == (40, 1500, 1900, 0.0)
    assert (tb.comments, tb.median_ms, tb.p90_ms, tb.late_share) == (40, 7000, 7000, 0.75)
    page = render_report(report)
    assert "抖音 中位 1.5 秒 · 90% 分位 1.9 秒 · 超 5 秒 0.0% (40 条)" in page
    assert '淘宝 中位 7.0 秒 · 90% 分位 7.0 秒 · <span class="bad">超 5 秒 75.0%</span> (40 条)' in page
