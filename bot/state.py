"""RoomState: the only mutable shared state of a room (DESIGN.md *Data flow*).

Counts live in one-second buckets on a 5-minute ring, so 10 s / 60 s / 5 min windows are sums over
the last N buckets and memory stays constant however long the show runs. Time is the Clock's time
carried by each Event (`received_ts`), so replay (event time) and live (wall time) share this code.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Reversible
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from bot.events import Event, EventKind

if TYPE_CHECKING:
    from bot.advisors.base import Suggestion
    from bot.config import AlertRulesConfig
    from bot.sources.base import SourceStatus

RING_S = 300
PLATFORM_LATE_MS = 5_000
"""A comment this late is late for the host: answers and prompts reach its platform's viewers that much later
(the screens' red delay chip, the report's "超 5 秒" share and the default of the `platform_lag` alert)."""
DELAY_SAMPLES = 2000
"""Per platform: the newest comments whose delivery delay is kept (60 s at ~33 comments/s)."""
WINDOWS_S = (10, 60, 300)


class AnalysisLike(Protocol):
    """What RoomState reads of an analysis (nlp.analyzer.Analysis or a stored one)."""

    @property
    def text(self) -> str: ...
    @property
    def sentiment(self) -> str: ...
    @property
    def confusion(self) -> bool: ...
    @property
    def topics(self) -> tuple[str, ...]: ...
    @property
    def buying_intent(self) -> bool: ...
    @property
    def distrust(self) -> bool: ...
    @property
    def asks_host(self) -> bool: ...
    @property
    def confidence(self) -> float: ...


class _Bucket:
    """Counts for one second."""

    __slots__ = (
        "sec", "comments", "analyzed", "neg", "neu", "pos", "confused", "intent", "distrust", "asks_host",
        "low_confidence", "topic", "topic_confused", "topic_neg", "likes", "gifts", "gift_value", "enters",
        "follows", "shares", "viewers",
    )

    def __init__(self, sec: int) -> None:
        self.reset(sec)

    def reset(self, sec: int) -> None:
        self.sec = sec
        self.comments = 0
        self.analyzed = 0
        self.neg = 0
        self.neu = 0
        self.pos = 0
        self.confused = 0
        self.intent = 0
        self.distrust = 0
        self.asks_host = 0
        self.low_confidence = 0
        self.topic: Counter[str] = Counter()
        self.topic_confused: Counter[str] = Counter()
        self.topic_neg: Counter[str] = Counter()
        self.likes = 0
        self.gifts = 0
        self.gift_value = 0.0
        self.enters = 0
        self.follows = 0
        self.shares = 0
        self.viewers: set[str] = set()


@dataclass(frozen=True, slots=True)
class RecentComment:
    """One recent chat line with the flags advisors quote from (prompt responses, alert examples)."""

    ts: int
    text: str
    sentiment: str | None = None
    """neg / neu / pos; None when the comment was not analysed."""
    confusion: bool = False
    distrust: bool = False
    topics: tuple[str, ...] = ()
    compliance: tuple[str, ...] = ()
    """Advertising-law / banned-category terms the comment quotes (Analysis.compliance_terms)."""
    platform: str = ""


class _Stamped(Protocol):
    @property
    def ts(self) -> int: ...


_S = TypeVar("_S", bound=_Stamped)


def newest_in_window(items: Reversible[_S], lo: int, end: int) -> Iterator[_S]:
    """Items of an arrival-ordered list with lo < ts <= end, newest first, lazily: the scan stops at the
    first item at or before `lo`, so a window costs what it holds, not the whole list."""
    for x in reversed(items):
        if x.ts <= lo:
            return
        if x.ts <= end:
            yield x


class _DelayAt(NamedTuple):
    ts: int
    """received_ts of the comment"""
    delay_ms: int


class _TopicsAt(NamedTuple):
    ts: int
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Question:
    ts: int
    topic: str
    key: str
    text: str
    direct: bool = False
    """Addressed to the host (@主播): a direct question, weighed more by answer cards."""


@dataclass(frozen=True, slots=True)
class QuestionGroup:
    """Near-duplicate questions merged under one key."""

    topic: str
    key: str
    count: int
    examples: tuple[str, ...]
    last_ts: int


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Everything advisors and screens read about the last `seconds` seconds."""

    seconds: int
    end_ms: int
    comments: int
    analyzed: int
    neg: int
    neu: int
    pos: int
    confused: int
    buying_intent: int
    distrust: int
    asks_host: int
    low_confidence: int
    topic_comments: dict[str, int]
    topic_confused: dict[str, int]
    topic_negative: dict[str, int]
    likes: int
    gifts: int
    gift_value: float
    enters: int
    follows: int
    shares: int
    viewers: int

    @property
    def comments_per_min(self) -> float:
        return self.comments * 60.0 / self.seconds

    def share(self, n: int) -> float:
        return n / self.analyzed if self.analyzed else 0.0

    @property
    def negative_share(self) -> float:
        return self.share(self.neg)

    @property
    def positive_share(self) -> float:
        return self.share(self.pos)

    @property
    def confusion_rate(self) -> float:
        return self.share(self.confused)

    def topic_confusion_rate(self, topic: str) -> float:
        """Share of analysed comments in the window that are confused questions about `topic`."""
        return self.share(self.topic_confused.get(topic, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "comments": self.comments,
            "comments_per_min": round(self.comments_per_min, 1),
            "analyzed": self.analyzed,
            "sentiment": {"neg": self.neg, "neu": self.neu, "pos": self.pos},
            "negative_share": round(self.negative_share, 4),
            "positive_share": round(self.positive_share, 4),
            "confusion_rate": round(self.confusion_rate, 4),
            "confused_by_topic": dict(self.topic_confused),
            "buying_intent": self.buying_intent,
            "distrust": self.distrust,
            "likes": self.likes,
            "gifts": self.gifts,
            "gift_value": round(self.gift_value, 2),
            "enters": self.enters,
            "follows": self.follows,
            "shares": self.shares,
            "viewers": self.viewers,
        }


@dataclass(slots=True)
class SessionTotals:
    """Whole-session counters (never windowed)."""

    first_ms: int | None = None
    last_ms: int | None = None
    events: int = 0
    comments: int = 0
    analyzed: int = 0
    unanalyzed: int = 0
    sentiment: Counter[str] = field(default_factory=Counter)
    confused: int = 0
    topic_confused: Counter[str] = field(default_factory=Counter)
    buying_intent: int = 0
    likes: int = 0
    gifts: int = 0
    gift_value: float = 0.0
    enters: int = 0
    follows: int = 0
    shares: int = 0
    peak_online: int = 0
    viewers: set[str] = field(default_factory=set)


def delivery_delay_ms(event: Event) -> int | None:
    """How long after the viewer sent it livebot received this event (received_ts − the platform's ts), or None
    when the source has no time of its own and stamped ts = received_ts: no reading, not a 0 ms one. A platform
    clock slightly ahead of ours reads 0."""
    t = event.received_ts
    if event.ts == t:
        return None
    return t - event.ts if t > event.ts else 0


def median_p90(values: list[int]) -> tuple[int, int]:
    """Median and 90th percentile (nearest rank) of an ascending, non-empty list."""
    n = len(values)
    return values[n // 2], values[min(n - 1, n * 9 // 10)]


class PlatformDelay(NamedTuple):
    """How late one platform's comments reach livebot: received_ts − the platform's own ts, in ms."""

    median_ms: int
    p90_ms: int
    comments: int


class DelayThresholds(NamedTuple):
    """When a platform's comment delay is worth showing, and when it is late: one rule for the screens'
    chips, the status line and the `platform_lag` alert (the app builds it from `[advisors.alerts]`
    `platform_lag_s` / `platform_lag_min_comments`, so a room that alerts at 3 s also turns red at 3 s)."""

    late_ms: int = PLATFORM_LATE_MS
    min_comments: int = 5
    """Fewer comments in the minute than this: no reading (one stray old message is not a delay)."""

    @classmethod
    def from_alerts(cls, alerts: AlertRulesConfig) -> DelayThresholds:
        """From `[advisors.alerts]` (`platform_lag_s`, `platform_lag_min_comments`)."""
        return cls(round(alerts.platform_lag_s * 1000), alerts.platform_lag_min_comments)

    def level(self, d: PlatformDelay) -> str | None:
        """None (too few comments), "ok", "slow" (from 60 % of late: the host sees it) or "late"."""
        if d.comments < self.min_comments:
            return None
        if d.median_ms >= self.late_ms:
            return "late"
        return "slow" if d.median_ms >= 0.6 * self.late_ms else "ok"


class RoomState:
    """Sliding-window view of one room; `apply()` events in, `window()`/`snapshot()` out."""

    def __init__(
        self, room: str, *, question_horizon_s: int = 300, max_questions: int = 2000,
        recent_comments: int = 5000, delay_thresholds: DelayThresholds | None = None,
    ) -> None:
        self.room = room
        self.delay_thresholds = delay_thresholds or DelayThresholds()
        self._ring = [_Bucket(-1) for _ in range(RING_S)]
        self._questions: deque[Question] = deque(maxlen=max_questions)
        self._question_horizon_ms = question_horizon_s * 1000
        self.totals = SessionTotals()
        self.online: int | None = None
        self.viewers_total: int | None = None
        self.likes_total: int | None = None
        self.online_history: deque[tuple[int, int]] = deque(maxlen=720)
        self.live: bool | None = None
        self.sources: dict[str, SourceStatus] = {}
        self.suggestions: deque[Suggestion] = deque(maxlen=500)
        self.segment: str | None = None
        self.recent_comments: deque[RecentComment] = deque(maxlen=recent_comments)
        """The last chat lines in arrival order (prompt-response matching, alert examples)."""
        self._question_topics: deque[_TopicsAt] = deque(maxlen=recent_comments)
        """(ts, topics) of the last analysed questions: need match reads these, not every recent comment."""
        self._window_cache: dict[tuple[int, int], WindowStats] = {}
        self.degraded: bool = False
        self.now_ms: int = 0
        self.platforms: dict[str, int] = {}
        """Platform → when its latest event arrived (a merged room shows per-platform talking points)."""
        self._delays: dict[str, deque[_DelayAt]] = {}
        """Platform → (received_ts, delay ms) of its newest comments that carried the platform's own time."""

    # -- input ------------------------------------------------------------------------------------

    def _bucket(self, ms: int) -> _Bucket | None:
        sec = ms // 1000
        if self.now_ms and sec <= self.now_ms // 1000 - RING_S:
            return None  # older than the ring: session totals only
        b = self._ring[sec % RING_S]
        if b.sec != sec:
            if b.sec > sec:
                return None
            b.reset(sec)
        return b

    def apply(self, event: Event, analysis: AnalysisLike | None = None) -> None:
        """Fold one event (and its analysis, if it was analysed) into the windows and totals."""
        if self._window_cache:
            self._window_cache.clear()
        t = event.received_ts
        if t > self.now_ms:
            self.now_ms = t
        tot = self.totals
        tot.events += 1
        if tot.first_ms is None or t < tot.first_ms:
            tot.first_ms = t
        if tot.last_ms is None or t > tot.last_ms:
            tot.last_ms = t
        b = self._bucket(t)
        if self.platforms.get(event.platform, -1) < t:
            self.platforms[event.platform] = t
        if event.user_id is not None:
            tot.viewers.add(event.user_id)
            if b is not None:
                b.viewers.add(event.user_id)
        kind = event.kind
        if kind is EventKind.CHAT:
            tot.comments += 1
            delay = delivery_delay_ms(event)
            if delay is not None:
                delays = self._delays.get(event.platform)
                if delays is None:
                    delays = self._delays[event.platform] = deque(maxlen=DELAY_SAMPLES)
                delays.append(_DelayAt(t, delay))
            if b is not None:
                b.comments += 1
            if analysis is None:
                tot.unanalyzed += 1
                self.recent_comments.append(RecentComment(t, event.text, platform=event.platform))
            else:
                self._apply_analysis(t, b, analysis)
                self.recent_comments.append(RecentComment(
                    t, event.text, analysis.sentiment, analysis.confusion, analysis.distrust,
                    tuple(analysis.topics), tuple(getattr(analysis, "compliance_terms", ())), event.platform,
                ))
        elif kind is EventKind.LIKE:
            tot.likes += event.count
            if b is not None:
                b.likes += event.count
        elif kind is EventKind.GIFT:
            tot.gifts += event.count
            tot.gift_value += event.value
            if b is not None:
                b.gifts += event.count
                b.gift_value += event.value
        elif kind is EventKind.ENTER:
            tot.enters += 1
            if b is not None:
                b.enters += 1
        elif kind is EventKind.FOLLOW:
            tot.follows += 1
            if b is not None:
                b.follows += 1
        elif kind is EventKind.SHARE:
            tot.shares += 1
            if b is not None:
                b.shares += 1
        elif kind is EventKind.STATS:
            self._apply_stats(t, event)
        elif kind is EventKind.SYSTEM:
            if event.event == "live_start":
                self.live = True
            elif event.event == "live_end":
                self.live = False

    def _apply_analysis(self, t: int, b: _Bucket | None, a: AnalysisLike) -> None:
        tot = self.totals
        tot.analyzed += 1
        tot.sentiment[a.sentiment] += 1
        if a.buying_intent:
            tot.buying_intent += 1
        if a.confusion:
            tot.confused += 1
            for topic in a.topics:
                tot.topic_confused[topic] += 1
            self._add_question(t, a)
            self._question_topics.append(_TopicsAt(t, tuple(a.topics)))
        if b is None:
            return
        b.analyzed += 1
        if a.sentiment == "neg":
            b.neg += 1
            for topic in a.topics:
                b.topic_neg[topic] += 1
        elif a.sentiment == "pos":
            b.pos += 1
        else:
            b.neu += 1
        for topic in a.topics:
            b.topic[topic] += 1
        if a.confusion:
            b.confused += 1
            for topic in a.topics:
                b.topic_confused[topic] += 1
        if a.buying_intent:
            b.intent += 1
        if a.distrust:
            b.distrust += 1
        if a.asks_host:
            b.asks_host += 1
        if a.confidence < 0.85:
            b.low_confidence += 1

    def _add_question(self, t: int, a: AnalysisLike) -> None:
        from nlp.questions import question_key

        topic = a.topics[0] if a.topics else "other"
        self._questions.append(Question(t, topic, question_key(a.text, topic), a.text, bool(a.asks_host)))

    def _apply_stats(self, t: int, event: Event) -> None:
        stats = event.stats or {}
        online = stats.get("online")
        if online is not None:
            self.online = int(online)
            self.totals.peak_online = max(self.totals.peak_online, self.online)
            self.online_history.append((t, self.online))
        if stats.get("viewers_total") is not None:
            self.viewers_total = int(stats["viewers_total"])
        if stats.get("likes_total") is not None:
            self.likes_total = int(stats["likes_total"])

    def advance(self, now_ms: int) -> None:
        """Move the room's notion of now forward without an event (quiet rooms still age)."""
        if now_ms > self.now_ms:
            self.now_ms = now_ms

    # -- output -----------------------------------------------------------------------------------

    def _buckets(self, seconds: int, end_ms: int) -> Iterable[_Bucket]:
        end_sec = end_ms // 1000
        lo = end_sec - min(seconds, RING_S)
        ring = self._ring
        for sec in range(lo + 1, end_sec + 1):
            b = ring[sec % RING_S]
            if b.sec == sec:
                yield b

    def comment_count(self, seconds: int, now_ms: int | None = None) -> int:
        """Comments in the last `seconds` (≤ 300) seconds: the cheap part of `window()`."""
        end = self.now_ms if now_ms is None else now_ms
        return sum(b.comments for b in self._buckets(seconds, end))

    def window(self, seconds: int, now_ms: int | None = None) -> WindowStats:
        """Sums over the last `seconds` (≤ 300) seconds ending at now (treat the result as read-only).

        Results are memoised until the next `apply()`: every advisor tick asks for the same few windows.
        """
        end = self.now_ms if now_ms is None else now_ms
        cached = self._window_cache.get((seconds, end))
        if cached is not None:
            return cached
        comments = analyzed = neg = neu = pos = confused = intent = distrust = asks_host = low_conf = 0
        likes = gifts = enters = follows = shares = 0
        value = 0.0
        topic: dict[str, int] = {}
        topic_conf: dict[str, int] = {}
        topic_neg: dict[str, int] = {}
        viewers: set[str] = set()
        for b in self._buckets(seconds, end):
            comments += b.comments
            analyzed += b.analyzed
            neg += b.neg
            neu += b.neu
            pos += b.pos
            confused += b.confused
            intent += b.intent
            distrust += b.distrust
            asks_host += b.asks_host
            low_conf += b.low_confidence
            likes += b.likes
            gifts += b.gifts
            enters += b.enters
            follows += b.follows
            shares += b.shares
            value += b.gift_value
            for src, dst in ((b.topic, topic), (b.topic_confused, topic_conf), (b.topic_neg, topic_neg)):
                for k, v in src.items():
                    dst[k] = dst.get(k, 0) + v
            if b.viewers:
                viewers |= b.viewers
        stats = WindowStats(
            seconds=seconds, end_ms=end, comments=comments, analyzed=analyzed, neg=neg, neu=neu, pos=pos,
            confused=confused, buying_intent=intent, distrust=distrust, asks_host=asks_host,
            low_confidence=low_conf, topic_comments=topic, topic_confused=topic_conf,
            topic_negative=topic_neg,
            likes=likes, gifts=gifts, gift_value=value, enters=enters, follows=follows, shares=shares,
            viewers=len(viewers),
        )
        if len(self._window_cache) >= 16:
            self._window_cache.clear()
        self._window_cache[(seconds, end)] = stats
        return stats

    def questions(self, seconds: int = 60, now_ms: int | None = None, *, limit: int = 8) -> list[QuestionGroup]:
        """Questions of the last `seconds`, near-duplicates merged, most asked first."""
        end = self.now_ms if now_ms is None else now_ms
        lo = end - seconds * 1000
        # Count first, build only the groups shown: the screen asks twice a second per room.
        counts: dict[tuple[str, str], int] = {}
        last: dict[tuple[str, str], int] = {}
        examples: dict[tuple[str, str], list[str]] = {}
        for q in newest_in_window(self._questions, lo, end):
            k = (q.topic, q.key)
            n = counts.get(k)
            if n is None:
                counts[k] = 1
                last[k] = q.ts
                examples[k] = [q.text]
            else:
                counts[k] = n + 1
                ex = examples[k]
                if len(ex) < 3 and q.text not in ex:
                    ex.append(q.text)
        top = sorted(counts, key=lambda k: (-counts[k], -last[k]))[:limit]
        return [
            QuestionGroup(topic=k[0], key=k[1], count=counts[k], examples=tuple(examples[k]), last_ts=last[k])
            for k in top
        ]

    def question_topics(self, seconds: int, now_ms: int | None = None) -> Counter[tuple[str, ...]]:
        """Topics of the analysed questions in (now − seconds, now], counted per distinct topic tuple.

        Advisors match these against every segment each tick; a room asks about a handful of topic
        combinations, so counting them once keeps that work independent of the comment rate.
        """
        end = self.now_ms if now_ms is None else now_ms
        return Counter(x.topics for x in newest_in_window(self._question_topics, end - seconds * 1000, end))

    def latest_questions(self, n: int) -> list[Question]:
        """The last `n` questions added (fewer if the bounded list dropped some), oldest first."""
        if n <= 0:
            return []
        out = list(islice(reversed(self._questions), n))
        out.reverse()
        return out

    def question_list(self, seconds: int, now_ms: int | None = None) -> list[Question]:
        """The individual questions of the last `seconds` (lo < ts <= now), oldest first."""
        end = self.now_ms if now_ms is None else now_ms
        out = list(newest_in_window(self._questions, end - seconds * 1000, end))
        out.reverse()
        return out

    def timeline(self, seconds: int = 300, step: int = 10, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Per-`step` points over the last `seconds`: comment rate, sentiment mix, confusion rate."""
        end = self.now_ms if now_ms is None else now_ms
        end_sec = end // 1000
        n = seconds // step
        points = [
            {"t": (end_sec - (n - i) * step + step) * 1000, "comments": 0, "analyzed": 0, "neg": 0, "pos": 0,
             "confused": 0}
            for i in range(n)
        ]
        first = end_sec - n * step
        for b in self._ring:
            if first < b.sec <= end_sec:
                p = points[min(n - 1, (b.sec - first - 1) // step)]
                p["comments"] += b.comments
                p["analyzed"] += b.analyzed
                p["neg"] += b.neg
                p["pos"] += b.pos
                p["confused"] += b.confused
        return points

    def platform_delays(self, seconds: int = 60, now_ms: int | None = None) -> dict[str, PlatformDelay]:
        """Per platform, the delivery delay of its comments received in the last `seconds`: how long after a
        viewer sent a comment (the platform's timestamp) livebot had it. A multi-platform room whose platforms
        differ by seconds answers one platform's viewers late; over ~5 s it hurts."""
        end = self.now_ms if now_ms is None else now_ms
        lo = end - seconds * 1000
        out: dict[str, PlatformDelay] = {}
        for platform, samples in sorted(self._delays.items()):
            values = sorted(s.delay_ms for s in newest_in_window(samples, lo, end))
            if values:
                out[platform] = PlatformDelay(*median_p90(values), len(values))
        return out

    def record_suggestion(self, s: Suggestion) -> None:
        self.suggestions.append(s)

    def snapshot(self, now_ms: int | None = None) -> dict[str, Any]:
        """A JSON-ready picture of the room for screens, status lines and tests."""
        end = self.now_ms if now_ms is None else now_ms
        tot = self.totals
        w60 = self.window(60, end)
        return {
            "room": self.room,
            "now_ms": end,
            "live": self.live,
            "online": self.online,
            "viewers_total": self.viewers_total,
            "segment": self.segment,
            "degraded": self.degraded,
            "windows": {str(s): self.window(s, end).as_dict() for s in WINDOWS_S if s != 60} | {"60": w60.as_dict()},
            "questions": [
                {"topic": g.topic, "key": g.key, "count": g.count, "examples": list(g.examples)}
                for g in self.questions(60, end)
            ],
            "timeline": self.timeline(300, 10, end),
            "totals": {
                "events": tot.events,
                "comments": tot.comments,
                "analyzed": tot.analyzed,
                "unanalyzed": tot.unanalyzed,
                "sentiment": dict(tot.sentiment),
                "confused": tot.confused,
                "buying_intent": tot.buying_intent,
                "likes": tot.likes,
                "gifts": tot.gifts,
                "gift_value": round(tot.gift_value, 2),
                "enters": tot.enters,
                "follows": tot.follows,
                "shares": tot.shares,
                "peak_online": tot.peak_online,
                "unique_viewers": len(tot.viewers),
            },
            "sources": {name: st.as_dict(end) for name, st in self.sources.items()},
            "platform_delay": {
                p: d._asdict() | {"level": self.delay_thresholds.level(d)}
                for p, d in self.platform_delays(60, end).items()
            },
        }
