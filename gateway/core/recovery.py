"""Channels that lost their Redis subscription for a while: recovered, or told of a gap.

After the subscriber connection comes back (or a cluster node's), a channel whose history
position is known is recovered: ``on_resubscribed`` reads what was missed, live frames are
held meanwhile, and :meth:`Recoveries.finish` delivers the replay and then what arrived, with
nothing lost or doubled. Any other channel gets a ``gap`` frame, and so does a recovering
channel whose held frames pass the buffer limit (the replay would come too late).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import structlog

from gateway.core.frames import gap_frame
from gateway.core.holding import Held, after
from gateway.core.membership import Membership
from gateway.core.sinks import Sink
from notify_wire.history import Position

__all__ = ["Recoveries", "Recovery"]

log = structlog.get_logger("gateway.hub")


class Recovery(Held):
    """A re-subscribed channel's live frames, held until its replay is read.

    It is also the ticket of that recovery: a replay read for an earlier one (the link
    dropped again meanwhile) must not finish this one. Readers that went live during the
    recovery had their own replay; ``late`` records where the held frames stood for each.
    """

    __slots__ = ("late",)

    def __init__(self) -> None:
        super().__init__()
        self.late: dict[Sink, int] = {}


class Recoveries:
    def __init__(
        self,
        membership: Membership,
        positions: dict[str, tuple[int, str]],
        on_resubscribed: Callable[[str, Position, object], None] | None,
        max_held_bytes: int,
    ) -> None:
        self._membership = membership
        # Last history position seen per channel in messages (shared with the fan-out).
        self._positions = positions
        self._on_resubscribed = on_resubscribed
        self._max_held_bytes = max_held_bytes
        #: recovering channels and what they hold
        self.recovering: dict[str, Recovery] = {}
        # Channels whose readers may have missed messages, until they are subscribed again.
        self._gap: set[str] = set()
        # Positions read at subscribe time, for channels no message has passed through yet.
        self._noted: dict[str, Position] = {}

    def note_position(self, channel: str, position: Position) -> None:
        """A history position read at subscribe time, until messages bring newer ones.

        It lets a channel that has carried no message yet be recovered after a reconnect.
        It is no reference for the order of messages: those published before the read may
        still be on their way.
        """
        self._noted.setdefault(channel, position)

    def forget(self, channel: str) -> None:
        """Nobody reads ``channel`` any more (or Redis refused it)."""
        self._gap.discard(channel)
        self._positions.pop(channel, None)
        self._noted.pop(channel, None)

    # -- the link ------------------------------------------------------------------------

    def disconnected(self) -> None:
        """The subscriber connection is gone: every channel read may miss messages."""
        self.recovering.clear()
        self._gap.update(self._membership.live.keys() | self._membership.joining.keys())

    def lost(self, channels: Iterable[str]) -> None:
        """These channels' subscriptions are gone (one cluster node, or a moved slot)."""
        for channel in channels:
            self.recovering.pop(channel, None)
            if self._membership.live.get(channel) or self._membership.joining.get(channel):
                self._gap.add(channel)

    def subscribed(self, channel: str) -> None:
        """Redis confirmed ``channel``: recover it, or send its gap, if it had lost messages."""
        if channel not in self._gap:
            return
        self._gap.discard(channel)
        for held in self._membership.joining.get(channel, {}).values():
            held.add(None, gap_frame(channel))  # joined before the drop
        seen = self._positions.get(channel)
        position = Position(*seen) if seen is not None else self._noted.get(channel)
        if position is not None and self._on_resubscribed is not None:
            recovery = self.recovering[channel] = Recovery()
            self._on_resubscribed(channel, position, recovery)
        else:
            frame = gap_frame(channel)
            for sink in self._membership.live.get(channel, ()):
                sink.send(frame)

    # -- readers and frames --------------------------------------------------------------

    def went_live(self, sink: Sink, channel: str) -> None:
        recovery = self.recovering.get(channel)
        if recovery is not None:  # what the channel holds from now on is new to this reader
            recovery.late[sink] = len(recovery.frames)

    def hold(self, channel: str, offset: int | None, frame: bytes) -> bool:
        """Hold a live frame of a recovering channel; False when it is not recovering."""
        recovery = self.recovering.get(channel)
        if recovery is None:
            return False
        if recovery.add(offset, frame) > self._max_held_bytes:
            # The replay would come too late to be of use: a gap now, live from here on.
            log.info("channel_gap", channel=channel, reason="held_bytes")
            self.finish(channel, recovery, None, 0)
        return True

    def finish(
        self, channel: str, ticket: object, replay: Sequence[bytes] | None, cutoff: int
    ) -> bool:
        """Deliver what a re-subscribed channel missed, then what arrived meanwhile.

        ``ticket`` is the one ``on_resubscribed`` was given. ``replay`` holds the missed
        frames up to offset ``cutoff``; None means they could not be recovered, and the
        readers get a ``gap`` frame instead. Readers that went live during the recovery
        get only what the channel held after they did. False when this recovery was over
        already (the connection dropped again, or a gap was sent).
        """
        recovery = self.recovering.get(channel)
        if recovery is None or recovery is not ticket:
            return False
        del self.recovering[channel]
        held = recovery.frames
        if replay is None:
            chunk = b"".join([gap_frame(channel), *(frame for _, frame in held)])
        else:
            chunk = b"".join([*replay, *after(held, cutoff)])
        for sink in self._membership.live.get(channel, ()):
            start = recovery.late.get(sink)
            data = chunk if start is None else b"".join(frame for _, frame in held[start:])
            if data:
                sink.send(data)
        return True
