"""Douyin through the DouyinBarrageGrab local websocket push (../shared/protocols/douyin_barragegrab.md).

The operator runs DouyinBarrageGrab on their own PC; we only connect to its socket (default
ws://127.0.0.1:8888/) and never send anything (spec §2: v2.7.6 treats client text as commands, Cmd 1 shuts
the tool down). Each message is an envelope `{"Type": int, "ProcessName": str, "Data": "<JSON string>"}`.

The decoding half (`parse_envelope`, `decode_push`, `HANDLERS`) is pure; `DouyinPushSource` is the I/O loop.
Douyin messages carry no timestamp, so `ts` is the receive time.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from bot.clock import Clock
from bot.errors import ProtocolError
from bot.events import Event, EventKind, SystemEvent
from bot.privacy import ViewerHasher
from bot.sources.base import RecentIds, ReconnectPolicy, SourceStatus, room_logger
from bot.sources.generic_ws import ANY_ROOM, ReconnectingWsSource

logger = logging.getLogger(__name__)

PLATFORM = "douyin"
DEFAULT_URL = "ws://127.0.0.1:8888/"
"""BarrageGrab's default push socket (spec §1: `wsListenPort` / `app.network.websocket.listenPort` 8888)."""
DIAMONDS_PER_YUAN = 10
"""Spec §3: 10 抖币 = ¥1; a gift is worth GiftCount × DiamondCount 抖币."""
UNKNOWN_WEB_ROOM_IDS = frozenset({"", "未知"})
"""WebRoomId values meaning "not known" (spec §2: `"未知"` in v2.7.6 and Type 9, `""` elsewhere in v2.7.9)."""
_MAX_COUNT = 2**63 - 1  # C# long; anything larger is not a count BarrageGrab can send
FANS_CLUB_LEVEL_UP = 1
FANS_CLUB_JOINED = 2


class PushType(IntEnum):
    """Envelope `Type` (spec §2 table)."""

    CHAT = 1  # 弹幕
    LIKE = 2  # 点赞
    ENTER = 3  # 进入
    FOLLOW = 4  # 关注
    GIFT = 5  # 礼物
    STATS = 6  # 统计
    FANS_CLUB = 7  # 粉丝团
    SHARE = 8  # 分享
    LIVE_END = 9  # 下播


@dataclass(frozen=True, slots=True)
class PushMessage:
    """One decoded envelope; `data` is the inner object (already parsed from its JSON string)."""

    type: int
    process_name: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RoomIdentity:
    """What a message says about its room (spec §2 common keys)."""

    session_id: str | None
    """`RoomId`: changes every broadcast."""
    web_room_id: str | None
    """`WebRoomId` when known: the live.douyin.com/<id> number, or the anchor's 抖音号 for 直播伴侣."""
    owner_user_id: str | None
    owner_sec_uid: str | None

    def keys(self) -> set[str]:
        """Every stable identifier a configured room filter may name."""
        return {k for k in (self.web_room_id, self.owner_user_id, self.owner_sec_uid) if k}

    def room_key(self) -> str | None:
        """Stable room key: the anchor's user id, else sec uid, else web room id (spec: prefer Owner)."""
        return self.owner_user_id or self.owner_sec_uid or self.web_room_id


@dataclass(frozen=True, slots=True)
class _Context:
    room: str
    received_ts: int
    hasher: ViewerHasher
    store_names: bool


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def parse_envelope(raw: str | bytes) -> PushMessage:
    """Decode the outer envelope and its JSON-in-JSON `Data`.

    Raises:
        ProtocolError: not JSON, no integer `Type`, or a `Data` that is missing or not a JSON object.
    """
    try:
        outer = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ProtocolError(f"envelope is not valid JSON ({type(exc).__name__})", key="envelope") from None
    if not isinstance(outer, dict):
        raise ProtocolError(f"envelope: expected an object, got {_type_name(outer)}", key="envelope")
    type_ = outer.get("Type")
    if isinstance(type_, bool) or not isinstance(type_, int):
        raise ProtocolError(f"Type: expected an integer, got {_type_name(type_)}", key="Type")
    process = outer.get("ProcessName")
    data = outer.get("Data")
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"Data is not valid JSON ({type(exc).__name__})", key="Data") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"Data: expected a JSON object, got {_type_name(data)}", key="Data")
    return PushMessage(type=type_, process_name=process if isinstance(process, str) else None, data=data)


def _int(data: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key)
    if value is None:
        if default is None:
            raise ProtocolError(f"Data.{key}: required key is missing", key=key)
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"Data.{key}: expected an integer, got {_type_name(value)}", key=key)
    if not 0 <= value <= _MAX_COUNT:
        raise ProtocolError(f"Data.{key}: {value} is out of range", key=key)
    return value


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    return None if data.get(key) is None else _int(data, key)


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"Data.{key}: expected a string, got {_type_name(value)}", key=key)
    return _nfc(value)


