"""Replay readers (JSONL, CSV, Bilibili XML, plain text) and ReplaySource, on tests/data/replay fixtures."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import ManualClock
from bot.errors import SourceError
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources import replay
from bot.sources.base import SourceState
from bot.sources.generic_json import parse_event
from bot.sources.replay import (
    DEFAULT_START_TS,
    MAX_EXAMPLES,
    MAX_LOGGED_SKIPS,
    ReplayFormat,
    ReplaySource,
    ReplayStats,
    SkipReason,
    detect_encoding,
    parse_time,
    read_events,
    sniff_format,
)

HASHER = ViewerHasher.for_tests()
DATA = Path(__file__).resolve().parents[2] / "data" / "replay"
SHARED_TEXT_LOG = (
    Path(__file__).resolve().parents[3].parent / "shared/data/replay/livechat_douyin_comments.txt"
)
T0 = DEFAULT_START_TS  # 2026-01-01 20:00 CST


def read(path: Path, **options: object) -> tuple[list[Event], ReplayStats]:
    stats = ReplayStats(path=str(path))
    events = list(read_events(path, hasher=HASHER, stats=stats, **options))  # type: ignore[arg-type]
    return events, stats


def skipped_lines(stats: ReplayStats) -> list[tuple[int, str]]:
    return [(s.line, str(s.reason)) for s in stats.examples]


# --- JSONL ------------------------------------------------------------------------------------------------


def test_recorded_jsonl_keeps_hashed_ids_received_ts_and_file_order() -> None:
    events, stats = read(DATA / "recorded.jsonl")
    assert (stats.format, stats.encoding, stats.lines_read, stats.events) == (
        ReplayFormat.JSONL,
        "utf-8",
        8,
        8,
    )
    assert not stats.skipped
    assert [e.kind for e in events] == [
        EventKind.SYSTEM, EventKind.ENTER, EventKind.CHAT, EventKind.CHAT,
        EventKind.GIFT, EventKind.LIKE, EventKind.STATS, EventKind.CHAT,
    ]  # fmt: skip
    assert {e.platform for e in events} == {"bilibili"} and {e.room for e in events} == {"21452505"}
    ask = events[3]
    # Recorded user ids are already hashes: used as they are, not hashed again.
    assert ask.user_id == "a7c2e9f0b1d34c58" and ask.user_name is None
    assert (ask.ts, ask.received_ts, ask.msg_id, ask.text) == (
        1767268803900,
        1767268804010,
        "bl-1002",
        "这条裙子多少钱？",
    )
    assert events[4].gift_name == "小心心" and events[4].count == 5 and events[4].value == 0.5
    assert events[6].stats == {"online": 842, "viewers_total": 1203, "likes_total": 3021}
    # The last line is older than the one before it; replay keeps file order.
    assert [e.ts for e in events[-2:]] == [1767268810000, 1767268809500]
    assert read(DATA / "recorded.jsonl", store_names=True)[0][3].user_name == "小北"


def test_events_written_with_to_line_read_back_identically(tmp_path: Path) -> None:
    originals, _ = read(DATA / "recorded.jsonl", store_names=True)
    log = tmp_path / "session.jsonl"
    log.write_text("".join(e.to_line() + "\n" for e in originals), encoding="utf-8")
    again, stats = read(log, store_names=True)
    assert again == originals and stats.events == 8


def test_push_jsonl_hashes_raw_ids_and_uses_event_time() -> None:
    events, stats = read(DATA / "push.jsonl")
    assert (stats.lines_read, stats.events, stats.skipped_total) == (5, 5, 0)  # a blank line is not an error
    assert [e.kind for e in events] == [
        EventKind.CHAT, EventKind.GIFT, EventKind.CHAT, EventKind.FOLLOW, EventKind.CHAT,
    ]  # fmt: skip
    assert events[0].user_id == HASHER("kuaishou", "u1001") == events[4].user_id
    assert events[2].user_id == HASHER("kuaishou", "u1003") == events[3].user_id  # the batch line
    assert all(e.received_ts == e.ts for e in events)
    assert all(e.user_name is None for e in events)
    assert events[0].msg_id == "m-1" and events[1].value == 0.3


def test_jsonl_room_and_platform_overrides() -> None:
    events, _ = read(DATA / "push.jsonl", room="main", platform="custom")
    assert {e.room for e in events} == {"main"} and {e.platform for e in events} == {"custom"}
    # Hashing still uses the platform the id belongs to.
    assert events[0].user_id == HASHER("kuaishou", "u1001")


def test_broken_jsonl_lines_are_counted_with_line_numbers_and_the_rest_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.sources.replay"):
        events, stats = read(DATA / "broken.jsonl")
    assert [e.text or str(e.kind) for e in events] == ["晚上好", "like", "有券吗", "已拍"]
    assert (stats.lines_read, stats.events) == (10, 4)
    assert stats.skipped == {"bad_json": 2, "bad_event": 3, "empty_text": 1}
    assert skipped_lines(stats) == [
        (2, "bad_json"), (4, "bad_event"), (5, "bad_event"),
        (6, "empty_text"), (8, "bad_event"), (9, "bad_json"),
    ]  # fmt: skip
    assert [s.detail for s in stats.examples if s.reason is SkipReason.BAD_EVENT] == [
        "ts: required key is missing",
        "kind: unknown kind 'dance'",
        "room: required key is missing",
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6
    assert warnings[0].startswith("replay=broken.jsonl room=* platform=* line 2 skipped (bad_json)")


def test_only_the_first_skips_are_logged_but_all_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "noisy.jsonl"
    good = '{"platform":"custom","room":"r","kind":"chat","ts":1767268800000,"user":{"id":"u"},"text":"好"}'
    log.write_text("\n".join(["{broken"] * 60 + [good]) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="bot.sources.replay"):
        events, stats = read(log)
    assert len(events) == 1 and stats.skipped == {"bad_json": 60}
    assert len(stats.examples) == MAX_EXAMPLES and stats.examples[-1].line == MAX_EXAMPLES
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == MAX_LOGGED_SKIPS + 1
    assert "further skipped lines are counted" in warnings[-1]


# --- CSV --------------------------------------------------------------------------------------------------


def test_csv_with_unix_times_iso_and_quoted_multiline_text() -> None:
    events, stats = read(DATA / "comments.csv")
    assert (stats.format, stats.lines_read, stats.events) == (ReplayFormat.CSV, 10, 5)
    assert [e.text for e in events] == ["晚上好", "这个多少钱", "有券吗,怎么领", "多行\n评论", "已拍"]
    assert [e.ts for e in events] == [T0, T0 + 1500, T0 + 3000, T0 + 5000, T0 + 8000]
    assert all(e.received_ts == e.ts and e.kind is EventKind.CHAT for e in events)
    assert {e.room for e in events} == {"comments"} and {e.platform for e in events} == {"replay"}
    assert events[0].user_id == HASHER("replay", "u1") == events[2].user_id
    assert events[4].user_id is None
    assert all(e.user_name is None for e in events)
    assert stats.skipped == {"bad_time": 1, "empty_text": 1, "bad_row": 1}
    assert skipped_lines(stats) == [(7, "bad_time"), (8, "empty_text"), (9, "bad_row")]
    named, _ = read(DATA / "comments.csv", store_names=True, platform="douyin")
    assert named[1].user_name == "阿青" and named[1].user_id == HASHER("douyin", "u2")


def test_tsv_with_iso_datetimes() -> None:
    events, stats = read(DATA / "comments_iso.tsv")
    assert stats.format is ReplayFormat.CSV
    assert [(e.ts, e.text) for e in events] == [
        (T0, "开场了"),
        (T0 + 10_000, "有XL吗"),
        (T0 + 20_000, "发什么快递"),
    ]
    assert events[0].user_id == events[2].user_id == HASHER("replay", "a1")


def test_gb18030_csv_with_chinese_headers_and_offsets_from_start() -> None:
    start = 1_767_340_800_000
    events, stats = read(DATA / "comments_offsets_gb18030.csv", start_ts=start)
    assert (stats.format, stats.encoding) == (ReplayFormat.CSV, "gb18030")
    assert [(e.ts - start, e.text) for e in events] == [
        (1000, "主播晚上好"), (2500, "160斤穿什么码"), (60_000, "怎么还不发货"), (90_000, "一分半的弹幕"),
    ]  # fmt: skip
    assert events[0].user_id == HASHER("replay", "1001") == events[2].user_id
    assert stats.skipped == {"bad_time": 1} and skipped_lines(stats) == [(5, "bad_time")]
    default_start, _ = read(DATA / "comments_offsets_gb18030.csv")
    assert default_start[0].ts == T0 + 1000


def test_csv_without_time_column_gets_synthetic_timing(tmp_path: Path) -> None:
    log = tmp_path / "only_text.csv"
    log.write_text("评论,昵称\n主播好,小北\n多少钱,阿青\n有券吗,大熊\n", encoding="utf-8")
    events, _ = read(log, rate=4.0)
    assert [(e.ts - T0, e.text) for e in events] == [(0, "主播好"), (250, "多少钱"), (500, "有券吗")]
    # Nicknames alone still give stable pseudonymous viewer ids.
    assert events[0].user_id == HASHER("replay", "name:小北") and events[0].user_name is None


def test_csv_without_text_column_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "wrong.csv"
    log.write_text("time,score\n1,2\n", encoding="utf-8")
    with pytest.raises(SourceError, match="no text column .*found: time, score"):
        read(log)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("1767268800", T0),
        ("1767268800.25", T0 + 250),
        ("1767268800123", T0 + 123),
        ("2026-01-01 20:00:01", T0 + 1000),
        ("2026-01-01T12:00:01Z", T0 + 1000),
        ("2026/01/01 20:00:01.5", T0 + 1500),
        ("01:02:03", T0 + 3_723_000),
        ("02:03.5", T0 + 123_500),
        ("42", T0 + 42_000),
        ("0.5", T0 + 500),
        ("", None),
        ("soon", None),
        ("12:75", None),
        ("1:60:00", None),
        ("-5", None),
        ("99999999999999999", None),
    ],
)
def test_parse_time(cell: str, expected: int | None) -> None:
    assert parse_time(cell, T0) == expected


# --- Bilibili danmaku XML ---------------------------------------------------------------------------------

DANMAKU_TEXTS = [
    "主播晚上好",
    "这件多少钱？",
    "有券吗 & 怎么领",
    "160斤穿什么码 & 有XL吗",
    "没有闭合的弹幕",
    "已拍 [赞]",
    "匿名弹幕",
]


def test_bilibili_xml_anchors_on_the_first_send_time_and_survives_broken_elements() -> None:
    events, stats = read(DATA / "danmaku.xml")
    assert (stats.format, stats.encoding, stats.lines_read) == (ReplayFormat.BILIBILI_XML, "utf-8", 21)
    assert [e.text for e in events] == DANMAKU_TEXTS
    # Start = first send time (1767268801 s) minus its offset (1.5 s); later ts follow the offsets.
    start = 1_767_268_801_000 - 1500
    assert [e.ts - start for e in events] == [1500, 4250, 6000, 9100, 13500, 15000, 20000]
    assert [e.msg_id for e in events] == ["50001", "50002", "50003", "50004", "50007", "50008", None]
    assert events[0].user_id == HASHER("replay", "8a3f01c2") == events[2].user_id
    assert events[-1].user_id is None  # user hash "0": anonymous
    assert stats.skipped == {"bad_time": 1, "empty_text": 1, "bad_xml": 2}
    assert skipped_lines(stats) == [(14, "bad_time"), (15, "empty_text"), (18, "bad_xml"), (19, "bad_xml")]
    assert stats.repaired == 2  # the stray "&" and the unclosed element


def test_bilibili_xml_with_explicit_start_uses_offsets_only() -> None:
    events, _ = read(DATA / "danmaku.xml", start_ts=T0, room="21452505", platform="bilibili")
    assert [e.ts - T0 for e in events] == [1500, 4250, 6000, 9100, 13500, 15000, 20000]
    assert {e.room for e in events} == {"21452505"} and {e.platform for e in events} == {"bilibili"}


def test_bilibili_xml_without_plausible_send_times_starts_at_the_default(tmp_path: Path) -> None:
    log = tmp_path / "video.xml"
    log.write_text('<i><d p="3.0,1,25,16777215,0,0,abc,9">你好</d></i>', encoding="utf-8")
    events, _ = read(log)
    assert [(e.ts, e.text, e.msg_id) for e in events] == [(T0 + 3000, "你好", "9")]


def test_bilibili_xml_on_one_line_in_tiny_chunks_and_in_gb18030_gives_the_same_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, _ = read(DATA / "danmaku.xml")
    source = (DATA / "danmaku.xml").read_text(encoding="utf-8")
    one_line = tmp_path / "danmaku.xml"
    one_line.write_text(source.replace("\n", ""), encoding="utf-8")
    gb = tmp_path / "gb.xml"
    gb.write_bytes(source.replace('encoding="UTF-8"', 'encoding="GB18030"').encode("gb18030"))
    for chunk in (1, 7, 64):
        monkeypatch.setattr(replay, "_XML_CHUNK_CHARS", chunk)
        events, stats = read(DATA / "danmaku.xml")
        assert events == reference and stats.skipped_total == 4, chunk
    monkeypatch.undo()
    flat, stats = read(one_line)
    # Without line breaks the unclosed element swallows nothing but itself; the rest is identical.
    assert [e.text for e in flat] == DANMAKU_TEXTS and stats.lines_read == 1
    assert [e.ts for e in flat] == [e.ts for e in reference]
    gb_events, gb_stats = read(gb, room="danmaku")
    assert gb_stats.encoding == "gb18030" and gb_events == reference


def test_bililive_recorder_xml_with_record_info_gifts_super_chats_and_guards() -> None:
    events, stats = read(DATA / "recorder.xml", store_names=True)
    assert stats.skipped_total == 0 and stats.repaired == 0
    summary = [(e.kind, e.ts - T0, e.text, e.gift_name, e.count, e.value, e.user_name) for e in events]
    assert summary == [
        (EventKind.CHAT, 2345, "来了来了", None, 1, 0.0, "小北"),
        (EventKind.GIFT, 5500, "", "小心心", 3, 0.0, "阿青"),
        (EventKind.CHAT, 8000, "主播能讲讲面料吗", "醒目留言", 1, 30.0, "大熊"),
        (EventKind.GIFT, 10250, "", "舰长", 1, 198.0, "小北"),
        (EventKind.CHAT, 12000, "XL有吗", None, 1, 0.0, "路人甲"),
    ]
    assert events[0].user_id == HASHER("replay", "1001") == events[3].user_id


# --- plain text -------------------------------------------------------------------------------------------


def test_plain_text_gets_synthetic_timing_from_a_fixed_start() -> None:
    events, stats = read(DATA / "comments.txt")
    assert (stats.format, stats.lines_read, stats.events, stats.skipped_total) == (ReplayFormat.TEXT, 6, 5, 0)
    assert [(e.ts - T0, e.text) for e in events] == [
        (0, "主播晚上好"), (500, "这件多少钱"), (1000, "160斤穿什么码"), (1500, "有券吗[赞]"), (2000, "已拍"),
    ]  # fmt: skip
    assert all(e.user_id is None and e.msg_id is None and e.room == "comments" for e in events)
    fast, _ = read(DATA / "comments.txt", rate=10, start_ts=1000)
    assert [e.ts for e in fast] == [1000, 1100, 1200, 1300, 1400]
    assert read(DATA / "comments.txt")[0] == events  # same file, same events


def test_encodings_gb18030_and_utf8_bom_are_detected(tmp_path: Path) -> None:
    events, stats = read(DATA / "comments_gb18030.txt")
    assert stats.encoding == "gb18030"
    assert [e.text for e in events] == ["晚上好姐妹们", "这款羽绒服充绒量多少", "有没有黑色"]
    bom = tmp_path / "bom.txt"
    bom.write_bytes("主播好\n多少钱\n".encode("utf-8-sig"))
    events, stats = read(bom)
    assert stats.encoding == "utf-8-sig" and [e.text for e in events] == ["主播好", "多少钱"]
    bom_csv = tmp_path / "bom.csv"
    bom_csv.write_bytes("text,time\n你好,3\n".encode("utf-8-sig"))
    events, stats = read(bom_csv)
    assert (stats.format, [(e.ts - T0, e.text) for e in events]) == (ReplayFormat.CSV, [(3000, "你好")])


def test_undecodable_lines_are_skipped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "mixed.txt"
    log.write_bytes("第一条\n".encode() + b"\xff\xfe broken\n" + "第三条\n".encode())
    events, stats = read(log)
    assert stats.encoding == "utf-8"  # neither UTF-8 nor GB18030: bad lines are skipped
    assert [e.text for e in events] == ["第一条", "第三条"]
    assert skipped_lines(stats) == [(2, "bad_encoding")]
    # A bad line after the sniffed prefix is skipped the same way.
    monkeypatch.setattr(replay, "SNIFF_BYTES", 8)
    late = tmp_path / "late.txt"
    late.write_bytes("很好的开头\n".encode() * 3 + b"\x80\x80\n" + "结尾\n".encode())
    events, stats = read(late)
    assert stats.encoding == "utf-8" and len(events) == 4 and stats.skipped == {"bad_encoding": 1}


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("主播好".encode("utf-8-sig"), "utf-8-sig"),
        ("主播好".encode(), "utf-8"),
        (b"plain ascii", "utf-8"),
        ("主播好，多少钱".encode("gb18030"), "gb18030"),
        ("价格".encode()[:4], "utf-8"),  # a character cut at the end of the sample is fine
    ],
)
def test_detect_encoding(sample: bytes, expected: str) -> None:
    assert detect_encoding(sample) == expected


def test_utf16_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "utf16.txt"
    log.write_bytes("主播好\n".encode("utf-16"))
    with pytest.raises(SourceError, match="UTF-16"):
        read(log)


# --- format detection, laziness, errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "log.txt",
            '{"platform":"x","room":"r","kind":"chat","ts":1,"user":{"id":"u"},"text":"好"}\n',
            "jsonl",
        ),
        ("log.txt", "时间,弹幕\n1,好\n", "csv"),
        ("log.log", '<?xml version="1.0"?>\n<i><d p="1,1,25,1,0,0,a,1">好</d></i>', "bilibili_xml"),
        ("dump", '<d p="1,1,25,1,0,0,a,1">好</d>\n', "bilibili_xml"),
        ("log.txt", "{这只是一条弹幕}\n今天的time,text都很好\n", "text"),
        ("comments.txt", "主播好\n", "text"),
        ("events.ndjson", "主播好\n", "jsonl"),
    ],
)
def test_sniff_format(name: str, content: str, expected: str) -> None:
    assert sniff_format(name, content) == expected


def test_format_override(tmp_path: Path) -> None:
    events, stats = read(DATA / "push.jsonl", fmt="text")
    assert stats.format is ReplayFormat.TEXT and events[0].text.startswith('{"platform"')
    xml_as_txt = tmp_path / "danmaku.txt"
    xml_as_txt.write_bytes((DATA / "danmaku.xml").read_bytes())
    assert [e.text for e in read(xml_as_txt, fmt="xml")[0]] == DANMAKU_TEXTS
    with pytest.raises(SourceError, match="unknown replay format 'yaml'"):
        read(DATA / "push.jsonl", fmt="yaml")


def test_missing_file_and_bad_rate_fail_at_call_time(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read replay file .*nope.jsonl"):
        read_events(tmp_path / "nope.jsonl", hasher=HASHER)
    with pytest.raises(ValueError, match="rate must be a positive"):
        read_events(DATA / "comments.txt", hasher=HASHER, rate=0)


def test_reading_is_lazy(tmp_path: Path) -> None:
    log = tmp_path / "big.txt"
    log.write_text("".join(f"第{i}条弹幕\n" for i in range(20_000)), encoding="utf-8")
    stats = ReplayStats(path=str(log))
    first = list(itertools.islice(read_events(log, hasher=HASHER, stats=stats), 5))
    assert [e.text for e in first] == [f"第{i}条弹幕" for i in range(5)]
    assert stats.lines_read <= 6 and stats.events == 5


@pytest.mark.skipif(not SHARED_TEXT_LOG.exists(), reason="../shared/data is not present")
def test_shared_douyin_comment_log_reads_as_plain_text() -> None:
    events, stats = read(SHARED_TEXT_LOG)
    non_blank = sum(1 for line in SHARED_TEXT_LOG.read_text(encoding="utf-8").splitlines() if line.strip())
    assert (stats.format, stats.encoding, stats.skipped_total) == (ReplayFormat.TEXT, "utf-8", 0)
    assert stats.events == non_blank > 9000
    assert events[-1].ts - events[0].ts == round((non_blank - 1) * 500)


# --- ReplaySource -------------------------------------------------------------------------------------------


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def write_push_log(path: Path, offsets_ms: list[int]) -> Path:
    lines = [
        json.dumps(
            {
                "platform": "custom",
                "room": "r1",
                "kind": "chat",
                "ts": T0 + off,
                "user": {"id": f"u{i}"},
                "text": f"第{i}条",
            },  # fmt: skip
            ensure_ascii=False,
        )
        for i, off in enumerate(offsets_ms)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_replay_source_emits_everything_as_fast_as_possible() -> None:
    clock = ManualClock()
    source = ReplaySource(DATA / "danmaku.xml", hasher=HASHER, clock=clock, start_ts=T0)
    assert source.status.state is SourceState.IDLE and source.status.room == "danmaku"
    got: list[Event] = []

    async def emit(event: Event) -> None:
        got.append(event)

    await source.run(emit)
    expected, _ = read(DATA / "danmaku.xml", start_ts=T0)
    assert got == expected
    assert source.status.state is SourceState.FINISHED
    assert source.status.messages == 7 and source.status.errors == 4
    assert source.stats.events == 7 and source.stats.skipped == {"bad_time": 1, "empty_text": 1, "bad_xml": 2}


async def test_replay_source_takes_room_and_platform_from_jsonl() -> None:
    source = ReplaySource(DATA / "recorded.jsonl", hasher=HASHER, clock=ManualClock())
    got: list[Event] = []

    async def emit(event: Event) -> None:
        got.append(event)

    await source.run(emit)
    assert (source.status.room, source.status.platform) == ("21452505", "bilibili")
    assert [e.received_ts for e in got][:2] == [1767268800040, 1767268801310]  # recorded receive times


async def test_replay_source_paces_at_speed_on_the_clock(tmp_path: Path) -> None:
    log = write_push_log(tmp_path / "paced.jsonl", [0, 1000, 3000, 2000])
    clock = ManualClock(start_ms=5_000_000)
    source = ReplaySource(log, hasher=HASHER, clock=clock, speed=2.0)
    got: list[tuple[int, str]] = []
    emitted: list[Event] = []

    async def emit(event: Event) -> None:
        got.append((clock.now_ms(), event.text))
        emitted.append(event)

    task = asyncio.create_task(source.run(emit))
    await settle()
    assert got == [(5_000_000, "第0条")] and source.status.state is SourceState.CONNECTED
    clock.advance(0.4)
    await settle()
    assert len(got) == 1
    clock.advance(0.1)  # 1000 ms of event time at 2x = 500 ms
    await settle()
    assert got[-1] == (5_000_500, "第1条")
    clock.advance(0.9)
    await settle()
    assert len(got) == 2
    clock.advance(0.1)
    await settle()
    # The out-of-order last event (older ts) goes out right after the third.
    assert got[2:] == [(5_001_500, "第2条"), (5_001_500, "第3条")]
    await asyncio.wait_for(task, 1)
    assert source.status.state is SourceState.FINISHED
    # received_ts is event time, not the replay's wall clock: paced and fast runs give equal events.
    assert source.status.messages == 4 and emitted == read(log)[0]


async def test_replay_source_stop_cuts_a_pacing_sleep_short(tmp_path: Path) -> None:
    log = write_push_log(tmp_path / "slow.jsonl", [0, 60_000, 120_000])
    clock = ManualClock()
    source = ReplaySource(log, hasher=HASHER, clock=clock, speed=1.0)
    got: list[Event] = []

    async def emit(event: Event) -> None:
        got.append(event)

    task = asyncio.create_task(source.run(emit))
    await settle()
    source.stop()
    await asyncio.wait_for(task, 1)  # no clock advance needed
    assert len(got) == 1 and source.status.state is SourceState.STOPPED


async def test_replay_source_stop_from_emit_and_before_run(tmp_path: Path) -> None:
    log = write_push_log(tmp_path / "many.jsonl", list(range(0, 10_000, 100)))
    source = ReplaySource(log, hasher=HASHER, clock=ManualClock())
    got: list[Event] = []

    async def emit(event: Event) -> None:
        got.append(event)
        if len(got) == 3:
            source.stop()

    await source.run(emit)
    assert len(got) == 3 and source.status.state is SourceState.STOPPED
    with pytest.raises(RuntimeError, match="already run"):
        await source.run(emit)

    early = ReplaySource(log, hasher=HASHER, clock=ManualClock())
    early.stop()
    await early.run(emit)
    assert len(got) == 3 and early.status.state is SourceState.STOPPED


async def test_replay_source_cancellation_propagates(tmp_path: Path) -> None:
    log = write_push_log(tmp_path / "slow.jsonl", [0, 60_000])
    source = ReplaySource(log, hasher=HASHER, clock=ManualClock(), speed=1.0)

    async def emit(event: Event) -> None:
        pass

    task = asyncio.create_task(source.run(emit))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_replay_source_reports_a_missing_file_as_failed(tmp_path: Path) -> None:
    source = ReplaySource(tmp_path / "gone.jsonl", hasher=HASHER, clock=ManualClock())

    async def emit(event: Event) -> None:
        raise AssertionError("nothing to emit")

    with pytest.raises(SourceError, match="cannot read replay file"):
        await source.run(emit)
    assert source.status.state is SourceState.FAILED and "gone.jsonl" in (source.status.last_error or "")
    with pytest.raises(ValueError, match="speed must be a positive"):
        ReplaySource(DATA / "comments.txt", hasher=HASHER, clock=ManualClock(), speed=0)


def test_replayed_events_are_valid_generic_json() -> None:
    """Every reader's output survives the replay-JSONL round trip (Event.to_line → parse_event)."""
    for name in ("comments.csv", "danmaku.xml", "recorder.xml", "comments.txt", "push.jsonl"):
        for event in read(DATA / name, store_names=True)[0]:
            again = parse_event(json.loads(event.to_line()), hasher=None, received_ts=0, store_names=True)
            assert again == event, name


