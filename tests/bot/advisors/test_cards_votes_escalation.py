"""Answer cards (offered on new data within 3 s of the question), vote prompts (live count, stored result),
escalation of pending suggestions to the chat, the compliance alert rule and per-platform talking points;
authored run-sheets and comment streams on event time."""

from __future__ import annotations

import itertools
from pathlib import Path

from bot.advisors.base import Severity, SuggestionKind, SuggestionState
from bot.dispatcher import StoreSink
from bot.events import Event, EventKind
from bot.outputs.store import Store
from bot.scripts import load_run_sheet, parse_run_sheet
from bot.sources.base import SourceStatus
from tests.bot.advisors.scenario import (
    CHATTER,
    ROOM,
    SIZE_QUESTIONS,
    START_MS,
    Room,
    analyse,
    cycle,
    mix,
    settings,
)

CARD = SuggestionKind.ANSWER_CARD
ALERT = SuggestionKind.ALERT

SHEET = parse_run_sheet("""\
show: {name: 工具测试, category: 服饰}
segments:
  - name: 开场
    talking_points: [欢迎来到直播间]
  - name: 价格
    talking_points: [到手 699]
    variants:
      douyin: [点小黄车 1 号链接, 领粉丝券]
      taobao: [点宝贝口袋 1 号]
prompt_pools:
  - name: 投票
    prompts:
      - text: 想要燕麦色扣1, 驼色扣2, 黑色扣3
        options:
          - {label: 燕麦色, match: ["1"]}
          - {label: 驼色, match: ["2"]}
          - {label: 黑色, match: ["3"]}
        window_s: 40
coupons: {budget: 0}
answer_cards:
  - topic: size_fit
    title: 尺码怎么选
    answer: 100–110斤S, 110–125斤M, 125–140斤L
  - topic: shipping
    title: 发货时间
    answer: 顺丰包邮, 48小时内发出
""", file="tools.yaml")


class Live:
    """A room fed comment by comment at event time, calling `on_data` after each one as the pipeline does."""

    def __init__(self, *, follow: bool = False, **sections: dict[str, object]) -> None:
        self.room = Room(script=SHEET, cfg=settings(**sections), follow=follow)
        self.engine = self.room.engine
        self.state = self.room.state
        self.ids = itertools.count()
        self.new: list = []  # type: ignore[type-arg]

    def say(self, text: str, ts: int, platform: str = "test") -> list:  # type: ignore[type-arg]
        ev = Event(platform=platform, room=ROOM, kind=EventKind.CHAT, ts=ts, received_ts=ts,
                   msg_id=f"q{next(self.ids)}", user_id=f"u{next(self.ids)}", text=text)
        self.state.apply(ev, analyse(text))
        out = self.engine.on_data(self.state, ts)
        self.new += out
        return out


def test_answer_card_is_offered_within_3_s_of_the_question_that_tips_the_count() -> None:
    live = Live()
    live.engine.tick(live.state, START_MS)  # the show runs; the next tick is a whole second away
    assert live.say("160斤穿什么码", START_MS + 200) == []
    assert live.say("今天好漂亮", START_MS + 500) == []
    assert live.say("150斤能穿吗", START_MS + 900) == []
    (card,) = live.say("有没有XL码", START_MS + 1_300)
    # Offered on the data, at the tipping question's own time: well inside 3 s, before any tick.
    assert card.kind is CARD and card.created_ts - START_MS - 1_300 <= 3_000
    assert card.data["latency_ms"] == 0 and card.data["latest_question_ts"] == START_MS + 1_300
    assert card.topic == "size_fit" and card.data["title"] == "尺码怎么选"
    assert card.text == "答疑卡「尺码怎么选」: 100–110斤S, 110–125斤M, 125–140斤L"
    assert card.reason == "近30秒 3 条弹幕在问尺码, 阈值 3"
    assert card.examples[0] == "有没有xl码"  # the analysed (normalised) text
    assert card.id in {s.id for s in live.engine.pending}
    # One card per topic while it waits; more questions don't duplicate it.
    assert live.say("170cm穿什么码", START_MS + 1_600) == []
    # Field control uses it; within the cooldown the same card is not offered again.
    assert live.engine.accept(card.id, START_MS + 2_000) is not None
    confused = [q for q in SIZE_QUESTIONS if analyse(q).confusion]
    for i, q in enumerate(confused[:4]):
        assert live.say(q, START_MS + 3_000 + i * 500) == []
    assert live.say("尺码怎么选", START_MS + 125_000) == []  # past the cooldown, but alone in its window
    again = [s for i, q in enumerate(confused[:2]) for s in live.say(q, START_MS + 130_000 + i * 300)]
    assert [s.topic for s in again] == ["size_fit"]


