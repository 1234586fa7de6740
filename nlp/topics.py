"""Topic tagging and distrust detection from editable lexicons.

The lexicons are ``nlp/lexicons/topics.yaml`` and ``nlp/lexicons/sensitive.yaml``.

All keywords of all topics go into one alternation (longest first), so a comment is scanned once; the few
regex patterns a topic may add are grouped into one compiled expression per topic. A topic's
``generic_patterns`` (什么时候发: a verb without its object) tag it only when no other topic matched, so the
more specific word wins: 什么时候发券 / 红包什么时候发 are coupon questions, 什么时候发 alone is shipping.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LEXICON_DIR = Path(__file__).resolve().parent / "lexicons"
TOPICS_FILE = LEXICON_DIR / "topics.yaml"
SENSITIVE_FILE = LEXICON_DIR / "sensitive.yaml"

TOPICS: tuple[str, ...] = (
    "price",
    "size_fit",
    "shipping",
    "quality",
    "link_howto",
    "after_sales",
    "coupon",
    "stock",
    "usage",
    "host",
    "other",
)
"""Every topic a comment can carry (the set DESIGN.md's interfaces pin); ``other`` means none of the lexicon
topics matched. The run-sheet checker uses this tuple; the screen, the reports and the alerts name every one
(tests check that each label map covers it)."""

TOPIC_LABELS: dict[str, str] = {
    "price": "价格",
    "size_fit": "尺码",
    "shipping": "发货",
    "quality": "质量",
    "link_howto": "链接",
    "after_sales": "售后",
    "coupon": "优惠券",
    "stock": "库存",
    "usage": "用法",
    "host": "主播",
    "other": "其他",
}
"""The one Chinese name of each topic, short enough for a badge on the host screen; the host screen
(``common.js``), the advisors' texts, the alerts, the reports and the terminal all use it (a test checks the
screen's copy), so 场控 sees the same word everywhere."""

OTHER = "other"


def _literal_alternation(words: Iterable[str]) -> str:
    # Longest first, so 运费险 (after_sales) wins over 运费 (shipping) at the same position.
    return "|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w)))


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise ValueError(f"{where}: expected a list of strings")
    return [str(v).lower() for v in value]


@dataclass(frozen=True, slots=True)
class TopicTagger:
    """Tags text with the topics of a lexicon; build it with `TopicTagger.from_mapping` or `load`."""

    order: tuple[str, ...]
    keyword_re: re.Pattern[str] | None
    keyword_topics: Mapping[str, tuple[str, ...]]
    pattern_res: tuple[tuple[str, re.Pattern[str]], ...]
    generic_res: tuple[tuple[str, re.Pattern[str]], ...] = ()
    """Patterns that tag their topic only when no other topic matched the text."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<topics>") -> TopicTagger:
        """Build from ``{topic: {keywords: [...], patterns: [...], generic_patterns: [...]}}``.

        Raises:
            ValueError: an entry is malformed (the message names it).
        """
        order: list[str] = []
        keyword_topics: dict[str, list[str]] = {}
        pattern_res: list[tuple[str, re.Pattern[str]]] = []
        generic_res: list[tuple[str, re.Pattern[str]]] = []
        for topic, spec in data.items():
            if topic == OTHER:
                raise ValueError(f"{source}: topic {OTHER!r} is implicit and cannot have keywords")
            if not isinstance(spec, Mapping):
                raise ValueError(f"{source}: {topic}: expected a mapping with keywords/patterns")
            unknown = set(spec) - {"keywords", "patterns", "generic_patterns"}
            if unknown:
                raise ValueError(f"{source}: {topic}: unknown key(s) {sorted(unknown)}")
            order.append(str(topic))
            for word in _string_list(spec.get("keywords"), f"{source}: {topic}.keywords"):
                keyword_topics.setdefault(word, []).append(str(topic))
            for key, compiled in (("patterns", pattern_res), ("generic_patterns", generic_res)):
                patterns = _string_list(spec.get(key), f"{source}: {topic}.{key}")
                if patterns:
                    try:
                        compiled.append((str(topic), re.compile("|".join(f"(?:{p})" for p in patterns))))
                    except re.error as exc:
                        raise ValueError(f"{source}: {topic}.{key}: {exc}") from exc
        keyword_re = re.compile(_literal_alternation(keyword_topics)) if keyword_topics else None
        return cls(
            order=tuple(order),
            keyword_re=keyword_re,
            keyword_topics={w: tuple(t) for w, t in keyword_topics.items()},
            pattern_res=tuple(pattern_res),
            generic_res=tuple(generic_res),
        )

    @classmethod
    def load(cls, path: Path = TOPICS_FILE) -> TopicTagger:
        return cls.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))

    def tag(self, text: str) -> tuple[str, ...]:
        """Topics of a normalised text in lexicon order; ("other",) when none matches."""
        found: set[str] = set()
        if text:
            if self.keyword_re is not None:
                for word in self.keyword_re.findall(text):
                    found.update(self.keyword_topics[word])
            for topic, pattern in self.pattern_res:
                if topic not in found and pattern.search(text):
                    found.add(topic)
            if not found:
                # Generic patterns only speak when nothing more specific did.
                found.update(topic for topic, pattern in self.generic_res if pattern.search(text))
        if not found:
            return (OTHER,)
        return tuple(t for t in self.order if t in found)


@dataclass(frozen=True, slots=True)
class DistrustDetector:
    """Finds distrust / escalation words (骗, 假货, 退款, 投诉…) while ignoring teasing idioms (真的假的)."""

    trigger_re: re.Pattern[str] | None
    ignore_re: re.Pattern[str] | None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<sensitive>") -> DistrustDetector:
        unknown = set(data) - {"words", "patterns", "ignore"}
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {sorted(unknown)}")
        words = _string_list(data.get("words"), f"{source}: words")
        patterns = _string_list(data.get("patterns"), f"{source}: patterns")
        ignore = _string_list(data.get("ignore"), f"{source}: ignore")
        parts = ([_literal_alternation(words)] if words else []) + [f"(?:{p})" for p in patterns]
        try:
            trigger_re = re.compile("|".join(parts)) if parts else None
        except re.error as exc:
            raise ValueError(f"{source}: patterns: {exc}") from exc
        ignore_re = re.compile(_literal_alternation(ignore)) if ignore else None
        return cls(trigger_re=trigger_re, ignore_re=ignore_re)

    @classmethod
    def load(cls, path: Path = SENSITIVE_FILE) -> DistrustDetector:
        return cls.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))

    def find(self, text: str) -> list[str]:
        """The distrust words found in a normalised text (ignored idioms removed first)."""
        if self.trigger_re is None or not text:
            return []
        if self.ignore_re is not None:
            text = self.ignore_re.sub(" ", text)
        return [m.group(0) for m in self.trigger_re.finditer(text)]

    def __call__(self, text: str) -> bool:
        if self.trigger_re is None or not text:
            return False
        if self.ignore_re is not None:
            text = self.ignore_re.sub(" ", text)
        return self.trigger_re.search(text) is not None


_lock = threading.Lock()
_default_tagger: TopicTagger | None = None
_default_distrust: DistrustDetector | None = None


def default_tagger() -> TopicTagger:
    """The tagger for the shipped lexicon, loaded once."""
    global _default_tagger
    if _default_tagger is None:
        with _lock:
            if _default_tagger is None:
                _default_tagger = TopicTagger.load()
    return _default_tagger


def default_distrust() -> DistrustDetector:
    """The distrust detector for the shipped lexicon, loaded once."""
    global _default_distrust
    if _default_distrust is None:
        with _lock:
            if _default_distrust is None:
                _default_distrust = DistrustDetector.load()
    return _default_distrust


def tag_topics(text: str) -> tuple[str, ...]:
    """Topics of a normalised comment, e.g. ("price",) for 这个多少钱; ("other",) when none matches."""
    return default_tagger().tag(text)


def distrust(text: str) -> bool:
    """True when a normalised comment voices distrust (骗/假货/退款/投诉…), not 真的假的-style teasing."""
    return default_distrust()(text)
