"""Sessions and the per-connection state machine, free of asyncio and Redis.

:func:`parse_session` reads the JSON a backend stored under ``session:{token}``.
:class:`ClientSession` takes one decoded client frame at a time and answers with
one :data:`Action` for the I/O layer to carry out, so authorisation, limits and
error replies are unit-tested by feeding frames and reading actions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable

import orjson

from gateway.channels import ChannelPolicy, channel_problem
from gateway.config import Limits
from gateway.history import Position
from gateway.protocol import (
    Auth,
    CloseCode,
    ErrorCode,
    FrameError,
    Ping,
    Ref,
    Subscribe,
    Unsubscribe,
    error_frame,
    frame_ref,
    parse_command,
    reply_frame,
)
from gateway.ratelimit import TokenBucket

__all__ = [
    "Action",
    "ClientSession",
    "Close",
    "Reply",
    "Session",
    "SessionError",
    "SubscribeChannel",
    "TokenBucket",
    "UnsubscribeChannel",
    "parse_session",
    "session_digest",
    "token_problem",
]

_TOKEN = re.compile(r"[A-Za-z0-9_.~+/=-]{8,512}")


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


_LIMITS = Limits()


def parse_session(
    raw: bytes,
    *,
    max_bytes: int = _LIMITS.max_session_bytes,
    max_user_id_length: int = _LIMITS.max_user_id_length,
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


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """Write this frame to the client."""

    frame: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SubscribeChannel:
    """Join the channel (one Redis subscription per channel), recover from ``since``, reply."""

    channel: str
    ref: Ref
    since: Position | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class UnsubscribeChannel:
    """Release the channel, then write ``frame``."""

    channel: str
    frame: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    code: CloseCode
    reason: str


Action = Reply | SubscribeChannel | UnsubscribeChannel | Close


class ClientSession:
    """What one authenticated connection may do, and what it has subscribed."""

    __slots__ = ("_bucket", "_limits", "_policy", "_strikes", "channels", "session")

    def __init__(self, session: Session, policy: ChannelPolicy, limits: Limits, now: float) -> None:
        self.session = session
        self.channels: set[str] = set()
        self._policy = policy
        self._limits = limits
        self._bucket = TokenBucket(limits.rate_per_second, limits.rate_burst, now)
        self._strikes = 0

    def receive(self, data: str | bytes, now: float) -> Action:
        """Handle one client frame received at ``now`` (monotonic seconds)."""
        if not self._bucket.take(now):
            self._strikes += 1
            if self._strikes >= self._limits.rate_strikes:
                return Close(CloseCode.RATE_LIMITED, "rate limit exceeded")
            return Reply(
                error_frame(
                    ErrorCode.RATE_LIMITED,
                    f"more than {self._limits.rate_per_second:g} frames per second; slow down",
                    frame_ref(data),  # parsed only now: accepted frames are parsed once
                )
            )
        command = parse_command(data)
        if isinstance(command, FrameError):
            return Reply(error_frame(command.code, command.message, command.ref))
        if isinstance(command, Ping):
            return Reply(reply_frame("pong", command.ref))
        if isinstance(command, Auth):
            return Reply(error_frame(ErrorCode.BAD_REQUEST, "already authenticated", command.ref))
        return self._channel_command(command)

    def _channel_command(self, command: Subscribe | Unsubscribe) -> Action:
        channel, ref = command.channel, command.ref
        problem = channel_problem(channel, self._limits.max_channel_length)
        if problem is not None:
            return Reply(error_frame(ErrorCode.BAD_REQUEST, problem, ref))
        if isinstance(command, Unsubscribe):
            frame = reply_frame("unsubscribed", ref, channel=channel)
            if channel not in self.channels:
                return Reply(frame)  # idempotent: nothing to release
            self.channels.discard(channel)
            return UnsubscribeChannel(channel, frame)
        return self._subscribe(channel, ref, command.since)

    def _subscribe(self, channel: str, ref: Ref, since: Position | None) -> Action:
        if channel in self.channels:
            # Already held: nothing changes, not even a replay.
            return Reply(reply_frame("subscribed", ref, channel=channel))
        if not self._policy.allows(self.session.user_id, self.session.channels, channel):
            return Reply(
                error_frame(ErrorCode.FORBIDDEN, f"this session may not read {channel!r}", ref)
            )
        if len(self.channels) >= self._limits.max_subscriptions:
            return Reply(
                error_frame(
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                    f"a connection may hold at most {self._limits.max_subscriptions} "
                    "subscriptions; unsubscribe from one first",
                    ref,
                )
            )
        self.channels.add(channel)
        return SubscribeChannel(channel, ref, since)

    def forget(self, channels: Iterable[str]) -> None:
        """Drop channels the registry could not subscribe (Redis refused them)."""
        self.channels.difference_update(channels)
