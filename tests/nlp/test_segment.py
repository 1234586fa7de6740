from concurrent.futures import ThreadPoolExecutor

from nlp import segment


def test_user_dictionary_words_stay_whole():
    words = segment.cut("扣1上车了宝宝们小黄车几号链接")
    for word in ("扣1", "上车", "宝宝们", "小黄车"):
        assert word in words
    assert "运费险" in segment.cut("有运费险吗")


def test_cut_drops_whitespace_and_handles_empty():
    assert segment.cut("") == []
    assert " " not in segment.cut("多少 钱")


def test_keywords_skip_stopwords_emotes_and_punctuation():
    kws = segment.keywords("主播这个面料会起球吗？[捂脸]", 5)
    assert "面料" in kws and "起球" in kws
    for noise in ("主播", "这个", "吗", "?", "？", "捂脸", "[捂脸]"):
        assert noise not in kws


def test_keywords_glue_quantities_and_respect_k():
    assert segment.keywords("主播160斤穿什么码", 3)[0] == "160斤"
    assert len(segment.keywords("已拍,什么时候发货,运费险有吗,面料起球", 2)) == 2
    assert segment.keywords("哈哈哈", 3) == []
    assert segment.keywords("面料", 0) == []


def test_concurrent_first_use_gives_the_same_segmentation():
    texts = ["已拍，什么时候发货", "福袋什么时候开", "这个多少钱啊"] * 20
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(segment.cut, texts))
    assert results == [segment.cut(t) for t in texts]
