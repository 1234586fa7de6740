import pytest

from nlp.questions import QuestionClusters, question_key
from nlp.topics import tag_topics


def _key(text: str) -> str:
    return question_key(text, tag_topics(text)[0])


@pytest.mark.parametrize(
    "group",
    [
        ["多少钱", "多少米", "价格多少", "这个多少钱啊", "主播这个多少钱？？"],
        ["160斤穿什么码", "160斤什么码", "主播160斤穿什么码呀"],
        ["发货吗", "什么时候发货", "啥时候发货呢"],
        ["几号链接", "链接呢", "链接在哪"],
    ],
)
def test_near_duplicates_share_a_key(group):
    keys = {_key(text) for text in group}
    assert len(keys) == 1, keys


def test_different_questions_get_different_keys():
    assert _key("160斤穿什么码") != _key("120斤穿什么码")
    assert _key("多少钱") != _key("什么时候发货")
    assert _key("你是哪里人") != _key("唱首歌吧")


def test_key_without_intent_strips_particles_and_host_address():
    assert question_key("主播你是哪个星座呀？", "other") == question_key("你是哪个星座", "other")
    assert question_key("???", "other") == "other:?"


def test_clusters_count_examples_and_peak_minute():
    clusters = QuestionClusters(max_examples=3)
    minute = 60_000
    texts = ["多少钱", "多少米", "这个多少钱啊", "价格多少", "多少钱"]
    for i, text in enumerate(texts):
        clusters.add(text, "price", ts=10 * minute + (0 if i < 1 else 2 * minute) + i)
    clusters.add("什么时候发货", "shipping", ts=11 * minute)
    top = clusters.top(5)
    assert [c.topic for c in top] == ["price", "shipping"]
    price = top[0]
    assert price.count == 5
    assert price.examples == ("多少钱", "多少米", "这个多少钱啊")
    assert price.first_ts == 10 * minute
    assert price.last_ts == 12 * minute + 4
    assert price.peak_minute == 12 and price.peak_count == 4
    assert clusters.top(5, topic="shipping")[0].count == 1
    assert clusters.get(price.key) == price


def test_clusters_are_bounded_and_evict_the_least_asked():
    clusters = QuestionClusters(max_clusters=20)
    for _ in range(5):
        clusters.add("多少钱", "price", ts=0)
    for i in range(100):
        clusters.add(f"问题{i}号是什么", "other", ts=i)
    assert len(clusters) <= 20
    assert clusters.evicted >= 80
    assert clusters.top(1)[0].count == 5


def test_clusters_reject_bad_limits():
    with pytest.raises(ValueError):
        QuestionClusters(max_clusters=0)


@pytest.mark.parametrize(
    "group",
    [
        ["什么时候发券", "啥时候发优惠券", "什么时候发红包", "红包什么时候发", "券发了吗"],
        ["新人券能用吗", "优惠券怎么用", "这个券怎么用啊"],
        ["直播间和店铺价格一样吗", "线下价格一样吗", "跟旗舰店一样价吗", "和店铺同价吗"],
    ],
)
def test_specific_intents_group_together(group):
    keys = {_key(text) for text in group}
    assert len(keys) == 1, keys


def test_a_more_specific_word_wins_over_a_generic_phrase():
    # Sending a coupon is a coupon question, not a shipping one.
    for text in ("什么时候发券", "啥时候发优惠券", "红包什么时候发"):
        assert tag_topics(text) == ("coupon",), text
        assert _key(text) != _key("什么时候发货")
    assert tag_topics("什么时候发") == ("shipping",)
    assert _key("什么时候发") == _key("发货吗")
    # The key does not depend on the caller's topic being right either.
    assert question_key("啥时候发优惠券", "shipping") != question_key("什么时候发货", "shipping")


def test_using_a_coupon_is_not_product_usage():
    assert _key("新人券能用吗") != _key("能用吗")
    assert question_key("优惠券怎么用", "usage") != question_key("面膜怎么用", "usage")
    assert _key("新人券能用吗") != _key("有券吗")


def test_price_comparison_is_not_asking_the_price():
    assert _key("线下价格一样吗") != _key("多少钱")
    assert _key("直播间和店铺价格一样吗") != _key("价格多少")
    assert _key("价格多少") == _key("这个多少钱啊")
