"""The blocking publisher, over one pooled, thread-safe ``redis.Redis`` client."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from redis import Redis
from redis.cluster import RedisCluster

from notify_publisher.base import PublisherBase
from notify_publisher.connect import sync_cluster, sync_redis
from notify_publisher.operations import Operation
from notify_publisher.settings import PublisherSettings

__all__ = ["Publisher"]

T = TypeVar("T")


class Publisher(PublisherBase):
    """Publishes messages to gateways and manages their sessions, from blocking code.

    One instance holds one connection pool (up to 32 connections; further threads wait
    for one) and may be shared by every thread of a process. Build it with
    :meth:`from_env` or :meth:`from_url`, use it as a context manager or call
    :meth:`close`. Bad input raises :class:`ValueError` or
    :class:`TypeError` before anything is sent; Redis failures raise
    :class:`~clients.errors.PublisherError` after bounded, jittered retries.
    """

    def __init__(self, settings: PublisherSettings | None = None) -> None:
        super().__init__(settings)
        redis = self.settings.redis
        self._redis: Redis | RedisCluster = (
            sync_cluster(redis) if redis.cluster else sync_redis(redis)
        )

    def _run(self, operation: Operation[T]) -> T:
        commands = operation.commands  # redis-py leaves execute_command untyped
        if not commands:
            return operation.result([])
        with self._errors(operation):
            if operation.one_at_a_time(isinstance(self._redis, RedisCluster)):
                return operation.result([self._redis.execute_command(*c) for c in commands])  # type: ignore[no-untyped-call]
            pipe = self._redis.pipeline(transaction=operation.atomic)
            for command in commands:
                pipe.execute_command(*command)
            return operation.result(pipe.execute())

    def publish(self, channel: str, data: Any, *, history: bool = False) -> int:
        """Publish ``data`` as JSON on ``channel``; return how many gateways received it.

        The count is of Redis subscribers (gateway processes), not of WebSocket clients;
        0 means no gateway listens to that channel right now. With ``history`` the
        message is also kept in the channel's bounded stream, numbered, so clients that
        were away resume with no loss (docs/protocol.md, "History and recovery").
        """
        return self._run(self._operations.publish(channel, data, history))

    def publish_many(self, items: Iterable[tuple[str, Any]], *, history: bool = False) -> list[int]:
        """Publish ``(channel, data)`` pairs in one round trip, all or none (MULTI/EXEC).

        Every item is validated before anything is sent (errors name the item's
        index). Returns the receiver count of each item, in order.
        """
        return self._run(self._operations.publish_many(items, history))

    def create_session(
        self, user_id: str | int, *, ttl: int = 3600, channels: Iterable[str] = (), **extra: Any
    ) -> str:
        """Store a session for ``user_id`` expiring in ``ttl`` seconds; return its token.

        ``channels`` are extra channel globs the session may read; ``extra`` fields are
        stored alongside (the gateway ignores them).
        """
        return self._run(self._operations.create_session(user_id, ttl, channels, extra))

    def get_session(self, token: str) -> dict[str, Any] | None:
        """The stored session (``userId``, ``channels``, extras), or None when there is none."""
        return self._run(self._operations.get_session(token))

    def refresh_session(self, token: str, ttl: int) -> bool:
        """Make the session expire ``ttl`` seconds from now; False when there is none."""
        return self._run(self._operations.refresh_session(token, ttl))

    def revoke_session(self, token: str) -> bool:
        """Delete the session and close its sockets on every gateway (close code 4001).

        The revocation is broadcast on the control channel with a digest of the token,
        even when the key was already gone. Returns whether the key existed.
        """
        return self._run(self._operations.revoke_session(token))

    def close(self) -> None:
        """Close the pooled connections (a later call would open new ones)."""
        self._redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
