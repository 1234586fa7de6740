"""Suggestion: the one record type for everything the advisors say (DESIGN.md *Interfaces*)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class SuggestionKind(StrEnum):
    SCRIPT_SWITCH = "script_switch"
    COUPON = "coupon"
    PROMPT = "prompt"
    ALERT = "alert"
    ANSWER_CARD = "answer_card"
    """A canned answer (run-sheet `answer_cards`) for field control to paste or the host to read out."""


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class SuggestionState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"
    EXPIRED = "expired"


SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def make_suggestion_id(room: str, kind: str, created_ts: int, key: str = "") -> str:
    """Stable short id (same input → same id, so replays are reproducible); shown as `#xxxx` in alerts."""
    digest = hashlib.sha1(f"{room}|{kind}|{created_ts}|{key}".encode()).hexdigest()
    return digest[:8]


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Something an advisor tells the host or field control, with its reason and evidence."""

    id: str
    room: str
    kind: SuggestionKind
    created_ts: int
    """Unix ms (event time in replay)."""
    expires_ts: int
    text: str
    """Action for the host, Chinese."""
    reason: str
    """Why, with numbers, Chinese."""
    examples: tuple[str, ...] = ()
    confidence: float = 1.0
    needs_review: bool = False
    severity: Severity = Severity.INFO
    segment: str | None = None
    topic: str | None = None
    rule: str | None = None
    """Alert rule name (negative_surge, confusion_surge, rate_collapse, distrust, source_down, ...)."""
    state: SuggestionState = SuggestionState.PENDING
    data: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Kind-specific numbers (countdown target, prompt text, counts) for screens and reports."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room": self.room,
            "kind": str(self.kind),
            "created_ts": self.created_ts,
            "expires_ts": self.expires_ts,
            "text": self.text,
            "reason": self.reason,
            "examples": list(self.examples),
            "confidence": round(self.confidence, 4),
            "needs_review": self.needs_review,
            "severity": str(self.severity),
            "segment": self.segment,
            "topic": self.topic,
            "rule": self.rule,
            "state": str(self.state),
            "data": self.data,
        }
