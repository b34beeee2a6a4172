"""Logging a connection in: admission, the client's address, authentication, the welcome."""

from __future__ import annotations

import asyncio

import structlog
from redis.exceptions import RedisError

from gateway.broker.subscriber import Readiness
from gateway.config import GatewaySettings
from gateway.conn.connection import ClientConnection
from gateway.conn.index import ConnectionIndex
from gateway.core.client import ClientState
from gateway.core.frames import welcome_frame
from gateway.core.hub import Hub
from gateway.core.policy import ChannelPolicy
from gateway.core.stats import ConnectionStats
from gateway.services.admission import AdmissionControl
from gateway.services.auth import AuthFailure, SessionStore
from notify_wire.codes import CloseReason
from notify_wire.frames import Auth, parse_frame
from notify_wire.sessions import Session

__all__ = ["Login"]

log = structlog.get_logger("gateway.conn")


class Login:
    """Admits, authenticates and welcomes new connections, or closes them saying why."""

    def __init__(
        self,
        settings: GatewaySettings,
        hub: Hub,
        readiness: Readiness,
        sessions: SessionStore,
        admission: AdmissionControl,
        index: ConnectionIndex,
        stats: ConnectionStats,
    ) -> None:
        self._settings = settings
        self._hub = hub
        self._readiness = readiness
        self._sessions = sessions
        self._admission = admission
        self._index = index
        self._stats = stats
        self._policy = ChannelPolicy(settings.public_channels)

    async def login(self, client: ClientConnection) -> None:
        """The first step of every connection."""
        structlog.contextvars.bind_contextvars(conn=client.conn_id)  # this task's context
        refusal = self._refusal()
        if refusal is not None:
            client.close_for(refusal)
            return
        try:
            ip_refusal = await self._admission.check_ip(self.client_ip(client))
            if ip_refusal is not None:
                log.info("connection_refused", reason="ip_attempts", remote=client.remote)
                client.close_for(ip_refusal)
                return
            session = await self._authenticate(client)
            if session is None:
                return  # gone before it said who it is
            admitted = await self._admission.admit(session.user_id, client.conn_id)
        except AuthFailure as exc:
            log.info("auth_failed", reason=exc.reason, remote=client.remote)
            self._stats.auth_failures[exc.reason] += 1
            client.close_for(exc.close)
            return
        except RedisError as exc:
            log.warning("auth_unavailable", error=type(exc).__name__)
            client.close_for(CloseReason.SESSION_STORE_UNAVAILABLE)
            return
        structlog.contextvars.bind_contextvars(user=session.user_id)
        if admitted is not None:
            log.info("connection_refused", reason=admitted.name.lower())
            client.close_for(admitted)
            return
        self._welcome(client, session)

    def _welcome(self, client: ClientConnection, session: Session) -> None:
        client.forget_request()
        now = asyncio.get_running_loop().time()
        client.state = ClientState(
            session, self._policy, self._settings.limits, now, self._hub.channels_of(client)
        )
        self._stats.connections += 1
        self._index.add(client, session)
        log.info("connection_opened", remote=client.remote)
        client.send(welcome_frame(session.user_id, client.conn_id, self._settings.heartbeat_s))

    def _refusal(self) -> CloseReason | None:
        """Why the process cannot take one more connection now, if it cannot."""
        if self._stats.sockets > self._settings.admission.max_connections:
            log.warning("connection_refused", reason="gateway_full")
            return CloseReason.GATEWAY_FULL
        if not self._readiness.ready:
            log.info("connection_refused", reason="redis_unavailable")
            return CloseReason.REDIS_UNAVAILABLE
        return None

    def client_ip(self, client: ClientConnection) -> str:
        """The client's address: the trusted proxy's header if one is set, else the peer's."""
        header = self._settings.admission.trusted_proxy_header
        if header is not None and client.request is not None:
            # The trusted proxy appends the address it saw: the last entry of the last
            # line (HAProxy adds a line of its own after any the client sent).
            values = client.request.headers.get_all(header)
            if values and values[-1].strip():
                return values[-1].split(",")[-1].strip()
        address = client.remote_address
        return "unknown" if address is None else address[0]

    async def _authenticate(self, client: ClientConnection) -> Session | None:
        assert client.request is not None
        values = client.request.headers.get_all("Authorization")
        if values:
            scheme, _, token = values[0].strip().partition(" ")
            if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
                raise AuthFailure("bad_authorization_header", CloseReason.BAD_AUTHORIZATION_HEADER)
            return await self._sessions.load(token.strip())
        try:
            async with asyncio.timeout(self._settings.auth_timeout_s):
                data = await client.first_message()
        except TimeoutError:
            raise AuthFailure("auth_timeout", CloseReason.AUTH_TIMEOUT) from None
        if data is None:
            return None
        frame = parse_frame(data)
        if not isinstance(frame, Auth):
            raise AuthFailure("first_frame_not_auth", CloseReason.FIRST_FRAME_NOT_AUTH)
        return await self._sessions.load(frame.token)
