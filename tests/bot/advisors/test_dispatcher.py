from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path

import pytest

from bot.advisors.base import Suggestion, SuggestionKind, SuggestionState, make_suggestion_id
from bot.dispatcher import CallbackSink, Dispatcher, JsonlSink, StoreSink, suggestion_line
from bot.outputs.store import Store

T0 = 1_767_268_800_000


def suggestion(i: int, kind: SuggestionKind = SuggestionKind.PROMPT, room: str = "demo") -> Suggestion:
    return Suggestion(
        id=make_suggestion_id(room, str(kind), T0 + i, str(i)), room=room, kind=kind,
        created_ts=T0 + i * 1000, expires_ts=T0 + i * 1000 + 15_000, text=f"互动: 想要的扣{i}",
        reason="目标每分钟 4 次", confidence=0.9, segment="开场",
    )


class FailingSink:
    name = "broken"

    def __init__(self, fail: int = 10**9) -> None:
        self.calls = 0
        self.fail = fail

    async def start(self) -> None:
        raise OSError("cannot open")

    async def stop(self) -> None:
        return None

    async def send(self, item: Suggestion) -> None:
        self.calls += 1
        if self.calls <= self.fail:
            raise ConnectionError("robot down")


class HangingSink:
    name = "hanging"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, item: Suggestion) -> None:
        await asyncio.Event().wait()


async def test_one_failing_sink_never_blocks_the_others(caplog: pytest.LogCaptureFixture) -> None:
    got: list[str] = []
    broken = FailingSink(fail=3)
    items = [suggestion(i) for i in range(3)]
    with caplog.at_level(logging.INFO, logger="bot.dispatcher"):
        async with Dispatcher([broken, CallbackSink("screen", lambda s: got.append(s.id))]) as d:
            await d.dispatch(items)
            assert got == [s.id for s in items]
            assert d.failed["broken"] == 4  # start + three sends
            assert d.sent == {"screen": 3}
            await d.dispatch([suggestion(9)])  # the robot is back
            assert d.sent["broken"] == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "sink broken start failed" in errors[0].getMessage()
    assert any("sink broken works again after 4 failure(s)" in r.getMessage() for r in caplog.records)


async def test_a_hanging_sink_times_out_alone() -> None:
    got: list[str] = []
    d = Dispatcher([HangingSink(), CallbackSink("screen", lambda s: got.append(s.id))], timeout_s=0.05)
    await d.start()
    with pytest.raises(RuntimeError, match="already started"):
        await d.start()
    async with asyncio.timeout(5):
        await d.dispatch([suggestion(1)])
    assert got == [suggestion(1).id] and d.failed["hanging"] == 1
    await d.stop()


async def test_store_sink_waits_for_the_session_then_saves_and_updates(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        sessions: dict[str, str] = {}
        sink = StoreSink(store, sessions.get)
        a, b = suggestion(1), suggestion(2, SuggestionKind.COUPON)
        async with Dispatcher([sink]) as d:
            await d.dispatch([a])  # no session yet: buffered
            sessions["demo"] = store.start_session("demo", T0)
            await d.dispatch([b])
            accepted = dataclasses.replace(a, state=SuggestionState.ACCEPTED, data={"state_ts": T0 + 5000})
            await d.dispatch([accepted])
        rows = {r["id"]: r for r in store.suggestions(sessions["demo"])}
        assert set(rows) == {a.id, b.id}
        assert rows[a.id]["state"] == "accepted" and rows[a.id]["state_ts"] == T0 + 5000
        assert rows[b.id]["state"] == "pending" and rows[b.id]["kind"] == "coupon"
        assert rows[a.id]["text"] == "互动: 想要的扣1"


async def test_store_sink_keeps_what_it_cannot_store_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Store.open(tmp_path / "s.db") as store:
        sink = StoreSink(store, lambda room: None)
        await sink.start()
        await sink.send(suggestion(1))
        with caplog.at_level(logging.WARNING, logger="bot.dispatcher"):
            await sink.stop()
        assert "1 suggestion(s) not stored" in caplog.text


async def test_jsonl_sink_writes_each_suggestion_once(tmp_path: Path) -> None:
    path = tmp_path / "out" / "s.jsonl"
    sink = JsonlSink(path)
    a = suggestion(1)
    async with Dispatcher([sink]) as d:
        await d.dispatch([a, suggestion(2), dataclasses.replace(a, state=SuggestionState.EXPIRED)])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    obj = json.loads(lines[0])
    assert obj == {
        "ts": T0 + 1000, "id": a.id, "kind": "prompt", "segment": "开场", "text": "互动: 想要的扣1",
        "reason": "目标每分钟 4 次", "confidence": 0.9, "needs_review": False,
    }
    assert lines[0] == suggestion_line(a)
