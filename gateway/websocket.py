"""A lean HTTP/1.1 and WebSocket server: httptools and websockets' sans-I/O protocol on
asyncio transports.

Each connection is one :class:`WebSocket`, an :class:`asyncio.Protocol` with slots. It starts
in HTTP mode: :class:`gateway.http11.RequestReader` (httptools) reads requests, which are
answered in order by :meth:`WebSocket.respond` (a response now, an awaitable of one, or None
to upgrade), with keep-alive, pipelining, ``HEAD`` without a body and ``100 Continue``. An
upgrade request is checked by websockets' :class:`~websockets.server.ServerProtocol`
(``accept()``: headers, ``Origin``, extensions) and answered with its 101; from then on the
same protocol object reads frames, and the HTTP reader is freed. While a connection is idle
it owns no task, future or queue: bytes from the peer are handled in ``data_received`` and
outgoing frames go straight to the transport. That is what keeps an idle connection small
(docs/benchmarks.md).

The sans-I/O protocol does what RFC 6455 asks of the reading side: unmasking,
fragmentation and control-frame rules, automatic pongs, the close handshake, the frame size
limit. This module adds message assembly with UTF-8 validation of text (1007), a budget of
frames per second per connection (every frame counts: pings, pongs, fragments; 4029 past
it), the raw write path for pre-built frames (:meth:`WebSocket.send`), heartbeat pings, and
timeouts for the opening and the closing handshakes. The work done per socket read is
bounded: bytes go to the parsers in slices, with the frame budget checked (and pipelined
HTTP requests counted) between slices. Two rules keep the bytes on the wire correct: each
write is a whole frame, so the protocol's own control frames never land inside one, and
nothing is written once the connection has left the OPEN state, so no data frame follows a
close frame. ``bench/autobahn`` runs the Autobahn|Testsuite against an echo endpoint built
on this class.

Subclasses implement :meth:`WebSocket.respond` (the HTTP side),
:meth:`WebSocket.opened`, :meth:`WebSocket.received` and :meth:`WebSocket.finished`;
:class:`WebSocketServer` accepts connections and shuts them down.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import http
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, cast

import structlog
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin

from gateway.http import Answer, text_response
from gateway.http11 import BadRequest, HttpRequest, RequestReader
from gateway.protocol import CloseCode
from gateway.ratelimit import TokenBucket

__all__ = ["WebSocket", "WebSocketOptions", "WebSocketServer"]

log = structlog.get_logger("gateway.websocket")
_handshake_log = logging.getLogger("websockets.server")

#: bytes handed to a parser at a time; the frame budget is checked between slices, so a
#: flood is stopped within one slice (at most ~680 six-byte frames) of going over it
READ_SLICE: Final = 4096
#: HTTP requests answered per socket read (pipelined); the rest waits for the next turn
#: of the event loop, with reading paused
PIPELINE_ROUND: Final = 32
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


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
    #: seconds from TCP accept to the end of the upgrade, and that a keep-alive HTTP
    #: connection may stay idle between requests
    handshake_timeout_s: float = 10.0
    #: seconds a close handshake may take before the TCP connection is dropped
    close_timeout_s: float = 5.0
    #: WebSocket frames a client may send per second, control frames and fragments
    #: included, and in a burst; past them the connection is failed with 4029
    frame_rate: float = 200.0
    frame_burst: int = 1000
    #: largest HTTP request body (413 above it)
    max_body: int = 64 * 1024


class _HttpSide:
    """A connection's HTTP state until it upgrades (then it is dropped)."""

    __slots__ = ("backlog", "busy", "continued", "eof", "pending", "reader")

    def __init__(self, max_body: int) -> None:
        self.reader = RequestReader(max_body)
        #: requests read and not answered yet, in order
        self.pending: collections.deque[HttpRequest] = collections.deque()
        #: bytes received and not parsed yet (reading is paused while there are some)
        self.backlog = b""
        #: an answer is being computed (an awaitable route)
        self.busy = False
        #: ``100 Continue`` went out for the request being read
        self.continued = False
        #: the peer half-closed: close once everything read is answered
        self.eof = False


