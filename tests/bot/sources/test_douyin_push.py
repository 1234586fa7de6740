"""DouyinBarrageGrab push: envelope decoding, the Type → Event table, and the reconnecting socket loop."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import ManualClock, SystemClock
from bot.errors import ProtocolError
from bot.events import Event, EventKind
from bot.privacy import ViewerHasher
from bot.sources.base import ReconnectPolicy, SourceState
from bot.sources.douyin_push import (
    DEFAULT_URL,
    HANDLERS,
    DouyinPushSource,
    PushType,
    decode_push,
    parse_envelope,
    room_identity,
)
from tests.fakes.barragegrab import (
    ANCHOR_USER_ID,
    EXAMPLE_TYPE1,
    EXAMPLE_TYPE6,
    MSG_ID_BASE,
    ROOM_ID,
    TYPES,
    VIEWER_ID,
    VIEWER_NAME,
    WEB_ROOM_ID,
    FakeBarrageGrab,
    envelope,
    example_data,
    example_message,
)
from tests.fakes.generic_push import EventCollector, running, until

HASHER = ViewerHasher.for_tests()
NOW = 1_767_225_600_000
VIEWER = HASHER("douyin", str(VIEWER_ID))
SPEC = Path(__file__).resolve().parents[3].parent / "shared" / "protocols" / "douyin_barragegrab.md"


def _decode(raw: str, *, store_names: bool = False) -> Event:
    return decode_push(
        parse_envelope(raw), room="main", hasher=HASHER, received_ts=NOW, store_names=store_names
    )


def _fast_policy() -> ReconnectPolicy:
    return ReconnectPolicy(base_s=0.01, max_s=0.02)


def _source(url: str, **kw: Any) -> DouyinPushSource:
    kw.setdefault("room", "main")
    kw.setdefault("policy", _fast_policy())
    kw.setdefault("clock", ManualClock(NOW))
    return DouyinPushSource(url=url, hasher=HASHER, **kw)


# --- pure decoding ---


def test_fixtures_are_the_spec_examples() -> None:
    assert example_message(1) == EXAMPLE_TYPE1
    assert example_message(6) == EXAMPLE_TYPE6
    if SPEC.exists():
        lines = [ln for ln in SPEC.read_text(encoding="utf-8").splitlines() if ln.startswith('{"Type"')]
        assert lines == [EXAMPLE_TYPE1, EXAMPLE_TYPE6]


def test_envelope_is_json_in_json() -> None:
    msg = parse_envelope(EXAMPLE_TYPE1.encode())
    assert (msg.type, msg.process_name) == (1, "chrome")
    assert msg.data["MsgId"] == 7400000000000000101  # above 2**53, exact in Python
    assert msg.data["Content"] == "这个有大码吗"


def test_every_type_has_a_handler() -> None:
    assert set(HANDLERS) == set(PushType) == set(TYPES) == set(range(1, 10))


@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        (1, {"kind": EventKind.CHAT, "text": "这个有大码吗", "user_id": VIEWER}),
        (2, {"kind": EventKind.LIKE, "count": 15, "stats": {"likes_total": 3021}, "user_id": VIEWER}),
        (3, {"kind": EventKind.ENTER, "stats": {"online": 842}, "text": "", "user_id": VIEWER}),
        (4, {"kind": EventKind.FOLLOW, "user_id": VIEWER, "event": None}),
        (5, {"kind": EventKind.GIFT, "count": 2, "value": 0.2, "gift_name": "小心心", "user_id": VIEWER}),
        (6, {"kind": EventKind.STATS, "stats": {"online": 842, "viewers_total": 12034}, "user_id": None}),
        (7, {"kind": EventKind.SYSTEM, "event": "fansclub_level", "user_id": VIEWER}),
        (8, {"kind": EventKind.SHARE, "user_id": VIEWER}),
        (9, {"kind": EventKind.SYSTEM, "event": "live_end", "text": "直播已结束", "user_id": None}),
    ],
)
@pytest.mark.parametrize("version", ["2.7.9", "2.7.6"])
def test_every_type_maps_to_an_event(type_: int, expected: dict[str, Any], version: str) -> None:
    ev = _decode(example_message(type_, version=version))
    assert {key: getattr(ev, key) for key in expected} == expected
    assert (ev.platform, ev.room, ev.ts, ev.received_ts) == ("douyin", "main", NOW, NOW)
    assert ev.msg_id == str(MSG_ID_BASE + type_)
    assert ev.user_name is None
    # every event survives the replay JSONL round trip
    assert Event(**_fields(ev)) == ev
    assert json.loads(ev.to_line())["platform"] == "douyin"


def _fields(ev: Event) -> dict[str, Any]:
    return {name: getattr(ev, name) for name in Event.__slots__}


def test_fans_club_join_is_a_tagged_follow() -> None:
    ev = _decode(example_message(7, Type=2, Content="示例观众甲 加入了粉丝团"))
    assert (ev.kind, ev.event, ev.user_id) == (EventKind.FOLLOW, "fansclub_join", VIEWER)
    assert _decode(example_message(7, Type=99)).event == "fansclub"


def test_gift_value_is_cny() -> None:
    ev = _decode(example_message(5, GiftCount=3, DiamondCount=299))  # 897 抖币 = ¥89.7
    assert ev.value == pytest.approx(89.7)
    assert ev.count == 3
    no_name = _decode(example_message(5, GiftName=None))
    assert no_name.gift_name == "gift 5655"


def test_nicknames_only_when_store_names() -> None:
    assert _decode(EXAMPLE_TYPE1, store_names=True).user_name == VIEWER_NAME
    assert _decode(EXAMPLE_TYPE1).user_name is None
    assert _decode(EXAMPLE_TYPE6, store_names=True).user_name is None


def test_viewer_id_is_hashed_never_raw() -> None:
    ev = _decode(EXAMPLE_TYPE1, store_names=True)
    assert ev.user_id == VIEWER
    assert str(VIEWER_ID) not in ev.to_line()
    # ids given as strings hash the same as numbers
    assert _decode(example_message(1, User={"Id": str(VIEWER_ID)})).user_id == VIEWER


def test_room_identity_owner_spellings() -> None:
    new = room_identity(example_data(1))
    assert (new.owner_user_id, new.web_room_id, new.session_id) == (ANCHOR_USER_ID, WEB_ROOM_ID, ROOM_ID)
    old = room_identity(example_data(1, version="2.7.6"))
    assert old.owner_user_id == ANCHOR_USER_ID  # anchor object under misspelt "Onwer"
    unknown = room_identity(example_data(9, WebRoomId="未知", Owner=None))
    assert (unknown.web_room_id, unknown.owner_user_id, unknown.room_key()) == (None, None, None)
    assert room_identity(example_data(1, WebRoomId="")).web_room_id is None


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("not json", "envelope"),
        ("[1]", "envelope"),
        ('{"Type":"1","Data":"{}"}', "Type"),
        ('{"Type":true,"Data":"{}"}', "Type"),
        ('{"Type":1}', "Data"),
        ('{"Type":1,"Data":"{broken"}', "Data"),
        ('{"Type":1,"Data":"[1,2]"}', "Data"),
        ('{"Type":1,"Data":7}', "Data"),
    ],
)
def test_bad_envelopes(raw: str, key: str) -> None:
    with pytest.raises(ProtocolError, match=key) as info:
        parse_envelope(raw)
    assert info.value.key == key


def test_data_as_object_is_tolerated() -> None:
    raw = json.dumps({"Type": 1, "ProcessName": "douyin", "Data": example_data(1)}, ensure_ascii=False)
    assert _decode(raw).text == "这个有大码吗"


@pytest.mark.parametrize(
    ("type_", "changes", "key"),
    [
        (1, {"Content": None}, "Content"),
        (1, {"User": "someone"}, "User"),
        (2, {"Count": "15"}, "Count"),
        (2, {"Count": -1}, "Count"),
        (5, {"DiamondCount": 10**400}, "DiamondCount"),
        (5, {"GiftCount": None}, "GiftCount"),
        (6, {"OnlineUserCount": None, "TotalUserCount": None}, "OnlineUserCount"),
    ],
)
def test_bad_data_names_the_key(type_: int, changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ProtocolError, match=f"Data.{key}") as info:
        _decode(example_message(type_, **changes))
    assert info.value.key == key


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=10,
)
_keys = [
    "MsgId",
    "User",
    "Content",
    "Count",
    "Total",
    "CurrentCount",
    "GiftCount",
    "DiamondCount",
    "GiftName",
]
_data = st.fixed_dictionaries(
    {},
    optional={
        **{k: _json for k in _keys},
        "Type": _json,
        "OnlineUserCount": _json,
        "User": st.fixed_dictionaries({}, optional={"Id": _json, "Nickname": _json}) | _json,
        "Owner": _json,
        "WebRoomId": _json,
    },
)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=100) | _json.map(json.dumps))
def test_random_envelopes_raise_only_protocol_error(text: str) -> None:
    try:
        parse_envelope(text)
    except ProtocolError:
        pass


@settings(max_examples=150, deadline=None)
@given(type_=st.sampled_from(TYPES), data=_data)
def test_random_data_raises_only_protocol_error(type_: int, data: dict[str, Any]) -> None:
    raw = envelope(type_, json.dumps(data))
    try:
        ev = _decode(raw, store_names=True)
    except ProtocolError:
        return
    assert isinstance(ev, Event)
    room_identity(data)


# --- the socket loop ---


async def test_all_types_arrive_through_the_socket_and_nothing_is_sent() -> None:
    assert DEFAULT_URL == "ws://127.0.0.1:8888/"
    async with FakeBarrageGrab() as grab:
        source = _source(grab.url + "any/path")
        out = EventCollector()
        async with running(source, out):
            up = await out.next()
            assert (up.kind, up.event, up.platform, up.room) == (
                EventKind.SYSTEM,
                "source_up",
                "douyin",
                "main",
            )
            for type_ in TYPES:
                await grab.push_example(type_)
            got = await out.take(len(TYPES))
        assert [e.kind for e in got] == [
            EventKind.CHAT,
            EventKind.LIKE,
            EventKind.ENTER,
            EventKind.FOLLOW,
            EventKind.GIFT,
            EventKind.STATS,
            EventKind.SYSTEM,
            EventKind.SHARE,
            EventKind.SYSTEM,
        ]
        assert got[5].user_id is None and got[5].stats == {"online": 842, "viewers_total": 12034}
        assert got[8].event == "live_end" and got[8].user_id is None
        assert grab.received == []  # BarrageGrab v2.7.6 treats client text as commands (Cmd 1 = shut down)
        assert source.status.messages == 9
        assert source.status.errors == 0
        assert source.status.state is SourceState.STOPPED


async def test_bad_inner_json_is_skipped_and_the_rest_kept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.sources")
    async with FakeBarrageGrab() as grab:
        source = _source(grab.url, system_events=False)
        out = EventCollector()
        async with running(source, out):
            await asyncio.wait_for(source.wait_connected(), 5)
            await grab.push_example(1)
            await grab.push('{"Type":1,"ProcessName":"chrome","Data":"{\\"MsgId\\":1,"}')
            await grab.push('{"Type":2,"ProcessName":"chrome"}')
            await grab.push("<html>")
            await grab.push(example_message(2, Count="many"))
            await grab.push_example(2)
            got = await out.take(2)
            assert [e.kind for e in got] == [EventKind.CHAT, EventKind.LIKE]
        assert source.status.errors == 4
        assert source.connects == 1  # the connection was kept
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("room=main platform=douyin skipped a message") for m in messages), messages
    assert all("示例观众甲" not in m and str(VIEWER_ID) not in m for m in messages)


async def test_unknown_type_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.sources")
    async with FakeBarrageGrab() as grab:
        source = _source(grab.url, system_events=False)
        out = EventCollector()
        async with running(source, out):
            await asyncio.wait_for(source.wait_connected(), 5)
            for _ in range(3):
                await grab.push(envelope(42, example_data(1)))
            await grab.push(envelope(0, example_data(1)))
            await grab.push_example(4)
            assert (await out.next()).kind is EventKind.FOLLOW
        assert source.status.unknown_kinds == {"42": 3, "0": 1}
        assert source.status.messages == 1
    unknown = [r.getMessage() for r in caplog.records if "unknown message Type" in r.getMessage()]
    assert unknown == [
        "room=main platform=douyin unknown message Type 42; counting and skipping",
        "room=main platform=douyin unknown message Type 0; counting and skipping",
    ]


async def test_drop_reconnect_resume_without_duplicates() -> None:
    async with FakeBarrageGrab(replay_on_connect=2) as grab:
        source = _source(grab.url, clock=SystemClock())  # real (tiny) backoff delays
        out = EventCollector()
        async with running(source, out):
            assert (await out.next()).event == "source_up"
            for type_ in (1, 2, 3):
                await grab.push_example(type_)
            assert len(await out.take(3)) == 3
            await grab.drop_clients()
            down, up = await out.take(2)
            assert (down.event, up.event) == ("source_down", "source_up")
            await grab.push_example(4)  # the fake resent Types 2 and 3 first: dropped by MsgId
            assert (await out.next()).kind is EventKind.FOLLOW
        kinds = [e.kind for e in out.events if e.kind is not EventKind.SYSTEM]
        assert kinds == [EventKind.CHAT, EventKind.LIKE, EventKind.ENTER, EventKind.FOLLOW]
        assert source.duplicates == 2
        assert source.status.reconnects == 1


async def test_reconnects_while_barragegrab_is_down() -> None:
    grab = FakeBarrageGrab()
    await grab.start()
    url = grab.url
    await grab.stop()
    source = _source(url, system_events=False, clock=SystemClock())  # real (tiny) backoff delays
    out = EventCollector()
    async with running(source, out):
        await until(lambda: source.status.reconnects >= 2)
        assert source.status.state is SourceState.RECONNECTING
        await grab.start()
        try:
            await asyncio.wait_for(source.wait_connected(), 5)
            await grab.push_example(1)
            assert (await out.next()).text == "这个有大码吗"
        finally:
            await grab.stop()


async def test_filter_to_one_douyin_room() -> None:
    other_owner = {"UserId": "1", "SecUid": "other", "Nickname": "x", "HeadUrl": "", "FollowStatus": 0}
    async with FakeBarrageGrab() as grab:
        source = _source(grab.url, douyin_room=WEB_ROOM_ID, system_events=False)
        out = EventCollector()
        async with running(source, out):
            await asyncio.wait_for(source.wait_connected(), 5)
            # another tab open on the same PC: a different broadcast, web room and anchor
            await grab.push_example(1, RoomId="7499", WebRoomId="555", Owner=other_owner, MsgId=1)
            await grab.push_example(1)
            # v2.7.9 Type 9 says "未知"; it belongs to us through its broadcast RoomId
            await grab.push_example(9, WebRoomId="未知", Owner=None)
            await grab.push_example(9, RoomId="7499", WebRoomId="未知", Owner=None, MsgId=2)
            await grab.push_example(4)
            got = await out.take(3)
        assert [e.kind for e in got] == [EventKind.CHAT, EventKind.SYSTEM, EventKind.FOLLOW]
        assert source.filtered == 2
        assert out.pending() == 0


async def test_filter_matches_anchor_ids_too() -> None:
    async with FakeBarrageGrab() as grab:
        source = _source(grab.url, douyin_room=ANCHOR_USER_ID, system_events=False)
        out = EventCollector()
        async with running(source, out):
            await asyncio.wait_for(source.wait_connected(), 5)
            await grab.push_example(1, version="2.7.6", WebRoomId="未知")
            assert (await out.next()).kind is EventKind.CHAT


async def test_room_key_from_the_message_when_no_room_configured() -> None:
    async with FakeBarrageGrab() as grab:
        source = _source(grab.url, room=None)
        out = EventCollector()
        async with running(source, out):
            await asyncio.wait_for(source.wait_connected(), 5)
            await grab.push_example(1)
            await grab.push_example(9, WebRoomId="未知", Owner=None)  # same broadcast: same key
            await grab.push_example(1, RoomId="7600", WebRoomId="777", Owner=None, MsgId=5)
            got = await out.take(3)
        assert [e.room for e in got] == [ANCHOR_USER_ID, ANCHOR_USER_ID, "777"]
        assert source.status.room == "*"
        assert all(e.kind is not EventKind.SYSTEM or e.event == "live_end" for e in got)  # no source_up
