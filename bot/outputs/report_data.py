"""Replay report data: one streaming pass over a stored session → plain numbers the renderers read.

`build_session_report(store, session_id)` reads `Store.iter_events` once, in receive order, and keeps
only per-minute counters, bounded question groups, per-minute reservoirs of negative examples and one
keyword counter per segment, so a 3-hour, 200k-comment session never sits in memory (the set of viewer
hashes, needed for the exact unique-viewer count, is the only per-viewer structure).

Time is the receive time (`Event.received_ts`, event time in replay), like RoomState. Minute `i` covers
`[start_ts + i·60 s, start_ts + (i+1)·60 s)` where `start_ts` is the session's first event.

Later layers (advisor suggestions, outcome analytics) plug in without touching the pass: suggestions
become `MarkerLayer`s and `Band`s on the shared time axis; other modules can append `SeriesPanel`s and
`HtmlSection`s to a report with `dataclasses.replace` before rendering.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import re
import statistics
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import yaml

from bot.events import Event, EventKind
from bot.outputs.store import CST, Store, StoredAnalysis
from bot.state import PLATFORM_LATE_MS, delivery_delay_ms, median_p90
from nlp.topics import TOPIC_LABELS

if TYPE_CHECKING:
    from bot.config import Config

MINUTE_MS = 60_000

SENTIMENT_LABELS: dict[str, str] = {"pos": "正面", "neu": "中性", "neg": "负面"}
KIND_LABELS: dict[str, str] = {
    "script_switch": "切换话术",
    "coupon": "优惠券",
    "prompt": "互动口令",
    "alert": "提醒",
    "answer_card": "答疑卡",
}
STATE_LABELS: dict[str, str] = {
    "pending": "待处理",
    "accepted": "已采纳",
    "dismissed": "已忽略",
    "expired": "已过期",
}

NEGATIVE_WINDOW_MIN = 2
"""Negative moments are judged on sliding windows of this many minutes."""
NEGATIVE_MIN_COUNT = 5
"""A window needs at least this many negative comments to be a negative moment."""
NEGATIVE_MIN_RATIO = 2.0
"""…and a negative share at least this multiple of the session baseline…"""
NEGATIVE_MIN_EXCESS = 0.10
"""…and at least this much above the baseline (absolute share), so a 1 % → 2 % blip doesn't count."""
NEGATIVE_EXAMPLES_PER_MIN = 5
MAX_NEGATIVE_MOMENTS = 8
MAX_QUESTION_GROUPS = 20_000
"""Question groups kept during the pass; the least asked tenth is evicted when full."""
MAX_TEXTS_PER_GROUP = 50
QUESTIONS_KEPT = 500
"""Question groups a report keeps (most asked first); the CSV export writes these."""
MAX_RUNSHEET_SEGMENTS = 12
MIN_RUNSHEET_SEGMENT_MS = 3 * MINUTE_MS
TOP_KEYWORDS = 30
ITER_CHUNK = 20_000


def topic_label(topic: str) -> str:
    return TOPIC_LABELS.get(topic, topic)


def format_clock(ts: int) -> str:
    """`HH:MM` in China Standard Time."""
    return datetime.fromtimestamp(ts / 1000, tz=CST).strftime("%H:%M")


def format_datetime(ts: int, *, seconds: bool = False) -> str:
    """`YYYY-MM-DD HH:MM[:SS]` in China Standard Time (also what the plotly date axis reads)."""
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts / 1000, tz=CST).strftime(fmt)


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Headline:
    """Whole-session numbers for the top of the report."""

    duration_s: float
    events: int
    comments: int
    analyzed: int
    unique_viewers: int
    """Distinct viewer hashes over every event kind (enter, like, gift, comment, …)."""
    commenters: int
    sentiment: Mapping[str, int]
    """Analysed comments per sentiment: neg, neu, pos."""
    confused: int
    """Analysed comments that are questions / confusion (what "viewers asked" counts)."""
    buying_intent: int
    distrust: int
    likes: int
    gifts: int
    gift_value: float
    enters: int
    follows: int
    shares: int
    peak_online: int | None

    @property
    def comments_per_min(self) -> float:
        return self.comments / max(self.duration_s / 60, 1 / 60)

    @property
    def confusion_rate(self) -> float:
        return self.confused / self.analyzed if self.analyzed else 0.0

    def sentiment_share(self, sentiment: str) -> float:
        return self.sentiment.get(sentiment, 0) / self.analyzed if self.analyzed else 0.0


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """Counts of one minute of the session."""

    index: int
    start_ts: int
    comments: int = 0
    analyzed: int = 0
    pos: int = 0
    neu: int = 0
    neg: int = 0
    confused: int = 0
    confused_by_topic: Mapping[str, int] = field(default_factory=dict)
    buying_intent: int = 0
    distrust: int = 0
    likes: int = 0
    gifts: int = 0
    gift_value: float = 0.0
    enters: int = 0
    follows: int = 0
    shares: int = 0
    online: int | None = None
    """Highest online count reported in the minute (None: no stats event in it)."""
    active_viewers: int = 0
    """Distinct viewers with any event in the minute."""
    unanalyzed: int = 0

    @property
    def neg_share(self) -> float:
        return self.neg / self.analyzed if self.analyzed else 0.0

    @property
    def pos_share(self) -> float:
        return self.pos / self.analyzed if self.analyzed else 0.0

    @property
    def confusion_rate(self) -> float:
        return self.confused / self.analyzed if self.analyzed else 0.0

    def topic_confusion_rate(self, topic: str) -> float:
        """Share of analysed comments in the minute that are questions about `topic` (as RoomState)."""
        return self.confused_by_topic.get(topic, 0) / self.analyzed if self.analyzed else 0.0


