import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from nlp.classifiers import make_classifier
from nlp.classifiers.rules import RulesClassifier

pytestmark = pytest.mark.slow  # importing SnowNLP loads its models (several seconds)


@pytest.fixture(scope="module")
def snow():
    return make_classifier("snownlp")


def test_snownlp_splits_polarity_and_rules_decide_neutral_and_confusion(snow):
    texts = ["质量很好，非常满意，推荐购买", "质量太差了，垃圾，退货", "来了", "这个多少钱", ""]
    preds = snow.predict(texts)
    rules = RulesClassifier().predict(texts)
    assert snow.name == "snownlp"
    assert [p.sentiment for p in preds] == ["pos", "neg", "neu", "neu", "neu"]
    for p, r in zip(preds, rules, strict=True):
        assert math.isclose(sum(p.sentiment_probs), 1.0)
        assert p.confusion_score == r.confusion_score
        assert p.sentiment_probs[1] == r.sentiment_probs[1]


def test_snownlp_is_thread_safe(snow):
    texts = ["东西不错，物流很快", "太慢了，差评", "一般般吧", "还行", "喜欢"] * 4
    expected = snow.predict(texts)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: snow.predict([t])[0], texts))
    assert results == expected
