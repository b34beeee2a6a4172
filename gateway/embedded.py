"""A private redis-server for ``serve`` when no Redis is configured or reachable."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import tempfile

import structlog

from gateway.config import RedisConfig

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "redis_answers", "redis_or_embedded"]

log = structlog.get_logger("gateway.embedded")


class EmbeddedRedisError(RuntimeError):
    """No redis-server could be started; the message says how to get one."""


async def redis_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something speaking RESP answers on ``host:port``."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"PING\r\n")
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    # +PONG, or -NOAUTH from a Redis with a password: either way Redis is there.
    return line[:1] in (b"+", b"-")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """A redis-server child on a free loopback port, with no persistence."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, workdir: str) -> None:
        self.process = process
        self.port = port
        self._workdir = workdir

    @classmethod
    async def start(cls, binary: str = "redis-server") -> EmbeddedRedis:
        path = shutil.which(binary)
        if path is None:
            raise EmbeddedRedisError(
                "no Redis configured (REDIS_URL unset), none answers on localhost:6379, and no "
                "redis-server binary was found: install it (apt-get install redis-server, "
                "brew install redis) or set REDIS_URL"
            )
        workdir = tempfile.mkdtemp(prefix="notify-gateway-redis-")
        port = _free_port()
        process = await asyncio.create_subprocess_exec(
            path,
            "--port", str(port),
            "--bind", "127.0.0.1",
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
        log.info("embedded_redis_started", port=port, pid=process.pid)
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
    embedded = await EmbeddedRedis.start()
    return dataclasses.replace(config, host="127.0.0.1", port=embedded.port), embedded
