"""Frames the gateway sends (docs/protocol.md), built as ready-to-write bytes (pure).

Each is an unmasked, final RFC 6455 text frame, header included, so the fan-out path writes
one pre-built object to every subscriber; a delivery frame is assembled once per message
(:func:`message_frame_from`).
"""

from __future__ import annotations

import struct
from typing import Final

import orjson

from notify_wire.codes import ErrorCode
from notify_wire.frames import Ref

__all__ = [
    "binary_frame",
    "encode_frame",
    "error_frame",
    "gap_frame",
    "message_frame",
    "message_frame_from",
    "message_head",
    "reply_frame",
    "text_frame",
    "welcome_frame",
]

# First header byte of a complete (FIN set, unfragmented) data frame, by opcode.
_FIN_TEXT: Final = 0x80 | 0x1
_FIN_BINARY: Final = 0x80 | 0x2


def _data_frame(first_byte: int, payload: bytes) -> bytes:
    """Prefix ``payload`` with an unmasked RFC 6455 header (servers never mask)."""
    length = len(payload)
    if length < 126:
        return bytes((first_byte, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", first_byte, 126, length) + payload
    return struct.pack("!BBQ", first_byte, 127, length) + payload


def text_frame(payload: bytes) -> bytes:
    """Wrap ``payload`` (UTF-8, e.g. JSON) in an unmasked, final RFC 6455 text frame.

    The caller guarantees valid UTF-8: clients close with 1007 otherwise.
    """
    return _data_frame(_FIN_TEXT, payload)


def binary_frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an unmasked, final RFC 6455 binary frame."""
    return _data_frame(_FIN_BINARY, payload)


def encode_frame(obj: dict[str, object]) -> bytes:
    """Serialise a reply object and frame it."""
    return text_frame(orjson.dumps(obj))


def reply_frame(kind: str, ref: Ref, **fields: object) -> bytes:
    """A reply such as subscribed, unsubscribed or pong, echoing ``ref`` when given."""
    obj: dict[str, object] = {"type": kind, **fields}
    if ref is not None:
        obj["ref"] = ref
    return encode_frame(obj)


def error_frame(code: ErrorCode, message: str, ref: Ref = None) -> bytes:
    return reply_frame("error", ref, code=code.value, message=message)


def welcome_frame(user: str, conn: str, heartbeat_s: float) -> bytes:
    heartbeat: float | int = int(heartbeat_s) if heartbeat_s == int(heartbeat_s) else heartbeat_s
    return encode_frame({"type": "welcome", "user": user, "conn": conn, "heartbeat": heartbeat})


def gap_frame(channel: str) -> bytes:
    return encode_frame({"type": "gap", "channel": channel})


_MESSAGE_HEAD: Final = b'{"type":"message","channel":'
_MESSAGE_TAIL: Final = b"}"
# Headers of text frames: the 2-byte ones prebuilt (a list index beats building them).
_TEXT_HEADERS: Final = [bytes((_FIN_TEXT, length)) for length in range(126)]
# The 4-byte ones (16-bit lengths) as they are met: a message's length is seldom new.
_TEXT_HEADERS_16: dict[int, bytes] = {}
_TEXT_64: Final = bytes((_FIN_TEXT, 127))
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def message_head(channel_json: bytes) -> bytes:
    """The start of a channel's delivery frames, up to the ``data`` value (built once).

    ``channel_json`` is the channel already serialised as a JSON string.
    """
    return _MESSAGE_HEAD + channel_json + b',"data":'


def message_frame_from(
    head: bytes, payload: bytes, offset: int | None = None, epoch: str | None = None
) -> bytes:
    """The delivery frame for one Redis message, built once for all subscribers.

    ``head`` comes from :func:`message_head`. The payload is embedded verbatim when it
    is valid JSON, and as a JSON string otherwise (bytes that are not UTF-8 are replaced
    with U+FFFD). History messages also carry their ``offset`` and ``epoch``. This is the
    fan-out's per-message work, so the frame is assembled in one join.
    """
    try:
        _loads(payload)
    except _JSONDecodeError:
        payload = orjson.dumps(payload.decode("utf-8", "replace"))
    if offset is None:
        tail = _MESSAGE_TAIL
    else:
        tail = b',"offset":%d,"epoch":%b}' % (offset, orjson.dumps(epoch))
    length = len(head) + len(payload) + len(tail)
    if length < 126:
        return b"".join((_TEXT_HEADERS[length], head, payload, tail))
    if length < 65536:
        header = _TEXT_HEADERS_16.get(length)
        if header is None:
            header = _TEXT_HEADERS_16[length] = struct.pack("!BBH", _FIN_TEXT, 126, length)
        return b"".join((header, head, payload, tail))
    return b"".join((_TEXT_64, length.to_bytes(8, "big"), head, payload, tail))


def message_frame(
    channel_json: bytes, payload: bytes, offset: int | None = None, epoch: str | None = None
) -> bytes:
    """:func:`message_frame_from` for a channel whose head is not at hand."""
    return message_frame_from(message_head(channel_json), payload, offset, epoch)
