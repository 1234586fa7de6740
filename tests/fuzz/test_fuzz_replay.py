"""Replay readers on near-valid and hostile logs, in every format: events or counted skips, SourceError
for a file that cannot be read at all, never another exception, a hang or memory growing with the file.

Random bytes in every format and XML chunking are fuzzed in tests/bot/sources/test_replay.py.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import SourceError
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources.replay import ReplayFormat, ReplayStats, read_events
from tests.fuzz.bounds import bounded

HASHER = ViewerHasher.for_tests()


def _read(path: Path, fmt: str) -> tuple[list[Event], ReplayStats]:
    stats = ReplayStats(path=str(path))
    try:
        events = list(read_events(path, hasher=HASHER, fmt=fmt, stats=stats))
    except SourceError:
        return [], stats
    assert stats.events == len(events)
    assert all(isinstance(e, Event) for e in events)
    assert all(e.kind is not EventKind.CHAT or e.text.strip() for e in events)
    return events, stats


def _read_text(text: str | bytes, fmt: str, suffix: str) -> tuple[list[Event], ReplayStats]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"log{suffix}"
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return _read(path, fmt)


_VALUES = st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=12)
_FIELDS = {
    "platform": st.sampled_from(["bilibili", "douyin", ""]) | _VALUES,
    "room": st.sampled_from(["r1", ""]) | _VALUES,
    "kind": st.sampled_from([k.value for k in EventKind]) | _VALUES,
    "ts": st.integers(-(2**63), 2**63) | _VALUES,
    "received_ts": st.integers(0, 2**53) | _VALUES,
    "id": _VALUES,
    "text": st.text(max_size=30) | _VALUES,
    "user": st.fixed_dictionaries({}, optional={"id": _VALUES, "name": _VALUES}) | _VALUES,
    "count": st.integers(-5, 2**70) | _VALUES,
    "value": st.floats() | _VALUES,
    "gift": st.fixed_dictionaries({}, optional={"name": _VALUES}) | _VALUES,
    "stats": st.dictionaries(st.sampled_from(["online", "viewers_total", "likes_total", "x"]), _VALUES) | _VALUES,
    "event": st.sampled_from(["live_start", "source_down", "x"]) | _VALUES,
}
_JSONL_LINES = st.fixed_dictionaries({}, optional=_FIELDS).map(json.dumps) | st.text(max_size=40)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(_JSONL_LINES, max_size=25))
def test_near_valid_jsonl(lines: list[str]) -> None:
    text = "\n".join(lines)
    _events, stats = _read_text(text, "jsonl", ".jsonl")
    # At most one event or one skip per physical line; a generated text may itself hold line breaks
    # (splitlines is the finest split, so this bounds any line reader).
    assert stats.events + sum(stats.skipped.values()) <= len(text.splitlines()) + 1


_CELLS = st.text(alphabet='ab,;\t"\n\r 弹幕01:.-', max_size=12) | st.sampled_from(["12:00:01", "1767268800", "-1", ""])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.lists(st.sampled_from(["time", "text", "user", "content", "弹幕", "时间", "x"]), min_size=1, max_size=4),
    rows=st.lists(st.lists(_CELLS, max_size=5), max_size=20),
    delimiter=st.sampled_from([",", "\t", ";"]),
)
def test_near_valid_csv(header: list[str], rows: list[list[str]], delimiter: str) -> None:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    _read_text(out.getvalue(), "csv", ".csv")


_XML_PARTS = st.sampled_from([
    '<d p="1.5,1,25,16777215,1767268800,0,abc,1">', "</d>", "<i>", "</i>", '<d p="x,y">', "<d>", "&amp;",
    "&#0;", "&#x1F600;", "<![CDATA[", "]]>", "<!--", "-->", "多少钱", "\n", '"', "<?xml version='1.0'?>",
])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(_XML_PARTS | st.text(max_size=8), max_size=40))
def test_near_valid_bilibili_xml(parts: list[str]) -> None:
    _read_text("".join(parts), "bilibili_xml", ".xml")


HOSTILE = {
    "csv unterminated quote": ("csv", ".csv", 'time,text\n1,"' + "a\n" * 100_000),
    "csv huge field": ("csv", ".csv", 'time,text\n1,"' + "好" * 300_000 + '"\n2,ok\n'),
    "xml unclosed tags": ("bilibili_xml", ".xml", "<i>" + "<d " * 100_000),
    "xml huge element": ("bilibili_xml", ".xml", '<i><d p="1,1,25,1,1,0,a,1">' + "x" * 5_000_000 + "</d></i>"),
    "jsonl deep nesting": ("jsonl", ".jsonl", "[" * 100_000 + "]" * 100_000 + "\n"),
    "jsonl huge line": ("jsonl", ".jsonl", '{"text":"' + "x" * 5_000_000 + '"}\n'),
    "text huge line": ("text", ".txt", "x" * 5_000_000 + "\nok\n"),
    "text nul bytes": ("text", ".txt", b"\0" * 100_000 + "多少钱\n".encode()),
    "utf-16 with bom": ("text", ".txt", "多少钱\n".encode("utf-16")),
    "gb18030": ("text", ".txt", "这个多少钱\n有优惠券吗\n".encode("gb18030") * 1000),
}


@pytest.mark.parametrize("fmt, suffix, content", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_logs_are_read_or_refused_boundedly(fmt: str, suffix: str, content: str | bytes) -> None:
    size_mb = len(content if isinstance(content, bytes) else content.encode()) / 2**20
    # Memory: a few times the longest line at most (a line is read whole), never the whole history.
    bounded(lambda: _read_text(content, fmt, suffix), seconds=120, mb=max(32.0, 8 * size_mb))


def test_formats_are_all_covered() -> None:
    fuzzed = {"jsonl", "csv", "bilibili_xml", "text"}
    assert fuzzed == {f.value for f in ReplayFormat}
