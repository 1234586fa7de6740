"""bot.sources.bilibili_wire and bilibili_proto: the spec's hex fixtures, framing, errors, cmd → Event."""

from __future__ import annotations

import base64
import json
import zlib

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import ProtocolError
from bot.events import EventKind
from bot.privacy import ViewerHasher
from bot.sources import bilibili_proto as proto
from bot.sources.bilibili_wire import (
    COMMAND_HANDLERS,
    HEADER_LEN,
    AuthReply,
    Command,
    HeartbeatReply,
    Op,
    Packet,
    PacketDecoder,
    ProtoVer,
    command_to_events,
    commands_to_events,
    decode_benchmark,
    decode_frame,
    encode_auth,
    encode_business_frame,
    encode_heartbeat,
    encode_packet,
    parse_packet,
    unpack_header,
    wbi_mixin_key,
    wbi_sign,
)
from tests.fakes import bilibili as fake

HASHER = ViewerHasher.for_tests()
RECEIVED = 1_767_225_700_000
PLAIN_HEX = (
    "0000003f001000000000000500000000"
    "7b22636d64223a224f4e4c494e455f52414e4b5f434f554e54222c2264617461223a7b22636f756e74223a34327d7d"
)
ONLINE_42 = Command("ONLINE_RANK_COUNT", {"cmd": "ONLINE_RANK_COUNT", "data": {"count": 42}})


def events_of(*objs, store_names=False):
    commands = [Command(obj["cmd"].split(":")[0], obj) for obj in objs]
    return commands_to_events(
        commands, room="r1", hasher=HASHER, received_ts=RECEIVED, store_names=store_names
    )


def only_event(obj, **kwargs):
    events, unknown = events_of(obj, **kwargs)
    assert unknown == []
    assert len(events) == 1, events
    return events[0]


# --- the verified hex fixtures of bilibili.md §8 ----------------------------------------------------


def test_auth_packet_matches_spec_bytes():
    expected = bytes.fromhex(
        "00000064001000010000000700000001"
        "7b22756964223a302c22726f6f6d6964223a313031372c2270726f746f766572223a332c22706c6174666f726d223a"
        "22776562222c2274797065223a322c226275766964223a22222c226b6579223a22746b227d"
    )
    assert encode_auth(1017, token="tk") == expected
    assert len(expected) == 100


def test_auth_without_token_omits_key():
    body = json.loads(encode_auth(1017, uid=5, buvid="b")[HEADER_LEN:])
    assert body == {"uid": 5, "roomid": 1017, "protover": 3, "platform": "web", "type": 2, "buvid": "b"}


def test_heartbeat_packets_match_spec_bytes():
    assert encode_heartbeat() == bytes.fromhex("000000120010000100000002000000017b7d")
    assert encode_heartbeat(b"") == bytes.fromhex("00000010001000010000000200000001")


def test_auth_reply_fixture():
    frame = decode_frame(bytes.fromhex("0000001a0010000100000008000000017b22636f6465223a307d"))
    assert frame.errors == []
    assert frame.messages == [AuthReply(0)]
    assert frame.messages[0].ok


def test_heartbeat_reply_fixture_with_echo_quirk():
    # 22 bytes on the wire, pack_len says 20: the trailing "{}" echo must be ignored, not reported.
    frame = decode_frame(bytes.fromhex("00000014001000010000000300000000000000017b7d"))
    assert frame.errors == []
    assert frame.messages == [HeartbeatReply(1)]


def test_plain_business_packet_fixture():
    frame = decode_frame(bytes.fromhex(PLAIN_HEX))
    assert frame.errors == []
    assert frame.messages == [ONLINE_42]


def test_zlib_frame_fixture():
    data = bytes.fromhex(
        "00000051001000020000000500000000"
        "789c636060b06710600001561051ad949c9ba264a5e4efe7e3e9e71a1fe4e8e71defec1fea17a2a4a3"
        "94925892a8640554915f9a57a2646562545b0b0065280ec4"
    )
    assert len(data) == 81
    frame = decode_frame(data)
    assert frame.errors == []
    assert frame.messages == [ONLINE_42]


def test_brotli_frame_fixture():
    data = bytes.fromhex("000000530010000300000005000000000b1f80" + PLAIN_HEX + "03")
    assert len(data) == 83
    frame = decode_frame(data)
    assert frame.errors == []
    assert frame.messages == [ONLINE_42]


