"""Outcome analytics over a real SQLite store: returning viewers across sessions, the report sections
(before/after, need match, coverage) and `livebot report --trend`; figures equal hand-computed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.advisors.base import Suggestion, SuggestionKind, SuggestionState
from bot.analytics_trend import (
    AnalyticsSettings,
    analyse_session,
    build_trend,
    last_sessions,
    render_trend,
    returning_viewers,
)
from bot.cli import main
from bot.events import Event, EventKind
from bot.outputs.report import write_reports
from bot.outputs.store import Store
from nlp.analyzer import Analysis
from tests.bot.test_analytics import COUPON, T0, A, T, _check_coupon_outcome, outcome_stream

S = 1000
DAY = 86_400_000


def analysis(a: A) -> Analysis:
    probs = {"neg": (0.8, 0.1, 0.1), "pos": (0.1, 0.1, 0.8)}.get(a.sentiment, (0.1, 0.8, 0.1))
    return Analysis(
        text=a.text, sentiment=a.sentiment, sentiment_probs=probs, confusion=a.confusion,  # type: ignore[arg-type]
        confusion_score=0.9 if a.confusion else 0.1, topics=a.topics, keywords=(), asks_host=False,
        buying_intent=a.buying_intent, distrust=False, confidence=0.9, classifier="test",
    )


def chat(t: int, user: str, a: A | None = None, room: str = "demo") -> tuple[Event, Analysis]:
    return (Event(platform="bilibili", room=room, kind=EventKind.CHAT, ts=t, received_ts=t, user_id=user,
                  text=a.text if a else "好"), analysis(a or A()))


def write(store: Store, sid: str, items: list[tuple[Event, Analysis | None]]) -> None:
    store.write_batch(sid, [e for e, _ in items], [x for _, x in items])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "livebot.db")
    yield s  # type: ignore[misc]
    s.close()


# -- returning viewers ---------------------------------------------------------------------------------

VIEWERS = (("a", "b", "c", "d"), ("b", "c", "e", "f", "g"), ("b", "c", "e", "h"))


def three_shows(store: Store) -> list[str]:
    ids = []
    for day, viewers in enumerate(VIEWERS):
        start = T0 + day * DAY
        sid = store.start_session("demo", start)
        write(store, sid, [chat(start + i * S, v) for i, v in enumerate(viewers)])
        store.end_session(sid, start + 10 * S)
        ids.append(sid)
    # Another room's viewer "a" comes back there: it never counts for demo.
    rival = store.start_session("rival", T0 + 2 * DAY + 5 * S)
    write(store, rival, [chat(T0 + 2 * DAY + 5 * S, "a", room="rival")])
    return ids


def test_returning_viewers_across_stored_sessions(store: Store) -> None:
    s1, s2, s3 = three_shows(store)
    r = returning_viewers(store, [s1, s2, s3])
    # s1: first of its room; 2 of its 4 viewers (b, c) come to s2
    assert (r[s1].viewers, r[s1].new, r[s1].returning, r[s1].streak3) == (4, 4, 0, 0)
    assert r[s1].returning_share is None and r[s1].retention == 0.5 and r[s1].next_session == s2
    # s2: b, c were at s1 → 2 of 5 returning; b, c, e come to s3
    assert (r[s2].new, r[s2].returning, r[s2].streak3, r[s2].retained) == (3, 2, 0, 3)
    assert r[s2].returning_share == pytest.approx(0.4) and r[s2].retention == pytest.approx(0.6)
    # s3: b, c, e seen before; b and c came to all three shows; no next show yet
    assert (r[s3].new, r[s3].returning, r[s3].streak3, r[s3].previous_sessions) == (1, 3, 2, 2)
    assert r[s3].retained is None and r[s3].retention is None
    # Asking about one session alone gives the same figures (history comes from the store).
    assert returning_viewers(store, [s2])[s2] == r[s2]


def test_trend_rows_and_last_sessions(store: Store) -> None:
    ids = three_shows(store)
    (rival,) = store.sessions("rival")
    assert last_sessions(store, 2) == [ids[2], rival.id]
    assert last_sessions(store, 2, "demo") == ids[1:]
    assert last_sessions(store, 2, settings=AnalyticsSettings(watch_only=frozenset({"rival"}))) == ids[1:]
    rows = build_trend(store, list(reversed(ids)))
    assert [r.session_id for r in rows] == ids
    third = rows[2]
    # Every viewer commented: interaction rate 1 → 3 points; returning 3/4 → 1.5 points; no watch beyond
    # a single event (0 → 0 of 2 points); no intent (0 of 1.5); neutral comments (1 point): 5.5 of 9.
    assert third.values["interaction_rate"] == 1.0 and third.values["returning_share"] == 0.75
    assert third.values["need_match"] is None and third.values["negative_share"] == 0.0
    assert third.score == round(10 * 5.5 / 9, 1)
    page = render_trend(rows)
    assert page.count('<tr><td>2026-01-0') == 3
    assert "评分公式" in page and "10 × Σ(权重 × 得分)" in page


# -- the report ------------------------------------------------------------------------------------------


def coupon_session(store: Store) -> str:
    sid = store.start_session("demo", T - 130 * S)
    items = [(e, analysis(a) if a is not None else None) for e, a in outcome_stream()]
    write(store, sid, items)
    store.save_suggestion(sid, Suggestion(
        id=COUPON["id"], room="demo", kind=SuggestionKind.COUPON, created_ts=COUPON["created_ts"],
        expires_ts=T + 60 * S, text="发券", reason="价格犹豫", topic="price", state=SuggestionState.ACCEPTED,
        data=dict(COUPON["data"]),
    ))
    store.end_session(sid, T + 125 * S)
    return sid


def test_before_after_from_a_stored_session(store: Store) -> None:
    sid = coupon_session(store)
    a = analyse_session(store, sid)
    (o,) = a.outcomes
    _check_coupon_outcome(o)
    (g,) = a.groups
    assert (g.by, g.kind, g.n) == ("kind", "coupon", 1)
    assert g.delta["comments_per_min"] == 5.0 and g.delta["online"] == 40.0


def test_report_sections_show_the_hand_computed_figures(store: Store, tmp_path: Path) -> None:
    sid = coupon_session(store)
    out = tmp_path / "r.html"
    (report,) = write_reports([(store, sid)], out, analytics=AnalyticsSettings())
    sections = {s.key: s.html for s in report.extra_sections}
    assert list(sections) == ["score", "funnel", "returning", "need", "outcomes", "coverage"]
    outcomes = sections["outcomes"]
    assert "这不是对照实验" in outcomes
    # comments/min 5 → 10, price confusion 30 % → 5 %, negative 20 % → 5 %, intent 0.5 → 3, online 110 → 150
    assert "5 → 10" in outcomes and "30.0% → 5.0%" in outcomes and "20.0% → 5.0%" in outcomes
    assert "0.5 → 3" in outcomes and "110 → 150" in outcomes
    assert "+5.0" in outcomes and "-25.0 个百分点" in outcomes and "+40.0" in outcomes
    assert "互动率" in sections["funnel"] and ">32<" in sections["funnel"]
    assert "这是本直播间在库中的第一场" in sections["returning"]
    assert "无法计算需求匹配" in sections["need"]
    assert report.notices == ()
    assert [p.key for p in report.extra_panels] == ["funnel", "intent"]
    page = out.read_text(encoding="utf-8")
    assert 'id="outcomes"' in page and "建议效果 (前后对比)" in page


def need_session(store: Store) -> str:
    """开场 then 尺码答疑 (recorded segments); a 3-minute hole in the data."""
    sid = store.start_session("demo", T0, meta={"script": "apparel"})
    size = A("160斤穿什么码", confusion=True, topics=("size_fit",))
    price = A("多少钱", confusion=True, topics=("price",))
    items = [
        # 开场: 2 asked, 0 answered
        chat(T0, "u1", size), chat(T0 + 20 * S, "u2", size),
        # 尺码答疑: 3 of 4 answered, and one question nobody can answer ("other")
        chat(T0 + 70 * S, "u3", size), chat(T0 + 80 * S, "u4", size),
        chat(T0 + 90 * S, "u5", size), chat(T0 + 100 * S, "u6", price),
        chat(T0 + 110 * S, "u7", A("在吗", confusion=True, topics=("other",))),
        # after 3 empty minutes
        chat(T0 + 300 * S, "u1", A("已拍", sentiment="pos", buying_intent=True)),
    ]
    write(store, sid, items)
    store.end_session(sid, T0 + 300 * S, {"segments": [{"ts": T0, "name": "开场"},
                                                       {"ts": T0 + 60 * S, "name": "尺码答疑"}]})
    return sid


def test_need_match_and_coverage_in_the_report(store: Store, tmp_path: Path) -> None:
    sid = need_session(store)
    a = analyse_session(store, sid)
    assert a.need_questions == 6 and a.need_share == pytest.approx(3 / 6)
    assert [(s, q, ans) for s, q, ans, _ in a.need_segments] == [("开场", 2, 0), ("尺码答疑", 4, 3)]
    assert a.need_minutes[:2] == ((2, 0), (4, 3))
    # minutes 2, 3, 4 are empty: 180 s of a 300 s span uncovered → 40 % coverage
    assert a.coverage.gap_minutes == 3 and a.coverage.share == pytest.approx(0.4)
    # u1 came back after 300 s: watch 300 s, past 5 minutes
    assert a.funnel.long_watchers == 1 and a.funnel.watch_ms == 300 * S
    (report,) = write_reports([(store, sid)], tmp_path / "n.html", analytics=AnalyticsSettings())
    (notice,) = report.notices
    assert notice.startswith("数据完整度 40.0%, 低于 95%")
    need = next(s.html for s in report.extra_sections if s.key == "need")
    assert "50.0%" in need and "价格 1" in need
    panel = next(p for p in report.extra_panels if p.key == "need")
    assert panel.series[0].values[:2] == (0.0, 0.75)
    page = (tmp_path / "n.html").read_text(encoding="utf-8")
    assert page.index('class="notice"') < page.index('id="overview"')


def test_benchmark_room_next_to_ours(store: Store, tmp_path: Path) -> None:
    ours = coupon_session(store)
    rival = store.start_session("rival", T - 100 * S, meta={"watch_only": True})
    q = A("有券吗", confusion=True, topics=("coupon",))
    items = [chat(T - 100 * S + i * S, f"r{i}", q, room="rival") for i in range(6)]
    items += [chat(T - 40 * S + i * S, f"r{i}", A("好看", sentiment="pos"), room="rival") for i in range(4)]
    write(store, rival, items)
    (report,) = write_reports([(store, ours)], tmp_path / "b.html", analytics=AnalyticsSettings())
    bench = next(s.html for s in report.extra_sections if s.key == "benchmark")
    assert "rival" in bench and "demo (我们)" in bench
    # rival: 10 comments over its 63 s span; 4 of 10 positive; 6 coupon questions, the top one ×6
    assert "9.5" in bench and "40.0%" in bench and "优惠券 6" in bench and "有券吗 ×6" in bench
    # the rival's own report has no benchmark and no before/after of its own
    (own,) = write_reports([(store, rival)], None, analytics=AnalyticsSettings())
    assert "benchmark" not in [s.key for s in own.extra_sections]


# -- CLI --------------------------------------------------------------------------------------------------


def test_cli_trend_page(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = three_shows(store)
    db = str(store.path)
    out = tmp_path / "trend.html"
    assert main(["report", "--trend", "--last", "2", "--room", "demo", "--db", db, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"趋势页已写入 {out} (2 场)" in text and ids[1] in text and ids[0] not in text
    assert out.read_text(encoding="utf-8").count('<tr><td>2026-01-0') == 2
    assert main(["report", "--trend", ids[0], "--db", db]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert main(["report", "--trend", "nope", "--db", db, "--out", str(out)]) == 2
    assert "'nope' is not a session" in capsys.readouterr().err
