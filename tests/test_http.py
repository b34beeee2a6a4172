"""The HTTP/1.1 layer: requests read by httptools, routed, answered in order; the upgrade.

Fed-bytes tests for the reader and the router (no I/O), then a real gateway answering raw
and stdlib HTTP clients over loopback.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
from collections.abc import Awaitable, Iterator
from http import HTTPStatus
from typing import Any

import pytest
from structlog.testing import capture_logs
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    enable_server_permessage_deflate,
)
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from gateway.edge.http import Route, Router, single_header, text_response
from gateway.edge.http11 import MAX_HEADERS, BadRequest, HttpRequest, RequestReader
from gateway.edge.options import WebSocketOptions
from gateway.edge.server import WebSocketServer
from gateway.edge.websocket import WebSocket
from gateway.server import Gateway
from tests.conftest import MakeGateway, MakeSession, ws_url
from tests.support.http import RawHttp
from tests.support.ws import close_code, connect_authed, upgrade_request

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
Events = list[dict[str, Any]]


@pytest.fixture
def events() -> Iterator[Events]:
    """The gateway's structlog events during the test."""
    with capture_logs() as logs:
        yield logs


def _errors(caplog: pytest.LogCaptureFixture, events: Events) -> list[object]:
    """Error-level records: library ones (logging) and the gateway's own (structlog)."""
    library = [r for r in caplog.records if r.levelno >= logging.ERROR]
    return [*library, *(e for e in events if e["log_level"] in ("error", "critical"))]


def _request(method: str = "GET", target: str = "/", headers: Headers | None = None) -> HttpRequest:
    return HttpRequest(method, target, headers or Headers())


# -- the reader, fed bytes -------------------------------------------------------------


def test_pipelined_requests_come_out_in_order_however_the_bytes_are_split() -> None:
    data = (
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /b?q=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\nyou\r\n0\r\n\r\n"
    )
    for cut in range(len(data)):
        reader = RequestReader(max_body=100)
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert [(r.method, r.path, r.query, r.body) for r in got] == [
            ("GET", "/a", "", b""),
            ("POST", "/b", "q=1", b"hello"),
            ("PUT", "/c", "", b"hiyou"),
        ]
        assert reader.error is None


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"x" * 101, 413),
        # Request smuggling: two lengths that disagree, or both kinds of length.
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS ClientHello
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
        (b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\n", 417),
        (b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
         b"Content-Length: 2\r\n\r\nhi", 400),
    ],
)  # fmt: skip
def test_unreadable_requests_end_with_a_status_and_a_reason(data: bytes, status: int) -> None:
    reader = RequestReader(max_body=100)
    assert reader.feed(b"GET /first HTTP/1.1\r\n\r\n" + data)[0].path == "/first"
    assert reader.error is not None
    assert reader.error.status == status
    assert reader.error.message
    assert reader.closed


def test_bytes_after_a_last_request_are_not_read() -> None:
    reader = RequestReader(max_body=100)
    got = reader.feed(b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert [(r.path, r.keep_alive) for r in got] == [("/a", False)]
    assert reader.closed
    assert reader.error is None


def test_expect_100_continue_is_flagged_until_the_body_arrives() -> None:
    reader = RequestReader(max_body=100)
    assert (
        reader.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n") == []
    )
    assert reader.expects_continue
    (request,) = reader.feed(b"ok")
    assert request.body == b"ok"
    assert not reader.expects_continue


def test_headers_read_are_websockets_headers_with_every_value_in_order() -> None:
    reader = RequestReader(max_body=100)
    (request,) = reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\na: 2\r\nB: \xe9\r\n\r\n")
    expected = Headers([("Host", "x"), ("A", "1"), ("a", "2"), ("B", "\xe9")])
    assert request.headers == expected
    assert list(request.headers.raw_items()) == list(expected.raw_items())
    assert request.headers.get_all("A") == ["1", "2"]
    assert request.headers["b"] == "\xe9"  # ISO-8859-1 round-trips any byte


def test_header_values_with_control_characters_are_refused_by_the_parser() -> None:
    for bad in (b"A: x\x00y", b"A: x\ry", b"A: x\x7fy"):
        reader = RequestReader(max_body=100)
        assert reader.feed(b"GET / HTTP/1.1\r\n" + bad + b"\r\n\r\n") == []
        assert reader.error is not None
        assert reader.error.status == 400


def test_the_bytes_after_an_upgrade_request_are_kept_for_the_websocket() -> None:
    reader = RequestReader(max_body=100)
    frame = Frame(Opcode.TEXT, b"{}").serialize(mask=True)
    (request,) = reader.feed(upgrade_request() + frame)
    assert request.upgrade
    assert reader.upgraded == frame


# -- the router ------------------------------------------------------------------------


def _router() -> Router:
    def hello(request: HttpRequest) -> Response:
        return text_response(HTTPStatus.OK, f"hello {request.method}\n")

    return Router({"/hello": Route(hello), "/api": Route(hello, frozenset({"POST"}))})


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/hello", 200, None),
        ("HEAD", "/hello", 200, None),  # the I/O layer drops the body
        ("DELETE", "/hello", 405, "GET, HEAD"),
        ("POST", "/hello", 405, "GET, HEAD"),
        ("POST", "/api", 200, None),
        ("GET", "/api", 405, "POST"),
        ("GET", "/nope", 404, None),
        ("POST", "/ws", 405, "GET"),
    ],
)
def test_routes_answer_their_methods_and_405_with_allow_otherwise(
    method: str, path: str, status: int, allow: str | None
) -> None:
    answer = _router()(_request(method, path))
    assert isinstance(answer, Response)
    assert answer.status_code == status
    assert answer.headers.get("Allow") == allow
    assert answer.body


