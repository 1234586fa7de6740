"""The generic JSON event format (../shared/protocols/generic_json.md) → Event; pure, no I/O, no logging.

Used by the generic websocket ingest server and client (bot.sources.generic_ws) and by the replay reader
(a recorded replay JSONL is one generic-JSON object per line, with the hashed `user.id` and `received_ts`).

Rules implemented here:
- required keys per kind and the type of every known key are checked; unknown keys are ignored;
- every string is NFC-normalised;
- a `ts` more than 24 h away from the receive time is kept; it is *flagged* by `ts_skewed(event)`, which the
  caller counts and logs (a frozen Event has no room for a flag, and this module does no logging);
- a violation raises `ProtocolError` whose `key` is the dotted key (`user.id`, `stats.online`) and whose
  message names it.

Replay mode (`hasher=None`): `user.id` is already a livebot hash and the object's own `received_ts` wins.
Because `Event.to_json()` omits an empty `text` and an absent user, a recorded log may lack `text` on a
system event and `user` on a user event (an anonymous viewer); replay mode accepts both, live ingest does not.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Mapping
from typing import Any

from bot.errors import ProtocolError
from bot.events import STATS_KEYS, Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources.base import RecentIds as RecentIds  # moved to base; re-exported for old imports

FORMAT_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
"""Largest accepted websocket message (protocols/generic_json.md *Transport*); bigger closes with 1009."""
TS_SKEW_LIMIT_MS = 24 * 3600 * 1000
"""A `ts` further than this from the receive time is kept but flagged (`ts_skewed`)."""
_MAX_TS = 2**63 - 1  # SQLite INTEGER range; anything beyond is not a timestamp

_USER_KINDS = frozenset(
    {EventKind.CHAT, EventKind.GIFT, EventKind.LIKE, EventKind.ENTER, EventKind.FOLLOW, EventKind.SHARE}
)
_TEXT_KINDS = frozenset({EventKind.CHAT, EventKind.SYSTEM})


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _wrong_type(key: str, expected: str, value: object) -> ProtocolError:
    return ProtocolError(f"{key}: expected {expected}, got {_type_name(value)}", key=key)


def _get_str(obj: Mapping[str, Any], name: str, key: str, *, required: bool, non_empty: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"{key}: required key is missing", key=key)
        return None
    if not isinstance(value, str):
        raise _wrong_type(key, "a string", value)
    value = _nfc(value)
    if non_empty and not value.strip():
        raise ProtocolError(f"{key}: must not be empty", key=key)
    return value


def _require_str(obj: Mapping[str, Any], name: str, key: str) -> str:
    value = _get_str(obj, name, key, required=True, non_empty=True)
    if value is None:  # unreachable: required=True raises first; keeps the type exact without assert
        raise ProtocolError(f"{key}: required key is missing", key=key)
    return value


def _get_int(obj: Mapping[str, Any], name: str, key: str, *, required: bool, minimum: int = 0) -> int | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"{key}: required key is missing", key=key)
        return None
    # bool is an int subclass in Python; JSON true/false is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(key, "an integer", value)
    if value < minimum or value > _MAX_TS:
        raise ProtocolError(f"{key}: {value} is out of range", key=key)
    return value


def _get_object(obj: Mapping[str, Any], name: str, key: str, *, required: bool) -> Mapping[str, Any] | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise ProtocolError(f"{key}: required key is missing", key=key)
        return None
    if not isinstance(value, dict):
        raise _wrong_type(key, "an object", value)
    return value


def _get_value(obj: Mapping[str, Any]) -> float:
    value = obj.get("value")
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type("value", "a number", value)
    try:
        result = float(value)
    except OverflowError:
        raise ProtocolError("value: number is out of range", key="value") from None
    if not math.isfinite(result) or result < 0:
        raise ProtocolError(f"value: {value!r} is not a finite amount >= 0", key="value")
    return result


def _get_stats(obj: Mapping[str, Any], *, required: bool) -> dict[str, int] | None:
    raw = _get_object(obj, "stats", "stats", required=required)
    if raw is None:
        return None
    stats: dict[str, int] = {}
    for name in STATS_KEYS:
        value = _get_int(raw, name, f"stats.{name}", required=False)
        if value is not None:
            stats[name] = value
    if required and not stats:
        raise ProtocolError(f"stats: needs at least one of {', '.join(STATS_KEYS)}", key="stats")
    return stats


def parse_event(
    obj: object,
    *,
    hasher: ViewerHasher | None,
    received_ts: int,
    room: str | None = None,
    store_names: bool = False,
) -> Event:
    """Validate one generic-JSON event object and build the Event.

    Args:
        hasher: hashes `user.id`; None means `user.id` already is a livebot hash (replay JSONL).
        received_ts: receive time from the Clock (ms); an object's own `received_ts` wins over it.
        room: livebot room key that overrides the object's `room` (which then becomes optional).
        store_names: keep `user.name` (privacy.store_names); otherwise it is dropped here.

    Raises:
        ProtocolError: the object breaks the format; `key` names the offending key.
    """
    if not isinstance(obj, dict):
        raise ProtocolError(f"event: expected an object, got {_type_name(obj)}", key="event")
    replay = hasher is None

    version = _get_int(obj, "v", "v", required=False, minimum=1)
    if version is not None and version != FORMAT_VERSION:
        raise ProtocolError(f"v: unsupported format version {version} (supported: 1)", key="v")

    platform = _require_str(obj, "platform", "platform").strip().lower()
    if room is None:
        room_key = _require_str(obj, "room", "room")
    else:
        _get_str(obj, "room", "room", required=False, non_empty=False)
        room_key = room

    kind_raw = _require_str(obj, "kind", "kind")
    try:
        kind = EventKind(kind_raw)
    except ValueError:
        raise ProtocolError(f"kind: unknown kind {kind_raw!r}", key="kind") from None

    ts = _get_int(obj, "ts", "ts", required=True) or 0
    own_received = _get_int(obj, "received_ts", "received_ts", required=False)
    msg_id = _get_str(obj, "id", "id", required=False, non_empty=True)

    user_id: str | None = None
    user_name: str | None = None
    user = _get_object(obj, "user", "user", required=kind in _USER_KINDS and not replay)
    if user is not None:
        raw_id = _require_str(user, "id", "user.id")
        name = _get_str(user, "name", "user.name", required=False, non_empty=False)
        user_id = raw_id if hasher is None else hasher(platform, raw_id)
        user_name = name if store_names else None

    text = _get_str(obj, "text", "text", required=kind in _TEXT_KINDS and not replay, non_empty=False)
    count = _get_int(obj, "count", "count", required=False)
    value = _get_value(obj)

    gift_name: str | None = None
    gift = _get_object(obj, "gift", "gift", required=False)
    if gift is not None:
        _get_str(gift, "id", "gift.id", required=False, non_empty=False)
        gift_name = _get_str(gift, "name", "gift.name", required=True, non_empty=True)

    stats = _get_stats(obj, required=kind is EventKind.STATS)
    event_name = _get_str(obj, "event", "event", required=kind is EventKind.SYSTEM, non_empty=True)

    return Event(
        platform=platform,
        room=room_key,
        kind=kind,
        ts=ts,
        received_ts=own_received if own_received is not None else received_ts,
        msg_id=msg_id,
        user_id=user_id,
        user_name=user_name,
        text=text or "",
        count=1 if count is None else count,
        value=value,
        gift_name=gift_name,
        stats=stats,
        event=event_name,
    )


def ts_skewed(event: Event) -> bool:
    """True when the event's source time is more than 24 h from its receive time (kept, but suspicious)."""
    return abs(event.ts - event.received_ts) > TS_SKEW_LIMIT_MS


