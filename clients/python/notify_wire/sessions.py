"""Stored sessions and session tokens: the one reading of both (pure).

A backend stores ``{prefix}{token}`` -> ``{"userId": ..., "channels": [globs], ...}`` with
an expiry; the gateway reads it with :func:`parse_session`, and the publisher library writes
what that reads. A token names a session in Redis and is a secret: it is checked against
:data:`TOKEN_RULE` before Redis is asked, and revocation names a session by its digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Final

import orjson

__all__ = [
    "MAX_SESSION_BYTES",
    "MAX_USER_ID_LENGTH",
    "TOKEN_RULE",
    "Session",
    "SessionError",
    "parse_session",
    "session_digest",
    "token_problem",
]

_TOKEN = re.compile(r"[A-Za-z0-9_.~+/=-]{8,512}")
#: :data:`_TOKEN` in words, for messages
TOKEN_RULE: Final = "8 to 512 characters from letters, digits and _ . ~ + / = -"
#: defaults of ``GATEWAY_MAX_SESSION_BYTES`` and ``GATEWAY_MAX_USER_ID_LENGTH``
MAX_SESSION_BYTES: Final = 16 * 1024
MAX_USER_ID_LENGTH: Final = 128


def session_digest(token: str) -> str:
    """The SHA-256 of a token, hex: how revocation names a session without revealing it."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_problem(token: str) -> str | None:
    """Why a token cannot be a session token (checked before asking Redis)."""
    if not _TOKEN.fullmatch(token):
        return "malformed_token"
    return None


class SessionError(ValueError):
    """The stored session value is unusable; ``reason`` is a short log-safe code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    channels: tuple[str, ...] = ()
    #: :func:`session_digest` of the token that opened it (empty until looked up)
    digest: str = ""
    #: the Redis key it was read from, to re-check it; holds the token, so never shown
    key: str = dataclasses.field(default="", repr=False)


def parse_session(
    raw: bytes,
    *,
    max_bytes: int = MAX_SESSION_BYTES,
    max_user_id_length: int = MAX_USER_ID_LENGTH,
) -> Session:
    """Decode a stored session: JSON with ``userId`` and optional ``channels`` globs.

    A value over ``max_bytes`` is refused before it is parsed, and a ``userId`` over
    ``max_user_id_length`` characters is refused: the user id goes into every log line of
    the connection and into its channel name.
    """
    if len(raw) > max_bytes:
        raise SessionError("session_too_large")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise SessionError("session_not_json") from None
    if not isinstance(obj, dict):
        raise SessionError("session_not_object")
    user = obj.get("userId")
    if isinstance(user, bool) or not isinstance(user, str | int) or user == "":
        raise SessionError("session_without_user")
    user_id = str(user)
    if len(user_id) > max_user_id_length:
        raise SessionError("user_id_too_long")
    channels = obj.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise SessionError("session_channels_not_list")
    return Session(user_id, tuple(channels))
