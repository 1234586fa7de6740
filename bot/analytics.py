"""Outcome analytics: the interaction funnel, need match, before/after of accepted suggestions, promotion
cadence, data coverage and the per-session score.

Everything here is a pure function of what it is fed (events, analyses, RoomState windows), so the same
code gives the live host screen its numbers and the report its tables. Definitions, in one place:

- **viewer**: a distinct `Event.user_id` (salted hash) with any event in the room.
- **funnel**: viewers → *active* (seen again at least 30 s after first seen, or took any action: comment,
  like, gift, share, follow) → *interacted* (commented, liked, gifted or shared) → *followed*.
  interaction rate = interacted ÷ viewers; likes per viewer = likes ÷ viewers.
- **watch time** (an estimate): last seen − first seen, per viewer. Viewers only show up when they do
  something, so a silent viewer counts from their enter event to their last action; the figure is a lower
  bound. Viewers past 5 minutes convert about 3× as often, so their share is shown on its own.
- **need match**: of the questions (confused comments with a known topic) in the last 60 s, the share
  that the current run-sheet segment answers (`answers_topics`).
- **before/after**: for an accepted suggestion, the 2 minutes before its effect time against the 2 minutes
  after. A before/after comparison, not a controlled experiment: anything else that changed in those
  minutes shows up in the difference too.
- **promotion moments**: minutes in which coupon talk and buying intent (抢到了 / 券呢 / 已拍) jump: at
  least `PROMO_MIN_CUES` such comments and at least twice the session's median minute. It is how a
  competitor's promotions show up in their comments; the interval between moments is their cadence.
- **coverage**: share of the session span the source actually saw (minutes with no event at all and
  source_down → source_up time are gaps), times the share of input lines that became events.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bot.events import Event, EventKind

if TYPE_CHECKING:
    from bot.state import RoomState

class AnalysisFlags(Protocol):
    """What the analytics read of an analysis (nlp Analysis, StoredAnalysis, RoomState's reading)."""

    @property
    def sentiment(self) -> str: ...
    @property
    def confusion(self) -> bool: ...
    @property
    def topics(self) -> tuple[str, ...]: ...
    @property
    def buying_intent(self) -> bool: ...


MINUTE_MS = 60_000
ACTIVE_AFTER_MS = 30_000
"""A viewer seen again this long after first seen counts as active (stayed)."""
LONG_WATCH_MS = 300_000
"""Viewers past 5 minutes convert about 3× as often: their share is a headline number."""
WATCH_BUCKETS_S = (60, 300, 900, 1800)
"""Upper edges of the watch-time histogram: <1 min, 1–5, 5–15, 15–30, ≥30 min."""
MAX_VIEWERS = 2_000_000
"""Viewers tracked per room; later ones are counted as `untracked` (memory stays bounded)."""

NEED_WINDOW_S = 60
NEED_MATCH_LOW = 0.40
"""Below this share of answered questions the segment is off what viewers ask."""
UNCLASSIFIED_TOPICS = frozenset({"other"})
"""Question topics no segment can answer; such questions are counted apart, not in the share."""

OUTCOME_WINDOW_S = 120
"""Before/after windows of an accepted suggestion, seconds each side."""
OUTCOME_KINDS = ("coupon", "script_switch", "prompt")

PROMO_MIN_CUES = 5
PROMO_MEDIAN_RATIO = 2.0

COVERAGE_FLAG_BELOW = 0.95

_INTERACTIONS = frozenset({EventKind.CHAT, EventKind.LIKE, EventKind.GIFT, EventKind.SHARE})

_ACTIVE = 1
_INTERACTED = 2
_FOLLOWED = 4
_LONG = 8
_COMMENTED = 16
_LIKED = 32
_GIFTED = 64
_SHARED = 128
_KIND_FLAG = {EventKind.CHAT: _COMMENTED, EventKind.LIKE: _LIKED, EventKind.GIFT: _GIFTED,
              EventKind.SHARE: _SHARED}


def _watch_bucket(ms: int) -> int:
    return bisect.bisect_right(WATCH_BUCKETS_S, ms // 1000)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _share(n: int | float, d: int | float) -> float | None:
    return n / d if d else None


# -- funnel -------------------------------------------------------------------------------------------


class _Viewer:
    __slots__ = ("first_ms", "last_ms", "platform", "flags", "minute", "interact_minute")

    def __init__(self, t: int, platform: str) -> None:
        self.first_ms = t
        self.last_ms = t
        self.platform = platform
        self.flags = 0
        self.minute = -1
        """Last minute index this viewer was counted present in."""
        self.interact_minute = -1


@dataclass(slots=True)
class _PlatformAcc:
    viewers: int = 0
    watch_ms: int = 0
    long: int = 0
    interacted: int = 0


@dataclass(frozen=True, slots=True)
class PlatformWatch:
    platform: str
    viewers: int
    interacted: int
    avg_watch_s: float
    long_watchers: int

    @property
    def long_share(self) -> float | None:
        return _share(self.long_watchers, self.viewers)

    @property
    def interaction_rate(self) -> float | None:
        return _share(self.interacted, self.viewers)


@dataclass(frozen=True, slots=True)
class Funnel:
    """Whole-session funnel of one room (or the part of it seen so far)."""

    viewers: int
    active: int
    interacted: int
    followed: int
    commenters: int
    likers: int
    gifters: int
    sharers: int
    likes: int
    watch_ms: int
    """Sum of every viewer's estimated watch time."""
    long_watchers: int
    watch_histogram: tuple[int, ...]
    """Viewers per WATCH_BUCKETS_S bucket: <1 min, 1–5, 5–15, 15–30, ≥30 min."""
    platforms: tuple[PlatformWatch, ...]
    untracked: int = 0

    @property
    def interaction_rate(self) -> float | None:
        return _share(self.interacted, self.viewers)

    @property
    def active_rate(self) -> float | None:
        return _share(self.active, self.viewers)

    @property
    def follow_rate(self) -> float | None:
        return _share(self.followed, self.viewers)

    @property
    def likes_per_viewer(self) -> float | None:
        return _share(self.likes, self.viewers)

    @property
    def avg_watch_s(self) -> float | None:
        return None if not self.viewers else self.watch_ms / self.viewers / 1000

    @property
    def long_share(self) -> float | None:
        return _share(self.long_watchers, self.viewers)

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 4) -> float | None:
            return None if x is None else round(x, n)

        return {
            "viewers": self.viewers,
            "active": self.active,
            "interacted": self.interacted,
            "followed": self.followed,
            "likes": self.likes,
            "interaction_rate": r(self.interaction_rate),
            "active_rate": r(self.active_rate),
            "follow_rate": r(self.follow_rate),
            "likes_per_viewer": r(self.likes_per_viewer, 2),
            "avg_watch_s": r(self.avg_watch_s, 1),
            "long_share": r(self.long_share),
            "platforms": [
                {"platform": p.platform, "viewers": p.viewers, "avg_watch_s": round(p.avg_watch_s, 1),
                 "long_share": r(p.long_share), "interaction_rate": r(p.interaction_rate)}
                for p in self.platforms
            ],
        }


@dataclass(slots=True)
class FunnelMinute:
    """Per-minute funnel counts: minute `index` covers [start + index·60 s, start + (index+1)·60 s)."""

    index: int
    new_viewers: int = 0
    present: int = 0
    """Distinct viewers with any event in the minute."""
    interacting: int = 0
    """Distinct viewers who commented, liked, gifted or shared in the minute."""
    likes: int = 0
    follows: int = 0

    @property
    def interaction_rate(self) -> float | None:
        return _share(self.interacting, self.present)


class FunnelTracker:
    """Incremental funnel of one room: feed every event in receive order with `add()`.

    Memory is one small record per viewer (capped at `max_viewers`) plus one row per minute; `funnel()`
    is O(platforms), cheap enough for a 2 Hz screen. Per-minute presence assumes events arrive in receive
    order (as the pipeline and the store deliver them); a viewer's late event from an earlier minute is
    not counted again in that minute.
    """

    def __init__(self, start_ms: int | None = None, *, max_viewers: int = MAX_VIEWERS) -> None:
        self.start_ms = start_ms
        self.max_viewers = max_viewers
        self._viewers: dict[str, _Viewer] = {}
        self._platforms: dict[str, _PlatformAcc] = {}
        self._hist = [0] * (len(WATCH_BUCKETS_S) + 1)
        self._minutes: list[FunnelMinute] = []
        self.active = self.interacted = self.followed = self.long = 0
        self.commenters = self.likers = self.gifters = self.sharers = 0
        self.likes = 0
        self.watch_ms = 0
        self.untracked = 0

    def _minute(self, t: int) -> FunnelMinute:
        if self.start_ms is None:
            self.start_ms = t - t % MINUTE_MS
        index = max(0, (t - self.start_ms) // MINUTE_MS)
        rows = self._minutes
        while len(rows) <= index:
            rows.append(FunnelMinute(len(rows)))
        return rows[index]

    def add(self, ev: Event) -> None:
        kind = ev.kind
        if kind is EventKind.STATS or kind is EventKind.SYSTEM:
            return
        t = ev.received_ts
        m = self._minute(t)
        if kind is EventKind.LIKE:
            self.likes += ev.count
            m.likes += ev.count
        elif kind is EventKind.FOLLOW:
            m.follows += 1
        uid = ev.user_id
        if uid is None:
            return
        v = self._viewers.get(uid)
        if v is None:
            if len(self._viewers) >= self.max_viewers:
                self.untracked += 1
                return
            v = self._viewers[uid] = _Viewer(t, ev.platform)
            p = self._platforms.get(ev.platform)
            if p is None:
                p = self._platforms[ev.platform] = _PlatformAcc()
            p.viewers += 1
            self._hist[0] += 1
            m.new_viewers += 1
        else:
            self._seen(v, t)
        if v.minute < m.index:
            v.minute = m.index
            m.present += 1
        action = kind in _INTERACTIONS or kind is EventKind.FOLLOW
        if action and not v.flags & _ACTIVE:
            v.flags |= _ACTIVE
            self.active += 1
        if kind in _INTERACTIONS:
            flag = _KIND_FLAG[kind]
            if not v.flags & flag:
                v.flags |= flag
                if flag == _COMMENTED:
                    self.commenters += 1
                elif flag == _LIKED:
                    self.likers += 1
                elif flag == _GIFTED:
                    self.gifters += 1
                else:
                    self.sharers += 1
            if not v.flags & _INTERACTED:
                v.flags |= _INTERACTED
                self.interacted += 1
                self._platforms[v.platform].interacted += 1
            if v.interact_minute < m.index:
                v.interact_minute = m.index
                m.interacting += 1
        elif kind is EventKind.FOLLOW and not v.flags & _FOLLOWED:
            v.flags |= _FOLLOWED
            self.followed += 1

    def _seen(self, v: _Viewer, t: int) -> None:
        old = v.last_ms - v.first_ms
        if t > v.last_ms:
            v.last_ms = t
        elif t < v.first_ms:
            v.first_ms = t
        else:
            return
        new = v.last_ms - v.first_ms
        self.watch_ms += new - old
        self._platforms[v.platform].watch_ms += new - old
        a, b = _watch_bucket(old), _watch_bucket(new)
        if a != b:
            self._hist[a] -= 1
            self._hist[b] += 1
        if new >= ACTIVE_AFTER_MS and not v.flags & _ACTIVE:
            v.flags |= _ACTIVE
            self.active += 1
        if new >= LONG_WATCH_MS and not v.flags & _LONG:
            v.flags |= _LONG
            self.long += 1
            self._platforms[v.platform].long += 1

    @property
    def viewer_ids(self) -> Iterable[str]:
        return self._viewers.keys()

    def funnel(self) -> Funnel:
        return Funnel(
            viewers=len(self._viewers), active=self.active, interacted=self.interacted,
            followed=self.followed, commenters=self.commenters, likers=self.likers, gifters=self.gifters,
            sharers=self.sharers, likes=self.likes, watch_ms=self.watch_ms, long_watchers=self.long,
            watch_histogram=tuple(self._hist),
            platforms=tuple(
                PlatformWatch(name, p.viewers, p.interacted,
                              p.watch_ms / p.viewers / 1000 if p.viewers else 0.0, p.long)
                for name, p in sorted(self._platforms.items())
            ),
            untracked=self.untracked,
        )

    def minutes(self) -> list[FunnelMinute]:
        return list(self._minutes)


# -- need match ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NeedMatch:
    """How much of what viewers ask the current segment answers."""

    segment: str | None
    questions: int
    """Questions with a known topic (the denominator)."""
    answered: int
    unclassified: int = 0
    """Questions whose only topic is "other": no segment can answer them; not in the share."""
    missing: tuple[tuple[str, int], ...] = ()
    """Topics asked but not answered by the segment, most asked first."""

    @property
    def share(self) -> float | None:
        return _share(self.answered, self.questions)

    def as_dict(self) -> dict[str, Any]:
        share = self.share
        return {
            "segment": self.segment, "questions": self.questions, "answered": self.answered,
            "share": None if share is None else round(share, 4), "unclassified": self.unclassified,
            "missing": [list(x) for x in self.missing],
        }


def match_questions(
    question_topics: Iterable[Sequence[str]] | Mapping[tuple[str, ...], int], answers: Iterable[str],
    segment: str | None = None,
) -> NeedMatch:
    """Need match of questions (each given by its topics) against a segment's `answers_topics`.

    `question_topics` is one topic sequence per question, or a mapping of topic tuple → how many questions
    had it (RoomState.question_topics). A question counts as answered when any of its known topics is one
    the segment answers.
    """
    answer_set = frozenset(answers)
    counted = (
        question_topics.items() if isinstance(question_topics, Mapping) else ((t, 1) for t in question_topics)
    )
    questions = answered = unclassified = 0
    missing: Counter[str] = Counter()
    for topics, n in counted:
        known = [t for t in topics if t not in UNCLASSIFIED_TOPICS]
        if not known:
            unclassified += n
            continue
        questions += n
        if any(t in answer_set for t in known):
            answered += n
        else:
            missing[known[0]] += n
    return NeedMatch(segment, questions, answered, unclassified,
                     tuple(sorted(missing.items(), key=lambda kv: (-kv[1], kv[0]))))


def recent_question_topics(
    state: RoomState, now_ms: int, window_s: int = NEED_WINDOW_S
) -> Counter[tuple[str, ...]]:
    """Topics of the analysed questions in (now − window, now], counted per distinct topic tuple."""
    return state.question_topics(window_s, now_ms)


def need_match(
    state: RoomState, now_ms: int, segment: str | None, answers: Iterable[str], window_s: int = NEED_WINDOW_S
) -> NeedMatch:
    """Need match of the last `window_s` seconds of a room against one segment."""
    return match_questions(recent_question_topics(state, now_ms, window_s), answers, segment)


# -- before / after -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """What a before or after window held (only the part inside the session counts)."""

    seconds: int
    comments: int = 0
    analyzed: int = 0
    negative: int = 0
    topic_confused: int = 0
    """Confused comments about the targeted topic (all confused comments when there is no topic)."""
    intent: int = 0
    online_sum: int = 0
    online_samples: int = 0

    @property
    def comments_per_min(self) -> float | None:
        return self.comments * 60 / self.seconds if self.seconds else None

    @property
    def negative_share(self) -> float | None:
        return _share(self.negative, self.analyzed)

    @property
    def topic_confusion(self) -> float | None:
        return _share(self.topic_confused, self.analyzed)

    @property
    def intent_per_min(self) -> float | None:
        return self.intent * 60 / self.seconds if self.seconds else None

    @property
    def online(self) -> float | None:
        return _share(self.online_sum, self.online_samples)


OUTCOME_METRICS: tuple[tuple[str, str, bool], ...] = (
    # (key, Chinese label, share: deltas in percentage points)
    ("comments_per_min", "弹幕/分", False),
    ("topic_confusion", "目标话题疑问率", True),
    ("negative_share", "负面占比", True),
    ("intent_per_min", "购买意向/分", False),
    ("online", "在线人数", False),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Before/after figures of one accepted suggestion."""

    id: str
    kind: str
    label: str
    """What was done: the segment switched to, the prompt text, the coupon."""
    segment: str | None
    topic: str | None
    effect_ts: int
    before: WindowFigures
    after: WindowFigures
    complete: bool = True
    """False while the after window is still running (live)."""

    def value(self, side: str, key: str) -> float | None:
        figures = self.before if side == "before" else self.after
        return getattr(figures, key)  # type: ignore[no-any-return]

    def delta(self, key: str) -> float | None:
        a, b = self.before, self.after
        x, y = getattr(a, key), getattr(b, key)
        return None if x is None or y is None else y - x

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "id": self.id, "kind": self.kind, "label": self.label, "segment": self.segment,
            "topic": self.topic,
            "effect_ts": self.effect_ts, "complete": self.complete,
            "before": {k: r(getattr(self.before, k)) for k, _, _ in OUTCOME_METRICS},
            "after": {k: r(getattr(self.after, k)) for k, _, _ in OUTCOME_METRICS},
            "delta": {k: r(self.delta(k)) for k, _, _ in OUTCOME_METRICS},
            "before_s": self.before.seconds, "after_s": self.after.seconds,
        }


def _get(s: Any, key: str) -> Any:
    return s.get(key) if isinstance(s, Mapping) else getattr(s, key, None)


def effect_time(s: Any) -> int | None:
    """When an accepted suggestion (Suggestion or stored dict) took effect; None if not accepted.

    A coupon takes effect when it dropped (`dropped_ts`, else its countdown's `due_ts`); a segment switch
    or a prompt when it was accepted (`state_ts`), else when it was made.
    """
    if str(_get(s, "state")) != "accepted" or str(_get(s, "kind")) not in OUTCOME_KINDS:
        return None
    data = _get(s, "data") or {}
    if str(_get(s, "kind")) == "coupon":
        for key in ("dropped_ts", "due_ts"):
            if data.get(key):
                return int(data[key])
    t = data.get("state_ts") or _get(s, "state_ts") or _get(s, "created_ts")
    return int(t) if t is not None else None


def outcome_label(s: Any) -> str:
    kind = str(_get(s, "kind"))
    data = _get(s, "data") or {}
    if kind == "script_switch":
        return f"切到「{_get(s, 'segment') or '?'}」"
    if kind == "prompt":
        return str(data.get("prompt") or _get(s, "text") or "")
    return str(data.get("item") or "优惠券")


def _state_figures(state: RoomState, lo_sec: int, hi_sec: int, topic: str | None) -> WindowFigures | None:
    """Seconds [lo_sec, hi_sec) of a room from its 5-minute ring; None if they left the ring."""
    from bot.state import RING_S

    first = state.totals.first_ms
    if first is None:
        return None
    now_sec = state.now_ms // 1000
    lo = max(lo_sec, first // 1000)
    hi = min(hi_sec, now_sec + 1)
    if lo <= now_sec - RING_S:
        return None
    seconds = max(0, hi - lo)
    if not seconds:
        return WindowFigures(0)
    w = state.window(seconds, (hi - 1) * 1000)
    confused = w.topic_confused.get(topic, 0) if topic else w.confused
    online = [o for t, o in state.online_history if lo <= t // 1000 < hi]
    return WindowFigures(
        seconds=seconds, comments=w.comments, analyzed=w.analyzed, negative=w.neg, topic_confused=confused,
        intent=w.buying_intent, online_sum=sum(online), online_samples=len(online),
    )


def live_outcome(state: RoomState, s: Any, window_s: int = OUTCOME_WINDOW_S) -> Outcome | None:
    """Before/after of an accepted suggestion from a room's live windows (None: not accepted, or too old)."""
    t = effect_time(s)
    if t is None:
        return None
    sec = t // 1000
    topic = _get(s, "topic")
    before = _state_figures(state, sec - window_s, sec, topic)
    after = _state_figures(state, sec, sec + window_s, topic)
    if before is None or after is None:
        return None
    return Outcome(
        id=str(_get(s, "id")), kind=str(_get(s, "kind")), label=outcome_label(s), segment=_get(s, "segment"),
        topic=topic, effect_ts=t, before=before, after=after,
        complete=state.now_ms // 1000 >= sec + window_s - 1,
    )


class _OutcomeAcc:
    __slots__ = ("sec", "topic", "seconds", "comments", "analyzed", "negative", "topic_confused", "intent",
                 "online_sum", "online_samples")

    def __init__(self, sec: int, topic: str | None) -> None:
        self.sec = sec
        self.topic = topic
        self.comments = [0, 0]
        self.analyzed = [0, 0]
        self.negative = [0, 0]
        self.topic_confused = [0, 0]
        self.intent = [0, 0]
        self.online_sum = [0, 0]
        self.online_samples = [0, 0]


class OutcomePass:
    """Before/after of every accepted suggestion of a stored session, in one pass over its events.

    Feed events in receive order with `add(ev, analysis)`; `finish(first_ms, last_ms)` clips the windows to
    the session span. An event at second s falls in the before window of an effect at second T when
    T − window ≤ s < T and in the after window when T ≤ s < T + window.
    """

    def __init__(self, suggestions: Iterable[Mapping[str, Any]], window_s: int = OUTCOME_WINDOW_S) -> None:
        self.window_s = window_s
        items = []
        for s in suggestions:
            t = effect_time(s)
            if t is not None:
                items.append((t, s))
        items.sort(key=lambda x: (x[0], str(x[1].get("id"))))
        self._items = items
        self._accs = [_OutcomeAcc(t // 1000, x.get("topic")) for t, x in items]
        self._secs = [a.sec for a in self._accs]

    def __bool__(self) -> bool:
        return bool(self._items)

    def add(self, ev: Event, an: AnalysisFlags | None) -> None:
        kind = ev.kind
        if kind is not EventKind.CHAT and kind is not EventKind.STATS:
            return
        s = ev.received_ts // 1000
        w = self.window_s
        lo = bisect.bisect_right(self._secs, s - w)
        hi = bisect.bisect_right(self._secs, s + w)
        if lo >= hi:
            return
        online = None
        if kind is EventKind.STATS:
            if not ev.stats or ev.stats.get("online") is None:
                return
            online = int(ev.stats["online"])
        for acc in self._accs[lo:hi]:
            side = 0 if s < acc.sec else 1
            if online is not None:
                acc.online_sum[side] += online
                acc.online_samples[side] += 1
                continue
            acc.comments[side] += 1
            if an is None:
                continue
            acc.analyzed[side] += 1
            if an.sentiment == "neg":
                acc.negative[side] += 1
            if an.buying_intent:
                acc.intent[side] += 1
            if an.confusion and (acc.topic is None or acc.topic in an.topics):
                acc.topic_confused[side] += 1

    def finish(self, first_ms: int, last_ms: int) -> list[Outcome]:
        first, last = first_ms // 1000, last_ms // 1000
        w = self.window_s
        out = []
        for (t, s), acc in zip(self._items, self._accs, strict=True):
            spans = ((acc.sec - w, acc.sec), (acc.sec, acc.sec + w))
            figures = []
            for side, (lo, hi) in enumerate(spans):
                seconds = max(0, min(hi, last + 1) - max(lo, first))
                figures.append(WindowFigures(
                    seconds=seconds, comments=acc.comments[side], analyzed=acc.analyzed[side],
                    negative=acc.negative[side], topic_confused=acc.topic_confused[side],
                    intent=acc.intent[side], online_sum=acc.online_sum[side],
                    online_samples=acc.online_samples[side],
                ))
            out.append(Outcome(
                id=str(s.get("id")), kind=str(s.get("kind")), label=outcome_label(s),
                segment=s.get("segment"), topic=s.get("topic"), effect_ts=t, before=figures[0],
                after=figures[1],
                complete=acc.sec + w - 1 <= last,
            ))
        return out


@dataclass(frozen=True, slots=True)
class OutcomeGroup:
    """Mean before/after over the accepted suggestions of one kind, segment or prompt text."""

    by: str
    """kind | segment | prompt"""
    kind: str
    key: str
    n: int
    before: Mapping[str, float | None]
    after: Mapping[str, float | None]
    delta: Mapping[str, float | None]
    """Mean of the per-suggestion deltas (suggestions without the figure left out)."""


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [x for x in values if x is not None]
    return statistics.fmean(xs) if xs else None


def aggregate_outcomes(outcomes: Sequence[Outcome]) -> list[OutcomeGroup]:
    """Groups: per kind; per kind and segment; per prompt text. Only complete outcomes count."""
    done = [o for o in outcomes if o.complete]
    keys: dict[tuple[str, str, str], list[Outcome]] = {}
    for o in done:
        keys.setdefault(("kind", o.kind, o.kind), []).append(o)
        if o.segment:
            keys.setdefault(("segment", o.kind, o.segment), []).append(o)
        if o.kind == "prompt":
            keys.setdefault(("prompt", o.kind, o.label), []).append(o)
    order = {"kind": 0, "segment": 1, "prompt": 2}
    kinds = {k: i for i, k in enumerate(OUTCOME_KINDS)}
    groups = []
    for (by, kind, key), items in sorted(
        keys.items(), key=lambda kv: (order[kv[0][0]], kinds.get(kv[0][1], 9), -len(kv[1]), kv[0][2])
    ):
        groups.append(OutcomeGroup(
            by=by, kind=kind, key=key, n=len(items),
            before={m: _mean(o.value("before", m) for o in items) for m, _, _ in OUTCOME_METRICS},
            after={m: _mean(o.value("after", m) for o in items) for m, _, _ in OUTCOME_METRICS},
            delta={m: _mean(o.delta(m) for o in items) for m, _, _ in OUTCOME_METRICS},
        ))
    return groups


# -- promotion cadence -----------------------------------------------------------------------------------


def is_promo_cue(an: AnalysisFlags) -> bool:
    """A comment reacting to a promotion: coupon talk or buying intent."""
    return bool(an.buying_intent) or "coupon" in an.topics


class PromoCues:
    """Promotion cues per minute of one room; minute i covers [start + i·60 s, start + (i+1)·60 s)."""

    def __init__(self, start_ms: int | None = None, *, max_minutes: int = 24 * 60) -> None:
        self.start_ms = start_ms
        self.max_minutes = max_minutes
        self.counts: deque[int] = deque()
        self._offset = 0
        """Minute index of counts[0] (older minutes are dropped past `max_minutes`)."""

    def add(self, t: int, an: AnalysisFlags | None) -> None:
        """One comment at receive time `t` (every comment: quiet minutes count as zeros)."""
        if self.start_ms is None:
            self.start_ms = t - t % MINUTE_MS
        pos = max(0, (t - self.start_ms) // MINUTE_MS) - self._offset
        if pos < 0:
            return
        counts = self.counts
        while len(counts) <= pos:
            counts.append(0)
        while len(counts) > self.max_minutes:
            counts.popleft()
            self._offset += 1
            pos -= 1
        if an is not None and is_promo_cue(an):
            counts[pos] += 1

    def moments(self) -> list[int]:
        """Minute indexes (since start) where a promotion shows in the comments."""
        return [self._offset + i for i in promo_moments(list(self.counts))]

    def cadence_min(self) -> float | None:
        return promo_cadence(self.moments())


def promo_moments(
    counts: Sequence[int], *, min_cues: int = PROMO_MIN_CUES, ratio: float = PROMO_MEDIAN_RATIO
) -> list[int]:
    """First minutes of runs with at least max(min_cues, ratio × median of all minutes) cue comments."""
    if not counts:
        return []
    threshold = max(min_cues, ratio * statistics.median(counts))
    return [i for i, c in enumerate(counts) if c >= threshold and (i == 0 or counts[i - 1] < threshold)]


def promo_cadence(moments: Sequence[int]) -> float | None:
    """Mean minutes between promotion moments (None with fewer than two)."""
    if len(moments) < 2:
        return None
    return (moments[-1] - moments[0]) / (len(moments) - 1)


# -- coverage --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of the session the data actually covers."""

    span_ms: int
    gap_minutes: int
    """Minutes inside the span with no event of any kind."""
    down_ms: int
    """Source down time (source_down → source_up), including any overlap with gap minutes."""
    uncovered_ms: int
    """Union of gap minutes and down time."""
    input_events: int
    lost_lines: int
    """Input lines skipped by the reader plus events the store failed to write."""

    @property
    def time_share(self) -> float:
        return 1.0 if self.span_ms <= 0 else max(0.0, 1 - self.uncovered_ms / self.span_ms)

    @property
    def line_share(self) -> float:
        total = self.input_events + self.lost_lines
        return 1.0 if total <= 0 else self.input_events / total

    @property
    def share(self) -> float:
        return self.time_share * self.line_share

    @property
    def flagged(self) -> bool:
        return self.share < COVERAGE_FLAG_BELOW


class CoverageTracker:
    """Collects what `Coverage` needs in one pass: minutes with events, source down/up times."""

    def __init__(self) -> None:
        self.first_ms: int | None = None
        self.last_ms: int | None = None
        self.events = 0
        self._minutes: set[int] = set()
        self._down: dict[str, int] = {}
        self._intervals: list[tuple[int, int]] = []

    def add(self, ev: Event) -> None:
        t = ev.received_ts
        self.events += 1
        if self.first_ms is None or t < self.first_ms:
            self.first_ms = t
        if self.last_ms is None or t > self.last_ms:
            self.last_ms = t
        self._minutes.add(t // MINUTE_MS)
        if ev.kind is EventKind.SYSTEM:
            key = ev.platform
            if ev.event == "source_down":
                self._down.setdefault(key, t)
            elif ev.event == "source_up" and key in self._down:
                self._intervals.append((self._down.pop(key), t))

    def finish(self, *, lost_lines: int = 0, input_events: int | None = None) -> Coverage:
        if self.first_ms is None or self.last_ms is None:
            return Coverage(0, 0, 0, 0, input_events or 0, lost_lines)
        first, last = self.first_ms, self.last_ms
        intervals = list(self._intervals) + [(t, last) for t in self._down.values()]
        down_ms = sum(max(0, min(b, last) - max(a, first)) for a, b in intervals)
        gaps = [m for m in range(first // MINUTE_MS, last // MINUTE_MS + 1) if m not in self._minutes]
        spans = sorted(
            [(max(first, m * MINUTE_MS), min(last, (m + 1) * MINUTE_MS)) for m in gaps]
            + [(max(a, first), min(b, last)) for a, b in intervals]
        )
        uncovered = 0
        cur_a = cur_b = None
        for a, b in spans:
            if b <= a:
                continue
            if cur_b is None or a > cur_b:
                if cur_a is not None and cur_b is not None:
                    uncovered += cur_b - cur_a
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        if cur_a is not None and cur_b is not None:
            uncovered += cur_b - cur_a
        return Coverage(
            span_ms=last - first, gap_minutes=len(gaps), down_ms=down_ms, uncovered_ms=uncovered,
            input_events=self.events if input_events is None else input_events, lost_lines=lost_lines,
        )


# -- score -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoreComponent:
    key: str
    label: str
    weight: float
    target: float
    """The figure that earns full marks for this component."""
    inverse: bool = False
    """Lower is better: the component is 1 − value / target."""


SCORE_COMPONENTS: tuple[ScoreComponent, ...] = (
    ScoreComponent("interaction_rate", "互动率", 3.0, 0.45),
    ScoreComponent("long_share", "停留超 5 分钟占比", 2.0, 0.30),
    ScoreComponent("returning_share", "回访观众占比", 1.5, 0.30),
    ScoreComponent("intent_share", "购买意向占弹幕", 1.5, 0.10),
    ScoreComponent("need_match", "需求匹配", 1.0, 0.70),
    ScoreComponent("negative_share", "负面占比", 1.0, 0.30, inverse=True),
)
"""Session score: 10 × Σ weight·component ÷ Σ weight over the components with data, where a component is
min(1, value ÷ target), or max(0, 1 − value ÷ target) when lower is better. The weights add up to 10, so
with every figure present the score is simply Σ weight·component. Targets: leading rooms reach a 45 %
interaction rate; the others are what a healthy room shows."""


def score_parts(
    values: Mapping[str, float | None],
) -> list[tuple[ScoreComponent, float | None, float | None]]:
    """(component, value, component score 0..1) for each component; None where the figure is missing."""
    out: list[tuple[ScoreComponent, float | None, float | None]] = []
    for c in SCORE_COMPONENTS:
        v = values.get(c.key)
        if v is None:
            out.append((c, None, None))
            continue
        part = max(0.0, 1 - v / c.target) if c.inverse else min(1.0, v / c.target)
        out.append((c, v, part))
    return out


def session_score(values: Mapping[str, float | None]) -> float | None:
    """The 0–10 session score (see SCORE_COMPONENTS), one decimal; None when no figure is present."""
    parts = [(c.weight, p) for c, _, p in score_parts(values) if p is not None]
    weight = sum(w for w, _ in parts)
    if not weight:
        return None
    return round(10 * sum(w * p for w, p in parts) / weight, 1)


# -- session meta ---------------------------------------------------------------------------------------


def session_meta(engine: Any | None, *, watch_only: bool = False) -> dict[str, Any]:
    """What a session's report needs from its advisor engine, written into the session meta at the end:
    the run-sheet (`script`), the segments as they ran (`segments`: [{ts, name}], switches by hand too)
    and whether the room was a `watch_only` benchmark room."""
    meta: dict[str, Any] = {"watch_only": True} if watch_only else {}
    if engine is None:
        return meta
    mem = engine.memory
    meta["script"] = engine.script_name
    switches = list(mem.switch.switches)
    first = switches[0][1] if switches else mem.segment
    if mem.started_ts is not None and first:
        meta["segments"] = [{"ts": mem.started_ts, "name": first}] + [
            {"ts": ts, "name": to} for ts, _, to in switches
        ]
    return meta


# -- live -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RoomAnalytics:
    """The live trackers of one room (fed by the pipeline's hooks)."""

    room: str
    watch_only: bool = False
    funnel: FunnelTracker = field(default_factory=FunnelTracker)
    promo: PromoCues = field(default_factory=PromoCues)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    """Completed outcomes by suggestion id (bounded: the latest MAX_LIVE_OUTCOMES)."""


MAX_LIVE_OUTCOMES = 50
LIVE_OUTCOMES_SHOWN = 6


class LiveAnalytics:
    """Per-room analytics of the running service; `observe` and `observe_analyzed` are pipeline hooks.

    `view()` builds the `analytics` block of a room's screen snapshot (shape in its docstring).
    """

    def __init__(self, watch_only: Iterable[str] = ()) -> None:
        self.watch_only = frozenset(watch_only)
        self.rooms: dict[str, RoomAnalytics] = {}

    def room(self, name: str) -> RoomAnalytics:
        ra = self.rooms.get(name)
        if ra is None:
            ra = self.rooms[name] = RoomAnalytics(name, watch_only=name in self.watch_only)
        return ra

    def observe(self, ev: Event) -> None:
        """Every event, before it is applied to RoomState (also events shed without analysis)."""
        self.room(ev.room).funnel.add(ev)

    def observe_analyzed(self, batch: Sequence[Event], analyses: Sequence[AnalysisFlags | None]) -> None:
        for ev, an in zip(batch, analyses, strict=True):
            if ev.kind is EventKind.CHAT:
                self.room(ev.room).promo.add(ev.received_ts, an)

    def _outcomes(self, ra: RoomAnalytics, state: RoomState) -> list[dict[str, Any]]:
        shown: list[Outcome] = []
        for s in reversed(state.suggestions):
            if len(shown) >= LIVE_OUTCOMES_SHOWN:
                break
            if s.state != "accepted" or str(s.kind) not in OUTCOME_KINDS:
                continue
            done = ra.outcomes.get(s.id)
            if done is None:
                o = live_outcome(state, s)
                if o is None:
                    continue
                if o.complete:
                    ra.outcomes[s.id] = o
                    while len(ra.outcomes) > MAX_LIVE_OUTCOMES:
                        ra.outcomes.pop(next(iter(ra.outcomes)))
                done = o
            shown.append(done)
        return [o.as_dict() for o in shown]

    def _benchmark(self, name: str, state: RoomState, now_ms: int) -> dict[str, Any]:
        w = state.window(60, now_ms)
        ra = self.room(name)
        cadence = ra.promo.cadence_min()
        return {
            "room": name,
            "watch_only": ra.watch_only,
            "comments_per_min": round(w.comments_per_min, 1),
            "positive_share": round(w.positive_share, 4) if w.analyzed else None,
            "negative_share": round(w.negative_share, 4) if w.analyzed else None,
            "questions": [
                {"topic": g.topic, "count": g.count, "example": g.examples[0] if g.examples else g.key}
                for g in state.questions(60, now_ms, limit=3)
            ],
            "promo_moments": len(ra.promo.moments()),
            "promo_cadence_min": None if cadence is None else round(cadence, 1),
        }

    def view(
        self, name: str, state: RoomState, now_ms: int, *, segment: str | None = None,
        answers: Sequence[str] | None = None, states: Mapping[str, RoomState] | None = None,
    ) -> dict[str, Any]:
        """The `analytics` block of a room snapshot.

        Keys: watch_only; funnel (Funnel.as_dict); minute {interaction_rate, present, interacting} of the
        last complete minute; intent_per_min (buying-intent comments in the last 60 s); need_match
        (NeedMatch.as_dict, or None without a run-sheet segment); outcomes (before/after of the latest
        accepted suggestions, Outcome.as_dict); benchmarks (for a room we run: every watch_only room's
        60 s figures and estimated promotion cadence, with this room's own first).
        """
        ra = self.room(name)
        rows = ra.funnel.minutes()
        last = rows[-2] if len(rows) >= 2 else None
        w = state.window(60, now_ms)
        out: dict[str, Any] = {
            "watch_only": ra.watch_only,
            "funnel": ra.funnel.funnel().as_dict(),
            "minute": None if last is None else {
                "interaction_rate": _round(last.interaction_rate),
                "present": last.present, "interacting": last.interacting,
            },
            "intent_per_min": w.buying_intent,
            "need_match": None,
            "outcomes": [],
            "benchmarks": [],
        }
        if segment is not None and answers is not None:
            out["need_match"] = need_match(state, now_ms, segment, answers).as_dict()
        if not ra.watch_only:
            out["outcomes"] = self._outcomes(ra, state)
            watched = [r for r in (states or {}) if r in self.watch_only and r != name]
            if watched and states is not None:
                out["benchmarks"] = [self._benchmark(name, state, now_ms)] + [
                    self._benchmark(r, states[r], now_ms) for r in sorted(watched)
                ]
        return out
