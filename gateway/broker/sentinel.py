"""Redis Sentinel: where the current master is.

The pub/sub subscriber speaks RESP itself, so it asks the sentinels directly with
``SENTINEL get-master-addr-by-name`` before every (re)connect, trying each sentinel
in turn; after a failover the next reconnect lands on the promoted replica. The
session-read client uses redis-py's own Sentinel support (see ``redis_client``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import structlog

from notify_wire.errors import describe
from notify_wire.redis_config import RedisConfig

__all__ = ["SentinelError", "master_address", "redis_address"]

log = structlog.get_logger("gateway.sentinel")


class SentinelError(OSError):
    """No sentinel named a master (all unreachable, or none monitors that name)."""


async def _ask(host: str, port: int, config: RedisConfig) -> Any:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        commands: list[tuple[Any, ...]] = []
        if config.sentinel_password is not None:
            commands.append(("AUTH", config.sentinel_password))
        assert config.sentinel_master is not None
        commands.append(("SENTINEL", "get-master-addr-by-name", config.sentinel_master))
        writer.write(b"".join(hiredis.pack_command(command) for command in commands))
        parser = hiredis.Reader()
        replies: list[Any] = []
        while len(replies) < len(commands):
            data = await reader.read(4096)
            if not data:
                raise ConnectionError("sentinel closed the connection")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                replies.append(reply)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise SentinelError(str(reply))
        return replies[-1]
    finally:
        writer.close()


async def master_address(config: RedisConfig) -> tuple[str, int]:
    """The master's ``(host, port)`` from the first sentinel that knows it."""
    errors = []
    for host, port in config.sentinels:
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                reply = await _ask(host, port, config)
        except (OSError, TimeoutError) as exc:
            errors.append(f"{host}:{port}: {describe(exc).lower()}")
            continue
        if isinstance(reply, list) and len(reply) == 2:
            master = reply[0].decode(), int(reply[1])
            # Logged on every (re)connect only, so a failover shows up in the logs.
            log.info(
                "redis_master_resolved",
                sentinel=f"{host}:{port}",
                master=f"{master[0]}:{master[1]}",
            )
            return master
        errors.append(f"{host}:{port}: does not monitor {config.sentinel_master!r}")
    raise SentinelError(
        f"no sentinel named the master {config.sentinel_master!r} ({'; '.join(errors)})"
    )


async def redis_address(config: RedisConfig) -> tuple[str, int]:
    """Where to connect: the configured address, or the current master in Sentinel mode."""
    if config.sentinels:
        return await master_address(config)
    return config.host, config.port
