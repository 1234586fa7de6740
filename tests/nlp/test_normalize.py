from hypothesis import given, settings
from hypothesis import strategies as st

from nlp.normalize import Normalized, emote_polarity, normalize


def test_full_width_folds_to_half_width_and_keeps_question_marks():
    assert normalize("ＡＢＣ１２３？！").text == "abc123?!"
    assert normalize("多少钱？").text == "多少钱?"


def test_traditional_becomes_simplified():
    assert normalize("這個多少錢").text == "这个多少钱"
    assert normalize("在打遊戲嗎").text == "在打游戏吗"


def test_ascii_passes_through_lowercased():
    assert normalize("YYDS  666").text == "yyds 666"


def test_repeats_are_squeezed():
    assert normalize("哈哈哈哈哈哈哈").text == "哈哈哈"
    assert normalize("？？？？？").text == "???"
    assert normalize("666666").text == "666"
    assert normalize("加油加油加油加油").text == "加油加油"
    # Three of a kind is left alone.
    assert normalize("哈哈哈").text == "哈哈哈"


def test_emote_codes_and_emoji_are_extracted():
    n = normalize("[捂脸]太好看了[赞]👍🏻")
    assert n.text == "太好看了"
    assert n.emotes == ("捂脸", "赞", "👍🏻")


def test_emote_only_comment_has_empty_text_and_positive_polarity():
    n = normalize("[赞][赞]")
    assert n.text == ""
    assert emote_polarity(n.emotes) > 0
    assert emote_polarity(normalize("👍").emotes) > 0
    assert emote_polarity(normalize("[发怒]").emotes) < 0
    # No clear polarity: embarrassment/laughing and unknown codes count as nothing.
    assert emote_polarity(normalize("[捂脸][不存在的表情]").emotes) == 0


def test_host_mention_sets_asks_host_and_is_stripped():
    n = normalize("@主播 这个多少钱")
    assert n == Normalized(text="这个多少钱", asks_host=True, mentions=("主播",), emotes=())
    # No space after the mention: the question stays.
    assert normalize("@主播多少钱？").text == "多少钱?"


def test_other_mentions_are_stripped_but_do_not_ask_host():
    n = normalize("@小美 你好呀")
    assert n.text == "你好呀"
    assert n.mentions == ("小美",)
    assert n.asks_host is False


def test_comment_opening_with_host_address_asks_host():
    assert normalize("主播 160斤穿什么码").asks_host is True
    assert normalize("请问主播几号链接").asks_host is True
    assert normalize("这个主播好看").asks_host is False


def test_whitespace_collapses_and_zero_width_chars_vanish():
    assert normalize("  多少\u200b钱  \t 啊  ").text == "多少钱 啊"
    assert normalize("").text == ""
    assert normalize("   ").text == ""


_COMMENT_CHARS = st.sampled_from(list("哈好看多少钱吗?？！!@ 主播[赞]捂脸👍❤️1６a Ａ這個們\u3000\t"))


@settings(max_examples=300, deadline=None)
@given(st.text(_COMMENT_CHARS, max_size=40))
def test_normalize_is_idempotent_on_its_output(raw):
    once = normalize(raw).text
    assert normalize(once).text == once


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_normalize_accepts_any_text(raw):
    n = normalize(raw)
    assert n.text == n.text.strip()
    assert "  " not in n.text
