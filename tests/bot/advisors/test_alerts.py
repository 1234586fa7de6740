from __future__ import annotations

from collections.abc import Callable

from bot.advisors.base import Severity, Suggestion, SuggestionKind
from bot.sources.base import SourceState
from tests.bot.advisors.scenario import CHATTER, SIZE_QUESTIONS, START_MS, Room, cycle, mix, settings

ALERT = SuggestionKind.ALERT
NEGATIVE = ("太难看了", "质量太差了", "好丑啊", "失望", "垃圾", "真难看", "上次买的起球了")
DISTRUST = ("是不是假货", "骗子吧", "主播骗人", "退款")
PRICE_QUESTIONS = ("多少钱", "价格多少啊", "到手价多少")


def alerts(room: Room, rule: str, items: list[Suggestion] | None = None) -> list[Suggestion]:
    return [s for s in room.of(ALERT, items) if s.rule == rule]


def test_negative_surge_is_sent_once_per_cooldown_while_it_lasts() -> None:
    room = Room()
    room.run(60, cycle(CHATTER, 1.0))
    room.run(700, mix(cycle(CHATTER, 1.0), cycle(NEGATIVE, 1.0)))
    sent = alerts(room, "negative_surge")
    cooldown = room.engine.settings.alerts.cooldown_s
    assert len(sent) == 3  # at the start of the surge, then once per 5-minute cooldown
    gaps = [b.created_ts - a.created_ts for a, b in zip(sent, sent[1:], strict=False)]
    assert gaps == [cooldown * 1000] * 2
    first, second = sent[0], sent[1]
    assert first.severity in (Severity.WARNING, Severity.CRITICAL)
    assert first.text.startswith("负面弹幕激增") and first.reason.startswith("近60秒 ")
    assert set(first.examples) <= set(NEGATIVE)
    assert "一直未恢复" in second.reason and second.data["episodes"] == 0 and second.data["active"] is True


def test_repeated_episodes_are_aggregated_into_the_next_alert() -> None:
    room = Room()
    room.run(60, cycle(CHATTER, 1.0))
    burst = mix(cycle(CHATTER, 1.0), cycle(NEGATIVE, 1.5))
    calm = cycle(CHATTER, 1.0)

    def waves(now: int) -> list[str]:
        # 40 s of complaints, then 80 s of calm, over and over.
        return burst(now) if ((now - START_MS) // 1000 - 60) % 120 < 40 else calm(now)

    room.run(480, waves)
    sent = alerts(room, "negative_surge")
    assert len(sent) == 2, [s.reason for s in sent]
    second = sent[1]
    assert second.created_ts - sent[0].created_ts == room.engine.settings.alerts.cooldown_s * 1000
    # Two more waves started during the cooldown; the aggregate says so and carries their examples.
    assert second.data["episodes"] == 2
    assert "期间又触发 2 次" in second.reason
    assert second.examples and set(second.examples) <= set(NEGATIVE)


def test_aggregate_goes_out_after_the_cooldown_even_when_quiet_again() -> None:
    room = Room()
    room.run(60, cycle(CHATTER, 1.0))
    room.run(40, mix(cycle(CHATTER, 1.0), cycle(NEGATIVE, 1.5)))  # first wave: alert
    room.run(60, cycle(CHATTER, 1.0))
    room.run(40, mix(cycle(CHATTER, 1.0), cycle(NEGATIVE, 1.5)))  # second wave: inside the cooldown
    room.run(300, cycle(CHATTER, 1.0))
    sent = alerts(room, "negative_surge")
    assert len(sent) == 2
    assert sent[1].data["active"] is False and "(现已回落)" in sent[1].reason
    assert sent[1].data["episodes"] == 1


def test_distrust_words_alert_with_examples() -> None:
    room = Room()
    room.run(60, cycle(CHATTER, 1.0))
    room.chat("是不是假货", room.now)
    room.run(5, cycle(CHATTER, 1.0))
    assert alerts(room, "distrust") == []  # one comment is below distrust_min (2)
    room.chat("主播骗人", room.now)
    new = room.run(2, cycle(CHATTER, 1.0))
    (a,) = alerts(room, "distrust", new)
    assert a.examples == ("主播骗人", "是不是假货")
    assert a.text == "出现质疑/维权弹幕, 场控请及时回应: 「主播骗人」"
    assert a.severity is Severity.WARNING and a.data["count"] == 2
    # Many more within the cooldown: no new alert, but the next one will be critical and say so.
    room.run(60, mix(cycle(CHATTER, 1.0), cycle(DISTRUST, 0.3)))
    assert len(alerts(room, "distrust")) == 1
    room.run(250, mix(cycle(CHATTER, 1.0), cycle(DISTRUST, 0.3)))
    later = alerts(room, "distrust")
    assert len(later) == 2 and later[1].severity is Severity.CRITICAL


def test_confusion_surge_is_per_topic() -> None:
    room = Room()
    room.run(60, cycle(CHATTER, 1.0))
    room.run(60, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 1.0), cycle(PRICE_QUESTIONS, 0.8)))
    sent = alerts(room, "confusion_surge")
    assert sorted(s.topic or "" for s in sent) == ["price", "size_fit"]
    size = next(s for s in sent if s.topic == "size_fit")
    assert size.text.startswith("大量观众在问尺码, 建议集中解答")
    assert size.data["key"] == "confusion_surge:size_fit"


