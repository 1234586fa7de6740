"""Compliance terms from an editable lexicon (``nlp/lexicons/compliance.yaml``).

Two readers share one lexicon: run-sheet checks (`bot.scripts`) scan everything the host will say, with the
broad patterns (最 + anything); the analyzer scans comments for the plain words only, so that viewers who
quote a claim back (全网最低? 100%羊毛?) are noticed without flagging every question that contains 最.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlp.normalize import normalize

COMPLIANCE_FILE = Path(__file__).resolve().parent / "lexicons" / "compliance.yaml"


@dataclass(frozen=True, slots=True)
class Hit:
    """One term found in a text."""

    term: str
    """The matched text, e.g. 全网最低 or 最显白."""
    group: str
    """Lexicon group key: absolute, medical, prescription_drug, financial, …"""
    label: str
    """The group's label for people, e.g. 绝对化用语."""


@dataclass(frozen=True, slots=True)
class _Group:
    key: str
    label: str
    words_re: re.Pattern[str] | None
    patterns_re: re.Pattern[str] | None
    comments: bool


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ValueError(f"{where}: expected a list of strings")
    return [str(v).lower() for v in value if str(v)]


def _alternation(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    return re.compile("|".join(re.escape(w) for w in sorted(set(words), key=lambda w: (-len(w), w))))


class ComplianceLexicon:
    """Finds advertising-law absolute terms and banned-category words in a text."""

    def __init__(self, groups: tuple[_Group, ...], ignore_re: re.Pattern[str] | None) -> None:
        self._groups = groups
        self._ignore_re = ignore_re

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<compliance>") -> ComplianceLexicon:
        """Build from ``{groups: {key: {label, words, patterns, comments}}, ignore: [...]}``.

        Raises:
            ValueError: the lexicon is malformed (the message names the entry).
        """
        unknown = set(data) - {"groups", "ignore"}
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {sorted(unknown)}")
        raw_groups = data.get("groups") or {}
        if not isinstance(raw_groups, Mapping):
            raise ValueError(f"{source}: groups: expected a mapping of group name → entry")
        groups: list[_Group] = []
        for key, spec in raw_groups.items():
            where = f"{source}: groups.{key}"
            if not isinstance(spec, Mapping):
                raise ValueError(f"{where}: expected a mapping with label/words/patterns")
            extra = set(spec) - {"label", "words", "patterns", "comments"}
            if extra:
                raise ValueError(f"{where}: unknown key(s) {sorted(extra)}")
            patterns = _strings(spec.get("patterns"), f"{where}.patterns")
            try:
                patterns_re = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None
            except re.error as exc:
                raise ValueError(f"{where}.patterns: {exc}") from exc
            groups.append(_Group(
                key=str(key), label=str(spec.get("label") or key),
                words_re=_alternation(_strings(spec.get("words"), f"{where}.words")),
                patterns_re=patterns_re, comments=bool(spec.get("comments", True)),
            ))
        ignore = _strings(data.get("ignore"), f"{source}: ignore")
        return cls(tuple(groups), _alternation(ignore))

    @classmethod
    def load(cls, path: str | Path = COMPLIANCE_FILE) -> ComplianceLexicon:
        p = Path(path)
        return cls.from_mapping(yaml.safe_load(p.read_text(encoding="utf-8")) or {}, source=str(p))

    def _scan(self, text: str, *, comments: bool) -> list[Hit]:
        if not text:
            return []
        if self._ignore_re is not None:
            # Same-length blanking keeps the offsets of the remaining words (no false joins across it).
            text = self._ignore_re.sub(lambda m: " " * len(m.group(0)), text)
        candidates: list[tuple[int, int, int, Hit]] = []
        for order, g in enumerate(self._groups):
            if comments and not g.comments:
                continue
            regexes = (g.words_re,) if comments else (g.words_re, g.patterns_re)
            for rx in regexes:
                if rx is None:
                    continue
                for m in rx.finditer(text):
                    if m.group(0).strip():
                        hit = Hit(term=m.group(0).strip(), group=g.key, label=g.label)
                        candidates.append((m.start(), -(m.end() - m.start()), order, hit))
        # The longest match at a place wins across groups (处方药 over 处方, 全网最低 over 最低), and
        # nothing inside a match is reported again.
        out: list[Hit] = []
        end = -1
        for start, neg_len, _, hit in sorted(candidates, key=lambda c: c[:3]):
            if start >= end:
                out.append(hit)
                end = start - neg_len
        return out

    def find(self, text: str) -> list[Hit]:
        """Every term in a run-sheet text (normalised here), words and patterns, in text order."""
        return self._scan(normalize(text).text, comments=False)

    def comment_terms(self, normalized_text: str) -> tuple[str, ...]:
        """Terms a viewer quotes in an already normalised comment (words only, groups with comments on)."""
        return tuple(dict.fromkeys(h.term for h in self._scan(normalized_text, comments=True)))


_lock = threading.Lock()
_default: ComplianceLexicon | None = None


def default_compliance() -> ComplianceLexicon:
    """The shipped lexicon, loaded once."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                _default = ComplianceLexicon.load()
    return _default
