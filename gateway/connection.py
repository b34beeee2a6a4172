"""One WebSocket client: authentication, its command loop, and its outgoing path.

The websockets library does the handshake, keepalive pings, reading frames and
the close handshake. Outgoing data frames are written by :class:`ClientConnection`
(a :class:`gateway.writer.FrameWriter`) straight to the transport: they are
pre-built, unmasked, complete RFC 6455 text frames, so one bytes object serves
every subscriber. A write never waits; a client whose unsent bytes pass the
buffer limit is closed with 4008.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
from typing import cast

import structlog
from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from gateway.admission import AdmissionControl
from gateway.auth import AuthFailure, SessionStore
from gateway.channels import ChannelPolicy
from gateway.config import GatewaySettings
from gateway.control import parse_control
from gateway.protocol import (
    Auth,
    CloseCode,
    ErrorCode,
    error_frame,
    parse_command,
    reply_frame,
    welcome_frame,
)
from gateway.recovery import HistoryReader
from gateway.registry import Registry, SubscriptionRefused
from gateway.session import (
    ClientSession,
    Close,
    Reply,
    Session,
    SubscribeChannel,
    UnsubscribeChannel,
)
from gateway.subscriber import Readiness
from gateway.writer import FrameWriter

__all__ = ["ClientConnection", "ConnectionHandler"]

log = structlog.get_logger("gateway.connection")

#: How long a subscribe may wait for Redis to confirm (e.g. while it reconnects).
SUBSCRIBE_TIMEOUT_S = 10.0

_AUTH_REASONS = {
    "auth_timeout": "unauthorized: no auth frame within the auth timeout",
    "first_frame_not_auth": 'unauthorized: the first frame must be {"type":"auth","token":...}',
    "bad_authorization_header": "unauthorized: use 'Authorization: Bearer <token>'",
}


class ClientConnection(FrameWriter):
    """The registry's view of one client: a non-blocking, bounded writer."""

    __slots__ = ("_closer", "_pong", "conn_id", "session")

    def __init__(
        self,
        ws: ServerConnection,
        conn_id: str,
        session: ClientSession,
        max_buffer: int,
        closer: ConnectionHandler,
    ) -> None:
        super().__init__(ws, max_buffer)
        self._closer = closer
        self.conn_id = conn_id
        self.session = session
        self._pong: asyncio.Future[float] | None = None

    def overflow(self, buffered: int) -> None:
        # Named explicitly: the fan-out runs outside the connection's contextvars.
        log.warning(
            "slow_consumer",
            conn=self.conn_id,
            user=self.session.session.user_id,
            buffered_bytes=buffered,
            limit_bytes=self._max_buffer,
        )
        self._closer.slow_consumers += 1
        super().overflow(buffered)

    async def heartbeat(self) -> None:
        """Ping the client; close it (1011) if it did not answer the previous ping."""
        if self.closed or self._ws.protocol.state is not State.OPEN:
            return
        if self._pong is not None and not self._pong.done():
            self.close(CloseCode.PING_TIMEOUT, "keepalive ping timeout")
            return
        if self._transport.get_write_buffer_size():
            # ping() waits for the buffer to drain, so it must not hold up the sweep: the
            # ping is queued behind the unsent bytes, and a client that has neither drained
            # them nor answered by the next sweep is dead or too slow, and is closed then.
            self._pong = asyncio.ensure_future(self._ping_answered())
            self._pong.add_done_callback(_consume_exception)
            return
        with contextlib.suppress(ConnectionClosed):  # it closed meanwhile: nothing to ping
            self._pong = cast(asyncio.Future[float], await self._ws.ping())

    async def _ping_answered(self) -> float:
        pong = await self._ws.ping()
        latency: float = await pong
        return latency

    def subscription_refused(self, channel: str, message: str) -> None:
        self.session.forget([channel])
        self.send(error_frame(ErrorCode.UNAVAILABLE, f"Redis refused {channel!r}: {message}"))


