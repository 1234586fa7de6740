"""Control actions from the screen, applied to RoomState and the store (or routed to an advisor engine).

`RoomActions` is the ScreenServer's action handler in `App`. When an advisor engine runs for the room,
the action goes to it (it owns coupon timing, prompt cadence and segments); otherwise the decisions
that need no engine are applied here: a suggestion's state, a snooze and a hand-picked segment.
Either way the store records what the host or field control decided, so replay and reports see it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from bot.advisors.base import Suggestion, SuggestionState
from bot.clock import Clock
from bot.outputs.screen.protocol import SNOOZE_DEFAULT_S, ActionName

if TYPE_CHECKING:
    from bot.outputs.store import Store
    from bot.state import RoomState

log = logging.getLogger(__name__)


class AdvisorEngineLike(Protocol):
    """The action side of bot.advisors.engine.AdvisorEngine (what the control view can ask of it)."""

    def accept(self, suggestion_id: str, now_ms: int | None = None) -> Suggestion | None: ...
    def dismiss(self, suggestion_id: str, now_ms: int | None = None) -> Suggestion | None: ...
    def snooze(
        self, suggestion_id: str, seconds: float = ..., now_ms: int | None = None
    ) -> Suggestion | None: ...
    def coupon_dropped(
        self, suggestion_id: str | None = None, now_ms: int | None = None
    ) -> Suggestion | None: ...
    def pause_prompts(self, now_ms: int | None = None, *, seconds: float | None = None) -> None: ...
    def resume_prompts(self, now_ms: int | None = None) -> None: ...
    def set_segment(self, name: str, now_ms: int | None = None) -> None: ...
    def check_item(self, item: str, now_ms: int | None = None, *, done: bool = True) -> None: ...


EngineLookup = Callable[[str], "AdvisorEngineLike | None"]
"""room → the advisor engine running it, or None."""

_EngineCall = Callable[[AdvisorEngineLike, dict[str, Any], int], "Suggestion | None"]

_ENGINE_CALLS: dict[ActionName, _EngineCall] = {
    ActionName.ACCEPT: lambda e, a, now: e.accept(str(a["id"]), now),
    ActionName.DISMISS: lambda e, a, now: e.dismiss(str(a["id"]), now),
    ActionName.SNOOZE: lambda e, a, now: e.snooze(
        str(a["id"]), float(a.get("seconds") or SNOOZE_DEFAULT_S), now
    ),
    ActionName.COUPON_DROPPED: lambda e, a, now: e.coupon_dropped(a.get("id"), now),
    ActionName.PAUSE_PROMPTS: lambda e, a, now: e.pause_prompts(now),
    ActionName.RESUME_PROMPTS: lambda e, a, now: e.resume_prompts(now),
    ActionName.SET_SEGMENT: lambda e, a, now: e.set_segment(str(a["segment"]), now),
    ActionName.CHECK_ITEM: lambda e, a, now: e.check_item(
        str(a["item"]), now, done=bool(a.get("done", True))
    ),
}
_ON_SUGGESTION = frozenset({ActionName.ACCEPT, ActionName.DISMISS, ActionName.SNOOZE})


def _engine_refusal_zh(name: ActionName, action: dict[str, Any], err: ValueError) -> str:
    if name is ActionName.SET_SEGMENT:
        return f"运行单里没有段落「{action.get('segment')}」"
    if name is ActionName.CHECK_ITEM:
        return f"开场清单里没有「{action.get('item')}」"
    return f"建议引擎拒绝了该操作：{err}"


_DECIDED: dict[ActionName, SuggestionState] = {
    ActionName.ACCEPT: SuggestionState.ACCEPTED, ActionName.DISMISS: SuggestionState.DISMISSED,
}


def _fail(error: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": error, "message": message}


class RoomActions:
    """The `(room, action) -> result` handler of the screen hub."""

    def __init__(
        self,
        states: Mapping[str, RoomState],
        *,
        clock: Clock,
        store: Store | None = None,
        sessions: Mapping[str, str] | None = None,
        engine_for: EngineLookup | None = None,
    ) -> None:
        self._states = states
        self._clock = clock
        self._store = store
        self._sessions = sessions if sessions is not None else {}
        self._engine_for = engine_for or (lambda room: None)
        self._table: dict[ActionName, Callable[[RoomState, dict[str, Any], int], Any]] = {
            ActionName.ACCEPT: self._decide,
            ActionName.DISMISS: self._decide,
            ActionName.SNOOZE: self._snooze,
            ActionName.SET_SEGMENT: self._set_segment,
            ActionName.COUPON_DROPPED: self._needs_engine,
            ActionName.PAUSE_PROMPTS: self._needs_engine,
            ActionName.RESUME_PROMPTS: self._needs_engine,
            ActionName.CHECK_ITEM: self._needs_engine,
        }

    async def __call__(self, room: str, action: dict[str, Any]) -> dict[str, Any]:
        state = self._states.get(room)
        if state is None:
            return _fail("unknown_room", "没有这个直播间")
        name = ActionName(action["action"])
        now = self._clock.now_ms()
        engine = self._engine_for(room)
        if engine is not None:
            return await self._via_engine(engine, state, name, action, now)
        result: dict[str, Any] = await self._table[name](state, action, now)
        return result

    # -- routing to an advisor engine -------------------------------------------------------------

    async def _via_engine(
        self, engine: AdvisorEngineLike, state: RoomState, name: ActionName, action: dict[str, Any], now: int
    ) -> dict[str, Any]:
        sid = action.get("id")
        try:
            out = _ENGINE_CALLS[name](engine, action, now)
        except ValueError as e:
            # The engine refuses what its run-sheet does not know (e.g. a segment name typed by hand).
            return _fail("rejected", _engine_refusal_zh(name, action, e))
        if isinstance(out, Suggestion):
            self._remember(state, out)
            await self._record(state.room, out, now)
            result: dict[str, Any] = {"ok": True, "suggestion": out.to_json()}
            until = out.data.get("snoozed_until")
            if until is not None:
                result["snoozed_until"] = until
            return result
        if name in _ON_SUGGESTION and out is None:
            # Unknown to the engine: explain why (already decided elsewhere, expired, or never existed).
            found = self._find(state, str(sid))
            if found is None:
                return _fail("not_found", "建议不存在或已被清理")
            s = found[1]
            if s.state is _DECIDED.get(name):
                return {"ok": True, "suggestion": s.to_json(), "unchanged": True}
            return _fail("already_decided", f"该建议已是「{_STATE_ZH[s.state]}」状态") | {
                "suggestion": s.to_json()
            }
        result = {"ok": True}
        if name is ActionName.SET_SEGMENT:
            result["segment"] = action["segment"]
            # Kept so a resumed session's advisors continue in this segment (AdvisorEngine.resume).
            await self._mark(state.room, "segment", str(action["segment"]), now, {})
        elif name is ActionName.COUPON_DROPPED and out is None:
            # The host's own drop (no suggestion confirmed): kept so a resume counts it against the budget.
            await self._mark(state.room, "coupon", str(now), now, {})  # one mark per drop (latest per key wins)
        elif name is ActionName.CHECK_ITEM:
            done = bool(action.get("done", True))
            result |= {"item": action["item"], "done": done}
            await self._mark(state.room, "checklist", str(action["item"]), now, {"done": done})
        return result

    # -- without an engine ------------------------------------------------------------------------

    def _find(self, state: RoomState, sid: str) -> tuple[int, Suggestion] | None:
        for i in range(len(state.suggestions) - 1, -1, -1):
            s = state.suggestions[i]
            if s.id == sid:
                return i, s
        return None

    def _remember(self, state: RoomState, s: Suggestion) -> None:
        found = self._find(state, s.id)
        if found is None:
            state.record_suggestion(s)
        else:
            state.suggestions[found[0]] = s

    async def _record(self, room: str, s: Suggestion, now: int) -> None:
        """Persist the new state; a suggestion the store has not seen yet is saved whole."""
        store = self._store
        sid = self._sessions.get(room)
        if store is None or sid is None:
            return

        def write() -> None:
            if not store.set_suggestion_state(sid, s.id, str(s.state), now):
                store.save_suggestion(sid, s)
                store.set_suggestion_state(sid, s.id, str(s.state), now)

        # SQLite commits can take milliseconds: keep them off the event loop.
        await asyncio.to_thread(write)

    async def _mark(self, room: str, kind: str, key: str, now: int, data: dict[str, Any]) -> None:
        """Persist a field-control decision that is not a suggestion (a checklist tick)."""
        store = self._store
        sid = self._sessions.get(room)
        if store is None or sid is None:
            return
        await asyncio.to_thread(store.save_mark, sid, kind, key, now, data)

    async def _decide(self, state: RoomState, action: dict[str, Any], now: int) -> dict[str, Any]:
        found = self._find(state, str(action["id"]))
        if found is None:
            return _fail("not_found", "建议不存在或已被清理")
        i, s = found
        target = _DECIDED[ActionName(action["action"])]
        if s.state is target:
            return {"ok": True, "suggestion": s.to_json(), "unchanged": True}
        if s.state is not SuggestionState.PENDING:
            return _fail("already_decided", f"该建议已是「{_STATE_ZH[s.state]}」状态")
        if s.expires_ts and now > s.expires_ts:
            expired = dataclasses.replace(s, state=SuggestionState.EXPIRED)
            state.suggestions[i] = expired
            await self._record(state.room, expired, now)
            return _fail("expired", "建议已过期") | {"suggestion": expired.to_json()}
        data = {k: v for k, v in s.data.items() if k != "snoozed_until"}
        decided = dataclasses.replace(s, state=target, data=data)
        state.suggestions[i] = decided
        await self._record(state.room, decided, now)
        return {"ok": True, "suggestion": decided.to_json()}

    async def _snooze(self, state: RoomState, action: dict[str, Any], now: int) -> dict[str, Any]:
        found = self._find(state, str(action["id"]))
        if found is None:
            return _fail("not_found", "建议不存在或已被清理")
        i, s = found
        if s.state is not SuggestionState.PENDING:
            return _fail("already_decided", f"该建议已是「{_STATE_ZH[s.state]}」状态")
        until = now + int(action.get("seconds") or SNOOZE_DEFAULT_S) * 1000
        # Snoozed stays pending (nothing was decided); the pages hide it until `snoozed_until`.
        snoozed = dataclasses.replace(s, data={**s.data, "snoozed_until": until})
        state.suggestions[i] = snoozed
        return {"ok": True, "suggestion": snoozed.to_json(), "snoozed_until": until}

    async def _set_segment(self, state: RoomState, action: dict[str, Any], now: int) -> dict[str, Any]:
        segment = str(action["segment"])
        previous = state.segment
        state.segment = segment
        log.info("room=%s segment set by hand: %s → %s", state.room, previous, segment)
        return {"ok": True, "segment": segment, "previous": previous}

    async def _needs_engine(self, state: RoomState, action: dict[str, Any], now: int) -> dict[str, Any]:
        return _fail("no_engine", "建议引擎未启用，无法执行该操作")


_STATE_ZH = {
    SuggestionState.PENDING: "待处理",
    SuggestionState.ACCEPTED: "已采纳",
    SuggestionState.DISMISSED: "已忽略",
    SuggestionState.EXPIRED: "已过期",
}
