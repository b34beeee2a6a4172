"""The asyncio publisher, over one pooled ``redis.asyncio.Redis`` client."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from redis.asyncio.cluster import RedisCluster

from notify_publisher.base import PublisherBase
from notify_publisher.connect import AnyRedis, async_cluster, async_redis
from notify_publisher.operations import Operation
from notify_publisher.settings import PublisherSettings

__all__ = ["AsyncPublisher"]

T = TypeVar("T")


class AsyncPublisher(PublisherBase):
    """:class:`~clients.sync.Publisher` for asyncio: the same methods, awaited.

    One instance may be shared by every task on its event loop: its pool holds up to
    32 connections, and further concurrent commands wait for one instead of failing.
    Use ``async with`` or ``await close()``.
    """

    def __init__(self, settings: PublisherSettings | None = None) -> None:
        super().__init__(settings)
        redis = self.settings.redis
        self._redis: AnyRedis = async_cluster(redis) if redis.cluster else async_redis(redis)

    async def _run(self, operation: Operation[T]) -> T:
        commands = operation.commands  # redis-py leaves execute_command untyped
        if not commands:
            return operation.result([])
        with self._errors(operation):
            if operation.one_at_a_time(isinstance(self._redis, RedisCluster)):
                return operation.result([await self._redis.execute_command(*c) for c in commands])
            pipe = self._redis.pipeline(transaction=operation.atomic)
            for command in commands:
                pipe.execute_command(*command)
            return operation.result(await pipe.execute())

    async def publish(self, channel: str, data: Any, *, history: bool = False) -> int:
        """Publish ``data`` as JSON on ``channel``; return how many gateways received it.

        ``history`` keeps it in the channel's stream too, as :meth:`Publisher.publish`.
        """
        return await self._run(self._operations.publish(channel, data, history))

    async def publish_many(
        self, items: Iterable[tuple[str, Any]], *, history: bool = False
    ) -> list[int]:
        """Publish ``(channel, data)`` pairs in one round trip, all or none (MULTI/EXEC)."""
        return await self._run(self._operations.publish_many(items, history))

    async def create_session(
        self, user_id: str | int, *, ttl: int = 3600, channels: Iterable[str] = (), **extra: Any
    ) -> str:
        """Store a session for ``user_id`` expiring in ``ttl`` seconds; return its token."""
        return await self._run(self._operations.create_session(user_id, ttl, channels, extra))

    async def get_session(self, token: str) -> dict[str, Any] | None:
        """The stored session, or None when there is none."""
        return await self._run(self._operations.get_session(token))

    async def refresh_session(self, token: str, ttl: int) -> bool:
        """Make the session expire ``ttl`` seconds from now; False when there is none."""
        return await self._run(self._operations.refresh_session(token, ttl))

    async def revoke_session(self, token: str) -> bool:
        """Delete the session and close its sockets on every gateway (4001); whether it existed."""
        return await self._run(self._operations.revoke_session(token))

    async def close(self) -> None:
        """Close the pooled connections (a later call would open new ones)."""
        await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
