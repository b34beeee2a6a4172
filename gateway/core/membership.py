"""Who reads which channel, at every stage: the one record of it (pure).

A client holds a channel from its ``subscribe`` on: first *waiting* (Redis has not
confirmed the subscription yet), then *joining* (confirmed; its frames are held while the
client's history is read), then *live*. :meth:`Membership.channels_of` is the set of
channels a client holds, whatever the stage; the per-connection state machine reads the
same set object, so the two can never disagree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from gateway.core.holding import Held
from gateway.core.sinks import Sink

__all__ = ["Membership"]


class Membership:
    __slots__ = ("_of_sink", "joining", "live", "multi", "reads", "waiting")

    def __init__(self) -> None:
        #: live readers per channel
        self.live: dict[str, set[Sink]] = {}
        #: readers whose subscription Redis has not confirmed yet
        self.waiting: dict[str, dict[Sink, asyncio.Future[None]]] = {}
        #: confirmed readers not live yet, and the frames held for each
        self.joining: dict[str, dict[Sink, Held]] = {}
        # How many channels each live reader reads, and those reading more than one: only
        # those can get frames of two channels in one batch, and need them gathered.
        self.reads: dict[Sink, int] = {}
        self.multi: set[Sink] = set()
        self._of_sink: dict[Sink, set[str]] = {}

    # -- queries -------------------------------------------------------------------------

    def channels_of(self, sink: Sink) -> set[str]:
        """The channels ``sink`` holds, at any stage (the same set object for its life)."""
        return self._of_sink.setdefault(sink, set())

    def wanted(self, channel: str) -> bool:
        return bool(
            self.live.get(channel) or self.waiting.get(channel) or self.joining.get(channel)
        )

    def channels(self) -> set[str]:
        """Channels some client holds."""
        return self.live.keys() | self.waiting.keys() | self.joining.keys()

    def subscribers(self, channel: str) -> int:
        return sum(len(t.get(channel, ())) for t in (self.live, self.waiting, self.joining))

    def subscription_count(self) -> int:
        """One per (client, channel) pair, at any stage."""
        tables = (self.live, self.waiting, self.joining)
        return sum(len(members) for table in tables for members in table.values())

    # -- stages --------------------------------------------------------------------------

    def wait(self, sink: Sink, channel: str, future: asyncio.Future[None]) -> None:
        self.waiting.setdefault(channel, {})[sink] = future
        self.channels_of(sink).add(channel)

    def hold(self, sink: Sink, channel: str) -> None:
        self.joining.setdefault(channel, {})[sink] = Held()
        self.channels_of(sink).add(channel)

    def confirm(self, channel: str) -> list[asyncio.Future[None]]:
        """Redis confirmed ``channel``: its waiting readers start joining; their futures."""
        waiting = self.waiting.pop(channel, {})
        joining = self.joining.setdefault(channel, {})
        for sink in waiting:
            joining[sink] = Held()
        if not joining:
            del self.joining[channel]
        return list(waiting.values())

    def go_live(self, sink: Sink, channel: str) -> Held | None:
        """Make a joining reader live; the frames held for it (None: it is not joining)."""
        members = self.joining.get(channel)
        held = None if members is None else members.pop(sink, None)
        if members is not None and not members:
            del self.joining[channel]
        if held is None:
            return None
        readers = self.live.setdefault(channel, set())
        if sink not in readers:
            readers.add(sink)
            self._count(sink, 1)
        return held

    def overflowed(self, channel: str, sinks: Iterable[Sink]) -> None:
        """Joining readers whose held frames passed the limit stop joining (4008)."""
        members = self.joining[channel]
        for sink in sinks:
            members.pop(sink)
            self.channels_of(sink).discard(channel)
        if not members:
            del self.joining[channel]

    def remove(self, sink: Sink, channel: str) -> None:
        """``sink`` no longer holds ``channel``, whatever the stage."""
        live = self.live.get(channel)
        if live is not None and sink in live:
            live.discard(sink)
            self._count(sink, -1)
            if not live:
                del self.live[channel]
        for table in (self.waiting, self.joining):
            members = table.get(channel)
            if members is not None and sink in members:
                entry = members.pop(sink)
                if isinstance(entry, asyncio.Future):
                    entry.cancel()
                if not members:
                    del table[channel]
        held = self._of_sink.get(sink)
        if held is not None:
            held.discard(channel)

    def forget(self, sink: Sink) -> None:
        """``sink`` is gone and holds nothing any more: drop its record."""
        self._of_sink.pop(sink, None)

    def drop(self, channel: str) -> tuple[list[asyncio.Future[None]], set[Sink]]:
        """Nobody may hold ``channel`` (Redis refused it): the waiting readers' futures, and
        the readers that were joining or live."""
        waiting = self.waiting.pop(channel, {})
        live = self.live.pop(channel, set())
        for sink in live:
            self._count(sink, -1)
        sinks = live | set(self.joining.pop(channel, {}))
        for sink in sinks | waiting.keys():
            self.channels_of(sink).discard(channel)
        return list(waiting.values()), sinks

    def _count(self, sink: Sink, change: int) -> None:
        """Keep :attr:`reads` and :attr:`multi` in step with the live reader sets."""
        reads = self.reads.get(sink, 0) + change
        if reads > 0:
            self.reads[sink] = reads
        else:
            self.reads.pop(sink, None)
        if reads > 1:
            self.multi.add(sink)
        else:
            self.multi.discard(sink)