def test_get_ws_goes_to_the_upgrade() -> None:
    assert _router()(_request("GET", "/ws?x=1")) is None


def test_a_header_that_may_appear_once_twice_is_a_bad_request() -> None:
    headers = Headers([("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
    with pytest.raises(BadRequest) as refused:
        single_header(headers, "Authorization")
    assert refused.value.status == 400
    assert single_header(Headers(), "Authorization") is None


# -- websockets' sans-I/O protocol as the upgrade uses it (websockets is locked at 17.4) ---


def _open_pair(extensions: bool) -> tuple[ClientProtocol, ServerProtocol]:
    """A websockets client and the server protocol as gateway.edge.websocket sets it up."""
    server = ServerProtocol(
        state=State.OPEN,
        extensions=enable_server_permessage_deflate(None) if extensions else None,
        max_size=1 << 16,
    )
    client = ClientProtocol(
        parse_uri("ws://127.0.0.1/ws"),
        extensions=[ClientPerMessageDeflateFactory()] if extensions else None,
    )
    handshake = client.connect()
    response = server.accept(Request(handshake.path, handshake.headers))
    assert response.status_code == 101
    assert server.data_to_send() == []  # accept() writes nothing: the 101 is ours to send
    client.receive_data(response.serialize())
    assert client.state is State.OPEN
    client.events_received()
    return client, server


def test_websockets_protocol_created_open_accepts_a_request_and_reads_frames_at_once() -> None:
    """gateway.edge.websocket builds ServerProtocol(state=OPEN), calls accept() and writes the 101
    itself. If websockets changes any of that, this fails before the gateway does."""
    client, server = _open_pair(extensions=False)
    client.send_text(b"hi")
    server.receive_data(b"".join(client.data_to_send()))
    (frame,) = server.events_received()
    assert (frame.opcode, frame.data) == (Opcode.TEXT, b"hi")
    assert server.accept(Request("/ws", Headers([("Host", "x")]))).status_code == 426


def test_websockets_protocol_created_open_negotiates_deflate_and_inflates_frames() -> None:
    client, server = _open_pair(extensions=True)
    client.send_text(b"hello " * 1000)
    sent = b"".join(client.data_to_send())
    assert len(sent) < 200  # compressed
    server.receive_data(sent)
    (frame,) = server.events_received()
    assert frame.data == b"hello " * 1000


# -- a real gateway --------------------------------------------------------------------


async def _head(port: int, path: str) -> tuple[http.client.HTTPResponse, bytes, int]:
    """HEAD then GET on one kept-alive connection: the HEAD body must be empty, or the GET
    would read the HEAD's body as its status line."""

    def run() -> tuple[http.client.HTTPResponse, bytes, int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("HEAD", path)
            head = connection.getresponse()
            body = head.read()
            connection.request("GET", path)
            after = connection.getresponse()
            after.read()
            return head, body, after.status
        finally:
            connection.close()

    return await asyncio.to_thread(run)


async def test_head_answers_the_get_headers_without_a_body(gateway: Gateway) -> None:
    head, body, then = await _head(gateway.port, "/client.js")
    assert head.status == 200
    assert int(head.headers["Content-Length"]) > 1000  # what GET would send
    assert head.headers["ETag"]
    assert body == b""
    assert then == 200


async def test_methods_a_route_does_not_take_get_405_with_allow(gateway: Gateway) -> None:
    client = await RawHttp.open(gateway.port)
    client.send(b"DELETE /status HTTP/1.1\r\nHost: x\r\n\r\n")
    client.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody")
    client.send(b"PUT /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    deleted, posted, put = await client.responses(3)
    assert (deleted.status, deleted.headers["Allow"]) == (405, "GET, HEAD")
    assert b"method not allowed" in deleted.body
    assert b'"sockets"' not in deleted.body  # not the report
    assert (posted.status, posted.headers["Allow"]) == (405, "GET, HEAD")
    assert (put.status, put.headers["Allow"]) == (405, "GET")
    await client.close()


async def test_pipelined_requests_are_answered_in_order_on_a_kept_alive_connection(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, events: Events
) -> None:
    client = await RawHttp.open(gateway.port)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 50 + b"GET /readyz HTTP/1.1\r\n\r\n")
    answers = await client.responses(51)
    assert [a.body for a in answers] == [b"ok\n"] * 50 + [b"ready\n"]
    # The connection stays open for more.
    client.send(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    (missing,) = await client.responses(1)
    assert missing.status == 404
    assert missing.body.startswith(b"not found")
    await client.close()
    assert not _errors(caplog, events)


async def test_a_get_with_a_body_is_answered(gateway: Gateway) -> None:
    client = await RawHttp.open(gateway.port)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    client.send(b"3\r\nabc\r\n0\r\n\r\n")
    assert [a.body for a in await client.responses(2)] == [b"ok\n", b"ok\n"]
    await client.close()


async def test_a_body_over_the_limit_gets_413_and_the_connection_ends(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_BODY_BYTES="10")
    client = await RawHttp.open(gateway.port)
    client.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
    (refused,) = await client.responses(1)
    assert refused.status == 413
    assert refused.body == b"request body larger than 10 bytes\n"
    assert refused.headers["Connection"] == "close"
    assert await client.closed()
    await client.close()


async def test_expect_100_continue_gets_100_before_the_body_is_sent(gateway: Gateway) -> None:
    client = await RawHttp.open(gateway.port)
    client.send(
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    async with asyncio.timeout(5):
        interim = await client.reader.readuntil(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.send(b"body")
    (answer,) = await client.responses(1)
    assert answer.status == 405
    await client.close()


async def test_garbage_gets_400_with_a_reason_and_no_error_log(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, events: Events
) -> None:
    client = await RawHttp.open(gateway.port)
    client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
    async with asyncio.timeout(5):
        answer = await client.reader.read()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\n\r\nbad request: " in answer
    await client.close()
    assert not _errors(caplog, events)
    (refused,) = [e for e in events if e["event"] == "http_bad_request"]
    assert (refused["log_level"], refused["status"]) == ("info", 400)


async def test_repeated_headers_get_400_or_4001_logged_at_info(
    gateway_factory: MakeGateway,
    make_session: MakeSession,
    caplog: pytest.LogCaptureFixture,
    events: Events,
) -> None:
    gateway = await gateway_factory(GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN)
    client = await RawHttp.open(gateway.port)
    twice = f"Authorization: Bearer {ADMIN_TOKEN}\r\n" * 2
    client.send(f"GET /status HTTP/1.1\r\nHost: x\r\n{twice}\r\n".encode())
    client.send(b'GET /client.js HTTP/1.1\r\nIf-None-Match: "a"\r\nIf-None-Match: "b"\r\n\r\n')
    status, asset = await client.responses(2)
    assert (status.status, status.body) == (
        400,
        b"bad request: more than one Authorization header\n",
    )
    assert asset.status == 200  # a list header: the lines are one list, none matches
    await client.close()
    # On the WebSocket endpoint: 4001, the client is told to send one header.
    token = await make_session("twice")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(upgrade_request(f"Authorization: Bearer {token}\r\n" * 2))
    async with asyncio.timeout(5):
        data = await reader.readuntil(b"header")  # the end of the close reason
    assert data.startswith(b"HTTP/1.1 101")
    close = data[data.index(b"\r\n\r\n") + 4 :]
    assert close[0] == 0x88  # a close frame
    assert int.from_bytes(close[2:4], "big") == 4001
    assert b"one 'Authorization: Bearer <token>' header" in close
    writer.close()
    await writer.wait_closed()
    assert not _errors(caplog, events)
    assert [e["log_level"] for e in events if e["event"] == "http_bad_request"] == ["info"]
    auth = [e for e in events if e["event"] == "auth_failed"]
    assert [(e["log_level"], e["reason"]) for e in auth] == [("info", "bad_authorization_header")]


async def test_a_kept_alive_connection_idle_for_the_handshake_timeout_is_closed(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(GATEWAY_HANDSHAKE_TIMEOUT="0.5")
    client = await RawHttp.open(gateway.port)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.responses(1))[0].status == 200
    assert await client.closed()
    await client.close()


async def test_a_plain_get_of_the_websocket_endpoint_gets_426(gateway: Gateway) -> None:
    client = await RawHttp.open(gateway.port)
    client.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
    (answer,) = await client.responses(1)
    assert answer.status == 426
    assert answer.headers["Upgrade"] == "websocket"
    assert await client.closed()
    await client.close()


async def test_a_request_then_an_upgrade_on_one_connection(
    gateway: Gateway, make_session: MakeSession
) -> None:
    """A health check, then the upgrade on the same connection: both answered in order."""
    token = await make_session("both")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + upgrade_request(f"Authorization: Bearer {token}\r\n")
    )
    async with asyncio.timeout(5):
        first = await reader.readuntil(b"ok\n")
        upgrade = await reader.readuntil(b"\r\n\r\n")
        welcome = await reader.readuntil(b"}")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert upgrade.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b'"type":"welcome"' in welcome
    writer.close()
    await writer.wait_closed()


async def test_websocket_clients_still_connect(gateway: Gateway, make_session: MakeSession) -> None:
    ws, welcome = await connect_authed(ws_url(gateway), await make_session("still"))
    assert welcome["user"] == "still"
    await ws.close()
    assert await close_code(ws) == 1000


async def test_an_idle_kept_alive_connection_does_not_hold_up_shutdown(
    gateway_factory: MakeGateway,
) -> None:
    gateway = await gateway_factory(GATEWAY_SHUTDOWN_TIMEOUT="5")
    client = await RawHttp.open(gateway.port)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await client.responses(1))[0].status == 200
    async with asyncio.timeout(2):  # well within the drain timeout
        await gateway.stop()
    assert await client.closed()
    await client.close()


class _Routed(WebSocket):
    """A connection answering from a route table with an awaitable route, as API routes
    that wait for Redis will be."""

    __slots__ = ()
    release: asyncio.Event

    def respond(self, request: HttpRequest) -> Response | Awaitable[Response] | None:
        return ROUTER(request)


async def _slow(request: HttpRequest) -> Response:
    await _Routed.release.wait()
    return text_response(HTTPStatus.OK, "slow\n")


async def _broken(request: HttpRequest) -> Response:
    raise RuntimeError("a bug with a secret in its message")


async def _refusing(request: HttpRequest) -> Response:
    single_header(request.headers, "X-Once")
    return text_response(HTTPStatus.OK, "once\n")


ROUTER = Router(
    {
        "/slow": Route(_slow),
        "/fast": Route(lambda request: text_response(HTTPStatus.OK, "fast\n")),
        "/broken": Route(_broken),
        "/refusing": Route(_refusing),
    }
)


async def test_awaitable_answers_keep_the_order_of_pipelined_requests(
    caplog: pytest.LogCaptureFixture, events: Events
) -> None:
    _Routed.release = asyncio.Event()
    server = WebSocketServer(_Routed, WebSocketOptions(max_size=1 << 16, max_buffer=1 << 20))
    await server.listen("127.0.0.1", 0)
    try:
        client = await RawHttp.open(server.port)
        client.send(b"GET /slow HTTP/1.1\r\n\r\nGET /fast HTTP/1.1\r\n\r\n")
        with pytest.raises(TimeoutError):  # /fast waits behind /slow
            async with asyncio.timeout(0.2):
                await client.reader.readuntil(b"fast")
        _Routed.release.set()
        slow, fast = await client.responses(2)
        assert (slow.body, fast.body) == (b"slow\n", b"fast\n")
        client.send(
            b"GET /broken HTTP/1.1\r\n\r\nGET /refusing HTTP/1.1\r\nX-Once: 1\r\nX-Once: 2\r\n\r\n"
        )
        broken, refused = await client.responses(2)
        assert (broken.status, broken.body) == (500, b"internal error; see the gateway log\n")
        assert (refused.status, refused.body) == (
            400,
            b"bad request: more than one X-Once header\n",
        )
        await client.close()
    finally:
        await server.close(1001, "", timeout_s=5)
    (bug,) = _errors(caplog, events)  # the bug, once; the refusal at info
    assert bug == {
        "event": "http_handler_failed",
        "log_level": "error",
        "path": "/broken",
        "error": "RuntimeError('a bug with a secret in its message')",
    }