def test_encode_business_frame_follows_the_recipe():
    body = b'{"cmd":"ONLINE_RANK_COUNT","data":{"count":42}}'
    assert encode_business_frame([body], compression=ProtoVer.NORMAL).hex() == PLAIN_HEX
    assert encode_business_frame([body], compression=ProtoVer.DEFLATE) == encode_packet(
        5, zlib.compress(bytes.fromhex(PLAIN_HEX)), ver=2, seq=0
    )
    for compression in ProtoVer.NORMAL, ProtoVer.DEFLATE, ProtoVer.BROTLI:
        assert decode_frame(encode_business_frame([body, body], compression=compression)).messages == [
            ONLINE_42,
            ONLINE_42,
        ]


# --- frames with several packets --------------------------------------------------------------------


@pytest.mark.parametrize("build", [fake.plain_frame, fake.zlib_frame, fake.brotli_frame])
def test_multi_packet_frames_keep_order(build):
    objs = [fake.online_rank_count(1), fake.danmu("一", id_str="a"), fake.watched_change(3)]
    frame = decode_frame(build(*objs))
    assert frame.errors == []
    assert [m.cmd for m in frame.messages] == ["ONLINE_RANK_COUNT", "DANMU_MSG", "WATCHED_CHANGE"]
    assert [dict(m.body) for m in frame.messages] == objs


def test_several_compressed_packets_in_one_frame():
    data = fake.zlib_frame(fake.online_rank_count(1)) + fake.brotli_frame(
        fake.online_rank_count(2), fake.live()
    )
    frame = decode_frame(data)
    assert [m.cmd for m in frame.messages] == ["ONLINE_RANK_COUNT", "ONLINE_RANK_COUNT", "LIVE"]


def test_cmd_suffix_is_stripped():
    frame = decode_frame(fake.packet(5, b'{"cmd":"DANMU_MSG:4:0:2:2:2:0","info":[]}'))
    assert frame.messages[0].cmd == "DANMU_MSG"


def test_empty_business_body_is_skipped():
    assert decode_frame(fake.packet(5, b"") + bytes.fromhex(PLAIN_HEX)).messages == [ONLINE_42]


# --- malformed input: ProtocolError only, and only the bad part is lost ----------------------------


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("truncated_header", "truncated header"),
        ("lying_length", "runs past"),
        ("short_length", "shorter than header_len"),
        ("bad_zlib", "bad zlib"),
        ("truncated_zlib", "truncated zlib"),
        ("bad_brotli", "bad brotli"),
        ("non_json", "not JSON"),
        ("not_an_object", "not an object"),
        ("no_cmd", "no cmd"),
        ("unknown_op", "unknown op 99"),
        ("unknown_ver", "unknown protocol version 7"),
    ],
)
def test_malformed_frames_report_protocol_errors(name, match):
    frame = decode_frame(fake.MALFORMED[name])
    assert frame.messages == []
    assert len(frame.errors) == 1
    with pytest.raises(ProtocolError, match=match):
        raise frame.errors[0]


@pytest.mark.parametrize("name", ["bad_zlib", "bad_brotli", "non_json", "no_cmd"])
def test_a_bad_packet_costs_only_itself(name):
    data = bytes.fromhex(PLAIN_HEX) + fake.MALFORMED[name] + bytes.fromhex(PLAIN_HEX)
    frame = decode_frame(data)
    assert frame.messages == [ONLINE_42, ONLINE_42]
    assert len(frame.errors) == 1


def test_framing_error_keeps_what_came_before():
    frame = decode_frame(bytes.fromhex(PLAIN_HEX) + fake.MALFORMED["lying_length"])
    assert frame.messages == [ONLINE_42]
    assert len(frame.errors) == 1


def test_bad_packet_inside_a_compressed_body():
    inner = bytes.fromhex(PLAIN_HEX) + fake.packet(5, b"{oops")
    frame = decode_frame(fake.packet(5, brotli.compress(inner), ver=3))
    assert frame.messages == [ONLINE_42]
    assert "not JSON" in str(frame.errors[0])


def test_nested_compression_is_bounded():
    data = bytes.fromhex(PLAIN_HEX)
    for _ in range(3):
        data = fake.packet(5, zlib.compress(data), ver=2)
    frame = decode_frame(data)
    assert frame.messages == []
    assert "nested" in str(frame.errors[0])


