"""Exceptions of the publisher library.

Bad input never reaches Redis: it raises :class:`ValueError` (a bad channel, an
oversized payload, a bad token, ttl or session field) or :class:`TypeError` (data
that cannot be serialised to JSON) before anything is sent. Failures of Redis
itself raise one of these::

    PublisherError
    ├── RedisUnavailableError   connection or timeout errors, still failing after the retries
    └── RedisRefusedError       Redis answered with an error (credentials, ACL, OOM, read-only)

Each message names the Redis server (``host:port``) and says what to check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from notify_wire.errors import describe

__all__ = ["PublisherError", "RedisRefusedError", "RedisUnavailableError", "redis_errors"]


class PublisherError(Exception):
    """Redis could not carry out an operation; ``address`` is the server's ``host:port``."""

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


class RedisUnavailableError(PublisherError):
    """Redis could not be reached, or did not answer in time, after every retry.

    The operation may or may not have reached Redis: a message whose reply was lost
    can have been delivered (retries make delivery at-least-once, never silent loss).
    """


class RedisRefusedError(PublisherError):
    """Redis answered the command with an error; retrying the same call will not help."""


@contextmanager
def redis_errors(address: str, operation: str, attempts: int) -> Iterator[None]:
    """Turn redis-py exceptions raised inside the block into :class:`PublisherError`."""
    try:
        yield
    except AuthenticationError as exc:  # a ConnectionError subclass: test it first
        raise RedisRefusedError(
            f"Redis at {address} refused the credentials ({describe(exc)}): "
            "check REDIS_URL or REDIS_USERNAME/REDIS_PASSWORD",
            address,
        ) from exc
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {address} for {operation} after {attempts} attempts "
            f"({describe(exc)}); is Redis running?",
            address,
        ) from exc
    except RedisError as exc:
        raise RedisRefusedError(
            f"Redis at {address} refused {operation}: {describe(exc)}", address
        ) from exc
