"""HTTP/1.1 requests read off the wire, sans I/O: bytes in, :class:`HttpRequest` objects out.

:class:`RequestReader` drives httptools' request parser (llhttp, the C parser of Node.js,
which uvicorn uses too): request line, headers, ``Content-Length`` and chunked bodies,
keep-alive, pipelining (several requests in one read come out in order) and the upgrade
request after which the bytes are WebSocket frames. It adds the limits llhttp leaves to its
user: the size of the request line and of the head, the number of headers, and the body
size; a request over one of them, or one llhttp refuses (a smuggling attempt such as both
``Content-Length`` and ``Transfer-Encoding``), ends the connection with a
:class:`BadRequest` naming the status and saying why (after answering the requests
that came before it).

The I/O layer (:mod:`gateway.edge.exchange`) feeds it, answers the requests in order and writes
``100 Continue`` when :attr:`RequestReader.expects_continue` asks for it.
"""

from __future__ import annotations

import dataclasses
from http import HTTPStatus
from typing import Final

import httptools
from websockets.datastructures import Headers

__all__ = ["BadRequest", "HttpRequest", "RequestReader"]

#: the longest request line (method, target, version) accepted; 414 above
MAX_TARGET_BYTES: Final = 8 * 1024
#: request line and headers together; 431 above
MAX_HEAD_BYTES: Final = 16 * 1024
#: header lines per request; 431 above (websockets' own limit)
MAX_HEADERS: Final = 128
_NO_HEADERS: Final = Headers()


@dataclasses.dataclass(slots=True)
class HttpRequest:
    """One complete request, body included (at most the reader's ``max_body`` bytes)."""

    method: str
    #: the request target as sent, e.g. ``/status?verbose=1``
    target: str
    headers: Headers
    body: bytes = b""
    #: the client wants the connection kept open after the answer (HTTP/1.1 default)
    keep_alive: bool = True
    #: an upgrade request (``Connection: Upgrade``): what follows it is not HTTP
    upgrade: bool = False

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


def _headers(items: list[tuple[str, str]]) -> Headers:
    """``Headers(items)`` without its per-value check for CR, LF and NUL, which llhttp has
    made already (strict mode refuses them): that check was a third of reading a request.
    Fills websockets 17.4's two slots; tests/test_http.py holds it equal to ``Headers()``."""
    headers = Headers()
    index = headers._dict
    for name, value in items:
        index.setdefault(name.lower(), []).append(value)
    headers._list = items
    return headers


class BadRequest(Exception):
    """A request the gateway refuses with ``status``; ``message`` is the body (log-safe)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RequestReader:
    """Turns the bytes of one connection into requests; see the module docstring.

    :meth:`feed` returns the requests completed by the bytes given, and sets
    :attr:`error` when the connection must end with an error answer after them. After an
    upgrade request, :attr:`upgraded` holds the bytes that followed it in the last feed
    and the reader must not be fed again.
    """

    __slots__ = (
        "_body",
        "_body_bytes",
        "_done",
        "_head",
        "_head_bytes",
        "_headers",
        "_max_body",
        "_parser",
        "_refusal",
        "_target",
        "closed",
        "error",
        "expects_continue",
        "upgraded",
    )

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self._done: list[HttpRequest] = []
        self._refusal: BadRequest | None = None
        self._target = b""
        self._headers: list[tuple[str, str]] = []
        self._head = _NO_HEADERS  # each request's, from its on_headers_complete
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._head_bytes = 0
        #: the request being read sent ``Expect: 100-continue`` and waits for ``100 Continue``
        self.expects_continue = False
        #: nothing more can be read (see :meth:`feed`)
        self.closed = False
        #: why the connection must end, once the requests before it are answered
        self.error: BadRequest | None = None
        #: after an upgrade request: the bytes that followed it (None until then)
        self.upgraded: bytes | None = None

    def feed(self, data: bytes) -> list[HttpRequest]:
        """Parse ``data``; return the requests it completed, in order.

        When the bytes cannot be read further, :attr:`error` says how to answer once the
        requests returned are answered (None: just close, after a request that asked for
        ``Connection: close``); the reader must not be fed again.
        """
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgraded = data[upgrade.args[0] :]
        except httptools.HttpParserError as exc:
            self.closed = True
            if self._done and not self._done[-1].keep_alive:
                pass  # bytes after a last request: not read, as RFC 9112 9.6 allows
            elif self._refusal is not None:  # raised by one of our callbacks
                self.error = self._refusal
            else:
                reason = str(exc).strip() or type(exc).__name__
                self.error = BadRequest(HTTPStatus.BAD_REQUEST, f"bad request: {reason}")
        done, self._done = self._done, []
        return done

    # -- httptools callbacks -------------------------------------------------------

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        # The parser turns an exception in a callback into HttpParserError; feed() then
        # raises this refusal instead.
        self._refusal = BadRequest(status, message)
        raise self._refusal

    def on_message_begin(self) -> None:
        self._target = b""
        self._body = []
        self._body_bytes = 0
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._target += url
        self._head_bytes += len(url)
        if len(self._target) > MAX_TARGET_BYTES:
            self._refuse(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                f"request target longer than {MAX_TARGET_BYTES} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES or len(self._headers) >= MAX_HEADERS:
            self._refuse(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"request head larger than {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers",
            )
        # ISO-8859-1 round-trips any byte, as websockets does for header values.
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser.get_http_version() not in ("1.0", "1.1"):
            self._refuse(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.1 is served here")
        headers = self._head = _headers(self._headers)
        self._headers = []
        # llhttp has checked that the values are numbers and agree with each other.
        length = headers.get_all("Content-Length")
        has_body = bool(length and int(length[0]) > 0) or bool(headers.get_all("Transfer-Encoding"))
        if has_body and parser.should_upgrade():
            # The bytes after an upgrade request are WebSocket frames, never a body.
            self._refuse(HTTPStatus.BAD_REQUEST, "an upgrade request cannot have a body")
        if length and int(length[0]) > self._max_body:
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body larger than {self._max_body} bytes",
            )
        expect = headers.get_all("Expect")
        if expect:
            if [value.strip().lower() for value in expect] != ["100-continue"]:
                self._refuse(HTTPStatus.EXPECTATION_FAILED, "only 'Expect: 100-continue' is met")
            self.expects_continue = has_body

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:  # chunked bodies have no length up front
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body larger than {self._max_body} bytes",
            )

    def on_message_complete(self) -> None:
        parser = self._parser
        self.expects_continue = False
        self._done.append(
            HttpRequest(
                method=parser.get_method().decode("ascii"),
                target=self._target.decode("latin-1"),
                headers=self._head,
                body=b"".join(self._body),
                keep_alive=parser.should_keep_alive(),
                upgrade=parser.should_upgrade(),
            )
        )
