"""Analyzer facade: raw comments in, one `Analysis` per comment out, same order.

normalize → classifier (batched) → emote polarity folded in → topics, keywords, buying intent, distrust.
CPU-bound and synchronous: the pipeline calls it from a worker thread. Thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nlp import segment
from nlp.classifiers import Classifier, Sentiment, make_classifier
from nlp.classifiers.base import SENTIMENTS, Prediction
from nlp.classifiers.rules import BuyingIntent
from nlp.compliance import ComplianceLexicon, default_compliance
from nlp.normalize import emote_polarity, normalize
from nlp.topics import default_distrust, default_tagger

MAX_CHARS = 256
"""Longer comments are cut to this many characters before analysis (bounds the cost of one comment)."""

# How strongly one unit of emote polarity pulls toward its side and away from neutral: [赞] (1.5) turns
# an otherwise empty comment positive; [流泪] (-0.5) alone stays neutral.
_EMOTE_PULL = 1.0


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the NLP layer says about one comment."""

    text: str
    """The normalised text that was classified."""
    sentiment: Sentiment
    sentiment_probs: tuple[float, float, float]
    """P(neg), P(neu), P(pos), emotes included; sums to 1."""
    confusion: bool
    confusion_score: float
    topics: tuple[str, ...]
    """Lexicon topics, in `nlp.topics.TOPICS` order; ("other",) when none matched."""
    keywords: tuple[str, ...]
    asks_host: bool
    """The viewer addressed the host (@主播 / 主播, …)."""
    buying_intent: bool
    """已拍 / 扣1 / 上车 … (weak markers don't count inside a question)."""
    distrust: bool
    """骗 / 假货 / 退款 / 投诉 … (not teasing such as 真的假的)."""
    confidence: float
    """The lower of the sentiment and confusion confidences (`Prediction.confidence`)."""
    classifier: str
    compliance_terms: tuple[str, ...] = ()
    """Advertising-law absolute terms or banned-category words the viewer quotes (全网最低, 100% …)."""


def _with_emotes(probs: tuple[float, float, float], polarity: float) -> tuple[float, float, float]:
    if polarity == 0.0:
        return probs
    neg = probs[0] * math.exp(-_EMOTE_PULL * polarity)
    neu = probs[1] * math.exp(-_EMOTE_PULL * abs(polarity))
    pos = probs[2] * math.exp(_EMOTE_PULL * polarity)
    total = neg + neu + pos
    return (neg / total, neu / total, pos / total)


def _sentiment_of(probs: tuple[float, float, float]) -> Sentiment:
    return SENTIMENTS[max(range(3), key=probs.__getitem__)]


class Analyzer:
    """Batch analysis of comments with one classifier.

    Args:
        classifier: a Classifier, or a registry name ("rules", "snownlp", "transformer").
        keywords: how many keywords to extract per comment; 0 skips segmentation entirely.
        compliance: the lexicon comments are checked against; None = nlp/lexicons/compliance.yaml.
    """

    def __init__(
        self, classifier: Classifier | str = "rules", keywords: int = 3, *,
        compliance: ComplianceLexicon | None = None,
    ) -> None:
        if keywords < 0:
            raise ValueError("keywords must be >= 0")
        self.classifier: Classifier = (
            make_classifier(classifier) if isinstance(classifier, str) else classifier
        )
        self.keywords = keywords
        self._topics = default_tagger()
        self._distrust = default_distrust()
        self._buying = BuyingIntent.load()
        self._compliance = compliance or default_compliance()
        if keywords:
            segment.warm_up()

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        """Analyse a batch of raw comments; the result has one Analysis per input, in order."""
        normalized = [normalize(t[:MAX_CHARS] if len(t) > MAX_CHARS else t) for t in texts]
        predictions: list[Prediction] = self.classifier.predict([n.text for n in normalized])
        if len(predictions) != len(normalized):
            raise RuntimeError(
                f"classifier {self.classifier.name!r} returned {len(predictions)} predictions "
                f"for {len(normalized)} texts"
            )
        name = self.classifier.name
        out = []
        for norm, pred in zip(normalized, predictions, strict=True):
            text = norm.text
            probs = _with_emotes(pred.sentiment_probs, emote_polarity(norm.emotes))
            confusion = pred.confusion
            confusion_score = pred.confusion_score
            c = confusion_score
            out.append(
                Analysis(
                    text=text,
                    sentiment=_sentiment_of(probs),
                    sentiment_probs=probs,
                    confusion=confusion,
                    confusion_score=confusion_score,
                    topics=self._topics.tag(text),
                    keywords=tuple(segment.keywords(text, self.keywords)) if self.keywords else (),
                    asks_host=norm.asks_host,
                    buying_intent=self._buying(text, confusion),
                    distrust=self._distrust(text),
                    confidence=min(max(probs), max(c, 1.0 - c)),
                    classifier=name,
                    compliance_terms=self._compliance.comment_terms(text),
                )
            )
        return out

    def analyze_one(self, text: str) -> Analysis:
        return self.analyze([text])[0]