# --- fuzzing ------------------------------------------------------------------------------------------------

FORMATS = [f.value for f in ReplayFormat]


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=1500), fmt=st.sampled_from(FORMATS))
def test_arbitrary_bytes_never_crash_a_reader(data: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "fuzz.log"
        log.write_bytes(data)
        stats = ReplayStats(path=str(log))
        try:
            events = list(read_events(log, hasher=HASHER, fmt=fmt, stats=stats))
        except SourceError:
            return  # UTF-16 BOM, or a CSV header without a text column: reported, not crashed
        assert stats.events == len(events)
        assert all(e.kind is not EventKind.CHAT or e.text.strip() for e in events)


@settings(max_examples=40, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.sampled_from((DATA / "danmaku.xml").read_text(encoding="utf-8").splitlines()),
            st.text(alphabet='<>/d p="&;1,.abc弹幕\n', max_size=30),
        ),
        max_size=30,
    ),
    chunk=st.integers(min_value=1, max_value=300),
)
def test_xml_chunk_size_never_changes_the_events(lines: list[str], chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "fuzz.xml"
        log.write_text("\n".join(lines), encoding="utf-8")
        reference = read(log, start_ts=T0)
        saved = replay._XML_CHUNK_CHARS
        replay._XML_CHUNK_CHARS = chunk
        try:
            chunked = read(log, start_ts=T0)
        finally:
            replay._XML_CHUNK_CHARS = saved
        assert chunked[0] == reference[0]
        assert chunked[1].skipped == reference[1].skipped
        assert chunked[1].examples == reference[1].examples