def test_a_direct_question_to_the_host_counts_twice() -> None:
    live = Live()
    live.engine.tick(live.state, START_MS)
    assert analyse("@主播 什么时候发货").asks_host
    assert live.say("@主播 什么时候发货", START_MS + 100) == []
    (card,) = live.say("发什么快递", START_MS + 400)
    assert card.topic == "shipping" and card.data["direct"] == 1 and card.data["questions"] == 2
    assert "(其中 1 条 @主播)" in card.reason


def test_tick_offers_cards_too_and_expired_cards_free_the_topic() -> None:
    live = Live(answer_cards={"ttl_s": 20, "cooldown_s": 0})
    live.room.run(5, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 1.0)))
    (card,) = live.room.of(CARD)
    live.room.run(25, cycle(CHATTER, 1.0))
    assert next(s for s in live.state.suggestions if s.id == card.id).state is SuggestionState.EXPIRED
    live.room.run(5, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 1.0)))
    assert len(live.room.of(CARD)) == 2


def test_vote_prompt_counts_live_and_stores_the_result(tmp_path: Path) -> None:
    room = Room(script=SHEET, cfg=settings(prompts={"min_chat_lines": 0}), follow=False)
    store = Store.open(tmp_path / "livebot.db")
    session = store.start_session(ROOM, START_MS, source="test")
    sink = StoreSink(store, session)
    room.run(20, cycle(CHATTER, 0.5))
    prompt = next(s for s in room.suggestions if s.kind is SuggestionKind.PROMPT)
    sink.write_now(session, prompt)
    assert prompt.data["options"][1] == {"label": "驼色", "keywords": ["2"]}
    assert prompt.data["vote_window_s"] == 40
    start = prompt.created_ts
    votes = ["1", "2", "2", "扣2", "22", "3", "111", "好看", "2"]  # 扣2 is not a bare 2: not counted
    for i, text in enumerate(votes):
        room.chat(text, start + 1_000 + i * 1_000)
    room.now = start + 12_000
    live = room.engine.status(room.now)["votes"]
    assert live[0]["id"] == prompt.id and live[0]["closed"] is False
    assert [(o["label"], o["count"]) for o in live[0]["options"]] == [("燕麦色", 2), ("驼色", 4), ("黑色", 1)]
    assert live[0]["total"] == 7 and live[0]["leader"] == "驼色"
    room.chat("3", start + 45_000)  # after the 40 s window: not counted
    room.engine.drain_changes()
    room.now = start + 40_000
    room.run(6, cycle(CHATTER, 0.5))
    changes = [c for c in room.engine.drain_changes() if c.id == prompt.id]
    (update,) = [c for c in changes if "vote" in c.data]
    result = update.data["vote"]
    assert result["closed"] is True and result["total"] == 7 and result["leader"] == "驼色"
    assert [o["count"] for o in result["options"]] == [2, 4, 1]
    assert next(s for s in room.state.suggestions if s.id == prompt.id).data["vote"] == result
    for c in changes:
        sink.write_now(session, c)
    (row,) = [r for r in store.suggestions(session) if r["id"] == prompt.id]
    assert row["data"]["vote"]["options"][1] == {"label": "驼色", "count": 4, "share": 0.5714}
    store.close()


