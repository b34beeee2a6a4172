"""Publishing with history from tests, through the same Lua script producers use."""

from __future__ import annotations

import secrets
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis

from notify_wire.history import PUBLISH_SCRIPT, HistoryKeys
from notify_wire.shared import SharedSettings

__all__ = ["PREFIX", "publish_with_history", "publish_with_history_sync"]

HISTORY_SIZE = SharedSettings().history_size

PREFIX = "notify-gateway:history:"


def _script_args(channel: str, data: bytes | str, maxlen: int) -> tuple[Any, ...]:
    keys = HistoryKeys.for_channel(PREFIX, channel)
    return (PUBLISH_SCRIPT, 2, keys.meta, keys.stream, channel, data, maxlen,
            SharedSettings().history_retention_s, secrets.token_hex(8))  # fmt: skip


def _result(reply: list[Any]) -> tuple[int, int, str]:
    receivers, offset, epoch = reply
    return int(receivers), int(offset), epoch.decode()


async def publish_with_history(
    redis: Redis, channel: str, data: bytes | str, *, maxlen: int = HISTORY_SIZE
) -> tuple[int, int, str]:
    """(receivers, offset, epoch) of one atomic append-and-publish."""
    return _result(await redis.eval(*_script_args(channel, data, maxlen)))


def publish_with_history_sync(
    redis: SyncRedis, channel: str, data: bytes | str, *, maxlen: int = HISTORY_SIZE
) -> tuple[int, int, str]:
    """:func:`publish_with_history` for a synchronous client (the Playwright tests)."""
    return _result(redis.eval(*_script_args(channel, data, maxlen)))
