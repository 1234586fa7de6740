"""Merging near-duplicate viewer questions: a canonical key per question and a bounded cluster accumulator.

``question_key`` maps 多少钱 / 多少米 / 价格多少 / 这个多少钱啊 to one key, 160斤穿什么码 / 160斤什么码 to
another, using the intent phrases of ``nlp/lexicons/questions.yaml``. ``QuestionClusters`` counts the keys
of a session and keeps a few verbatim examples of each, so a host sees "18× 160斤穿什么码"
instead of 18 lines.
"""

from __future__ import annotations

import heapq
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlp.normalize import normalize

QUESTIONS_FILE = Path(__file__).resolve().parent / "lexicons" / "questions.yaml"

_NOT_WORD = re.compile(r"[\W_]+")
_RESIDUAL_MAX = 24


@dataclass(frozen=True, slots=True)
class _QuestionLexicon:
    intent_re: re.Pattern[str]
    quantity_re: re.Pattern[str]
    intent_of: dict[str, str]
    intent_rank: dict[str, int]
    generic: frozenset[str]
    """Phrases that count only when the question has no other, more specific intent phrase."""
    drop_re: re.Pattern[str] | None


def _alternation(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))


def _build_lexicon(data: dict[str, Any]) -> _QuestionLexicon:
    intent_of: dict[str, str] = {}
    intent_rank: dict[str, int] = {}
    for rank, (name, phrases) in enumerate((data.get("intents") or {}).items()):
        intent_rank[str(name)] = rank
        for phrase in phrases:
            intent_of[str(phrase).lower()] = str(name)
    generic = frozenset(str(w).lower() for w in data.get("generic") or [])
    unknown = sorted(generic - set(intent_of))
    if unknown:
        raise ValueError(f"{QUESTIONS_FILE.name}: generic phrases missing from intents: {unknown}")
    drop = [str(w).lower() for w in data.get("drop") or []]
    units = [str(u).lower() for u in data.get("quantity_units") or []]
    parts = [rf"\d+(?:\.\d+)?\s*(?:{_alternation(units)})"] if units else []
    parts += [f"(?:{p})" for p in data.get("quantity_patterns") or []]
    # Without any unit nothing counts as a quantity ("(?!)" never matches).
    quantity = "|".join(parts) or "(?!)"
    return _QuestionLexicon(
        intent_re=re.compile(_alternation(list(intent_of))),
        quantity_re=re.compile(quantity),
        intent_of=intent_of,
        intent_rank=intent_rank,
        generic=generic,
        drop_re=re.compile(_alternation(drop)) if drop else None,
    )


_lock = threading.Lock()
_lexicon: _QuestionLexicon | None = None


def _get_lexicon() -> _QuestionLexicon:
    global _lexicon
    if _lexicon is None:
        with _lock:
            if _lexicon is None:
                _lexicon = _build_lexicon(yaml.safe_load(QUESTIONS_FILE.read_text(encoding="utf-8")) or {})
    return _lexicon


def question_key(text: str, topic: str) -> str:
    """Canonical key of a question: equal keys mean "the same question" for the host.

    With known intents the key is ``topic:intent+intent|quantities`` (``size_fit:尺码|160斤``); otherwise
    it is ``topic:`` plus the text without particles, host address, fillers and punctuation.
    """
    lexicon = _get_lexicon()
    text = normalize(text).text
    quantities = [_NOT_WORD.sub("", q) for q in lexicon.quantity_re.findall(text)]
    phrases = lexicon.intent_re.findall(text)
    specific = [m for m in phrases if m not in lexicon.generic]
    # A more specific phrase wins over a generic one: 什么时候发券 is about the coupon (券), not shipping.
    intents = {lexicon.intent_of[m] for m in (specific or phrases)}
    if intents:
        key = f"{topic}:" + "+".join(sorted(intents, key=lexicon.intent_rank.__getitem__))
        if quantities:
            key += "|" + ",".join(sorted(set(quantities)))
        return key
    if lexicon.drop_re is not None:
        text = lexicon.drop_re.sub("", text)
    residual = _NOT_WORD.sub("", text)[:_RESIDUAL_MAX]
    return f"{topic}:{residual or '?'}"