def test_compressed_body_on_a_non_business_op_is_an_error():
    frame = decode_frame(fake.packet(8, zlib.compress(b'{"code":0}'), ver=2))
    assert "compressed body" in str(frame.errors[0])


def test_zlib_bomb_is_refused(monkeypatch):
    from bot.sources import bilibili_wire

    monkeypatch.setattr(bilibili_wire, "MAX_INFLATED_LEN", 1000)
    for ver, compress in ((2, zlib.compress), (3, brotli.compress)):
        frame = decode_frame(fake.packet(5, compress(b"\0" * 100_000), ver=ver))
        assert "inflates past" in str(frame.errors[0])


def test_parse_rejects_client_ops_and_bad_replies():
    with pytest.raises(ProtocolError, match="client to server"):
        parse_packet(Packet(Op.AUTH, 1, 1, b"{}"))
    with pytest.raises(ProtocolError, match="need 4"):
        parse_packet(Packet(Op.HEARTBEAT_REPLY, 1, 0, b"\0\0"))
    with pytest.raises(ProtocolError, match="no integer code"):
        parse_packet(Packet(Op.AUTH_REPLY, 1, 1, b'{"code":"0"}'))
    assert parse_packet(Packet(Op.AUTH_REPLY, 1, 1, b'{"code":-101}')) == AuthReply(-101)


def test_unpack_header_limits():
    with pytest.raises(ProtocolError, match="exceeds"):
        unpack_header(fake.HEADER.pack(1 << 30, 16, 0, 5, 0))
    with pytest.raises(ProtocolError, match="header_len 8"):
        unpack_header(fake.HEADER.pack(16, 8, 0, 5, 0))


# --- the stream decoder ------------------------------------------------------------------------------


def test_stream_decoder_across_chunks_and_flush():
    stream = bytes.fromhex(PLAIN_HEX) + fake.brotli_frame(fake.online_rank_count(7))
    decoder = PacketDecoder()
    assert decoder.feed(stream[:10]) == []
    first = decoder.feed(stream[10:70])
    assert [parse_packet(p) for p in first] == [ONLINE_42]
    rest = decoder.feed(stream[70:])
    assert parse_packet(rest[0]).body["data"]["count"] == 7
    decoder.flush()


def test_stream_decoder_flush_reports_truncation_and_then_refuses_input():
    decoder = PacketDecoder()
    decoder.feed(bytes.fromhex(PLAIN_HEX)[:-1])
    assert decoder.buffered == 62
    with pytest.raises(ProtocolError, match="1?62 bytes left over"):
        decoder.flush()
    with pytest.raises(ProtocolError, match="unusable"):
        decoder.feed(b"")


def test_stream_decoder_raises_on_bad_compressed_packet():
    with pytest.raises(ProtocolError, match="bad zlib"):
        PacketDecoder().feed(fake.MALFORMED["bad_zlib"])


_LEAF_PACKETS = st.builds(
    Packet,
    op=st.sampled_from([Op.HEARTBEAT, Op.HEARTBEAT_REPLY, Op.SEND_MSG_REPLY, Op.AUTH, Op.AUTH_REPLY]),
    ver=st.sampled_from([ProtoVer.NORMAL, ProtoVer.HEARTBEAT]),
    seq=st.integers(0, 2**32 - 1),
    body=st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None)
@given(_LEAF_PACKETS)
def test_pack_unpack_round_trip(packet):
    decoder = PacketDecoder()
    assert decoder.feed(packet.encode()) == [packet]
    decoder.flush()


