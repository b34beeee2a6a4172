"""Plain HTTP endpoints served on the WebSocket port, through ``process_request``."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["WS_PATH", "make_process_request"]

WS_PATH = "/ws"


def _text(status: HTTPStatus, body: str) -> Response:
    data = body.encode()
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, data)


def make_process_request(
    is_ready: Callable[[], bool],
) -> Callable[[ServerConnection, Request], Response | None]:
    """Route ``/healthz`` and ``/readyz``; let ``/ws`` through to the WebSocket handshake."""

    def process_request(_connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == WS_PATH:
            return None
        if path == "/healthz":
            return _text(HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            if is_ready():
                return _text(HTTPStatus.OK, "ready\n")
            return _text(HTTPStatus.SERVICE_UNAVAILABLE, "Redis subscriber connection is down\n")
        return _text(HTTPStatus.NOT_FOUND, f"not found; the WebSocket endpoint is {WS_PATH}\n")

    return process_request
