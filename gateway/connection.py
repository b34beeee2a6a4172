"""One WebSocket client: authentication, its command loop, and its outgoing path.

The websockets library does the handshake, keepalive pings, reading frames and
the close handshake. Outgoing data frames are written by :class:`ClientConnection`
straight to the transport: they are pre-built, unmasked, complete RFC 6455 text
frames, so one bytes object serves every subscriber. A write never waits; a
client whose unsent bytes pass the buffer limit is closed with 4008.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
from typing import cast

import structlog
from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from gateway.auth import AuthFailure, SessionStore
from gateway.channels import ChannelPolicy
from gateway.config import GatewaySettings
from gateway.control import parse_control
from gateway.protocol import Auth, CloseCode, parse_command, welcome_frame
from gateway.registry import Registry
from gateway.session import (
    ClientSession,
    Close,
    Reply,
    Session,
    SubscribeChannel,
    UnsubscribeChannel,
)
from gateway.subscriber import Subscriber

__all__ = ["ClientConnection", "ConnectionHandler"]

log = structlog.get_logger("gateway.connection")

_AUTH_REASONS = {
    "auth_timeout": "unauthorized: no auth frame within the auth timeout",
    "first_frame_not_auth": 'unauthorized: the first frame must be {"type":"auth","token":...}',
    "bad_authorization_header": "unauthorized: use 'Authorization: Bearer <token>'",
}


class ClientConnection:
    """The registry's view of one client: a non-blocking, bounded writer."""

    __slots__ = ("_closer", "_log", "_max_buffer", "_transport", "_ws", "closed", "session")

    def __init__(
        self,
        ws: ServerConnection,
        max_buffer: int,
        closer: ConnectionHandler,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._ws = ws
        # Bound to conn/user: the fan-out calls send() outside the connection's context.
        self._log = logger
        self._transport = cast(asyncio.WriteTransport, ws.transport)
        self._max_buffer = max_buffer
        self._closer = closer
        self.closed = False
        self.session: ClientSession | None = None

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self._ws.protocol.state is not State.OPEN:
            self.closed = True  # a close frame was sent: no data frame may follow it
            return
        transport = self._transport
        transport.write(data)
        buffered = transport.get_write_buffer_size()
        if buffered > self._max_buffer:
            self._log.warning(
                "slow_consumer", buffered_bytes=buffered, limit_bytes=self._max_buffer
            )
            self._closer.slow_consumers += 1
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: outgoing buffer limit reached")

    def subscription_refused(self, channel: str) -> None:
        if self.session is not None:
            self.session.forget([channel])

    def close(self, code: CloseCode, reason: str) -> None:
        """Stop writing and start the close handshake; returns at once."""
        if not self.closed:
            self.closed = True
            self._closer.close_later(self._ws, code, reason)


class ConnectionHandler:
    """Serves every WebSocket connection of the process."""

    def __init__(
        self,
        settings: GatewaySettings,
        registry: Registry,
        subscriber: Subscriber,
        sessions: SessionStore,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._subscriber = subscriber
        self._sessions = sessions
        self._policy = ChannelPolicy(settings.public_channels)
        self._closing: set[asyncio.Task[None]] = set()
        # Open connections by session digest, for revocation.
        self._sessions_open: dict[str, set[ClientConnection]] = {}
        # Plain counters, read by gateway.metrics at scrape time.
        self.connections = 0
        self.slow_consumers = 0
        self.auth_failures: collections.Counter[str] = collections.Counter()

    def close_later(self, ws: ServerConnection, code: CloseCode, reason: str) -> None:
        """Start a close handshake from synchronous code (the fan-out path)."""
        task = asyncio.get_running_loop().create_task(ws.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def on_control(self, payload: bytes) -> None:
        """Handle a control-channel message (see :mod:`gateway.control`)."""
        command = parse_control(payload)
        if command is None:
            log.warning("control_message_ignored")
            return
        clients = self._sessions_open.get(command.digest, ())
        log.info("session_revoked", connections=len(clients))
        for client in list(clients):
            client.close(CloseCode.UNAUTHORIZED, "session revoked")

    async def __call__(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn_id = secrets.token_hex(6)
        bound = log.bind(conn=conn_id)
        structlog.contextvars.bind_contextvars(conn=conn_id)
        if not self._subscriber.ready:
            bound.info("connection_refused", reason="redis_unavailable")
            await ws.close(CloseCode.TRY_AGAIN_LATER, "Redis unavailable; try again later")
            return
        try:
            session = await self._authenticate(ws)
        except AuthFailure as exc:
            bound.info("auth_failed", reason=exc.reason, remote=_remote(ws))
            self.auth_failures[exc.reason] += 1
            reason = _AUTH_REASONS.get(
                exc.reason, "unauthorized: unknown, expired or invalid session"
            )
            await ws.close(CloseCode.UNAUTHORIZED, reason)
            return
        except RedisError as exc:
            bound.warning("auth_unavailable", error=type(exc).__name__)
            await ws.close(CloseCode.TRY_AGAIN_LATER, "session store unavailable; try again later")
            return
        except ConnectionClosed:
            return
        structlog.contextvars.bind_contextvars(user=session.user_id)
        bound = bound.bind(user=session.user_id)
        client = ClientConnection(ws, self._settings.limits.max_buffer_bytes, self, bound)
        state = ClientSession(session, self._policy, self._settings.limits, loop.time())
        client.session = state
        self.connections += 1
        self._sessions_open.setdefault(session.digest, set()).add(client)
        bound.info("connection_opened", remote=_remote(ws))
        try:
            client.send(welcome_frame(session.user_id, conn_id, self._settings.heartbeat_s))
            await self._serve(ws, client, state)
        finally:
            self.connections -= 1
            peers = self._sessions_open[session.digest]
            peers.discard(client)
            if not peers:
                del self._sessions_open[session.digest]
            client.closed = True
            self._registry.unsubscribe(client, state.channels)
            bound.info(
                "connection_closed",
                code=ws.close_code,
                duration_s=round(loop.time() - started, 3),
            )

    async def _authenticate(self, ws: ServerConnection) -> Session:
        assert ws.request is not None
        header = ws.request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthFailure("bad_authorization_header")
            return await self._sessions.load(token.strip())
        try:
            async with asyncio.timeout(self._settings.auth_timeout_s):
                data = await ws.recv()
        except TimeoutError:
            raise AuthFailure("auth_timeout") from None
        command = parse_command(data)
        if not isinstance(command, Auth):
            raise AuthFailure("first_frame_not_auth")
        return await self._sessions.load(command.token)

    async def _serve(
        self, ws: ServerConnection, client: ClientConnection, state: ClientSession
    ) -> None:
        loop = asyncio.get_running_loop()
        registry = self._registry
        try:
            async for data in ws:
                action = state.receive(data, loop.time())
                if isinstance(action, Reply):
                    client.send(action.frame)
                elif isinstance(action, SubscribeChannel):
                    log.debug("subscribed", channel=action.channel)
                    registry.subscribe(client, action.channel, action.frame, action.ref)
                elif isinstance(action, UnsubscribeChannel):
                    log.debug("unsubscribed", channel=action.channel)
                    registry.unsubscribe(client, [action.channel])
                    client.send(action.frame)
                elif isinstance(action, Close):
                    log.info("connection_rate_limited")
                    await ws.close(action.code, action.reason)
                    return
        except ConnectionClosed:
            return


def _remote(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
