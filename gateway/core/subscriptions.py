"""The Redis side of the hub: exactly one SUBSCRIBE per channel while anyone wants it.

:class:`Subscriptions` keeps each channel's state on the subscriber connection
(subscribing, subscribed, unsubscribing) and tells a
:class:`~gateway.core.sinks.RedisCommands` what to send. Internal channels (the control
channel) are always wanted; one that Redis refuses is subscribed again after a backoff, and
:attr:`Subscriptions.refused_internal` says so meanwhile (readiness reads it).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Iterable

import structlog

from gateway.core.sinks import RedisCommands
from notify_wire.backoff import INTERNAL_CHANNEL_RETRY, Backoff

__all__ = ["Subscriptions"]

log = structlog.get_logger("gateway.hub")


class _State(enum.Enum):
    SUBSCRIBING = "subscribing"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBING = "unsubscribing"


class Subscriptions:
    def __init__(self, internal: Iterable[str], clients_want: Callable[[str], bool]) -> None:
        self.internal = frozenset(internal)
        self._clients_want = clients_want
        self._state: dict[str, _State] = {}
        self.redis: RedisCommands | None = None
        #: internal channels Redis refused, with its answer; each is retried after a backoff
        self.refused_internal: dict[str, str] = {}
        self._internal_backoff: dict[str, Backoff] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}

    def wanted(self, channel: str) -> bool:
        return channel in self.internal or self._clients_want(channel)

    def subscribed(self, channel: str) -> bool:
        return self._state.get(channel) is _State.SUBSCRIBED

    @property
    def redis_channel_count(self) -> int:
        """Channels Redis has confirmed on the subscriber connection (control channel included)."""
        return sum(1 for state in self._state.values() if state is _State.SUBSCRIBED)

    # -- asked for by the clients' side --------------------------------------------------

    def request(self, channel: str) -> None:
        """Subscribe ``channel`` unless it is already subscribed or on its way."""
        if channel not in self._state:
            self._subscribe(channel)

    def release(self, channels: Iterable[str]) -> None:
        """Unsubscribe those of ``channels`` nobody wants any more."""
        released = [c for c in channels if not self.wanted(c) and self.subscribed(c)]
        for channel in released:
            self._state[channel] = _State.UNSUBSCRIBING
        if released and self.redis is not None:
            self.redis.unsubscribe(released)

    def _subscribe(self, channel: str) -> None:
        self._state[channel] = _State.SUBSCRIBING
        if self.redis is not None:
            self.redis.subscribe([channel])

    # -- what Redis said -----------------------------------------------------------------

    def connected(self, redis: RedisCommands, clients_channels: Iterable[str]) -> None:
        """A (new) subscriber connection is up: subscribe every wanted channel in one go."""
        self.redis = redis
        wanted = sorted({*clients_channels, *self.internal})
        self._state = dict.fromkeys(wanted, _State.SUBSCRIBING)
        if wanted:
            redis.subscribe(wanted)

    def disconnected(self, clients_channels: Iterable[str]) -> None:
        self.redis = None
        for retry in self._retries.values():  # the next connection subscribes them anyway
            retry.cancel()
        self._retries.clear()
        self._state = dict.fromkeys(clients_channels, _State.SUBSCRIBING)

    def lost(self, channels: Iterable[str]) -> list[str]:
        """Part of the subscriptions is gone (one cluster node): those still wanted."""
        wanted = []
        for channel in channels:
            if not self.wanted(channel):
                self._state.pop(channel, None)
                continue
            self._state[channel] = _State.SUBSCRIBING
            wanted.append(channel)
        return wanted

    def confirmed(self, channel: str) -> bool:
        """Redis confirmed ``channel``; False when nobody wants it now (unsubscribed again)."""
        if not self.wanted(channel):
            self._state[channel] = _State.UNSUBSCRIBING
            if self.redis is not None:
                self.redis.unsubscribe([channel])
            return False
        self._state[channel] = _State.SUBSCRIBED
        if channel in self.internal and self.refused_internal.pop(channel, None) is not None:
            self._internal_backoff.pop(channel, None)
            log.info("internal_channel_subscribed", channel=channel)
        return True

    def unsubscribed(self, channel: str) -> bool:
        """Redis unsubscribed ``channel``: forget it, or subscribe it again if it is still
        wanted. True when Redis did so unasked (a cluster slot moved): messages may be lost."""
        if not self.wanted(channel):
            self._state.pop(channel, None)
            return False
        unasked = self.subscribed(channel)
        self._subscribe(channel)
        return unasked

    def refused(self, channels: list[str], message: str) -> list[str]:
        """Redis answered SUBSCRIBE with an error (an ACL without the channel, say); the
        client channels now refused.

        Redis refuses a whole command when one of its channels is denied (NOPERM), so a
        refused command of several channels is sent again one channel at a time: only the
        denied ones end up refused. An internal channel is never given up.
        """
        if len(channels) > 1:
            for channel in channels:
                if not self.wanted(channel):
                    self._state.pop(channel, None)
                elif self._state.get(channel) is _State.SUBSCRIBING and self.redis is not None:
                    self.redis.subscribe([channel])
            return []
        refused = []
        for channel in channels:
            self._state.pop(channel, None)
            if channel in self.internal:
                self._internal_refused(channel, message)
            else:
                refused.append(channel)
        return refused

    def _internal_refused(self, channel: str, message: str) -> None:
        self.refused_internal[channel] = message
        backoff = self._internal_backoff.setdefault(channel, Backoff(INTERNAL_CHANNEL_RETRY))
        delay = backoff.next_delay()
        log.error(
            "internal_channel_refused",
            channel=channel,
            error=message[:200],
            retry_in_s=round(delay, 3),
        )
        loop = asyncio.get_running_loop()
        self._retries[channel] = loop.call_later(delay, self._retry_internal, channel)

    def _retry_internal(self, channel: str) -> None:
        self._retries.pop(channel, None)
        if channel not in self._state and self.redis is not None:
            self._subscribe(channel)
