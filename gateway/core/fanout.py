"""Fan-out: each message framed once, each reader written once per batch (pure).

The Redis subscriber hands over every message that one read from the socket produced
(:meth:`FanOut.on_message`), then calls :meth:`FanOut.flush`. Each message is framed once;
each reader gets one write per batch holding all the frames for its channels. Readers that
are not live yet (joining, or on a recovering channel) have the frames held for them aside.

A message the hub cannot deliver (oversized, a malformed history envelope, one that would
move its channel's position backwards) is dropped, counted by reason in
:attr:`FanOut.dropped` and logged as ``message_dropped``, at most once a second per reason
(:class:`DropLog`), so a flood of them cannot flood the log.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping

import orjson
import structlog

from gateway.core.frames import message_frame_from, message_head
from gateway.core.membership import Membership
from gateway.core.recovery import Recoveries
from gateway.core.sinks import Sink
from notify_wire.history import ENVELOPE_PREFIX, open_envelope

__all__ = ["DropLog", "FanOut"]

log = structlog.get_logger("gateway.hub")

_ENVELOPE_FIRST = ENVELOPE_PREFIX[:1]


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


class FanOut:
    def __init__(
        self,
        membership: Membership,
        recoveries: Recoveries,
        positions: dict[str, tuple[int, str]],
        internal: Mapping[str, Callable[[bytes], None]],
        *,
        max_message_bytes: int,
        max_held_bytes: int,
        observe_fanout: Callable[[float], None] | None,
    ) -> None:
        # Gateway-to-gateway channels: handled here, never fanned out.
        self._internal = {name.encode(): handler for name, handler in internal.items()}
        self._max_message_bytes = max_message_bytes
        self._max_held_bytes = max_held_bytes
        # Called once per batch with the seconds from its first message to its last write.
        self._observe_fanout = observe_fanout
        self._membership = membership
        self._recoveries = recoveries
        # The dicts and sets of the hot path, bound once (they are never rebound).
        self._live = membership.live
        self._multi = membership.multi
        self._joining = membership.joining
        self._recovering = recoveries.recovering
        # Last history position seen per channel, (offset, epoch): a plain tuple, per message.
        self._positions = positions
        # Frames per channel of the batch being read: one frame (the usual case of a
        # channel that got one message) or a list of them.
        self._batch: dict[str, bytes | list[bytes]] = {}
        self._batch_started = 0.0
        # raw channel -> (name, frame head): one lookup per message, internal channels excluded
        self._names: dict[bytes, tuple[str, bytes]] = {}
        self.messages_received = 0
        #: messages dropped instead of delivered, by reason (docs/metrics.md lists them)
        self.dropped: collections.Counter[str] = collections.Counter()
        self._drop_log = DropLog()
        self.deliveries = 0

    def forget(self, channel: str) -> None:
        """Nobody reads ``channel`` any more."""
        self._names.pop(channel.encode(), None)

    def clear(self) -> None:
        """The subscriber connection is gone: what the current read held is not delivered."""
        self._batch.clear()

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
            self._drop(
                "oversized", name, size_bytes=len(payload), limit_bytes=self._max_message_bytes
            )
            return
        offset: int | None = None
        if payload[:1] == _ENVELOPE_FIRST and payload.startswith(ENVELOPE_PREFIX):
            envelope = open_envelope(payload)
            if envelope is None:
                self._drop("bad_envelope", name, size_bytes=len(payload))
                return
            offset, epoch, data = envelope
            known = self._positions.get(name)
            if known is not None and known[1] == epoch and offset <= known[0]:
                # Redis delivers a stream's offsets in order: this one is forged or replayed.
                self._drop("stale_offset", name, offset=offset, position=known[0])
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

    def _drop(self, reason: str, channel: str, **fields: object) -> None:
        """Count a dropped message; log it unless its reason was logged within a second."""
        if (suppressed := self._dropped(reason)) is not None:
            log.warning(
                "message_dropped", reason=reason, channel=channel, suppressed=suppressed, **fields
            )

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
        joining = self._joining.get(name)
        if joining:
            limit = self._max_held_bytes
            over = [sink for sink, held in joining.items() if held.add(offset, frame) > limit]
            if over:
                sizes = [joining[sink].size for sink in over]
                self._membership.overflowed(name, over)
                for sink, size in zip(over, sizes, strict=True):
                    sink.overflow(size)  # as if the frames had been written: 4008
        return self._recoveries.hold(name, offset, frame)

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
        active = self._live
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