class ConnectionHandler:
    """Serves every WebSocket connection of the process."""

    def __init__(
        self,
        settings: GatewaySettings,
        registry: Registry,
        subscriber: Readiness,
        sessions: SessionStore,
        admission: AdmissionControl,
        history: HistoryReader,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._subscriber = subscriber
        self._sessions = sessions
        self._admission = admission
        self._history = history
        self._policy = ChannelPolicy(settings.public_channels)
        # Authenticated connections by session digest (revocation, re-checks, leases).
        self._open: dict[str, set[ClientConnection]] = {}
        self.sockets = 0  # every WebSocket, authenticated or not (the global cap)
        self.connections = 0  # authenticated ones
        # Plain counters, read by gateway.metrics at scrape time.
        self.slow_consumers = 0
        self.auth_failures: collections.Counter[str] = collections.Counter()

    async def heartbeat(self) -> None:
        """Ping every client once per heartbeat interval, from this one task.

        websockets' own keepalive runs a task per connection (about 1.6 KiB of an
        idle connection's memory); one sweep does the same job. A client that has
        not answered the previous sweep's ping is closed with 1011, so a dead peer
        goes within two intervals, as before.
        """
        interval = self._settings.heartbeat_s
        while True:
            await asyncio.sleep(interval)
            clients = [client for peers in self._open.values() for client in peers]
            for count, client in enumerate(clients, 1):
                await client.heartbeat()
                if count % 1000 == 0:
                    await asyncio.sleep(0)  # let deliveries through between slices

    def on_control(self, payload: bytes) -> None:
        """Handle a control-channel message (see :mod:`gateway.control`)."""
        command = parse_control(payload)
        if command is None:
            log.warning("control_message_ignored")
            return
        clients = self._open.get(command.digest, ())
        log.info("session_revoked", connections=len(clients))
        for client in list(clients):
            client.close(CloseCode.UNAUTHORIZED, "session revoked")

    async def upkeep(self) -> None:
        """Every recheck interval: close sessions gone from Redis, renew connection leases."""
        while True:
            await asyncio.sleep(self._settings.session_recheck_s)
            try:
                await self.recheck()
            except RedisError as exc:
                log.warning("session_recheck_failed", error=type(exc).__name__)

    async def recheck(self) -> None:
        sessions = [next(iter(clients)).session.session for clients in self._open.values()]
        for session in await self._sessions.missing(sessions):
            clients = self._open.get(session.digest, set())
            log.info("session_expired", connections=len(clients))
            for client in list(clients):
                client.close(CloseCode.UNAUTHORIZED, "session expired or deleted")
        leases: dict[str, list[str]] = {}
        for clients in self._open.values():
            for client in clients:
                if not client.closed:
                    user = client.session.session.user_id
                    leases.setdefault(user, []).append(client.conn_id)
        await self._admission.renew(leases)

    async def __call__(self, ws: ServerConnection) -> None:
        self.sockets += 1
        try:
            await self._handle(ws)
        finally:
            self.sockets -= 1

    async def _refuse(self, ws: ServerConnection) -> bool:
        """Close ``ws`` when the process cannot take it now; True if it was closed."""
        if self.sockets > self._settings.admission.max_connections:
            log.warning("connection_refused", reason="gateway_full")
            await ws.close(CloseCode.TRY_AGAIN_LATER, "gateway at its connection limit")
            return True
        if not self._subscriber.ready:
            log.info("connection_refused", reason="redis_unavailable")
            await ws.close(CloseCode.TRY_AGAIN_LATER, "Redis unavailable; try again later")
            return True
        refusal = await self._admission.check_ip(self._client_ip(ws))
        if refusal is not None:
            log.info("connection_refused", reason="ip_attempts", remote=_remote(ws))
            await ws.close(CloseCode.RATE_LIMITED, refusal.value)
            return True
        return False

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        conn_id = secrets.token_hex(6)
        structlog.contextvars.bind_contextvars(conn=conn_id)
        try:
            if await self._refuse(ws):
                return
            session = await self._authenticate(ws)
            refusal = await self._admission.admit(session.user_id, conn_id)
        except AuthFailure as exc:
            log.info("auth_failed", reason=exc.reason, remote=_remote(ws))
            self.auth_failures[exc.reason] += 1
            reason = _AUTH_REASONS.get(
                exc.reason, "unauthorized: unknown, expired or invalid session"
            )
            await ws.close(CloseCode.UNAUTHORIZED, reason)
            return
        except RedisError as exc:
            log.warning("auth_unavailable", error=type(exc).__name__)
            await ws.close(CloseCode.TRY_AGAIN_LATER, "session store unavailable; try again later")
            return
        except ConnectionClosed:
            return
        structlog.contextvars.bind_contextvars(user=session.user_id)
        if refusal is not None:
            log.info("connection_refused", reason=refusal.name.lower())
            await ws.close(CloseCode.RATE_LIMITED, refusal.value)
            return
        try:
            await self._run(ws, conn_id, session)
        finally:
            with contextlib.suppress(RedisError):
                await self._admission.release(session.user_id, conn_id)
            log.info(
                "connection_closed",
                code=ws.close_code,
                duration_s=round(loop.time() - started, 3),
            )

    async def _run(self, ws: ServerConnection, conn_id: str, session: Session) -> None:
        loop = asyncio.get_running_loop()
        _release_handshake(ws)
        state = ClientSession(session, self._policy, self._settings.limits, loop.time())
        client = ClientConnection(ws, conn_id, state, self._settings.limits.max_buffer_bytes, self)
        self.connections += 1
        self._open.setdefault(session.digest, set()).add(client)
        log.info("connection_opened", remote=_remote(ws))
        try:
            client.send(welcome_frame(session.user_id, conn_id, self._settings.heartbeat_s))
            await self._serve(ws, client, state)
        finally:
            self.connections -= 1
            peers = self._open[session.digest]
            peers.discard(client)
            if not peers:
                del self._open[session.digest]
            client.closed = True
            self._registry.leave(client, state.channels)

    def _client_ip(self, ws: ServerConnection) -> str:
        header = self._settings.admission.trusted_proxy_header
        if header is not None and ws.request is not None:
            # The trusted proxy appends the address it saw: the last entry of the last
            # line (HAProxy adds a line of its own after any the client sent).
            values = ws.request.headers.get_all(header)
            if values and values[-1].strip():
                return values[-1].split(",")[-1].strip()
        address = ws.remote_address
        return str(address[0]) if isinstance(address, tuple) else str(address)

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
                    await self._subscribe(client, state, action)
                elif isinstance(action, UnsubscribeChannel):
                    log.debug("unsubscribed", channel=action.channel)
                    registry.leave(client, [action.channel])
                    client.send(action.frame)
                elif isinstance(action, Close):
                    log.info("connection_rate_limited")
                    await ws.close(action.code, action.reason)
                    return
        except ConnectionClosed:
            return

    async def _subscribe(
        self, client: ClientConnection, state: ClientSession, action: SubscribeChannel
    ) -> None:
        """Join the channel, recover from ``since`` if asked, then reply and go live."""
        channel, ref = action.channel, action.ref
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self._registry.join(client, channel)
        except (SubscriptionRefused, TimeoutError) as exc:
            self._registry.leave(client, [channel])
            state.forget([channel])
            message = (
                f"Redis refused the subscription: {exc}"
                if isinstance(exc, SubscriptionRefused)
                else "Redis did not confirm the subscription in time; try again"
            )
            client.send(error_frame(ErrorCode.UNAVAILABLE, message, ref))
            return
        log.debug("subscribed", channel=channel)
        replay = None
        try:
            replay = await self._history.read(channel, action.since)
        except RedisError as exc:
            log.warning("history_read_failed", channel=channel, error=type(exc).__name__)
        fields: dict[str, object] = {"channel": channel}
        frames: list[bytes] = []
        cutoff = None
        if replay is not None:
            self._registry.note_position(channel, replay.position)
            fields.update(offset=replay.position.offset, epoch=replay.position.epoch)
            if action.since is not None:
                fields["recovered"] = replay.recovered
                frames = replay.frames
                cutoff = replay.position.offset  # buffered copies of what was replayed
        elif action.since is not None:
            fields["recovered"] = False
        reply = reply_frame("subscribed", ref, **fields)
        tail = self._registry.activate(client, channel, cutoff)
        client.send(b"".join([reply, *frames, tail]))


_NO_HEADERS = Headers()


def _release_handshake(ws: ServerConnection) -> None:
    """Free the upgrade request's and response's headers, never read after authentication.

    They were the largest objects an idle connection kept (about 4 KiB of RSS), and
    the request's held the bearer token for the connection's whole life.
    """
    if ws.request is not None:
        ws.request.headers = _NO_HEADERS
    if ws.response is not None:
        ws.response.headers = _NO_HEADERS


def _consume_exception(task: asyncio.Future[float]) -> None:
    # A ping cut short by the connection closing: nothing to report.
    if not task.cancelled():
        task.exception()


def _remote(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
