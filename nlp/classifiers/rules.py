"""Lexicon and regex classifier: fast, explainable, no model files.

Sentiment: one scan of a combined regex ``(negator)?(intensifier)?(phrase)`` over the text, longest phrase
first (``nlp/lexicons/sentiment.yaml``); negation flips a phrase, intensifiers scale it, the clause after
但是/不过 counts more, and questions mostly lose their polarity (好看吗 asks, it doesn't praise) unless
they carry a complaint marker (怎么还不发货). Evidence becomes probabilities through a softmax whose
offsets make a comment without polar words neutral.

Confusion: a logistic score over weighted regex features (``nlp/lexicons/confusion.yaml``): question
marks, 吗/呢, wh-words, A-not-A, "没看懂/找不到", minus rhetorical questions, teasing, requests and
statements that merely contain a question word.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlp.classifiers.base import Prediction

LEXICON_DIR = Path(__file__).resolve().parent.parent / "lexicons"
SENTIMENT_FILE = LEXICON_DIR / "sentiment.yaml"
CONFUSION_FILE = LEXICON_DIR / "confusion.yaml"

# Softmax offsets and slope: with no polar phrase P(neu) ~ 0.8; one plain polar phrase (weight 1.5)
# makes its side win with ~0.55; two make it ~0.9. P(neg) starts slightly above P(pos): on neg/pos-only
# data a text with no polar phrase is more often a complaint (complaints tell facts: 一个半小时才送到).
_NEG_OFFSET = -2.0
_POS_OFFSET = -2.05
_SLOPE = 1.5
# Past this length a text without polar words is a review or a story, not a neutral chat line.
_LONG_TEXT = 40
_QUESTION_POS_FACTOR = 0.3
_QUESTION_NEG_FACTOR = 0.4
_CONTRAST_AFTER = 1.3
_CONTRAST_BEFORE = 0.7
_NEGATED_POSITIVE = -0.9
_NEGATED_NEGATIVE = -0.5
_CLEARLY_POSITIVE = 1.4


def _alternation(words: Sequence[str]) -> str:
    """A regex matching any of words, longest first, factored into a trie.

    Python's ``re`` tries the branches of ``a|b|c`` one by one at every position; with hundreds of
    phrases a prefix trie (``好(?:看|听)?``) makes the scan several times faster, with the same matches.
    """
    trie: dict[str, Any] = {}
    for word in set(words):
        if not word:
            continue
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _trie_pattern(trie)


def _trie_pattern(node: dict[str, Any]) -> str:
    terminal = "" in node
    leaves = sorted(ch for ch, child in node.items() if ch and list(child) == [""])
    branches = [
        re.escape(ch) + _trie_pattern(child)
        for ch, child in sorted(node.items())
        if ch and list(child) != [""]
    ]
    if leaves:
        branches.append(
            re.escape(leaves[0]) if len(leaves) == 1 else "[" + "".join(map(re.escape, leaves)) + "]"
        )
    if not branches:
        return ""
    body = (
        branches[0]
        if len(branches) == 1 and not terminal and len(node) == 1
        else "(?:" + "|".join(branches) + ")"
    )
    return body + "?" if terminal else body


def _words(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return [str(v).lower() for v in value if str(v).strip()]


@dataclass(frozen=True, slots=True)
class SentimentLexicon:
    """Compiled sentiment lexicon; build with `from_mapping` or `load`."""

    phrase_re: re.Pattern[str]
    weights: Mapping[str, float]
    """Signed weight per phrase; 0 for neutral phrases."""
    intensifiers: Mapping[str, float]
    imperative_negators: frozenset[str]
    """Negators that cancel rather than flip a negative phrase."""
    contrast_re: re.Pattern[str] | None
    complaint_re: re.Pattern[str] | None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<sentiment>") -> SentimentLexicon:
        weights: dict[str, float] = {}
        origin: dict[str, str] = {}
        for section, sign in (("positive", 1.0), ("negative", -1.0)):
            tiers = data.get(section) or {}
            if not isinstance(tiers, Mapping):
                raise ValueError(f"{source}: {section}: expected weight -> list of phrases")
            for weight, phrases in tiers.items():
                for phrase in _words(phrases, f"{source}: {section}.{weight}"):
                    if phrase in origin and origin[phrase] != section:
                        raise ValueError(f"{source}: {phrase!r} is in both {origin[phrase]} and {section}")
                    value = sign * float(weight)
                    if abs(value) > abs(weights.get(phrase, 0.0)):
                        weights[phrase] = value
                    origin[phrase] = section
        for phrase in _words(data.get("neutral"), f"{source}: neutral"):
            if phrase in origin:
                raise ValueError(f"{source}: {phrase!r} is in both {origin[phrase]} and neutral")
            weights[phrase] = 0.0
            origin[phrase] = "neutral"
        negators = _words(data.get("negators"), f"{source}: negators")
        intensifiers = {str(k).lower(): float(v) for k, v in (data.get("intensifiers") or {}).items()}
        if not weights:
            raise ValueError(f"{source}: no sentiment phrases")
        words = _alternation(list(weights))
        # A listed phrase at a position beats negator/intensifier + a shorter phrase: 不好听 and 特别好 are
        # phrases of their own, while 不漂亮 is 不 + 漂亮. Python's alternation takes the first branch that
        # matches, so the bare phrase comes first.
        branches = [f"(?P<word>{words})"]
        if negators:
            intens = f"(?P<int>{_alternation(list(intensifiers))})?" if intensifiers else ""
            branches.append(f"(?P<neg>{_alternation(negators)}){intens}(?P<nword>{words})")
        if intensifiers:
            branches.append(f"(?P<int2>{_alternation(list(intensifiers))})(?P<iword>{words})")
        contrast = _words(data.get("contrast"), f"{source}: contrast")
        complaint = _words(data.get("complaint_question"), f"{source}: complaint_question")
        return cls(
            phrase_re=re.compile("|".join(branches)),
            weights=weights,
            intensifiers=intensifiers,
            imperative_negators=frozenset(
                _words(data.get("imperative_negators"), f"{source}: imperative_negators")
            ),
            contrast_re=re.compile(_alternation(contrast)) if contrast else None,
            complaint_re=re.compile(_alternation(complaint)) if complaint else None,
        )

    @classmethod
    def load(cls, path: Path = SENTIMENT_FILE) -> SentimentLexicon:
        return cls.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))


@dataclass(frozen=True, slots=True)
class ConfusionFeatures:
    """Weighted regex features of a question; build with `from_mapping` or `load`."""

    bias: float
    positive_sentiment: float
    """Added when the comment is clearly positive (咋这么可爱 exclaims rather than asks)..."""
    positive_unless: frozenset[str]
    """...unless one of these features fired (好看吗? still asks)."""
    features: tuple[tuple[str, float, re.Pattern[str]], ...]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<confusion>") -> ConfusionFeatures:
        features = []
        for i, item in enumerate(data.get("features") or []):
            try:
                features.append((str(item["name"]), float(item["weight"]), re.compile(str(item["pattern"]))))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{source}: features[{i}]: needs name, weight and pattern ({exc})") from exc
            except re.error as exc:
                raise ValueError(f"{source}: features[{i}] ({item.get('name')}): {exc}") from exc
        return cls(
            bias=float(data.get("bias", -3.0)),
            positive_sentiment=float(data.get("positive_sentiment", 0.0)),
            positive_unless=frozenset(_words(data.get("positive_unless"), f"{source}: positive_unless")),
            features=tuple(features),
        )

    @classmethod
    def load(cls, path: Path = CONFUSION_FILE) -> ConfusionFeatures:
        return cls.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))

    def logit(self, text: str) -> tuple[float, bool]:
        """The confusion logit from the features alone, and whether a `positive_unless` feature fired."""
        z = self.bias
        asks = False
        for name, weight, pattern in self.features:
            if pattern.search(text):
                z += weight
                if name in self.positive_unless:
                    asks = True
        return z, asks

    def matched(self, text: str) -> list[str]:
        return [name for name, _, pattern in self.features if pattern.search(text)]


@dataclass(frozen=True, slots=True)
class RulesScore:
    """The evidence behind one rules prediction (for explanations and for the SnowNLP baseline)."""

    positive: float
    """Summed positive evidence after negation, intensifiers and question damping."""
    negative: float
    """Summed negative evidence (a magnitude, >= 0)."""
    confusion_logit: float
    phrases: tuple[tuple[str, float], ...]
    """Each matched polar phrase (with its negator/intensifier) and its signed contribution."""

    @property
    def polar(self) -> bool:
        return self.positive > 0.0 or self.negative > 0.0


def _softmax3(a: float, b: float, c: float) -> tuple[float, float, float]:
    m = max(a, b, c)
    ea, eb, ec = math.exp(a - m), math.exp(b - m), math.exp(c - m)
    s = ea + eb + ec
    return (ea / s, eb / s, ec / s)


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class RulesClassifier:
    """Lexicon/regex sentiment and confusion; thread-safe (immutable after construction)."""

    name = "rules"

    def __init__(
        self,
        sentiment: SentimentLexicon | None = None,
        confusion: ConfusionFeatures | None = None,
    ) -> None:
        self.sentiment = sentiment or SentimentLexicon.load()
        self.confusion = confusion or ConfusionFeatures.load()

    def score(self, text: str) -> RulesScore:
        """Evidence for one normalised text."""
        if not text:
            return RulesScore(0.0, 0.0, self.confusion.bias, ())
        lex = self.sentiment
        z, asks = self.confusion.logit(text)
        split = -1
        if lex.contrast_re is not None:
            for m in lex.contrast_re.finditer(text):
                if m.start() > 1:
                    split = m.start()
        pos = neg = 0.0
        phrases: list[tuple[str, float]] = []
        for m in lex.phrase_re.finditer(text):
            groups: dict[str, str | None] = m.groupdict()
            word = groups["word"] or groups.get("nword") or groups.get("iword") or ""
            weight = lex.weights[word]
            if weight == 0.0:
                continue
            intensifier = groups.get("int") or groups.get("int2")
            if intensifier:
                weight *= lex.intensifiers[intensifier]
            negator = groups.get("neg")
            if negator:
                if weight > 0:
                    weight *= _NEGATED_POSITIVE
                elif negator in lex.imperative_negators:
                    # A warning or a reassurance, not praise.
                    continue
                else:
                    weight *= _NEGATED_NEGATIVE
            if split >= 0:
                weight *= _CONTRAST_AFTER if m.start() > split else _CONTRAST_BEFORE
            phrases.append((m.group(0), weight))
            if weight > 0:
                pos += weight
            else:
                neg -= weight
        if pos >= _CLEARLY_POSITIVE and not asks:
            z += self.confusion.positive_sentiment
        if z > 0.0 and (pos or neg):
            # A real question asks rather than judges, unless it is a complaint in question form.
            pos *= _QUESTION_POS_FACTOR
            if lex.complaint_re is None or not lex.complaint_re.search(text):
                neg *= _QUESTION_NEG_FACTOR
        return RulesScore(pos, neg, z, tuple(phrases))

    def predict_one(self, text: str) -> Prediction:
        s = self.score(text)
        neu = 0.0 if len(text) < _LONG_TEXT else -1.0
        probs = _softmax3(_NEG_OFFSET + _SLOPE * s.negative, neu, _POS_OFFSET + _SLOPE * s.positive)
        return Prediction(sentiment_probs=probs, confusion_score=_sigmoid(s.confusion_logit))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return [self.predict_one(t) for t in texts]

    def explain(self, text: str) -> dict[str, Any]:
        """What fired for a text: polar phrases with weights and confusion features (for lexicon tuning)."""
        s = self.score(text)
        return {
            "phrases": list(s.phrases),
            "positive": s.positive,
            "negative": s.negative,
            "confusion_features": self.confusion.matched(text),
            "confusion_logit": s.confusion_logit,
        }


@dataclass(frozen=True, slots=True)
class BuyingIntent:
    """Detects purchase signals (已拍 / 扣1 / 上车 …) from the ``buying_intent`` section of sentiment.yaml."""

    strong_re: re.Pattern[str] | None
    weak_re: re.Pattern[str] | None
    blocker_re: re.Pattern[str] | None
    bare_ones: bool

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<sentiment>") -> BuyingIntent:
        section = data.get("buying_intent") or {}
        strong = _words(section.get("strong"), f"{source}: buying_intent.strong")
        weak = _words(section.get("weak"), f"{source}: buying_intent.weak")
        blockers = _words(section.get("blockers"), f"{source}: buying_intent.blockers")
        return cls(
            strong_re=re.compile(_alternation(strong)) if strong else None,
            weak_re=re.compile(_alternation(weak)) if weak else None,
            blocker_re=re.compile(_alternation(blockers)) if blockers else None,
            bare_ones=bool(section.get("bare_ones", False)),
        )

    @classmethod
    def load(cls, path: Path = SENTIMENT_FILE) -> BuyingIntent:
        return cls.from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))

    def __call__(self, text: str, is_question: bool) -> bool:
        """True when a normalised comment signals a purchase; weak markers don't count inside a question."""
        if not text:
            return False
        if self.blocker_re is not None and self.blocker_re.search(text):
            return False
        if self.strong_re is not None and self.strong_re.search(text):
            return True
        if is_question:
            return False
        if self.bare_ones and text.strip("1 ") == "" and "1" in text:
            # A comment of only 1s answers the host's 扣1 call.
            return True
        return self.weak_re is not None and self.weak_re.search(text) is not None
