"""Replay files → Events: own JSONL, CSV, Bilibili danmaku XML and plain text (DESIGN.md *Sources*).

The readers are generators over lazily read lines (only the first 64 KiB is read up front, to detect the
encoding and the format), so a 200k-line log never sits in memory as Events. Events are yielded in file
order; nothing is sorted. A broken line is counted by reason in `ReplayStats`, logged with its line number
(the first `MAX_LOGGED_SKIPS` only), and skipped; the rest of the file is still read.

Timing per format:

- **JSONL** (`protocols/generic_json.md`, one event or one batch array per line): `ts` from the line. A line
  carrying `received_ts` is a recorded log whose `user.id` already is a livebot hash; a line without it is a
  push log whose raw ids are hashed here, and its `received_ts` becomes its `ts` (event time, so a replay is
  deterministic).
- **CSV**: per row, the time column is Unix seconds or milliseconds, an ISO datetime (naive means China
  Standard Time, UTC+8), or an offset from the start (`HH:MM:SS`, `MM:SS`, or plain seconds below 1e9)
  added to `start_ts`. A CSV without a time column gets synthetic timing at `rate`.
- **Bilibili danmaku XML** (`<d p="offset_s,mode,size,color,send_ts,pool,user_hash,row_id">`): `ts` is
  start + the stream offset `p[0]`, because the offset is what orders the show, while send times of
  archived danmaku can be days after the broadcast. The start is `start_ts` when given; otherwise a
  BililiveRecorder `<BililiveRecorderRecordInfo start_time=…>`; otherwise the first `<d>`'s send time
  `p[4]` (seconds or ms) minus its offset, when that is a plausible Unix time (2009–2100); otherwise
  `DEFAULT_START_TS`. BililiveRecorder `<gift>`, `<sc>` (super chat: a chat with a CNY value) and `<guard>`
  elements are read too.
- **Plain text**: one comment per line, at `rate` comments per second from `start_ts`.

Formats without absolute times start at `DEFAULT_START_TS` (a fixed constant, not the wall clock), so
replaying the same file twice gives identical Events.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import html
import json
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from bot.clock import Clock
from bot.errors import ProtocolError, SourceError
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources.base import Emit, SourceState, SourceStatus
from bot.sources.generic_json import parse_event

logger = logging.getLogger(__name__)

DEFAULT_START_TS = 1_767_268_800_000
"""2026-01-01 20:00 China Standard Time: start of formats without absolute times (deterministic replays)."""
DEFAULT_PLATFORM = "replay"
SNIFF_BYTES = 64 * 1024
"""Bytes read up front to detect the encoding and the format."""
MAX_LOGGED_SKIPS = 20
"""Skipped lines logged one by one; later ones are only counted."""
MAX_EXAMPLES = 50
"""Skipped lines kept in `ReplayStats.examples`."""
CHINA_TZ = timezone(timedelta(hours=8))
"""Naive datetimes in CSV logs are read as China Standard Time."""

_XML_CHUNK_CHARS = 64 * 1024
_PLAUSIBLE_S = (1_230_768_000, 4_102_444_800)  # 2009-01-01 .. 2100-01-01, Unix seconds
_ABSOLUTE_S_MIN = 1e9  # a bare number at least this large is a Unix time, not an offset
_ABSOLUTE_MS_MIN = 1e12
_ABSOLUTE_MS_MAX = 1e14
_SUPER_CHAT_NAME = "醒目留言"
# Bilibili guard levels: name and monthly price in CNY yuan (1 is the highest).
_GUARDS = {"1": ("总督", 19998.0), "2": ("提督", 1998.0), "3": ("舰长", 198.0)}

# CSV header aliases, compared after strip() and lower().
TEXT_COLUMNS = (
    "text", "content", "comment", "message", "msg", "danmaku", "danmu", "barrage",
    "弹幕", "内容", "评论", "弹幕内容", "评论内容", "消息",
)  # fmt: skip
TIME_COLUMNS = (
    "time", "ts", "timestamp", "datetime", "created_at", "send_time", "offset",
    "时间", "发送时间", "时间戳",
)  # fmt: skip
USER_COLUMNS = ("uid", "user_id", "userid", "user", "用户id", "用户")
NAME_COLUMNS = ("name", "nickname", "user_name", "username", "昵称", "用户名")
_CSV_DELIMITERS = ",\t;|"


class ReplayFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    BILIBILI_XML = "bilibili_xml"
    TEXT = "text"


_FORMAT_ALIASES = {"xml": ReplayFormat.BILIBILI_XML, "txt": ReplayFormat.TEXT, "ndjson": ReplayFormat.JSONL}
_EXTENSIONS = {
    ".jsonl": ReplayFormat.JSONL,
    ".ndjson": ReplayFormat.JSONL,
    ".json": ReplayFormat.JSONL,
    ".csv": ReplayFormat.CSV,
    ".tsv": ReplayFormat.CSV,
    ".xml": ReplayFormat.BILIBILI_XML,
}


class SkipReason(StrEnum):
    """Why a line (or XML element) was skipped; the keys of `ReplayStats.skipped`."""

    BAD_ENCODING = "bad_encoding"  # bytes that are not valid in the detected encoding
    BAD_JSON = "bad_json"  # a JSONL line that is not JSON
    BAD_EVENT = "bad_event"  # JSON that breaks protocols/generic_json.md (missing or mistyped key)
    BAD_ROW = "bad_row"  # a CSV row without the text column
    BAD_TIME = "bad_time"  # a time that cannot be parsed
    EMPTY_TEXT = "empty_text"  # a comment with no text
    BAD_XML = "bad_xml"  # an XML element that cannot be recovered


SKIP_LABELS: dict[str, str] = {
    SkipReason.BAD_ENCODING: "编码错误", SkipReason.BAD_JSON: "JSON 无法解析",
    SkipReason.BAD_EVENT: "字段缺失或类型错误", SkipReason.BAD_ROW: "CSV 行缺少文本列",
    SkipReason.BAD_TIME: "时间无法解析", SkipReason.EMPTY_TEXT: "空弹幕", SkipReason.BAD_XML: "XML 元素损坏",
}
"""Chinese names of the skip reasons, for the replay summary and the report's data-quality section."""


