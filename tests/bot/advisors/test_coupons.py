from __future__ import annotations

from bot.advisors.base import Suggestion, SuggestionKind, SuggestionState
from bot.advisors.engine import AdvisorEngine
from bot.scripts import CouponPlan, RunSheet, load_run_sheet
from tests.bot.advisors.scenario import (
    CHATTER,
    PRICE_HESITATION,
    ROOM,
    START_MS,
    Room,
    cycle,
    mix,
    settings,
)

COUPON = SuggestionKind.COUPON


def apparel(**coupons: object) -> RunSheet:
    """The apparel run-sheet with its coupon plan replaced (no milestones unless given)."""
    sheet = load_run_sheet("apparel").sheet
    plan = CouponPlan.model_validate({"items": ["满600减50店铺券", "无门槛20元券"], **coupons})
    return sheet.model_copy(update={"coupons": plan})


def room_with(plan: RunSheet, *, follow: bool = True, **sections: dict[str, object]) -> Room:
    return Room(AdvisorEngine(ROOM, plan, settings(**sections), follow=follow))


def windows_ok(times: list[int], window_ms: int, cap: int) -> bool:
    """Every half-open window [t, t + window_ms) starting at an event holds at most `cap` events."""
    ts = sorted(times)
    return all(sum(1 for u in ts if t <= u < t + window_ms) <= cap for t in ts)


def test_base_cadence_with_countdown() -> None:
    room = room_with(apparel())
    room.run(400, cycle(CHATTER, 0.3))
    coupons = room.of(COUPON)
    assert len(coupons) == 1
    c = coupons[0]
    # Announced 30 s (lead_s) before it is due, 300 s (cadence_s) after the show started.
    assert c.data["due_ts"] == START_MS + 1000 + 300_000
    assert c.created_ts == c.data["due_ts"] - 30_000
    assert c.text == "30秒后发券「满600减50店铺券」"
    assert c.data["trigger"] == "cadence" and c.data["countdown_s"] == 30 and c.data["mode"] == "confirm"
    assert "按节奏每 5分00秒 发一次券, 本场第一次发券" in c.reason
    assert "(本场已发 0/10, 近1小时 0/8)" in c.reason
    assert c.confidence == 1.0 and not c.needs_review


def test_price_reveal_with_hesitation_pulls_the_coupon_forward() -> None:
    room = room_with(apparel())
    room.run(60, cycle(CHATTER, 1.0))
    reveal = room.now
    room.run(60, mix(cycle(CHATTER, 1.0), cycle(PRICE_HESITATION, 1.5)))
    coupons = room.of(COUPON)
    assert coupons, "price hesitation did not pull a coupon forward"
    c = coupons[0]
    assert c.data["trigger"] == "price_hesitation" and c.topic == "price"
    assert c.created_ts - reveal <= 15_000
    assert c.data["due_ts"] == c.created_ts + 30_000
    assert c.data["pulled_forward_s"] >= 150
    assert c.reason.startswith("价格犹豫: 近60秒 ") and "对价格/优惠有疑问或不满" in c.reason
    assert "比原计划提前 " in c.reason
    assert c.examples and set(c.examples) <= set(PRICE_HESITATION)
    assert 0 < c.confidence <= 1


def test_caps_are_never_exceeded_under_constant_hesitation() -> None:
    # A room that hesitates about price for 75 minutes, with a tight plan: the cooldown alone would allow a
    # drop every 20 s; the promo cap (2/min), the per-hour cap (4) and the budget (6) must hold anyway.
    plan = apparel(cadence_s=60, cooldown_s=20, per_hour=4, budget=6)
    room = room_with(plan, promo_per_min=2, coupons={"lead_s": 10})
    room.run(75 * 60, mix(cycle(CHATTER, 1.0), cycle(PRICE_HESITATION, 1.0)), tick_s=5)
    drops = room.engine.memory.coupons.drops
    coupons = room.of(COUPON)
    assert len(drops) == len(coupons) == 6  # the whole budget, spent over two hours' windows
    assert windows_ok(drops, 3_600_000, 4)
    assert all(b - a >= 20_000 for a, b in zip(drops, drops[1:], strict=False))
    promos = [c.data["due_ts"] for c in coupons] + [
        s.created_ts for s in room.of(SuggestionKind.SCRIPT_SWITCH) if s.data["promotional"]
    ]
    assert windows_ok(promos, 60_000, 2)
    assert room.engine.stats(room.now)["promo_pushes_max_per_min"] <= 2
    # The fifth drop had to wait for the first to leave its hour.
    assert drops[4] - drops[0] >= 3_600_000


