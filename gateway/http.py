"""Plain HTTP endpoints served on the WebSocket port, through ``process_request``.

Each route is a function of the request returning a response; :func:`text_response`
and :func:`json_response` build the usual ones, :func:`asset_route` serves a static file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = [
    "WS_PATH",
    "Route",
    "asset_route",
    "json_response",
    "make_process_request",
    "text_response",
]

WS_PATH = "/ws"

Route = Callable[[Request], Response | Awaitable[Response]]


def _response(
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    *,
    cache: str = "no-store",
    headers: Sequence[tuple[str, str]] = (),
) -> Response:
    # A 304 must not claim a length other than the one a 200 would have (RFC 9110, 8.6).
    length = [] if status is HTTPStatus.NOT_MODIFIED else [("Content-Length", str(len(body)))]
    all_headers = Headers(
        [
            ("Content-Type", content_type),
            *length,
            ("Cache-Control", cache),
            # Browsers must not guess another type (e.g. run a text reply as a script).
            ("X-Content-Type-Options", "nosniff"),
            *headers,
        ]
    )
    return Response(status.value, status.phrase, all_headers, body)


def text_response(status: HTTPStatus, body: str) -> Response:
    return _response(status, body.encode(), "text/plain; charset=utf-8")


def json_response(status: HTTPStatus, obj: object) -> Response:
    return _response(status, orjson.dumps(obj), "application/json")


def asset_route(
    body: bytes, content_type: str, *, headers: Sequence[tuple[str, str]] = ()
) -> Route:
    """Serve ``body`` (read once by the caller); browsers revalidate it with its ETag."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = (("ETag", etag), *headers)

    def route(request: Request) -> Response:
        if etag in request.headers.get("If-None-Match", ""):
            return _response(
                HTTPStatus.NOT_MODIFIED, b"", content_type, cache="no-cache", headers=headers
            )
        return _response(HTTPStatus.OK, body, content_type, cache="no-cache", headers=headers)

    return route


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
