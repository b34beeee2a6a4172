"""Plain HTTP endpoints served on the WebSocket port: a route table and response builders.

A :class:`Router` maps each path to a :class:`Route`: a handler (a function of the
:class:`~gateway.http11.HttpRequest` returning a response, or an awaitable of one) and the
methods it takes. It answers 404 for an unknown path, 405 with ``Allow`` for a method the
route does not take (``HEAD`` is taken wherever ``GET`` is; the I/O layer drops the body),
and lets ``GET /ws`` through to the WebSocket upgrade. :func:`text_response`,
:func:`json_response` and :func:`bytes_response` build the usual answers, :func:`asset_route`
serves a static file, :func:`bearer_protected` guards a handler with a static bearer token,
and :func:`single_header` reads a header that may appear once (:class:`BadRequest`, 400,
otherwise).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus

import orjson
import structlog
from websockets.datastructures import Headers
from websockets.http11 import Response

from gateway.edge.http11 import BadRequest, HttpRequest

__all__ = [
    "WS_PATH",
    "Answer",
    "Handler",
    "Route",
    "Router",
    "asset_route",
    "bearer_protected",
    "bytes_response",
    "json_response",
    "method_not_allowed",
    "single_header",
    "text_response",
]

WS_PATH = "/ws"

Handler = Callable[[HttpRequest], Response | Awaitable[Response]]
#: what answers a request: a response, now or later, or None to upgrade to WebSocket
Answer = Response | Awaitable[Response] | None


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """A path's handler and the methods it takes (``HEAD`` comes with ``GET``)."""

    handler: Handler
    methods: frozenset[str] = frozenset({"GET"})

    @property
    def allowed(self) -> frozenset[str]:
        return self.methods | {"HEAD"} if "GET" in self.methods else self.methods


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


def method_not_allowed(allowed: Iterable[str]) -> Response:
    methods = ", ".join(sorted(allowed))
    return text_response(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"method not allowed here; use {methods}\n",
        headers=(("Allow", methods),),
    )


def single_header(headers: Headers, name: str) -> str | None:
    """The value of a header that may appear at most once; :class:`BadRequest` (400) if
    it appears more often."""
    values = headers.get_all(name)
    if len(values) > 1:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad request: more than one {name} header")
    return values[0] if values else None


def bearer_protected(token: str | None, route: Handler) -> Handler:
    """``route`` behind ``Authorization: Bearer <token>``; unguarded when ``token`` is None.

    Answers 401 with ``WWW-Authenticate: Bearer`` (RFC 6750) when the header is
    missing or wrong. The comparison takes the same time whatever the guess.
    """
    if token is None:
        return route
    expected = token.encode()

    def guarded(request: HttpRequest) -> Response | Awaitable[Response]:
        header = single_header(request.headers, "Authorization") or ""
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given:
            reason, challenge = "missing", 'Bearer realm="notify-gateway"'
        # surrogateescape: header bytes that are not ASCII compare unequal, not crash
        elif not hmac.compare_digest(given.strip().encode(errors="surrogateescape"), expected):
            reason, challenge = "invalid", 'Bearer realm="notify-gateway", error="invalid_token"'
        else:
            return route(request)
        log.info("admin_unauthorized", path=request.path, reason=reason)
        return text_response(
            HTTPStatus.UNAUTHORIZED,
            "unauthorized: send 'Authorization: Bearer <GATEWAY_ADMIN_TOKEN>'\n",
            headers=(("WWW-Authenticate", challenge),),
        )

    return guarded


def asset_route(
    body: bytes, content_type: str, *, headers: Sequence[tuple[str, str]] = ()
) -> Handler:
    """Serve ``body`` (read once by the caller); browsers revalidate it with its ETag."""
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = (("ETag", etag), *headers)

    def route(request: HttpRequest) -> Response:
        # A list header: several lines mean one comma-separated list (RFC 9110, 5.3).
        if etag in ", ".join(request.headers.get_all("If-None-Match")):
            return bytes_response(
                HTTPStatus.NOT_MODIFIED, b"", content_type, cache="no-cache", headers=headers
            )
        return bytes_response(HTTPStatus.OK, body, content_type, cache="no-cache", headers=headers)

    return route


class Router:
    """Answers plain HTTP requests from a route table; ``GET /ws`` upgrades."""

    __slots__ = ("_routes",)

    def __init__(self, routes: Mapping[str, Route]) -> None:
        self._routes = dict(routes)

    def __call__(self, request: HttpRequest) -> Answer:
        path = request.path
        if path == WS_PATH:
            # websockets checks the rest of the upgrade (426 without the headers).
            return None if request.method == "GET" else method_not_allowed(["GET"])
        route = self._routes.get(path)
        if route is None:
            return text_response(
                HTTPStatus.NOT_FOUND, f"not found; the WebSocket endpoint is {WS_PATH}\n"
            )
        if request.method not in route.allowed:
            return method_not_allowed(route.allowed)
        return route.handler(request)
