"""Plain HTTP endpoints served on the WebSocket port, answered before the upgrade.

Each route is a function of the request returning a response; :func:`text_response`,
:func:`json_response` and :func:`bytes_response` build the usual ones, :func:`asset_route`
serves a static file, and :func:`bearer_protected` guards a route with a static bearer token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus

import orjson
import structlog
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = [
    "WS_PATH",
    "Route",
    "asset_route",
    "bearer_protected",
    "bytes_response",
    "json_response",
    "route_requests",
    "text_response",
]

WS_PATH = "/ws"

Route = Callable[[Request], Response | Awaitable[Response]]

log = structlog.get_logger("gateway.http")


def bytes_response(
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


def text_response(
    status: HTTPStatus, body: str, *, headers: Sequence[tuple[str, str]] = ()
) -> Response:
    return bytes_response(status, body.encode(), "text/plain; charset=utf-8", headers=headers)


def json_response(status: HTTPStatus, obj: object) -> Response:
    return bytes_response(status, orjson.dumps(obj), "application/json")


def bearer_protected(token: str | None, route: Route) -> Route:
    """``route`` behind ``Authorization: Bearer <token>``; unguarded when ``token`` is None.

    Answers 401 with ``WWW-Authenticate: Bearer`` (RFC 6750) when the header is
    missing or wrong. The comparison takes the same time whatever the guess.
    """
    if token is None:
        return route
    expected = token.encode()

    def guarded(request: Request) -> Response | Awaitable[Response]:
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given:
            reason, challenge = "missing", 'Bearer realm="notify-gateway"'
        # surrogateescape: header bytes that are not ASCII compare unequal, not crash
        elif not hmac.compare_digest(given.strip().encode(errors="surrogateescape"), expected):
            reason, challenge = "invalid", 'Bearer realm="notify-gateway", error="invalid_token"'
        else:
            return route(request)
        log.info("admin_unauthorized", path=request.path.partition("?")[0], reason=reason)
        return text_response(
            HTTPStatus.UNAUTHORIZED,
            "unauthorized: send 'Authorization: Bearer <GATEWAY_ADMIN_TOKEN>'\n",
            headers=(("WWW-Authenticate", challenge),),
        )

    return guarded


def asset_route(
    body: bytes, content_type: str, *, headers: Sequence[tuple[str, str]] = ()
) -> Route:
    """Serve ``body`` (read once by the caller); browsers revalidate it with its ETag."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = (("ETag", etag), *headers)

    def route(request: Request) -> Response:
        if etag in request.headers.get("If-None-Match", ""):
            return bytes_response(
                HTTPStatus.NOT_MODIFIED, b"", content_type, cache="no-cache", headers=headers
            )
        return bytes_response(HTTPStatus.OK, body, content_type, cache="no-cache", headers=headers)

    return route


def route_requests(
    routes: Mapping[str, Route],
) -> Callable[[Request], Response | Awaitable[Response] | None]:
    """Serve ``routes`` over plain HTTP; let ``/ws`` through to the WebSocket upgrade."""

    def respond(request: Request) -> Response | Awaitable[Response] | None:
        path = request.path.partition("?")[0]
        if path == WS_PATH:
            return None
        route = routes.get(path)
        if route is None:
            return text_response(
                HTTPStatus.NOT_FOUND, f"not found; the WebSocket endpoint is {WS_PATH}\n"
            )
        return route(request)

    return respond