class WebSocket(asyncio.Protocol):
    """One connection: HTTP requests, maybe an upgrade, then messages in and pre-built
    frames out."""

    __slots__ = (
        "_budget",
        "_fragments",
        "_http",
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
        self._http: _HttpSide | None = _HttpSide(server.options.max_body)
        # Set by the upgrade: no WebSocket state is kept for plain HTTP connections.
        self._protocol: ServerProtocol | None = None
        self._budget: TokenBucket | None = None
        self._transport: asyncio.Transport  # set by connection_made, before any use
        self._timer: asyncio.TimerHandle | None = None
        self._fragments: tuple[Opcode, bytearray] | None = None
        #: the upgrade request (subclasses may drop it once read)
        self.request: HttpRequest | None = None
        #: no data frame may be written: not open yet, or closing
        self.closed = True
        #: a heartbeat ping went out and its pong has not come back
        self.awaiting_pong = False
        self.remote_address: tuple[str, int] | None = None

    # -- what subclasses implement ---------------------------------------------------

    def respond(self, request: HttpRequest) -> Answer:
        """The answer to an HTTP request: None upgrades it (the default)."""
        return None

    def opened(self) -> None:
        """The upgrade succeeded: :meth:`send` works from now on."""

    def received(self, data: str | bytes) -> None:
        """One whole message from the peer: ``str`` for text, ``bytes`` for binary."""

    def finished(self) -> None:
        """The TCP connection is gone (called once, also for plain HTTP connections)."""

    def overflow(self, buffered: int) -> None:
        """The peer reads too slowly: the default closes with 4008."""
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outgoing buffer limit reached")

    def flooded(self) -> None:
        """The peer sent more frames than its budget; the connection is being failed."""

    # -- what subclasses and their owners call ---------------------------------------

    @property
    def state(self) -> State:
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
        """The server stops: close the WebSocket with ``code``, or end the HTTP
        connection once the requests already read are answered."""
        http_side = self._http
        if http_side is None:
            self.close(code, reason)
        elif not (http_side.pending or http_side.busy):
            self._transport.close()
        # else: each answer sees the server closing and ends the connection after it

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
        self._set_timer(self._server.options.handshake_timeout_s, self._http_timeout)

    def data_received(self, data: bytes) -> None:
        http_side = self._http
        if http_side is None:
            self._frames_received(data)
        elif http_side.reader.upgraded is not None:
            http_side.backlog += data  # frames after an upgrade not answered yet
        elif not http_side.reader.closed:  # else: after a last request, not read (RFC 9112 9.6)
            http_side.backlog += data
            self._pump()

    def pause_writing(self) -> None:
        if self.closed:
            return  # HTTP, the close frame itself, or the rest of a close handshake
        self.closed = True  # no more data frames; the close frame is written next
        buffered = self._transport.get_write_buffer_size()
        # Called from inside a write, possibly mid fan-out: close once that is over.
        asyncio.get_running_loop().call_soon(self.overflow, buffered)

    def eof_received(self) -> bool:
        self.closed = True  # nothing more may be written once the protocol is CLOSED
        http_side = self._http
        if http_side is not None:
            # A request sent before a half-close still gets its answer.
            http_side.eof = True
            return bool(http_side.pending or http_side.busy or http_side.backlog)
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
        self._cancel_timer()
        self._server.forget(self)
        self.finished()

    # -- HTTP ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Answer the requests read, in order, and parse more while that goes on at once;
        at most :data:`PIPELINE_ROUND` answers per call, the rest on the next turn."""
        http_side = self._http
        if http_side is None or self._transport.is_closing():
            return
        reader = http_side.reader
        answered = 0
        while not http_side.busy:
            if http_side.pending:
                if answered == PIPELINE_ROUND:
                    asyncio.get_running_loop().call_soon(self._pump)
                    break
                answered += 1
                self._answer_next(http_side)
                if self._http is None or self._transport.is_closing():
                    return  # upgraded, or ended after that answer
                continue
            if not http_side.backlog or reader.closed or reader.upgraded is not None:
                break
            data = http_side.backlog
            http_side.backlog = data[READ_SLICE:]
            done = reader.feed(data[:READ_SLICE] if len(data) > READ_SLICE else data)
            if done:
                http_side.pending.extend(done)
                http_side.continued = False
            if reader.upgraded is not None:
                http_side.backlog = reader.upgraded + http_side.backlog  # WebSocket frames
        if http_side.pending or http_side.busy:
            self._transport.pause_reading()  # TCP pushes back meanwhile
            return
        if reader.error is not None:
            self._refuse(reader.error)
            return
        if reader.closed or http_side.eof:
            self._transport.close()
            return
        if reader.expects_continue and not http_side.continued:
            http_side.continued = True
            self._transport.write(_CONTINUE)
        self._transport.resume_reading()

    def _answer_next(self, http_side: _HttpSide) -> None:
        request = http_side.pending.popleft()
        try:
            answer = self.respond(request)
        except BadRequest as exc:
            answer = self._refusal(exc)
        except Exception as exc:
            answer = self._failure(request, exc)
        if answer is None:
            self._upgrade(http_side, request)
        elif isinstance(answer, Response):
            self._write_answer(request, answer)
        else:
            http_side.busy = True
            self._server.spawn(self._answer_later(http_side, request, answer))

    async def _answer_later(
        self, http_side: _HttpSide, request: HttpRequest, answer: Awaitable[Response]
    ) -> None:
        try:
            response = await answer
        except BadRequest as exc:
            response = self._refusal(exc)
        except Exception as exc:
            response = self._failure(request, exc)
        http_side.busy = False
        if not self._transport.is_closing():  # not gone meanwhile
            self._write_answer(request, response)
            self._pump()

    def _refusal(self, exc: BadRequest) -> Response:
        # Client-caused: info, never error (anyone could write error logs at will).
        log.info(
            "http_bad_request", status=exc.status.value, reason=exc.message, remote=self._remote()
        )
        return text_response(exc.status, exc.message + "\n")

    def _failure(self, request: HttpRequest, exc: Exception) -> Response:
        # A bug in a route; the client gets no detail of it.
        log.error("http_handler_failed", path=request.path, error=repr(exc))
        return text_response(
            http.HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the gateway log\n"
        )

    def _refuse(self, exc: BadRequest) -> None:
        """Answer a request that cannot be read, and end the connection."""
        response = self._refusal(exc)
        response.headers["Connection"] = "close"
        self._transport.write(response.serialize())
        self._transport.close()

    def _write_answer(self, request: HttpRequest, response: Response) -> None:
        http_side = self._http
        # After an upgrade request the rest is not HTTP, whatever the answer.
        last = (
            not request.keep_alive or request.upgrade or self._server.closing or http_side is None
        )
        if last:
            response.headers["Connection"] = "close"
        if request.method == "HEAD":  # the headers of the GET answer, Content-Length too
            response = dataclasses.replace(response, body=b"")
        self._transport.write(response.serialize())
        if last:
            self._transport.close()
        else:  # a keep-alive connection may idle for the handshake timeout
            self._set_timer(self._server.options.handshake_timeout_s, self._http_timeout)

    def _http_timeout(self) -> None:
        if self._transport.get_write_buffer_size():
            self._transport.abort()  # a peer that reads nothing
        else:
            self._transport.close()

    def _upgrade(self, http_side: _HttpSide, request: HttpRequest) -> None:
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
            return
        self._transport.write(response.serialize())
        frames = http_side.backlog
        self._http = None  # the HTTP parser's memory goes with it
        self._protocol = protocol
        self._budget = TokenBucket(
            options.frame_rate, options.frame_burst, asyncio.get_running_loop().time()
        )
        self.request = request
        self._cancel_timer()
        self.closed = False
        self._transport.resume_reading()
        self.opened()
        if frames and not self._transport.is_closing():
            self._frames_received(frames)

    def _remote(self) -> str:
        address = self.remote_address
        return "unknown" if address is None else f"{address[0]}:{address[1]}"

    # -- WebSocket -------------------------------------------------------------------

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
        options = self._server.options
        protocol = cast(ServerProtocol, self._protocol)
        protocol.fail(
            CloseCode.RATE_LIMITED,
            f"frame rate limit exceeded: more than {options.frame_rate:g} frames per second",
        )
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
            protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")
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
            ws.shutdown(code, reason)
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
