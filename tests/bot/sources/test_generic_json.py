"""The generic JSON event format (protocols/generic_json.md): validation, hashing, replay and fuzzing."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import ProtocolError
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources.generic_json import (
    TS_SKEW_LIMIT_MS,
    RecentIds,
    parse_event,
    parse_message,
    ts_skewed,
)

HASHER = ViewerHasher.for_tests()
NOW = 1_767_225_600_000
SPEC = Path(__file__).resolve().parents[3].parent / "shared" / "protocols" / "generic_json.md"

# The examples of protocols/generic_json.md, verbatim (also read from the spec below when it is present).
EXAMPLES = [
    '{"platform":"kuaishou","room":"3x9demo","kind":"chat","ts":1767225600123,"id":"m-1","user":{"id":"u1001","name":"小北"},"text":"这个有XL码吗"}',  # noqa: E501
    '{"platform":"taobao","room":"shop42","kind":"gift","ts":1767225601000,"user":{"id":"u1002"},"gift":{"name":"小红花"},"count":3,"value":0.3}',  # noqa: E501
    '{"platform":"tiktok","room":"demo_shop","kind":"like","ts":1767225602000,"user":{"id":"7001","name":"amy"},"count":15}',  # noqa: E501
    '{"platform":"custom","room":"r1","kind":"enter","ts":1767225603000,"user":{"id":"u1003","name":"阿青"}}',
    '{"platform":"custom","room":"r1","kind":"follow","ts":1767225604000,"user":{"id":"u1003"}}',
    '{"platform":"custom","room":"r1","kind":"share","ts":1767225605000,"user":{"id":"u1004"}}',
    '{"platform":"custom","room":"r1","kind":"stats","ts":1767225606000,"stats":{"online":842,"viewers_total":12034,"likes_total":3021}}',  # noqa: E501
    '{"platform":"custom","room":"r1","kind":"system","ts":1767229200000,"event":"live_end","text":"直播已结束"}',
]


def _parse(obj: object, **kw: Any) -> Event:
    kw.setdefault("hasher", HASHER)
    kw.setdefault("received_ts", NOW)
    return parse_event(obj, **kw)


def _chat(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "platform": "custom",
        "room": "r1",
        "kind": "chat",
        "ts": NOW,
        "id": "m-1",
        "user": {"id": "u1", "name": "小北"},
        "text": "有XL码吗",
    }
    obj.update(over)
    return obj


def test_examples_match_the_spec_file() -> None:
    if not SPEC.exists():
        pytest.skip("../shared/protocols is optional outside the repository")
    lines = [ln for ln in SPEC.read_text(encoding="utf-8").splitlines() if ln.startswith('{"platform"')]
    assert lines == EXAMPLES


def test_spec_examples_map_to_events() -> None:
    events = [_parse(json.loads(line)) for line in EXAMPLES]
    assert [e.kind for e in events] == [
        EventKind.CHAT,
        EventKind.GIFT,
        EventKind.LIKE,
        EventKind.ENTER,
        EventKind.FOLLOW,
        EventKind.SHARE,
        EventKind.STATS,
        EventKind.SYSTEM,
    ]
    chat, gift, like, enter, follow, _share, stats, system = events
    assert (chat.platform, chat.room, chat.ts, chat.msg_id, chat.text) == (
        "kuaishou",
        "3x9demo",
        1767225600123,
        "m-1",
        "这个有XL码吗",
    )
    assert chat.received_ts == NOW
    assert chat.user_id == HASHER("kuaishou", "u1001")
    assert chat.user_name is None  # store_names is off by default
    assert (gift.gift_name, gift.count, gift.value) == ("小红花", 3, 0.3)
    assert like.count == 15
    assert enter.user_id == follow.user_id == HASHER("custom", "u1003")
    assert stats.user_id is None
    assert stats.stats == {"online": 842, "viewers_total": 12034, "likes_total": 3021}
    assert (system.event, system.text) == ("live_end", "直播已结束")


def test_names_kept_only_when_store_names() -> None:
    assert _parse(_chat(), store_names=True).user_name == "小北"
    assert _parse(_chat(), store_names=False).user_name is None


def test_room_override_replaces_and_makes_room_optional() -> None:
    assert _parse(_chat(), room="main").room == "main"
    obj = _chat()
    del obj["room"]
    assert _parse(obj, room="main").room == "main"
    with pytest.raises(ProtocolError, match="^room: required key is missing$"):
        _parse(obj)


def test_platform_is_lowercased_and_strings_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "café 한국")
    assert decomposed != "café 한국"
    ev = _parse(
        _chat(platform="Custom", text=decomposed, user={"id": "u1", "name": decomposed}), store_names=True
    )
    assert ev.platform == "custom"
    assert ev.text == "café 한국"
    assert ev.user_name == "café 한국"


def test_unknown_keys_ignored() -> None:
    ev = _parse(_chat(future_field={"x": [1, 2]}, user={"id": "u1", "avatar": "x"}))
    assert ev.text == "有XL码吗"


@pytest.mark.parametrize(
    ("obj", "key", "match"),
    [
        ([], "event", "event: expected an object, got array"),
        (_chat(platform=None), "platform", "platform: required key is missing"),
        (_chat(platform=""), "platform", "platform: must not be empty"),
        (_chat(room=5), "room", "room: expected a string, got integer"),
        (_chat(kind="dance"), "kind", "kind: unknown kind 'dance'"),
        (_chat(ts="1767225600000"), "ts", "ts: expected an integer, got string"),
        (_chat(ts=1.5), "ts", "ts: expected an integer, got number"),
        (_chat(ts=True), "ts", "ts: expected an integer, got boolean"),
        (_chat(ts=-1), "ts", "ts: -1 is out of range"),
        (_chat(ts=2**64), "ts", "ts: .* is out of range"),
        (_chat(id=7), "id", "id: expected a string, got integer"),
        (_chat(user=None), "user", "user: required key is missing"),
        (_chat(user="u1"), "user", "user: expected an object, got string"),
        (_chat(user={"name": "x"}), "user.id", "user.id: required key is missing"),
        (_chat(user={"id": 1001}), "user.id", "user.id: expected a string, got integer"),
        (_chat(user={"id": "u1", "name": 3}), "user.name", "user.name: expected a string"),
        (_chat(text=None), "text", "text: required key is missing"),
        (_chat(text=["a"]), "text", "text: expected a string, got array"),
        (_chat(count=-2), "count", "count: -2 is out of range"),
        (_chat(value="1.0"), "value", "value: expected a number, got string"),
        (_chat(value=float("nan")), "value", "value: nan is not a finite amount"),
        (_chat(value=-1), "value", "value: -1 is not a finite amount"),
        (_chat(value=10**400), "value", "value: number is out of range"),
        (_chat(gift={"id": "g"}), "gift.name", "gift.name: required key is missing"),
        (_chat(gift={"id": 1, "name": "x"}), "gift.id", "gift.id: expected a string"),
        (_chat(kind="stats"), "stats", "stats: required key is missing"),
        (_chat(kind="stats", stats={"fans": 3}), "stats", "stats: needs at least one of online"),
        (_chat(kind="stats", stats={"online": "842"}), "stats.online", "stats.online: expected an integer"),
        (_chat(kind="system"), "event", "event: required key is missing"),
        (_chat(v=2), "v", "v: unsupported format version 2"),
        (_chat(v="1"), "v", "v: expected an integer"),
        (_chat(received_ts="x"), "received_ts", "received_ts: expected an integer"),
    ],
)
def test_bad_events_name_the_key(obj: object, key: str, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        _parse(obj)
    assert info.value.key == key


def test_user_required_for_user_kinds_live_but_not_in_replay() -> None:
    for kind in ("gift", "like", "enter", "follow", "share"):
        obj = {"platform": "x", "room": "r", "kind": kind, "ts": NOW}
        with pytest.raises(ProtocolError, match="^user: required key is missing$"):
            _parse(obj)
        assert _parse(obj, hasher=None).user_id is None


def test_stats_and_system_need_no_user() -> None:
    ev = _parse({"platform": "x", "room": "r", "kind": "system", "ts": NOW, "event": "source_up", "text": ""})
    assert ev.user_id is None
    assert ev.event == "source_up"


def test_replay_keeps_hash_and_own_received_ts() -> None:
    live = _parse(_chat(), store_names=True)
    line = live.to_line()
    assert "\n" not in line
    replayed = parse_event(json.loads(line), hasher=None, received_ts=0, store_names=True)
    assert replayed == live
    assert replayed.user_id == HASHER("custom", "u1")  # not hashed twice


def test_replay_round_trips_every_example_and_empty_system_text() -> None:
    events = [_parse(json.loads(line), store_names=True) for line in EXAMPLES]
    events.append(
        _parse({"platform": "x", "room": "r", "kind": "system", "ts": NOW, "event": "x", "text": ""})
    )
    for ev in events:
        assert parse_event(json.loads(ev.to_line()), hasher=None, received_ts=0, store_names=True) == ev


def test_ts_far_from_receive_time_is_kept_and_flagged() -> None:
    ok = _parse(_chat(ts=NOW - TS_SKEW_LIMIT_MS))
    assert not ts_skewed(ok)
    late = _parse(_chat(ts=NOW - TS_SKEW_LIMIT_MS - 1))
    assert late.ts == NOW - TS_SKEW_LIMIT_MS - 1
    assert ts_skewed(late)
    assert ts_skewed(_parse(_chat(ts=0)))


def test_parse_message_single_batch_and_errors() -> None:
    single = json.dumps(_chat())
    assert parse_message(single, hasher=HASHER, received_ts=NOW) == ([_parse(_chat())], [])
    batch = json.dumps([_chat(id="a"), _chat(ts="bad"), 5, _chat(id="b")])
    events, errors = parse_message(batch.encode(), hasher=HASHER, received_ts=NOW)
    assert [e.msg_id for e in events] == ["a", "b"]
    assert errors == [
        (1, "ts: expected an integer, got string"),
        (2, "event: expected an object, got integer"),
    ]
    assert parse_message("[]", hasher=HASHER, received_ts=NOW) == ([], [])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("hello", "message is not valid JSON"),
        (b"\xff\xfe", "message is not valid UTF-8"),
        ('"just a string"', "must be an event object or an array of them, got string"),
        ("42", "got integer"),
        ("[" * 100_000, "message is not valid JSON"),
        ("1" * 5000, "message is not valid JSON"),
    ],
)
def test_parse_message_non_event_input(data: str | bytes, match: str) -> None:
    events, errors = parse_message(data, hasher=HASHER, received_ts=NOW)
    assert events == []
    assert len(errors) == 1
    assert errors[0][0] == 0
    assert match in errors[0][1]


def test_recent_ids_is_bounded_per_room() -> None:
    recent = RecentIds(capacity=2)
    assert not recent.seen("r1", "a")
    assert recent.seen("r1", "a")
    assert not recent.seen("r2", "a")  # rooms are separate
    assert not recent.seen("r1", None)
    assert not recent.seen("r1", None)
    recent.seen("r1", "b")
    recent.seen("r1", "c")  # evicts "a"
    assert not recent.seen("r1", "a")
    with pytest.raises(ValueError, match="capacity"):
        RecentIds(0)


# --- fuzzing: random input never raises anything but ProtocolError / never raises at all ---

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Near-valid objects: the real keys with random values, so validation reaches its deeper branches.
_keys = ["v", "platform", "room", "kind", "ts", "received_ts", "id", "user", "text", "count", "value"]
_near_valid = st.fixed_dictionaries(
    {},
    optional={
        **{k: _json for k in _keys},
        "kind": st.sampled_from([str(k) for k in EventKind]) | _json,
        "user": st.fixed_dictionaries({}, optional={"id": _json, "name": _json}) | _json,
        "gift": st.fixed_dictionaries({}, optional={"id": _json, "name": _json}) | _json,
        "stats": st.dictionaries(st.sampled_from(["online", "viewers_total", "likes_total", "x"]), _json),
        "event": _json,
    },
)


@settings(max_examples=150, deadline=None)
@given(obj=_json | _near_valid, replay=st.booleans())
def test_parse_event_raises_only_protocol_error(obj: object, replay: bool) -> None:
    try:
        ev = parse_event(obj, hasher=None if replay else HASHER, received_ts=NOW, store_names=True)
    except ProtocolError as exc:
        assert exc.key is not None
        assert str(exc).startswith(exc.key)
    else:
        assert isinstance(ev, Event)
        # A valid event survives its own replay line unchanged.
        again = parse_event(json.loads(ev.to_line()), hasher=None, received_ts=0, store_names=True)
        assert again == ev


@settings(max_examples=150, deadline=None)
@given(data=st.text(max_size=200) | st.binary(max_size=200) | _json.map(json.dumps))
def test_parse_message_never_raises(data: str | bytes) -> None:
    events, errors = parse_message(data, hasher=HASHER, received_ts=NOW)
    assert all(isinstance(e, Event) for e in events)
    assert all(isinstance(i, int) and isinstance(r, str) for i, r in errors)
