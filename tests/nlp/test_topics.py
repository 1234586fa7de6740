import pytest

from nlp.topics import TOPICS, DistrustDetector, TopicTagger, default_tagger, distrust, tag_topics


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("这个多少钱啊", "price"),
        ("多少米", "price"),
        ("太贵了", "price"),
        ("160斤穿什么码", "size_fit"),
        ("1米6穿什么码", "size_fit"),
        ("什么时候发货", "shipping"),
        ("包邮吗", "shipping"),
        ("这个面料会起球吗", "quality"),
        ("几号链接", "link_howto"),
        ("小黄车里找不到", "link_howto"),
        ("能退货吗", "after_sales"),
        ("运费险有吗", "after_sales"),
        ("有优惠券吗", "coupon"),
        ("福袋什么时候开", "coupon"),
        ("还有货吗", "stock"),
        ("孕妇能用吗", "usage"),
        ("主播多高", "host"),
    ],
)
def test_lexicon_topics(text, topic):
    assert topic in tag_topics(text)


@pytest.mark.parametrize(
    ("text", "link_text"),
    [("主播涂的是几号色", "主播涂的是几号"), ("3号色好看吗", "3号好看吗"), ("几号发货", "几号"), ("几号到", "几号")],
)
def test_shade_and_date_numbers_are_not_link_numbers(text, link_text):
    # 几号色 is a lipstick shade and 几号发货 a date; 几号 / 3号 alone still ask for a link.
    assert "link_howto" not in tag_topics(text)
    assert "link_howto" in tag_topics(link_text)


def test_no_match_is_other_and_topics_come_in_lexicon_order():
    assert tag_topics("晚上好") == ("other",)
    assert tag_topics("") == ("other",)
    assert tag_topics("多少钱包邮吗") == ("price", "shipping")
    assert set(default_tagger().order) | {"other"} == set(TOPICS)


def test_longest_keyword_wins_and_lookalikes_do_not_match():
    assert tag_topics("运费险有吗") == ("after_sales",)
    assert tag_topics("贵州来的") == ("other",)
    assert tag_topics("真的假的哈哈") == ("other",)


def test_custom_lexicon_with_patterns():
    tagger = TopicTagger.from_mapping({"gift": {"keywords": ["嘉年华"], "patterns": [r"\d+个?火箭"]}})
    assert tagger.tag("送你3个火箭") == ("gift",)
    assert tagger.tag("嘉年华走一个") == ("gift",)
    assert tagger.tag("你好") == ("other",)


def test_bad_lexicon_entries_are_named():
    with pytest.raises(ValueError, match="price.patterns"):
        TopicTagger.from_mapping({"price": {"patterns": ["(unclosed"]}})
    with pytest.raises(ValueError, match="unknown key"):
        TopicTagger.from_mapping({"price": {"keyword": ["多少钱"]}})
    with pytest.raises(ValueError, match="implicit"):
        TopicTagger.from_mapping({"other": {"keywords": ["x"]}})


def test_distrust_words_but_not_teasing():
    assert distrust("骗子")
    assert distrust("收到的是假货，我要投诉")
    assert distrust("退款了还不给退")
    assert not distrust("真的假的哈哈")
    assert not distrust("假发好看")
    assert not distrust("这个多少钱")
    assert not distrust("")


def test_distrust_detector_from_mapping():
    detector = DistrustDetector.from_mapping({"words": ["骗"], "ignore": ["不骗你"]})
    assert detector("你骗人")
    assert not detector("我不骗你")
    assert detector.find("骗了又骗") == ["骗", "骗"]


def test_generic_patterns_yield_to_a_more_specific_topic():
    tagger = TopicTagger.from_mapping(
        {
            "shipping": {"keywords": ["发货"], "generic_patterns": ["什么时候发"]},
            "coupon": {"keywords": ["券"]},
        }
    )
    assert tagger.tag("什么时候发") == ("shipping",)
    assert tagger.tag("什么时候发券") == ("coupon",)
    assert tagger.tag("什么时候发货 有券吗") == ("shipping", "coupon")
    with pytest.raises(ValueError, match="shipping.generic_patterns"):
        TopicTagger.from_mapping({"shipping": {"generic_patterns": ["(unclosed"]}})


@pytest.mark.parametrize("text", ["s有吗", "拍s还是m", "我穿m合适吗", "s够大吗", "选m吧", "l还有吗", "xs偏小吗"])
def test_a_bare_size_letter_is_a_size_question(text):
    assert "size_fit" in tag_topics(text)


@pytest.mark.parametrize("text", ["sb主播", "我要sleep", "mvp", "l了"])
def test_letters_inside_words_or_without_a_size_cue_are_not_sizes(text):
    assert "size_fit" not in tag_topics(text)


@pytest.mark.parametrize(
    "text", ["美女哪里的", "主播云南哪里的?", "小姐姐多高", "姐姐叫什么名字", "主播多大了", "你多大"]
)
def test_personal_questions_to_the_host_however_addressed(text):
    assert "host" in tag_topics(text)


@pytest.mark.parametrize(("text", "topic"), [("你这个多大", "other"), ("你多大码", "size_fit")])
def test_an_item_or_a_size_is_not_the_host(text, topic):
    assert "host" not in tag_topics(text)
    assert topic in tag_topics(text)


@pytest.mark.parametrize(("text", "is_link"), [
    ("怎么拍", True), ("咋拍呀", True), ("在哪拍", True), ("这个怎么拍不了", True),
    ("你怎么拍的视频", False), ("怎么拍照这么好看", False), ("怎么拍得这么好看", False),
])
def test_how_to_order_is_not_how_to_film(text, is_link):
    # 拍 is "place an order" in a live room, and also "film / take a photo".
    assert ("link_howto" in tag_topics(text)) is is_link


@pytest.mark.parametrize(("text", "topic"), [
    ("你是学生吗", "host"), ("你是主播吗", "host"), ("学生能用吗", "usage"), ("适合学生吗", "usage"),
])
def test_a_question_about_the_host_is_not_a_usage_question(text, topic):
    tags = tag_topics(text)
    assert topic in tags and ({"host", "usage"} - {topic}).isdisjoint(tags)
