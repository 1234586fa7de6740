"""Bilibili live danmaku wire format, sans I/O (../shared/protocols/bilibili.md §2–§8).

No sockets and no logging: bytes in, packets / messages / Events out. Anything that breaks the format raises
(or, for a whole websocket frame, reports) `ProtocolError` and nothing else, so the socket loop in
`bot.sources.bilibili` can log it with context and carry on.

Layers, bottom up:
- `Packet`, `encode_packet`, `PacketDecoder` (a stream decoder: `feed(bytes) -> list[Packet]`, `flush()`),
  which inflates zlib (ver 2) and brotli (ver 3) bodies into the packets they contain;
- `decode_frame(bytes) -> Frame`: one websocket message → `HeartbeatReply` / `AuthReply` / `Command`
  messages plus the errors met on the way; a bad packet costs only itself when the framing around it is
  intact;
- `encode_auth`, `encode_heartbeat`: the two client packets;
- `wbi_mixin_key`, `wbi_sign`: the bootstrap request signature (§6);
- `commands_to_events`: the cmd → Event table (§7);
- `decode_benchmark`: messages per second through the whole decode path (`livebot bench --scenario decode`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import brotli

from bot.clock import monotonic
from bot.errors import ProtocolError
from bot.events import Event, EventKind, SystemEvent
from bot.privacy import ViewerHasher
from bot.sources.bilibili_proto import Message as ProtoMessage

PLATFORM = "bilibili"

# --- packets (bilibili.md §2) ----------------------------------------------------------------------

HEADER = struct.Struct(">IHHII")
"""pack_len, header_len, ver, op, seq; all big-endian (bilibili.md §2)."""
HEADER_LEN = HEADER.size  # 16
MAX_PACKET_LEN = 4 * 1024 * 1024
"""Largest packet we accept; real ones are a few KiB. Bounds what a lying `pack_len` can make us buffer."""
MAX_INFLATED_LEN = 16 * 1024 * 1024
"""Largest decompressed body; a compression bomb fails here instead of eating memory."""
MAX_NESTING = 2
"""Compressed packets inside compressed packets; the server nests once at most."""


class Op(IntEnum):
    """Packet operations a web client meets (bilibili.md §2)."""

    HEARTBEAT = 2  # client → server
    HEARTBEAT_REPLY = 3  # server → client, body: u32 popularity
    SEND_MSG_REPLY = 5  # server → client, business commands
    AUTH = 7  # client → server
    AUTH_REPLY = 8  # server → client, body: {"code": 0}


class ProtoVer(IntEnum):
    """Body encodings (bilibili.md §2)."""

    NORMAL = 0  # plain JSON
    HEARTBEAT = 1  # heartbeat / auth packets
    DEFLATE = 2  # zlib stream of more packets
    BROTLI = 3  # brotli stream of more packets


_OPS = frozenset(int(op) for op in Op)
_VERS = frozenset(int(ver) for ver in ProtoVer)


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet: the header fields that matter plus the raw body."""

    op: int
    ver: int
    seq: int
    body: bytes

    def encode(self) -> bytes:
        return encode_packet(self.op, self.body, ver=self.ver, seq=self.seq)


def encode_packet(op: int, body: bytes, *, ver: int = ProtoVer.HEARTBEAT, seq: int = 1) -> bytes:
    """Header + body; the spec's fixture recipe `pack('>IHHII', 16+len(body), 16, ver, op, seq) + body`."""
    return HEADER.pack(HEADER_LEN + len(body), HEADER_LEN, ver, op, seq) + body


def unpack_header(data: bytes | bytearray, offset: int = 0) -> tuple[int, int, int, int, int]:
    """Read and check one header; returns (pack_len, header_len, ver, op, seq)."""
    if len(data) - offset < HEADER_LEN:
        raise ProtocolError(
            f"truncated header: {len(data) - offset} bytes at offset {offset}, need {HEADER_LEN}",
            key="header",
        )
    pack_len, header_len, ver, op, seq = HEADER.unpack_from(data, offset)
    if header_len < HEADER_LEN:
        raise ProtocolError(
            f"header_len {header_len} is shorter than the {HEADER_LEN}-byte header", key="header"
        )
    if pack_len < header_len:
        raise ProtocolError(f"pack_len {pack_len} is shorter than header_len {header_len}", key="header")
    if pack_len > MAX_PACKET_LEN:
        raise ProtocolError(f"pack_len {pack_len} exceeds the {MAX_PACKET_LEN}-byte limit", key="header")
    if op not in _OPS:
        raise ProtocolError(f"unknown op {op}", key="op")
    if ver not in _VERS:
        raise ProtocolError(f"unknown protocol version {ver} (op {op})", key="ver")
    return pack_len, header_len, ver, op, seq