def test_comment_rate_collapse() -> None:
    room = Room()
    room.run(300, cycle(CHATTER, 1.0))
    assert alerts(room, "rate_collapse") == []
    room.run(60, cycle(CHATTER, 0.1))
    (a,) = alerts(room, "rate_collapse")
    assert a.text.startswith("弹幕骤降") and a.data["before_per_min"] >= 40
    assert a.reason.startswith("弹幕从每分钟 ")


def test_source_down_after_30_s() -> None:
    room = Room()
    src = room.source("douyin:0")
    src.state = SourceState.CONNECTED
    room.run(20, cycle(CHATTER, 1.0))
    src.state = SourceState.RECONNECTING
    src.down_since_ms = room.now
    src.last_error = "connection reset"
    new = room.run(29)
    assert alerts(room, "source_down", new) == []
    new = room.run(3)
    (a,) = alerts(room, "source_down", new)
    assert a.severity is Severity.CRITICAL and a.confidence == 1.0
    assert a.text == "数据源「douyin:0」已断开, 弹幕分析暂停, 请检查网络或直播间"
    assert "最近错误: connection reset" in a.reason
    # Another source failing is its own alert, not deduplicated with the first.
    other = room.source("bilibili:1")
    other.state = SourceState.FAILED
    new = room.run(1)
    assert [s.data["source"] for s in alerts(room, "source_down", new)] == ["bilibili:1"]


def test_platform_lag_names_the_slow_platform_and_the_gap() -> None:
    """Douyin comments arrive 1.2 s after they were sent, Taobao's 7 s: Taobao's viewers get every answer,
    prompt and countdown ~6 s late. Comments without a platform time (ts = received) are no reading."""
    room = Room()

    def both(now: int) -> None:
        for i in range(2):
            room.chat("主播好", now + i * 400, platform="douyin", delay_ms=1200 + 100 * i)
            room.chat("来了", now + i * 400 + 200, platform="taobao", delay_ms=6800 + 400 * i)
            room.chat("哈哈", now + i * 400 + 300, platform="kuaishou")  # no time of its own

    room.run(60, on_tick=both)
    (a,) = alerts(room, "platform_lag")
    assert a.severity is Severity.WARNING and a.data["platform"] == "taobao"
    assert a.text.startswith("淘宝弹幕延迟 7.2 秒, 比抖音慢 5.9 秒: ")
    # It fires once 5 timestamped Taobao comments agree (3 s in), naming the other platforms measured.
    assert a.reason.startswith("近60秒 6 条淘宝弹幕从发出到送达的延迟: 中位数 7.2 秒, 90% 分位 7.2 秒 (阈值 5 秒)")
    assert a.reason.endswith("; 抖音 1.3 秒") and "快手" not in a.reason
    delays = room.state.platform_delays(60)
    assert set(delays) == {"douyin", "taobao"}
    assert (delays["douyin"].median_ms, delays["taobao"].p90_ms, delays["taobao"].comments) == (1300, 7200, 120)
    assert room.state.snapshot()["platform_delay"]["taobao"] == {"median_ms": 7200, "p90_ms": 7200,
                                                                 "comments": 120, "level": "late"}

    # Taobao's push recovers: a minute later the rule is quiet (nothing new once the cooldown ends).
    def recovered(now: int) -> None:
        room.chat("来了", now, platform="taobao", delay_ms=1500)
        room.chat("主播好", now + 500, platform="douyin", delay_ms=1200)

    room.run(70, on_tick=recovered)
    assert room.state.platform_delays(60)["taobao"].median_ms == 1500
    new = room.run(300, on_tick=recovered)
    assert [s for s in alerts(room, "platform_lag", new) if s.data["active"]] == []


def test_platform_lag_in_a_single_platform_room_and_its_threshold() -> None:
    room = Room(cfg=settings(alerts={"platform_lag_s": 3.0, "platform_lag_min_comments": 10}))
    room.run(60, on_tick=lambda now: room.chat("多少钱", now, platform="bilibili", delay_ms=3500)
             if (now // 1000) % 10 == 0 else None)
    assert alerts(room, "platform_lag") == []  # 6 readings in the minute: fewer than 10
    room.run(30, on_tick=lambda now: room.chat("多少钱", now, platform="bilibili", delay_ms=3500))
    (a,) = alerts(room, "platform_lag")
    assert a.text.startswith("B站弹幕延迟 3.5 秒: ") and "比" not in a.text.split(":")[0]


def test_snoozed_alert_rule_stays_quiet() -> None:
    room = Room(follow=False)
    room.run(60, cycle(CHATTER, 1.0))
    stream: Callable[[int], list[str]] = mix(cycle(CHATTER, 1.0), cycle(NEGATIVE, 1.0))
    (a,) = alerts(room, "negative_surge", room.run(40, stream))
    room.engine.snooze(a.id, 600, room.now)
    room.run(500, stream)
    assert len(alerts(room, "negative_surge")) == 1
