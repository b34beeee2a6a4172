"""The raw outgoing path: pre-built frames written straight to a WebSocket's transport.

The websockets library keeps everything else (handshake, reading and validating
client frames, ping/pong, the close handshake); this module only adds complete,
unmasked data frames (:func:`gateway.protocol.text_frame` / ``binary_frame``) to
the same transport, so one bytes object can serve every subscriber. Two rules keep
the wire RFC 6455-correct: each write is a whole frame (so it never splits a
control frame the library writes), and nothing is written once the protocol has
left the OPEN state (no data frame may follow a close frame). ``bench/autobahn``
proves it with the Autobahn|Testsuite against an echo endpoint built on this class.
"""

from __future__ import annotations

import asyncio
from typing import cast

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from gateway.protocol import CloseCode

__all__ = ["FrameWriter", "close_later"]

# Close handshakes started from synchronous code; referenced until done.
_closing: set[asyncio.Task[None]] = set()


def close_later(ws: ServerConnection, code: CloseCode, reason: str) -> None:
    """Start a close handshake from synchronous code (the fan-out path); returns at once.

    The close frame waits behind the unsent bytes, and websockets' close() waits for them
    to drain before its close timeout even starts: a peer that reads nothing at all would
    hold the connection, and its buffer, for as long as TCP keeps it. So the transport is
    aborted if the handshake has not finished ``close_timeout`` seconds from now.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(ws.close(code, reason))
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    if ws.close_timeout is not None:
        deadline = loop.call_later(ws.close_timeout, ws.transport.abort)
        task.add_done_callback(lambda _task: deadline.cancel())


class FrameWriter:
    """A non-blocking, bounded writer of pre-built frames to one WebSocket."""

    __slots__ = ("_max_buffer", "_transport", "_ws", "closed")

    def __init__(self, ws: ServerConnection, max_buffer: int) -> None:
        self._ws = ws
        self._transport = cast(asyncio.WriteTransport, ws.transport)
        self._max_buffer = max_buffer
        self.closed = False

    def send(self, data: bytes) -> None:
        """Write ``data`` (whole frames) now; over the buffer limit, :meth:`overflow`."""
        if self.closed:
            return
        if self._ws.protocol.state is not State.OPEN:
            self.closed = True  # a close frame was sent: no data frame may follow it
            return
        transport = self._transport
        transport.write(data)
        buffered = transport.get_write_buffer_size()
        if buffered > self._max_buffer:
            self.overflow(buffered)

    def overflow(self, buffered: int) -> None:
        """The peer reads too slowly: stop writing and close with 4008."""
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outgoing buffer limit reached")

    def close(self, code: CloseCode, reason: str) -> None:
        """Stop writing and start the close handshake; returns at once."""
        if not self.closed:
            self.closed = True
            close_later(self._ws, code, reason)