def _inflate_zlib(body: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, MAX_INFLATED_LEN)
    except zlib.error as exc:
        raise ProtocolError(f"bad zlib body ({len(body)} bytes): {exc}", key="zlib") from exc
    if inflater.unconsumed_tail:
        raise ProtocolError(f"zlib body inflates past {MAX_INFLATED_LEN} bytes", key="zlib")
    if not inflater.eof:
        raise ProtocolError(f"truncated zlib body ({len(body)} bytes)", key="zlib")
    if inflater.unused_data:
        raise ProtocolError(f"{len(inflater.unused_data)} stray bytes after the zlib stream", key="zlib")
    return out


def _inflate_brotli(body: bytes) -> bytes:
    decompressor = brotli.Decompressor()
    try:
        out: bytes = decompressor.process(body, output_buffer_limit=MAX_INFLATED_LEN)
    except brotli.error as exc:
        raise ProtocolError(f"bad brotli body ({len(body)} bytes): {exc}", key="brotli") from exc
    if not decompressor.is_finished():
        if len(out) >= MAX_INFLATED_LEN:
            raise ProtocolError(f"brotli body inflates past {MAX_INFLATED_LEN} bytes", key="brotli")
        raise ProtocolError(f"truncated brotli body ({len(body)} bytes)", key="brotli")
    return out


def _expand(packet: Packet, depth: int) -> Iterator[Packet | ProtocolError]:
    """Yield the leaf packets inside `packet` (itself, unless it is a compressed op-5 packet)."""
    if packet.ver not in (ProtoVer.DEFLATE, ProtoVer.BROTLI):
        yield packet
        return
    if packet.op != Op.SEND_MSG_REPLY:
        yield ProtocolError(f"compressed body (ver {packet.ver}) on op {packet.op}", key="ver")
        return
    if depth >= MAX_NESTING:
        yield ProtocolError(f"compressed packets nested deeper than {MAX_NESTING}", key="ver")
        return
    try:
        inner = _inflate_zlib(packet.body) if packet.ver == ProtoVer.DEFLATE else _inflate_brotli(packet.body)
    except ProtocolError as exc:
        yield exc
        return
    yield from _walk_frame(inner, depth + 1)


def _walk_frame(data: bytes, depth: int = 0) -> Iterator[Packet | ProtocolError]:
    """Yield the leaf packets of one self-contained buffer (a websocket message or an inflated body).

    Framing errors end the walk (nothing after them can be located); a bad compressed body costs only
    its own packet.
    """
    offset = 0
    size = len(data)
    while offset < size:
        try:
            pack_len, header_len, ver, op, seq = unpack_header(data, offset)
        except ProtocolError as exc:
            yield exc
            return
        end = offset + pack_len
        if end > size:
            yield ProtocolError(
                f"pack_len {pack_len} at offset {offset} runs past the {size}-byte buffer", key="length"
            )
            return
        yield from _expand(Packet(op, ver, seq, data[offset + header_len : end]), depth)
        if op == Op.HEARTBEAT_REPLY and depth == 0:
            # Quirk (bilibili.md §2 step 3): the server appends an echo of the client's heartbeat body after
            # the 20 bytes that pack_len covers. Like blivedm, ignore the rest of the websocket message.
            return
        offset = end