@st.composite
def _streams(draw):
    """Leaf packets, some grouped into zlib / brotli packets: (stream bytes, leaves it must decode to)."""
    groups = draw(st.lists(st.lists(_LEAF_PACKETS, min_size=1, max_size=4), min_size=1, max_size=5))
    stream = b""
    leaves = []
    for group in groups:
        plain = b"".join(p.encode() for p in group)
        how = draw(st.sampled_from(["plain", "zlib", "brotli"]))
        if how == "plain":
            stream += plain
        elif how == "zlib":
            stream += encode_packet(Op.SEND_MSG_REPLY, zlib.compress(plain), ver=ProtoVer.DEFLATE, seq=0)
        else:
            stream += encode_packet(
                Op.SEND_MSG_REPLY, brotli.compress(plain, quality=1), ver=ProtoVer.BROTLI, seq=0
            )
        leaves += group
    return stream, leaves


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_streams(), st.data())
def test_any_chunking_gives_the_same_packets(stream_and_leaves, data):
    stream, leaves = stream_and_leaves
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = PacketDecoder()
    got = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[start:cut])
        start = cut
    decoder.flush()
    assert got == leaves


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 50))
def test_random_bytes_raise_only_protocol_error(junk, chunk):
    decoder = PacketDecoder()
    try:
        for i in range(0, len(junk), chunk):
            for packet in decoder.feed(junk[i : i + chunk]):
                try:
                    parse_packet(packet)
                except ProtocolError:
                    pass
        decoder.flush()
    except ProtocolError:
        pass
    frame = decode_frame(junk)  # never raises
    assert all(isinstance(e, ProtocolError) for e in frame.errors)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_after_a_valid_header_raise_only_protocol_error(body):
    for ver in (0, 2, 3):
        frame = decode_frame(encode_packet(Op.SEND_MSG_REPLY, body, ver=ver, seq=0))
        assert all(isinstance(e, ProtocolError) for e in frame.errors)
        assert all(isinstance(m, Command) for m in frame.messages)


# --- protobuf ---------------------------------------------------------------------------------------


def test_protobuf_reads_the_spec_interact_word_v2_sample():
    message = proto.Message.parse(base64.b64decode(fake.INTERACT_WORD_V2_SPEC_PB))
    assert message.int_field(1) == 12345678
    assert message.str_field(2) == "示例观众小林"
    assert (message.int_field(5), message.int_field(6), message.int_field(7)) == (1, 1017, 1767225604)
    assert message.submessage(22).submessage(2).str_field(2) == "https://example.invalid/face/12345678.jpg"
    assert message.int_field(99) == 0 and message.str_field(99) == "" and not message.has(99)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 10, "longer than 10 bytes"),
        (b"\x12\x05ab", "says 5 bytes"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x00\x01", "invalid field number 0"),
        (b"\x0d\x01\x02", "truncated fixed"),
    ],
)
def test_protobuf_errors(data, match):
    with pytest.raises(ProtocolError, match=match):
        proto.parse_message(data)


def test_protobuf_type_mismatches_are_protocol_errors():
    message = proto.Message.parse(proto.encode_message({1: 5, 2: "x", 3: b"\xff\xfe"}))
    with pytest.raises(ProtocolError, match="expected a string"):
        message.str_field(1)
    with pytest.raises(ProtocolError, match="expected an integer"):
        message.int_field(2)
    with pytest.raises(ProtocolError, match="not UTF-8"):
        message.str_field(3)
    with pytest.raises(ProtocolError, match="expected a message"):
        message.submessages(1)
    assert message.text_or_int(1) == "5" and message.text_or_int(2) == "x"


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.integers(1, 2000),
        st.one_of(
            st.integers(0, 2**64 - 1), st.text(max_size=20), st.lists(st.integers(0, 2**40), max_size=3)
        ),
        max_size=6,
    )
)
def test_protobuf_round_trip(fields):
    message = proto.Message.parse(proto.encode_message(fields))
    for number, value in fields.items():
        if isinstance(value, int):
            assert message.int_field(number) == value
        elif isinstance(value, str):
            assert message.str_field(number) == value
        else:
            assert list(message.fields.get(number, [])) == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100))
def test_protobuf_random_bytes_raise_only_protocol_error(data):
    try:
        message = proto.Message.parse(data)
        for number in message.fields:
            for getter in (message.int_field, message.str_field, message.submessage, message.submessages):
                try:
                    getter(number)
                except ProtocolError:
                    pass
    except ProtocolError:
        pass


# --- WBI signing (bilibili.md §6 worked example) -----------------------------------------------------


def test_wbi_worked_example():
    mixin = wbi_mixin_key(fake.WBI_IMG_URL, fake.WBI_SUB_URL)
    assert mixin == "ea1db124af3c7062474693fa704f4ff8"
    signed = wbi_sign({"id": 1017, "type": 0}, mixin, wts=1700000000)
    assert signed == {
        "id": "1017",
        "type": "0",
        "wts": "1700000000",
        "w_rid": "2b49aaafd2d3b051e529b4cc89bff3ec",
    }
    assert fake.wbi_signature_ok(signed)