@dataclass(frozen=True, slots=True)
class QuestionCluster:
    """A snapshot of one group of near-duplicate questions."""

    key: str
    topic: str
    count: int
    first_ts: int
    """Event time (Unix ms) of the first question in the cluster."""
    last_ts: int
    peak_minute: int
    """The minute (Unix ms // 60000) in which this question was asked most often."""
    peak_count: int
    examples: tuple[str, ...]
    """Up to `QuestionClusters.max_examples` distinct verbatim comments, oldest first."""


@dataclass(slots=True)
class _Cluster:
    key: str
    topic: str
    count: int
    first_ts: int
    last_ts: int
    peak_minute: int
    peak_count: int
    examples: list[str]
    minutes: dict[int, int] = field(default_factory=dict)

    def snapshot(self) -> QuestionCluster:
        return QuestionCluster(
            key=self.key,
            topic=self.topic,
            count=self.count,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            peak_minute=self.peak_minute,
            peak_count=self.peak_count,
            examples=tuple(self.examples),
        )


class QuestionClusters:
    """Counts questions by `question_key`; memory is bounded by evicting the least-asked clusters.

    Not thread-safe: it belongs to one RoomState, which is only touched from the event loop.
    """

    def __init__(self, max_clusters: int = 500, max_examples: int = 3, minutes_kept: int = 30) -> None:
        if max_clusters < 1 or max_examples < 1 or minutes_kept < 1:
            raise ValueError("max_clusters, max_examples and minutes_kept must be at least 1")
        self.max_clusters = max_clusters
        self.max_examples = max_examples
        self.minutes_kept = minutes_kept
        self._clusters: dict[str, _Cluster] = {}
        self.evicted = 0
        """How many clusters were dropped to stay within max_clusters."""

    def __len__(self) -> int:
        return len(self._clusters)

    def add(self, text: str, topic: str, ts: int) -> str:
        """Count one question asked at event time ts (Unix ms); returns its key."""
        key = question_key(text, topic)
        minute = ts // 60_000
        cluster = self._clusters.get(key)
        if cluster is None:
            if len(self._clusters) >= self.max_clusters:
                self._evict()
            cluster = _Cluster(key, topic, 0, ts, ts, minute, 0, [])
            self._clusters[key] = cluster
        cluster.count += 1
        cluster.first_ts = min(cluster.first_ts, ts)
        cluster.last_ts = max(cluster.last_ts, ts)
        in_minute = cluster.minutes.get(minute, 0) + 1
        cluster.minutes[minute] = in_minute
        if in_minute > cluster.peak_count:
            cluster.peak_count = in_minute
            cluster.peak_minute = minute
        if len(cluster.minutes) > self.minutes_kept:
            # Old minutes can no longer become the peak once they are this far behind; keep the newest.
            for old in sorted(cluster.minutes)[: len(cluster.minutes) - self.minutes_kept]:
                del cluster.minutes[old]
        example = text.strip()
        if example and len(cluster.examples) < self.max_examples and example not in cluster.examples:
            cluster.examples.append(example)
        return key

    def _evict(self) -> None:
        # Drop a tenth at once (least asked, then least recent) so eviction cost is amortised.
        n = max(1, self.max_clusters // 10)
        victims = heapq.nsmallest(n, self._clusters.values(), key=lambda c: (c.count, c.last_ts))
        for victim in victims:
            del self._clusters[victim.key]
        self.evicted += len(victims)

    def get(self, key: str) -> QuestionCluster | None:
        cluster = self._clusters.get(key)
        return cluster.snapshot() if cluster else None

    def top(self, n: int = 5, topic: str | None = None) -> list[QuestionCluster]:
        """The n most asked clusters (ties: most recent first), optionally of one topic."""
        clusters = (c for c in self._clusters.values() if topic is None or c.topic == topic)
        best = heapq.nsmallest(n, clusters, key=lambda c: (-c.count, -c.last_ts, c.key))
        return [c.snapshot() for c in best]
