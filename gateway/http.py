"""Plain HTTP endpoints served on the WebSocket port, through ``process_request``.

Each route is a function of the request returning a response; :func:`text_response`
and :func:`json_response` build the usual ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["WS_PATH", "Route", "json_response", "make_process_request", "text_response"]

WS_PATH = "/ws"

Route = Callable[[Request], Response | Awaitable[Response]]


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def text_response(status: HTTPStatus, body: str) -> Response:
    return _response(status, body.encode(), "text/plain; charset=utf-8")


def json_response(status: HTTPStatus, obj: object) -> Response:
    return _response(status, orjson.dumps(obj), "application/json")


def make_process_request(
    routes: Mapping[str, Route],
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    """Serve ``routes`` over plain HTTP; let ``/ws`` through to the WebSocket handshake."""

    async def process_request(_connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == WS_PATH:
            return None
        route = routes.get(path)
        if route is None:
            return text_response(
                HTTPStatus.NOT_FOUND, f"not found; the WebSocket endpoint is {WS_PATH}\n"
            )
        response = route(request)
        return response if isinstance(response, Response) else await response

    return process_request
