"""Time limits on an authored run-sheet and comment streams: segment overrun, the opening's deadline and
checklist, session length and rhythm, and the timing block of the host screen."""

from __future__ import annotations

import pytest

from bot.advisors.base import Severity, SuggestionKind, SuggestionState
from bot.scripts import parse_run_sheet
from tests.bot.advisors.scenario import CHATTER, SIZE_QUESTIONS, START_MS, Room, cycle, mix, settings

SWITCH = SuggestionKind.SCRIPT_SWITCH
ALERT = SuggestionKind.ALERT

SHEET = parse_run_sheet("""\
show: {name: 节奏测试, category: 服饰, planned_minutes: 40}
opening:
  deadline_s: 60
  checklist: [人设, 场景, 核心卖点]
segments:
  - name: 开场
    min_dwell_s: 10
    max_dwell_s: 90
  - name: 产品讲解
    talking_points: [双面呢工艺]
    min_dwell_s: 30
    max_dwell_s: 120
  - name: 尺码答疑
    answers_topics: [size_fit]
    min_dwell_s: 30
    triggers:
      - {metric: topic_confusion_rate, topic: size_fit, window_s: 60, op: ">=", value: 0.15, min_comments: 10}
  - name: 收尾
coupons: {budget: 0}
""", file="timing.yaml")


def room(**sections: dict[str, object]) -> Room:
    return Room(script=SHEET, cfg=settings(**sections), follow=False)


def overruns(r: Room) -> list:  # type: ignore[type-arg]
    return [s for s in r.of(SWITCH) if s.data.get("metric") == "max_dwell"]


def rule(r: Room, name: str) -> list:  # type: ignore[type-arg]
    return [s for s in r.of(ALERT) if s.rule == name]


def test_overrun_nudges_once_per_stint_to_the_next_segment() -> None:
    r = room()
    r.run(90, cycle(CHATTER, 1.0))
    assert overruns(r) == []
    assert r.engine.status(r.now)["timing"]["state"] == "near"  # 89 s of 90: amber on the screen
    r.run(1, cycle(CHATTER, 1.0))
    (s,) = overruns(r)
    assert s.created_ts == START_MS + 91_000  # the first tick (which starts the show) is at +1 s
    assert s.segment == "产品讲解" and s.data["from_segment"] == "开场" and s.data["max_dwell_s"] == 90
    assert s.text == "「开场」已讲 1分30秒, 超过上限 1分30秒: 切到「产品讲解」"
    assert "段落上限 1分30秒" in s.reason and s.data["talking_points"] == ["双面呢工艺"]
    assert r.engine.status(r.now)["timing"]["state"] == "over"
    # Ignored: it expires and is not repeated in this stint, however long the opening runs on.
    r.run(300, cycle(CHATTER, 1.0))
    assert len(overruns(r)) == 1
    assert next(x for x in r.state.suggestions if x.id == s.id).state is SuggestionState.EXPIRED
    assert r.engine.status(r.now)["timing"]["over_s"] == 300
    # The host moves on; the next segment gets its own limit.
    r.engine.set_segment("产品讲解", r.now)
    r.run(125, cycle(CHATTER, 1.0))
    second = overruns(r)[1]
    assert second.segment == "尺码答疑" and second.data["from_segment"] == "产品讲解"
    accepted = r.engine.accept(second.id, r.now)
    assert accepted is not None and r.state.segment == "尺码答疑"


def test_overrun_stands_back_while_a_trigger_fires() -> None:
    r = room()
    r.run(20, cycle(CHATTER, 1.0))
    r.run(20, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 2.0)))
    (switch,) = r.of(SWITCH)
    assert switch.segment == "尺码答疑" and switch.data["metric"] == "topic_confusion_rate"
    r.engine.snooze(switch.id, 300, r.now)
    # Viewers keep asking about size past the opening's limit: the overrun does not push 产品讲解 over them.
    r.run(80, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 2.0)))
    assert overruns(r) == [] and r.engine.status(r.now)["timing"]["state"] == "over"
    # Once the questions have died down, the overrun nudge comes.
    r.run(80, cycle(CHATTER, 1.0))
    (s,) = overruns(r)
    assert s.segment == "产品讲解"


