"""Client frames (docs/protocol.md): what a client may send, decoded into typed values.

:func:`parse_frame` turns one text frame into a :data:`ClientFrame` or a
:class:`FrameError` and never raises. What the gateway sends back is built in
``gateway.core.frames``; the frame names and fields are the same in the browser client.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import orjson

from notify_wire.codes import ErrorCode
from notify_wire.history import Position, position_problem

__all__ = [
    "MAX_REF_LENGTH",
    "Auth",
    "ClientFrame",
    "FrameError",
    "Ping",
    "Ref",
    "Subscribe",
    "Unsubscribe",
    "frame_ref",
    "parse_frame",
]

Ref = str | int | None

MAX_REF_LENGTH: Final = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Auth:
    token: str = dataclasses.field(repr=False)  # a secret: never in a repr or a log
    ref: Ref = None


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    ref: Ref
    since: Position | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str
    ref: Ref


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    ref: Ref


ClientFrame = Auth | Subscribe | Unsubscribe | Ping


@dataclasses.dataclass(frozen=True, slots=True)
class FrameError:
    """A client frame that cannot be acted on; becomes an error frame."""

    code: ErrorCode
    message: str
    ref: Ref = None


def _ref_of(obj: dict[str, object]) -> tuple[Ref, str | None]:
    ref = obj.get("ref")
    if ref is None:
        return None, None
    if isinstance(ref, bool) or not isinstance(ref, str | int):
        return None, "ref must be a string or an integer"
    if isinstance(ref, str) and len(ref) > MAX_REF_LENGTH:
        return None, f"ref is longer than {MAX_REF_LENGTH} characters"
    return ref, None


def frame_ref(data: str | bytes) -> Ref:
    """The ``ref`` of a client frame that is refused unread (rate limit), if it carries a
    valid one; never raises. Only refused frames pay for this parse."""
    if isinstance(data, bytes):
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return _ref_of(obj)[0] if isinstance(obj, dict) else None


def parse_frame(data: str | bytes) -> ClientFrame | FrameError:
    """Decode one client frame; never raises."""
    if isinstance(data, bytes):
        return FrameError(ErrorCode.BAD_REQUEST, "binary frames are not accepted: send JSON text")
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return FrameError(ErrorCode.BAD_REQUEST, "frame is not valid JSON")
    if not isinstance(obj, dict):
        return FrameError(ErrorCode.BAD_REQUEST, "frame must be a JSON object with a 'type'")
    ref, ref_problem = _ref_of(obj)
    if ref_problem is not None:
        return FrameError(ErrorCode.BAD_REQUEST, ref_problem)
    match obj.get("type"):
        case "subscribe":
            return _subscribe(obj, ref)
        case "unsubscribe":
            channel = obj.get("channel")
            if not isinstance(channel, str):
                return _missing("unsubscribe", "channel", ref)
            return Unsubscribe(channel, ref)
        case "ping":
            return Ping(ref)
        case "auth":
            token = obj.get("token")
            return Auth(token, ref) if isinstance(token, str) else _missing("auth", "token", ref)
        case str() as kind:
            shown = kind if len(kind) <= 32 else kind[:32] + "..."
            return FrameError(
                ErrorCode.BAD_REQUEST,
                f"unknown type {shown!r}: use subscribe, unsubscribe or ping",
                ref,
            )
        case _:
            return FrameError(ErrorCode.BAD_REQUEST, "frame needs a 'type' string", ref)


def _missing(kind: str, field: str, ref: Ref) -> FrameError:
    return FrameError(ErrorCode.BAD_REQUEST, f"{kind} needs a '{field}' string", ref)


def _subscribe(obj: dict[str, object], ref: Ref) -> Subscribe | FrameError:
    channel = obj.get("channel")
    if not isinstance(channel, str):
        return _missing("subscribe", "channel", ref)
    since = obj.get("since")
    if since is None:
        return Subscribe(channel, ref)
    problem = position_problem(since)
    if problem is not None:
        return FrameError(ErrorCode.BAD_REQUEST, problem, ref)
    assert isinstance(since, dict)  # position_problem said so
    return Subscribe(channel, ref, Position(since["offset"], since["epoch"]))
