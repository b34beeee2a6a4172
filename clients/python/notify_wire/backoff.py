"""How long to wait before trying again: the one backoff rule, and the policies that use it.

A delay is drawn uniformly between ``min_s`` and a ceiling that doubles with each attempt
from ``initial_s`` up to ``cap_s`` (exponential backoff with full jitter, so that clients
cut at the same moment do not come back at the same moment); without jitter it is the
ceiling itself. A connection that lived ``stable_after_s`` resets the count. The browser
client implements the same rule with :data:`BROWSER_RECONNECT` (a test compares them).
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Final

__all__ = [
    "BROWSER_RECONNECT",
    "COMMAND_RETRY",
    "INTERNAL_CHANNEL_RETRY",
    "REDIS_RECONNECT",
    "WORKER_RESTART",
    "Backoff",
    "BackoffPolicy",
]

#: attempts counted at most: the ceiling has long reached the cap by then
_MAX_ATTEMPT: Final = 30


@dataclasses.dataclass(frozen=True, slots=True)
class BackoffPolicy:
    initial_s: float
    cap_s: float
    min_s: float = 0.0
    jitter: bool = True
    stable_after_s: float = 10.0

    def ceiling(self, attempt: int) -> float:
        """The longest delay after ``attempt`` failures (0 for the first retry)."""
        return max(
            self.min_s, min(self.cap_s, math.ldexp(self.initial_s, min(attempt, _MAX_ATTEMPT)))
        )

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        return random.uniform(self.min_s, ceiling) if self.jitter else ceiling


#: the gateway's pub/sub connection (and each cluster node's), and its start-up ACL check
REDIS_RECONNECT: Final = BackoffPolicy(initial_s=0.1, cap_s=10.0)
#: an internal channel (the control channel) that Redis refused
INTERNAL_CHANNEL_RETRY: Final = BackoffPolicy(initial_s=0.5, cap_s=10.0)
#: a worker process that died (``serve --workers``): no jitter, there is one of each
WORKER_RESTART: Final = BackoffPolicy(initial_s=0.1, cap_s=10.0, jitter=False)
#: a Redis command retried after a connection error or timeout (redis-py's retries)
COMMAND_RETRY: Final = BackoffPolicy(initial_s=0.05, cap_s=1.0)
#: the browser client's reconnects (``clients/js``: minDelayMs, initialDelayMs, maxDelayMs,
#: stableAfterMs)
BROWSER_RECONNECT: Final = BackoffPolicy(initial_s=0.3, cap_s=30.0, min_s=0.1)


class Backoff:
    """The attempts of one retry loop under a :class:`BackoffPolicy`."""

    __slots__ = ("attempt", "policy")

    def __init__(self, policy: BackoffPolicy = REDIS_RECONNECT) -> None:
        self.policy = policy
        self.attempt = 0

    def next_delay(self) -> float:
        delay = self.policy.delay(self.attempt)
        self.attempt = min(self.attempt + 1, _MAX_ATTEMPT)
        return delay

    def reset(self) -> None:
        self.attempt = 0

    def lived(self, seconds: float) -> None:
        """A connection (or process) that lived this long was healthy: start over."""
        if seconds >= self.policy.stable_after_s:
            self.reset()
