"""Retry loops and cancellation: a cancel must never be swallowed as a Redis error."""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled"]


def raise_if_cancelled() -> None:
    """Re-raise a cancellation that arrived as a :class:`RedisError`.

    A cancel that lands mid-command can come out of redis-py (or out of a cleanup in a
    ``finally``, closing a dead connection) as a connection error. A loop that retries
    on RedisError would swallow its own cancel and run on after ``stop()``.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
