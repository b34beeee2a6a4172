"""What one logged-in connection may do: the per-connection state machine, free of asyncio
and Redis.

:class:`ClientState` takes one client frame at a time and answers with one :data:`Action`
for the connection layer to carry out, so authorisation, limits and error replies are
unit-tested by feeding frames and reading actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Set as AbstractSet
from typing import assert_never

from gateway.config import Limits
from gateway.core.bucket import TokenBucket
from gateway.core.frames import error_frame, reply_frame
from gateway.core.policy import ChannelPolicy
from notify_wire.channels import channel_problem
from notify_wire.codes import CloseReason, ErrorCode
from notify_wire.frames import (
    Auth,
    FrameError,
    Ping,
    Ref,
    Subscribe,
    Unsubscribe,
    frame_ref,
    parse_frame,
)
from notify_wire.history import Position
from notify_wire.sessions import Session

__all__ = [
    "Action",
    "ClientState",
    "Close",
    "Reply",
    "SubscribeChannel",
    "UnsubscribeChannel",
]


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
    """Close the connection."""

    reason: CloseReason


Action = Reply | SubscribeChannel | UnsubscribeChannel | Close


class ClientState:
    """What one logged-in connection may do.

    ``channels`` is the hub's record of what the connection holds
    (:meth:`gateway.core.hub.Hub.channels_of`): read here, changed only by the hub, so the
    two never disagree. A subscribe decided here is held from the moment the connection
    layer carries it out.
    """

    __slots__ = ("_bucket", "_limits", "_policy", "_strikes", "channels", "session")

    def __init__(
        self,
        session: Session,
        policy: ChannelPolicy,
        limits: Limits,
        now: float,
        channels: AbstractSet[str],
    ) -> None:
        self.session = session
        self.channels = channels
        self._policy = policy
        self._limits = limits
        self._bucket = TokenBucket(limits.rate_per_second, limits.rate_burst, now)
        self._strikes = 0

    def receive(self, data: str | bytes, now: float) -> Action:
        """Handle one client frame received at ``now`` (monotonic seconds)."""
        if not self._bucket.take(now):
            self._strikes += 1
            if self._strikes >= self._limits.rate_strikes:
                return Close(CloseReason.MESSAGE_RATE)
            return Reply(
                error_frame(
                    ErrorCode.RATE_LIMITED,
                    f"more than {self._limits.rate_per_second:g} frames per second; slow down",
                    frame_ref(data),  # parsed only now: accepted frames are parsed once
                )
            )
        frame = parse_frame(data)
        match frame:
            case FrameError(code=code, message=message, ref=ref):
                return Reply(error_frame(code, message, ref))
            case Ping(ref=ref):
                return Reply(reply_frame("pong", ref))
            case Auth(ref=ref):
                return Reply(error_frame(ErrorCode.BAD_REQUEST, "already authenticated", ref))
            case Subscribe() | Unsubscribe():
                return self._channel_frame(frame)
            case _:
                assert_never(frame)

    def _channel_frame(self, frame: Subscribe | Unsubscribe) -> Action:
        channel, ref = frame.channel, frame.ref
        problem = channel_problem(channel, self._limits.max_channel_length)
        if problem is not None:
            return Reply(error_frame(ErrorCode.BAD_REQUEST, problem, ref))
        if isinstance(frame, Unsubscribe):
            reply = reply_frame("unsubscribed", ref, channel=channel)
            if channel not in self.channels:
                return Reply(reply)  # idempotent: nothing to release
            return UnsubscribeChannel(channel, reply)
        return self._subscribe(channel, ref, frame.since)

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
        return SubscribeChannel(channel, ref, since)
