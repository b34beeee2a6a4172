"""Keeping logged-in connections honest: heartbeat pings, session re-checks, connection
leases, and revocations from the control channel."""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from gateway.broker.cancel import raise_if_cancelled
from gateway.config import GatewaySettings
from gateway.conn.index import ConnectionIndex
from gateway.services.admission import AdmissionControl
from gateway.services.auth import SessionStore
from notify_wire.codes import CloseReason
from notify_wire.control import parse_control

__all__ = ["Liveness"]

log = structlog.get_logger("gateway.conn")

#: clients pinged per slice of the heartbeat sweep, deliveries let through between slices
SWEEP_SLICE = 1000


class Liveness:
    """Runs the heartbeat and the re-check loops; answers control messages."""

    def __init__(
        self,
        settings: GatewaySettings,
        index: ConnectionIndex,
        sessions: SessionStore,
        admission: AdmissionControl,
    ) -> None:
        self._settings = settings
        self._index = index
        self._sessions = sessions
        self._admission = admission

    async def heartbeat(self) -> None:
        """Ping every client once per heartbeat interval, from this one task.

        A client that has not answered the previous sweep's ping is closed with 1011,
        so a dead peer goes within two intervals. The ping is queued behind any unsent
        bytes: a client that has neither drained them nor answered by the next sweep
        is dead or too slow.
        """
        interval = self._settings.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            for count, client in enumerate(list(self._index.clients()), 1):
                if client.awaiting_pong:
                    client.close_for(CloseReason.PING_TIMEOUT)
                else:
                    client.ping()
                if count % SWEEP_SLICE == 0:
                    await asyncio.sleep(0)

    def on_control(self, payload: bytes) -> None:
        """Handle a control-channel message (see :mod:`notify_wire.control`)."""
        command = parse_control(payload)
        if command is None:
            log.warning("control_message_ignored")
            return
        clients = self._index.of_session(command.digest)
        log.info("session_revoked", connections=len(clients))
        for client in clients:
            client.close_for(CloseReason.SESSION_REVOKED)

    async def upkeep(self) -> None:
        """Every recheck interval: close sessions gone from Redis, renew connection leases."""
        while True:
            await asyncio.sleep(self._settings.session_recheck_s)
            try:
                await self.recheck()
            except RedisError as exc:
                raise_if_cancelled()
                log.warning("session_recheck_failed", error=type(exc).__name__)

    async def recheck(self) -> None:
        for session in await self._sessions.missing(self._index.sessions()):
            clients = self._index.of_session(session.digest)
            log.info("session_expired", connections=len(clients))
            for client in clients:
                client.close_for(CloseReason.SESSION_EXPIRED)
        await self._admission.renew(self._index.leases())