def test_promo_cap_counts_promotional_switches_too() -> None:
    plan = apparel(cadence_s=60, cooldown_s=0)
    room = room_with(plan, promo_per_min=1, coupons={"lead_s": 0})
    room.engine.memory.add_promo(START_MS + 15_000)  # e.g. a price announcement the host just made
    room.run(90, cycle(CHATTER, 0.5))
    coupons = room.of(COUPON)
    # Due at 61 s by cadence, but the announcement at 15 s fills its minute: the drop waits past 75 s.
    assert coupons and coupons[0].data["due_ts"] >= START_MS + 75_000
    assert windows_ok(room.engine.memory.promos, 60_000, 1)


def test_confirm_mode_waits_for_the_host() -> None:
    room = room_with(apparel(cadence_s=60, cooldown_s=30), follow=False)
    room.run(20, cycle(CHATTER, 0.3))
    first = room.run(30, cycle(CHATTER, 0.3))
    (c,) = room.of(COUPON, first)
    assert room.engine.memory.coupons.pending is not None
    # Nothing else while the drop is pending, even past the next cadence slot.
    room.run(40, cycle(CHATTER, 0.3))
    assert len(room.of(COUPON)) == 1
    done = room.engine.coupon_dropped(c.id, room.now)
    assert isinstance(done, Suggestion) and done.state is SuggestionState.ACCEPTED
    assert room.engine.memory.coupons.drops == [room.now]
    assert room.engine.drain_changes()[-1].id == c.id
    # The next drop is planned one cadence after the real drop.
    dropped_at = room.now
    room.run(70, cycle(CHATTER, 0.3))
    second = room.of(COUPON)[1]
    assert second.data["due_ts"] == dropped_at + 60_000
    assert second.text == "30秒后发券「无门槛20元券」"


def test_unconfirmed_drop_expires_and_is_rescheduled() -> None:
    room = room_with(apparel(cadence_s=60), follow=False, coupons={"ttl_s": 20})
    room.run(80, cycle(CHATTER, 0.3))
    (c,) = room.of(COUPON)
    room.run(40, cycle(CHATTER, 0.3))
    recorded = {s.id: s for s in room.state.suggestions}
    assert recorded[c.id].state is SuggestionState.EXPIRED
    assert room.engine.memory.coupons.drops == []
    assert room.engine.memory.coupons.next_due == c.expires_ts + 60_000


def test_auto_mode_drops_at_the_countdown() -> None:
    room = room_with(apparel(cadence_s=60, mode="auto"), follow=False)
    room.run(45, cycle(CHATTER, 0.3))
    (c,) = room.of(COUPON)
    assert c.text == "30秒后自动发券「满600减50店铺券」"
    assert room.engine.memory.coupons.drops == [c.data["due_ts"]]
    room.run(30, cycle(CHATTER, 0.3))
    recorded = {s.id: s for s in room.state.suggestions}
    assert recorded[c.id].state is SuggestionState.ACCEPTED


def test_blind_box_after_100_comments() -> None:
    room = Room()  # the shipped apparel plan: 盲盒 at 100 comments
    room.run(80, cycle(CHATTER, 1.5))
    coupons = room.of(COUPON)
    assert coupons and coupons[0].data["item"] == "盲盒" and coupons[0].data["trigger"] == "milestone"
    assert coupons[0].reason.startswith("弹幕已达 100 条 (里程碑 100 条), 发「盲盒」")
    assert room.state.totals.comments >= 100
    # Not again: the 100-comment milestone does not repeat.
    room.run(240, cycle(CHATTER, 1.5))
    assert sum(1 for c in room.of(COUPON) if c.data["item"] == "盲盒") == 1


def test_falling_viewer_count_pulls_a_drop_forward() -> None:
    room = room_with(apparel())
    def viewers(now: int) -> None:
        # 1000 viewers for 40 s, then 5 fewer every second (−15 % at 70 s).
        t = (now - START_MS) // 1000
        if t % 5 == 0:
            room.online(1000 - max(0, t - 40) * 5)

    room.run(130, cycle(CHATTER, 0.5), on_tick=viewers)
    (c,) = room.of(COUPON)
    assert c.data["trigger"] == "viewer_drop"
    assert START_MS + 70_000 <= c.created_ts <= START_MS + 80_000
    assert c.reason.startswith("在线人数从 1000 降到 ")
    assert c.data["evidence"]["drop"] >= 0.15


def test_budget_zero_means_no_coupons() -> None:
    room = room_with(apparel(budget=0))
    room.run(400, mix(cycle(CHATTER, 1.0), cycle(PRICE_HESITATION, 1.0)))
    assert room.of(COUPON) == []
    assert room.engine.status(room.now)["coupon"]["budget"] == 0
