"""The Source protocol, source status and the reconnect policy shared by every live source."""

from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bot.events import Event

Emit = Callable[[Event], Awaitable[None]]
"""Where a source hands its Events. Awaiting it applies backpressure only in replay (block policy);
live pipelines never block a source (see bot.pipeline overflow policies)."""


class SourceState(StrEnum):
    IDLE = "idle"  # built, not started
    CONNECTING = "connecting"  # first connection attempt
    CONNECTED = "connected"  # receiving
    RECONNECTING = "reconnecting"  # lost the connection, backing off
    STOPPED = "stopped"  # stop() was called
    FINISHED = "finished"  # finite input (replay) fully read
    FAILED = "failed"  # gave up; a human must fix something


@dataclass(slots=True)
class SourceStatus:
    """Live status of one source; owned and mutated only by that source's task."""

    name: str
    platform: str
    room: str
    state: SourceState = SourceState.IDLE
    messages: int = 0
    errors: int = 0
    reconnects: int = 0
    last_message_ms: int | None = None
    down_since_ms: int | None = None
    last_error: str | None = None
    unknown_kinds: Counter[str] = field(default_factory=Counter)

    def as_dict(self, now_ms: int) -> dict[str, object]:
        age = None if self.last_message_ms is None else max(0, now_ms - self.last_message_ms) / 1000
        return {
            "name": self.name,
            "platform": self.platform,
            "room": self.room,
            "state": str(self.state),
            "messages": self.messages,
            "errors": self.errors,
            "reconnects": self.reconnects,
            "last_message_age_s": age,
            "last_error": self.last_error,
            "unknown_kinds": dict(self.unknown_kinds),
        }


class Source(Protocol):
    status: SourceStatus

    async def run(self, emit: Emit) -> None:
        """Produce Events until the input ends or stop() is called."""
        ...

    def stop(self) -> None:
        """Ask the source to stop; run() returns soon after."""
        ...


@dataclass(slots=True)
class ReconnectPolicy:
    """Exponential backoff with full jitter and two counters (blivedm ws_base.py).

    `retry_count` resets after one good message; `total_retry_count` never does.
    """

    base_s: float = 1.0
    max_s: float = 30.0
    retry_count: int = 0
    total_retry_count: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        self.retry_count += 1
        self.total_retry_count += 1
        cap = min(self.max_s, self.base_s * (2 ** min(self.retry_count - 1, 16)))
        return float(cap / 2 + self.rng.uniform(0, cap / 2))

    def reset(self) -> None:
        self.retry_count = 0


class RecentIds:
    """Bounded LRU of recently seen message ids per room; drops duplicates replayed after a reconnect."""

    __slots__ = ("_capacity", "_seen")

    def __init__(self, capacity: int = 2048) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._seen: dict[str, OrderedDict[str, None]] = {}

    def seen(self, room: str, msg_id: str | None) -> bool:
        """Record `msg_id` for `room`; True if it was already recorded. None is never a duplicate."""
        if msg_id is None:
            return False
        ids = self._seen.setdefault(room, OrderedDict())
        if msg_id in ids:
            ids.move_to_end(msg_id)
            return True
        ids[msg_id] = None
        if len(ids) > self._capacity:
            ids.popitem(last=False)
        return False


class RoomLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with `room=… platform=…` (STYLE.md *Logging*); built once per source."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return f"room={extra.get('room')} platform={extra.get('platform')} {msg}", kwargs


def room_logger(base: logging.Logger, *, room: str, platform: str) -> RoomLogger:
    return RoomLogger(base, {"room": room, "platform": platform})
