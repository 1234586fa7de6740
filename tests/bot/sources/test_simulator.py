"""The seeded simulator room: determinism, show script, post-reveal burst, SimulatorSource pacing."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import replace

import pytest

from bot.clock import ManualClock
from bot.events import Event, EventKind, SystemEvent
from bot.privacy import ViewerHasher
from bot.sources.base import SourceState
from bot.sources.generic_json import parse_event
from bot.sources.simulator import (
    BURST_FACTOR,
    LOOP_S,
    QUESTION_CATEGORIES,
    REVEAL_OFFSET_S,
    SHOW,
    TEMPLATES,
    TICK_MS,
    Category,
    Phase,
    Simulator,
    SimulatorSource,
)

HASHER = ViewerHasher.for_tests()
TWO_LOOPS_S = 2 * LOOP_S


@pytest.fixture(scope="module")
def two_loops() -> list[tuple[Event, Category | None]]:
    """Two full show loops of seed 3 (generated once; about 15k events)."""
    return list(Simulator(seed=3).labelled_events(TWO_LOOPS_S))


def test_same_seed_same_events_other_seed_other_events() -> None:
    first = list(Simulator(seed=7).events(90))
    assert first == list(Simulator(seed=7).events(90))
    other = list(Simulator(seed=8).events(90))
    chat = EventKind.CHAT
    assert [e.text for e in other if e.kind is chat] != [e.text for e in first if e.kind is chat]
    assert {e.user_id for e in other} != {e.user_id for e in first}


def test_events_are_well_formed_and_in_time_order(two_loops: list[tuple[Event, Category | None]]) -> None:
    sim = Simulator(seed=3)
    events = [e for e, _ in two_loops]
    assert events[0].kind is EventKind.SYSTEM and events[0].event == SystemEvent.LIVE_START
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:], strict=False))
    assert sim.start_ts <= events[0].ts and events[-1].ts < sim.start_ts + TWO_LOOPS_S * 1000
    assert all(e.platform == "simulator" and e.room == "demo" and e.received_ts == e.ts for e in events)
    assert len({e.msg_id for e in events}) == len(events)
    kinds = Counter(e.kind for e in events)
    assert set(kinds) == set(EventKind)  # every kind shows up
    for event, category in two_loops:
        if event.kind in (EventKind.STATS, EventKind.SYSTEM):
            assert event.user_id is None
        else:
            assert event.user_id is not None and re.fullmatch(r"[0-9a-f]{16}", event.user_id)
        assert event.user_name is None
        assert (category is not None) == (event.kind is EventKind.CHAT)
        if event.kind is EventKind.CHAT:
            assert event.text.strip() and "{" not in event.text
        if event.kind is EventKind.GIFT:
            assert event.gift_name and event.value > 0 and event.count >= 1
        if event.kind is EventKind.LIKE:
            assert event.count >= 1
    # Every event survives the replay-JSONL round trip, so a recorded demo replays exactly.
    for event in events[:3000]:
        assert parse_event(json.loads(event.to_line()), hasher=None, received_ts=0) == event


def test_stats_every_five_seconds_with_an_online_count_in_waves(
    two_loops: list[tuple[Event, Category | None]],
) -> None:
    stats = [e for e, _ in two_loops if e.kind is EventKind.STATS]
    assert len(stats) == TWO_LOOPS_S // 5
    assert {b.ts - a.ts for a, b in zip(stats, stats[1:], strict=False)} == {5000}
    online = [s.stats["online"] for s in stats if s.stats]
    assert max(online) >= 1.4 * min(online)
    # Waves, not noise: the count turns around several times over the two loops.
    smooth = [sum(online[i : i + 6]) for i in range(0, len(online) - 6, 6)]
    turns = sum(1 for a, b, c in zip(smooth, smooth[1:], smooth[2:], strict=False) if (b - a) * (c - b) < 0)
    assert turns >= 3
    totals = [(s.stats["viewers_total"], s.stats["likes_total"]) for s in stats if s.stats]
    assert totals == sorted(totals) and totals[-1][1] > 0


def test_show_script_phases_loop_over_five_to_eight_minutes() -> None:
    sim = Simulator(seed=1)
    assert 300 <= LOOP_S <= 480
    assert [spec.phase for spec in SHOW] == list(Phase)
    assert sim.phase_at(0) is Phase.OPENING
    assert sim.phase_at(REVEAL_OFFSET_S - 0.1) is Phase.PRODUCT
    assert sim.phase_at(REVEAL_OFFSET_S) is Phase.PRICE_REVEAL
    assert sim.phase_at(LOOP_S - 1) is Phase.AFTER_SALES
    assert sim.phase_at(LOOP_S + 1) is Phase.OPENING
    assert sim.phase_at_ts(sim.start_ts + round((LOOP_S + REVEAL_OFFSET_S) * 1000)) is Phase.PRICE_REVEAL
    assert sim.reveal_times(TWO_LOOPS_S) == [REVEAL_OFFSET_S, LOOP_S + REVEAL_OFFSET_S]
    # Each loop features the next product.
    assert sim.product_at(10) != sim.product_at(LOOP_S + 10)


def test_price_reveal_sets_off_a_burst_of_questions(two_loops: list[tuple[Event, Category | None]]) -> None:
    sim = Simulator(seed=3)
    reveals = sim.reveal_times(TWO_LOOPS_S)

    def after_reveal(ts: int) -> bool:
        t = (ts - sim.start_ts) / 1000
        return any(r <= t < r + 60 for r in reveals)

    questions = [(e, c) for e, c in two_loops if c in QUESTION_CATEGORIES]
    in_burst = sum(1 for e, _ in questions if after_reveal(e.ts))
    burst_rate = in_burst / (60 * len(reveals))
    baseline_rate = (len(questions) - in_burst) / (TWO_LOOPS_S - 60 * len(reveals))
    assert burst_rate >= 3 * baseline_rate

    money = [e for e, c in two_loops if c in (Category.PRICE_Q, Category.COUPON_Q)]
    money_in_burst = sum(1 for e in money if after_reveal(e.ts))
    assert money_in_burst / (60 * len(reveals)) >= 5 * (len(money) - money_in_burst) / (
        TWO_LOOPS_S - 60 * len(reveals)
    )
    # Peak second: tens of comments, around the advertised ~50/s.
    per_second = Counter((e.ts - sim.start_ts) // 1000 for e, c in two_loops if c is not None)
    peak_second, peak = per_second.most_common(1)[0]
    assert 25 <= peak <= 90
    assert any(r <= peak_second < r + 10 for r in reveals)
    assert sim.comment_rate(REVEAL_OFFSET_S) > BURST_FACTOR * sim.rate


def test_comment_mix_follows_the_segment(two_loops: list[tuple[Event, Category | None]]) -> None:
    sim = Simulator(seed=3)
    by_phase: dict[Phase, Counter[Category]] = {}
    for event, category in two_loops:
        if category is not None:
            by_phase.setdefault(sim.phase_at_ts(event.ts), Counter())[category] += 1
    assert by_phase[Phase.SIZE].most_common(1)[0][0] is Category.SIZE_Q
    assert by_phase[Phase.OPENING].most_common(1)[0][0] is Category.GREETING
    assert by_phase[Phase.PUSH].most_common(1)[0][0] is Category.BUYING_INTENT
    after_sales = by_phase[Phase.AFTER_SALES]
    complaints = after_sales[Category.SHIPPING_COMPLAINT] + after_sales[Category.DISTRUST]
    assert complaints / sum(after_sales.values()) > 0.15


def test_templates_are_many_and_the_text_stream_looks_alive(
    two_loops: list[tuple[Event, Category | None]],
) -> None:
    templates = {t for ts in TEMPLATES.values() for t in ts}
    assert len(templates) >= 200
    assert set(TEMPLATES) == set(Category)
    texts = [e.text for e, c in two_loops if c is not None]
    assert len(set(texts)) >= 600
    sample = " ".join(texts)
    for expected in ("多少钱", "有券吗", "怎么领券", "到手价多少", "斤穿什么码", "XL有吗",
                     "什么时候发货", "怎么还不发货", "快递太慢了", "是正品吗", "别是假货吧", "已拍",
                     "扣1", "上车", "来了来了", "[赞]", "[玫瑰]", "👍"):  # fmt: skip
        assert expected in sample, expected
    gifts = {e.gift_name for e, _ in two_loops if e.kind is EventKind.GIFT}
    assert len(gifts) >= 5


def test_viewers_return_across_sessions_and_new_ones_arrive() -> None:
    first = {e.user_id for e in Simulator(seed=1).events(300) if e.user_id}
    second = {e.user_id for e in Simulator(seed=2).events(300) if e.user_id}
    shared = first & second
    assert len(shared) >= 20  # returning fans keep their id
    assert len(first - second) >= 100  # each session has its own new guests


def test_hasher_and_store_names() -> None:
    plain = list(Simulator(seed=5).events(30))
    mine = list(Simulator(seed=5, hasher=HASHER, store_names=True).events(30))
    assert [e.text for e in plain] == [e.text for e in mine]
    users = [(a.user_id, b.user_id) for a, b in zip(plain, mine, strict=True) if a.user_id]
    assert users and all(a != b for a, b in users)
    assert {HASHER("simulator", f"fan-{i:04d}") for i in range(400)} & {b for _, b in users}
    assert all(e.user_name for e in mine if e.user_id) and all(e.user_name is None for e in plain)


def test_rate_scales_the_comment_stream() -> None:
    slow = sum(1 for e in Simulator(seed=1, rate=2.0).events(100) if e.kind is EventKind.CHAT)
    fast = sum(1 for e in Simulator(seed=1, rate=8.0).events(100) if e.kind is EventKind.CHAT)
    assert 3 <= fast / slow <= 5.5
    with pytest.raises(ValueError, match="rate must be a positive"):
        Simulator(rate=0)


# --- SimulatorSource --------------------------------------------------------------------------------------


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_simulator_source_plays_in_real_time_on_the_clock() -> None:
    clock = ManualClock(start_ms=1_800_000_000_000)
    sim = Simulator(seed=11, room="demo2")
    source = SimulatorSource(sim, clock, HASHER)
    assert source.phase is None and source.status.state is SourceState.IDLE
    got: list[Event] = []

    async def emit(event: Event) -> None:
        assert event.received_ts == clock.now_ms()
        got.append(event)

    task = asyncio.create_task(source.run(emit))
    await settle()
    assert source.status.state is SourceState.CONNECTED and source.phase is Phase.OPENING
    assert [e.kind for e in got] == [EventKind.SYSTEM, EventKind.STATS]  # only what is due at t=0
    for _ in range(50):  # 5 s in 100 ms ticks
        clock.advance(TICK_MS / 1000)
        await settle()
    now = clock.now_ms()
    assert all(0 <= e.received_ts - e.ts < TICK_MS for e in got)
    # The same events as the pure generator started at the same time, with the same hasher.
    expected = []
    for event, _ in sim.stream(start_ts=1_800_000_000_000, hasher=HASHER):
        if event.ts > now:
            break
        expected.append(event)
    assert [replace(e, received_ts=e.ts) for e in got] == expected
    assert source.status.messages == len(got) > 10

    clock.advance(REVEAL_OFFSET_S + 1)  # one long jump: everything due comes out in one batch
    await settle()
    assert source.phase is Phase.PRICE_REVEAL
    assert got[-1].ts <= clock.now_ms() and source.status.last_message_ms == clock.now_ms()
    source.stop()
    await asyncio.wait_for(task, 1)
    assert source.status.state is SourceState.STOPPED


async def test_simulator_source_stop_and_misuse() -> None:
    clock = ManualClock()
    source = SimulatorSource(Simulator(seed=1), clock, HASHER)

    async def emit(event: Event) -> None:
        pass

    task = asyncio.create_task(source.run(emit))
    await settle()
    source.stop()  # cuts the tick sleep short, no clock advance needed
    await asyncio.wait_for(task, 1)
    assert source.status.state is SourceState.STOPPED
    with pytest.raises(RuntimeError, match="already run"):
        await source.run(emit)

    early = SimulatorSource(Simulator(seed=1), clock, HASHER)
    early.stop()
    await early.run(emit)
    assert early.status.state is SourceState.STOPPED and early.status.messages == 0
