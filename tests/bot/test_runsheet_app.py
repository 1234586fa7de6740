"""Run-sheet tools through the running App on a ManualClock: an answer card reaches the sinks on new data
(no advisor tick), a pending suggestion escalates to the chat robot with its reason, quiet hours never
silence a live room (App._room_is_live → AlertSink routing), and the opening checklist tick is stored."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.advisors.base import Severity, Suggestion, SuggestionKind, make_suggestion_id
from bot.app import App
from bot.clock import ManualClock
from bot.config import parse_config
from bot.errors import ProtocolError
from bot.events import Event, EventKind
from bot.outputs.alerts import AlertSink
from bot.outputs.screen import RoomActions
from bot.outputs.screen.protocol import ActionName, parse_message
from tests.fakes.robots import FakeRobot, wait_for

ROOM = "demo"
CST = timezone(timedelta(hours=8))


def at_cst(day: int, hh: int, mm: int) -> int:
    return int(datetime(2026, 1, day, hh, mm, tzinfo=CST).timestamp() * 1000)


class Harness:
    def __init__(self, app: App, clock: ManualClock, robot: FakeRobot) -> None:
        self.app = app
        self.clock = clock
        self.robot = robot
        self.n = 0

    @property
    def engine(self) -> Any:
        return self.app.engines[ROOM]

    @property
    def sink(self) -> AlertSink:
        return next(s for s in self.app.dispatcher.sinks if isinstance(s, AlertSink))

    async def event(self, kind: EventKind, text: str = "", **kw: Any) -> Event:
        self.n += 1
        now = self.clock.now_ms()
        ev = Event("douyin", ROOM, kind, now, now, msg_id=f"m{self.n}", user_id=f"{self.n:016x}", text=text,
                   **kw)
        st = self.app.pipeline.state(ROOM)
        before = st.totals.events
        await self.app.pipeline.submit(ev)
        # Applied before the clock moves on: the pipeline judges its lag on this clock.
        await wait_for(lambda: st.totals.events > before)
        return ev

    def messages(self) -> list[str]:
        return [self.robot.text_of(r.body) for r in self.robot.accepted]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    clock = ManualClock(at_cst(1, 20, 0))  # an evening show
    async with FakeRobot("webhook", now_ms=clock.now_ms, secret="hook-key-1") as robot:
        cfg = parse_config({
            "data_dir": str(tmp_path / "data"),
            "screen": {"enabled": False},
            "status": {"terminal": False},
            # Ticks are driven by hand below; the live ticker's first wall-clock tick is a minute away.
            "advisors": {"tick_s": 60},
            "alerts": {
                "robots": [{"name": "ops", "kind": "webhook", "url": robot.url, "secret": "hook-key-1"}],
                "quiet_hours": "23:30-08:00", "flush_timeout_s": 1.0,
            },
            "rooms": [{"name": ROOM, "sources": [{"kind": "replay", "path": str(empty)}]}],
        })
        app = App(cfg, clock=clock, out=io.StringIO())
        task = asyncio.create_task(app.run())
        try:
            await wait_for(lambda: app.dispatcher._started)
            yield Harness(app, clock, robot)
        finally:
            app.request_stop()
            await task


async def test_answer_card_arrives_on_new_data_without_a_tick(harness: Harness) -> None:
    h = harness
    questions = []
    for text in ("160斤穿什么码", "今天好漂亮", "150斤能穿吗", "有没有XL码"):
        h.clock.advance(0.7)
        questions.append(await h.event(EventKind.CHAT, text))
    tipping = questions[-1]
    await wait_for(lambda: any(s.kind is SuggestionKind.ANSWER_CARD for s in h.engine.pending))
    (card,) = [s for s in h.engine.pending if s.kind is SuggestionKind.ANSWER_CARD]
    assert h.engine.ticks == 0  # no advisor tick ran: the pipeline hook offered it
    assert card.topic == "size_fit" and card.data["title"] == "尺码怎么选"
    assert 0 <= card.created_ts - tipping.received_ts <= 3_000
    # Dispatched like any suggestion: the store has it (and the screen would).
    store = h.app.store
    assert store is not None
    await wait_for(lambda: ROOM in h.app.pipeline.sessions and any(
        r["id"] == card.id for r in store.suggestions(h.app.pipeline.sessions[ROOM])))
    assert h.app.states[ROOM].suggestions[-1].id == card.id


async def test_pending_suggestion_escalates_to_the_chat_robot(harness: Harness) -> None:
    h = harness
    await h.event(EventKind.CHAT, "主播好")
    await h.app._advisor_tick(h.clock.now_ms())
    h.clock.advance(270)  # the first coupon is announced 30 s before its 300 s cadence
    await h.app._advisor_tick(h.clock.now_ms())
    coupon = next(s for s in h.engine.pending if s.kind is SuggestionKind.COUPON)
    h.clock.advance(15)
    await h.app._advisor_tick(h.clock.now_ms())
    esc = next(s for s in h.app.states[ROOM].suggestions
               if s.rule == "escalation" and s.data["original_id"] == coupon.id)
    await wait_for(lambda: any(esc.id[:6] in m for m in h.messages()))
    text = next(m for m in h.messages() if esc.id[:6] in m)
    assert "建议未处理" in text  # the rule's title in the chat
    assert "未处理「发券」建议" in text and coupon.text in text
    assert coupon.reason.split(",")[0] in text  # the original's reason travels with it


async def test_quiet_hours_never_silence_a_live_room(harness: Harness) -> None:
    h = harness
    h.clock.set(at_cst(1, 23, 0))
    await h.event(EventKind.SYSTEM, event="live_start")  # 23:00: a late show starts
    await wait_for(lambda: h.app.states[ROOM].live is True)

    def alert(i: int) -> Suggestion:
        now = h.clock.now_ms()
        return Suggestion(
            id=make_suggestion_id(ROOM, "alert", now, f"q{i}"), room=ROOM, kind=SuggestionKind.ALERT,
            created_ts=now, expires_ts=now + 60_000, text=f"负面弹幕激增 {i}", reason="近60秒 40% 负面",
            severity=Severity.WARNING, rule="negative_surge",
        )

    h.clock.set(at_cst(2, 0, 30))  # past midnight, inside 23:30-08:00
    assert h.app._room_is_live(ROOM) is True
    live_alert = alert(1)
    await h.app.dispatcher.dispatch([live_alert])
    await wait_for(lambda: any(live_alert.id[:6] in m for m in h.messages()))
    # The show ends; quiet hours apply again.
    await h.event(EventKind.SYSTEM, event="live_end")
    await wait_for(lambda: h.app.states[ROOM].live is False)
    assert h.app._room_is_live(ROOM) is False
    quiet_alert = alert(2)
    await h.app.dispatcher.dispatch([quiet_alert])
    await h.sink.wait_idle()
    assert not any(quiet_alert.id[:6] in m for m in h.messages())
    assert [d.alert_id for d in h.sink.outbox.deliveries()] == [live_alert.id]  # kept, never sent


async def test_checklist_tick_reaches_the_engine_and_the_store(harness: Harness) -> None:
    h = harness
    await h.event(EventKind.CHAT, "主播好")
    await wait_for(lambda: ROOM in h.app.pipeline.sessions)
    actions = RoomActions(h.app.states, clock=h.clock, store=h.app.store, sessions=h.app.pipeline.sessions,
                          engine_for=h.app._engine_for)
    def action(item: str) -> dict[str, Any]:
        return parse_message(f'{{"type": "action", "action": "check_item", "item": "{item}"}}').as_dict()

    msg = action("人设") | {"room": ROOM}
    assert await actions(ROOM, msg) == {"ok": True, "item": "人设", "done": True}
    bad = action("唱歌") | {"room": ROOM}
    assert await actions(ROOM, bad) == {"ok": False, "error": "rejected", "message": "开场清单里没有「唱歌」"}
    opening = h.engine.status(h.clock.now_ms())["timing"]["opening"]
    assert [c["name"] for c in opening["checklist"] if c["done"]] == ["人设"]
    store = h.app.store
    assert store is not None
    marks = store.marks(h.app.pipeline.sessions[ROOM], "checklist")
    assert marks == [{"kind": "checklist", "key": "人设", "ts": h.clock.now_ms(), "data": {"done": True}}]


def test_check_item_messages_are_parsed_strictly() -> None:
    a = parse_message('{"type": "action", "action": "check_item", "item": "场景", "done": false, "req": "r"}')
    assert (a.action, a.item, a.done, a.req) == (ActionName.CHECK_ITEM, "场景", False, "r")
    assert a.as_dict() == {"type": "action", "action": "check_item", "room": None, "id": None, "item": "场景",
                           "done": False}
    with pytest.raises(ProtocolError, match="check_item needs an item") as err:
        parse_message('{"type": "action", "action": "check_item"}')
    assert err.value.key == "item"
    with pytest.raises(ProtocolError, match="done must be true or false"):
        parse_message('{"type": "action", "action": "check_item", "item": "人设", "done": "yes"}')
    with pytest.raises(ProtocolError, match="accept takes no item"):
        parse_message('{"type": "action", "action": "accept", "id": "ab12", "item": "人设"}')
