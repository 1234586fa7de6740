"""Hand-decoded protobuf for the two Bilibili commands that carry one (`SEND_GIFT_V2`, `INTERACT_WORD_V2`).

The spec (../shared/protocols/bilibili.md §7) lists field numbers, not .proto files, and we need a handful
of fields, so a wire-format reader is smaller and safer than generated code: `parse_message` turns bytes
into `{field_number: [values]}` (varints and fixed ints as `int`, length-delimited fields as `bytes`), and
the typed getters below convert on access. Pure, no I/O, no logging; anything malformed raises
`ProtocolError` and nothing else.

`encode_message` is the inverse for tests and fake servers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.errors import ProtocolError

# Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_FIXED32 = 5
_MAX_VARINT_BYTES = 10
_MAX_FIELD_NUMBER = (1 << 29) - 1

Fields = Mapping[int, Sequence[int | bytes]]


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at `pos`; returns (value, next position)."""
    result = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise ProtocolError(f"protobuf: truncated varint at offset {pos}", key="protobuf")
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 1 << 64:
                raise ProtocolError(f"protobuf: varint at offset {pos} exceeds 64 bits", key="protobuf")
            return result, pos + i + 1
        shift += 7
    raise ProtocolError(f"protobuf: varint at offset {pos} is longer than 10 bytes", key="protobuf")


def parse_message(data: bytes) -> dict[int, list[int | bytes]]:
    """Split one protobuf message into its fields, in wire order; repeated fields keep every value."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    end = len(data)
    while pos < end:
        tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0 or number > _MAX_FIELD_NUMBER:
            raise ProtocolError(f"protobuf: invalid field number {number}", key="protobuf")
        value: int | bytes
        if wire_type == WIRE_VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == WIRE_LEN:
            size, pos = read_varint(data, pos)
            if size > end - pos:
                raise ProtocolError(
                    f"protobuf: field {number} says {size} bytes but {end - pos} remain", key="protobuf"
                )
            value = bytes(data[pos : pos + size])
            pos += size
        elif wire_type in (WIRE_FIXED64, WIRE_FIXED32):
            size = 8 if wire_type == WIRE_FIXED64 else 4
            if size > end - pos:
                raise ProtocolError(f"protobuf: truncated fixed field {number}", key="protobuf")
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
        else:
            # 3/4 are deprecated groups, 6/7 do not exist; none appear in Bilibili's messages.
            raise ProtocolError(
                f"protobuf: unsupported wire type {wire_type} (field {number})", key="protobuf"
            )
        fields.setdefault(number, []).append(value)
    return fields


@dataclass(frozen=True, slots=True)
class Message:
    """Typed read access to a parsed message; proto3 defaults (0, "", empty) for absent fields."""

    fields: Fields

    @classmethod
    def parse(cls, data: bytes) -> Message:
        return cls(parse_message(data))

    def _last(self, number: int) -> int | bytes | None:
        # Protobuf semantics: for a singular field the last occurrence wins.
        values = self.fields.get(number)
        return values[-1] if values else None

    def int_field(self, number: int) -> int:
        value = self._last(number)
        if value is None:
            return 0
        if isinstance(value, bytes):
            raise ProtocolError(
                f"protobuf: field {number} is length-delimited, expected an integer", key="protobuf"
            )
        return value

    def str_field(self, number: int) -> str:
        value = self._last(number)
        if value is None:
            return ""
        if not isinstance(value, bytes):
            raise ProtocolError(f"protobuf: field {number} is an integer, expected a string", key="protobuf")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"protobuf: field {number} is not UTF-8", key="protobuf") from exc

    def text_or_int(self, number: int) -> str:
        """A field that some producers send as a string and others as an integer (ids such as `tid`)."""
        value = self._last(number)
        if value is None:
            return ""
        if isinstance(value, int):
            return str(value)
        return self.str_field(number)

    def submessage(self, number: int) -> Message:
        value = self._last(number)
        if value is None:
            return Message({})
        if not isinstance(value, bytes):
            raise ProtocolError(f"protobuf: field {number} is an integer, expected a message", key="protobuf")
        return Message.parse(value)

    def submessages(self, number: int) -> list[Message]:
        out = []
        for value in self.fields.get(number, ()):
            if not isinstance(value, bytes):
                raise ProtocolError(
                    f"protobuf: field {number} is an integer, expected a message", key="protobuf"
                )
            out.append(Message.parse(value))
        return out

    def has(self, number: int) -> bool:
        return bool(self.fields.get(number))


# --- encoding (tests and fake servers) -------------------------------------------------------------

FieldValue = int | str | bytes | Mapping[int, "FieldValue"] | Sequence["FieldValue"]


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_message(fields: Mapping[int, FieldValue]) -> bytes:
    """Encode `{number: value}`; ints are varints, str/bytes/dicts are length-delimited, lists repeat."""
    out = bytearray()
    for number, value in fields.items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, bool) or isinstance(item, int):
                out += encode_varint(number << 3 | WIRE_VARINT) + encode_varint(int(item))
                continue
            if isinstance(item, str):
                payload = item.encode("utf-8")
            elif isinstance(item, bytes):
                payload = item
            elif isinstance(item, Mapping):
                payload = encode_message(item)
            else:
                raise TypeError(f"cannot encode {type(item).__name__} in field {number}")
            out += encode_varint(number << 3 | WIRE_LEN) + encode_varint(len(payload)) + payload
    return bytes(out)
