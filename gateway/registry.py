"""Channel registry and fan-out.

The registry knows which client sinks read which channel and keeps Redis in step
with exactly one SUBSCRIBE per channel however many clients read it: the first
reader subscribes, the last one to leave unsubscribes. It does no I/O of its own:
it tells a :class:`RedisCommands` what to send and calls :class:`Sink` methods,
which never block.

Joining a channel has two steps so that nothing is lost or doubled between a
subscription and a history read: :meth:`Registry.join` resolves once Redis has
confirmed; from then on the channel's frames are held for the sink until
:meth:`Registry.activate` hands them over (minus those at or below a history
offset the caller has already replayed) and makes the sink a live reader. What is
held counts against the client's buffer limit: past it the sink overflows (4008),
as a client that far behind on live traffic would.

Fan-out works per batch: the Redis subscriber hands over every message that one
read from the socket produced (:meth:`Registry.on_message`), then calls
:meth:`Registry.flush`. Each message is framed once; each sink gets one write per
batch holding all the frames for its channels.

After the subscriber connection is re-established, a channel whose history
position is known is recovered (``on_resubscribed`` reads what was missed and
calls :meth:`Registry.finish_recovery`); any other channel gets a ``gap`` frame, and
so does a recovering channel whose live frames held meanwhile pass the buffer limit.

A message the registry cannot deliver (oversized, a malformed history envelope, one
that would move its channel's position backwards) is dropped, counted by reason in
:attr:`Registry.dropped` and logged as ``message_dropped``, at most once a second per
reason (:class:`DropLog`), so a flood of them cannot flood the log.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import heapq
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import orjson
import structlog

from gateway.history import ENVELOPE_PREFIX, Position, open_envelope
from gateway.protocol import gap_frame, message_frame_from, message_head
from gateway.subscriber import Backoff

__all__ = ["DropLog", "RedisCommands", "Registry", "Sink", "SubscriptionRefused"]

log = structlog.get_logger("gateway.registry")

#: A frame and the history offset of its message (None for plain messages).
Buffered = list[tuple[int | None, bytes]]

_ENVELOPE_FIRST = ENVELOPE_PREFIX[:1]


class SubscriptionRefused(Exception):
    """Redis answered SUBSCRIBE with an error (an ACL without the channel, say)."""


class Sink(Protocol):
    """A connected client as the registry sees it; every method returns at once."""

    def send(self, data: bytes) -> None:
        """Queue bytes (one or more complete frames) for the client."""

    def subscription_refused(self, channel: str, message: str) -> None:
        """Redis refused a channel the client was reading (after a reconnect)."""

    def overflow(self, buffered: int) -> None:
        """More than the buffer limit is waiting for the client: it is closed (4008)."""


class RedisCommands(Protocol):
    """The subscriber connection, as far as the registry drives it."""

    def subscribe(self, channels: list[str]) -> None: ...

    def unsubscribe(self, channels: list[str]) -> None: ...

    def barrier(self, channel: str) -> asyncio.Future[None]:
        """Resolves once every message Redis published on ``channel`` before now has arrived."""
        ...


class _State(enum.Enum):
    SUBSCRIBING = "subscribing"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBING = "unsubscribing"


def _after(frames: Buffered, cutoff: int | None) -> list[bytes]:
    return [f for offset, f in frames if cutoff is None or offset is None or offset > cutoff]


class _Held:
    """Frames held back for readers that are not live yet, and their size in bytes."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: Buffered = []
        self.size = 0

    def add(self, offset: int | None, frame: bytes) -> int:
        """Hold one more frame; return the size now held."""
        self.frames.append((offset, frame))
        self.size += len(frame)
        return self.size


class _Recovery(_Held):
    """A re-subscribed channel's live frames, held until its replay is read.

    It is also the ticket of that recovery: a replay read for an earlier one (the link
    dropped again meanwhile) must not finish this one. Readers that went live during the
    recovery had their own replay; ``late`` records where the held frames stood for each.
    """

    __slots__ = ("late",)

    def __init__(self) -> None:
        super().__init__()
        self.late: dict[Sink, int] = {}


