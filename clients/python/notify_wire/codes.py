"""Close codes and error codes: the one table each that the gateway, the command line, the
browser client and docs/protocol.md follow (tests compare them; pure, no I/O).

:class:`CloseCode` is every WebSocket close code the gateway sends; :data:`CLOSE_CODES`
says for each what it means and whether a client should connect again
(:class:`Reconnect`). :class:`CloseReason` is every close the gateway makes: its code and
its reason text, so no call site writes a reason of its own. :class:`ErrorCode` is every
``code`` of an error frame (the connection stays open after those).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Final

__all__ = [
    "CLOSE_CODES",
    "ERROR_CODES",
    "CloseCode",
    "CloseCodeInfo",
    "CloseReason",
    "ErrorCode",
    "Reconnect",
]


class CloseCode(enum.IntEnum):
    """WebSocket close codes the gateway sends (RFC 6455 7.4, and 4000-4999 of its own)."""

    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    UNAUTHORIZED = 4001
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4029


class Reconnect(enum.StrEnum):
    """What a client should do after a close code."""

    #: connect again, after the reconnect backoff (docs/browser.md)
    RETRY = "retry"
    #: do not connect again with the same token: the session is bad, expired or revoked
    NEVER = "never"


@dataclasses.dataclass(frozen=True, slots=True)
class CloseCodeInfo:
    code: CloseCode
    #: one line for people: what the close means (the ``listen`` command prints it)
    meaning: str
    reconnect: Reconnect


CLOSE_CODES: Final[dict[int, CloseCodeInfo]] = {
    info.code: info
    for info in (
        CloseCodeInfo(
            CloseCode.GOING_AWAY, "the gateway is shutting down; reconnect", Reconnect.RETRY
        ),
        CloseCodeInfo(
            CloseCode.PROTOCOL_ERROR,
            "the client broke the WebSocket protocol (RFC 6455)",
            Reconnect.RETRY,
        ),
        CloseCodeInfo(
            CloseCode.INVALID_DATA, "a text message was not valid UTF-8", Reconnect.RETRY
        ),
        CloseCodeInfo(
            CloseCode.TOO_BIG,
            "a message was bigger than GATEWAY_MAX_FRAME_BYTES",
            Reconnect.RETRY,
        ),
        CloseCodeInfo(
            CloseCode.INTERNAL_ERROR,
            "keepalive ping timeout, or an internal error of the gateway; reconnect",
            Reconnect.RETRY,
        ),
        CloseCodeInfo(
            CloseCode.TRY_AGAIN_LATER,
            "the gateway cannot take the connection now (Redis unavailable, or at its "
            "connection limit); try again later",
            Reconnect.RETRY,
        ),
        CloseCodeInfo(
            CloseCode.UNAUTHORIZED,
            "session unknown, expired or revoked; do not retry with this token",
            Reconnect.NEVER,
        ),
        CloseCodeInfo(
            CloseCode.SLOW_CONSUMER,
            "this client read too slowly (slow consumer)",
            Reconnect.RETRY,
        ),
        CloseCodeInfo(
            CloseCode.RATE_LIMITED,
            "rate or connection limit reached; the reason says which",
            Reconnect.RETRY,
        ),
    )
}


class CloseReason(enum.Enum):
    """Every close the gateway makes, as ``(code, reason text)``.

    A text may hold ``{fields}``, filled by :meth:`text_with` (a text without fields is
    used as it is: it may hold braces). Close reasons are at most 123 bytes (RFC 6455
    5.5.1); a test checks each.
    """

    code: CloseCode
    text: str

    def __init__(self, code: CloseCode, text: str) -> None:
        self.code = code
        self.text = text

    def text_with(self, **fields: object) -> str:
        return self.text.format(**fields) if fields else self.text

    SHUTDOWN = (CloseCode.GOING_AWAY, "gateway shutting down")
    INVALID_UTF8 = (CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
    PING_TIMEOUT = (CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
    INTERNAL_ERROR = (CloseCode.INTERNAL_ERROR, "internal error")
    GATEWAY_FULL = (CloseCode.TRY_AGAIN_LATER, "gateway at its connection limit")
    REDIS_UNAVAILABLE = (CloseCode.TRY_AGAIN_LATER, "Redis unavailable; try again later")
    SESSION_STORE_UNAVAILABLE = (
        CloseCode.TRY_AGAIN_LATER,
        "session store unavailable; try again later",
    )
    AUTH_TIMEOUT = (
        CloseCode.UNAUTHORIZED,
        "unauthorized: no auth frame within the auth timeout",
    )
    FIRST_FRAME_NOT_AUTH = (
        CloseCode.UNAUTHORIZED,
        'unauthorized: the first frame must be {"type":"auth","token":...}',
    )
    BAD_AUTHORIZATION_HEADER = (
        CloseCode.UNAUTHORIZED,
        "unauthorized: send one 'Authorization: Bearer <token>' header",
    )
    BAD_SESSION = (CloseCode.UNAUTHORIZED, "unauthorized: unknown, expired or invalid session")
    SESSION_REVOKED = (CloseCode.UNAUTHORIZED, "session revoked")
    SESSION_EXPIRED = (CloseCode.UNAUTHORIZED, "session expired or deleted")
    SLOW_CONSUMER = (CloseCode.SLOW_CONSUMER, "slow consumer: outgoing buffer limit reached")
    MESSAGE_RATE = (CloseCode.RATE_LIMITED, "rate limit exceeded")
    FRAME_RATE = (
        CloseCode.RATE_LIMITED,
        "frame rate limit exceeded: more than {rate:g} frames per second",
    )
    USER_ATTEMPTS = (
        CloseCode.RATE_LIMITED,
        "too many connection attempts for this user; retry in a minute",
    )
    USER_CONNECTIONS = (CloseCode.RATE_LIMITED, "too many connections for this user")
    IP_ATTEMPTS = (
        CloseCode.RATE_LIMITED,
        "too many connection attempts from this address; retry in a minute",
    )


class ErrorCode(enum.StrEnum):
    """``code`` values of error frames; the connection stays open after each."""

    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


#: what each error code means (docs/protocol.md holds the same table; a test compares)
ERROR_CODES: Final[dict[ErrorCode, str]] = {
    ErrorCode.BAD_REQUEST: "the frame could not be understood; the message says why",
    ErrorCode.FORBIDDEN: "this session may not read that channel",
    ErrorCode.TOO_MANY_SUBSCRIPTIONS: "the connection holds GATEWAY_MAX_SUBSCRIPTIONS channels",
    ErrorCode.RATE_LIMITED: "more frames than GATEWAY_RATE_LIMIT per second; slow down",
    ErrorCode.UNAVAILABLE: "Redis could not subscribe the channel now; try again",
}