def _id_str(value: object) -> str | None:
    """Ids arrive as int64 numbers (above 2^53) or strings; compare and hash them as strings."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value) if value else None
    if isinstance(value, str):
        return value.strip() or None
    return None


def room_identity(data: Mapping[str, Any]) -> RoomIdentity:
    """Read `RoomId`, `WebRoomId` and the anchor object (`Owner` if an object, else misspelt `Onwer`)."""
    owner = data.get("Owner")
    if not isinstance(owner, dict):
        owner = data.get("Onwer")
    if not isinstance(owner, dict):
        owner = {}
    web_room_id = _id_str(data.get("WebRoomId"))
    return RoomIdentity(
        session_id=_id_str(data.get("RoomId")),
        web_room_id=None if web_room_id in UNKNOWN_WEB_ROOM_IDS else web_room_id,
        owner_user_id=_id_str(owner.get("UserId")),
        owner_sec_uid=_id_str(owner.get("SecUid")),
    )


def _event(data: Mapping[str, Any], ctx: _Context, kind: EventKind, **fields: Any) -> Event:
    """Common keys: MsgId and User; the viewer id is hashed here, before the Event exists."""
    user = data.get("User")
    user_id = user_name = None
    if user is not None:
        if not isinstance(user, dict):
            raise ProtocolError(f"Data.User: expected an object or null, got {_type_name(user)}", key="User")
        user_id = ctx.hasher(PLATFORM, _id_str(user.get("Id")))
        if ctx.store_names:
            user_name = _str(user, "Nickname")
    return Event(
        platform=PLATFORM,
        room=ctx.room,
        kind=kind,
        ts=ctx.received_ts,
        received_ts=ctx.received_ts,
        msg_id=_id_str(data.get("MsgId")),
        user_id=user_id,
        user_name=user_name,
        **fields,
    )


def _chat(data: Mapping[str, Any], ctx: _Context) -> Event:
    text = _str(data, "Content")
    if text is None:
        raise ProtocolError("Data.Content: required key is missing", key="Content")
    return _event(data, ctx, EventKind.CHAT, text=text)


def _like(data: Mapping[str, Any], ctx: _Context) -> Event:
    total = _opt_int(data, "Total")
    stats = None if total is None else {"likes_total": total}
    return _event(data, ctx, EventKind.LIKE, count=_int(data, "Count", default=1), stats=stats)


def _enter(data: Mapping[str, Any], ctx: _Context) -> Event:
    # Content carries a stray "$" in v2.7.9 (spec §3): read only the typed field.
    online = _opt_int(data, "CurrentCount")
    return _event(data, ctx, EventKind.ENTER, stats=None if online is None else {"online": online})


def _follow(data: Mapping[str, Any], ctx: _Context) -> Event:
    return _event(data, ctx, EventKind.FOLLOW)


def _gift(data: Mapping[str, Any], ctx: _Context) -> Event:
    # GiftCount is the increment since the last push of this combo; the tool already dropped echoes (spec §3).
    count = _int(data, "GiftCount")
    diamonds = _int(data, "DiamondCount", default=0)
    name = _str(data, "GiftName") or f"gift {_id_str(data.get('GiftId')) or '?'}"
    return _event(
        data, ctx, EventKind.GIFT, count=count, value=count * diamonds / DIAMONDS_PER_YUAN, gift_name=name
    )


def _stats(data: Mapping[str, Any], ctx: _Context) -> Event:
    stats = {
        name: value
        for name, value in (
            ("online", _opt_int(data, "OnlineUserCount")),
            ("viewers_total", _opt_int(data, "TotalUserCount")),
        )
        if value is not None
    }
    if not stats:
        raise ProtocolError("Data.OnlineUserCount: required key is missing", key="OnlineUserCount")
    return _event(data, ctx, EventKind.STATS, stats=stats)


def _fans_club(data: Mapping[str, Any], ctx: _Context) -> Event:
    # Project decision: joining the fan club is a follow-strength signal, tagged so it can be told apart;
    # a level-up is informational. The inner `Type` reuses the outer key's name (spec §3).
    action = _int(data, "Type", default=0)
    if action == FANS_CLUB_JOINED:
        return _event(data, ctx, EventKind.FOLLOW, event="fansclub_join")
    name = "fansclub_level" if action == FANS_CLUB_LEVEL_UP else "fansclub"
    return _event(data, ctx, EventKind.SYSTEM, event=name)


def _share(data: Mapping[str, Any], ctx: _Context) -> Event:
    return _event(data, ctx, EventKind.SHARE)


def _live_end(data: Mapping[str, Any], ctx: _Context) -> Event:
    return _event(
        data, ctx, EventKind.SYSTEM, event=str(SystemEvent.LIVE_END), text=_str(data, "Content") or ""
    )


Handler = Callable[[Mapping[str, Any], _Context], Event]

HANDLERS: dict[int, Handler] = {
    PushType.CHAT: _chat,
    PushType.LIKE: _like,
    PushType.ENTER: _enter,
    PushType.FOLLOW: _follow,
    PushType.GIFT: _gift,
    PushType.STATS: _stats,
    PushType.FANS_CLUB: _fans_club,
    PushType.SHARE: _share,
    PushType.LIVE_END: _live_end,
}
"""Envelope Type → Event builder; a Type missing here is unknown (counted and logged once by the source)."""


def decode_push(
    message: PushMessage, *, room: str, hasher: ViewerHasher, received_ts: int, store_names: bool = False
) -> Event:
    """Map one known-Type message to an Event.

    Raises:
        KeyError: `message.type` has no handler (check `message.type in HANDLERS` first).
        ProtocolError: a key the mapping needs is missing or mistyped.
    """
    handler = HANDLERS[message.type]
    return handler(message.data, _Context(room, received_ts, hasher, store_names))


class DouyinPushSource(ReconnectingWsSource):
    """Client of DouyinBarrageGrab's push socket; reconnects with backoff while the tool is down.

    Args:
        room: livebot room key every event goes to. None derives the key from each message (anchor user id,
            else sec uid, else web room id, else the broadcast's RoomId) and disables source_up/down events.
        douyin_room: keep only messages of this Douyin room: its web room id (live.douyin.com/<id>), the
            anchor's 抖音号 (直播伴侣), user id or sec uid. The tool forwards every room open on the PC.
            Messages that do not name their room are matched through their broadcast RoomId once a message
            of the same broadcast has matched.
        store_names: keep viewer nicknames (privacy.store_names).
    """

    def __init__(
        self,
        *,
        hasher: ViewerHasher,
        room: str | None,
        url: str = DEFAULT_URL,
        douyin_room: str | None = None,
        clock: Clock | None = None,
        policy: ReconnectPolicy | None = None,
        store_names: bool = False,
        name: str = "douyin",
        dedupe_capacity: int = 4096,
        heartbeat_s: float | None = 30.0,
        system_events: bool = True,
    ) -> None:
        status = SourceStatus(name=name, platform=PLATFORM, room=room or ANY_ROOM)
        super().__init__(
            url,
            status=status,
            clock=clock,
            policy=policy,
            heartbeat_s=heartbeat_s,
            system_events=system_events,
        )
        self._log = room_logger(logger, room=status.room, platform=PLATFORM)
        self._hasher = hasher
        self._room = room
        self._douyin_room = douyin_room.strip() if douyin_room else None
        self._store_names = store_names
        self._recent = RecentIds(dedupe_capacity)
        self._session_rooms: dict[str, str] = {}
        """Broadcast RoomId → room key, so one broadcast keeps one key when later messages lack the anchor."""
        self._matched_sessions: set[str] = set()
        self._logged: set[str] = set()
        self.duplicates = 0
        self.filtered = 0

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key in self._logged:
            self._log.debug(msg, *args)
        else:
            self._logged.add(key)
            self._log.warning(msg, *args)

    async def _on_message(self, data: str | bytes) -> None:
        assert self._emit is not None  # set by run() before connecting
        try:
            message = parse_envelope(data)
        except ProtocolError as exc:
            self._reject(exc)
            return
        if message.type not in HANDLERS:
            self.status.unknown_kinds[str(message.type)] += 1
            self._warn_once(
                f"type:{message.type}", "unknown message Type %d; counting and skipping", message.type
            )
            return
        room = self._resolve_room(room_identity(message.data))
        if room is None:
            return
        now = self._clock.now_ms()
        try:
            event = decode_push(
                message, room=room, hasher=self._hasher, received_ts=now, store_names=self._store_names
            )
        except ProtocolError as exc:
            self._reject(exc, message.type)
            return
        if self._recent.seen(room, event.msg_id):
            self.duplicates += 1
            self._log.debug("dropped duplicate MsgId=%s", event.msg_id)
            return
        self.status.messages += 1
        await self._emit(event)

    def _reject(self, exc: ProtocolError, type_: int | None = None) -> None:
        self.status.errors += 1
        self.status.last_error = str(exc)
        where = "" if type_ is None else f" of Type {type_}"
        self._warn_once(f"bad:{type_}:{exc.key}", "skipped a message%s: %s", where, exc)

    def _resolve_room(self, identity: RoomIdentity) -> str | None:
        """The livebot room of a message, or None when the configured filter says it belongs elsewhere."""
        session = identity.session_id
        if self._douyin_room is not None:
            if self._douyin_room in identity.keys() or self._douyin_room == session:
                if session:
                    self._matched_sessions.add(session)
            elif session is None or session not in self._matched_sessions:
                self.filtered += 1
                label = ",".join(sorted(identity.keys())) or "unknown"
                self._warn_once(f"other:{session}", "ignoring messages of another room (%s)", label)
                return None
        if self._room is not None:
            return self._room
        key = identity.room_key()
        if session:
            key = self._session_rooms.setdefault(session, key or session)
        return key or "unknown"
