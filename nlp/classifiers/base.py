"""Classifier protocol: a batch of normalised texts in, one Prediction per text out, same order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "livecomment-zh"
"""The transformer model shipped with livebot (defined here, torch-free, for the training CLI too)."""

Sentiment = Literal["neg", "neu", "pos"]
SENTIMENTS: tuple[Sentiment, Sentiment, Sentiment] = ("neg", "neu", "pos")


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a classifier says about one text."""

    sentiment_probs: tuple[float, float, float]
    """P(neg), P(neu), P(pos); sums to 1."""
    confusion_score: float
    """P(the viewer asks for information or does not understand), 0..1."""

    @property
    def sentiment(self) -> Sentiment:
        i = max(range(3), key=lambda k: self.sentiment_probs[k])
        return SENTIMENTS[i]

    @property
    def confusion(self) -> bool:
        return self.confusion_score >= 0.5

    @property
    def confidence(self) -> float:
        """The lower of the two decisions' confidences (used for needs_review)."""
        c = self.confusion_score
        return min(max(self.sentiment_probs), max(c, 1.0 - c))


class Classifier(Protocol):
    name: str

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify normalised texts; thread-safe; output order equals input order."""
        ...
