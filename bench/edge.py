"""The HTTP edge's own cost: HTTP requests and WebSocket upgrades per CPU-second.

    .venv/bin/python -m bench.edge [--requests 20000] [--upgrades 3000] [--no-keep-alive]

A gateway process pinned to its core (as in ``python -m bench``) with a private
redis-server; this process, on the other core, is the client. Each figure is given as
operations per second of wall time, per CPU-second of the gateway, and as the gateway's user
and kernel CPU time per operation (the steadier figures on a shared machine):

- ``GET /healthz`` over 8 kept-alive connections, one request in flight on each
  (skipped with ``--no-keep-alive``: a gateway that closes after each answer);
- ``GET /healthz`` on a new connection each (``Connection: close``);
- WebSocket upgrades without credentials: the upgrade request, the 101, then the client
  closes the TCP connection (no login, so no Redis round trip in the figure);
- logins: an upgrade with a bearer token, until the ``welcome`` frame (the session read
  and the admission script in Redis included).

Bounded by the counts given; every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis import Redis

from bench.procs import Server, start_redis, stop_all
from bench.wire import token
from tests.support.ws import upgrade_request

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"
HEALTHZ_CLOSE = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
ANSWER_END = b"ok\n"
CONCURRENCY = 8
SESSIONS = 100  # users the logins cycle through (20 connections each at most, all closed)


async def _kept_alive(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(HEALTHZ)
        await reader.readuntil(ANSWER_END)
    writer.close()


async def _one_each(port: int, count: int) -> None:
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEALTHZ_CLOSE)
        await reader.read()
        writer.close()


async def _upgrades(port: int, count: int) -> None:
    request = upgrade_request()
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        writer.transport.abort()


async def _logins(port: int, count: int) -> None:
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(upgrade_request(f"Authorization: Bearer {token(i % SESSIONS)}\r\n"))
        await reader.readuntil(b'"type":"welcome"')
        writer.transport.abort()


async def _measure(
    server: Server, name: str, total: int, work: Callable[[int, int], Awaitable[None]]
) -> dict[str, Any]:
    each = total // CONCURRENCY
    user, system = server.cpu_split()
    started = time.monotonic()
    await asyncio.gather(*(work(server.port, each) for _ in range(CONCURRENCY)))
    wall = time.monotonic() - started
    user, system = (
        after - before for after, before in zip(server.cpu_split(), (user, system), strict=True)
    )
    done = each * CONCURRENCY
    return {
        "scenario": name,
        "count": done,
        "per_s": round(done / wall),
        "per_gateway_cpu_s": round(done / (user + system)) if user + system else None,
        # CPU time of the gateway per operation, user and kernel: the steadier figure
        "gateway_user_us": round(user / done * 1e6, 1),
        "gateway_sys_us": round(system / done * 1e6, 1),
    }


async def run(args: argparse.Namespace, server: Server) -> list[dict[str, Any]]:
    await _measure(server, "warm-up", 400, _one_each)
    results = []
    if not args.no_keep_alive:
        results.append(
            await _measure(server, "GET /healthz, kept alive", args.requests, _kept_alive)
        )
    results.append(
        await _measure(server, "GET /healthz, a connection each", args.requests // 4, _one_each)
    )
    results.append(await _measure(server, "WebSocket upgrade", args.upgrades, _upgrades))
    results.append(await _measure(server, "login (upgrade + welcome)", args.upgrades, _logins))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--upgrades", type=int, default=3000)
    parser.add_argument("--no-keep-alive", action="store_true", help="skip the kept-alive run")
    args = parser.parse_args()
    redis_server = start_redis()
    try:
        redis = Redis(port=redis_server.port)
        for i in range(SESSIONS):
            redis.set(f"session:{token(i)}", orjson.dumps({"userId": f"edge-{i}"}), ex=3600)
        redis.close()
        # Upgrades without credentials wait for their auth frame: let them, quietly.
        settings = {"GATEWAY_AUTH_TIMEOUT": "60", "GATEWAY_MAX_ATTEMPTS_PER_USER": "1000000"}
        server = Server("gateway", redis_server.port, settings=settings)
        results = asyncio.run(run(args, server))
    finally:
        stop_all()
        redis_server.cleanup()
    for row in results:
        print(orjson.dumps(row).decode())


if __name__ == "__main__":
    main()
