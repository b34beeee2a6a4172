"""A private redis-server for ``serve`` when no Redis is configured or reachable."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import tempfile

import structlog

from gateway.broker.probe import redis_answers
from notify_wire.redis_config import RedisConfig

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "redis_or_embedded"]

log = structlog.get_logger("gateway.embedded")


class EmbeddedRedisError(RuntimeError):
    """No redis-server could be started; the message says how to get one."""


def _free_port(preferred: int | None = None) -> int:
    """``preferred`` when it can be bound on 127.0.0.1, else any free loopback port."""
    for port in (preferred, 0):
        if port is None:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server does
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            bound: int = sock.getsockname()[1]
            return bound
    raise EmbeddedRedisError("no free loopback port for the embedded redis-server")


class EmbeddedRedis:
    """A redis-server child on loopback (127.0.0.1 and ::1), with no persistence.

    It takes the port asked for when that is free, so the README's next commands
    (``redis-cli``, ``notify-gateway session create``) find it where they look, and any
    free port otherwise.
    """

    def __init__(self, process: asyncio.subprocess.Process, port: int, workdir: str) -> None:
        self.process = process
        self.port = port
        self._workdir = workdir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    async def start(cls, port: int | None = None, binary: str = "redis-server") -> EmbeddedRedis:
        """Start one on ``port`` if it is free (else on any free port) and wait until it answers."""
        path = shutil.which(binary)
        if path is None:
            raise EmbeddedRedisError(
                "no Redis configured (REDIS_URL unset), none answers on "
                f"localhost:{port or 6379}, and no redis-server binary was found: install it "
                "(apt-get install redis-server, brew install redis) or set REDIS_URL"
            )
        workdir = tempfile.mkdtemp(prefix="notify-gateway-redis-")
        port = _free_port(port)
        process = await asyncio.create_subprocess_exec(
            path,
            "--port", str(port),
            "--bind", "127.0.0.1", "-::1",  # -: ::1 only where the machine has IPv6
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        embedded = cls(process, port, workdir)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await redis_answers("127.0.0.1", port):
            if process.returncode is not None or loop.time() > deadline:
                await embedded.stop()
                raise EmbeddedRedisError(f"the embedded redis-server did not start on port {port}")
            await asyncio.sleep(0.05)
        log.info("embedded_redis_started", port=port, pid=process.pid, url=embedded.url)
        return embedded

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(5):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
            log.info("embedded_redis_stopped", pid=self.process.pid)
        shutil.rmtree(self._workdir, ignore_errors=True)


async def redis_or_embedded(config: RedisConfig) -> tuple[RedisConfig, EmbeddedRedis | None]:
    """``config``, or one pointing at a new embedded Redis when none is configured or local."""
    if config.explicit or await redis_answers("localhost", config.port):
        return config, None
    embedded = await EmbeddedRedis.start(config.port)
    return dataclasses.replace(config, host="127.0.0.1", port=embedded.port), embedded
