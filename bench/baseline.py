"""The naive baseline: websockets ``broadcast()`` fed by a redis-py asyncio PubSub.

This is how a competent first version looks (and what the issue's peers do): the
same wire subset as the gateway (``Authorization: Bearer`` header looked up in
``session:{token}``, ``subscribe`` answered with ``subscribed``, deliveries as
``{"type":"message","channel":...,"data":...}``), with one JSON string built per
message and handed to ``websockets.broadcast``. It exists only to be measured
against: ``python -m bench.baseline --port P --redis-url URL``.
"""

from __future__ import annotations

import argparse
import asyncio
from http import HTTPStatus

import orjson
import uvloop
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response


class Baseline:
    def __init__(self, redis_url: str) -> None:
        self.redis = Redis.from_url(redis_url)
        self.pubsub: PubSub = self.redis.pubsub()
        self.readers: dict[str, set[ServerConnection]] = {}
        self.pump: asyncio.Task[None] | None = None

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        token = ws.request.headers.get("Authorization", "").removeprefix("Bearer ")
        raw = await self.redis.get(f"session:{token}")
        if raw is None:
            await ws.close(4001, "unauthorized")
            return
        user = str(orjson.loads(raw)["userId"])
        await ws.send(orjson.dumps({"type": "welcome", "user": user}).decode())
        mine: set[str] = set()
        try:
            async for data in ws:
                command = orjson.loads(data)
                if command.get("type") != "subscribe":
                    continue
                channel = command["channel"]
                if channel not in self.readers:
                    self.readers[channel] = set()
                    await self.pubsub.subscribe(channel)
                    if self.pump is None:
                        self.pump = asyncio.create_task(self.forward())
                self.readers[channel].add(ws)
                mine.add(channel)
                reply = {"type": "subscribed", "channel": channel, "ref": command.get("ref")}
                await ws.send(orjson.dumps(reply).decode())
        finally:
            for channel in mine:
                self.readers[channel].discard(ws)

    async def forward(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            channel = message["channel"].decode()
            text = (
                '{"type":"message","channel":'
                + orjson.dumps(channel).decode()
                + ',"data":'
                + message["data"].decode()
                + "}"
            )
            broadcast(self.readers.get(channel, ()), text)


async def process_request(_ws: ServerConnection, request: Request) -> Response | None:
    if request.path == "/readyz":
        return _ws.respond(HTTPStatus.OK, "ready\n")
    return None


async def main(port: int, redis_url: str, heartbeat_s: float) -> None:
    baseline = Baseline(redis_url)
    async with serve(
        baseline.handler,
        "127.0.0.1",
        port,
        process_request=process_request,
        compression=None,
        ping_interval=heartbeat_s,
        ping_timeout=heartbeat_s,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--heartbeat", type=float, default=20.0)
    args = parser.parse_args()
    uvloop.run(main(args.port, args.redis_url, args.heartbeat))
