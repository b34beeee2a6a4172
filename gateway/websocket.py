"""A lean WebSocket server: websockets' sans-I/O protocol driven by asyncio transports.

Each connection is one :class:`WebSocket`, an :class:`asyncio.Protocol` with slots
around websockets' :class:`~websockets.server.ServerProtocol`. While a connection is
idle it owns no task, future or queue: bytes from the peer are handled in
``data_received`` and outgoing frames go straight to the transport. That is what
keeps an idle connection small (docs/benchmarks.md).

The sans-I/O protocol does what RFC 6455 asks of the reading side: handshake
validation (``Origin`` included), unmasking, fragmentation and control-frame rules,
automatic pongs, the close handshake, the frame size limit. This module adds message
assembly with UTF-8 validation of text (1007), the raw write path for pre-built
frames (:meth:`WebSocket.send`), heartbeat pings, and timeouts for the opening and
the closing handshakes. Two rules keep the bytes on the wire correct: each write is
a whole frame, so the protocol's own control frames never land inside one, and
nothing is written once the connection has left the OPEN state, so no data frame
follows a close frame. ``bench/autobahn`` runs the Autobahn|Testsuite against an
echo endpoint built on this class.

Subclasses implement :meth:`WebSocket.respond` (the HTTP side of the upgrade
request), :meth:`WebSocket.opened`, :meth:`WebSocket.received` and
:meth:`WebSocket.finished`; :class:`WebSocketServer` accepts connections and shuts
them down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from websockets.datastructures import Headers
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin

from gateway.protocol import CloseCode

__all__ = ["WebSocket", "WebSocketOptions", "WebSocketServer"]

_handshake_log = logging.getLogger("websockets.server")
_NO_HEADERS = Headers()

#: a response, or None to accept the upgrade, now or later
Answer = Response | Awaitable[Response | None] | None


@dataclasses.dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """What every connection of a server shares."""

    #: largest message accepted from a client (1009 above it); None: no limit
    max_size: int | None
    #: unsent bytes a client may have before :meth:`WebSocket.overflow`
    max_buffer: int
    #: allowed ``Origin`` headers (None in the list: no header); None: any
    origins: Sequence[Origin | None] | None = None
    #: offer permessage-deflate (what the client sends may be compressed)
    compression: bool = False
    #: seconds from TCP accept to the end of the upgrade
    handshake_timeout_s: float = 10.0
    #: seconds a close handshake may take before the TCP connection is dropped
    close_timeout_s: float = 5.0


class WebSocket(asyncio.Protocol):
    """One connection: the upgrade, then messages in and pre-built frames out."""

    __slots__ = (
        "_fragments",
        "_protocol",
        "_server",
        "_timer",
        "_transport",
        "awaiting_pong",
        "closed",
        "remote_address",
        "request",
    )

    def __init__(self, server: WebSocketServer) -> None:
        self._server = server
        options = server.options
        self._protocol = ServerProtocol(
            origins=options.origins,
            extensions=server.extensions,
            max_size=options.max_size,
            logger=_handshake_log,
        )
        self._transport: asyncio.Transport  # set by connection_made, before any use
        self._timer: asyncio.TimerHandle | None = None
        self._fragments: tuple[Opcode, bytearray] | None = None
        #: the upgrade request (subclasses may drop its headers once read)
        self.request: Request | None = None
        #: no data frame may be written: not open yet, or closing
        self.closed = True
        #: a heartbeat ping went out and its pong has not come back
        self.awaiting_pong = False
        self.remote_address: tuple[str, int] | None = None

    # -- what subclasses implement ---------------------------------------------------

    def respond(self, request: Request) -> Answer:
        """The answer to the upgrade request: None accepts it (the default)."""
        return None

    def opened(self) -> None:
        """The upgrade succeeded: :meth:`send` works from now on."""

    def received(self, data: str | bytes) -> None:
        """One whole message from the peer: ``str`` for text, ``bytes`` for binary."""

    def finished(self) -> None:
        """The TCP connection is gone (called once, also for refused upgrades)."""

    def overflow(self, buffered: int) -> None:
        """The peer reads too slowly: the default closes with 4008."""
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outgoing buffer limit reached")

    # -- what subclasses and their owners call ---------------------------------------

    @property
    def state(self) -> State:
        return self._protocol.state

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 if the connection dropped); None while open."""
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
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            self._flush()
            self._expect_close()

    def ping(self) -> None:
        """Send a heartbeat ping; :attr:`awaiting_pong` stays True until its pong."""
        if self._protocol.state is State.OPEN:
            self.awaiting_pong = True
            self._protocol.send_ping(b"")
            self._flush()

    def forget_request(self) -> None:
        """Free the upgrade request's headers once they have been read.

        The protocol's parser keeps the request object for the connection's whole life;
        its headers were the largest part of an idle connection (about 2 KiB), and the
        ``Authorization`` header holds the bearer token.
        """
        if self.request is not None:
            self.request.headers = _NO_HEADERS
            self.request = None

    def pause_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        self._transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        # The transport calls pause_writing() when the unsent bytes pass the limit.
        self._transport.set_write_buffer_limits(high=self._server.options.max_buffer)
        address = transport.get_extra_info("peername")
        if isinstance(address, tuple):
            self.remote_address = (str(address[0]), int(address[1]))
        self._server.connections.add(self)
        self._set_timer(self._server.options.handshake_timeout_s, self.abort)

    def data_received(self, data: bytes) -> None:
        protocol = self._protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush()  # automatic pongs and close replies
        if protocol.state is not State.OPEN:
            self.closed = True
        if protocol.close_expected():
            self._expect_close()
        for event in events:
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._request(event)

    def pause_writing(self) -> None:
        if self.closed:
            return  # the close frame itself, or the rest of a close handshake
        self.closed = True  # no more data frames; the close frame is written next
        buffered = self._transport.get_write_buffer_size()
        # Called from inside a write, possibly mid fan-out: close once that is over.
        asyncio.get_running_loop().call_soon(self.overflow, buffered)

    def eof_received(self) -> bool:
        self.closed = True  # the protocol is CLOSED now: nothing more may be written
        self._protocol.receive_eof()
        self._flush()
        # The transport closes once its buffer drains; a peer that half-closed and reads
        # nothing more would keep it (and its buffer) forever.
        self._expect_close()
        return False  # the WebSocket close handshake never needs a half-open socket

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.receive_eof()  # the state becomes CLOSED
        self.closed = True
        self._cancel_timer()
        self._server.forget(self)
        self.finished()

    # -- internals -----------------------------------------------------------------

    def _flush(self) -> None:
        transport = self._transport
        for data in self._protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
            else:  # TLS
                transport.close()

    def _set_timer(self, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expect_close(self) -> None:
        """The peer should close the TCP connection now: drop it after the close timeout,
        unless a sooner deadline is set (a peer that keeps sending after the close must
        not push it back)."""
        delay = self._server.options.close_timeout_s
        timer = self._timer
        if timer is None or timer.when() > asyncio.get_running_loop().time() + delay:
            self._set_timer(delay, self.abort)

    def _request(self, request: Request) -> None:
        self.request = request
        try:
            answer = self.respond(request)
        except Exception:
            _handshake_log.error("answering the upgrade request failed", exc_info=True)
            answer = self._error()
        if answer is None or isinstance(answer, Response):
            self._answer(request, answer)
        else:
            self._server.spawn(self._answer_later(request, answer))

    async def _answer_later(self, request: Request, answer: Awaitable[Response | None]) -> None:
        try:
            response = await answer
        except Exception:
            _handshake_log.error("answering the upgrade request failed", exc_info=True)
            response = self._error()
        if self._protocol.state is State.CONNECTING:  # not gone meanwhile
            self._answer(request, response)

    def _error(self) -> Response:
        return self._protocol.reject(
            http.HTTPStatus.INTERNAL_SERVER_ERROR,
            "Failed to open a WebSocket connection.\nSee server log for more information.\n",
        )

    def _answer(self, request: Request, response: Response | None) -> None:
        protocol = self._protocol
        if protocol.eof_sent:
            return  # bytes after the request (a pipelined request, a frame) failed it already
        if response is None:
            response = protocol.accept(request)
            if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS and (
                self._server.closing
            ):
                response = protocol.reject(
                    http.HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n"
                )
        protocol.send_response(response)
        self._flush()
        if protocol.state is State.OPEN:
            self._cancel_timer()
            self.closed = False
            self.opened()
        else:
            self._expect_close()

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
            self._protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
            self.closed = True
            self._flush()
            self._expect_close()
            return
        self.received(text)


class WebSocketServer:
    """Accepts connections made by ``factory`` and closes them all on :meth:`close`."""

    def __init__(self, factory: Callable[[WebSocketServer], WebSocket], options: WebSocketOptions):
        self.options = options
        # websockets' defaults (4 KiB windows, memLevel 5), shared by every connection
        self.extensions: Sequence[ServerExtensionFactory] | None = (
            enable_server_permessage_deflate(None) if options.compression else None
        )
        self._factory = factory
        self.connections: set[WebSocket] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._drained: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: self._factory(self), host, port, reuse_port=reuse_port, backlog=1024
        )

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "listen() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run a connection's background step; kept referenced until done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, ws: WebSocket) -> None:
        self.connections.discard(ws)
        if not self.connections and self._drained is not None:
            self._drained.set()

    async def close(self, code: int, reason: str, timeout_s: float) -> bool:
        """Stop accepting; close every connection with ``code``; False if some outlived
        ``timeout_s`` (they are dropped then)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        self._drained = asyncio.Event()
        for ws in list(self.connections):
            if ws.state is not State.CONNECTING:
                ws.close(code, reason)
            elif ws.request is None:
                ws.abort()  # not even a request yet
            # else: an HTTP answer is on its way, or an upgrade that gets 503 (_answer)
        if not self.connections:
            self._drained.set()
        try:
            async with asyncio.timeout(timeout_s):
                await self._drained.wait()
            return True
        except TimeoutError:
            for ws in list(self.connections):
                ws.abort()
            return False
        finally:
            for task in list(self._tasks):
                task.cancel()