def test_wbi_strips_reserved_characters_and_sorts():
    mixin = "m" * 32
    assert (
        wbi_sign({"b": "x!'()*y", "a": "1"}, mixin, 1)["w_rid"]
        == wbi_sign({"a": "1", "b": "xy"}, mixin, 1)["w_rid"]
    )


def test_wbi_rejects_short_key_material():
    with pytest.raises(ProtocolError, match="WBI key material"):
        wbi_mixin_key("https://x/a.png", "https://x/b.png")


# --- cmd → Event --------------------------------------------------------------------------------------


def test_danmu_msg_from_the_spec():
    event = only_event(fake.DANMU_MSG_SPEC)
    assert event.kind is EventKind.CHAT
    assert event.platform == "bilibili" and event.room == "r1"
    assert event.text == "这个链接多少钱？"
    assert event.msg_id == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert event.ts == 1767225600123 and event.received_ts == RECEIVED
    assert event.user_id == HASHER("bilibili", 12345678)
    assert event.user_name is None


def test_danmu_msg_names_only_when_configured():
    assert only_event(fake.DANMU_MSG_SPEC, store_names=True).user_name == "示例观众小林"


def test_danmu_msg_with_suffix_and_without_id():
    msg = fake.danmu("多少钱", id_str=None)
    msg["cmd"] = "DANMU_MSG:4:0:2:2:2:0"
    event = only_event(msg)
    assert event.msg_id is None and event.text == "多少钱"


def test_danmu_msg_anonymous_sender_is_keyed_by_crc():
    event = only_event(fake.danmu("有人吗", id_str="x", uid=0))
    assert event.user_id == HASHER("bilibili", "crc32:9f8e7d6c")


def test_danmu_msg_falls_back_to_seconds_then_receive_time():
    msg = fake.danmu("a", id_str="x", ts_ms=0)
    assert only_event(msg).ts == 1767225600_000
    msg["info"][9] = None
    assert only_event(msg).ts == RECEIVED


def test_send_gift_value_in_yuan():
    event = only_event(fake.send_gift(tid="t1", num=3, price=1000))
    assert event.kind is EventKind.GIFT
    assert (event.gift_name, event.count, event.value) == ("小花花", 3, 3.0)
    assert event.msg_id == "gift:t1"
    assert event.ts == 1767225601_000
    assert event.user_id == HASHER("bilibili", 222)


def test_silver_gift_is_worth_nothing():
    assert only_event(fake.send_gift(tid="t2", num=5, coin_type="silver")).value == 0.0


def test_send_gift_v2_one_event_per_item():
    msg = fake.send_gift_v2(
        {"gift_name": "小花花", "num": 2, "price": 100, "tid": "tx1"},
        {"gift_name": "辣条", "num": 1, "price": 0, "coin_type": "silver", "tid": "tx2"},
    )
    events, unknown = events_of(msg, store_names=True)
    assert unknown == []
    assert [(e.gift_name, e.count, e.value, e.msg_id) for e in events] == [
        ("小花花", 2, 0.2, "gift:tx1"),
        ("辣条", 1, 0.0, "gift:tx2"),
    ]
    assert {e.user_id for e in events} == {HASHER("bilibili", 666)}
    assert events[0].user_name == "新版送礼"
    assert events[0].ts == 1767225606_000


def test_send_gift_v2_bad_protobuf_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="SEND_GIFT_V2: .*protobuf"):
        events_of({"cmd": "SEND_GIFT_V2", "data": {"pb": base64.b64encode(b"\x52\x09abc").decode()}})
    with pytest.raises(ProtocolError, match="not base64"):
        events_of({"cmd": "SEND_GIFT_V2", "data": {"pb": "%%%"}})


def test_guard_buy():
    event = only_event(fake.guard_buy(num=2))
    assert (event.kind, event.gift_name, event.count, event.value) == (EventKind.GIFT, "舰长", 2, 396.0)


def test_super_chat_is_a_gift_with_text():
    event = only_event(fake.super_chat(price=30, message="主播这件有S码吗"))
    assert event.kind is EventKind.GIFT
    assert (event.value, event.text, event.gift_name, event.msg_id) == (
        30.0,
        "主播这件有S码吗",
        "醒目留言",
        "sc:9001",
    )


