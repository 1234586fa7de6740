from __future__ import annotations

from bot.advisors.base import SuggestionKind
from bot.advisors.prompts import matches
from tests.bot.advisors.scenario import (
    CHATTER,
    PRICE_HESITATION,
    SIZE_QUESTIONS,
    START_MS,
    Room,
    cycle,
    mix,
)

PROMPT = SuggestionKind.PROMPT
COUPON = SuggestionKind.COUPON


def test_response_matching_rules() -> None:
    assert matches("1", ("1",)) and matches("1111", ("1",)) and matches(" 1 !", ("1",))
    assert not matches("160斤穿什么码", ("1",)) and not matches("扣1了吗还有吗", ("1",))
    assert matches("S", ("S", "M")) and matches("m", ("S", "M"))
    assert matches("我要驼色的", ("驼色",)) and not matches("黑色", ("驼色",))
    assert matches("在在在", ("在",)) and not matches("在哪里买", ("在",))


def test_quiet_room_gets_an_idle_prompt() -> None:
    room = Room()
    room.run(60, cycle(CHATTER, 1.0))
    last_chat = room.state.recent_comments[-1].ts
    new = room.run(70)  # nobody says anything
    idle = [s for s in room.of(PROMPT, new) if s.data["idle"]]
    assert idle, "no idle prompt in a silent room"
    first = idle[0]
    last_prompt = max(s.created_ts for s in room.of(PROMPT) if s.created_ts < first.created_ts)
    assert 30_000 <= first.created_ts - max(last_chat, last_prompt) <= 31_000
    assert first.data["pool"] == "冷场"
    assert first.reason.startswith("直播间已 30 秒没有新弹幕")
    # While the room stays silent, idle prompts keep coming every idle_after_s, not every tick.
    assert len(idle) == 2 and idle[1].created_ts - idle[0].created_ts == 30_000
    # A regular prompt needs chat lines: none once the lines said before the silence are used up.
    regular = [s for s in room.of(PROMPT, new) if not s.data["idle"]]
    assert len(regular) <= 1 and all(s.created_ts - last_chat <= 15_000 for s in regular)


def test_steady_room_achieves_3_to_5_prompts_per_minute() -> None:
    room = Room()
    room.run(600, mix(cycle(CHATTER, 1.0), cycle(SIZE_QUESTIONS, 0.1)))
    prompts = room.of(PROMPT)
    per_min = len(prompts) / 10
    assert 3.0 <= per_min <= 5.0
    times = [p.created_ts for p in prompts]
    assert all(sum(1 for u in times if t <= u < t + 60_000) <= 5 for t in times)
    stats = room.engine.stats(room.now)["prompts"]
    assert 3.0 <= stats["achieved_per_min"] <= 5.0 and stats["target_per_min"] == 4.0
    # Coupons dropped meanwhile (盲盒 at 100 comments, then the cadence) and no prompt came near them.
    coupons = room.of(COUPON)
    assert len(coupons) >= 2
    for c in coupons:
        assert all(abs(p.created_ts - c.data["due_ts"]) >= 20_000 for p in prompts)


def test_no_prompt_within_20_s_of_a_coupon_in_a_hesitating_room() -> None:
    room = Room()
    room.run(900, mix(cycle(CHATTER, 1.0), cycle(PRICE_HESITATION, 0.7)))
    coupons = room.of(COUPON)
    prompts = room.of(PROMPT)
    assert len(coupons) >= 3 and len(prompts) >= 30
    for c in coupons:
        due = c.data["due_ts"]
        near = [p for p in prompts if abs(p.created_ts - due) < 20_000]
        assert near == [], f"prompt within 20 s of the coupon due at {due - START_MS} ms"


def test_prompts_do_not_repeat_within_the_window() -> None:
    room = Room(cfg=None)
    window = 100  # the shipped 开场 pools hold 9 regular prompts: 108 s even at the 5/min catch-up rate
    room.engine.prompts.cfg = room.engine.settings.prompts.model_copy(update={"no_repeat_s": window})
    room.run(600, cycle(CHATTER, 1.0))
    last: dict[str, int] = {}
    for p in room.of(PROMPT):
        text = p.data["prompt"]
        if text in last:
            assert p.created_ts - last[text] >= window * 1000
        last[text] = p.created_ts
    assert len(last) >= 9


def test_min_chat_lines_between_prompts() -> None:
    room = Room()
    room.run(300, cycle(CHATTER, 0.1))  # one comment every 10 s: never 30 s silent, never busy
    prompts = [p for p in room.of(PROMPT) if not p.data["idle"]]
    assert prompts
    for a, b in zip(prompts, prompts[1:], strict=False):
        assert b.created_ts - a.created_ts >= 25_000  # three lines at 0.1/s take ~30 s
        assert "期间弹幕 3 条" in b.reason


def test_prompt_response_is_measured() -> None:
    room = Room()
    room.run(16, cycle(CHATTER, 1.0))
    (first,) = room.of(PROMPT)
    assert first.data["prompt"] == "想要大衣的姐妹扣1" and first.data["keywords"] == ["1"]
    # Half the room answers 1 / 111 for 20 s, then chats on.
    room.run(20, mix(cycle(CHATTER, 1.0), cycle(("1", "111", "160斤穿什么码"), 1.5)))
    room.run(15, cycle(CHATTER, 1.0))
    per_prompt = {r["id"]: r for r in room.engine.stats(room.now)["prompts"]["per_prompt"]}
    rec = per_prompt[first.id]
    assert rec["responses"] == 20  # 2 of every 3 answers match; 160斤穿什么码 does not
    assert rec["window_comments"] >= 50


def test_pause_and_resume_prompts() -> None:
    room = Room()
    room.run(30, cycle(CHATTER, 1.0))
    room.engine.pause_prompts(room.now)
    paused = room.run(90, cycle(CHATTER, 1.0))
    assert room.of(PROMPT, paused) == []
    assert room.engine.status(room.now)["prompts"]["paused"] is True
    room.engine.resume_prompts(room.now)
    resumed = room.run(30, cycle(CHATTER, 1.0))
    assert room.of(PROMPT, resumed)


def test_dismissed_prompts_do_not_count() -> None:
    room = Room(follow=False)
    new = room.run(16, cycle(CHATTER, 1.0))
    (prompt,) = room.of(PROMPT, new)
    assert room.engine.stats(room.now)["prompts"]["prompts"] == 1
    dismissed = room.engine.dismiss(prompt.id, room.now)
    assert dismissed is not None and dismissed.state == "dismissed"
    assert room.engine.stats(room.now)["prompts"]["prompts"] == 0