class PacketDecoder:
    """Incremental stream decoder: `feed()` any chunking of a packet stream, get the same leaf packets.

    Compressed packets are inflated and replaced by the packets they contain. After a ProtocolError the
    stream position is lost, so the decoder refuses further input.
    """

    __slots__ = ("_buffer", "_broken")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[Packet]:
        if self._broken:
            raise ProtocolError("decoder is unusable after an earlier protocol error", key="stream")
        self._buffer += data
        packets: list[Packet] = []
        try:
            while len(self._buffer) >= HEADER_LEN:
                pack_len, header_len, ver, op, seq = unpack_header(self._buffer)
                if len(self._buffer) < pack_len:
                    break
                packet = Packet(op, ver, seq, bytes(self._buffer[header_len:pack_len]))
                del self._buffer[:pack_len]
                for item in _expand(packet, 0):
                    if isinstance(item, ProtocolError):
                        raise item
                    packets.append(item)
        except ProtocolError:
            self._broken = True
            raise
        return packets

    def flush(self) -> None:
        """Declare the end of the stream; leftover bytes are a truncated packet."""
        if self._buffer:
            count = len(self._buffer)
            self._buffer.clear()
            self._broken = True
            raise ProtocolError(f"stream ends inside a packet ({count} bytes left over)", key="length")

    @property
    def buffered(self) -> int:
        return len(self._buffer)


# --- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    popularity: int
    """Deprecated popularity (bilibili.md §2); audience size comes from WATCHED_CHANGE / ONLINE_RANK_COUNT."""


@dataclass(frozen=True, slots=True)
class AuthReply:
    code: int
    """0 = accepted; -101 = token error (bilibili.md §4)."""

    @property
    def ok(self) -> bool:
        return self.code == 0


@dataclass(frozen=True, slots=True)
class Command:
    """One op-5 business message."""

    cmd: str
    """Command name with any `:…` suffix stripped (`DANMU_MSG:4:0:2:2:2:0` → `DANMU_MSG`)."""
    body: Mapping[str, Any]
    """The whole JSON object (payload under `data`, or `info` for DANMU_MSG)."""


ServerMessage = HeartbeatReply | AuthReply | Command


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProtocolError(f"{what} body is not JSON ({len(body)} bytes): {exc}", key="json") from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} body is JSON but not an object", key="json")
    return obj


def parse_packet(packet: Packet) -> ServerMessage | None:
    """Interpret one leaf packet from the server; None for an empty business body (skipped, §2)."""
    if packet.op == Op.HEARTBEAT_REPLY:
        if len(packet.body) < 4:
            raise ProtocolError(f"heartbeat reply body has {len(packet.body)} bytes, need 4", key="heartbeat")
        return HeartbeatReply(int.from_bytes(packet.body[:4], "big"))
    if packet.op == Op.AUTH_REPLY:
        obj = _json_object(packet.body, "auth reply")
        code = obj.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            raise ProtocolError("auth reply has no integer code", key="auth")
        return AuthReply(code)
    if packet.op == Op.SEND_MSG_REPLY:
        if not packet.body:
            return None
        obj = _json_object(packet.body, "command")
        cmd = obj.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            raise ProtocolError("command has no cmd string", key="cmd")
        return Command(cmd.split(":", 1)[0], obj)
    raise ProtocolError(f"op {packet.op} ({Op(packet.op).name}) only travels client to server", key="op")


@dataclass(frozen=True, slots=True)
class Frame:
    """What one websocket message held: messages in order, and every error met (each already skipped)."""

    messages: list[ServerMessage]
    errors: list[ProtocolError]


def decode_frame(data: bytes) -> Frame:
    """Decode one websocket binary message; never raises."""
    messages: list[ServerMessage] = []
    errors: list[ProtocolError] = []
    for item in _walk_frame(data):
        if isinstance(item, ProtocolError):
            errors.append(item)
            continue
        try:
            message = parse_packet(item)
        except ProtocolError as exc:
            errors.append(exc)
            continue
        if message is not None:
            messages.append(message)
    return Frame(messages, errors)


# --- client packets (bilibili.md §3) -------------------------------------------------------------


def encode_auth(
    room_id: int, *, uid: int = 0, buvid: str = "", token: str | None = None, protover: int = 3
) -> bytes:
    """The AUTH packet (op 7, ver 1, seq 1); `token=None` omits `key` (blivedm, when getDanmuInfo failed)."""
    params: dict[str, Any] = {
        "uid": uid,
        "roomid": room_id,
        "protover": protover,
        "platform": "web",
        "type": 2,
        "buvid": buvid,
    }
    if token is not None:
        params["key"] = token
    body = json.dumps(params, separators=(",", ":")).encode()
    return encode_packet(Op.AUTH, body, ver=ProtoVer.HEARTBEAT, seq=1)


