"""Publishing with history from tests, through the same Lua script producers use."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from gateway.history import DEFAULT_MAXLEN, DEFAULT_RETENTION_S, PUBLISH_SCRIPT, HistoryKeys

__all__ = ["publish_with_history"]

PREFIX = "notify-gateway:history:"


async def publish_with_history(
    redis: Redis, channel: str, data: bytes | str, *, maxlen: int = DEFAULT_MAXLEN
) -> tuple[int, int, str]:
    """(receivers, offset, epoch) of one atomic append-and-publish."""
    keys = HistoryKeys.for_channel(PREFIX, channel)
    receivers, offset, epoch = await redis.eval(  # type: ignore[misc]
        PUBLISH_SCRIPT,
        2,
        keys.meta,
        keys.stream,
        channel,
        data,
        maxlen,
        DEFAULT_RETENTION_S,
        secrets.token_hex(8),
    )
    return int(receivers), int(offset), epoch.decode()
