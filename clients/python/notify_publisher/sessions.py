"""Session records as the gateway reads them, and the checks on session inputs (pure).

A session is the JSON object ``{"userId": ..., "channels": [globs], **extra}`` stored
under ``{prefix}{token}`` with an expiry; :func:`notify_wire.sessions.parse_session` (what the
gateway reads it with) is the reader this module writes for.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from notify_wire.sessions import (
    MAX_SESSION_BYTES,
    MAX_USER_ID_LENGTH,
    TOKEN_RULE,
    SessionError,
    parse_session,
    token_problem,
)

__all__ = ["check_token", "check_ttl", "decode_session", "new_token", "session_record"]

_RESERVED = ("userId", "channels")


def new_token() -> str:
    """A fresh URL-safe session token: about 256 random bits, 43 characters.

    Never starts with ``-``, so it can be passed as a command-line argument as is.
    """
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def check_token(token: object) -> str:
    """``token`` if it could be a session token; else :class:`ValueError` or :class:`TypeError`."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if token_problem(token) is not None:
        raise ValueError(f"token is not a session token: {TOKEN_RULE}")
    return token


def check_ttl(ttl: object) -> int:
    """``ttl`` if it is a positive whole number of seconds; else :class:`ValueError`."""
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise ValueError(f"ttl must be a positive whole number of seconds, not {ttl!r}")
    return ttl


def session_record(
    user_id: object,
    channels: Iterable[str],
    extra: Mapping[str, Any],
    *,
    max_bytes: int = MAX_SESSION_BYTES,
    max_user_id_length: int = MAX_USER_ID_LENGTH,
) -> bytes:
    """The JSON stored for a new session; :class:`ValueError`/:class:`TypeError` if unusable.

    The limits are the gateways' (``GATEWAY_MAX_SESSION_BYTES``,
    ``GATEWAY_MAX_USER_ID_LENGTH``): a session they would refuse is never stored.
    """
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise ValueError(
            f"the user id must be a non-empty string or a whole number, not {user_id!r}"
        )
    if len(str(user_id)) > max_user_id_length:
        raise ValueError(
            f"the user id is {len(str(user_id))} characters long; gateways accept at most "
            f"{max_user_id_length} (GATEWAY_MAX_USER_ID_LENGTH)"
        )
    if isinstance(channels, str | bytes):
        raise ValueError("channels must be a list of glob strings, not a single string")
    globs = list(channels)
    for glob in globs:
        if not isinstance(glob, str) or not glob:
            raise ValueError(f"channels must hold non-empty glob strings, not {glob!r}")
    clash = [name for name in _RESERVED if name in extra]
    if clash:
        raise ValueError(
            f"{clash[0]!r} is set from the arguments; do not pass it as an extra field"
        )
    try:
        record = orjson.dumps({"userId": user_id, "channels": globs, **extra})
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"extra session fields cannot be serialised to JSON: {exc}") from None
    if len(record) > max_bytes:
        raise ValueError(
            f"the session is {len(record)} bytes as JSON; gateways accept at most {max_bytes} "
            "(GATEWAY_MAX_SESSION_BYTES): store less in it"
        )
    return record


def decode_session(raw: bytes) -> dict[str, Any]:
    """A stored session as a dict; :class:`ValueError` when the gateway could not use it."""
    try:
        parse_session(raw)
    except SessionError as exc:
        raise ValueError(f"the stored session is unusable by the gateway ({exc.reason})") from None
    record: dict[str, Any] = orjson.loads(raw)
    return record
