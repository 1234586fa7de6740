"""Comment normalisation: one pure function from a raw comment to the text that gets classified.

Steps, in order: Unicode compatibility folding (full-width → half-width, so ``？`` becomes ``?`` and
``！`` becomes ``!``), traditional → simplified Chinese, lower-case, emote codes (``[捂脸]``) and emoji
pulled out into ``emotes``, ``@nickname`` mentions pulled out into ``mentions`` (``@主播`` sets
``asks_host``), runs of a repeated character or short unit squeezed (哈哈哈哈哈 → 哈哈哈), whitespace
collapsed. Emote polarity lives in ``nlp/lexicons/emotes.yaml`` and is read through `emote_polarity`.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml
import zhconv

LEXICON_DIR = Path(__file__).resolve().parent / "lexicons"

_HOST = yaml.safe_load((LEXICON_DIR / "normalize.yaml").read_text(encoding="utf-8"))
HOST_ALIASES: tuple[str, ...] = tuple(str(a) for a in _HOST["host_aliases"])
"""Names that address the host (``nlp/lexicons/normalize.yaml``); ``@主播`` is a direct question signal."""
_OPENERS: tuple[str, ...] = tuple(str(o) for o in _HOST.get("openers") or ())


@dataclass(frozen=True, slots=True)
class Normalized:
    """A comment after normalisation."""

    text: str
    """What gets classified: folded, simplified, emotes and mentions removed, repeats squeezed."""
    asks_host: bool
    """The viewer addresses the host directly (``@主播`` or a comment opening with 主播)."""
    mentions: tuple[str, ...]
    """Nicknames mentioned with ``@``, in order (``主播`` for the host)."""
    emotes: tuple[str, ...]
    """Emote code names (``捂脸`` for ``[捂脸]``) and emoji characters, in order."""


# Zero-width and BOM characters carry nothing and break matching; ideographic space becomes a space.
_DELETE = dict.fromkeys(map(ord, "\u200b\u200c\u200e\u200f\u2060\ufeff"), None)

_EMOTE_CODE = re.compile(r"\[([\u4e00-\u9fffA-Za-z0-9]{1,8})\]")
_EMOJI_CHARS = "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff"
_EMOJI = re.compile(
    rf"[{_EMOJI_CHARS}][\ufe0f\U0001f3fb-\U0001f3ff]*(?:\u200d[{_EMOJI_CHARS}][\ufe0f\U0001f3fb-\U0001f3ff]*)*"
)
_EMOJI_MODIFIERS = re.compile("[\ufe0f\u200d\U0001f3fb-\U0001f3ff]")
_HOST_ALT = "|".join(map(re.escape, HOST_ALIASES))
# A nickname runs to the next space or punctuation mark; ``@主播多少钱`` keeps 多少钱 as text.
_MENTION = re.compile(rf"@(?:({_HOST_ALT})|([^\s@,.!?;:，。！？；：、~]{{1,20}}))")
_OPENER_ALT = "|".join(map(re.escape, sorted(_OPENERS, key=len, reverse=True)))
_HOST_OPENING = re.compile(rf"^(?:{_OPENER_ALT})?(?:{_HOST_ALT})" if _OPENERS else rf"^(?:{_HOST_ALT})")
_REPEAT_CHAR = re.compile(r"(.)\1{3,}")
_REPEAT_UNIT = re.compile(r"(.{2,4}?)\1{2,}")
_SPACES = re.compile(r"\s+")

_trad_lock = threading.Lock()
_trad_chars: frozenset[str] | None = None


def _traditional_chars() -> frozenset[str]:
    """Characters that zhconv maps to a different simplified character (built once, ~5k chars)."""
    global _trad_chars
    if _trad_chars is None:
        with _trad_lock:
            if _trad_chars is None:
                from zhconv import zhconv as _impl

                table = _impl.getdict("zh-cn")
                _trad_chars = frozenset(k for k, v in table.items() if len(k) == 1 and v != k)
    return _trad_chars


def _to_simplified(text: str) -> str:
    # A set test is ~50x cheaper than a conversion, and almost every comment is already simplified.
    if _traditional_chars().isdisjoint(text):
        return text
    return str(zhconv.convert(text, "zh-cn"))


def _fold(text: str) -> str:
    text = text.translate(_DELETE)
    if text.isascii():
        return text.lower()
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return _to_simplified(text).lower()


@lru_cache(maxsize=16384)
def normalize(text: str) -> Normalized:
    """Normalise one raw comment; pure and cached (live rooms repeat short comments a lot)."""
    text = _fold(text)
    emotes: list[str] = []
    mentions: list[str] = []
    asks_host = False

    if "[" in text:

        def _take_code(m: re.Match[str]) -> str:
            emotes.append(m.group(1))
            return " "

        text = _EMOTE_CODE.sub(_take_code, text)
    if not text.isascii():

        def _take_emoji(m: re.Match[str]) -> str:
            emotes.append(m.group(0))
            return " "

        text = _EMOJI.sub(_take_emoji, text)
    if "@" in text:

        def _take_mention(m: re.Match[str]) -> str:
            nonlocal asks_host
            if m.group(1):
                asks_host = True
                mentions.append(m.group(1))
            else:
                mentions.append(m.group(2))
            return " "

        text = _MENTION.sub(_take_mention, text)

    text = _SPACES.sub(" ", text).strip()
    # A run needs repeated characters: a char x4 leaves at most len-3 distinct chars, a 2-4 char unit x3
    # at most len-4. Checking that first skips the (comparatively slow) back-reference scans.
    if len(text) > 3 and len(set(text)) <= len(text) - 3:
        text = _REPEAT_CHAR.sub(r"\1\1\1", text)
        if len(text) > 5 and len(set(text)) <= len(text) - 4:
            text = _REPEAT_UNIT.sub(r"\1\1", text)
    if not asks_host and _HOST_OPENING.match(text):
        asks_host = True
    return Normalized(text=text, asks_host=asks_host, mentions=tuple(mentions), emotes=tuple(emotes))


_emote_lock = threading.Lock()
_emote_weights: dict[str, float] | None = None


def _load_emote_weights() -> dict[str, float]:
    global _emote_weights
    if _emote_weights is None:
        with _emote_lock:
            if _emote_weights is None:
                data = yaml.safe_load((LEXICON_DIR / "emotes.yaml").read_text(encoding="utf-8"))
                weights: dict[str, float] = {}
                for section in ("codes", "emoji"):
                    for name, weight in (data.get(section) or {}).items():
                        weights[_EMOJI_MODIFIERS.sub("", str(name))] = float(weight)
                _emote_weights = weights
    return _emote_weights


def emote_polarity(emotes: tuple[str, ...]) -> float:
    """Net polarity of a comment's emotes: > 0 positive, < 0 negative, 0 none; clipped to [-3, 3]."""
    if not emotes:
        return 0.0
    weights = _load_emote_weights()
    total = 0.0
    for emote in emotes:
        total += weights.get(emote, 0.0) or weights.get(_EMOJI_MODIFIERS.sub("", emote), 0.0)
    return max(-3.0, min(3.0, total))