@dataclass(frozen=True, slots=True)
class QuestionGroup:
    """Near-duplicate questions merged (nlp.questions.question_key, quantities folded together)."""

    key: str
    topic: str
    label: str
    """What the group asks: its intents (价格, 尺码 + 偏大偏小) or, for free questions, the top wording."""
    count: int
    examples: tuple[str, ...]
    """The 3 most asked distinct wordings, verbatim."""
    variants: int
    """Distinct wordings seen (capped at MAX_TEXTS_PER_GROUP)."""
    first_ts: int
    last_ts: int
    peak_ts: int
    """Start of the minute in which it was asked most."""
    peak_count: int
    quantities: tuple[tuple[str, int], ...] = ()
    """Most asked quantities inside the group (160斤 ×12, …)."""
    example_counts: tuple[int, ...] = ()
    """How often each of `examples` was asked (same wording, ignoring emotes and punctuation)."""
    intent: bool = False
    """Merged by intent phrases (nlp/lexicons/questions.yaml), not by identical wording."""


@dataclass(frozen=True, slots=True)
class NegativeMoment:
    start_ts: int
    end_ts: int
    analyzed: int
    negative: int
    baseline: float
    topics: tuple[tuple[str, int], ...]
    examples: tuple[str, ...]

    @property
    def share(self) -> float:
        return self.negative / self.analyzed if self.analyzed else 0.0

    @property
    def ratio(self) -> float:
        return self.share / self.baseline if self.baseline > 0 else math.inf


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    name: str
    start_ts: int
    end_ts: int
    source: str
    """"runsheet" (segments from the run-sheet / suggestions) or "time" (equal blocks)."""
    comments: int
    analyzed: int
    neg: int
    confused: int
    top_topics: tuple[tuple[str, int], ...]
    keywords: tuple[tuple[str, int], ...]
    """Most frequent keywords (word, comments) of the segment."""
    distinctive: tuple[tuple[str, int], ...] = ()
    """Keywords much more frequent here than in the whole session (lift ≥ 1.5), strongest first."""

    @property
    def neg_share(self) -> float:
        return self.neg / self.analyzed if self.analyzed else 0.0

    @property
    def confusion_rate(self) -> float:
        return self.confused / self.analyzed if self.analyzed else 0.0


@dataclass(frozen=True, slots=True)
class DataQuality:
    path: str | None
    format: str | None
    encoding: str | None
    lines_read: int | None
    events_read: int | None
    skipped: Mapping[str, int]
    pipeline: Mapping[str, int]
    """Pipeline counters of the run that stored the session (received, duplicates, analyzed, shed, …)."""
    stored_events: int
    comments: int
    unanalyzed_comments: int
    classifiers: Mapping[str, int]

    platform_delays: Mapping[str, PlatformDelaySummary] = field(default_factory=dict)
    """Per platform, how late its comments reached livebot (only platforms whose events carry their own time)."""

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True, slots=True)
class PlatformDelaySummary:
    """Delivery delay of one platform's comments over a session: received_ts − the platform's ts."""

    comments: int
    median_ms: int
    p90_ms: int
    late_share: float
    """Share of the comments that arrived `PLATFORM_LATE_MS` or more after they were sent."""

    @classmethod
    def of(cls, delays: Sequence[int]) -> PlatformDelaySummary:
        values = sorted(delays)
        n = len(values)
        late = n - bisect.bisect_left(values, PLATFORM_LATE_MS)
        return cls(n, *median_p90(values), late / n)


@dataclass(frozen=True, slots=True)
class Marker:
    ts: int
    label: str
    hover: str
    state: str = ""


@dataclass(frozen=True, slots=True)
class MarkerLayer:
    """Points on the timeline's layer strip (one row per layer), e.g. the suggestions of one kind."""

    key: str
    name: str
    color: str
    symbol: str
    markers: tuple[Marker, ...]
    vertical_lines: bool = False
    """Also draw a dotted line across every panel at each marker (coupon drops)."""


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded span on every panel of the timeline (run-sheet segments)."""

    start_ts: int
    end_ts: int
    label: str


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: tuple[float | None, ...]
    """One value per minute row."""
    color: str | None = None
    kind: str = "line"
    """line | bar | area"""
    secondary: bool = False
    dash: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesPanel:
    """An extra timeline panel (per-minute series) that a later module adds to the report."""

    key: str
    title: str
    series: tuple[Series, ...]
    percent: bool = False
    height: float = 1.0


@dataclass(frozen=True, slots=True)
class HtmlSection:
    """An extra report section rendered by another module (already-escaped HTML body)."""

    key: str
    title: str
    html: str


@dataclass(frozen=True, slots=True)
class TargetRow:
    label: str
    achieved: str
    target: str
    ok: bool | None
    """True: on target; False: off target; None: nothing to judge."""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Targets:
    """What the advisors aimed for; the report compares the session with it."""

    prompts_per_min: float = 4.0
    prompts_min: float = 3.0
    prompts_max: float = 5.0
    coupon_cadence_s: int = 300
    coupon_cooldown_s: int = 90
    promo_per_min: int = 3

    @classmethod
    def from_config(cls, cfg: Config) -> Targets:
        a = cfg.advisors
        return cls(
            prompts_per_min=a.prompts.target_per_min, prompts_min=a.prompts.min_per_min,
            prompts_max=a.prompts.max_per_min, coupon_cadence_s=a.coupons.cadence_s,
            coupon_cooldown_s=a.coupons.cooldown_s, promo_per_min=a.promo_per_min,
        )


@dataclass(frozen=True, slots=True)
class OutcomeSummary:
    """The outcome analytics' figures that comparisons and CSV exports carry (bot.analytics_trend)."""

    viewers: int
    interaction_rate: float | None
    avg_watch_s: float | None
    long_share: float | None
    """Viewers who stayed over 5 minutes (they convert about 3×)."""
    follow_rate: float | None
    returning_share: float | None
    """None when the room has no earlier stored session."""
    need_match: float | None
    """None with fewer than 10 classified questions."""
    intent_per_min: float | None
    score: float | None
    """The 0–10 session score."""
    minutes: tuple[tuple[int, int, int, int], ...] = ()
    """Per report minute: (new viewers, viewers present, viewers interacting, buying-intent comments)."""


