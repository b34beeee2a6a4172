"""redis-py clients built from :class:`~gateway.config.RedisConfig` (shared with ``clients``)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Connection, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import RedisConfig

__all__ = ["async_redis", "redis_kwargs"]


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


def async_redis(config: RedisConfig, max_connections: int = 32) -> Redis:
    """An asyncio client with jittered retries on transient errors.

    The pool blocks when all its connections are busy, so a burst of thousands of
    reconnecting clients queues for Redis instead of failing with "too many connections".
    """
    kwargs = redis_kwargs(config)
    retries = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), config.max_retries)
    pool = BlockingConnectionPool(
        connection_class=SSLConnection if config.tls else Connection,
        max_connections=max_connections,
        timeout=max(config.connect_timeout_s, 5.0),
        **{k: v for k, v in kwargs.items() if k != "ssl"},
        retry=retries,
    )
    return Redis.from_pool(pool)  # closing the client closes its pool