def test_pending_suggestion_escalates_to_the_chat_once_and_settles_with_it() -> None:
    room = Room(follow=False)  # the shipped apparel run-sheet
    room.run(70, cycle(CHATTER, 1.0))
    room.run(15, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 2.0)))
    (switch,) = room.of(SuggestionKind.SCRIPT_SWITCH)
    waited = room.now - switch.created_ts
    room.run(14 - waited // 1000, cycle(CHATTER, 1.0))

    def escalations() -> list:  # type: ignore[type-arg]
        return [s for s in room.of(ALERT) if s.rule == "escalation" and s.data["original_id"] == switch.id]

    assert escalations() == []
    room.run(1, cycle(CHATTER, 1.0))
    (esc,) = escalations()
    assert esc.created_ts - switch.created_ts == 15_000
    assert esc.text == f"主播 15秒 未处理「切换话术」建议: {switch.text}"
    assert esc.reason == f"建议待处理已 15秒; 原因: {switch.reason}" and esc.severity is Severity.WARNING
    assert esc.data["original_id"] == switch.id and esc.expires_ts == switch.expires_ts
    room.run(20, cycle(CHATTER, 1.0))
    assert len(escalations()) == 1  # once
    room.engine.drain_changes()
    room.engine.accept(switch.id, room.now)
    changes = room.engine.drain_changes()
    assert [(c.id, c.state) for c in changes] == [
        (esc.id, SuggestionState.ACCEPTED), (switch.id, SuggestionState.ACCEPTED),
    ]
    assert changes[0].data["resolved_by"] == switch.id


def test_escalation_can_be_turned_off_and_skips_other_kinds() -> None:
    room = Room(follow=False, cfg=settings(escalate_after_s=0))
    room.run(70, cycle(CHATTER, 1.0))
    room.run(40, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 2.0)))
    assert room.of(SuggestionKind.SCRIPT_SWITCH)
    assert [s for s in room.of(ALERT) if s.rule == "escalation"] == []
    # Prompts don't escalate by default (they come often and expire in 15 s).
    quiet = Room(follow=False).run(60, cycle(CHATTER, 1.0))
    assert all(s.data.get("original_kind") != "prompt" for s in quiet)


def test_viewers_quoting_absolute_terms_raise_the_compliance_alert() -> None:
    room = Room(follow=False)
    quotes = ["主播说全网最低价?", "真的100%羊毛吗", "全网最低是真的吗"]
    assert analyse(quotes[0]).compliance_terms == ("全网最低",)
    assert analyse("哪个颜色最显白").compliance_terms == ()  # a question, not a quote
    room.run(30, cycle(CHATTER, 1.0))
    room.run(3, cycle(quotes, 1.0))
    # It fires as soon as two comments quote a term (alerts.compliance_min), once per cooldown.
    (alert,) = [s for s in room.of(ALERT) if s.rule == "compliance"]
    assert alert.text == "观众在复述「全网最低」、「100%」: 主播注意措辞, 场控核对话术和商品页"
    assert alert.reason == "近60秒 2 条弹幕引用了广告法绝对化用语或禁售类目词 (阈值 2 条)"
    assert alert.data["terms"] == {"全网最低": 1, "100%": 1} and alert.severity is Severity.WARNING
    assert alert.examples == ("真的100%羊毛吗", "主播说全网最低价?")


def test_merged_room_shows_each_platforms_talking_points() -> None:
    live = Live()
    engine = live.engine
    live.state.sources["douyin"] = SourceStatus(name="douyin", platform="douyin", room=ROOM)
    engine.tick(live.state, START_MS)
    engine.set_segment("价格", START_MS)
    live.say("多少钱", START_MS + 100, platform="taobao")
    live.say("有券吗", START_MS + 200, platform="kuaishou")
    st = engine.status(START_MS + 1_000)
    assert st["talking_points"] == ["到手 699"]
    assert st["platforms"] == [
        {"platform": "douyin", "talking_points": ["点小黄车 1 号链接", "领粉丝券"], "variant": True},
        {"platform": "kuaishou", "talking_points": ["到手 699"], "variant": False},
        {"platform": "taobao", "talking_points": ["点宝贝口袋 1 号"], "variant": True},
    ]
    # A platform silent for 10 minutes is no longer present (a source's own platform stays).
    later = engine.status(START_MS + 11 * 60_000)
    assert [p["platform"] for p in later["platforms"]] == ["douyin"]
    # The shipped apparel sheet's price segment carries a douyin and a taobao variant.
    apparel = load_run_sheet("apparel").sheet.segment("价格")
    assert apparel is not None and apparel.talking_points_for("douyin")[0].endswith("小黄车 1 号链接")
