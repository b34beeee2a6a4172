"""redis-py clients built from a :class:`~notify_wire.redis_config.RedisConfig`: one way to
build each kind (single, Sentinel, Cluster; blocking and asyncio), for publishers and the
gateway alike."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.cluster
import redis.sentinel
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import AbstractBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from notify_wire.backoff import COMMAND_RETRY
from notify_wire.redis_config import RedisConfig

__all__ = [
    "AnyRedis",
    "async_cluster",
    "async_redis",
    "redis_kwargs",
    "sync_cluster",
    "sync_redis",
]

#: A single Redis (or Sentinel-managed master) or a Redis Cluster.
AnyRedis = redis.asyncio.Redis | RedisCluster


class _SentinelRedis(redis.asyncio.Redis):
    """A ``master_for`` client that also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, redis.asyncio.BlockingConnectionPool):
    """Connections to the current master that wait for a free slot like the default pool."""


def redis_kwargs(config: RedisConfig) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis`` / ``redis.asyncio.Redis`` (minus ``retry``)."""
    kwargs: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "username": config.username,
        "password": config.password,
        "db": config.db,
        "socket_connect_timeout": config.connect_timeout_s,
        "socket_timeout": max(config.connect_timeout_s, 5.0),
        "socket_keepalive": True,
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }
    if config.tls:
        kwargs.update(
            ssl=True,
            ssl_ca_certs=config.tls_ca_path,
            ssl_certfile=config.tls_cert_path,
            ssl_keyfile=config.tls_key_path,
            ssl_cert_reqs="required" if config.tls_verify else "none",
            ssl_check_hostname=config.tls_verify,
        )
    return kwargs


def _blocking_pool_kwargs(
    config: RedisConfig, max_connections: int, retry: Retry | AsyncRetry
) -> dict[str, Any]:
    """Keyword arguments of a ``BlockingConnectionPool`` (sync or asyncio) minus the class."""
    kwargs = redis_kwargs(config)
    kwargs.pop("ssl", None)  # a pool takes connection_class=SSLConnection instead
    return {
        **kwargs,
        "max_connections": max_connections,
        "timeout": max(config.connect_timeout_s, 5.0),
        "retry": retry,
    }


class _PolicyBackoff(AbstractBackoff):
    """redis-py's retries, on the project's backoff rule (:data:`COMMAND_RETRY`)."""

    def compute(self, failures: int) -> float:
        return COMMAND_RETRY.delay(failures)


def _backoff() -> AbstractBackoff:
    return _PolicyBackoff()


def _cluster_kwargs(config: RedisConfig) -> dict[str, Any]:
    """A cluster has database 0 only; 32 pooled connections per node."""
    kwargs = {k: v for k, v in redis_kwargs(config).items() if k != "db"}
    return {**kwargs, "max_connections": 32}


def async_cluster(config: RedisConfig) -> RedisCluster:
    """A Redis Cluster client: follows MOVED redirections and refreshes its slot map."""
    return RedisCluster(**_cluster_kwargs(config), retry=AsyncRetry(_backoff(), config.max_retries))


def sync_cluster(config: RedisConfig) -> redis.cluster.RedisCluster:
    """The blocking twin of :func:`async_cluster`, for the publisher library."""
    return redis.cluster.RedisCluster(
        **_cluster_kwargs(config), retry=Retry(_backoff(), config.max_retries)
    )


def _sentinel_kwargs(config: RedisConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(Sentinel(...) arguments, master_for(...) arguments)``: where the sentinels are,
    and how to talk to the master they name (its address comes from them)."""
    assert config.sentinel_master is not None
    sentinel = {
        "sentinels": config.sentinels,
        "sentinel_kwargs": {
            "password": config.sentinel_password,
            "socket_connect_timeout": config.connect_timeout_s,
            "socket_timeout": config.connect_timeout_s,
        },
    }
    master = {k: v for k, v in redis_kwargs(config).items() if k not in ("host", "port")}
    return sentinel, {"service_name": config.sentinel_master, **master}


def async_redis(config: RedisConfig, max_connections: int = 32) -> redis.asyncio.Redis:
    """An asyncio client with jittered retries on transient errors.

    The pool blocks when all its connections are busy, so a burst of thousands of
    reconnecting clients queues for Redis instead of failing with "too many connections".
    In Sentinel mode the client asks the sentinels for the master whenever it
    (re)connects, so it follows failovers.
    """
    retries = AsyncRetry(_backoff(), config.max_retries)
    if config.sentinels:
        sentinel, master = _sentinel_kwargs(config)
        client: redis.asyncio.Redis = Sentinel(**sentinel).master_for(
            redis_class=_SentinelRedis,
            connection_pool_class=_BlockingSentinelPool,
            timeout=max(config.connect_timeout_s, 5.0),
            max_connections=max_connections,
            retry=retries,
            **master,
        )
        return client
    pool = redis.asyncio.BlockingConnectionPool(
        connection_class=redis.asyncio.SSLConnection if config.tls else redis.asyncio.Connection,
        **_blocking_pool_kwargs(config, max_connections, retries),
    )
    return redis.asyncio.Redis.from_pool(pool)  # closing the client closes its pool


def sync_redis(config: RedisConfig, max_connections: int = 32) -> redis.Redis:
    """A blocking, thread-safe client with jittered retries on transient errors.

    As with :func:`async_redis`, threads beyond ``max_connections`` wait for a
    connection instead of failing.
    """
    if config.sentinels:
        sentinel, master = _sentinel_kwargs(config)
        client: redis.Redis = redis.sentinel.Sentinel(**sentinel).master_for(
            max_connections=max_connections,
            retry=Retry(_backoff(), config.max_retries),
            **master,
        )
        return client
    pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]  # untyped in redis-py
        connection_class=redis.SSLConnection if config.tls else redis.Connection,
        **_blocking_pool_kwargs(config, max_connections, Retry(_backoff(), config.max_retries)),
    )
    return redis.Redis.from_pool(pool)