class SkippedLine(NamedTuple):
    line: int
    reason: SkipReason
    detail: str


@dataclass(slots=True)
class ReplayStats:
    """What one replay read did; filled while the reader runs."""

    path: str
    format: ReplayFormat | None = None
    encoding: str | None = None
    """Detected encoding: `utf-8-sig` (UTF-8 with BOM), `utf-8` or `gb18030`."""
    lines_read: int = 0
    events: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    """Skipped lines by `SkipReason`."""
    examples: list[SkippedLine] = field(default_factory=list)
    """The first `MAX_EXAMPLES` skipped lines, with line numbers."""
    repaired: int = 0
    """Malformed XML elements recovered by the lenient fallback (not skipped)."""
    replaced_chars: int = 0
    """Undecodable bytes replaced by U+FFFD in CSV and XML (JSONL and text lines are skipped instead)."""

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


class _PrefixLogger(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['prefix']} {msg}" if self.extra else msg, kwargs


def detect_encoding(sample: bytes, *, complete: bool = False) -> str:
    """UTF-8 with BOM, UTF-8, then GB18030, tried in that order on raw bytes.

    `complete` says the sample is the whole file; otherwise a multi-byte character cut at the end of the
    sample is not an error. Undecodable input reports `utf-8` (its bad lines are then skipped and counted).

    Raises:
        SourceError: UTF-16 input (a BOM), which the line readers cannot split.
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SourceError("UTF-16 replay files are not supported; convert the file to UTF-8")
    for encoding in ("utf-8", "gb18030"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=complete)
        except UnicodeDecodeError:
            continue
        return encoding
    return "utf-8"


def _norm_header(cell: str) -> str:
    return cell.strip().strip("\ufeff").strip().lower()


def _csv_delimiter(header_line: str) -> str:
    counts = [(header_line.count(d), d) for d in _CSV_DELIMITERS]
    best = max(counts, key=lambda c: c[0])
    return best[1] if best[0] > 0 else ","


def _looks_like_csv_header(line: str) -> bool:
    delimiter = _csv_delimiter(line)
    try:
        cells = [_norm_header(c) for c in next(csv.reader([line], delimiter=delimiter), [])]
    except csv.Error:
        return False
    if len(cells) < 2:
        return False
    return any(c in TEXT_COLUMNS for c in cells) and any(c in TIME_COLUMNS + USER_COLUMNS for c in cells)


def sniff_format(path: str | os.PathLike[str], sample: str) -> ReplayFormat:
    """Pick a format from the extension, or from the content for `.txt`, `.log` and unknown extensions."""
    by_ext = _EXTENSIONS.get(Path(path).suffix.lower())
    if by_ext is not None:
        return by_ext
    sample = sample.lstrip("\ufeff")
    first = next((line.strip() for line in sample.splitlines() if line.strip()), "")
    if first.startswith(("<?xml", "<i>", "<i ")) or re.search(r"<d\s+p=\"", sample):
        return ReplayFormat.BILIBILI_XML
    if first.startswith(("{", "[")):
        try:
            obj = json.loads(first)
        except ValueError:
            obj = None
        items = obj if isinstance(obj, list) else [obj]
        if items and all(isinstance(item, dict) and "kind" in item for item in items):
            return ReplayFormat.JSONL
    if _looks_like_csv_header(first):
        return ReplayFormat.CSV
    return ReplayFormat.TEXT


def _coerce_format(fmt: ReplayFormat | str) -> ReplayFormat:
    if isinstance(fmt, ReplayFormat):
        return fmt
    name = fmt.strip().lower()
    if name in _FORMAT_ALIASES:
        return _FORMAT_ALIASES[name]
    try:
        return ReplayFormat(name)
    except ValueError:
        choices = ", ".join([f.value for f in ReplayFormat] + sorted(_FORMAT_ALIASES))
        raise SourceError(f"unknown replay format {fmt!r} (expected one of: {choices})") from None


class _Line(NamedTuple):
    number: int
    text: str
    """Decoded line including its line ending; undecodable bytes replaced by U+FFFD when `ok` is False."""
    ok: bool


def _iter_lines(path: Path, encoding: str, stats: ReplayStats) -> Iterator[_Line]:
    """Read and decode one line at a time (UTF-8 and GB18030 never hold a 0x0A byte inside a character)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            stats.lines_read = number
            line_encoding = encoding if number == 1 or encoding != "utf-8-sig" else "utf-8"
            try:
                yield _Line(number, raw.decode(line_encoding), True)
            except UnicodeDecodeError:
                yield _Line(number, raw.decode(line_encoding, errors="replace"), False)


