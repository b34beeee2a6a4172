"""Session lookup: ``session:{token}`` in Redis holds the session JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from redis.exceptions import ResponseError

from gateway.config import Limits
from notify_publisher.connect import AnyRedis
from notify_wire.codes import CloseReason
from notify_wire.sessions import Session, SessionError, parse_session, session_digest, token_problem

__all__ = ["AuthFailure", "SessionStore"]


class AuthFailure(Exception):
    """The client did not open a session: ``reason`` is a log-safe code (a metric label too),
    ``close`` what the client is told."""

    def __init__(self, reason: str, close: CloseReason = CloseReason.BAD_SESSION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close = close


class SessionStore:
    """Reads sessions; never logs or returns the token."""

    def __init__(self, redis: AnyRedis, prefix: str, limits: Limits) -> None:
        self._redis = redis
        self._prefix = prefix
        self._limits = limits

    async def load(self, token: str) -> Session:
        """The session for ``token``; raises :class:`AuthFailure` when there is none."""
        problem = token_problem(token)
        if problem is not None:
            raise AuthFailure(problem)
        key = self._prefix + token
        try:
            raw = await self._redis.get(key)
        except ResponseError as exc:
            # A hash or a list under the session's name: a bad session, not an outage
            # (1013 would have the client retry the same token forever).
            if str(exc).startswith("WRONGTYPE"):
                raise AuthFailure("session_wrong_type") from None
            raise
        if raw is None:
            raise AuthFailure("unknown_or_expired")
        try:
            session = parse_session(
                raw if isinstance(raw, bytes) else raw.encode(),
                max_bytes=self._limits.max_session_bytes,
                max_user_id_length=self._limits.max_user_id_length,
            )
        except SessionError as exc:
            raise AuthFailure(exc.reason) from None
        return dataclasses.replace(session, digest=session_digest(token), key=key)

    async def missing(self, sessions: Iterable[Session]) -> list[Session]:
        """The sessions whose keys are gone (deleted or expired), in one round trip."""
        batch = list(sessions)
        if not batch:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for session in batch:
                pipe.exists(session.key)
            found = await pipe.execute()
        return [session for session, exists in zip(batch, found, strict=True) if not exists]