def decode_message(data: str | bytes) -> object:
    """Decode one websocket message into JSON.

    Raises:
        ProtocolError: not UTF-8, not JSON, or nested too deeply to decode.
    """
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"message is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"message is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except (ValueError, RecursionError) as exc:
        # ValueError: an integer literal over Python's digit limit; RecursionError: absurd nesting.
        raise ProtocolError(f"message is not valid JSON: {type(exc).__name__}") from None


def parse_message(
    data: str | bytes,
    *,
    hasher: ViewerHasher | None,
    received_ts: int,
    room: str | None = None,
    store_names: bool = False,
) -> tuple[list[Event], list[tuple[int, str]]]:
    """Parse one websocket message: a single event object or a batch array.

    Returns the valid events and `(index, reason)` for each rejected one (index 0 for a single event or a
    message that is not JSON at all). Never raises: one bad event must not cost the others.
    """
    try:
        decoded = decode_message(data)
    except ProtocolError as exc:
        return [], [(0, str(exc))]
    items: list[object]
    if isinstance(decoded, list):
        items = decoded
    elif isinstance(decoded, dict):
        items = [decoded]
    else:
        return [], [(0, f"message must be an event object or an array of them, got {_type_name(decoded)}")]
    events: list[Event] = []
    errors: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        try:
            events.append(
                parse_event(item, hasher=hasher, received_ts=received_ts, room=room, store_names=store_names)
            )
        except ProtocolError as exc:
            errors.append((index, str(exc)))
    return events, errors