class _Reader:
    """Per-file context shared by the format readers: options, stats and the skip accounting."""

    def __init__(
        self,
        path: Path,
        *,
        hasher: ViewerHasher,
        room: str | None,
        platform: str | None,
        rate: float,
        start_ts: int | None,
        store_names: bool,
        stats: ReplayStats,
    ) -> None:
        self.path = path
        self.hasher = hasher
        self.room_override = room
        self.platform_override = platform
        self.room = room if room is not None else path.stem
        self.platform = platform if platform is not None else DEFAULT_PLATFORM
        self.rate = rate
        self.explicit_start = start_ts
        self.start_ts = DEFAULT_START_TS if start_ts is None else start_ts
        self.store_names = store_names
        self.stats = stats
        # JSONL lines name their own room and platform unless overridden.
        per_line = stats.format is ReplayFormat.JSONL
        room_label = "*" if per_line and room is None else self.room
        platform_label = "*" if per_line and platform is None else self.platform
        self.log = _PrefixLogger(
            logger, {"prefix": f"replay={path.name} room={room_label} platform={platform_label}"}
        )

    def skip(self, line: int, reason: SkipReason, detail: str) -> None:
        stats = self.stats
        stats.skipped[str(reason)] += 1
        total = stats.skipped_total
        if len(stats.examples) < MAX_EXAMPLES:
            stats.examples.append(SkippedLine(line, reason, detail))
        if total <= MAX_LOGGED_SKIPS:
            self.log.warning("line %d skipped (%s): %s", line, reason, detail)
            if total == MAX_LOGGED_SKIPS:
                self.log.warning("further skipped lines are counted, not logged")

    def synthetic_ts(self, index: int) -> int:
        return self.start_ts + round(index * 1000 / self.rate)

    def user(self, raw_id: str | None, name: str | None) -> tuple[str | None, str | None]:
        raw_id = raw_id.strip() if raw_id else None
        name = name.strip() if name else None
        if not raw_id and name:
            # A log with nicknames only: the salted hash of the nickname still counts unique viewers.
            raw_id = f"name:{name}"
        user_id = self.hasher(self.platform, raw_id) if raw_id and raw_id != "0" else None
        return user_id, (name or None) if self.store_names else None

    def chat(self, ts: int, text: str, **fields: Any) -> Event:
        return Event(
            platform=self.platform,
            room=self.room,
            kind=EventKind.CHAT,
            ts=ts,
            received_ts=ts,
            text=text,
            **fields,
        )