@dataclass(frozen=True, slots=True)
class SessionReport:
    """Everything one session's report shows; renderers and CSV export read only this."""

    session_id: str
    room: str
    source: str
    start_ts: int
    end_ts: int
    headline: Headline
    minutes: tuple[MinuteRow, ...]
    topics: tuple[tuple[str, int], ...]
    """Question topics, most asked first (topic, questions)."""
    questions: tuple[QuestionGroup, ...]
    """Question groups, most asked first."""
    question_groups_total: int
    negative_moments: tuple[NegativeMoment, ...]
    segments: tuple[SegmentSummary, ...]
    data_quality: DataQuality
    suggestions: tuple[Mapping[str, Any], ...] = ()
    targets: tuple[TargetRow, ...] = ()
    layers: tuple[MarkerLayer, ...] = ()
    bands: tuple[Band, ...] = ()
    extra_panels: tuple[SeriesPanel, ...] = ()
    extra_sections: tuple[HtmlSection, ...] = ()
    notices: tuple[str, ...] = ()
    """Warnings shown at the top of the report (e.g. low data coverage, from bot.analytics_trend)."""
    outcome: OutcomeSummary | None = None
    """Set when the report was built with the outcome analytics."""

    @property
    def title(self) -> str:
        return f"{self.room} · {format_datetime(self.start_ts)}"

    def questions_by_topic(self, per_topic: int = 6) -> list[tuple[str, int, list[QuestionGroup]]]:
        """(topic, questions in topic, its top groups) for topics with questions, most asked first."""
        out = []
        for topic, n in self.topics:
            groups = [g for g in self.questions if g.topic == topic][:per_topic]
            if groups:
                out.append((topic, n, groups))
        return out


# -- the pass ---------------------------------------------------------------------------------------


class _Minute:
    __slots__ = (
        "comments", "analyzed", "pos", "neu", "neg", "confused", "confused_by_topic", "intent", "distrust",
        "likes", "gifts", "gift_value", "enters", "follows", "shares", "online", "active", "unanalyzed",
        "neg_examples", "neg_topics",
    )

    def __init__(self) -> None:
        self.comments = self.analyzed = self.pos = self.neu = self.neg = self.confused = 0
        self.intent = self.distrust = self.likes = self.gifts = self.enters = self.follows = self.shares = 0
        self.unanalyzed = self.active = 0
        self.gift_value = 0.0
        self.online: int | None = None
        self.confused_by_topic: Counter[str] = Counter()
        self.neg_topics: Counter[str] = Counter()
        self.neg_examples: list[tuple[float, int, str]] = []
        """Min-heap of (p_neg, -seq, text): the most negative comments of the minute."""


class _Group:
    __slots__ = ("key", "count", "first_ts", "last_ts", "minutes", "texts", "verbatim", "quantities")

    def __init__(self, key: str, ts: int) -> None:
        self.key = key
        self.count = 0
        self.first_ts = ts
        self.last_ts = ts
        self.minutes: Counter[int] = Counter()
        self.texts: Counter[str] = Counter()
        """Wording (emotes and punctuation removed) → times asked; at most MAX_TEXTS_PER_GROUP."""
        self.verbatim: dict[str, str] = {}
        """Wording → the shortest verbatim comment with it (the one with the fewest extras)."""
        self.quantities: Counter[str] = Counter()


@dataclass(frozen=True, slots=True)
class _SegmentPlan:
    name: str
    start_ts: int
    source: str


class _SegmentAcc:
    __slots__ = ("comments", "analyzed", "neg", "confused", "topics", "keywords")

    def __init__(self) -> None:
        self.comments = self.analyzed = self.neg = self.confused = 0
        self.topics: Counter[str] = Counter()
        self.keywords: Counter[str] = Counter()