def encode_heartbeat(body: bytes = b"{}") -> bytes:
    """The HEARTBEAT packet (op 2, ver 1, seq 1); blivedm's body is `{}` and the server accepts any."""
    return encode_packet(Op.HEARTBEAT, body, ver=ProtoVer.HEARTBEAT, seq=1)


def encode_business_frame(
    bodies: Sequence[bytes], *, compression: ProtoVer = ProtoVer.BROTLI, brotli_quality: int = 11
) -> bytes:
    """A server-style op-5 frame holding `bodies` (JSON bytes): plain, zlib or brotli (§8 fixture recipe)."""
    plain = b"".join(encode_packet(Op.SEND_MSG_REPLY, body, ver=ProtoVer.NORMAL, seq=0) for body in bodies)
    if compression == ProtoVer.NORMAL:
        return plain
    if compression == ProtoVer.DEFLATE:
        return encode_packet(Op.SEND_MSG_REPLY, zlib.compress(plain), ver=ProtoVer.DEFLATE, seq=0)
    if compression == ProtoVer.BROTLI:
        packed = brotli.compress(plain, quality=brotli_quality)
        return encode_packet(Op.SEND_MSG_REPLY, packed, ver=ProtoVer.BROTLI, seq=0)
    raise ValueError(f"not a business compression: {compression!r}")


# --- WBI request signing (bilibili.md §6) ----------------------------------------------------------

WBI_MIXIN_ORDER = (
    46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35,
    27, 43, 5, 49, 33, 9, 42, 19, 29, 28, 14, 39, 12, 38, 41, 13,
)  # fmt: skip
_WBI_STRIP = str.maketrans("", "", "!'()*")


def wbi_mixin_key(img_url: str, sub_url: str) -> str:
    """The 32-char mixin key from nav's `wbi_img.img_url` / `sub_url` (file stems, img first)."""

    def stem(url: str) -> str:
        name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1]
        return name.split(".", 1)[0]

    raw = stem(img_url) + stem(sub_url)
    if len(raw) <= max(WBI_MIXIN_ORDER):
        raise ProtocolError(
            f"WBI key material is {len(raw)} chars, need {max(WBI_MIXIN_ORDER) + 1}", key="wbi_img"
        )
    return "".join(raw[i] for i in WBI_MIXIN_ORDER)


def wbi_sign(params: Mapping[str, str | int], mixin_key: str, wts: int) -> dict[str, str]:
    """Return `params` plus `wts` and `w_rid` (the lowercase MD5 of the sorted, cleaned query + mixin key)."""
    signed = {key: str(value) for key, value in params.items()}
    signed["wts"] = str(wts)
    cleaned = {key: signed[key].translate(_WBI_STRIP) for key in sorted(signed)}
    query = urllib.parse.urlencode(cleaned)
    signed["w_rid"] = hashlib.md5((query + mixin_key).encode(), usedforsecurity=False).hexdigest()
    return signed


# --- commands → Events (bilibili.md §7) ----------------------------------------------------------

SUPER_CHAT_GIFT_NAME = "醒目留言"
"""Bilibili's product name for a Super Chat, used when the payload names no gift."""
GUARD_NAMES = {1: "总督", 2: "提督", 3: "舰长"}
"""Guard (大航海) levels and their platform names, for GUARD_BUY payloads without `gift_name`."""
GOLD_PER_YUAN = 1000
"""Paid gifts are priced in gold 瓜子; 1000 gold = ¥1 (bilibili.md §7 SEND_GIFT)."""

_INTERACT_KINDS = {
    1: EventKind.ENTER,
    2: EventKind.FOLLOW,
    3: EventKind.SHARE,
    4: EventKind.FOLLOW,  # special follow
    5: EventKind.FOLLOW,  # mutual follow
    # 6 (like) is skipped: every like also arrives as LIKE_INFO_V3_CLICK, which we count.
}


@dataclass(frozen=True, slots=True)
class _Context:
    room: str
    hasher: ViewerHasher
    received_ts: int
    store_names: bool

    def event(self, kind: EventKind, **fields: Any) -> Event:
        fields.setdefault("ts", self.received_ts)
        return Event(platform=PLATFORM, room=self.room, kind=kind, received_ts=self.received_ts, **fields)

    def user(self, uid: int, name: str | None) -> dict[str, str | None]:
        return {
            "user_id": self.hasher(PLATFORM, uid),
            "user_name": name if self.store_names and name else None,
        }


