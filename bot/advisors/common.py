"""What the advisors share: their explicit memory, the promotional-push ledger, wording and confidence.

Advisors are pure in the sense DESIGN.md asks for: everything they remember between ticks lives in an
`AdvisorMemory` that the engine owns and passes in, and time is always the `now` argument. Two engines fed
the same events and ticks hold equal memories and say the same things, which is what makes replay
deterministic.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.advisors.base import Severity, Suggestion, SuggestionKind, make_suggestion_id
from bot.state import newest_in_window
from nlp.topics import TOPIC_LABELS as TOPIC_LABELS  # re-exported for the advisors

if TYPE_CHECKING:
    from bot.state import RecentComment, RoomState

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


class Advisor(Protocol):
    """One advisor: reads the room and its own memory at `now`, returns new suggestions."""

    def advise(self, state: RoomState, now: int, memory: AdvisorMemory) -> list[Suggestion]: ...


# -- memory ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class SwitchMemory:
    firing_since: dict[str, int] = field(default_factory=dict)
    """Candidate segment → when its triggers started firing without a break."""
    last_suggested: dict[str, int] = field(default_factory=dict)
    suppressed_until: dict[str, int] = field(default_factory=dict)
    pending_id: str | None = None
    pending_target: str | None = None
    switches: list[tuple[int, str, str]] = field(default_factory=list)
    """(ts, from, to) of every segment change, for reports and the no-flapping tests."""
    need_low_since: int | None = None
    """Since when the current segment answers too few of the viewers' questions (need match)."""


@dataclass(slots=True)
class PendingDrop:
    id: str
    created_ts: int
    due_ts: int
    item: str
    trigger: str


@dataclass(slots=True)
class CouponMemory:
    drops: list[int] = field(default_factory=list)
    """Times of coupon drops (confirmed, or due in auto mode), ascending."""
    pending: PendingDrop | None = None
    """confirm mode: a drop announced and not yet confirmed."""
    next_due: int | None = None
    """When the base cadence wants the next drop."""
    item_index: int = 0
    milestone_next: dict[int, int] = field(default_factory=dict)
    """Milestone index → the session comment count at which it fires next."""
    pull: tuple[str, int, dict[str, Any]] | None = None
    """A trigger that pulled the next drop forward: (name, when, evidence); latched until that drop."""
    snoozed_until: int = 0
    upcoming_due: int | None = None
    """This tick's due time of the next drop when only timing holds it back (prompts keep clear of it)."""
    issued: list[tuple[int, int]] = field(default_factory=list)
    """(created_ts, due_ts) of every coupon suggestion; prompts keep clear of the due times."""


@dataclass(slots=True)
class PromptRecord:
    id: str
    ts: int
    text: str
    keywords: tuple[str, ...]
    idle: bool
    pool: str
    responses: int | None = None
    """Comments matching the prompt within the response window; None until the window has closed."""
    window_comments: int | None = None
    dismissed: bool = False


@dataclass(slots=True)
class PromptMemory:
    history: deque[PromptRecord] = field(default_factory=lambda: deque(maxlen=5000))
    last_ts: int | None = None
    comments_at_last: int = 0
    paused_until: int | None = None
    """None = running; a time = paused until then (`PAUSED_FOREVER` until resumed)."""
    cursor: dict[str, int] = field(default_factory=dict)
    """Round-robin position per pool selection (idle / regular, per segment)."""
    last_used: dict[str, int] = field(default_factory=dict)
    """Prompt text → when it was last used."""


PAUSED_FOREVER = 2**62


@dataclass(slots=True)
class AlertRuleMemory:
    last_sent: int | None = None
    active: bool = False
    episodes: int = 0
    """Times the rule started firing since the last alert (aggregated into the next one)."""
    peak: float = 0.0
    severity: Severity = Severity.INFO
    examples: list[str] = field(default_factory=list)
    muted_until: int = 0
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class TimingMemory:
    overrun_stint: int | None = None
    """`segment_since` of the stint whose overrun was already nudged (once per stint)."""
    rhythm_stint: tuple[int, int] | None = None
    """(segment_since, how many rhythm nudges) of the current stint."""
    opening_warned: bool = False
    session_warned: set[str] = field(default_factory=set)
    """'near' / 'over' once each."""
    checked: dict[str, int] = field(default_factory=dict)
    """Opening checklist item → when field control ticked it off."""


@dataclass(slots=True)
class CardMemory:
    pending: dict[str, str] = field(default_factory=dict)
    """Topic → id of its answer card waiting for field control."""
    last_offered: dict[str, int] = field(default_factory=dict)
    seen_questions: int = -1
    """RoomState.totals.confused at the last look (new data only re-evaluates when questions arrived)."""


@dataclass(slots=True)
class VoteRecord:
    id: str
    """The prompt suggestion's id (its data carries the result)."""
    ts: int
    ends_ts: int
    prompt: str
    options: tuple[tuple[str, tuple[str, ...]], ...]
    """(label, keywords) per option."""
    counts: tuple[int, ...] | None = None
    """Final count per option once the window has closed."""