@pytest.mark.parametrize(
    ("msg_type", "kind"),
    [(1, EventKind.ENTER), (2, EventKind.FOLLOW), (3, EventKind.SHARE), (5, EventKind.FOLLOW)],
)
def test_interact_word(msg_type, kind):
    event = only_event(fake.interact_word(msg_type))
    assert event.kind is kind
    assert event.ts == 1767225605_000
    assert event.user_id == HASHER("bilibili", 555)


def test_interact_word_like_is_left_to_like_info():
    assert events_of(fake.interact_word(6)) == ([], [])


def test_interact_word_v2_spec_sample():
    event = only_event(fake.interact_word_v2(), store_names=True)
    assert event.kind is EventKind.ENTER
    assert event.ts == 1767225604_000
    assert event.user_id == HASHER("bilibili", 12345678)
    assert event.user_name == "示例观众小林"


def test_like_and_stats():
    like = only_event(fake.like_click())
    assert like.kind is EventKind.LIKE and like.ts == RECEIVED and like.text == ""
    assert only_event(fake.watched_change(17000)).stats == {"viewers_total": 17000}
    assert only_event(fake.online_rank_count(42)).stats == {"online": 42}
    assert only_event(fake.like_update(9999)).stats == {"likes_total": 9999}


def test_live_and_preparing():
    start = only_event(fake.live("k1"))
    assert (start.kind, start.event, start.msg_id, start.ts) == (
        EventKind.SYSTEM,
        "live_start",
        "live:k1",
        1767225500_000,
    )
    end = only_event(fake.preparing())
    assert (end.kind, end.event, end.ts) == (EventKind.SYSTEM, "live_end", 1767229200123)


def test_unknown_commands_are_returned_per_occurrence_and_ignored_ones_are_not():
    objs = [{"cmd": "STOP_LIVE_ROOM_LIST"}, {"cmd": "DANMU_MSG_MIRROR"}, {"cmd": "STOP_LIVE_ROOM_LIST"}]
    assert events_of(*objs) == ([], ["STOP_LIVE_ROOM_LIST", "STOP_LIVE_ROOM_LIST"])
    assert command_to_events(Command("NOPE", {}), room="r", hasher=HASHER, received_ts=0) is None


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"cmd": "DANMU_MSG", "info": "x"}, r"DANMU_MSG: missing info\[0\]"),
        ({"cmd": "DANMU_MSG", "info": [[], 5, [1]]}, r"info\[1\]: expected a string"),
        ({"cmd": "SEND_GIFT", "data": {"uid": "abc", "giftName": "x"}}, "data.uid: expected an integer"),
        ({"cmd": "SEND_GIFT", "data": {"uid": True, "giftName": "x"}}, "boolean"),
        ({"cmd": "GUARD_BUY", "data": {"uid": 1}}, "missing data.price"),
        ({"cmd": "SUPER_CHAT_MESSAGE", "data": {"uid": 1, "price": "lots"}}, "data.price: expected a number"),
        ({"cmd": "WATCHED_CHANGE", "data": {}}, "missing data.num"),
        ({"cmd": "INTERACT_WORD", "data": {"uid": 1}}, "missing data.msg_type"),
    ],
)
def test_malformed_payloads_name_the_field(obj, match):
    with pytest.raises(ProtocolError, match=match):
        events_of(obj)


def test_malformed_payload_is_skipped_when_collecting_errors():
    commands = [Command("GUARD_BUY", {"data": {}}), ONLINE_42]
    errors: list[ProtocolError] = []
    events, unknown = commands_to_events(commands, room="r", hasher=HASHER, received_ts=1, errors=errors)
    assert [e.stats for e in events] == [{"online": 42}]
    assert len(errors) == 1 and errors[0].key == "data.price"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=8,
)
_PAYLOAD_KEYS = ["data", "info", "uid", "num", "price", "pb", "giftName", "msg_type", "count", "live_key"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(COMMAND_HANDLERS)),
    st.dictionaries(st.sampled_from(_PAYLOAD_KEYS), _JSON, max_size=4),
    st.dictionaries(st.sampled_from(_PAYLOAD_KEYS), _JSON, max_size=6),
)
def test_any_payload_shape_raises_only_protocol_error(cmd, top, data):
    body = {**top, "cmd": cmd}
    if data:
        body["data"] = data
    try:
        events_of(body)
    except ProtocolError:
        pass


def test_decode_benchmark_reports_a_rate():
    assert decode_benchmark(120) > 0
    with pytest.raises(ValueError, match="positive"):
        decode_benchmark(0)
