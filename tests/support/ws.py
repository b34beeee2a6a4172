"""WebSocket client helpers for tests (real websockets clients over loopback)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "close_code",
    "connect_authed",
    "connect_subscribed",
    "http_fetch",
    "http_get",
    "raw_upgraded",
    "recv_json",
    "request",
    "upgrade_request",
    "wait_until",
]

TIMEOUT_S = 5.0


async def recv_json(ws: ClientConnection, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        data = await ws.recv()
    obj = orjson.loads(data)
    assert isinstance(obj, dict)
    return obj


async def request(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(orjson.dumps(frame).decode())
    return await recv_json(ws)


async def connect_authed(
    url: str, token: str, *, header: bool = True, **kwargs: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    """Open a connection, authenticate, and return it with its welcome frame."""
    headers = {"Authorization": f"Bearer {token}"} if header else None
    ws = await connect(url, additional_headers=headers, **kwargs)
    if not header:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def connect_subscribed(url: str, token: str, *channels: str) -> ClientConnection:
    """An authenticated connection whose subscriptions Redis has confirmed."""
    ws, _ = await connect_authed(url, token)
    for channel in channels:
        reply = await request(ws, {"type": "subscribe", "channel": channel})
        assert reply["type"] == "subscribed", reply
    return ws


async def close_code(ws: ClientConnection, timeout_s: float = TIMEOUT_S) -> int | None:
    """Read until the server closes; return the close code it sent."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    except ConnectionClosed:
        pass
    return ws.close_code


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float = TIMEOUT_S, step_s: float = 0.02
) -> None:
    """Poll an observable condition (e.g. Redis PUBSUB NUMSUB) until it holds."""
    async with asyncio.timeout(timeout_s):
        while not await predicate():  # noqa: ASYNC110 - Redis state has no event to await
            await asyncio.sleep(step_s)


async def http_fetch(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """GET over a real HTTP client; returns (status, headers, body) for any status."""

    def fetch() -> tuple[int, dict[str, str], str]:
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, dict(error.headers), error.read().decode()

    return await asyncio.to_thread(fetch)


async def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET over a real HTTP client; returns (status, body) for any status."""
    status, _headers, body = await http_fetch(url, headers)
    return status, body


def upgrade_request(headers: str = "") -> bytes:
    """A WebSocket upgrade request for ``/ws`` as raw bytes; ``headers``: extra
    ``Name: value\\r\\n`` lines."""
    return (
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{headers}\r\n"
    ).encode()


async def raw_upgraded(
    port: int, headers: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to 127.0.0.1:``port``, upgraded to WebSocket (101 checked)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(headers))
    async with asyncio.timeout(TIMEOUT_S):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer
