"""Channel registry and fan-out.

The registry knows which client sinks read which channel and keeps Redis in step
with exactly one SUBSCRIBE per channel however many clients read it: the first
reader subscribes, the last one to leave unsubscribes. It does no I/O of its own:
it tells a :class:`RedisCommands` what to send and calls :class:`Sink` methods,
which never block.

Fan-out works per batch: the Redis subscriber hands over every message that one
read from the socket produced (:meth:`Registry.on_message`), then calls
:meth:`Registry.flush`. Each message is framed once; each sink gets one write per
batch holding all the frames for its channels, so a burst to 1000 sockets costs
1000 writes, not 1000 per message.
"""

from __future__ import annotations

import enum
import heapq
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import orjson
import structlog

from gateway.protocol import ErrorCode, Ref, error_frame, gap_frame, message_frame

__all__ = ["RedisCommands", "Registry", "Sink"]

log = structlog.get_logger("gateway.registry")


class Sink(Protocol):
    """A connected client as the registry sees it; every method returns at once."""

    def send(self, data: bytes) -> None:
        """Queue bytes (one or more complete frames) for the client."""

    def subscription_refused(self, channel: str) -> None:
        """Redis refused the channel; the registry has already sent the error frame."""


class RedisCommands(Protocol):
    """The subscriber connection, as far as the registry drives it."""

    def subscribe(self, channels: list[str]) -> None: ...

    def unsubscribe(self, channels: list[str]) -> None: ...


class _State(enum.Enum):
    SUBSCRIBING = "subscribing"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBING = "unsubscribing"


class Registry:
    """Who reads which channel, and the Redis subscription state behind it."""

    def __init__(
        self,
        internal: dict[str, Callable[[bytes], None]] | None = None,
        *,
        max_message_bytes: int = 1024 * 1024,
        observe_fanout: Callable[[float], None] | None = None,
    ) -> None:
        self._max_message_bytes = max_message_bytes
        # Called once per batch with the seconds from its first message to its last write.
        self._observe_fanout = observe_fanout
        # Gateway-to-gateway channels, always subscribed, handled here, never fanned out.
        self._internal = {name.encode(): handler for name, handler in (internal or {}).items()}
        # Sinks that receive the channel's messages (their `subscribed` was sent).
        self._active: dict[str, set[Sink]] = {}
        # Sinks waiting for Redis to confirm, with the reply each one gets then.
        self._waiting: dict[str, dict[Sink, tuple[bytes, Ref]]] = {}
        self._state: dict[str, _State] = {}
        self._redis: RedisCommands | None = None
        self._gap: set[str] = set()
        self._batch: dict[bytes, list[bytes]] = {}
        self._batch_started = 0.0
        self._channel_json: dict[bytes, bytes] = {}
        self.messages_received = 0
        self.messages_dropped = 0
        self.deliveries = 0

    # -- queries -----------------------------------------------------------

    @property
    def channel_count(self) -> int:
        """Channels some client reads or waits for."""
        return len(self._active.keys() | self._waiting.keys())

    def subscribers(self, channel: str) -> int:
        return len(self._active.get(channel, ())) + len(self._waiting.get(channel, ()))

    # Scrape-time queries: linear in the number of channels, never on the fan-out path.

    @property
    def redis_channel_count(self) -> int:
        """Channels Redis has confirmed on the subscriber connection (control channel included)."""
        return sum(1 for state in self._state.values() if state is _State.SUBSCRIBED)

    @property
    def subscription_count(self) -> int:
        """Client subscriptions: one per (client, channel) pair, confirmed or waiting."""
        return sum(map(len, self._active.values())) + sum(map(len, self._waiting.values()))

    def top_channels(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` channels with the most subscribers, most first, then by name; none empty."""
        counts = ((-self.subscribers(c), c) for c in self._active.keys() | self._waiting.keys())
        return [(c, -negative) for negative, c in heapq.nsmallest(n, counts) if negative]

    def _wanted(self, channel: str) -> bool:
        return (
            bool(self._active.get(channel))
            or bool(self._waiting.get(channel))
            or channel.encode() in self._internal
        )

    # -- client side -------------------------------------------------------

    def subscribe(self, sink: Sink, channel: str, reply: bytes, ref: Ref) -> None:
        """Add ``sink`` to ``channel``; ``reply`` is sent once Redis has confirmed."""
        readers = self._active.get(channel)
        if readers is not None and sink in readers:
            sink.send(reply)
            return
        if readers is not None and self._state.get(channel) is _State.SUBSCRIBED:
            readers.add(sink)
            sink.send(reply)
            return
        self._waiting.setdefault(channel, {})[sink] = (reply, ref)
        if channel not in self._state:
            self._request(channel)

    def unsubscribe(self, sink: Sink, channels: Iterable[str]) -> None:
        """Remove ``sink`` from ``channels``; Redis unsubscribes each one nobody reads."""
        released: list[str] = []
        for channel in channels:
            for table in (self._active, self._waiting):
                members = table.get(channel)
                if members is not None and sink in members:
                    if isinstance(members, set):
                        members.discard(sink)
                    else:
                        del members[sink]
                    if not members:
                        del table[channel]
            if not self._wanted(channel) and self._state.get(channel) is _State.SUBSCRIBED:
                self._state[channel] = _State.UNSUBSCRIBING
                released.append(channel)
        if released and self._redis is not None:
            self._redis.unsubscribe(released)

    def _request(self, channel: str) -> None:
        self._state[channel] = _State.SUBSCRIBING
        if self._redis is not None:
            self._redis.subscribe([channel])

    # -- Redis side --------------------------------------------------------

    def on_connected(self, redis: RedisCommands) -> None:
        """A (new) subscriber connection is up: subscribe every wanted channel in one go."""
        self._redis = redis
        internal = {name.decode() for name in self._internal}
        wanted = sorted(self._active.keys() | self._waiting.keys() | internal)
        self._state = dict.fromkeys(wanted, _State.SUBSCRIBING)
        if wanted:
            redis.subscribe(wanted)

    def on_disconnected(self) -> None:
        """The subscriber connection is gone: every active channel may miss messages."""
        self._redis = None
        self._batch.clear()
        self._gap.update(self._active)
        self._state = dict.fromkeys(self._active.keys() | self._waiting.keys(), _State.SUBSCRIBING)

    def on_subscribed(self, channel: str) -> None:
        if not self._wanted(channel):
            self._state[channel] = _State.UNSUBSCRIBING
            if self._redis is not None:
                self._redis.unsubscribe([channel])
            return
        self._state[channel] = _State.SUBSCRIBED
        readers = self._active.setdefault(channel, set())
        if channel in self._gap:
            self._gap.discard(channel)
            frame = gap_frame(channel)
            for sink in readers:
                sink.send(frame)
        for sink, (reply, _ref) in self._waiting.pop(channel, {}).items():
            readers.add(sink)
            sink.send(reply)

    def on_unsubscribed(self, channel: str) -> None:
        if self._wanted(channel):
            self._request(channel)
        else:
            self._state.pop(channel, None)
            self._channel_json.pop(channel.encode(), None)

    def on_subscribe_refused(self, channels: list[str], message: str) -> None:
        """Redis answered SUBSCRIBE with an error (an ACL without the channel, say)."""
        text = f"Redis refused the subscription: {message}"
        for channel in channels:
            self._state.pop(channel, None)
            self._gap.discard(channel)
            sinks: list[tuple[Sink, Ref]] = [(s, None) for s in self._active.pop(channel, ())]
            sinks += [(s, ref) for s, (_reply, ref) in self._waiting.pop(channel, {}).items()]
            for sink, ref in sinks:
                sink.send(error_frame(ErrorCode.UNAVAILABLE, text, ref))
                sink.subscription_refused(channel)

    def on_message(self, channel: bytes, payload: bytes) -> None:
        """Frame one message into the current batch; sent by :meth:`flush`."""
        handler = self._internal.get(channel)
        if handler is not None:
            handler(payload)
            return
        self.messages_received += 1
        if len(payload) > self._max_message_bytes:
            self.messages_dropped += 1
            log.warning(
                "message_dropped",
                reason="oversized",
                channel=channel.decode("utf-8", "replace"),
                size_bytes=len(payload),
                limit_bytes=self._max_message_bytes,
            )
            return
        channel_json = self._channel_json.get(channel)
        if channel_json is None:
            channel_json = self._channel_json[channel] = orjson.dumps(
                channel.decode("utf-8", "replace")
            )
        frame = message_frame(channel_json, payload)
        if not self._batch:
            self._batch_started = time.perf_counter()
        frames = self._batch.get(channel)
        if frames is None:
            self._batch[channel] = [frame]
        else:
            frames.append(frame)

    def flush(self) -> None:
        """Write the batch: one write per sink, however many frames it holds."""
        batch = self._batch
        if not batch:
            return
        self._batch = {}
        self._write(batch)
        if self._observe_fanout is not None:
            self._observe_fanout(time.perf_counter() - self._batch_started)

    def _write(self, batch: dict[bytes, list[bytes]]) -> None:
        active = self._active
        if len(batch) == 1:
            ((channel, frames),) = batch.items()
            readers = active.get(channel.decode("utf-8", "replace"))
            if readers:
                chunk = frames[0] if len(frames) == 1 else b"".join(frames)
                for sink in readers:
                    sink.send(chunk)
                self.deliveries += len(readers) * len(frames)
            return
        pending: dict[Sink, list[bytes]] = {}
        for channel, frames in batch.items():
            readers = active.get(channel.decode("utf-8", "replace"))
            if not readers:
                continue
            chunk = frames[0] if len(frames) == 1 else b"".join(frames)
            self.deliveries += len(readers) * len(frames)
            for sink in readers:
                chunks = pending.get(sink)
                if chunks is None:
                    pending[sink] = [chunk]
                else:
                    chunks.append(chunk)
        for sink, chunks in pending.items():
            sink.send(chunks[0] if len(chunks) == 1 else b"".join(chunks))
