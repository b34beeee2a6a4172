"""A token bucket, with time from the caller so it is deterministic in tests."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Classic token bucket: ``rate`` tokens a second, at most ``capacity`` saved up."""

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self._rate = rate
        self._capacity = float(capacity)
        self._tokens = float(capacity)
        self._stamp = now

    def take(self, now: float, count: int = 1) -> bool:
        """Take ``count`` tokens at ``now``; False, taking none, if there are fewer."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        if self._tokens >= count:
            self._tokens -= count
            return True
        return False
