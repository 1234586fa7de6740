"""Outcome analytics on authored event streams: every figure is checked against a hand-computed value."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from bot.analytics import (
    SCORE_COMPONENTS,
    CoverageTracker,
    FunnelTracker,
    LiveAnalytics,
    OutcomePass,
    PromoCues,
    aggregate_outcomes,
    effect_time,
    live_outcome,
    match_questions,
    need_match,
    promo_cadence,
    promo_moments,
    session_score,
)
from bot.events import Event, EventKind
from bot.state import RoomState

T0 = 1_767_268_800_000  # 2026-01-01 20:00:00 CST, a whole minute
S = 1000


@dataclass(frozen=True)
class A:
    """An analysis as RoomState and the analytics read it."""

    text: str = ""
    sentiment: str = "neu"
    confusion: bool = False
    topics: tuple[str, ...] = ()
    buying_intent: bool = False
    distrust: bool = False
    asks_host: bool = False
    confidence: float = 1.0


def ev(kind: EventKind, t: int, user: str | None = None, *, platform: str = "bilibili", count: int = 1,
       text: str = "", stats: dict[str, int] | None = None, event: str | None = None) -> Event:
    return Event(platform=platform, room="demo", kind=kind, ts=t, received_ts=t, user_id=user, count=count,
                 text=text, stats=stats, event=event)


# -- funnel ----------------------------------------------------------------------------------------------

# A: enters, comments and likes ×3 within 50 s          → active, interacted; watch 50 s
# B: enters twice 35 s apart                            → active (stayed ≥ 30 s); watch 35 s
# C: enters once                                        → only a viewer; watch 0
# D: enters, follows 40 s later                         → active, followed; watch 40 s
# E (douyin): comments at 10 s and at 400 s             → active, interacted, past 5 minutes; watch 390 s
# F: likes ×2 without an enter event                    → active, interacted; watch 0
FUNNEL_STREAM = [
    ev(EventKind.ENTER, T0, "A"),
    ev(EventKind.ENTER, T0 + 5 * S, "B"),
    ev(EventKind.CHAT, T0 + 10 * S, "A", text="多少钱"),
    ev(EventKind.CHAT, T0 + 10 * S, "E", platform="douyin", text="来了"),
    ev(EventKind.ENTER, T0 + 20 * S, "C"),
    ev(EventKind.ENTER, T0 + 30 * S, "D"),
    ev(EventKind.ENTER, T0 + 40 * S, "B"),
    ev(EventKind.LIKE, T0 + 50 * S, "A", count=3),
    ev(EventKind.STATS, T0 + 55 * S, stats={"online": 40}),
    ev(EventKind.FOLLOW, T0 + 70 * S, "D"),
    ev(EventKind.LIKE, T0 + 90 * S, "F", count=2),
    ev(EventKind.CHAT, T0 + 400 * S, "E", platform="douyin", text="已拍"),
]


def test_funnel_counts_match_hand_computed_values() -> None:
    tracker = FunnelTracker(T0)
    for e in FUNNEL_STREAM:
        tracker.add(e)
    f = tracker.funnel()
    assert (f.viewers, f.active, f.interacted, f.followed) == (6, 5, 3, 1)
    assert (f.commenters, f.likers, f.gifters, f.sharers) == (2, 2, 0, 0)
    assert f.interaction_rate == pytest.approx(3 / 6)
    assert f.likes == 5
    assert f.likes_per_viewer == pytest.approx(5 / 6)
    # watch: 50 + 35 + 0 + 40 + 390 + 0 = 515 s over 6 viewers
    assert f.watch_ms == 515 * S
    assert f.avg_watch_s == pytest.approx(515 / 6)
    assert f.long_watchers == 1
    assert f.long_share == pytest.approx(1 / 6)
    assert f.watch_histogram == (5, 0, 1, 0, 0)
    by = {p.platform: p for p in f.platforms}
    assert by["bilibili"].viewers == 5 and by["bilibili"].avg_watch_s == pytest.approx(125 / 5)
    assert by["bilibili"].interacted == 2 and by["bilibili"].long_watchers == 0
    assert by["douyin"].viewers == 1 and by["douyin"].avg_watch_s == pytest.approx(390)
    assert by["douyin"].long_share == 1.0


def test_funnel_per_minute_rows() -> None:
    tracker = FunnelTracker(T0)
    for e in FUNNEL_STREAM:
        tracker.add(e)
    rows = tracker.minutes()
    assert len(rows) == 7
    m0, m1, m6 = rows[0], rows[1], rows[6]
    assert (m0.new_viewers, m0.present, m0.interacting, m0.likes, m0.follows) == (5, 5, 2, 3, 0)
    assert m0.interaction_rate == pytest.approx(2 / 5)
    assert (m1.new_viewers, m1.present, m1.interacting, m1.likes, m1.follows) == (1, 2, 1, 2, 1)
    assert (m6.new_viewers, m6.present, m6.interacting) == (0, 1, 1)
    assert all(r.present == 0 and r.interaction_rate is None for r in rows[2:6])


def test_funnel_is_bounded_by_viewer_count() -> None:
    tracker = FunnelTracker(T0, max_viewers=2)
    for i, user in enumerate("abcd"):
        tracker.add(ev(EventKind.CHAT, T0 + i * S, user, text="hi"))
    f = tracker.funnel()
    assert (f.viewers, f.interacted, f.untracked) == (2, 2, 2)


def test_out_of_order_event_extends_watch_backwards() -> None:
    tracker = FunnelTracker(T0)
    tracker.add(ev(EventKind.ENTER, T0 + 60 * S, "A"))
    tracker.add(ev(EventKind.ENTER, T0 + 20 * S, "A"))
    f = tracker.funnel()
    assert f.watch_ms == 40 * S and f.active == 1


# -- need match ------------------------------------------------------------------------------------------


def test_need_match_counts_known_topics_only() -> None:
    topics = [("size_fit",), ("price", "coupon"), ("other",), ("shipping",), ("size_fit", "price")]
    m = match_questions(topics, ("size_fit",), "尺码答疑")
    assert (m.questions, m.answered, m.unclassified) == (4, 2, 1)
    assert m.share == pytest.approx(0.5)
    assert m.missing == (("price", 1), ("shipping", 1))
    # A segment answering nothing (开场) matches none; no questions at all is "no figure", not 0 %.
    assert match_questions(topics, (), "开场").share == 0.0
    assert match_questions([], ("price",)).share is None


def test_need_match_over_counted_topics_equals_one_per_question() -> None:
    topics = [("size_fit",), ("price", "coupon"), ("other",), ("size_fit",), ("shipping",), ("size_fit", "price")]
    counted = Counter(topics)
    for answers in [("size_fit",), ("price",), (), ("shipping", "coupon")]:
        assert match_questions(counted, answers, "x") == match_questions(topics, answers, "x")


def test_live_need_match_reads_the_last_60_seconds() -> None:
    st = RoomState("demo")
    items = [
        (T0, A("老问题", confusion=True, topics=("price",))),             # older than 60 s at the end
        (T0 + 30 * S, A("160斤穿什么码", confusion=True, topics=("size_fit",))),
        (T0 + 40 * S, A("多少钱", confusion=True, topics=("price",))),
        (T0 + 50 * S, A("好看", sentiment="pos")),                       # not a question
        (T0 + 60 * S, A("发什么快递", confusion=True, topics=("shipping",))),
        (T0 + 61 * S, A("在吗", confusion=True, topics=("other",))),
    ]
    for t, an in items:
        st.apply(ev(EventKind.CHAT, t, "u", text=an.text), an)
    m = need_match(st, T0 + 61 * S, "尺码答疑", ("size_fit",))
    assert (m.questions, m.answered, m.unclassified) == (3, 1, 1)
    assert m.share == pytest.approx(1 / 3)


# -- before / after ----------------------------------------------------------------------------------------

T = T0 + 200 * S
COUPON: dict[str, Any] = {
    "id": "c1", "kind": "coupon", "state": "accepted", "created_ts": T - 30 * S, "state_ts": None,
    "segment": None, "topic": "price", "data": {"due_ts": T, "item": "限时优惠券"},
}


def outcome_stream() -> list[tuple[Event, A | None]]:
    """Before (T−120 s … T): 10 comments, 2 negative, 3 price questions, 1 buying intent, online 100/120.
    After (T … T+120 s): 20 comments, 1 negative, 1 price question, 1 size question, 6 buying intent, 150."""
    out: list[tuple[Event, A | None]] = [(ev(EventKind.CHAT, T - 130 * S, "x", text="早"), A())]
    for i in range(10):
        an = A(sentiment="neg") if i < 2 else A(confusion=True, topics=("price",)) if i < 5 else (
            A(buying_intent=True, sentiment="pos") if i == 5 else A())
        out.append((ev(EventKind.CHAT, T - (100 - 10 * i) * S, f"b{i}", text="."), an))
    out.append((ev(EventKind.STATS, T - 60 * S, stats={"online": 100}), None))
    out.append((ev(EventKind.STATS, T - 30 * S, stats={"online": 120}), None))
    for i in range(20):
        an = A(sentiment="neg") if i == 0 else A(confusion=True, topics=("price",)) if i == 1 else (
            A(confusion=True, topics=("size_fit",)) if i == 2 else A(buying_intent=True) if i < 9 else A())
        out.append((ev(EventKind.CHAT, T + 6 * i * S, f"a{i}", text="."), an))
    out.append((ev(EventKind.STATS, T + 30 * S, stats={"online": 150}), None))
    out.append((ev(EventKind.CHAT, T + 125 * S, "y", text="晚"), A()))
    return sorted(out, key=lambda x: x[0].received_ts)


def _check_coupon_outcome(o: Any) -> None:
    b, a = o.before, o.after
    assert (b.seconds, a.seconds) == (120, 120)
    assert (b.comments_per_min, a.comments_per_min) == (5.0, 10.0)
    assert (b.negative_share, a.negative_share) == (pytest.approx(0.2), pytest.approx(0.05))
    assert (b.topic_confusion, a.topic_confusion) == (pytest.approx(0.3), pytest.approx(0.05))
    assert (b.intent_per_min, a.intent_per_min) == (0.5, 3.0)
    assert (b.online, a.online) == (110.0, 150.0)
    assert o.delta("comments_per_min") == 5.0
    assert o.delta("negative_share") == pytest.approx(-0.15)
    assert o.delta("topic_confusion") == pytest.approx(-0.25)
    assert o.delta("intent_per_min") == 2.5
    assert o.delta("online") == 40.0
    assert o.complete and o.label == "限时优惠券" and o.effect_ts == T


def test_before_after_from_stored_events() -> None:
    p = OutcomePass([COUPON, {**COUPON, "id": "c2", "state": "dismissed"}])
    stream = outcome_stream()
    for e, an in stream:
        p.add(e, an)
    (o,) = p.finish(stream[0][0].received_ts, stream[-1][0].received_ts)
    _check_coupon_outcome(o)


def test_before_after_live_equals_the_report_pass() -> None:
    st = RoomState("demo")
    for e, an in outcome_stream():
        st.apply(e, an)
    o = live_outcome(st, COUPON)
    assert o is not None
    _check_coupon_outcome(o)


def test_before_window_is_clipped_to_the_session_and_after_window_runs_live() -> None:
    st = RoomState("demo")
    st.apply(ev(EventKind.CHAT, T - 60 * S, "u", text="."), A())
    st.apply(ev(EventKind.CHAT, T - 30 * S, "u", text="."), A())
    st.apply(ev(EventKind.CHAT, T + 29 * S, "u", text="."), A())
    o = live_outcome(st, COUPON)
    assert o is not None and not o.complete
    # before: 60 s inside the session (T−60 … T−1), 2 comments → 2/min; after so far: 30 s, 1 comment
    assert (o.before.seconds, o.after.seconds) == (60, 30)
    assert o.before.comments_per_min == 2.0 and o.after.comments_per_min == 2.0
    assert o.before.negative_share == 0.0 and o.before.online is None


def test_effect_time_per_kind() -> None:
    assert effect_time(COUPON) == T
    assert effect_time({**COUPON, "data": {"due_ts": T, "dropped_ts": T + 7 * S}}) == T + 7 * S
    switch = {"id": "s", "kind": "script_switch", "state": "accepted", "created_ts": T, "state_ts": T + 5 * S,
              "data": {}}
    assert effect_time(switch) == T + 5 * S
    assert effect_time({**switch, "state_ts": None, "data": {"state_ts": T + 9 * S}}) == T + 9 * S
    assert effect_time({**switch, "state": "expired"}) is None
    assert effect_time({**switch, "kind": "alert"}) is None


def test_outcomes_aggregate_per_kind_segment_and_prompt() -> None:
    def prompt(i: int, text: str, seg: str, t: int) -> dict[str, Any]:
        return {"id": f"p{i}", "kind": "prompt", "state": "accepted", "created_ts": t, "state_ts": t,
                "segment": seg, "topic": None, "data": {"prompt": text}}

    p1 = prompt(1, "扣1", "开场", T0 + 200 * S)
    p2 = prompt(2, "扣1", "产品讲解", T0 + 600 * S)
    p3 = prompt(3, "想要的打想要", "开场", T0 + 1000 * S)
    p = OutcomePass([p1, p2, p3])
    # p1: 4 comments before, 8 after; p2: 2 before, 2 after; p3: 0 before, 6 after
    for base, before, after in ((p1, 4, 8), (p2, 2, 2), (p3, 0, 6)):
        t = base["created_ts"]
        for i in range(before):
            p.add(ev(EventKind.CHAT, t - (i + 1) * 10 * S, "u", text="."), A())
        for i in range(after):
            p.add(ev(EventKind.CHAT, t + i * 10 * S, "u", text="."), A())
    outcomes = p.finish(T0, T0 + 2000 * S)
    groups = {(g.by, g.key): g for g in aggregate_outcomes(outcomes)}
    k = groups[("kind", "prompt")]
    # comments/min deltas: p1 (8−4)/2 = +2, p2 0, p3 +3 → mean 5/3
    assert k.n == 3 and k.delta["comments_per_min"] == pytest.approx(5 / 3)
    assert k.before["comments_per_min"] == pytest.approx((2 + 1 + 0) / 3)
    assert groups[("prompt", "扣1")].n == 2 and groups[("prompt", "扣1")].delta["comments_per_min"] == 1.0
    assert groups[("segment", "开场")].delta["comments_per_min"] == pytest.approx(2.5)
    assert groups[("segment", "产品讲解")].n == 1
    # Negative share has no analysed comment on either side of p3's before window: left out of the mean.
    assert k.delta["negative_share"] == 0.0


def test_live_analytics_view_shows_a_completed_outcome() -> None:
    from bot.advisors.base import Suggestion, SuggestionKind, SuggestionState

    st = RoomState("demo")
    live = LiveAnalytics()
    for e, an in outcome_stream():
        live.observe(e)
        st.apply(e, an)
    st.record_suggestion(Suggestion(
        id="c1", room="demo", kind=SuggestionKind.COUPON, created_ts=T - 30 * S, expires_ts=T + 60 * S,
        text="发券", reason="", topic="price", state=SuggestionState.ACCEPTED,
        data={"due_ts": T, "item": "券"},
    ))
    view = live.view("demo", st, st.now_ms, segment="价格", answers=("price", "coupon"))
    (o,) = view["outcomes"]
    assert o["delta"]["comments_per_min"] == 5.0 and o["complete"] is True
    assert view["funnel"]["viewers"] == 32 and view["funnel"]["interacted"] == 32
    assert view["need_match"]["questions"] == 0 and view["need_match"]["share"] is None
    assert view["benchmarks"] == []


# -- promotion cadence -------------------------------------------------------------------------------------


def test_promo_moments_and_cadence() -> None:
    counts = [0, 1, 6, 7, 0, 0, 1, 8, 2, 0, 9]
    # median 1 → threshold max(5, 2) = 5; minutes ≥ 5: 2, 3, 7, 10 → runs start at 2, 7, 10
    assert promo_moments(counts) == [2, 7, 10]
    assert promo_cadence([2, 7, 10]) == 4.0
    assert promo_cadence([3]) is None


def test_promo_cues_per_minute() -> None:
    cues = PromoCues(T0)
    cue, plain = A(buying_intent=True), A()
    coupon = A(topics=("coupon",), confusion=True)
    for minute, n in ((0, 1), (2, 6), (5, 5)):
        for i in range(n):
            cues.add(T0 + minute * 60 * S + i * S, cue if i % 2 == 0 else coupon)
    cues.add(T0 + 6 * 60 * S, plain)
    assert list(cues.counts) == [1, 0, 6, 0, 0, 5, 0]
    assert cues.moments() == [2, 5]
    assert cues.cadence_min() == 3.0


# -- coverage --------------------------------------------------------------------------------------------


def test_coverage_counts_gap_minutes_down_time_and_lost_lines() -> None:
    c = CoverageTracker()
    for t in (0, 30, 190, 299, 600):
        c.add(ev(EventKind.CHAT, T0 + t * S, "u", text="."))
    c.add(ev(EventKind.SYSTEM, T0 + 200 * S, event="source_down"))
    c.add(ev(EventKind.SYSTEM, T0 + 260 * S, event="source_up"))
    cov = c.finish(lost_lines=5, input_events=95)
    # minutes 0, 3, 4, 10 have events; 1, 2, 5–9 are gaps (7 × 60 s); down 200–260 s inside minutes 3–4
    assert cov.span_ms == 600 * S
    assert cov.gap_minutes == 7 and cov.down_ms == 60 * S
    assert cov.uncovered_ms == 480 * S
    assert cov.time_share == pytest.approx(0.2)
    assert cov.line_share == pytest.approx(0.95)
    assert cov.share == pytest.approx(0.19) and cov.flagged


def test_coverage_overlapping_gap_and_unfinished_down_time() -> None:
    c = CoverageTracker()
    for t in (0, 50, 130, 170):
        c.add(ev(EventKind.CHAT, T0 + t * S, "u", text="."))
    c.add(ev(EventKind.SYSTEM, T0 + 100 * S, event="source_down"))
    c.add(ev(EventKind.SYSTEM, T0 + 150 * S, event="source_down", platform="douyin"))  # never comes back
    c.add(ev(EventKind.SYSTEM, T0 + 200 * S, event="source_up"))
    cov = c.finish()
    # minute 1 (60–120 s) has the source_down event, so no gap minute; bilibili down 100–200 s,
    # douyin down 150 s – end (200 s): union 100–200 s = 100 s of 200 s
    assert cov.gap_minutes == 0
    assert cov.down_ms == 150 * S
    assert cov.uncovered_ms == 100 * S
    assert cov.time_share == pytest.approx(0.5) and cov.line_share == 1.0


def test_full_coverage_is_not_flagged() -> None:
    c = CoverageTracker()
    for t in range(0, 600, 20):
        c.add(ev(EventKind.CHAT, T0 + t * S, "u", text="."))
    cov = c.finish()
    assert cov.share == 1.0 and not cov.flagged


# -- score -----------------------------------------------------------------------------------------------


def test_score_weights_add_up_to_ten() -> None:
    assert sum(c.weight for c in SCORE_COMPONENTS) == 10


def test_session_score_hand_computed() -> None:
    values = {"interaction_rate": 0.225, "long_share": 0.30, "returning_share": None, "intent_share": 0.05,
              "need_match": 0.35, "negative_share": 0.15}
    # 3·0.5 + 2·1 + 1.5·0.5 + 1·0.5 + 1·0.5 = 5.25 over weights 8.5 → 6.18
    assert session_score(values) == 6.2
    best = {"interaction_rate": 0.5, "long_share": 0.4, "returning_share": 0.3, "intent_share": 0.2,
            "need_match": 0.9, "negative_share": 0.0}
    assert session_score(best) == 10.0
    worst = {"interaction_rate": 0.0, "long_share": 0.0, "returning_share": 0.0, "intent_share": 0.0,
             "need_match": 0.0, "negative_share": 0.5}
    assert session_score(worst) == 0.0
    assert session_score({}) is None
