"""The HTTP/1.1 side of a connection: requests read with httptools, answered in order.

:class:`HttpConnection` is an :class:`asyncio.Protocol` with slots. Requests read by
:class:`gateway.edge.http11.RequestReader` are answered in order by :meth:`respond` (a
response now, an awaitable of one, or None to upgrade), with keep-alive, pipelining, ``HEAD``
without a body and ``100 Continue``. The work done per socket read is bounded: bytes go to
the parser in slices, and at most :data:`PIPELINE_ROUND` answers are written per turn of the
event loop. An upgrade is the subclass's (:class:`gateway.edge.websocket.WebSocket`): once it
happens the HTTP state is dropped, its memory with it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import http
from collections.abc import Awaitable, Callable
from typing import Final, cast

import structlog
from websockets.http11 import Response

from gateway.edge.http import Answer, text_response
from gateway.edge.http11 import BadRequest, HttpRequest, RequestReader
from gateway.edge.options import Owner

__all__ = ["PIPELINE_ROUND", "READ_SLICE", "HttpConnection"]

log = structlog.get_logger("gateway.edge")

#: bytes handed to a parser at a time; the WebSocket side checks its frame budget between
#: slices too, so a flood is stopped within one slice (at most ~680 six-byte frames)
READ_SLICE: Final = 4096
#: HTTP requests answered per socket read (pipelined); the rest waits for the next turn
#: of the event loop, with reading paused
PIPELINE_ROUND: Final = 32
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


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


class HttpConnection(asyncio.Protocol):
    """One TCP connection speaking HTTP/1.1 until a subclass upgrades it."""

    __slots__ = ("_http", "_server", "_timer", "_transport", "remote_address", "request")

    def __init__(self, server: Owner) -> None:
        self._server = server
        self._http: _HttpSide | None = _HttpSide(server.options.max_body)
        self._transport: asyncio.Transport  # set by connection_made, before any use
        self._timer: asyncio.TimerHandle | None = None
        #: the upgrade request (subclasses may drop it once read)
        self.request: HttpRequest | None = None
        self.remote_address: tuple[str, int] | None = None

    # -- what subclasses implement ---------------------------------------------------

    def respond(self, request: HttpRequest) -> Answer:
        """The answer to an HTTP request: None upgrades it (the default)."""
        return None

    def finished(self) -> None:
        """The TCP connection is gone (called once, also for plain HTTP connections)."""

    def _upgrade(self, request: HttpRequest, frames: bytes) -> bool:
        """Take the connection over for ``request`` (``frames``: bytes that followed it);
        False when it answered the request itself instead (a refused upgrade)."""
        self._write_answer(request, text_response(http.HTTPStatus.NOT_FOUND, "not found\n"))
        return False

    # -- what subclasses and owners call -----------------------------------------------

    def pause_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._transport.is_closing():
            self._transport.resume_reading()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake."""
        self._transport.abort()

    def shutdown(self, code: int, reason: str) -> None:
        """The server stops: end the connection once the requests already read are
        answered (each answer sees the server closing and ends the connection after it)."""
        http_side = self._http
        if http_side is not None and not (http_side.pending or http_side.busy):
            self._transport.close()

    @property
    def remote(self) -> str:
        """``host:port`` of the peer, for logs."""
        address = self.remote_address
        return "unknown" if address is None else f"{address[0]}:{address[1]}"

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        # The transport calls pause_writing() when the unsent bytes pass the limit.
        self._transport.set_write_buffer_limits(high=self._server.options.max_buffer)
        address = transport.get_extra_info("peername")
        if isinstance(address, tuple):
            self.remote_address = (str(address[0]), int(address[1]))
        self._server.add(self)
        self._set_timer(self._server.options.handshake_timeout_s, self._http_timeout)

    def data_received(self, data: bytes) -> None:
        http_side = cast(_HttpSide, self._http)  # subclasses take the bytes once upgraded
        if http_side.reader.upgraded is not None:
            http_side.backlog += data  # frames after an upgrade not answered yet
        elif not http_side.reader.closed:  # else: after a last request, not read (RFC 9112 9.6)
            http_side.backlog += data
            self._pump()

    def eof_received(self) -> bool:
        http_side = cast(_HttpSide, self._http)
        # A request sent before a half-close still gets its answer.
        http_side.eof = True
        return bool(http_side.pending or http_side.busy or http_side.backlog)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._server.forget(self)
        self.finished()

    # -- requests and answers ----------------------------------------------------------

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
        self._after_pump(http_side)

    def _after_pump(self, http_side: _HttpSide) -> None:
        reader = http_side.reader
        if http_side.pending or http_side.busy:
            self._transport.pause_reading()  # TCP pushes back meanwhile
        elif reader.error is not None:
            self._refuse(reader.error)
        elif reader.closed or http_side.eof:
            self._transport.close()
        else:
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
            frames = http_side.backlog
            if self._upgrade(request, frames):
                self._http = None  # the HTTP parser's memory goes with it
                self._cancel_timer()
                self._transport.resume_reading()
                self._opened(frames)
        elif isinstance(answer, Response):
            self._write_answer(request, answer)
        else:
            http_side.busy = True
            self._server.spawn(self._answer_later(http_side, request, answer))

    def _opened(self, frames: bytes) -> None:
        """The upgrade is done; ``frames`` arrived right behind its request."""

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
            "http_bad_request", status=exc.status.value, reason=exc.message, remote=self.remote
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
        # After an upgrade request the rest is not HTTP, whatever the answer.
        last = (
            not request.keep_alive or request.upgrade or self._server.closing or self._http is None
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

    # -- timers ------------------------------------------------------------------------

    def _set_timer(self, delay: float, callback: Callable[[], object]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
