"""What the hub talks to on either side: a client (:class:`Sink`) and Redis
(:class:`RedisCommands`). Every method returns at once."""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["RedisCommands", "Sink", "SubscriptionRefused"]


class SubscriptionRefused(Exception):
    """Redis answered SUBSCRIBE with an error (an ACL without the channel, say)."""


class Sink(Protocol):
    """A connected client as the hub sees it."""

    def send(self, data: bytes) -> None:
        """Queue bytes (one or more complete frames) for the client."""

    def subscription_refused(self, channel: str, message: str) -> None:
        """Redis refused a channel the client was reading (after a reconnect)."""

    def overflow(self, buffered: int) -> None:
        """More than the buffer limit is waiting for the client: it is closed (4008)."""


class RedisCommands(Protocol):
    """The subscriber connection, as far as the hub drives it."""

    def subscribe(self, channels: list[str]) -> None: ...

    def unsubscribe(self, channels: list[str]) -> None: ...

    def barrier(self, channel: str) -> asyncio.Future[None]:
        """Resolves once every message Redis published on ``channel`` before now has arrived."""
        ...
