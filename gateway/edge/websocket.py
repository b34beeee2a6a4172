"""A lean WebSocket connection: websockets' sans-I/O protocol on an asyncio transport.

A :class:`WebSocket` starts as an :class:`~gateway.edge.exchange.HttpConnection`. An upgrade
request is checked by websockets' :class:`~websockets.server.ServerProtocol` (``accept()``:
headers, ``Origin``, extensions) and answered with its 101; from then on the same protocol
object reads frames. While a connection is idle it owns no task, future or queue: bytes from
the peer are handled in ``data_received`` and outgoing frames go straight to the transport.
That is what keeps an idle connection small (docs/benchmarks.md).

The sans-I/O protocol does what RFC 6455 asks of the reading side: unmasking,
fragmentation and control-frame rules, automatic pongs, the close handshake, the frame size
limit. This module adds message assembly with UTF-8 validation of text (1007), a budget of
frames per second per connection (every frame counts: pings, pongs, fragments; 4029 past
it), the raw write path for pre-built frames (:meth:`WebSocket.send`), heartbeat pings, and
the closing handshake's timeout. Bytes go to the parser in slices with the frame budget
checked between them, so the work done per socket read is bounded. Two rules keep the bytes
on the wire correct: each write is a whole frame, so the protocol's own control frames never
land inside one, and nothing is written once the connection has left the OPEN state, so no
data frame follows a close frame. ``bench/autobahn`` runs the Autobahn|Testsuite against an
echo endpoint built on this class.

Subclasses implement :meth:`~gateway.edge.exchange.HttpConnection.respond` (the HTTP side),
:meth:`WebSocket.opened`, :meth:`WebSocket.received` and
:meth:`~gateway.edge.exchange.HttpConnection.finished`.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from gateway.core.bucket import TokenBucket
from gateway.edge.exchange import READ_SLICE, HttpConnection
from gateway.edge.http import text_response
from gateway.edge.http11 import HttpRequest
from gateway.edge.options import Owner
from notify_wire.codes import CloseReason

__all__ = ["WebSocket"]

_handshake_log = logging.getLogger("websockets.server")


class WebSocket(HttpConnection):
    """One connection: HTTP requests, maybe an upgrade, then messages in and pre-built
    frames out."""

    __slots__ = ("_budget", "_fragments", "_protocol", "awaiting_pong", "closed")

    def __init__(self, server: Owner) -> None:
        super().__init__(server)
        # Set by the upgrade: no WebSocket state is kept for plain HTTP connections.
        self._protocol: ServerProtocol | None = None
        self._budget: TokenBucket | None = None
        self._fragments: tuple[Opcode, bytearray] | None = None
        #: no data frame may be written: not open yet, or closing
        self.closed = True
        #: a heartbeat ping went out and its pong has not come back
        self.awaiting_pong = False

    # -- what subclasses implement ---------------------------------------------------

    def opened(self) -> None:
        """The upgrade succeeded: :meth:`send` works from now on."""

    def received(self, data: str | bytes) -> None:
        """One whole message from the peer: ``str`` for text, ``bytes`` for binary."""

    def overflow(self, buffered: int) -> None:
        """The peer reads too slowly: the default closes with 4008."""
        reason = CloseReason.SLOW_CONSUMER
        self.close(reason.code, reason.text)

    def flooded(self) -> None:
        """The peer sent more frames than its budget; the connection is being failed."""

    # -- what subclasses and their owners call ---------------------------------------

    @property
    def ws_state(self) -> State:
        """The WebSocket state: CONNECTING until the upgrade."""
        return State.CONNECTING if self._protocol is None else self._protocol.state

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 if the connection dropped); None while open."""
        if self._protocol is None:
            return None
        code = self._protocol.close_code
        return None if code is None else int(code)  # a plain int in logs, not an enum

    def send(self, data: bytes) -> None:
        """Write ``data`` (whole frames) now; past the buffer limit, :meth:`overflow`."""
        # The fan-out calls this once per subscriber: keep it to a flag and a write.
        if not self.closed:
            self._transport.write(data)

    def close(self, code: int, reason: str = "") -> None:
        """Start the close handshake; returns at once.

        The close frame waits behind the unsent bytes; a peer that reads nothing at all
        would hold the connection open, so the TCP connection is dropped if the
        handshake has not finished within the close timeout.
        """
        self.closed = True
        protocol = self._protocol
        if protocol is not None and protocol.state is State.OPEN:
            protocol.send_close(code, reason)
            self._flush()
            self._expect_close()

    def shutdown(self, code: int, reason: str) -> None:
        if self._http is None:
            self.close(code, reason)
        else:
            super().shutdown(code, reason)

    def ping(self) -> None:
        """Send a heartbeat ping; :attr:`awaiting_pong` stays True until its pong."""
        protocol = self._protocol
        if protocol is not None and protocol.state is State.OPEN:
            self.awaiting_pong = True
            protocol.send_ping(b"")
            self._flush()

    def forget_request(self) -> None:
        """Free the upgrade request once read: its headers were the largest part of an idle
        connection (about 2 KiB), and the ``Authorization`` header holds the bearer token."""
        self.request = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._http is None:
            self._frames_received(data)
        else:
            super().data_received(data)

    def pause_writing(self) -> None:
        if self.closed:
            return  # HTTP, the close frame itself, or the rest of a close handshake
        self.closed = True  # no more data frames; the close frame is written next
        buffered = self._transport.get_write_buffer_size()
        # Called from inside a write, possibly mid fan-out: close once that is over.
        asyncio.get_running_loop().call_soon(self.overflow, buffered)

    def eof_received(self) -> bool:
        self.closed = True  # nothing more may be written once the protocol is CLOSED
        if self._http is not None:
            return super().eof_received()
        protocol = cast(ServerProtocol, self._protocol)
        protocol.receive_eof()
        self._flush()
        # The transport closes once its buffer drains; a peer that half-closed and reads
        # nothing more would keep it (and its buffer) forever.
        self._expect_close()
        return False  # the WebSocket close handshake never needs a half-open socket

    def connection_lost(self, exc: Exception | None) -> None:
        if self._protocol is not None:
            self._protocol.receive_eof()  # the state becomes CLOSED
        self.closed = True
        super().connection_lost(exc)

    # -- the upgrade ---------------------------------------------------------------------

    def _upgrade(self, request: HttpRequest, frames: bytes) -> bool:
        """Check the upgrade request with websockets and switch to WebSocket, or refuse."""
        options = self._server.options
        # websockets 17.4's sans-I/O protocol, created in the OPEN state: its parser reads
        # frames from the first byte (the request was read by httptools, never twice), and
        # accept() checks the request and negotiates extensions whatever the state.
        # send_response() insists on CONNECTING, so the 101 is written here.
        # tests/test_http.py::test_websockets_protocol_created_open_* catch a change.
        protocol = ServerProtocol(
            origins=options.origins,
            extensions=self._server.extensions,
            max_size=options.max_size,
            logger=_handshake_log,
            state=State.OPEN,
        )
        response = protocol.accept(Request(request.target, request.headers))
        if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS and self._server.closing:
            response = text_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n"
            )
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            request.keep_alive = False  # the upgrade's own headers make no sense to reuse
            self._write_answer(request, response)
            return False
        self._transport.write(response.serialize())
        self._protocol = protocol
        self._budget = TokenBucket(
            options.frame_rate, options.frame_burst, asyncio.get_running_loop().time()
        )
        self.request = request
        self.closed = False
        return True

    def _opened(self, frames: bytes) -> None:
        self.opened()
        if frames and not self._transport.is_closing():
            self._frames_received(frames)

    # -- frames ------------------------------------------------------------------------

    def _frames_received(self, data: bytes) -> None:
        protocol = cast(ServerProtocol, self._protocol)
        budget = cast(TokenBucket, self._budget)
        now = asyncio.get_running_loop().time()
        size = len(data)
        for start in range(0, size, READ_SLICE):
            protocol.receive_data(data if size <= READ_SLICE else data[start : start + READ_SLICE])
            events = protocol.events_received()
            if events and not budget.take(now, len(events)):
                self._flood()
                return
            self._flush()  # automatic pongs and close replies
            if protocol.state is not State.OPEN:
                self.closed = True
            if protocol.close_expected():
                self._expect_close()
            for event in events:
                self._frame(cast(Frame, event))

    def _flood(self) -> None:
        """Fail the connection: the frames of this slice and after are never handled
        (also while closing: a peer that floods after the close is not read either)."""
        protocol = cast(ServerProtocol, self._protocol)
        reason = CloseReason.FRAME_RATE
        protocol.fail(reason.code, reason.text_with(rate=self._server.options.frame_rate))
        self.closed = True
        self._flush()
        self._expect_close()
        self.flooded()

    def _flush(self) -> None:
        transport = self._transport
        for data in cast(ServerProtocol, self._protocol).data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:  # TLS
                transport.close()

    def _expect_close(self) -> None:
        """The peer should close the TCP connection now: drop it after the close timeout,
        unless a sooner deadline is set (a peer that keeps sending after the close must
        not push it back)."""
        delay = self._server.options.close_timeout_s
        timer = self._timer
        if timer is None or timer.when() > asyncio.get_running_loop().time() + delay:
            self._set_timer(delay, self.abort)

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode, bytes(frame.data))
            else:
                self._fragments = (opcode, bytearray(frame.data))
        elif opcode is Opcode.CONT:
            # The protocol checked the order and the total size (max_size) already.
            first, data = cast(tuple[Opcode, bytearray], self._fragments)
            data += frame.data
            if frame.fin:
                self._fragments = None
                self._message(first, bytes(data))
        elif opcode is Opcode.PONG:
            self.awaiting_pong = False

    def _message(self, opcode: Opcode, data: bytes) -> None:
        if self.closed:
            return  # sent before the peer saw our close frame
        if opcode is Opcode.BINARY:
            self.received(data)
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            protocol = cast(ServerProtocol, self._protocol)
            reason = CloseReason.INVALID_UTF8
            protocol.fail(reason.code, reason.text)
            self.closed = True
            self._flush()
            self._expect_close()
            return
        self.received(text)
