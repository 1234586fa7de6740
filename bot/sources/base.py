"""The Source protocol, source status and the reconnect policy shared by every live source."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

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
        return cap / 2 + self.rng.uniform(0, cap / 2)

    def reset(self) -> None:
        self.retry_count = 0
