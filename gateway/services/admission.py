"""Connection admission counted in Redis, so limits hold across every gateway instance.

- Attempts per user and per IP: ``INCR`` + ``EXPIRE`` on a one-minute window.
- Concurrent connections per user: a sorted set of connection leases. Each gateway
  renews the leases of its live connections every recheck interval and removes them
  on close; a gateway that dies without closing leaves leases that simply expire,
  so a crash never locks a user out for longer than one lease (a bare INCR/DECR
  counter would stay inflated forever).

Keys share a ``{u:<user>}`` hash tag so each script touches one Redis Cluster slot.
Time is Redis's own (``TIME`` inside the scripts), so gateway clocks need not agree.

A Redis that is full (``maxmemory`` with ``noeviction``) answers ``OOM`` to the counters'
writes while sessions can still be read. Refusing every login then would be an outage
made by a safety limit, so admission degrades instead (:attr:`AdmissionControl.degraded`):
what can still be counted is read (attempts and leases counted before, so a user already
at a limit stays refused) and anything else is admitted uncounted, until a write works
again. docs/redis.md argues the choice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import OutOfMemoryError

from gateway.config import Admission
from notify_publisher.connect import AnyRedis
from notify_wire.codes import CloseReason

__all__ = ["OOM_FIX", "AdmissionControl"]

log = structlog.get_logger("gateway.admission")

ATTEMPT_WINDOW_S = 60

#: what to do about a Redis that answers OOM to the counters (logs, /readyz)
OOM_FIX = (
    "Redis is out of memory (maxmemory with noeviction): raise maxmemory or free memory; keep "
    "caches in another Redis with an eviction policy (docs/redis.md)"
)

# KEYS: attempts, leases. ARGV: max attempts, max connections, lease ms, member, window s.
_ADMIT = """
local attempts = redis.call('INCR', KEYS[1])
if attempts == 1 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
if attempts > tonumber(ARGV[1]) then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 2 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""

# _ADMIT without its writes, for a Redis that answers OOM: refuses what was counted before.
# ZREMRANGEBYSCORE only frees memory, and Redis allows it when full. Same KEYS and ARGV.
_ADMIT_COUNTED = """
local attempts = tonumber(redis.call('GET', KEYS[1]) or '0')
if attempts >= tonumber(ARGV[1]) then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 2 end
return 0
"""

# KEYS: attempts. ARGV: window s.
_COUNT = """
local attempts = redis.call('INCR', KEYS[1])
if attempts == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return attempts
"""

# KEYS: leases. ARGV: lease ms, members...
_RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"""


class AdmissionControl:
    """Per-user and per-IP admission against shared Redis counters."""

    def __init__(self, redis: AnyRedis, admission: Admission, lease_s: float) -> None:
        self._redis = redis
        self._limits = admission
        self._lease_ms = max(1000, int(lease_s * 1000))
        self._admit = redis.register_script(_ADMIT)
        self._admit_counted = redis.register_script(_ADMIT_COUNTED)
        self._renew = redis.register_script(_RENEW)
        self._count = redis.register_script(_COUNT)
        #: Redis's OOM answer while the counters cannot be written; None while they can
        self.degraded: str | None = None
        self._degraded_since = 0.0
        #: logins admitted while degraded, their attempt and connection lease uncounted
        self.uncounted_admissions = 0

    def _user_key(self, user: str, kind: str) -> str:
        return f"{self._limits.key_prefix}{{u:{user}}}:{kind}"

    async def check_ip(self, ip: str) -> CloseReason | None:
        """Count an attempt from ``ip``; refuse past the per-minute limit (0: off)."""
        limit = self._limits.max_attempts_per_ip
        if limit <= 0:
            return None
        key = f"{self._limits.key_prefix}ip:{ip}:attempts"
        try:
            attempts = int(await self._count(keys=[key], args=[ATTEMPT_WINDOW_S]))
        except OutOfMemoryError as exc:
            self._degrade(exc)
            attempts = int(await self._redis.get(key) or 0) + 1  # this one, uncounted
        else:
            self._restore()
        return CloseReason.IP_ATTEMPTS if attempts > limit else None

    async def admit(self, user: str, conn_id: str) -> CloseReason | None:
        """Count an attempt and take a connection slot for ``user``, atomically.

        While Redis answers OOM: refuse only what the counters already hold, else admit
        uncounted.
        """
        keys = [self._user_key(user, "attempts"), self._user_key(user, "conns")]
        args: list[int | str] = [
            self._limits.max_attempts_per_user,
            self._limits.max_connections_per_user,
            self._lease_ms,
            conn_id,
            ATTEMPT_WINDOW_S,
        ]
        try:
            result = int(await self._admit(keys=keys, args=args))
        except OutOfMemoryError as exc:
            self._degrade(exc)
            result = int(await self._admit_counted(keys=keys, args=args))
            self.uncounted_admissions += result == 0
        else:
            self._restore()
        return {0: None, 1: CloseReason.USER_ATTEMPTS, 2: CloseReason.USER_CONNECTIONS}[result]

    def _degrade(self, exc: OutOfMemoryError) -> None:
        if self.degraded is None:  # the first refusal says it all; the next ones would repeat it
            self.degraded = f"OOM {exc}"[:200]  # redis-py keeps the message, not the code
            self._degraded_since = time.monotonic()
            log.warning("admission_degraded", error=self.degraded, fix=OOM_FIX)

    def _restore(self) -> None:
        if self.degraded is not None:
            self.degraded = None
            log.info(
                "admission_restored",
                degraded_s=round(time.monotonic() - self._degraded_since, 3),
                uncounted_admissions=self.uncounted_admissions,
            )

    async def release(self, user: str, conn_id: str) -> None:
        await self._redis.zrem(self._user_key(user, "conns"), conn_id)

    async def renew(self, connections: Mapping[str, Iterable[str]]) -> None:
        """Extend the leases of live connections: ``{user: [conn_id, ...]}``.

        While Redis answers OOM they cannot be extended: they expire, and those
        connections go uncounted until they reconnect.
        """
        calls: list[tuple[str, list[int | str]]] = [
            (self._user_key(user, "conns"), [self._lease_ms, *conn_ids])
            for user, conn_ids in connections.items()
        ]
        if not calls:
            return
        try:
            await self._renew_all(calls)
        except OutOfMemoryError as exc:
            self._degrade(exc)
        else:
            self._restore()

    async def _renew_all(self, calls: list[tuple[str, list[int | str]]]) -> None:
        if isinstance(self._redis, RedisCluster):
            # Cluster pipelines refuse scripts: run them concurrently, a bounded number at once.
            for start in range(0, len(calls), 100):
                batch = calls[start : start + 100]
                results = await asyncio.gather(
                    *(self._renew(keys=[key], args=args) for key, args in batch),
                    return_exceptions=True,  # every call finished before one is raised
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, args in calls:
                await self._renew(keys=[key], args=args, client=pipe)
            await pipe.execute()
