import math
from collections.abc import Sequence

import pytest

from nlp.analyzer import MAX_CHARS, Analysis, Analyzer
from nlp.classifiers.base import Prediction


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer("rules", keywords=3)


def test_batch_in_batch_out_in_order(analyzer):
    texts = ["这个多少钱", "太好看了", "骗子退款", "来了"]
    out = analyzer.analyze(texts)
    assert [a.text for a in out] == texts
    assert [a.sentiment for a in out] == ["neu", "pos", "neg", "neu"]
    assert [a.confusion for a in out] == [True, False, False, False]
    assert all(isinstance(a, Analysis) and a.classifier == "rules" for a in out)


def test_empty_whitespace_and_emoji_only(analyzer):
    empty, blank, thumbs, codes, angry = analyzer.analyze(["", "   ", "👍👍", "[赞][比心]", "[发怒]"])
    for a in (empty, blank):
        assert a.text == "" and a.sentiment == "neu" and not a.confusion
        assert a.topics == ("other",) and a.keywords == ()
    assert thumbs.sentiment == "pos" and thumbs.text == ""
    assert codes.sentiment == "pos"
    assert angry.sentiment == "neg"
    assert analyzer.analyze([]) == []


def test_long_input_is_truncated(analyzer):
    (a,) = analyzer.analyze(["多少钱" + "啊" * 5000])
    assert len(a.text) <= MAX_CHARS
    assert "price" in a.topics


def test_fields(analyzer):
    (a,) = analyzer.analyze(["@主播 160斤穿什么码？"])
    assert a.asks_host and a.confusion
    assert a.topics == ("size_fit",)
    assert "160斤" in a.keywords
    assert math.isclose(sum(a.sentiment_probs), 1.0)
    assert 0.0 <= a.confidence <= 1.0
    assert analyzer.analyze_one("收到的是假货").distrust
    assert not analyzer.analyze_one("真的假的哈哈").distrust


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("已拍", True),
        ("拍了拍了", True),
        ("扣1", True),
        ("上车上车", True),
        ("1111", True),
        ("已拍，什么时候发货", True),
        ("扣1是什么意思", False),
        ("上车链接在哪?", False),
        ("不买了", False),
    ],
)
def test_buying_intent(analyzer, text, intent):
    assert analyzer.analyze_one(text).buying_intent is intent


def test_keywords_can_be_turned_off():
    assert Analyzer(keywords=0).analyze_one("这个面料会起球吗").keywords == ()
    with pytest.raises(ValueError):
        Analyzer(keywords=-1)


class _Fixed:
    """A classifier that returns one fixed prediction, to test the analyzer's own logic."""

    name = "fixed"

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        self.seen: list[str] = []

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        self.seen.extend(texts)
        return [self.prediction for _ in texts]


def test_classifier_gets_normalised_text_and_emotes_shift_probabilities():
    neutral = Prediction(sentiment_probs=(0.1, 0.8, 0.1), confusion_score=0.2)
    fake = _Fixed(neutral)
    a, b = Analyzer(fake, keywords=0).analyze(["這個 好看[赞]", "好看"])
    assert fake.seen == ["这个 好看", "好看"]
    assert a.classifier == "fixed"
    assert a.sentiment == "pos" and a.sentiment_probs[2] > neutral.sentiment_probs[2]
    assert b.sentiment_probs == neutral.sentiment_probs


def test_classifier_returning_the_wrong_count_is_a_bug():
    class _Short(_Fixed):
        def predict(self, texts):
            return []

    with pytest.raises(RuntimeError, match="returned 0 predictions"):
        Analyzer(_Short(Prediction((0.1, 0.8, 0.1), 0.1)), keywords=0).analyze(["x"])