class _Pass:
    """Folds `(Event, analysis)` pairs in receive order into bounded accumulators."""

    def __init__(self, start_ts: int, end_ts: int, plan: Sequence[_SegmentPlan]) -> None:
        self.start_ts = start_ts
        self.n_minutes = max(1, (end_ts - start_ts) // MINUTE_MS + 1)
        self.minutes = [_Minute() for _ in range(self.n_minutes)]
        self.plan = list(plan)
        self.plan_starts = [p.start_ts for p in self.plan]
        self.segments = [_SegmentAcc() for _ in self.plan]
        self.groups: dict[str, _Group] = {}
        self.groups_evicted = 0
        self.viewers: set[str] = set()
        self.commenters: set[str] = set()
        self.minute_viewers: dict[int, set[str]] = {}
        self.classifiers: Counter[str] = Counter()
        self.delays: dict[str, array[int]] = {}
        """Platform → delivery delay (ms) of each comment that carried the platform's own time."""
        self.question_topics: Counter[str] = Counter()
        self.sentiment: Counter[str] = Counter()
        self.events = self.comments = self.analyzed = self.confused = self.intent = self.distrust = 0
        self.likes = self.gifts = self.enters = self.follows = self.shares = self.unanalyzed = 0
        self.gift_value = 0.0
        self.peak_online: int | None = None
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self._seq = 0

    def add(self, ev: Event, an: StoredAnalysis | None) -> None:
        # The hot loop of the report (one call per stored event): plain comparisons, no helpers.
        t = ev.received_ts
        self.events += 1
        if self.first_ts is None or t < self.first_ts:
            self.first_ts = t
        if self.last_ts is None or t > self.last_ts:
            self.last_ts = t
        mi = (t - self.start_ts) // MINUTE_MS
        if mi < 0:
            mi = 0
        elif mi >= self.n_minutes:
            mi = self.n_minutes - 1
        m = self.minutes[mi]
        user = ev.user_id
        if user is not None:
            self.viewers.add(user)
            viewers = self.minute_viewers.get(mi)
            if viewers is None:
                viewers = self._new_minute(mi)
            viewers.add(user)
        kind = ev.kind
        if kind is EventKind.CHAT:
            self._chat(ev, an, t, mi, m)
        elif kind is EventKind.LIKE:
            self.likes += ev.count
            m.likes += ev.count
        elif kind is EventKind.GIFT:
            self.gifts += ev.count
            self.gift_value += ev.value
            m.gifts += ev.count
            m.gift_value += ev.value
        elif kind is EventKind.ENTER:
            self.enters += 1
            m.enters += 1
        elif kind is EventKind.FOLLOW:
            self.follows += 1
            m.follows += 1
        elif kind is EventKind.SHARE:
            self.shares += 1
            m.shares += 1
        elif kind is EventKind.STATS and ev.stats:
            online = ev.stats.get("online")
            if online is not None:
                online = int(online)
                m.online = online if m.online is None else max(m.online, online)
                self.peak_online = online if self.peak_online is None else max(self.peak_online, online)

    def _new_minute(self, mi: int) -> set[str]:
        # Receive order is (nearly) time order: minutes two behind the newest are complete.
        for old in [k for k in self.minute_viewers if k < mi - 1]:
            self.minutes[old].active = len(self.minute_viewers.pop(old))
        viewers = self.minute_viewers[mi] = set()
        return viewers

    def _chat(self, ev: Event, an: StoredAnalysis | None, t: int, mi: int, m: _Minute) -> None:
        self.comments += 1
        delay = delivery_delay_ms(ev)
        if delay is not None:
            d = self.delays.get(ev.platform)
            if d is None:
                d = self.delays[ev.platform] = array("q")
            d.append(delay)
        m.comments += 1
        if ev.user_id is not None:
            self.commenters.add(ev.user_id)
        segments = self.segments
        if len(segments) == 1:
            seg = segments[0]
        else:
            seg = segments[max(0, bisect.bisect_right(self.plan_starts, t) - 1)]
        seg.comments += 1
        words = seg.keywords
        if an is None:
            self.unanalyzed += 1
            m.unanalyzed += 1
            for w in _keywords_of(ev.text, None):
                words[w] += 1
            return
        self.analyzed += 1
        m.analyzed += 1
        seg.analyzed += 1
        self.classifiers[an.classifier] += 1
        sentiment = an.sentiment
        self.sentiment[sentiment] += 1
        for w in an.keywords:
            if not _DIGITS.issuperset(w):
                words[w] += 1
        if sentiment == "neg":
            m.neg += 1
            seg.neg += 1
            for topic in an.topics:
                m.neg_topics[topic] += 1
            self._seq += 1
            item = (an.sentiment_probs[0], -self._seq, ev.text.strip())
            if len(m.neg_examples) < NEGATIVE_EXAMPLES_PER_MIN:
                heapq.heappush(m.neg_examples, item)
            elif item[0] > m.neg_examples[0][0]:
                heapq.heapreplace(m.neg_examples, item)
        elif sentiment == "pos":
            m.pos += 1
        else:
            m.neu += 1
        if an.buying_intent:
            self.intent += 1
            m.intent += 1
        if an.distrust:
            self.distrust += 1
            m.distrust += 1
        if an.confusion:
            self.confused += 1
            m.confused += 1
            seg.confused += 1
            for topic in an.topics:
                m.confused_by_topic[topic] += 1
            topic = an.topics[0] if an.topics else "other"
            seg.topics[topic] += 1
            self.question_topics[topic] += 1
            self._question(ev.text, topic, t)

    def _question(self, text: str, topic: str, t: int) -> None:
        from nlp.questions import question_key

        # question_key merges wordings of one intent (多少钱 / 多少米 / 价格多少 → price:价格); the
        # quantities it appends (…|160斤) are folded into the group and counted inside it instead.
        base, _, quantities = question_key(text, topic).partition("|")
        if not quantities and _DIGIT_RUN.search(base):
            # A free question with numbers (适合53岁穿吗 / 适合23岁穿吗): one group, numbers counted inside.
            quantities = ",".join(_QUANTITY.findall(text))
            base = _DIGIT_RUN.sub("#", base)
        group = self.groups.get(base)
        if group is None:
            if len(self.groups) >= MAX_QUESTION_GROUPS:
                self._evict()
            group = self.groups[base] = _Group(base, t)
        group.count += 1
        if t < group.first_ts:
            group.first_ts = t
        if t > group.last_ts:
            group.last_ts = t
        group.minutes[(t - self.start_ts) // MINUTE_MS] += 1
        verbatim = text.strip()
        # Wordings are compared without mentions, emotes and punctuation (@主播 有运费险吗😂 = 有运费险吗?).
        wording = _WORDING_NOISE.sub("", verbatim)
        if wording:
            if wording in group.texts:
                group.texts[wording] += 1
                if len(verbatim) < len(group.verbatim[wording]):
                    group.verbatim[wording] = verbatim
            elif len(group.texts) < MAX_TEXTS_PER_GROUP:
                group.texts[wording] = 1
                group.verbatim[wording] = verbatim
        if quantities:
            for q in quantities.split(","):
                if q in group.quantities or len(group.quantities) < MAX_TEXTS_PER_GROUP:
                    group.quantities[q] += 1

    def _evict(self) -> None:
        victims = heapq.nsmallest(
            max(1, MAX_QUESTION_GROUPS // 10), self.groups.values(), key=lambda g: (g.count, g.last_ts)
        )
        for g in victims:
            del self.groups[g.key]
        self.groups_evicted += len(victims)

    def finish_minutes(self) -> tuple[MinuteRow, ...]:
        for mi, viewers in self.minute_viewers.items():
            self.minutes[mi].active = len(viewers)
        self.minute_viewers.clear()
        return tuple(
            MinuteRow(
                index=i, start_ts=self.start_ts + i * MINUTE_MS, comments=m.comments, analyzed=m.analyzed,
                pos=m.pos, neu=m.neu, neg=m.neg, confused=m.confused,
                confused_by_topic=dict(m.confused_by_topic), buying_intent=m.intent, distrust=m.distrust,
                likes=m.likes, gifts=m.gifts, gift_value=round(m.gift_value, 2), enters=m.enters,
                follows=m.follows, shares=m.shares, online=m.online, active_viewers=m.active,
                unanalyzed=m.unanalyzed,
            )
            for i, m in enumerate(self.minutes)
        )

    def finish_questions(self) -> tuple[QuestionGroup, ...]:
        intent_names = _intent_names()
        out = []
        for g in self.groups.values():
            peak_minute, peak_count = min(g.minutes.items(), key=lambda kv: (-kv[1], kv[0]))
            top = sorted(g.texts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            wordings = [g.verbatim[w] for w, _ in top]
            topic, _, rest = g.key.partition(":")
            intents = rest.split("+")
            intent = all(i in intent_names for i in intents)
            label = " + ".join(intents) if intent else (wordings[0] if wordings else rest)
            out.append(QuestionGroup(
                key=g.key, topic=topic, label=label, intent=intent, example_counts=tuple(n for _, n in top),
                count=g.count, examples=tuple(wordings),
                variants=len(g.texts), first_ts=g.first_ts, last_ts=g.last_ts,
                peak_ts=self.start_ts + peak_minute * MINUTE_MS, peak_count=peak_count,
                quantities=tuple(sorted(g.quantities.items(), key=lambda kv: (-kv[1], kv[0]))[:5]),
            ))
        out.sort(key=lambda q: (-q.count, q.first_ts, q.key))
        return tuple(out)


_DIGITS = frozenset("0123456789.")
_HAS_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"\d+(?:\.\d+)?")
_QUANTITY = re.compile(r"\d+(?:\.\d+)?(?:斤|kg|公斤|cm|厘米|码|号|元|块|岁|件|米)?", re.IGNORECASE)
_WORDING_NOISE = re.compile(r"@\S+\s*|^主播|\[[^\[\]\s]{1,8}\]|[\W_]+")


@functools.cache
def _intent_names() -> frozenset[str]:
    from nlp.questions import QUESTIONS_FILE

    data = yaml.safe_load(QUESTIONS_FILE.read_text(encoding="utf-8")) or {}
    return frozenset(str(name) for name in data.get("intents") or {})


def _keywords_of(text: str, an: StoredAnalysis | None) -> list[str]:
    """Keywords for the segment cloud: the stored jieba keywords, or jieba now for unanalysed comments."""
    if an is not None:
        words: Iterable[str] = an.keywords
    else:
        from nlp import segment

        words = segment.keywords(text, 3)
    # Bare numbers (扣1 → "1", prices) say nothing without their context.
    return [w for w in words if not set(w) <= _DIGITS]


# -- after the pass -----------------------------------------------------------------------------------


def find_negative_moments(
    minutes: Sequence[MinuteRow], examples: Sequence[Sequence[str]], topics: Sequence[Mapping[str, int]],
    *, window: int = NEGATIVE_WINDOW_MIN, min_count: int = NEGATIVE_MIN_COUNT,
    min_ratio: float = NEGATIVE_MIN_RATIO, min_excess: float = NEGATIVE_MIN_EXCESS,
) -> tuple[NegativeMoment, ...]:
    """Windows whose negative share spiked against the session baseline; overlapping windows merged.

    A `window`-minute window (sliding by one minute) is flagged when it holds at least `min_count`
    negative comments and its negative share is at least `min_ratio` × the baseline and `min_excess`
    above it. The strongest `MAX_NEGATIVE_MOMENTS` moments are returned in time order.
    """
    analyzed = sum(m.analyzed for m in minutes)
    baseline = sum(m.neg for m in minutes) / analyzed if analyzed else 0.0
    threshold = max(baseline * min_ratio, baseline + min_excess)
    spans: list[list[int]] = []
    width = max(1, min(window, len(minutes)))
    for i in range(len(minutes) - width + 1):
        block = minutes[i:i + width]
        n = sum(m.analyzed for m in block)
        k = sum(m.neg for m in block)
        if k >= min_count and n and k / n >= threshold:
            if spans and i <= spans[-1][1] + 1:
                spans[-1][1] = i + width - 1
            else:
                spans.append([i, i + width - 1])
    moments = []
    for lo, hi in spans:
        # Trim calm edge minutes the sliding windows dragged in: the moment is where the negatives are.
        while lo < hi and minutes[lo].neg_share < threshold:
            lo += 1
        while hi > lo and minutes[hi].neg_share < threshold:
            hi -= 1
        block = minutes[lo:hi + 1]
        tc: Counter[str] = Counter()
        for t in topics[lo:hi + 1]:
            tc.update(t)
        ex: list[str] = []
        for mi in range(lo, hi + 1):
            for text in examples[mi]:
                if text and text not in ex:
                    ex.append(text)
        moments.append(NegativeMoment(
            start_ts=block[0].start_ts, end_ts=block[-1].start_ts + MINUTE_MS,
            analyzed=sum(m.analyzed for m in block), negative=sum(m.neg for m in block), baseline=baseline,
            topics=tuple(tc.most_common(3)), examples=tuple(ex[:5]),
        ))
    strongest = sorted(moments, key=lambda mo: (-mo.negative * mo.share, mo.start_ts))[:MAX_NEGATIVE_MOMENTS]
    return tuple(sorted(strongest, key=lambda mo: mo.start_ts))


def plan_segments(
    start_ts: int, end_ts: int, suggestions: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]
) -> list[_SegmentPlan]:
    """Session segments: the run-sheet's (recorded or suggested switches), else equal time blocks.

    Sources, first that applies: `meta["segments"]` (list of {ts, name}); accepted script switches;
    all script-switch suggestions (what the assistant would have switched to). Segments shorter than
    3 minutes (a tenth of the session, if less) are folded into the next; plans still more fragmented
    than MAX_RUNSHEET_SEGMENTS fall back to time blocks: thirds for sessions up to 30 minutes,
    otherwise blocks of 10-minute multiples (at most 8).
    """
    recorded = meta.get("segments")
    candidates: list[tuple[int, str, str]] = []
    if isinstance(recorded, list):
        for s in recorded:
            if isinstance(s, Mapping) and isinstance(s.get("ts"), int) and s.get("name"):
                candidates.append((int(s["ts"]), str(s["name"]), ""))
    if not candidates:
        switches = [s for s in suggestions if s.get("kind") == "script_switch" and s.get("segment")]
        accepted = [s for s in switches if s.get("state") == "accepted"]
        for s in accepted or switches:
            state_ts = s.get("state_ts")
            ts = int(state_ts) if s.get("state") == "accepted" and state_ts else int(s["created_ts"])
            data = s.get("data") or {}
            candidates.append((ts, str(s["segment"]), str(data.get("from_segment") or "")))
    plan = _runsheet_plan(start_ts, end_ts, candidates) if candidates else None
    return plan if plan is not None else _time_plan(start_ts, end_ts)


def _runsheet_plan(
    start_ts: int, end_ts: int, switches: list[tuple[int, str, str]]
) -> list[_SegmentPlan] | None:
    switches.sort(key=lambda s: s[0])
    min_ms = min(MIN_RUNSHEET_SEGMENT_MS, (end_ts - start_ts) // 10)
    first_name = switches[0][2] or "开场"
    plan = [_SegmentPlan(first_name, start_ts, "runsheet")]
    for ts, name, _ in switches:
        ts = max(ts, start_ts)
        if name == plan[-1].name:
            continue
        if ts - plan[-1].start_ts < min_ms:
            # A segment that barely lasted is folded into the one that replaced it.
            plan[-1] = _SegmentPlan(name, plan[-1].start_ts, "runsheet")
            if len(plan) > 1 and plan[-2].name == name:
                plan.pop()
            continue
        plan.append(_SegmentPlan(name, ts, "runsheet"))
    if len(plan) > MAX_RUNSHEET_SEGMENTS or (len(plan) == 1 and end_ts - start_ts > 30 * MINUTE_MS):
        return None
    return plan


def _time_plan(start_ts: int, end_ts: int) -> list[_SegmentPlan]:
    duration = max(1, end_ts - start_ts)
    if duration <= 30 * MINUTE_MS:
        third = duration / 3
        names = ("前段", "中段", "后段")
        starts = [start_ts + round(i * third) for i in range(3)]
        return [
            _SegmentPlan(f"{n} {format_clock(s)}–{format_clock(e)}", s, "time")
            for n, s, e in zip(names, starts, starts[1:] + [end_ts], strict=True)
        ]
    block_min = max(10, math.ceil(duration / MINUTE_MS / 8 / 10) * 10)
    block = block_min * MINUTE_MS
    starts = list(range(start_ts, end_ts, block))
    ends = starts[1:] + [end_ts]
    return [
        _SegmentPlan(f"{format_clock(s)}–{format_clock(e)}", s, "time")
        for s, e in zip(starts, ends, strict=True)
    ]


def build_targets(
    suggestions: Sequence[Mapping[str, Any]], start_ts: int, end_ts: int, targets: Targets
) -> tuple[TargetRow, ...]:
    """Achieved vs target for prompts/min, coupon intervals and promotional pushes/min.

    Counts what the assistant issued (every suggestion not dismissed): in a replay nobody confirms, so
    this is the cadence the room would have had by following it. Empty when there are no suggestions.
    """
    live = [s for s in suggestions if s.get("state") != "dismissed"]
    if not live:
        return ()
    minutes = max((end_ts - start_ts) / MINUTE_MS, 1 / 60)
    rows: list[TargetRow] = []
    prompts = [s for s in live if s.get("kind") == "prompt"]
    if prompts:
        data = prompts[-1].get("data") or {}
        target = float(data.get("target_per_min") or targets.prompts_per_min)
        rate = len(prompts) / minutes
        idle = sum(1 for s in prompts if (s.get("data") or {}).get("idle"))
        rows.append(TargetRow(
            "互动口令 / 分钟", f"{rate:.1f}",
            f"{target:g} (区间 {targets.prompts_min:g}–{targets.prompts_max:g})",
            targets.prompts_min <= rate <= targets.prompts_max,
            f"共 {len(prompts)} 次, 其中冷场口令 {idle} 次",
        ))
    coupon_ts = sorted(int((s.get("data") or {}).get("due_ts") or s["created_ts"])
                       for s in live if s.get("kind") == "coupon")
    if coupon_ts:
        gaps = [(b - a) / 1000 for a, b in zip(coupon_ts, coupon_ts[1:], strict=False)]
        if gaps:
            mean_gap = statistics.fmean(gaps)
            shortest = min(gaps)
            rows.append(TargetRow(
                "优惠券间隔 (平均)", _fmt_duration(mean_gap), f"约 {_fmt_duration(targets.coupon_cadence_s)}",
                mean_gap <= targets.coupon_cadence_s * 1.25, f"共 {len(coupon_ts)} 次",
            ))
            rows.append(TargetRow(
                "优惠券间隔 (最短)", _fmt_duration(shortest),
                f"≥ {_fmt_duration(targets.coupon_cooldown_s)} (冷却)",
                shortest >= targets.coupon_cooldown_s, "",
            ))
        else:
            rows.append(TargetRow("优惠券", "1 次", f"约每 {_fmt_duration(targets.coupon_cadence_s)} 一次",
                                  None, "只有一次, 无间隔可比"))
        # The longest stretch without a coupon, show start and end included: a budget spent in the
        # first hour of a three-hour show looks fine in the mean interval, not here.
        edges = [start_ts, *coupon_ts, end_ts]
        a, b = max(zip(edges, edges[1:], strict=False), key=lambda ab: ab[1] - ab[0])
        longest = (b - a) / 1000
        rows.append(TargetRow(
            "最长无券时段", _fmt_duration(longest), f"≤ {_fmt_duration(targets.coupon_cadence_s * 1.5)}",
            longest <= targets.coupon_cadence_s * 1.5, f"{format_clock(a)}–{format_clock(b)}",
        ))
    promo_ts = sorted(coupon_ts + [int(s["created_ts"]) for s in live
                                   if s.get("kind") != "coupon" and (s.get("data") or {}).get("promotional")])
    if promo_ts:
        peak = _max_in_window(promo_ts, MINUTE_MS)
        rows.append(TargetRow(
            "促销推送 / 分钟 (峰值)", str(peak), f"≤ {targets.promo_per_min}", peak <= targets.promo_per_min,
            f"平均 {len(promo_ts) / minutes:.2f} / 分钟",
        ))
    return tuple(rows)


def _max_in_window(ts: Sequence[int], window_ms: int) -> int:
    best = lo = 0
    for hi, t in enumerate(ts):
        while t - ts[lo] >= window_ms:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} 秒"
    if seconds >= 3600:
        h, rest = divmod(seconds, 3600)
        return f"{h} 小时 {rest // 60} 分"
    m, s = divmod(seconds, 60)
    return f"{m} 分 {s:02d} 秒" if s else f"{m} 分钟"


_LAYER_STYLE: dict[str, tuple[str, str, bool]] = {
    # kind: (color, plotly marker symbol, vertical lines across panels)
    "script_switch": ("#7c3aed", "diamond", False),
    "coupon": ("#d97706", "star", True),
    "prompt": ("#0891b2", "circle", False),
    "alert": ("#dc2626", "triangle-up", False),
    "answer_card": ("#059669", "square", False),
}


def build_layers(suggestions: Sequence[Mapping[str, Any]]) -> tuple[MarkerLayer, ...]:
    """One marker layer per suggestion kind present, in a fixed order."""
    layers = []
    for kind, (color, symbol, lines) in _LAYER_STYLE.items():
        items = [s for s in suggestions if s.get("kind") == kind]
        if not items:
            continue
        markers = []
        for s in items:
            data = s.get("data") or {}
            ts = int(data.get("due_ts") or s["created_ts"]) if kind == "coupon" else int(s["created_ts"])
            label = str(s.get("segment") or data.get("prompt") or data.get("item") or s.get("rule") or "")
            hover = f"{format_datetime(ts, seconds=True)[11:]} {s.get('text', '')}<br>{s.get('reason', '')}"
            markers.append(Marker(ts, label, hover, str(s.get("state") or "")))
        layers.append(MarkerLayer(kind, KIND_LABELS.get(kind, kind), color, symbol, tuple(markers), lines))
    return tuple(layers)


def _distinctive_keywords(
    counters: Sequence[Counter[str]], *, min_count: int = 3, min_lift: float = 1.5, top: int = 12
) -> list[tuple[tuple[str, int], ...]]:
    """Per segment, the words whose share there is at least `min_lift` × their session share.

    Ranked by count × ln(lift), so a word must be both frequent and characteristic.
    """
    if len(counters) < 2:
        return [() for _ in counters]
    session: Counter[str] = Counter()
    for c in counters:
        session.update(c)
    total = sum(session.values()) or 1
    out = []
    for c in counters:
        seg_total = sum(c.values()) or 1
        scored = []
        for word, n in c.items():
            if n < min_count or _HAS_DIGIT.search(word):
                continue  # quantities (21号, 160斤) are per-comment detail, not what a segment is about
            lift = (n / seg_total) / (session[word] / total)
            if lift >= min_lift:
                scored.append((n * math.log(lift), word, n))
        scored.sort(key=lambda x: (-x[0], x[1]))
        out.append(tuple((word, n) for _, word, n in scored[:top]))
    return out


def _session_range(store: Store, session_id: str) -> tuple[int, int] | None:
    row = store.execute(
        "SELECT MIN(received_ts), MAX(received_ts) FROM events WHERE session_id = ?", (session_id,)
    )
    if not row or row[0][0] is None:
        return None
    return int(row[0][0]), int(row[0][1])


def build_session_report(
    store: Store, session_id: str, *, targets: Targets | None = None,
    observers: Sequence[Callable[[Event, StoredAnalysis | None], None]] = (),
) -> SessionReport:
    """Read one stored session in a single streaming pass and compute its report.

    `observers` see every `(event, analysis)` of the same pass (outcome analytics ride along this way).

    Raises:
        KeyError: no such session in the store.
    """
    info = store.session(session_id)
    if info is None:
        raise KeyError(session_id)
    span = _session_range(store, session_id)
    start_ts, end_ts = span if span is not None else (info.started_ts, info.ended_ts or info.started_ts)
    suggestions = tuple(store.suggestions(session_id))
    plan = plan_segments(start_ts, end_ts, suggestions, info.meta)
    acc = _Pass(start_ts, end_ts, plan)
    # Larger chunks than the default: each chunk query costs a scan of the session's index entries.
    events = store.iter_events(session_id, chunk=ITER_CHUNK)
    if observers:
        for ev, an in events:
            acc.add(ev, an)
            for observe in observers:
                observe(ev, an)
    else:
        for ev, an in events:
            acc.add(ev, an)

    minutes = acc.finish_minutes()
    duration_s = (end_ts - start_ts) / 1000
    headline = Headline(
        duration_s=duration_s, events=acc.events, comments=acc.comments, analyzed=acc.analyzed,
        unique_viewers=len(acc.viewers), commenters=len(acc.commenters),
        sentiment={k: acc.sentiment.get(k, 0) for k in ("neg", "neu", "pos")}, confused=acc.confused,
        buying_intent=acc.intent, distrust=acc.distrust, likes=acc.likes, gifts=acc.gifts,
        gift_value=round(acc.gift_value, 2), enters=acc.enters, follows=acc.follows, shares=acc.shares,
        peak_online=acc.peak_online,
    )
    questions = acc.finish_questions()
    negative = find_negative_moments(
        minutes,
        [[text for _, _, text in sorted(m.neg_examples, reverse=True)] for m in acc.minutes],
        [m.neg_topics for m in acc.minutes],
    )
    distinctive = _distinctive_keywords([s.keywords for s in acc.segments])
    segments = []
    for i, (p, s) in enumerate(zip(plan, acc.segments, strict=True)):
        seg_end = plan[i + 1].start_ts if i + 1 < len(plan) else end_ts
        segments.append(SegmentSummary(
            name=p.name, start_ts=p.start_ts, end_ts=seg_end, source=p.source, comments=s.comments,
            analyzed=s.analyzed, neg=s.neg, confused=s.confused, top_topics=tuple(s.topics.most_common(3)),
            keywords=tuple(sorted(s.keywords.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_KEYWORDS]),
            distinctive=distinctive[i],
        ))
    rs = info.meta.get("replay_stats") or {}
    quality = DataQuality(
        path=rs.get("path"), format=rs.get("format"), encoding=rs.get("encoding"),
        lines_read=rs.get("lines_read"), events_read=rs.get("events"),
        skipped=dict(rs.get("skipped") or {}), pipeline=dict(info.meta.get("pipeline") or {}),
        stored_events=acc.events, comments=acc.comments, unanalyzed_comments=acc.unanalyzed,
        classifiers=dict(acc.classifiers),
        platform_delays={p: PlatformDelaySummary.of(d) for p, d in sorted(acc.delays.items()) if d},
    )
    bands: tuple[Band, ...] = ()
    if plan and plan[0].source == "runsheet":
        bands = tuple(Band(s.start_ts, s.end_ts, s.name) for s in segments)
    return SessionReport(
        session_id=session_id, room=info.room, source=info.source, start_ts=start_ts, end_ts=end_ts,
        headline=headline, minutes=minutes, topics=tuple(acc.question_topics.most_common()),
        questions=questions[:QUESTIONS_KEPT], question_groups_total=len(questions) + acc.groups_evicted,
        negative_moments=negative,
        segments=tuple(segments), data_quality=quality, suggestions=suggestions,
        targets=build_targets(suggestions, start_ts, end_ts, targets or Targets()),
        layers=build_layers(suggestions), bands=bands,
    )
