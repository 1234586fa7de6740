"""The host-screen websocket protocol, sans I/O (DESIGN.md *Interfaces*: host screen).

Server → page (text frames, one JSON object each)::

    {"type": "snapshot", "server_ms": ..., "rooms": {room: RoomState.snapshot() + "advisor"?}}   2 Hz
    {"type": "suggestion", **Suggestion.to_json()}                                      immediately
    {"type": "status", "server_ms": ..., ...}            hello on connect, notices, room changes
    {"type": "action_result", "ok": bool, "action": ..., "room": ..., "id": ..., "req": ..., ...}
    {"type": "error", "error": code, "message": Chinese text}          a page message was rejected

Page → server::

    {"type": "action",
     "action": "accept|dismiss|snooze|coupon_dropped|pause_prompts|resume_prompts|set_segment|check_item",
     "room": ..., "id": ..., "segment": ..., "seconds": ..., "item": ..., "done": ..., "req": ...}

`parse_message` is the only place that reads the inbound layout. It is strict (unknown keys, wrong
types and over-long strings are errors), because the control socket changes what a live room does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.errors import ProtocolError

MAX_MESSAGE_BYTES = 4096
"""Largest inbound frame; aiohttp closes the socket with 1009 (message too big) above this."""

MAX_FIELD_CHARS = 64
SNOOZE_DEFAULT_S = 120
SNOOZE_RANGE_S = (10, 1800)


class ActionName(StrEnum):
    ACCEPT = "accept"
    DISMISS = "dismiss"
    SNOOZE = "snooze"
    COUPON_DROPPED = "coupon_dropped"
    PAUSE_PROMPTS = "pause_prompts"
    RESUME_PROMPTS = "resume_prompts"
    SET_SEGMENT = "set_segment"
    CHECK_ITEM = "check_item"
    """Tick off (done=false: untick) an item of the opening checklist (人设 / 场景 / 核心卖点)."""


NEEDS_ID = frozenset({ActionName.ACCEPT, ActionName.DISMISS, ActionName.SNOOZE})
"""Actions on one suggestion: `id` is required."""

_KEYS = frozenset({"type", "action", "room", "id", "segment", "seconds", "item", "done", "req"})


@dataclass(frozen=True, slots=True)
class Action:
    """One validated control action from a page."""

    action: ActionName
    room: str | None = None
    """None when the page did not pick a room (the server fills in the only room, or refuses)."""
    id: str | None = None
    """Suggestion id (accept / dismiss / snooze; optional for coupon_dropped)."""
    segment: str | None = None
    """Target segment of set_segment."""
    seconds: int | None = None
    """Snooze length."""
    item: str | None = None
    """Checklist item of check_item."""
    done: bool = True
    """check_item: tick (true) or untick (false)."""
    req: str | None = None
    """Page-chosen request id, echoed in the action_result so the page can match it."""

    def as_dict(self) -> dict[str, Any]:
        """What the action handler receives (DESIGN.md page → server shape, validated)."""
        out: dict[str, Any] = {"type": "action", "action": str(self.action), "room": self.room, "id": self.id}
        if self.segment is not None:
            out["segment"] = self.segment
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.action is ActionName.CHECK_ITEM:
            out["item"] = self.item
            out["done"] = self.done
        return out


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{key} must be a string", key=key)
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_FIELD_CHARS:
        raise ProtocolError(f"{key} is longer than {MAX_FIELD_CHARS} characters", key=key)
    if any(ord(c) < 32 for c in value):
        raise ProtocolError(f"{key} holds control characters", key=key)
    return value


def parse_message(text: str) -> Action:
    """One inbound text frame → Action; anything else raises ProtocolError naming the bad key."""
    if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("message is not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ProtocolError(f"unknown key {unknown[0]!r}", key=unknown[0])
    if data.get("type") != "action":
        raise ProtocolError(f"unsupported message type {data.get('type')!r}", key="type")
    raw_action = data.get("action")
    try:
        action = ActionName(str(raw_action))
    except ValueError:
        raise ProtocolError(f"unknown action {raw_action!r}", key="action") from None
    sid = _opt_str(data, "id")
    if action in NEEDS_ID and sid is None:
        raise ProtocolError(f"{action} needs the suggestion id", key="id")
    segment = _opt_str(data, "segment")
    if action is ActionName.SET_SEGMENT and segment is None:
        raise ProtocolError("set_segment needs a segment", key="segment")
    seconds: int | None = None
    if action is ActionName.SNOOZE:
        raw = data.get("seconds", SNOOZE_DEFAULT_S)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ProtocolError("seconds must be a number", key="seconds")
        lo, hi = SNOOZE_RANGE_S
        if not lo <= raw <= hi:
            raise ProtocolError(f"seconds must be within {lo}..{hi}", key="seconds")
        seconds = int(raw)
    elif "seconds" in data:
        raise ProtocolError(f"{action} takes no seconds", key="seconds")
    item = _opt_str(data, "item")
    done = data.get("done", True)
    if action is ActionName.CHECK_ITEM:
        if item is None:
            raise ProtocolError("check_item needs an item", key="item")
        if not isinstance(done, bool):
            raise ProtocolError("done must be true or false", key="done")
    elif "item" in data or "done" in data:
        raise ProtocolError(f"{action} takes no item", key="item" if "item" in data else "done")
    return Action(
        action=action, room=_opt_str(data, "room"), id=sid, segment=segment, seconds=seconds,
        item=item, done=done, req=_opt_str(data, "req"),
    )


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON with Chinese kept readable (smaller frames than \\u escapes)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=str)
