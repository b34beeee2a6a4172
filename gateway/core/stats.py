"""Counters that metrics and ``/status`` read: plain numbers, kept off every hot path.

The connection layer increments a :class:`ConnectionStats`; whatever reports on it reads it
through :class:`ConnectionCounts`, read-only, so nothing imports the connection layer to
read a number. The hub's counters are read through :class:`HubCounts` likewise.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Protocol

__all__ = ["ConnectionCounts", "ConnectionStats", "HubCounts"]


class ConnectionCounts(Protocol):
    """The connection counters, read-only."""

    @property
    def sockets(self) -> int:
        """Open WebSockets, authenticated or not (what GATEWAY_MAX_CONNECTIONS caps)."""
        ...

    @property
    def connections(self) -> int:
        """Open, authenticated WebSockets."""
        ...

    @property
    def slow_consumers(self) -> int:
        """Connections closed with 4008."""
        ...

    @property
    def auth_failures(self) -> Mapping[str, int]:
        """Connections refused at authentication (4001), by reason."""
        ...


class ConnectionStats:
    """The connection counters, written by the connection layer."""

    __slots__ = ("auth_failures", "connections", "slow_consumers", "sockets")

    def __init__(self) -> None:
        self.sockets = 0
        self.connections = 0
        self.slow_consumers = 0
        self.auth_failures: collections.Counter[str] = collections.Counter()


class HubCounts(Protocol):
    """What the hub reports: message counters and scrape-time queries."""

    @property
    def messages_received(self) -> int: ...

    @property
    def deliveries(self) -> int: ...

    @property
    def dropped(self) -> Mapping[str, int]:
        """Messages dropped instead of delivered, by reason."""
        ...

    @property
    def redis_channel_count(self) -> int: ...

    @property
    def refused_internal(self) -> Mapping[str, str]:
        """Internal channels (the control channel) Redis refuses, with its answer."""
        ...

    @property
    def subscription_count(self) -> int: ...

    def top_channels(self, n: int) -> list[tuple[str, int]]: ...
