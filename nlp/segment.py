"""jieba word segmentation with the live-commerce user dictionary, initialised lazily and once.

jieba's global tokenizer prints to stderr and builds its prefix dictionary on first use (~1 s). We keep
our own `jieba.Tokenizer` so the user dictionary never leaks into other users of jieba, build it behind
a lock so concurrent worker threads don't initialise it twice, and silence jieba's logger.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from pathlib import Path

import jieba
import yaml

LEXICON_DIR = Path(__file__).resolve().parent / "lexicons"
USER_DICT = LEXICON_DIR / "userdict.txt"
STOPWORDS = LEXICON_DIR / "stopwords.txt"
KEYWORDS = LEXICON_DIR / "keywords.yaml"

_KEYWORD_LEXICON = yaml.safe_load(KEYWORDS.read_text(encoding="utf-8"))
_UNITS = frozenset(str(u) for u in _KEYWORD_LEXICON["units"])
_SINGLE_CHAR_KEYWORDS = frozenset(str(c) for c in _KEYWORD_LEXICON["single_char"])

_lock = threading.Lock()
_tokenizer: jieba.Tokenizer | None = None
_stopwords: frozenset[str] = frozenset()
_idf: dict[str, float] = {}
_default_idf = 12.0

_EMOTE_CODE = re.compile(r"\[[^\[\]\s]{1,8}\]")
# A keyword has at least one letter, digit or CJK character (drops punctuation, emoji and spaces).
_WORDLIKE = re.compile(r"[0-9a-z\u4e00-\u9fff]", re.IGNORECASE)


def _read_words(path: Path) -> frozenset[str]:
    words = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(w for w in words if w and not w.startswith("#"))


def _get_tokenizer() -> jieba.Tokenizer:
    global _tokenizer, _stopwords, _default_idf
    if _tokenizer is not None:
        return _tokenizer
    with _lock:
        if _tokenizer is None:
            jieba.setLogLevel(logging.WARNING)
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            tokenizer.load_userdict(str(USER_DICT))
            _stopwords = _read_words(STOPWORDS)
            # Rarer words say more about a comment; jieba's dictionary frequencies give that for free.
            total = float(tokenizer.total)
            _idf.update((word, math.log(total / freq)) for word, freq in tokenizer.FREQ.items() if freq > 0)
            _default_idf = math.log(total / 5.0)
            _tokenizer = tokenizer
    return _tokenizer


def warm_up() -> None:
    """Build the tokenizer now (the first `cut` would otherwise pay ~1 s)."""
    _get_tokenizer()


def cut(text: str) -> list[str]:
    """Segment text into words (precise mode, no HMM: faster, and stable on short chat fragments)."""
    if not text:
        return []
    return list(_cut_cached(text))


@functools.lru_cache(maxsize=16384)
def _cut_cached(text: str) -> tuple[str, ...]:
    # The transformer classifier's word features and the Analyzer's keywords cut the same normalised
    # text one after the other, and live rooms repeat short comments (扣1, 哈哈哈): one cut serves both.
    return tuple(w for w in _get_tokenizer().lcut(text, HMM=False) if not w.isspace())


def is_stopword(word: str) -> bool:
    _get_tokenizer()
    return word in _stopwords


def keywords(text: str, k: int = 3) -> list[str]:
    """Up to k informative words of text, most informative first (rarer in jieba's dictionary wins).

    Stopwords, emote codes, punctuation and single characters other than digits/letters runs are dropped.
    """
    if k <= 0 or not text:
        return []
    if "[" in text:
        text = _EMOTE_CODE.sub(" ", text)
    words = _join_quantities(cut(text))
    seen: dict[str, tuple[float, int]] = {}
    for position, word in enumerate(words):
        if word in seen or word in _stopwords or not _WORDLIKE.search(word):
            continue
        if len(word) == 1 and not word.isalnum():
            continue
        if len(word) == 1 and not word.isascii() and word not in _SINGLE_CHAR_KEYWORDS:
            continue
        seen[word] = (_idf.get(word, _default_idf), position)
    ranked = sorted(seen.items(), key=lambda item: (-item[1][0], item[1][1]))
    return [word for word, _ in ranked[:k]]


def _join_quantities(words: list[str]) -> list[str]:
    """Glue a number to its unit (160 + 斤 → 160斤) so a quantity ranks as one keyword."""
    out: list[str] = []
    for word in words:
        if out and word in _UNITS and out[-1].isdigit():
            out[-1] += word
        else:
            out.append(word)
    return out
