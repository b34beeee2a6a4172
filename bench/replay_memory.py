"""``python -m bench.replay_memory``: how much memory resume replays cost the gateway.

Publishes ``--messages`` history messages of ``--size`` bytes on one channel of a private
redis-server, starts ``python -m gateway serve`` (``--env NAME=VALUE`` adds settings, e.g.
``GATEWAY_MAX_REPLAY_BYTES``), opens ``--requests`` clients that each subscribe with
``since: {offset: 0}`` at once and read every frame they get, and prints the gateway's RSS
before and its peak (``VmHWM``), with what each client got. Issue 13's scenario is the
default: 1000 messages of 100 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

import orjson
from redis import Redis
from websockets.asyncio.client import connect

from bench.procs import SERVER_CORE, spawn, start_redis, stop, wait_ready
from notify_wire.history import PUBLISH_SCRIPT, HistoryKeys
from notify_wire.shared import SharedSettings
from tests.support.redis_server import free_port

CHANNEL = "public:replay-memory"


def _mib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} for {pid}")


def _publish(redis: Redis, messages: int, size: int) -> str:
    keys = HistoryKeys.for_channel("notify-gateway:history:", CHANNEL)
    payload = orjson.dumps("x" * size)
    epoch = ""
    for _ in range(messages):
        reply = redis.eval(
            PUBLISH_SCRIPT, 2, keys.meta, keys.stream, CHANNEL, payload, messages,
            SharedSettings().history_retention_s, secrets.token_hex(8),
        )  # fmt: skip
        epoch = reply[2].decode()
    return epoch


async def _client(url: str, token: str, epoch: str, messages: int) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.recv()  # welcome
        since = {"offset": 0, "epoch": epoch}
        await ws.send(
            orjson.dumps({"type": "subscribe", "channel": CHANNEL, "since": since}).decode()
        )
        reply = orjson.loads(await ws.recv())
        if not reply.get("recovered"):
            return "recovered:false"
        for _ in range(messages):
            await ws.recv()
        return f"recovered, {messages} frames"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_memory", description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100_000, help="bytes per message")
    parser.add_argument("--requests", type=int, default=1, help="clients resuming at once")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the gateway")
    args = parser.parse_args()
    redis_server = start_redis()
    redis = Redis(port=redis_server.port)
    port = free_port()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "GATEWAY_PORT": str(port),
        "GATEWAY_LOG_LEVEL": "warning",
        **dict(item.split("=", 1) for item in args.env),
    }
    gateway: subprocess.Popen[bytes] | None = None
    try:
        epoch = _publish(redis, args.messages, args.size)
        tokens = [secrets.token_urlsafe(24) for _ in range(args.requests)]
        for n, token in enumerate(tokens):
            redis.set(f"session:{token}", orjson.dumps({"userId": f"replay-{n}"}), ex=600)
        gateway = spawn([sys.executable, "-m", "gateway", "serve"], SERVER_CORE, env=env)
        wait_ready(gateway, port, "the gateway")
        before = _mib(gateway.pid, "VmRSS")
        url = f"ws://127.0.0.1:{port}/ws"

        async def everyone() -> list[str]:
            clients = (_client(url, token, epoch, args.messages) for token in tokens)
            return await asyncio.gather(*clients)

        outcomes = asyncio.run(everyone())
        peak = _mib(gateway.pid, "VmHWM")
        print(
            f"{args.requests} request(s) for {args.messages} x {args.size} bytes, "
            f"{' '.join(args.env) or 'defaults'}: RSS {before} MiB -> peak {peak} MiB; "
            f"{', '.join(sorted(set(outcomes)))}"
        )
    finally:
        if gateway is not None:
            stop(gateway)
        redis.close()
        redis_server.cleanup()


if __name__ == "__main__":
    main()