def test_opening_deadline_names_the_items_not_ticked_off() -> None:
    r = room()
    r.run(20, cycle(CHATTER, 1.0))
    r.engine.check_item("人设", r.now)
    with pytest.raises(ValueError, match="no checklist item '价格'; the run-sheet lists: 人设, 场景, 核心"):
        r.engine.check_item("价格", r.now)
    opening = r.engine.status(r.now)["timing"]["opening"]
    assert opening["done"] == 1 and opening["total"] == 3 and opening["active"] is True
    assert opening["checklist"][0] == {"name": "人设", "hint": "", "done": True, "done_ts": START_MS + 20_000}
    assert opening["left_s"] == 41 and opening["deadline_s"] == 60
    r.engine.check_item("场景", r.now)
    r.engine.check_item("场景", r.now, done=False)  # unticked again
    r.run(40, cycle(CHATTER, 1.0))
    assert rule(r, "opening_deadline") == []
    r.run(1, cycle(CHATTER, 1.0))
    (a,) = rule(r, "opening_deadline")
    assert a.text == "开场已 1分00秒, 该进入正题了; 还没讲到: 场景 / 核心卖点"
    assert a.severity is Severity.WARNING and a.data["missing"] == ["场景", "核心卖点"]
    assert "开场清单完成 1/3" in a.reason and "下一段「产品讲解」" in a.reason
    r.run(60, cycle(CHATTER, 1.0))
    assert len(rule(r, "opening_deadline")) == 1  # once


def test_opening_done_in_time_or_fully_ticked() -> None:
    left = room()
    left.run(30, cycle(CHATTER, 1.0))
    left.engine.set_segment("产品讲解", left.now)
    left.run(60, cycle(CHATTER, 1.0))
    assert rule(left, "opening_deadline") == []
    ticked = room()
    ticked.run(10, cycle(CHATTER, 1.0))
    for item in ("人设", "场景", "核心卖点"):
        ticked.engine.check_item(item, ticked.now)
    ticked.run(60, cycle(CHATTER, 1.0))
    (a,) = rule(ticked, "opening_deadline")
    assert a.severity is Severity.INFO and "还没讲到" not in a.text and "开场清单完成 3/3" in a.reason


def test_session_length_warns_before_and_at_the_planned_length() -> None:
    r = room(timing={"session_warn_before_min": 10, "rhythm_after_min": 30})
    r.run(1)
    r.engine.set_segment("收尾", r.now)  # no max dwell: only the session clock and rhythm speak
    r.run(30 * 60 - 10, cycle(CHATTER, 0.2), tick_s=10)
    assert rule(r, "session_length") == []
    r.run(20, cycle(CHATTER, 0.2), tick_s=10)
    (near,) = rule(r, "session_length")
    assert near.data["stage"] == "near" and near.severity is Severity.INFO
    assert near.text.startswith("距计划时长还有 10分00秒") and "「收尾」" in near.text
    assert r.engine.status(r.now)["timing"]["session"]["state"] == "near"
    r.run(10 * 60, cycle(CHATTER, 0.2), tick_s=10)
    over = rule(r, "session_length")[1]
    assert over.data["stage"] == "over" and over.severity is Severity.WARNING
    assert over.text == "已到计划时长 40 分钟: 进入「收尾」, 预告下一场"
    status = r.engine.status(r.now)["timing"]["session"]
    assert status["state"] == "over" and status["planned_s"] == 2400 and status["left_s"] <= 0
    # Rhythm: 30 minutes in the same segment → one nudge (the next comes at 60).
    (rhythm,) = rule(r, "rhythm")
    assert rhythm.text.startswith("「收尾」已连续 30分") and "换个节奏" in rhythm.text
    assert rhythm.data["same_for_s"] >= 1800
    assert len(rule(r, "session_length")) == 2


def test_rhythm_counts_per_stint() -> None:
    r = room(timing={"rhythm_after_min": 5})
    r.run(1)
    r.engine.set_segment("收尾", r.now)
    r.run(5 * 60 + 10, cycle(CHATTER, 0.2), tick_s=5)
    assert len(rule(r, "rhythm")) == 1 and r.engine.status(r.now)["timing"]["rhythm"]["due"] is True
    r.engine.set_segment("尺码答疑", r.now)
    r.run(4 * 60, cycle(CHATTER, 0.2), tick_s=5)
    assert len(rule(r, "rhythm")) == 1 and r.engine.status(r.now)["timing"]["rhythm"]["due"] is False
    r.run(70, cycle(CHATTER, 0.2), tick_s=5)
    assert [a.data["segment"] for a in rule(r, "rhythm")] == ["收尾", "尺码答疑"]