class DropLog:
    """Which drops to log: the first of each reason, then at most one per ``interval_s``.

    :meth:`allow` answers None for a drop to leave out of the log, else how many drops
    of that reason were left out since the last one logged (the ``suppressed`` field).
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def allow(self, reason: str, now: float) -> int | None:
        last = self._last.get(reason)
        if last is not None and now - last < self._interval_s:
            self._suppressed[reason] += 1
            return None
        self._last[reason] = now
        return self._suppressed.pop(reason, 0)


class Registry:
    """Who reads which channel, and the Redis subscription state behind it."""

    def __init__(
        self,
        internal: dict[str, Callable[[bytes], None]] | None = None,
        *,
        max_message_bytes: int = 1024 * 1024,
        max_held_bytes: int = 1024 * 1024,
        on_resubscribed: Callable[[str, Position, object], None] | None = None,
        observe_fanout: Callable[[float], None] | None = None,
    ) -> None:
        # Gateway-to-gateway channels, always subscribed, handled here, never fanned out.
        self._internal = {name.encode(): handler for name, handler in (internal or {}).items()}
        self._max_message_bytes = max_message_bytes
        # Frames held per joining sink or recovering channel: the client buffer limit.
        self._max_held_bytes = max_held_bytes
        self._on_resubscribed = on_resubscribed
        # Called once per batch with the seconds from its first message to its last write.
        self._observe_fanout = observe_fanout
        self._active: dict[str, set[Sink]] = {}  # live readers
        self._waiting: dict[str, dict[Sink, asyncio.Future[None]]] = {}  # Redis not confirmed
        self._joining: dict[str, dict[Sink, _Held]] = {}  # confirmed, not activated
        self._recovering: dict[str, _Recovery] = {}  # whole channel, after a reconnect
        self._state: dict[str, _State] = {}
        #: internal channels Redis refused, with its answer; each is retried after a backoff
        self.refused_internal: dict[str, str] = {}
        self._internal_backoff: dict[str, Backoff] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._redis: RedisCommands | None = None
        self._gap: set[str] = set()
        # Last history position seen per channel, (offset, epoch): a plain tuple, set per message.
        self._positions: dict[str, tuple[int, str]] = {}
        # Positions read at subscribe time, for channels no message has passed through yet.
        self._noted: dict[str, Position] = {}
        # Frames per channel of the batch being read: one frame (the usual case of a
        # channel that got one message) or a list of them.
        self._batch: dict[str, bytes | list[bytes]] = {}
        self._batch_started = 0.0
        # raw channel -> (name, frame head): one lookup per message, internal channels excluded
        self._names: dict[bytes, tuple[str, bytes]] = {}
        # How many channels each live reader reads, and those reading more than one: only
        # those can get frames of two channels in one batch, and need them gathered.
        self._reads: dict[Sink, int] = {}
        self._multi: set[Sink] = set()
        self.messages_received = 0
        #: messages dropped instead of delivered, by reason (docs/metrics.md lists them)
        self.dropped: collections.Counter[str] = collections.Counter()
        self._drop_log = DropLog()
        self.deliveries = 0

    # -- queries -----------------------------------------------------------

    @property
    def internal_channels(self) -> set[str]:
        return {name.decode() for name in self._internal}

    def _clients_channels(self) -> set[str]:
        return self._active.keys() | self._waiting.keys() | self._joining.keys()

    @property
    def messages_dropped(self) -> int:
        """Messages dropped for any reason."""
        return self.dropped.total()

    @property
    def channel_count(self) -> int:
        """Channels some client reads or is joining."""
        return len(self._clients_channels())

    def subscribers(self, channel: str) -> int:
        return sum(len(t.get(channel, ())) for t in (self._active, self._waiting, self._joining))

    # Scrape-time queries: linear in the number of channels, never on the fan-out path.

    @property
    def redis_channel_count(self) -> int:
        """Channels Redis has confirmed on the subscriber connection (control channel included)."""
        return sum(1 for state in self._state.values() if state is _State.SUBSCRIBED)

    @property
    def subscription_count(self) -> int:
        """Client subscriptions: one per (client, channel) pair, live or joining."""
        tables = (self._active, self._waiting, self._joining)
        return sum(len(members) for table in tables for members in table.values())

    def top_channels(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` channels with the most subscribers, most first, then by name; none empty."""
        counts = ((-self.subscribers(c), c) for c in self._clients_channels())
        return [(c, -negative) for negative, c in heapq.nsmallest(n, counts) if negative]

    def _wanted(self, channel: str) -> bool:
        return (
            bool(self._active.get(channel))
            or bool(self._waiting.get(channel))
            or bool(self._joining.get(channel))
            or channel.encode() in self._internal
        )

    # -- client side -------------------------------------------------------

    def join(self, sink: Sink, channel: str) -> asyncio.Future[None]:
        """Start reading ``channel``; the future resolves once Redis has confirmed it.

        It fails with :class:`SubscriptionRefused` when Redis refuses the channel.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._state.get(channel) is _State.SUBSCRIBED:
            self._joining.setdefault(channel, {})[sink] = _Held()
            future.set_result(None)
            return future
        self._waiting.setdefault(channel, {})[sink] = future
        if channel not in self._state:
            self._request(channel)
        return future

    def barrier(self, channel: str) -> asyncio.Future[None]:
        """Resolves once every message Redis published on ``channel`` before now has been
        taken in; fails with ConnectionError if the subscriber connection is lost first.

        A history read on another connection can answer before messages published ahead of
        it have arrived here: activating a reader with the read's offset as cutoff only
        after this barrier keeps such late copies out of what it receives live.
        """
        if self._redis is None:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(ConnectionError("Redis connection lost"))
            return future
        return self._redis.barrier(channel)

    def activate(self, sink: Sink, channel: str, cutoff: int | None = None) -> bytes:
        """Make a joined sink a live reader; return the frames buffered meanwhile.

        Frames of history messages at or below ``cutoff`` (already replayed) are left out.
        """
        held = self._joining.get(channel, {}).pop(sink, None)
        if not self._joining.get(channel, True):
            del self._joining[channel]
        if held is None:
            return b""  # left, refused or overflowed in the meantime
        readers = self._active.setdefault(channel, set())
        if sink not in readers:
            readers.add(sink)
            self._count(sink, 1)
        recovery = self._recovering.get(channel)
        if recovery is not None:  # what the channel holds from now on is new to this reader
            recovery.late[sink] = len(recovery.frames)
        return b"".join(_after(held.frames, cutoff))

    def _count(self, sink: Sink, change: int) -> None:
        """Keep :attr:`_reads` and :attr:`_multi` in step with the live reader sets."""
        reads = self._reads.get(sink, 0) + change
        if reads > 0:
            self._reads[sink] = reads
        else:
            self._reads.pop(sink, None)
        if reads > 1:
            self._multi.add(sink)
        else:
            self._multi.discard(sink)

    def note_position(self, channel: str, position: Position) -> None:
        """A history position read at subscribe time, until messages bring newer ones.

        It lets a channel that has carried no message yet be recovered after a reconnect.
        It is no reference for the order of messages: those published before the read may
        still be on their way.
        """
        self._noted.setdefault(channel, position)

    def leave(self, sink: Sink, channels: Iterable[str]) -> None:
        """Remove ``sink`` from ``channels``; Redis unsubscribes each one nobody reads."""
        released: list[str] = []
        for channel in channels:
            active = self._active.get(channel)
            if active is not None and sink in active:
                active.discard(sink)
                self._count(sink, -1)
                if not active:
                    del self._active[channel]
            for table in (self._waiting, self._joining):
                members = table.get(channel)
                if members is not None and sink in members:
                    entry = members.pop(sink)
                    if isinstance(entry, asyncio.Future):
                        entry.cancel()
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
        wanted = sorted(
            self._active.keys() | self._waiting.keys() | self._joining.keys() | internal
        )
        self._state = dict.fromkeys(wanted, _State.SUBSCRIBING)
        if wanted:
            redis.subscribe(wanted)

    def on_disconnected(self) -> None:
        """The subscriber connection is gone: every channel read may miss messages."""
        self._redis = None
        for retry in self._retries.values():  # the next connection subscribes them anyway
            retry.cancel()
        self._retries.clear()
        self._batch.clear()
        self._recovering.clear()
        self._gap.update(self._active.keys() | self._joining.keys())
        self._state = dict.fromkeys(self._clients_channels(), _State.SUBSCRIBING)

    def on_lost(self, channels: Iterable[str]) -> list[str]:
        """Part of the subscriptions is gone (one cluster node): return those still wanted.

        The caller subscribes them again wherever they now live; their readers then get
        a recovery or a ``gap``, as after a full reconnect.
        """
        wanted = []
        for channel in channels:
            self._recovering.pop(channel, None)
            if not self._wanted(channel):
                self._state.pop(channel, None)
                continue
            self._state[channel] = _State.SUBSCRIBING
            if self._active.get(channel) or self._joining.get(channel):
                self._gap.add(channel)
            wanted.append(channel)
        return wanted

    def on_subscribed(self, channel: str) -> None:
        if not self._wanted(channel):
            self._state[channel] = _State.UNSUBSCRIBING
            if self._redis is not None:
                self._redis.unsubscribe([channel])
            return
        self._state[channel] = _State.SUBSCRIBED
        if channel.encode() in self._internal:
            if self.refused_internal.pop(channel, None) is not None:
                self._internal_backoff.pop(channel, None)
                log.info("internal_channel_subscribed", channel=channel)
            return
        if channel in self._gap:
            self._gap.discard(channel)
            for held in self._joining.get(channel, {}).values():
                held.add(None, gap_frame(channel))  # joined before the drop
            seen = self._positions.get(channel)
            position = Position(*seen) if seen is not None else self._noted.get(channel)
            if position is not None and self._on_resubscribed is not None:
                recovery = self._recovering[channel] = _Recovery()
                self._on_resubscribed(channel, position, recovery)
            else:
                self._send_gap(channel)
        joining = self._joining.setdefault(channel, {})
        for sink, future in self._waiting.pop(channel, {}).items():
            joining[sink] = _Held()
            if not future.done():
                future.set_result(None)

    def _send_gap(self, channel: str) -> None:
        frame = gap_frame(channel)
        for sink in self._active.get(channel, ()):
            sink.send(frame)

    def finish_recovery(
        self, channel: str, ticket: object, replay: Sequence[bytes] | None, cutoff: int
    ) -> bool:
        """Deliver what a re-subscribed channel missed, then what arrived meanwhile.

        ``ticket`` is the one ``on_resubscribed`` was given. ``replay`` holds the missed
        frames up to offset ``cutoff``; None means they could not be recovered, and the
        readers get a ``gap`` frame instead. Readers that went live during the recovery
        get only what the channel held after they did. False when this recovery was over
        already (the connection dropped again, or a gap was sent).
        """
        recovery = self._recovering.get(channel)
        if recovery is None or recovery is not ticket:
            return False
        del self._recovering[channel]
        held = recovery.frames
        if replay is None:
            chunk = b"".join([gap_frame(channel), *(frame for _, frame in held)])
        else:
            chunk = b"".join([*replay, *_after(held, cutoff)])
        for sink in self._active.get(channel, ()):
            start = recovery.late.get(sink)
            data = chunk if start is None else b"".join(frame for _, frame in held[start:])
            if data:
                sink.send(data)
        return True

    def on_unsubscribed(self, channel: str) -> None:
        if self._wanted(channel):
            if self._state.get(channel) is _State.SUBSCRIBED:
                # Not asked for: Redis dropped it (a cluster slot moved); messages may be lost.
                self._gap.add(channel)
            self._request(channel)
        else:
            self._state.pop(channel, None)
            self._positions.pop(channel, None)
            self._noted.pop(channel, None)
            self._names.pop(channel.encode(), None)

    def on_subscribe_refused(self, channels: list[str], message: str) -> None:
        """Redis answered SUBSCRIBE with an error (an ACL without the channel, say).

        Redis refuses a whole command when one of its channels is denied (NOPERM), so a
        refused command of several channels is sent again one channel at a time: only
        the denied ones end up refused. An internal channel is never given up: it is
        subscribed again after a backoff, and :attr:`refused_internal` says so meanwhile.
        """
        if len(channels) > 1:
            for channel in channels:
                if not self._wanted(channel):
                    self._state.pop(channel, None)
                elif self._state.get(channel) is _State.SUBSCRIBING and self._redis is not None:
                    self._redis.subscribe([channel])
            return
        for channel in channels:
            self._state.pop(channel, None)
            if channel.encode() in self._internal:
                self._internal_refused(channel, message)
                continue
            self._gap.discard(channel)
            self._positions.pop(channel, None)
            self._noted.pop(channel, None)
            for future in self._waiting.pop(channel, {}).values():
                if not future.done():
                    future.set_exception(SubscriptionRefused(message))
            active = self._active.pop(channel, set())
            for sink in active:
                self._count(sink, -1)
            for sink in active | set(self._joining.pop(channel, {})):
                sink.subscription_refused(channel, message)

    def _internal_refused(self, channel: str, message: str) -> None:
        self.refused_internal[channel] = message
        delay = self._internal_backoff.setdefault(channel, Backoff(base_s=0.5)).next_delay()
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
        if channel not in self._state and self._redis is not None:
            self._request(channel)

    def on_message(self, channel: bytes, payload: bytes) -> None:
        """Frame one message into the current batch; sent by :meth:`flush`.

        The fan-out's per-message path: one lookup for the channel, one frame, one slot
        in the batch; joins and recoveries in progress are handled aside.
        """
        named = self._names.get(channel)
        if named is None:
            handler = self._internal.get(channel)
            if handler is not None:
                handler(payload)
                return
            name = channel.decode("utf-8", "replace")
            named = self._names[channel] = (name, message_head(orjson.dumps(name)))
        self.messages_received += 1
        name, head = named
        if len(payload) > self._max_message_bytes:
            if (suppressed := self._dropped("oversized")) is not None:
                log.warning(
                    "message_dropped",
                    reason="oversized",
                    channel=name,
                    size_bytes=len(payload),
                    limit_bytes=self._max_message_bytes,
                    suppressed=suppressed,
                )
            return
        offset: int | None = None
        if payload[:1] == _ENVELOPE_FIRST and payload.startswith(ENVELOPE_PREFIX):
            envelope = open_envelope(payload)
            if envelope is None:
                if (suppressed := self._dropped("bad_envelope")) is not None:
                    log.warning(
                        "message_dropped",
                        reason="bad_envelope",
                        channel=name,
                        size_bytes=len(payload),
                        suppressed=suppressed,
                    )
                return
            offset, epoch, data = envelope
            known = self._positions.get(name)
            if known is not None and known[1] == epoch and offset <= known[0]:
                # Redis delivers a stream's offsets in order: this one is forged or replayed.
                if (suppressed := self._dropped("stale_offset")) is not None:
                    log.warning(
                        "message_dropped",
                        reason="stale_offset",
                        channel=name,
                        offset=offset,
                        position=known[0],
                        suppressed=suppressed,
                    )
                return
            self._positions[name] = (offset, epoch)
            frame = message_frame_from(head, data, offset, epoch)
        else:
            frame = message_frame_from(head, payload)
        if (self._joining or self._recovering) and self._set_aside(name, offset, frame):
            return
        batch = self._batch
        if not batch:  # the batch's first message starts the fan-out clock
            self._batch_started = time.perf_counter()
            batch[name] = frame
            return
        queued = batch.setdefault(name, frame)
        if queued is not frame:  # the channel's second message in this batch, or later
            if isinstance(queued, list):
                queued.append(frame)
            else:
                batch[name] = [queued, frame]

    def message_failed(self, channel: bytes, error: Exception) -> None:
        """Handling one message raised (a bug): it is dropped, the link and the batch go on."""
        if (suppressed := self._dropped("error")) is not None:
            log.error(
                "message_dropped",
                reason="error",
                channel=channel.decode("utf-8", "replace"),
                error=repr(error)[:200],
                suppressed=suppressed,
            )

    def _dropped(self, reason: str) -> int | None:
        """Count a drop; None to leave it out of the log, else the drops left out before it."""
        self.dropped[reason] += 1
        return self._drop_log.allow(reason, time.monotonic())

    def _set_aside(self, name: str, offset: int | None, frame: bytes) -> bool:
        """Hold a frame for joining readers; True when the channel is recovering (not live)."""
        limit = self._max_held_bytes
        joining = self._joining.get(name)
        if joining:
            for sink in [s for s, held in joining.items() if held.add(offset, frame) > limit]:
                size = joining.pop(sink).size
                sink.overflow(size)  # as if the frames had been written: 4008
            if not joining:
                del self._joining[name]
        recovering = self._recovering.get(name)
        if recovering is None:
            return False
        if recovering.add(offset, frame) > limit:
            # The replay would come too late to be of use: a gap now, live from here on.
            log.info("channel_gap", channel=name, reason="held_bytes")
            self.finish_recovery(name, recovering, None, 0)
        return True

    def flush(self) -> None:
        """Write the batch: one write per sink, however many frames it holds."""
        batch = self._batch
        if not batch:
            return
        self._batch = {}
        self._write(batch)
        if self._observe_fanout is not None:
            self._observe_fanout(time.perf_counter() - self._batch_started)

    def _write(self, batch: dict[str, bytes | list[bytes]]) -> None:
        active = self._active
        multi = self._multi
        single = len(batch) == 1  # nothing to gather: every reader gets one write anyway
        pending: dict[Sink, list[bytes]] | None = None
        deliveries = 0
        for channel, frames in batch.items():
            readers = active.get(channel)
            if not readers:
                continue
            if isinstance(frames, bytes):
                chunk = frames
                deliveries += len(readers)
            else:
                chunk = b"".join(frames)
                deliveries += len(readers) * len(frames)
            if single or not multi or multi.isdisjoint(readers):
                # No reader here reads another channel: its write is this chunk alone.
                for sink in readers:
                    sink.send(chunk)
                continue
            if pending is None:
                pending = {}
            for sink in readers:
                if sink not in multi:
                    sink.send(chunk)
                elif (chunks := pending.get(sink)) is None:
                    pending[sink] = [chunk]
                else:
                    chunks.append(chunk)
        self.deliveries += deliveries
        if pending:
            for sink, chunks in pending.items():
                sink.send(chunks[0] if len(chunks) == 1 else b"".join(chunks))