@dataclass(slots=True)
class AdvisorMemory:
    """Everything the advisors remember between ticks; owned by the engine, one per room."""

    started_ts: int | None = None
    segment: str | None = None
    segment_since: int = 0
    promos: list[int] = field(default_factory=list)
    """Times of promotional pushes (coupon drops, product/price announcements), ascending."""
    switch: SwitchMemory = field(default_factory=SwitchMemory)
    coupons: CouponMemory = field(default_factory=CouponMemory)
    prompts: PromptMemory = field(default_factory=PromptMemory)
    alerts: dict[str, AlertRuleMemory] = field(default_factory=dict)
    timing: TimingMemory = field(default_factory=TimingMemory)
    cards: CardMemory = field(default_factory=CardMemory)
    votes: deque[VoteRecord] = field(default_factory=lambda: deque(maxlen=200))
    escalated: dict[str, str] = field(default_factory=dict)
    """Original suggestion id → id of its escalation alert."""

    def add_promo(self, ts: int) -> None:
        bisect.insort(self.promos, ts)

    def remove_promo(self, ts: int) -> None:
        i = bisect.bisect_left(self.promos, ts)
        if i < len(self.promos) and self.promos[i] == ts:
            del self.promos[i]

    def forget_before(self, ts: int) -> None:
        """Drop push times nothing can compare against any more (keeps memory bounded)."""
        cut = bisect.bisect_left(self.promos, ts)
        if cut:
            del self.promos[:cut]


# -- caps ------------------------------------------------------------------------------------------


def fits_cap(times: Sequence[int], t: int, window_ms: int, cap: int) -> bool:
    """Would adding `t` keep every half-open window [s, s + window_ms) at or below `cap` events?

    `times` is ascending. Only windows containing `t` change, and the fullest of those starts at one
    of the events in (t - window_ms, t] (or at t itself).
    """
    if cap <= 0:
        return False
    lo = bisect.bisect_right(times, t - window_ms)
    hi = bisect.bisect_left(times, t + window_ms)
    near = list(times[lo:hi])
    bisect.insort(near, t)
    for i, start in enumerate(near):
        if start > t:
            break
        end = bisect.bisect_left(near, start + window_ms)
        if end - i > cap:
            return False
    return True


def count_in(times: Iterable[int], lo: int, hi: int) -> int:
    """Events with lo < ts <= hi."""
    return sum(1 for x in times if lo < x <= hi)


# -- evidence --------------------------------------------------------------------------------------


def evidence_confidence(
    *, comments: int, min_comments: int, low_confidence: int = 0, strength: float = 1.0
) -> float:
    """Confidence of a suggestion that rests on analysed comments.

    Little data (near `min_comments`), a reading just at its threshold, and a high share of low-confidence
    analyses each lower it; at twice the minimum data, 1.5× the threshold and clean analyses it is 1.
    """
    if comments <= 0:
        return 0.5
    if min_comments > 0:
        data = min(1.0, 0.75 + 0.25 * (comments - min_comments) / min_comments)
    else:
        data = 1.0
    margin = min(1.0, 0.9 + 0.2 * max(0.0, strength - 1.0))
    quality = 1.0 - 0.4 * min(1.0, low_confidence / comments)
    return round(max(0.0, min(1.0, data * margin * quality)), 4)


def pct(x: float) -> str:
    return f"{x:.0%}"


def clock_text(ms: int) -> str:
    """A duration as 4分30秒 / 45秒."""
    s = max(0, round(ms / 1000))
    return f"{s // 60}分{s % 60:02d}秒" if s >= 60 else f"{s}秒"


def recent(state: RoomState, seconds: int, now: int) -> list[RecentComment]:
    """Recent chat lines with lo < ts <= now, oldest first (bounded by RoomState.recent_comments)."""
    out = list(recent_newest_first(state, seconds, now))
    out.reverse()
    return out


def recent_newest_first(state: RoomState, seconds: int, now: int) -> Iterator[RecentComment]:
    """`recent` newest first and lazily: picking three examples stops after a few lines, not thousands."""
    return newest_in_window(state.recent_comments, now - seconds * 1000, now)


def pick_examples(texts: Iterable[str], limit: int = 3) -> tuple[str, ...]:
    """Distinct example comments, most recent first, trimmed for a host screen."""
    out: list[str] = []
    for t in texts:
        t = t.strip()
        if t and t not in out:
            out.append(t[:40])
        if len(out) >= limit:
            break
    return tuple(out)


def make(
    *,
    room: str,
    kind: SuggestionKind,
    now: int,
    ttl_s: float,
    text: str,
    reason: str,
    key: str,
    review_below: float,
    confidence: float = 1.0,
    examples: tuple[str, ...] = (),
    severity: Severity = Severity.INFO,
    segment: str | None = None,
    topic: str | None = None,
    rule: str | None = None,
    data: dict[str, Any] | None = None,
    expires_ts: int | None = None,
) -> Suggestion:
    confidence = round(confidence, 4)
    return Suggestion(
        id=make_suggestion_id(room, str(kind), now, key),
        room=room,
        kind=kind,
        created_ts=now,
        expires_ts=expires_ts if expires_ts is not None else now + round(ttl_s * 1000),
        text=text,
        reason=reason,
        examples=examples,
        confidence=confidence,
        needs_review=confidence < review_below,
        severity=severity,
        segment=segment,
        topic=topic,
        rule=rule,
        data=data or {},
    )
