"""SnowNLP baseline: SnowNLP's review-trained naive Bayes decides pos vs neg; the rules decide the rest.

SnowNLP has no neutral class and no notion of a question, so neutrality (short comments, no polar words)
and confusion come from `RulesClassifier`; SnowNLP only splits the polar probability mass between neg
and pos. This is the reference the shipped classifiers are compared against (``livebot eval``).
SnowNLP loads its models at import (~several seconds) and classifies a few hundred comments a second.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from nlp.classifiers.base import Prediction
from nlp.classifiers.rules import RulesClassifier

_HAS_CONTENT = re.compile(r"[0-9a-z\u4e00-\u9fff]", re.IGNORECASE)

_lock = threading.Lock()
_snownlp_cls: Any = None


def _snownlp() -> Any:
    global _snownlp_cls
    if _snownlp_cls is None:
        with _lock:
            if _snownlp_cls is None:
                try:
                    from snownlp import SnowNLP
                except ImportError as exc:  # pragma: no cover - snownlp is a core dependency
                    raise ImportError("the snownlp baseline needs snownlp: pip install snownlp") from exc
                _snownlp_cls = SnowNLP
    return _snownlp_cls


@lru_cache(maxsize=8192)
def _positive_probability(text: str) -> float:
    if not _HAS_CONTENT.search(text):
        return 0.5
    snownlp = _snownlp()
    # SnowNLP's segmenter and Bayes model are module globals that were never meant to be shared
    # across threads; one lock keeps them consistent (the baseline is not the fast path).
    with _lock:
        return float(snownlp(text).sentiments)


class SnowNLPClassifier:
    """SnowNLP polarity + rules neutrality and confusion; thread-safe."""

    name = "snownlp"

    def __init__(self, rules: RulesClassifier | None = None) -> None:
        self.rules = rules or RulesClassifier()
        # Load SnowNLP's models now (they load on import, for seconds), not inside the first batch.
        _snownlp()

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for text in texts:
            ruled = self.rules.predict_one(text)
            neu = ruled.sentiment_probs[1]
            p_pos = min(max(_positive_probability(text), 0.0), 1.0)
            polar = 1.0 - neu
            out.append(
                Prediction(
                    sentiment_probs=(polar * (1.0 - p_pos), neu, polar * p_pos),
                    confusion_score=ruled.confusion_score,
                )
            )
        return out
