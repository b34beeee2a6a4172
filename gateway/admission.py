"""Connection admission counted in Redis, so limits hold across every gateway instance.

- Attempts per user and per IP: ``INCR`` + ``EXPIRE`` on a one-minute window.
- Concurrent connections per user: a sorted set of connection leases. Each gateway
  renews the leases of its live connections every recheck interval and removes them
  on close; a gateway that dies without closing leaves leases that simply expire,
  so a crash never locks a user out for longer than one lease (a bare INCR/DECR
  counter would stay inflated forever).

Keys share a ``{u:<user>}`` hash tag so each script touches one Redis Cluster slot.
Time is Redis's own (``TIME`` inside the scripts), so gateway clocks need not agree.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable, Mapping

from redis.asyncio.cluster import RedisCluster

from gateway.config import Admission
from gateway.redis_client import AnyRedis

__all__ = ["AdmissionControl", "Refusal"]

ATTEMPT_WINDOW_S = 60

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


class Refusal(enum.Enum):
    """Why a connection is not admitted; the value is the close reason."""

    USER_ATTEMPTS = "too many connection attempts for this user; retry in a minute"
    USER_CONNECTIONS = "too many connections for this user"
    IP_ATTEMPTS = "too many connection attempts from this address; retry in a minute"


class AdmissionControl:
    """Per-user and per-IP admission against shared Redis counters."""

    def __init__(self, redis: AnyRedis, admission: Admission, lease_s: float) -> None:
        self._redis = redis
        self._limits = admission
        self._lease_ms = max(1000, int(lease_s * 1000))
        self._admit = redis.register_script(_ADMIT)
        self._renew = redis.register_script(_RENEW)
        self._count = redis.register_script(_COUNT)

    def _user_key(self, user: str, kind: str) -> str:
        return f"{self._limits.key_prefix}{{u:{user}}}:{kind}"

    async def check_ip(self, ip: str) -> Refusal | None:
        """Count an attempt from ``ip``; refuse past the per-minute limit (0: off)."""
        limit = self._limits.max_attempts_per_ip
        if limit <= 0:
            return None
        key = f"{self._limits.key_prefix}ip:{ip}:attempts"
        attempts = await self._count(keys=[key], args=[ATTEMPT_WINDOW_S])
        return Refusal.IP_ATTEMPTS if int(attempts) > limit else None

    async def admit(self, user: str, conn_id: str) -> Refusal | None:
        """Count an attempt and take a connection slot for ``user``, atomically."""
        result = await self._admit(
            keys=[self._user_key(user, "attempts"), self._user_key(user, "conns")],
            args=[
                self._limits.max_attempts_per_user,
                self._limits.max_connections_per_user,
                self._lease_ms,
                conn_id,
                ATTEMPT_WINDOW_S,
            ],
        )
        return {0: None, 1: Refusal.USER_ATTEMPTS, 2: Refusal.USER_CONNECTIONS}[int(result)]

    async def release(self, user: str, conn_id: str) -> None:
        await self._redis.zrem(self._user_key(user, "conns"), conn_id)

    async def renew(self, connections: Mapping[str, Iterable[str]]) -> None:
        """Extend the leases of live connections: ``{user: [conn_id, ...]}``."""
        calls: list[tuple[str, list[int | str]]] = [
            (self._user_key(user, "conns"), [self._lease_ms, *conn_ids])
            for user, conn_ids in connections.items()
        ]
        if isinstance(self._redis, RedisCluster):
            # Cluster pipelines refuse scripts: run them concurrently, a bounded number at once.
            for start in range(0, len(calls), 100):
                await asyncio.gather(
                    *(
                        self._renew(keys=[key], args=args)
                        for key, args in calls[start : start + 100]
                    )
                )
            return
        if calls:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, args in calls:
                    await self._renew(keys=[key], args=args, client=pipe)
                await pipe.execute()