# --- JSONL ------------------------------------------------------------------------------------------------


def _read_jsonl(lines: Iterable[_Line], r: _Reader) -> Iterator[Event]:
    for line in lines:
        if not line.ok:
            r.skip(line.number, SkipReason.BAD_ENCODING, "not valid " + (r.stats.encoding or "utf-8"))
            continue
        text = line.text.strip().lstrip("\ufeff")
        if not text:
            continue
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError) as exc:
            r.skip(line.number, SkipReason.BAD_JSON, f"not valid JSON ({type(exc).__name__})")
            continue
        items = decoded if isinstance(decoded, list) else [decoded]
        for item in items:
            # A recorded log carries received_ts and already-hashed ids; a push log carries raw ids.
            recorded = isinstance(item, dict) and "received_ts" in item
            try:
                event = parse_event(
                    item,
                    hasher=None if recorded else r.hasher,
                    received_ts=0,
                    room=r.room_override,
                    store_names=r.store_names,
                )
            except ProtocolError as exc:
                r.skip(line.number, SkipReason.BAD_EVENT, str(exc))
                continue
            if event.kind is EventKind.CHAT and not event.text.strip():
                r.skip(line.number, SkipReason.EMPTY_TEXT, "chat event without text")
                continue
            if not recorded:
                event = replace(event, received_ts=event.ts)
            if r.platform_override is not None:
                event = replace(event, platform=r.platform_override)
            yield event


# --- CSV --------------------------------------------------------------------------------------------------

_CLOCK_RE = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")


