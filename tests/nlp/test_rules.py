import math

import pytest

from nlp.classifiers.rules import BuyingIntent, ConfusionFeatures, RulesClassifier, SentimentLexicon
from nlp.normalize import normalize


@pytest.fixture(scope="module")
def rules() -> RulesClassifier:
    return RulesClassifier()


def _predict(rules: RulesClassifier, raw: str):
    return rules.predict([normalize(raw).text])[0]


@pytest.mark.parametrize(
    "text", ["这个多少钱", "160斤穿什么码", "几号链接?", "有优惠券吗", "主播是哪里人", "???", "没看懂"]
)
def test_questions_are_confused_and_neutral(rules, text):
    p = _predict(rules, text)
    assert p.confusion, text
    assert p.sentiment == "neu", text


@pytest.mark.parametrize(
    "text",
    [
        "我160斤穿什么码",  # opens with 我 like a statement, but asks for a size
        "我老公90斤穿什么码啊",
        "我的牛仔裤怎么还没到",  # an order that has not come wants an answer
        "说好的7天发货呢",
        "尺码偏大还是偏小呢",  # a choice between two options
        "130斤拍S还是M",
        "是现货还是预售",
        "有几个颜色",
        "不会是假货吧",  # a worry that wants reassurance
    ],
)
def test_live_commerce_questions_are_confused(rules, text):
    assert _predict(rules, text).confusion, text


@pytest.mark.parametrize("text", ["我还是喜欢你", "还是算了", "不然我怎么还没睡", "我一天几百块钱吃饭"])
def test_statements_with_those_words_are_not_confused(rules, text):
    assert not _predict(rules, text).confusion, text


@pytest.mark.parametrize("text", ["主播好漂亮", "太好看了爱了爱了", "支持主播", "666", "质量很好，非常满意"])
def test_praise_is_positive_and_not_confused(rules, text):
    p = _predict(rules, text)
    assert p.sentiment == "pos", text
    assert not p.confusion, text


@pytest.mark.parametrize("text", ["已拍", "拍了拍了", "扣1", "上车了"])
def test_buying_intent_reads_positive(rules, text):
    assert _predict(rules, text).sentiment == "pos"


@pytest.mark.parametrize("text", ["太贵了", "垃圾质量，退货", "骗子", "不好看", "这个没用", "无语"])
def test_complaints_are_negative(rules, text):
    assert _predict(rules, text).sentiment == "neg", text


@pytest.mark.parametrize(
    ("text", "sentiment"),
    [
        ("质量不行。", "neg"),
        ("评论区都是托", "neg"),
        ("收到的是坏的", "neg"),
        ("这质量也好意思卖699？", "neg"),
        ("这也太显白了吧", "pos"),
        ("不起球呀", "pos"),
        ("已加购物车！", "pos"),
        ("冲！！", "pos"),
        ("别起冲突", "neu"),  # 冲 praises, 冲突 does not
        ("蹲链接!!!", "pos"),
        ("谁能拒绝酒红的连衣裙", "pos"),
        ("被子有一股怪味", "neg"),
        ("今天练深蹲", "neu"),
    ],
)
def test_live_commerce_sentiment(rules, text, sentiment):
    assert _predict(rules, text).sentiment == sentiment, text


def test_complaint_question_is_negative_and_confused(rules):
    p = _predict(rules, "怎么还不发货？")
    assert p.sentiment == "neg"
    assert p.confusion


def test_questions_about_a_polar_word_do_not_judge(rules):
    assert _predict(rules, "质量好吗").sentiment == "neu"
    assert _predict(rules, "会起球吗").sentiment == "neu"


@pytest.mark.parametrize("text", ["真的假的哈哈", "你是不是傻", "凭什么", "咋这么可爱"])
def test_rhetorical_and_teasing_questions_are_not_confused(rules, text):
    assert _predict(rules, text).confusion_score < 0.5, text


