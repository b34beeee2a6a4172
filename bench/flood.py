"""Flood scenario: one client floods the gateway with tiny frames, another measures latency.

    .venv/bin/python -m bench.flood [--frames 1000000] [--kind pings|fragments]
                                    [--unauthenticated] [--no-limit]

A gateway process (pinned to its core, as in ``python -m bench``) and a private
redis-server on loopback. The victim is an authenticated client subscribed to one channel;
this process publishes to it every 2 ms and measures publish-to-delivery latency, first
for 1 s of quiet, then from the flood's start to 1 s after its end, while the flooder (a
process of its own), a raw socket after the upgrade, writes
``--frames`` frames of 6 bytes (empty pings, or empty continuation frames of a text
message that never ends) as fast as TCP takes them. Reported: how the flooder was closed
(code), after how long and how many frames answered (pongs), the gateway's CPU during the
flood, and the victim's latency quiet and during. ``--no-limit`` raises the frame budget
out of reach, to show what the flood does without it. Bounded: the flood stops after its
frames or 60 s, and every process started is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from bench.procs import CLIENT_CORE, Server, start_redis, stop_all
from bench.wire import token
from tests.support.ws import upgrade_request

CHANNEL = "public:flood-victim"
PUBLISH_EVERY_S = 0.002
FLOOD_TIMEOUT_S = 60.0
#: the victim's latency counts from the flood's start to this long after its end
AFTER_S = 1.0


PING = Frame(Opcode.PING, b"").serialize(mask=True)


def _flood_bytes(kind: str, frames: int) -> tuple[bytes, int]:
    """The flood, ending with a ping (legal inside a fragmented message too), and how many
    pongs mean that all of it was handled."""
    if kind == "pings":
        return PING * (frames + 1), frames + 1
    start = Frame(Opcode.TEXT, b"{", fin=False).serialize(mask=True)
    return start + Frame(Opcode.CONT, b"", fin=False).serialize(mask=True) * frames + PING, 1


async def _flooder(port: int, headers: str, data: bytes, all_pongs: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(headers))
    await reader.readuntil(b"\r\n\r\n")
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN, max_size=None)
    started = time.monotonic()

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(send())
    pongs, code = 0, None
    try:
        async with asyncio.timeout(FLOOD_TIMEOUT_S):
            while code is None:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    break
                client.receive_data(chunk)
                for event in client.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.PONG:
                        pongs += 1
                    elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                        assert client.close_rcvd is not None
                        code = client.close_rcvd.code
                if pongs == all_pongs:
                    break  # everything handled: no limit stopped it
    except TimeoutError:
        pass
    finally:
        sender.cancel()
        writer.transport.abort()
    ended = time.monotonic()
    return {
        "code": code,
        "after_ms": round((ended - started) * 1000, 1),
        "pongs": pongs,
        "started": started,
        "ended": ended,
    }


def _flood_process(port: int, headers: str, kind: str, frames: int, out: Connection) -> None:
    """The flooder, in a process of its own on the load core: its CPU is not the victim's."""
    os.sched_setaffinity(0, {CLIENT_CORE})
    out.send(asyncio.run(_flooder(port, headers, *_flood_bytes(kind, frames))))


async def _victim(
    port: int, ready: asyncio.Event, stop: asyncio.Event, latencies: list[tuple[float, float]]
) -> None:
    headers = {"Authorization": f"Bearer {token(0)}"}
    async with connect(f"ws://127.0.0.1:{port}/ws", additional_headers=headers) as ws:
        await ws.recv()  # welcome
        await ws.send(orjson.dumps({"type": "subscribe", "channel": CHANNEL}).decode())
        await ws.recv()  # subscribed
        ready.set()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    frame = orjson.loads(await ws.recv())
                    sent = frame["data"]["t"]
                    latencies.append((sent, time.monotonic() - sent))


async def _publish(redis: Redis, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await redis.publish(CHANNEL, orjson.dumps({"t": time.monotonic()}))
        await asyncio.sleep(PUBLISH_EVERY_S)


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"messages": 0}
    ordered = sorted(values)
    return {
        "messages": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def run(args: argparse.Namespace, redis_port: int, server: Server) -> dict[str, Any]:
    redis = Redis(port=redis_port)
    for i in (0, 1):
        await redis.set(f"session:{token(i)}", orjson.dumps({"userId": f"flood-{i}"}), ex=600)
    ready, stop = asyncio.Event(), asyncio.Event()
    latencies: list[tuple[float, float]] = []
    victim = asyncio.create_task(_victim(server.port, ready, stop, latencies))
    await ready.wait()
    publisher = asyncio.create_task(_publish(redis, stop))
    await asyncio.sleep(1.0)
    cpu = server.cpu_s()
    headers = "" if args.unauthenticated else f"Authorization: Bearer {token(1)}\r\n"
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(
        target=_flood_process, args=(server.port, headers, args.kind, args.frames, send)
    )
    child.start()
    flood = await asyncio.to_thread(receive.recv)
    child.join(10)
    flood["gateway_cpu_s"] = round(server.cpu_s() - cpu, 3)
    await asyncio.sleep(AFTER_S)  # the victim's latency just after the flood too
    started, ended = flood.pop("started"), flood.pop("ended")
    stop.set()
    await asyncio.gather(victim, publisher)
    await redis.aclose()
    return {
        "kind": args.kind,
        "frames": args.frames,
        "authenticated": not args.unauthenticated,
        "limit": not args.no_limit,
        "flooder": flood,
        "victim_quiet": _summary([lat for sent, lat in latencies if sent < started]),
        "victim_during_flood": _summary(
            [lat for sent, lat in latencies if started <= sent <= ended + AFTER_S]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="frames the flooder sends")
    parser.add_argument("--kind", choices=("pings", "fragments"), default="pings")
    parser.add_argument("--unauthenticated", action="store_true", help="flood before login")
    parser.add_argument(
        "--no-limit", action="store_true", help="frame budget out of reach (what it prevents)"
    )
    args = parser.parse_args()
    settings = {"GATEWAY_AUTH_TIMEOUT": "120"}  # an unauthenticated flood is not cut by it
    if args.no_limit:
        settings |= {"GATEWAY_FRAME_RATE_LIMIT": "1e12", "GATEWAY_FRAME_RATE_BURST": "1000000000"}
    redis_server = start_redis()
    try:
        server = Server("gateway", redis_server.port, settings=settings)
        result = asyncio.run(run(args, redis_server.port, server))
    finally:
        stop_all()
        redis_server.cleanup()
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