_MISSING = object()


def _get(obj: Any, *path: str | int, default: Any = _MISSING) -> Any:
    """Walk dict keys / list indexes; a missing step raises ProtocolError naming the dotted path."""
    current = obj
    for step in path:
        if isinstance(step, int):
            ok = isinstance(current, list) and -len(current) <= step < len(current)
        else:
            ok = isinstance(current, dict) and step in current
        if not ok:
            if default is not _MISSING:
                return default
            raise ProtocolError(f"missing {_dotted(path)}", key=_dotted(path))
        current = current[step]
    return current


def _dotted(path: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


Key = str | tuple[str | int, ...]
"""A dotted key, or the path it is built from (only on error: the happy path must stay cheap)."""


def _name(key: Key) -> str:
    return key if isinstance(key, str) else _dotted(key)


def _int(value: Any, key: Key) -> int:
    """Bilibili sends some numbers as strings (PREPARING.roomid); accept integral numbers in either form."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise ProtocolError(f"{_name(key)}: expected an integer, got a boolean", key=_name(key))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ProtocolError(f"{_name(key)}: expected an integer, got {value!r:.40}", key=_name(key))


def _number(value: Any, key: Key) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ProtocolError(f"{_name(key)}: expected a number, got {value!r:.40}", key=_name(key))


def _str(value: Any, key: Key) -> str:
    if isinstance(value, str):
        return value
    raise ProtocolError(f"{_name(key)}: expected a string, got {type(value).__name__}", key=_name(key))


def _req_int(obj: Any, *path: str | int) -> int:
    return _int(_get(obj, *path), path)


def _opt_int(obj: Any, *path: str | int, default: int = 0) -> int:
    value = _get(obj, *path, default=None)
    return default if value is None or value == "" else _int(value, path)


def _opt_str(obj: Any, *path: str | int) -> str:
    value = _get(obj, *path, default=None)
    return "" if value is None else _str(value, path)


def _seconds_to_ms(seconds: int, fallback: int) -> int:
    return seconds * 1000 if seconds > 0 else fallback


def _danmu(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    meta = _get(body, "info", 0)
    if not isinstance(meta, list):
        raise ProtocolError("info[0]: expected an array", key="info[0]")
    text = _str(_get(body, "info", 1), "info[1]")
    uid = _req_int(body, "info", 2, 0)
    uname = _opt_str(body, "info", 2, 1)
    ts = _opt_int(body, "info", 0, 4)
    if ts <= 0:
        ts = _seconds_to_ms(_opt_int(body, "info", 9, "ts"), ctx.received_ts)
    user = ctx.user(uid, uname)
    if user["user_id"] is None:
        # Anonymous sessions see uid 0 (bilibili.md §6); the uid CRC32 text is the best remaining key.
        crc = _get(meta, 7, default="")
        if isinstance(crc, str) and crc and crc != "0":
            user["user_id"] = ctx.hasher(PLATFORM, f"crc32:{crc}")
    return [ctx.event(EventKind.CHAT, ts=ts, msg_id=_danmu_id(meta), text=text, **user)]


def _danmu_id(meta: list[Any]) -> str | None:
    """`info[0][15].extra` is a JSON *string* holding `id_str`; a message without one simply has no id."""
    extra = _get(meta, 15, "extra", default=None)
    if not isinstance(extra, str):
        return None
    try:
        decoded = json.loads(extra)
    except (ValueError, RecursionError):
        return None
    id_str = decoded.get("id_str") if isinstance(decoded, dict) else None
    return id_str if isinstance(id_str, str) and id_str else None


def _gift_value(coin_type: str, total_coin: int, price: int, num: int) -> float:
    if coin_type != "gold":
        return 0.0  # silver gifts are free
    paid = total_coin if total_coin > 0 else price * num
    return paid / GOLD_PER_YUAN


def _send_gift(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    num = _opt_int(body, "data", "num", default=1)
    tid = _get(body, "data", "tid", default=None)  # transaction id; `rnd` is shared by a batch, so not an id
    return [
        ctx.event(
            EventKind.GIFT,
            ts=_seconds_to_ms(_opt_int(body, "data", "timestamp"), ctx.received_ts),
            msg_id=f"gift:{tid}" if tid not in (None, "", 0, "0") else None,
            gift_name=_str(_get(body, "data", "giftName"), "data.giftName"),
            count=num,
            value=_gift_value(
                _opt_str(body, "data", "coin_type"),
                _opt_int(body, "data", "total_coin"),
                _opt_int(body, "data", "price"),
                num,
            ),
            **ctx.user(_req_int(body, "data", "uid"), _opt_str(body, "data", "uname")),
        )
    ]


def _decode_pb(body: Mapping[str, Any]) -> ProtoMessage:
    encoded = _str(_get(body, "data", "pb"), "data.pb")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"data.pb is not base64: {exc}", key="data.pb") from exc
    return ProtoMessage.parse(raw)


def _send_gift_v2(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    # SendGiftBroadcast: 1 uid, 2 uname, 10 repeated gift item (bilibili.md §7).
    pb = _decode_pb(body)
    user = ctx.user(pb.int_field(1), pb.str_field(2))
    events = []
    seen_tids: set[str] = set()
    for index, item in enumerate(pb.submessages(10)):
        # Item: 2 gift_name, 3 num, 5 price, 7 total_coin, 8 coin_type, 9 tid, 10 timestamp.
        num = item.int_field(3) or 1
        tid = item.text_or_int(9)
        msg_id = None
        if tid and tid != "0":
            # Same namespace as SEND_GIFT, so a gift pushed in both shapes during the rollout counts once.
            msg_id = f"gift:{tid}" if tid not in seen_tids else f"gift:{tid}#{index}"
            seen_tids.add(tid)
        events.append(
            ctx.event(
                EventKind.GIFT,
                ts=_seconds_to_ms(item.int_field(10), ctx.received_ts),
                msg_id=msg_id,
                gift_name=item.str_field(2),
                count=num,
                value=_gift_value(item.text_or_int(8), item.int_field(7), item.int_field(5), num),
                **user,
            )
        )
    return events


def _guard_buy(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    level = _opt_int(body, "data", "guard_level")
    num = _opt_int(body, "data", "num", default=1)
    return [
        ctx.event(
            EventKind.GIFT,
            ts=_seconds_to_ms(_opt_int(body, "data", "start_time"), ctx.received_ts),
            gift_name=_opt_str(body, "data", "gift_name") or GUARD_NAMES.get(level, f"guard{level}"),
            count=num,
            # `price` is the unit price in gold (blivedm GuardBuyMessage); `num` counts months.
            value=_req_int(body, "data", "price") * num / GOLD_PER_YUAN,
            **ctx.user(_req_int(body, "data", "uid"), _opt_str(body, "data", "username")),
        )
    ]


def _super_chat(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    sc_id = _get(body, "data", "id", default=None)
    return [
        ctx.event(
            EventKind.GIFT,
            ts=_seconds_to_ms(_opt_int(body, "data", "start_time"), ctx.received_ts),
            msg_id=f"sc:{sc_id}" if sc_id not in (None, "") else None,
            text=_opt_str(body, "data", "message"),
            gift_name=_opt_str(body, "data", "gift", "gift_name") or SUPER_CHAT_GIFT_NAME,
            value=_number(_get(body, "data", "price"), "data.price"),  # whole yuan, not gold
            **ctx.user(_req_int(body, "data", "uid"), _opt_str(body, "data", "user_info", "uname")),
        )
    ]


def _interact(ctx: _Context, uid: int, uname: str, msg_type: int, timestamp: int) -> list[Event]:
    kind = _INTERACT_KINDS.get(msg_type)
    if kind is None:
        return []
    return [ctx.event(kind, ts=_seconds_to_ms(timestamp, ctx.received_ts), **ctx.user(uid, uname))]


def _interact_word(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    # The legacy JSON had top-level uid/uname; blivedm's last model read them from `uinfo`.
    uid = _opt_int(body, "data", "uid") or _opt_int(body, "data", "uinfo", "uid")
    uname = _opt_str(body, "data", "uname") or _opt_str(body, "data", "uinfo", "base", "name")
    return _interact(ctx, uid, uname, _req_int(body, "data", "msg_type"), _opt_int(body, "data", "timestamp"))


def _interact_word_v2(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    # InteractWordV2: 1 uid, 2 uname, 5 msg_type, 7 timestamp (s), 22 uinfo{2 base{1 name}} (bilibili.md §7).
    pb = _decode_pb(body)
    uname = pb.str_field(2) or pb.submessage(22).submessage(2).str_field(1)
    return _interact(ctx, pb.int_field(1), uname, pb.int_field(5), pb.int_field(7))


def _like_click(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    return [
        ctx.event(EventKind.LIKE, **ctx.user(_req_int(body, "data", "uid"), _opt_str(body, "data", "uname")))
    ]


def _stats(path: tuple[str, ...], key: str) -> Callable[[Mapping[str, Any], _Context], list[Event]]:
    def handle(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
        return [ctx.event(EventKind.STATS, stats={key: _req_int(body, *path)})]

    return handle


def _live(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    live_key = _get(body, "live_key", default=None)
    return [
        ctx.event(
            EventKind.SYSTEM,
            ts=_seconds_to_ms(_opt_int(body, "live_time"), ctx.received_ts),
            # LIVE may repeat within one session (bilibili.md §7, unverified): the key dedupes it.
            msg_id=f"live:{live_key}" if live_key not in (None, "") else None,
            event=SystemEvent.LIVE_START.value,
        )
    ]


def _preparing(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    send_time = _opt_int(body, "send_time")
    return [
        ctx.event(
            EventKind.SYSTEM,
            ts=send_time if send_time > 0 else ctx.received_ts,
            event=SystemEvent.LIVE_END.value,
        )
    ]


def _ignore(body: Mapping[str, Any], ctx: _Context) -> list[Event]:
    return []


CommandHandler = Callable[[Mapping[str, Any], _Context], list[Event]]

COMMAND_HANDLERS: Mapping[str, CommandHandler] = {
    "DANMU_MSG": _danmu,
    "SEND_GIFT": _send_gift,
    "SEND_GIFT_V2": _send_gift_v2,
    "GUARD_BUY": _guard_buy,
    "SUPER_CHAT_MESSAGE": _super_chat,
    "INTERACT_WORD": _interact_word,
    "INTERACT_WORD_V2": _interact_word_v2,
    "LIKE_INFO_V3_CLICK": _like_click,
    "LIKE_INFO_V3_UPDATE": _stats(("data", "click_count"), "likes_total"),
    "WATCHED_CHANGE": _stats(("data", "num"), "viewers_total"),
    "ONLINE_RANK_COUNT": _stats(("data", "count"), "online"),
    "LIVE": _live,
    "PREPARING": _preparing,
    # Known, deliberately dropped: each repeats something counted above or carries nothing we use.
    "DANMU_MSG_MIRROR": _ignore,  # a comment mirrored from another room
    "USER_TOAST_MSG": _ignore,  # the same guard purchase as GUARD_BUY
    "USER_TOAST_MSG_V2": _ignore,
    "SUPER_CHAT_MESSAGE_JPN": _ignore,  # translated copy of SUPER_CHAT_MESSAGE
    "SUPER_CHAT_MESSAGE_DELETE": _ignore,
    "COMBO_SEND": _ignore,  # summary of SEND_GIFTs already counted
    "LOG_IN_NOTICE": _ignore,  # "log in to see names"; the source logs the uid-0 situation itself
}
"""cmd → handler (a table, not an if-chain; STYLE.md *Sans-I/O first*)."""


def command_to_events(
    command: Command, *, room: str, hasher: ViewerHasher, received_ts: int, store_names: bool = False
) -> list[Event] | None:
    """Events for one command; None when the cmd is unknown. A malformed payload raises ProtocolError."""
    handler = COMMAND_HANDLERS.get(command.cmd)
    if handler is None:
        return None
    ctx = _Context(room, hasher, received_ts, store_names)
    return _run_handler(handler, command, ctx)


def _run_handler(handler: CommandHandler, command: Command, ctx: _Context) -> list[Event]:
    try:
        return handler(command.body, ctx)
    except ProtocolError as exc:
        raise ProtocolError(f"{command.cmd}: {exc}", key=exc.key) from exc
    except (ValueError, TypeError, OverflowError) as exc:
        # Event construction with a value no sane payload carries; still the payload's fault.
        raise ProtocolError(f"{command.cmd}: {exc}", key="payload") from exc


def commands_to_events(
    commands: Iterable[Command],
    *,
    room: str,
    hasher: ViewerHasher,
    received_ts: int,
    store_names: bool = False,
    errors: list[ProtocolError] | None = None,
) -> tuple[list[Event], list[str]]:
    """Map commands to Events in order; returns (events, unknown cmds, one entry per occurrence).

    With `errors` given, a malformed command is appended there and skipped; otherwise it raises.
    """
    ctx = _Context(room, hasher, received_ts, store_names)
    events: list[Event] = []
    unknown: list[str] = []
    for command in commands:
        handler = COMMAND_HANDLERS.get(command.cmd)
        if handler is None:
            unknown.append(command.cmd)
            continue
        try:
            events.extend(_run_handler(handler, command, ctx))
        except ProtocolError as exc:
            if errors is None:
                raise
            errors.append(exc)
    return events, unknown


# --- benchmark ------------------------------------------------------------------------------------

_BENCH_MESSAGES_PER_FRAME = 12


def _bench_bodies(n_msgs: int) -> list[bytes]:
    """A realistic mix: mostly comments in the real DANMU_MSG layout, some gifts, enters and stats."""
    bodies = []
    for i in range(n_msgs):
        slot = i % 10
        if slot < 6:
            extra = json.dumps({"dm_type": 0, "id_str": f"{i:032x}", "content": f"这个链接多少钱？第{i}条"})
            info = [
                [0, 1, 25, 16777215, 1767225600123 + i, 1767225600, 0, "9f8e7d6c", 0, 0, 0, "", 0, "{}", "{}",
                 {"extra": extra, "mode": 0, "user": {"uid": 10000 + i % 500, "base": {"name": "观众"}}}],
                f"这个链接多少钱？第{i}条",
                [10000 + i % 500, "示例观众", 0, 0, 0, 10000, 1, ""],
                [12, "示例团", "示例主播", 1017, 1725515, "", 0, 6809855, 1725515, 5414290, 3, 1, 87654321],
                [21, 0, 5805790, ">50000", 0], ["", ""], 0, 3, None, {"ts": 1767225600, "ct": "ABCDEF12"},
            ]  # fmt: skip
            obj: dict[str, Any] = {"cmd": "DANMU_MSG", "info": info}
        elif slot < 8:
            obj = {"cmd": "SEND_GIFT", "data": {
                "uid": 20000 + i, "uname": "送礼观众", "giftName": "小心心", "giftId": 30607,
                "num": 1 + i % 3,
                "price": 1000, "total_coin": 1000 * (1 + i % 3), "coin_type": "gold", "action": "投喂",
                "timestamp": 1767225600, "tid": f"1767225600{i:010d}", "rnd": str(i)}}  # fmt: skip
        elif slot == 8:
            obj = {"cmd": "INTERACT_WORD", "data": {"uid": 30000 + i, "uname": "进房观众", "msg_type": 1,
                                                   "timestamp": 1767225600, "roomid": 1017}}  # fmt: skip
        else:
            obj = {"cmd": "ONLINE_RANK_COUNT", "data": {"count": 1000 + i}}
        bodies.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())
    return bodies


def decode_benchmark(n_msgs: int = 20_000) -> float:
    """Messages per second through decode_frame + commands_to_events on brotli frames of 12 commands."""
    if n_msgs <= 0:
        raise ValueError("n_msgs must be positive")
    bodies = _bench_bodies(n_msgs)
    frames = [
        # Quality 5 only keeps set-up short (quality 11 takes seconds); decoding speed barely depends on it.
        encode_business_frame(bodies[i : i + _BENCH_MESSAGES_PER_FRAME], brotli_quality=5)
        for i in range(0, n_msgs, _BENCH_MESSAGES_PER_FRAME)
    ]
    hasher = ViewerHasher.for_tests()
    decoded = 0
    start = monotonic()
    for data in frames:
        frame = decode_frame(data)
        commands = [m for m in frame.messages if isinstance(m, Command)]
        commands_to_events(commands, room="bench", hasher=hasher, received_ts=1767225600000)
        decoded += len(commands)
    elapsed = monotonic() - start
    if decoded != n_msgs:
        raise RuntimeError(f"decode benchmark decoded {decoded} of {n_msgs} messages")
    return decoded / elapsed if elapsed > 0 else float("inf")