@pytest.mark.parametrize("text", ["来了", "晚上好", "", "1"])
def test_plain_statements_are_neutral_and_not_confused(rules, text):
    p = _predict(rules, text)
    assert p.sentiment == "neu"
    assert not p.confusion


def test_probabilities_are_well_formed(rules):
    for p in rules.predict(["", "多少钱", "太好看了", "骗子", "哈" * 300]):
        assert math.isclose(sum(p.sentiment_probs), 1.0)
        assert all(0.0 <= x <= 1.0 for x in p.sentiment_probs)
        assert 0.0 <= p.confusion_score <= 1.0
        assert 0.0 <= p.confidence <= 1.0


def test_stronger_evidence_gives_higher_probability(rules):
    weak = _predict(rules, "好看").sentiment_probs[2]
    strong = _predict(rules, "太好看了，爱了爱了，支持").sentiment_probs[2]
    assert strong > weak > 0.5


def test_contrast_clause_weighs_more(rules):
    assert _predict(rules, "味道还不错，但是送餐太慢了，等了一个多小时").sentiment == "neg"


def test_explain_lists_phrases_and_features(rules):
    info = rules.explain("怎么还不发货?")
    assert any(phrase.endswith("不发货") for phrase, _ in info["phrases"])
    assert "question_mark" in info["confusion_features"]


def test_lexicon_conflicts_and_bad_features_are_reported():
    with pytest.raises(ValueError, match="both positive and negative"):
        SentimentLexicon.from_mapping({"positive": {1.0: ["好"]}, "negative": {1.0: ["好"]}})
    with pytest.raises(ValueError, match=r"features\[0\]"):
        ConfusionFeatures.from_mapping({"features": [{"name": "q", "weight": 1.0}]})


def test_buying_intent_markers():
    intent = BuyingIntent.load()
    assert intent("已拍", is_question=False)
    assert intent("已拍,什么时候发货", is_question=True)
    assert intent("扣1", is_question=False)
    assert intent("111", is_question=False)
    assert not intent("扣1是什么意思", is_question=True)
    assert not intent("不买了", is_question=False)
    assert not intent("拍了拍主播", is_question=False)
    assert not intent("", is_question=False)


@pytest.mark.parametrize(
    ("text", "sentiment"),
    [
        ("这段真的听不下去了", "neg"),  # giving up on the stream
        ("福袋又没抢到", "neg"),
        ("主播又不理我", "neg"),
        ("天天画饼", "neg"),
        ("笑死我了这个连麦", "pos"),
        ("祝主播一路长红", "pos"),
        ("声音好有磁性", "pos"),
    ],
)
def test_live_room_chat_sentiment(rules, text, sentiment):
    assert _predict(rules, text).sentiment == sentiment, text


@pytest.mark.parametrize(
    ("text", "confused"),
    [
        ("明天还播不", True),  # a yes/no question closed by a bare 不
        ("你会跳舞不?", True),
        ("宝宝吃饭了没", True),
        ("这首歌你听过没有", True),
        ("有对象莫得", True),
        ("我才不", False),
        ("我还没", False),
    ],
)
def test_yes_no_questions_closed_by_bu_or_mei(rules, text, confused):
    assert _predict(rules, text).confusion is confused, text


@pytest.mark.parametrize(
    ("text", "confused"),
    [
        ("还有货不主播", True),  # a closing 不, then who is asked
        ("你们那边下雪了嘛", True),  # a closing 嘛 asks ...
        ("这不就是上次那件嘛", False),  # ... unless it follows 不是 / 不就 / 因为
        ("妹妹这条围巾链接", True),  # a bare link asked for
        ("求同款帽子链接", True),
        ("快上链接", False),  # telling the host to post it
        ("主播嗓子没事吧", True),  # a worry that wants an answer
        ("一直没声音", True),  # the whole comment reports it can't hear / see / get in
        ("点不进去", True),
        ("好久没看到你穿这件了", False),  # the phrase inside a story
    ],
)
def test_chat_room_questions_without_a_question_word(rules, text, confused):
    assert _predict(rules, text).confusion is confused, text
