"""Hostile input for the wire parsers: compression bombs, lying lengths, deep nesting, huge messages.

The random-bytes, round-trip and payload-shape fuzzing of each parser lives beside its unit tests
(tests/bot/sources/test_bilibili_wire.py, test_douyin_push.py, test_generic_json.py). Here each
parser meets the inputs meant to exhaust it; it must answer with ProtocolError (or its documented
error list), finish, and stay within a memory bound.
"""

from __future__ import annotations

import json
import zlib

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.errors import ProtocolError
from bot.events import Event
from bot.privacy import ViewerHasher
from bot.sources import bilibili_wire as wire
from bot.sources.bilibili_wire import Op, PacketDecoder, ProtoVer, commands_to_events, decode_frame, encode_packet
from bot.sources.douyin_push import HANDLERS, decode_push, parse_envelope
from bot.sources.generic_json import parse_message
from tests.fuzz.bounds import bounded

HASHER = ViewerHasher.for_tests()
NOW = 1_767_268_800_000
DEEP = "[" * 200_000 + "]" * 200_000


def _frame_errors(data: bytes) -> list[ProtocolError]:
    frame = decode_frame(data)
    assert all(isinstance(e, ProtocolError) for e in frame.errors)
    return list(frame.errors)


# --- Bilibili ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ver", [ProtoVer.DEFLATE, ProtoVer.BROTLI])
def test_compression_bomb_at_the_real_limit(ver: int) -> None:
    zeros = b"\0" * (wire.MAX_INFLATED_LEN * 4)  # inflates to 4× the limit
    body = zlib.compress(zeros, 9) if ver == ProtoVer.DEFLATE else brotli.compress(zeros, quality=5)
    del zeros
    packet = encode_packet(Op.SEND_MSG_REPLY, body, ver=ver, seq=0)
    errors = bounded(lambda: _frame_errors(packet), mb=3 * wire.MAX_INFLATED_LEN / 2**20)
    assert errors and "inflates past" in str(errors[0])


def test_nested_compression_is_refused() -> None:
    inner = encode_packet(Op.SEND_MSG_REPLY, b'{"cmd":"X"}', ver=ProtoVer.NORMAL, seq=0)
    for _ in range(wire.MAX_NESTING + 3):
        inner = encode_packet(Op.SEND_MSG_REPLY, zlib.compress(inner), ver=ProtoVer.DEFLATE, seq=0)
    errors = bounded(lambda: _frame_errors(inner))
    assert any("nested" in str(e) for e in errors)


def test_a_lying_length_is_refused_before_buffering() -> None:
    header = wire.HEADER.pack(2**32 - 1, wire.HEADER_LEN, 0, Op.SEND_MSG_REPLY, 0)
    decoder = PacketDecoder()
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(header + b"x" * 100)


def test_max_size_packets_stream_through_a_bounded_buffer() -> None:
    body = json.dumps({"cmd": "ONLINE_RANK_COUNT", "data": {"count": 1}, "pad": "x" * (wire.MAX_PACKET_LEN - 200)})
    packet = encode_packet(Op.SEND_MSG_REPLY, body.encode(), ver=ProtoVer.NORMAL, seq=0)
    assert len(packet) <= wire.MAX_PACKET_LEN

    def stream() -> int:
        decoder = PacketDecoder()
        seen = 0
        for _ in range(8):  # 8 × 4 MiB in 64 KiB chunks: the buffer never holds more than one packet
            for i in range(0, len(packet), 65536):
                seen += len(decoder.feed(packet[i : i + 65536]))
                assert decoder.buffered <= wire.MAX_PACKET_LEN
        decoder.flush()
        return seen

    assert bounded(stream, mb=48) == 8


def test_deeply_nested_json_body_is_a_protocol_error() -> None:
    packet = encode_packet(Op.SEND_MSG_REPLY, DEEP.encode(), ver=ProtoVer.NORMAL, seq=0)
    errors = bounded(lambda: _frame_errors(packet))
    assert errors and "not JSON" in str(errors[0])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(
        st.fixed_dictionaries({"cmd": st.sampled_from(sorted(wire.COMMAND_HANDLERS)), "data": _JSON}),
        min_size=1, max_size=5,
    ),
    how=st.sampled_from(["plain", "zlib", "brotli"]),
    cut=st.integers(0, 64),
)
def test_random_commands_through_framing_decoding_and_mapping(bodies: list[dict], how: str, cut: int) -> None:
    # Frame → decoder (split at an arbitrary point) → commands → Events, the path a socket takes.
    leaves = b"".join(encode_packet(Op.SEND_MSG_REPLY, json.dumps(b).encode(), ver=0, seq=0) for b in bodies)
    if how == "zlib":
        stream = encode_packet(Op.SEND_MSG_REPLY, zlib.compress(leaves), ver=ProtoVer.DEFLATE, seq=0)
    elif how == "brotli":
        stream = encode_packet(Op.SEND_MSG_REPLY, brotli.compress(leaves, quality=1), ver=ProtoVer.BROTLI, seq=0)
    else:
        stream = leaves
    decoder = PacketDecoder()
    packets = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
    decoder.flush()
    commands = []
    for packet in packets:
        message = wire.parse_packet(packet)
        assert isinstance(message, wire.Command)
        commands.append(message)
    errors: list[ProtocolError] = []
    events, unknown = commands_to_events(commands, room="r", hasher=HASHER, received_ts=NOW, errors=errors)
    assert all(isinstance(e, Event) for e in events)
    assert not unknown
    assert all(isinstance(e, ProtocolError) for e in errors)


# --- DouyinBarrageGrab -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        DEEP,
        json.dumps({"Type": 1, "Data": DEEP}),
        json.dumps({"Type": 1, "Data": json.dumps({"Content": "x" * 5_000_000})}),
        '{"Type": 1, "Data": "' + "\\\\" * 1_000_000 + '"}',
        "\ud800",
    ],
    ids=["deep envelope", "deep Data", "huge Content", "escaped junk Data", "lone surrogate"],
)
def test_barragegrab_hostile_envelopes(raw: str) -> None:
    def decode() -> None:
        try:
            message = parse_envelope(raw)
        except ProtocolError:
            return
        if message.type in HANDLERS:
            try:
                decode_push(message, room="r", hasher=HASHER, received_ts=NOW, store_names=True)
            except ProtocolError:
                pass

    bounded(decode, mb=128)


# --- generic JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        DEEP,
        "[" + ",".join(['{"platform":"x","room":"r","kind":"chat","ts":1,"text":"hi"}'] * 20_000) + "]",
        json.dumps({"platform": "x", "room": "r", "kind": "chat", "ts": 1, "text": "长" * 2_000_000}),
        b"\xff\xfe" + "not utf-8".encode("utf-16-le"),
        json.dumps({"platform": "x", "room": "r", "kind": "stats", "ts": 1, "stats": {"online": 10**400}}),
    ],
    ids=["deep", "big batch", "huge text", "utf-16 bytes", "huge integer"],
)
def test_generic_json_hostile_messages(data: str | bytes) -> None:
    events, errors = bounded(lambda: parse_message(data, hasher=HASHER, received_ts=NOW), mb=256)
    assert all(isinstance(e, Event) for e in events)
    assert all(isinstance(i, int) and isinstance(r, str) for i, r in errors)
    assert events or errors