def parse_time(value: str, start_ts: int) -> int | None:
    """One CSV time cell → Unix ms, or None when it cannot be read.

    Unix seconds or ms, an ISO datetime (naive = China Standard Time), or an offset from `start_ts`:
    `HH:MM:SS`, `MM:SS` or plain seconds below 1e9.
    """
    value = value.strip()
    if not value:
        return None
    clock = _CLOCK_RE.fullmatch(value)
    if clock:
        hours, minutes, seconds = clock.groups()
        if float(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
            return None
        offset = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
        return start_ts + round(offset * 1000)
    if _NUMBER_RE.fullmatch(value):
        number = float(value)
        if number >= _ABSOLUTE_MS_MAX:
            return None
        if number >= _ABSOLUTE_MS_MIN:
            return round(number)
        if number >= _ABSOLUTE_S_MIN:
            return round(number * 1000)
        return start_ts + round(number * 1000)
    try:
        moment = datetime.fromisoformat(value.replace("/", "-"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CHINA_TZ)
    return round(moment.timestamp() * 1000)


def _find_column(header: list[str], aliases: tuple[str, ...]) -> int | None:
    return next((i for i, cell in enumerate(header) if cell in aliases), None)


def _read_csv(lines: Iterable[_Line], r: _Reader, delimiter: str | None) -> Iterator[Event]:
    bad_lines: set[int] = set()

    def texts() -> Iterator[str]:
        for line in lines:
            if not line.ok:
                bad_lines.add(line.number)
                r.stats.replaced_chars += line.text.count("\ufffd")
            yield line.text

    source = texts()
    first = next((line for line in source if line.strip()), None)
    if first is None:
        return
    delimiter = delimiter or _csv_delimiter(first)
    try:
        header = [_norm_header(c) for c in next(csv.reader([first], delimiter=delimiter), [])]
    except csv.Error as exc:
        raise SourceError(f"{r.path}: unreadable CSV header ({exc})") from None
    text_col = _find_column(header, TEXT_COLUMNS)
    if text_col is None:
        raise SourceError(
            f"{r.path}: CSV header has no text column (found: {', '.join(header)}; "
            f"expected one of: {', '.join(TEXT_COLUMNS)})"
        )
    time_col = _find_column(header, TIME_COLUMNS)
    user_col = _find_column(header, USER_COLUMNS)
    name_col = _find_column(header, NAME_COLUMNS)
    if time_col is None:
        r.log.info("CSV has no time column; comments are spaced at %.3g/s", r.rate)

    reader = csv.reader(source, delimiter=delimiter)
    header_line = r.stats.lines_read
    produced = 0
    previous_end = header_line
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a NUL byte or an oversized field; the reader goes on with the next line
            end = header_line + reader.line_num
            first_line, previous_end = previous_end + 1, end
            r.skip(first_line, SkipReason.BAD_ROW, f"unreadable CSV row ({exc})")
            continue
        # csv line numbers count from the header line, which the reader above did not see.
        end = header_line + reader.line_num
        first_line, previous_end = previous_end + 1, end
        if any(n in bad_lines for n in range(first_line, end + 1)):
            bad_lines.difference_update(range(first_line, end + 1))
            r.skip(first_line, SkipReason.BAD_ENCODING, "not valid " + (r.stats.encoding or "utf-8"))
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= text_col:
            r.skip(first_line, SkipReason.BAD_ROW, f"{len(row)} columns, text is column {text_col + 1}")
            continue
        text = row[text_col].strip()
        if not text:
            r.skip(first_line, SkipReason.EMPTY_TEXT, "empty text cell")
            continue
        if time_col is None:
            ts = r.synthetic_ts(produced)
        else:
            cell = row[time_col] if len(row) > time_col else ""
            parsed = parse_time(cell, r.start_ts)
            if parsed is None:
                r.skip(first_line, SkipReason.BAD_TIME, f"cannot read time {cell!r}")
                continue
            ts = parsed
        raw_id = row[user_col] if user_col is not None and len(row) > user_col else None
        name = row[name_col] if name_col is not None and len(row) > name_col else None
        user_id, user_name = r.user(raw_id, name)
        produced += 1
        yield r.chat(ts, text, user_id=user_id, user_name=user_name)


# --- Bilibili danmaku XML ---------------------------------------------------------------------------------

# A span runs from one opening tag to the next; danmaku elements never nest, so each span holds at most
# one element of interest. Closing tags stay inside their span, except the root's `</i>`.
_XML_BOUNDARY = re.compile(r"<(?!/|!\[CDATA\[)|</i\s*>")
_XML_LOOKAHEAD = 16  # a boundary this close to the end of the buffer may change with the next chunk
_TAG_RE = re.compile(r"<([A-Za-z_][\w.-]*)")
_ATTR_RE = re.compile(r"([A-Za-z_][\w.-]*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


class _Element(NamedTuple):
    tag: str
    attrs: dict[str, str]
    text: str
    repaired: bool


def _parse_element(span: str, tag: str) -> _Element | None:
    """Strict XML first; a malformed element falls back to a regex (the attributes and the text up to `<`)."""
    strict = re.match(rf"<{tag}\b[^<>]*/>|<{tag}\b[^<>]*>[^<]*</{tag}\s*>", span)
    if strict:
        try:
            element = ET.fromstring(strict.group(0))
        except ET.ParseError:
            pass
        else:
            return _Element(tag, dict(element.attrib), element.text or "", False)
    start = re.match(rf"<{tag}\b([^>]*)>", span)
    if start is None:
        return None
    attrs = {
        m.group(1): html.unescape(m.group(2) or m.group(3) or "") for m in _ATTR_RE.finditer(start.group(1))
    }
    body = span[start.end() :]
    text = "" if start.group(1).rstrip().endswith("/") else html.unescape(body.split("<", 1)[0])
    return _Element(tag, attrs, text, True)


def _plausible_send_ms(raw: str) -> int | None:
    try:
        number = float(raw)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    seconds = number / 1000 if number >= _ABSOLUTE_MS_MIN else number
    if _PLAUSIBLE_S[0] <= seconds < _PLAUSIBLE_S[1]:
        return round(seconds * 1000)
    return None


def _offset_ms(raw: str | None) -> int | None:
    try:
        seconds = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return round(seconds * 1000)


class _XmlReader:
    def __init__(self, r: _Reader) -> None:
        self.r = r
        self.start: int | None = r.explicit_start
        self.index = 0

    def anchor(self, offset_ms: int, send_ms: int | None) -> int:
        if self.start is None:
            if send_ms is not None and send_ms >= offset_ms:
                self.start = send_ms - offset_ms
                self.r.log.info("start anchored to the first danmaku send time: %d", self.start)
            else:
                self.start = DEFAULT_START_TS
        return self.start + offset_ms

    def record_info(self, element: _Element) -> None:
        raw = element.attrs.get("start_time")
        if self.start is not None or not raw:
            return
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            # .NET writes 7 fractional digits, which Python before 3.12 refuses.
            trimmed = re.sub(r"(\.\d{6})\d+", r"\1", raw.strip())
            try:
                moment = datetime.fromisoformat(trimmed)
            except ValueError:
                return
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=CHINA_TZ)
        self.start = round(moment.timestamp() * 1000)

    def event(self, line: int, element: _Element) -> Event | None:
        r = self.r
        attrs = element.attrs
        if element.tag == "d":
            p = attrs.get("p")
            if p is None:
                r.skip(line, SkipReason.BAD_XML, "<d> without a p attribute")
                return None
            fields = p.split(",")
            offset = _offset_ms(fields[0])
            if offset is None:
                r.skip(line, SkipReason.BAD_TIME, f"cannot read offset {fields[0]!r}")
                return None
            text = element.text.strip()
            if not text:
                r.skip(line, SkipReason.EMPTY_TEXT, "<d> without text")
                return None
            send_ms = _plausible_send_ms(fields[4]) if len(fields) > 4 else None
            raw_id = attrs.get("uid") or (fields[6] if len(fields) > 6 else None)
            user_id, user_name = r.user(raw_id, attrs.get("user"))
            row_id = fields[7].strip() if len(fields) > 7 else ""
            return r.chat(
                self.anchor(offset, send_ms),
                text,
                msg_id=row_id if row_id not in ("", "0") else None,
                user_id=user_id,
                user_name=user_name,
            )
        offset = _offset_ms(attrs.get("ts"))
        if offset is None:
            r.skip(line, SkipReason.BAD_TIME, f"<{element.tag}> without a readable ts attribute")
            return None
        ts = self.anchor(offset, None)
        user_id, user_name = r.user(attrs.get("uid"), attrs.get("user"))
        common: dict[str, Any] = {
            "platform": r.platform,
            "room": r.room,
            "ts": ts,
            "received_ts": ts,
            "user_id": user_id,
            "user_name": user_name,
        }
        count = _positive_int(attrs.get("giftcount") or attrs.get("count"))
        if element.tag == "gift":
            name = (attrs.get("giftname") or "").strip()
            if not name:
                r.skip(line, SkipReason.BAD_XML, "<gift> without giftname")
                return None
            return Event(kind=EventKind.GIFT, gift_name=name, count=count, **common)
        if element.tag == "sc":
            text = element.text.strip()
            if not text:
                r.skip(line, SkipReason.EMPTY_TEXT, "<sc> without text")
                return None
            price = _offset_ms(attrs.get("price"))
            value = price / 1000 if price is not None else 0.0
            return Event(kind=EventKind.CHAT, text=text, value=value, gift_name=_SUPER_CHAT_NAME, **common)
        guard = _GUARDS.get((attrs.get("level") or "").strip())
        if guard is None:
            r.skip(line, SkipReason.BAD_XML, f"<guard> with unknown level {attrs.get('level')!r}")
            return None
        return Event(kind=EventKind.GIFT, gift_name=guard[0], count=count, value=guard[1] * count, **common)

    def read(self, chunks: Iterable[str]) -> Iterator[Event]:
        """Cut the character stream into spans at opening tags and read each span on its own."""
        r = self.r
        buffer = ""
        line_at_buffer = 1  # line number of buffer[0]
        lines_seen = 0
        last_char = "\n"
        iterator = iter(chunks)
        eof = False
        while not eof:
            chunk = next(iterator, None)
            if chunk is None:
                eof = True
            else:
                r.stats.replaced_chars += chunk.count("\ufffd")
                lines_seen += chunk.count("\n")
                last_char = chunk[-1]
                buffer += chunk
            limit = len(buffer) if eof else len(buffer) - _XML_LOOKAHEAD
            starts = [m.start() for m in _XML_BOUNDARY.finditer(buffer) if m.start() < limit]
            if eof:
                starts.append(len(buffer))
            if len(starts) < 2:
                if eof:
                    break
                continue
            line = line_at_buffer
            position = 0
            for begin, end in zip(starts, starts[1:], strict=False):
                line += buffer.count("\n", position, begin)
                position = begin
                yield from self._span(line, buffer[begin:end])
            line_at_buffer = line + buffer.count("\n", position, starts[-1])
            buffer = buffer[starts[-1] :]
        r.stats.lines_read = lines_seen + (0 if last_char == "\n" else 1)

    def _span(self, line: int, span: str) -> Iterator[Event]:
        match = _TAG_RE.match(span)
        tag = match.group(1) if match else None
        if tag not in ("d", "gift", "sc", "guard", "BililiveRecorderRecordInfo"):
            return
        element = _parse_element(span, tag)
        if element is None:
            self.r.skip(line, SkipReason.BAD_XML, f"unreadable <{tag}> element")
            return
        if element.repaired:
            self.r.stats.repaired += 1
            self.r.log.debug("line %d: malformed <%s> recovered by the lenient parser", line, tag)
        if tag == "BililiveRecorderRecordInfo":
            self.record_info(element)
            return
        event = self.event(line, element)
        if event is not None:
            yield event


def _positive_int(raw: str | None) -> int:
    try:
        value = int((raw or "1").strip())
    except ValueError:
        return 1
    return value if value > 0 else 1


def _read_xml_chunks(path: Path, encoding: str) -> Iterator[str]:
    with path.open("r", encoding=encoding, errors="replace", newline="") as f:
        while chunk := f.read(_XML_CHUNK_CHARS):
            yield chunk


# --- plain text -------------------------------------------------------------------------------------------


def _read_text(lines: Iterable[_Line], r: _Reader) -> Iterator[Event]:
    produced = 0
    for line in lines:
        if not line.ok:
            r.skip(line.number, SkipReason.BAD_ENCODING, "not valid " + (r.stats.encoding or "utf-8"))
            continue
        text = line.text.strip().lstrip("\ufeff")
        if not text:
            continue
        yield r.chat(r.synthetic_ts(produced), text)
        produced += 1


# --- entry points -----------------------------------------------------------------------------------------


def read_events(
    path: str | os.PathLike[str],
    *,
    hasher: ViewerHasher,
    room: str | None = None,
    platform: str | None = None,
    fmt: ReplayFormat | str | None = None,
    rate: float = 2.0,
    start_ts: int | None = None,
    store_names: bool = False,
    stats: ReplayStats | None = None,
) -> Generator[Event, None, None]:
    """Read a replay file lazily, in file order; close() the generator to release the file early.

    The file is opened and sniffed now (so a missing file fails here); lines are read as the iterator is
    consumed.

    Args:
        hasher: hashes raw viewer ids (push-style JSONL, CSV user column, XML user hash).
        room, platform: override the room and platform of every event. Defaults: from each JSONL line;
            otherwise the file stem and `replay`.
        fmt: force a format (`jsonl`, `csv`, `bilibili_xml`/`xml`, `text`); default: sniffed.
        rate: comments per second for formats without times (plain text, CSV without a time column).
        start_ts: Unix ms that offsets count from; None means `DEFAULT_START_TS` (see the module docstring
            for how XML picks its start).
        stats: filled while reading (format, encoding, counts, skipped lines).

    Raises:
        SourceError: the file cannot be opened, is UTF-16, has an unknown format name or a CSV header
            without a text column.
    """
    file = Path(path)
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive number of comments per second, got {rate!r}")
    try:
        with file.open("rb") as f:
            sample = f.read(SNIFF_BYTES)
            complete = not f.read(1)
    except OSError as exc:
        raise SourceError(f"cannot read replay file {file}: {exc.strerror or exc}") from None
    if stats is None:
        stats = ReplayStats(path=str(file))
    stats.encoding = detect_encoding(sample, complete=complete)
    decoded_sample = sample.decode(stats.encoding, errors="replace")
    stats.format = sniff_format(file, decoded_sample) if fmt is None else _coerce_format(fmt)
    reader = _Reader(
        file,
        hasher=hasher,
        room=room,
        platform=platform,
        rate=rate,
        start_ts=start_ts,
        store_names=store_names,
        stats=stats,
    )
    return _counted(_read_format(file, reader, stats.format, stats.encoding), reader)


def _read_format(file: Path, r: _Reader, fmt: ReplayFormat, encoding: str) -> Iterator[Event]:
    if fmt is ReplayFormat.BILIBILI_XML:
        return _XmlReader(r).read(_read_xml_chunks(file, encoding))
    lines = _iter_lines(file, encoding, r.stats)
    if fmt is ReplayFormat.JSONL:
        return _read_jsonl(lines, r)
    if fmt is ReplayFormat.CSV:
        return _read_csv(lines, r, "\t" if file.suffix.lower() == ".tsv" else None)
    return _read_text(lines, r)


def _counted(events: Iterator[Event], r: _Reader) -> Generator[Event, None, None]:
    stats = r.stats
    r.log.info("reading %s (%s)", stats.format, stats.encoding)
    for event in events:
        stats.events += 1
        yield event
    reasons = ", ".join(f"{reason}={n}" for reason, n in sorted(stats.skipped.items()))
    r.log.info(
        "finished: %d lines, %d events, %d skipped%s",
        stats.lines_read,
        stats.events,
        stats.skipped_total,
        f" ({reasons})" if reasons else "",
    )


class ReplaySource:
    """Plays a replay file as a Source: as fast as the consumer takes it, or paced at `speed`× event time.

    Events keep their recorded `received_ts` (JSONL logs) or get their own `ts` as `received_ts`, so the
    same file gives the same Events every run, whatever the pace.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        hasher: ViewerHasher,
        clock: Clock,
        speed: float | None = None,
        room: str | None = None,
        platform: str | None = None,
        fmt: ReplayFormat | str | None = None,
        rate: float = 2.0,
        start_ts: int | None = None,
        store_names: bool = False,
    ) -> None:
        if speed is not None and (not speed > 0 or not math.isfinite(speed)):
            raise ValueError(f"speed must be a positive factor or None (as fast as possible), got {speed!r}")
        self._path = Path(path)
        self._hasher = hasher
        self._clock = clock
        self._speed = speed
        self._options: dict[str, Any] = {
            "room": room,
            "platform": platform,
            "fmt": fmt,
            "rate": rate,
            "start_ts": start_ts,
            "store_names": store_names,
        }
        self._fixed_room = room is not None
        self._fixed_platform = platform is not None
        self.stats = ReplayStats(path=str(self._path))
        self.status = SourceStatus(
            name=f"replay:{self._path.name}",
            platform=platform or DEFAULT_PLATFORM,
            room=room or self._path.stem,
        )
        self._started = False
        self._stop_requested = False
        self._sleeper: asyncio.Future[None] | None = None

    @property
    def speed(self) -> float | None:
        return self._speed

    async def run(self, emit: Emit) -> None:
        """Emit every event of the file, then finish (state FINISHED) unless stop() came first (STOPPED)."""
        if self._started:
            raise RuntimeError("This ReplaySource has already run; build a new one to replay again")
        self._started = True
        status = self.status
        if self._stop_requested:
            status.state = SourceState.STOPPED
            return
        status.state = SourceState.CONNECTING
        try:
            await self._play(emit)
        except (SourceError, ValueError) as exc:
            status.state = SourceState.FAILED
            status.last_error = str(exc)
            status.errors += 1
            raise
        status.errors = self.stats.skipped_total
        status.state = SourceState.STOPPED if self._stop_requested else SourceState.FINISHED

    async def _play(self, emit: Emit) -> None:
        status = self.status
        with contextlib.closing(
            read_events(self._path, hasher=self._hasher, stats=self.stats, **self._options)
        ) as events:
            status.state = SourceState.CONNECTED
            await self._emit_all(events, emit)

    async def _emit_all(self, events: Iterator[Event], emit: Emit) -> None:
        status = self.status
        first_ts: int | None = None
        first_clock = 0
        for event in events:
            if self._stop_requested:
                break
            if first_ts is None:
                first_ts, first_clock = event.ts, self._clock.now_ms()
                if not self._fixed_room:
                    status.room = event.room
                if not self._fixed_platform:
                    status.platform = event.platform
            if self._speed is not None:
                # Pace on the schedule from the first event, so per-event work does not add up as drift;
                # an out-of-order event (earlier ts) goes out at once.
                due = first_clock + (event.ts - first_ts) / self._speed
                wait_ms = due - self._clock.now_ms()
                if wait_ms > 0:
                    await self._sleep(wait_ms / 1000)
                    if self._stop_requested:
                        break
            elif status.messages % 256 == 255:
                await self._clock.sleep(0)  # let other tasks run when emit never suspends
            await emit(event)
            status.messages += 1
            status.last_message_ms = self._clock.now_ms()
            status.errors = self.stats.skipped_total

    async def _sleep(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        self._sleeper = sleeper
        try:
            # asyncio.wait returns when stop() cancels the sleeper, without raising in this task.
            await asyncio.wait({sleeper})
        finally:
            sleeper.cancel()
            self._sleeper = None

    def stop(self) -> None:
        """Stop after the current event; a pacing sleep is cut short."""
        self._stop_requested = True
        if self._sleeper is not None:
            self._sleeper.cancel()
