"""The hub: clients on one side, the Redis subscriber on the other, no I/O of its own.

It keeps Redis in step with exactly one SUBSCRIBE per channel however many clients read it
(:mod:`gateway.core.subscriptions`), knows who reads what (:mod:`gateway.core.membership`),
fans messages out (:mod:`gateway.core.fanout`) and recovers channels after the subscriber
connection comes back (:mod:`gateway.core.recovery`). It tells a
:class:`~gateway.core.sinks.RedisCommands` what to send and calls
:class:`~gateway.core.sinks.Sink` methods, which never block.

Joining a channel has two steps so that nothing is lost or doubled between a subscription
and a history read: :meth:`Hub.join` resolves once Redis has confirmed; from then on the
channel's frames are held for the sink until :meth:`Hub.activate` hands them over (minus
those at or below a history offset the caller has already replayed) and makes the sink a
live reader. What is held counts against the client's buffer limit: past it the sink
overflows (4008), as a client that far behind on live traffic would.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence

from gateway.core.fanout import FanOut
from gateway.core.holding import after
from gateway.core.membership import Membership
from gateway.core.recovery import Recoveries
from gateway.core.sinks import RedisCommands, Sink, SubscriptionRefused
from gateway.core.subscriptions import Subscriptions
from notify_wire.history import Position

__all__ = ["Hub", "RedisCommands", "Sink", "SubscriptionRefused"]


class Hub:
    """Who reads which channel, the Redis subscriptions behind it, and the fan-out."""

    def __init__(
        self,
        internal: Mapping[str, Callable[[bytes], None]] | None = None,
        *,
        max_message_bytes: int = 1024 * 1024,
        max_held_bytes: int = 1024 * 1024,
        on_resubscribed: Callable[[str, Position, object], None] | None = None,
        observe_fanout: Callable[[float], None] | None = None,
    ) -> None:
        internal = internal or {}
        self._membership = Membership()
        positions: dict[str, tuple[int, str]] = {}
        self._subscriptions = Subscriptions(internal, self._membership.wanted)
        self._recoveries = Recoveries(self._membership, positions, on_resubscribed, max_held_bytes)
        self._fanout = FanOut(
            self._membership,
            self._recoveries,
            positions,
            internal,
            max_message_bytes=max_message_bytes,
            max_held_bytes=max_held_bytes,
            observe_fanout=observe_fanout,
        )
        # The subscriber's per-message calls go straight to the fan-out (no extra call).
        self.on_message = self._fanout.on_message
        self.message_failed = self._fanout.message_failed
        self.flush = self._fanout.flush

    # -- queries (scrape time, never on the fan-out path) --------------------------------

    @property
    def internal_channels(self) -> frozenset[str]:
        return self._subscriptions.internal

    @property
    def refused_internal(self) -> Mapping[str, str]:
        """Internal channels Redis refused, with its answer (retried meanwhile)."""
        return self._subscriptions.refused_internal

    @property
    def messages_received(self) -> int:
        return self._fanout.messages_received

    @property
    def deliveries(self) -> int:
        return self._fanout.deliveries

    @property
    def dropped(self) -> Mapping[str, int]:
        return self._fanout.dropped

    @property
    def redis_channel_count(self) -> int:
        return self._subscriptions.redis_channel_count

    @property
    def subscription_count(self) -> int:
        return self._membership.subscription_count()

    def subscribers(self, channel: str) -> int:
        return self._membership.subscribers(channel)

    def top_channels(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` channels with the most subscribers, most first, then by name."""
        counts = ((-self.subscribers(c), c) for c in self._membership.channels())
        return [(c, -negative) for negative, c in heapq.nsmallest(n, counts) if negative]

    # -- the clients' side ---------------------------------------------------------------

    def channels_of(self, sink: Sink) -> set[str]:
        """The channels ``sink`` holds, at any stage: the one record of it, read by the
        connection's state machine (never changed there)."""
        return self._membership.channels_of(sink)

    def join(self, sink: Sink, channel: str) -> asyncio.Future[None]:
        """Start reading ``channel``; the future resolves once Redis has confirmed it.

        It fails with :class:`SubscriptionRefused` when Redis refuses the channel.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._subscriptions.subscribed(channel):
            self._membership.hold(sink, channel)
            future.set_result(None)
            return future
        self._membership.wait(sink, channel, future)
        self._subscriptions.request(channel)
        return future

    def activate(self, sink: Sink, channel: str, cutoff: int | None = None) -> bytes:
        """Make a joined sink a live reader; return the frames held for it meanwhile.

        Frames of history messages at or below ``cutoff`` (already replayed) are left out.
        """
        held = self._membership.go_live(sink, channel)
        if held is None:
            return b""  # left, refused or overflowed in the meantime
        self._recoveries.went_live(sink, channel)
        return b"".join(after(held.frames, cutoff))

    def barrier(self, channel: str) -> asyncio.Future[None]:
        """Resolves once every message Redis published on ``channel`` before now has been
        taken in; fails with ConnectionError if the subscriber connection is lost first.

        A history read on another connection can answer before messages published ahead of
        it have arrived here: activating a reader with the read's offset as cutoff only
        after this barrier keeps such late copies out of what it receives live.
        """
        redis = self._subscriptions.redis
        if redis is None:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(ConnectionError("Redis connection lost"))
            return future
        return redis.barrier(channel)

    def note_position(self, channel: str, position: Position) -> None:
        self._recoveries.note_position(channel, position)

    def leave(self, sink: Sink, channels: Iterable[str]) -> None:
        """Remove ``sink`` from ``channels``; Redis unsubscribes each one nobody reads."""
        channels = list(channels)  # may be the sink's own set, changed below
        for channel in channels:
            self._membership.remove(sink, channel)
        self._subscriptions.release(channels)

    def leave_all(self, sink: Sink) -> None:
        """The sink is gone: it leaves every channel it held."""
        self.leave(sink, self._membership.channels_of(sink))
        self._membership.forget(sink)

    def finish_recovery(
        self, channel: str, ticket: object, replay: Sequence[bytes] | None, cutoff: int
    ) -> bool:
        """See :meth:`gateway.core.recovery.Recoveries.finish`."""
        return self._recoveries.finish(channel, ticket, replay, cutoff)

    # -- the Redis side (gateway.broker.subscriber.PubSubListener) ------------------------

    def on_connected(self, redis: RedisCommands) -> None:
        """A (new) subscriber connection is up: subscribe every wanted channel in one go."""
        self._subscriptions.connected(redis, self._membership.channels())

    def on_disconnected(self) -> None:
        """The subscriber connection is gone: every channel read may miss messages."""
        self._fanout.clear()
        self._recoveries.disconnected()
        self._subscriptions.disconnected(self._membership.channels())

    def on_lost(self, channels: Iterable[str]) -> list[str]:
        """Part of the subscriptions is gone (one cluster node): return those still wanted.

        The caller subscribes them again wherever they now live; their readers then get
        a recovery or a ``gap``, as after a full reconnect.
        """
        channels = list(channels)
        self._recoveries.lost(channels)
        return self._subscriptions.lost(channels)

    def on_subscribed(self, channel: str) -> None:
        if not self._subscriptions.confirmed(channel) or channel in self.internal_channels:
            return
        self._recoveries.subscribed(channel)
        for future in self._membership.confirm(channel):
            if not future.done():
                future.set_result(None)

    def on_unsubscribed(self, channel: str) -> None:
        wanted = self._subscriptions.wanted(channel)
        if self._subscriptions.unsubscribed(channel):
            self._recoveries.lost([channel])  # dropped unasked: messages may be lost
        elif not wanted:
            self._recoveries.forget(channel)
            self._fanout.forget(channel)

    def on_subscribe_refused(self, channels: list[str], message: str) -> None:
        """Redis answered SUBSCRIBE with an error (an ACL without the channel, say)."""
        for channel in self._subscriptions.refused(channels, message):
            self._recoveries.forget(channel)
            futures, sinks = self._membership.drop(channel)
            for future in futures:
                if not future.done():
                    future.set_exception(SubscriptionRefused(message))
            for sink in sinks:
                sink.subscription_refused(channel, message)
