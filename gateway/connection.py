"""One WebSocket client: authentication, its commands, and its outgoing path.

:class:`ClientConnection` is the connection itself (a :class:`gateway.websocket.WebSocket`):
an idle client owns no task. Steps that wait for Redis (logging in, subscribing) run as
a task while the client's later commands wait their turn in a small inbox, so replies
keep the order of the commands. Outgoing data frames are pre-built, unmasked,
complete RFC 6455 text frames, so one bytes object serves every subscriber. A write
never waits; a client whose unsent bytes pass the buffer limit is closed with 4008.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
from collections.abc import Callable, Coroutine

import structlog
from redis.exceptions import RedisError

from gateway.admission import AdmissionControl
from gateway.auth import AuthFailure, SessionStore
from gateway.channels import ChannelPolicy
from gateway.config import GatewaySettings
from gateway.control import parse_control
from gateway.http import Answer
from gateway.http11 import HttpRequest
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
from gateway.redis_client import raise_if_cancelled
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
from gateway.websocket import WebSocket, WebSocketServer

__all__ = ["ClientConnection", "ConnectionHandler"]

log = structlog.get_logger("gateway.connection")

#: How long a subscribe may wait for Redis to confirm (e.g. while it reconnects).
SUBSCRIBE_TIMEOUT_S = 10.0
#: Commands waiting behind a step before the connection stops reading (TCP pushes back).
INBOX_PAUSE = 16

_AUTH_REASONS = {
    "auth_timeout": "unauthorized: no auth frame within the auth timeout",
    "first_frame_not_auth": 'unauthorized: the first frame must be {"type":"auth","token":...}',
    "bad_authorization_header": "unauthorized: send one 'Authorization: Bearer <token>' header",
}

#: what answers a connection's HTTP requests (``/healthz``, ``/metrics``...; None: upgrade)
Responder = Callable[[HttpRequest], Answer]
#: told each finished connection's close code and lifetime (seconds)
CloseObserver = Callable[[int | None, float], None]


class ClientConnection(WebSocket):
    """One client; the registry sees it as a non-blocking, bounded writer (``send``)."""

    __slots__ = ("_first", "_gone", "_handler", "_inbox", "conn_id", "session", "started")

    def __init__(self, server: WebSocketServer, handler: ConnectionHandler) -> None:
        super().__init__(server)
        self._handler = handler
        self.conn_id = secrets.token_hex(6)
        #: set once logged in
        self.session: ClientSession | None = None
        #: loop time of the upgrade; None for requests that never upgraded
        self.started: float | None = None
        self._gone = False  # the TCP connection is lost (finished() ran)
        # While a step runs: the commands that arrived meanwhile.
        self._inbox: collections.deque[str | bytes] | None = None
        # While logging in without a header: the first message, awaited.
        self._first: asyncio.Future[str | bytes | None] | None = None

    def respond(self, request: HttpRequest) -> Answer:
        return self._handler.respond(request)

    def opened(self) -> None:
        self.started = asyncio.get_running_loop().time()
        self._handler.sockets += 1
        self.run_step(self._handler.login(self))

    def received(self, data: str | bytes) -> None:
        first = self._first
        if first is not None:
            self._first = None
            if not first.done():
                first.set_result(data)
            return
        if self._inbox is not None:
            self._inbox.append(data)
            if len(self._inbox) >= INBOX_PAUSE:
                self.pause_reading()
            return
        self._handler.command(self, data)

    async def first_message(self) -> str | bytes | None:
        """The next message (None if the connection closed first).

        Called from a step, so messages received since the step began wait in the inbox:
        the first of them is the next message (whatever the step awaited before asking).
        """
        if self._inbox:
            return self._inbox.popleft()
        if self._gone:
            return None
        self._first = asyncio.get_running_loop().create_future()
        return await self._first

    def run_step(self, step: Coroutine[None, None, None]) -> None:
        """Run ``step``; commands received meanwhile are handled after it, in order."""
        self._inbox = collections.deque()
        self._handler.background(step).add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("connection_step_failed", conn=self.conn_id, error=repr(exc))
            self.close(CloseCode.INTERNAL_ERROR, "internal error")
        inbox, self._inbox = self._inbox, None
        assert inbox is not None  # set by run_step
        if self._gone:
            self._handler.finished(self)  # deferred until the step was over
            return
        while inbox and self._inbox is None:
            self._handler.command(self, inbox.popleft())
        if self._inbox is not None:  # another step started: the rest waits for it
            self._inbox.extend(inbox)
        if self._inbox is None or len(self._inbox) < INBOX_PAUSE:
            self.resume_reading()

    def finished(self) -> None:
        if self.started is None:
            return  # plain HTTP, or a refused upgrade
        self._gone = True
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        if self._inbox is None:  # else when the running step is over
            self._handler.finished(self)

    def flooded(self) -> None:
        log.info(
            "connection_rate_limited",
            conn=self.conn_id,
            user=self.user_id,
            reason="frames",
            remote=_remote(self),
        )

    def overflow(self, buffered: int) -> None:
        # Named explicitly: the fan-out runs outside any connection's context.
        log.warning(
            "slow_consumer",
            conn=self.conn_id,
            user=self.user_id,
            buffered_bytes=buffered,
            limit_bytes=self._server.options.max_buffer,
        )
        self._handler.slow_consumers += 1
        super().overflow(buffered)

    @property
    def user_id(self) -> str | None:
        return None if self.session is None else self.session.session.user_id

    def subscription_refused(self, channel: str, message: str) -> None:
        if self.session is not None:
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
        *,
        respond: Responder,
        on_closed: CloseObserver,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._subscriber = subscriber
        self._sessions = sessions
        self._admission = admission
        self._history = history
        self.respond = respond
        self._on_closed = on_closed
        self._policy = ChannelPolicy(settings.public_channels)
        # Authenticated connections by session digest (revocation, re-checks, leases).
        self._open: dict[str, set[ClientConnection]] = {}
        # Logins, subscribes and slot releases under way: stop() lets them finish.
        self._tasks: set[asyncio.Task[None]] = set()
        self.sockets = 0  # every WebSocket, authenticated or not (the global cap)
        self.connections = 0  # authenticated ones
        # Plain counters, read by gateway.metrics at scrape time.
        self.slow_consumers = 0
        self.auth_failures: collections.Counter[str] = collections.Counter()

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
            clients = [client for peers in self._open.values() for client in peers]
            for count, client in enumerate(clients, 1):
                if client.awaiting_pong:
                    client.close(CloseCode.PING_TIMEOUT, "keepalive ping timeout")
                else:
                    client.ping()
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
                raise_if_cancelled()
                log.warning("session_recheck_failed", error=type(exc).__name__)

    async def recheck(self) -> None:
        sessions = [_session_of(next(iter(clients))) for clients in self._open.values()]
        for session in await self._sessions.missing(sessions):
            clients = self._open.get(session.digest, set())
            log.info("session_expired", connections=len(clients))
            for client in list(clients):
                client.close(CloseCode.UNAUTHORIZED, "session expired or deleted")
        leases: dict[str, list[str]] = {}
        for clients in self._open.values():
            for client in clients:
                if not client.closed:
                    leases.setdefault(_session_of(client).user_id, []).append(client.conn_id)
        await self._admission.renew(leases)

    def _refusal(self) -> tuple[CloseCode, str] | None:
        """Why the process cannot take one more connection now, if it cannot."""
        if self.sockets > self._settings.admission.max_connections:
            log.warning("connection_refused", reason="gateway_full")
            return CloseCode.TRY_AGAIN_LATER, "gateway at its connection limit"
        if not self._subscriber.ready:
            log.info("connection_refused", reason="redis_unavailable")
            return CloseCode.TRY_AGAIN_LATER, "Redis unavailable; try again later"
        return None

    async def login(self, client: ClientConnection) -> None:
        """Admit, authenticate and welcome a new connection, or close it saying why."""
        structlog.contextvars.bind_contextvars(conn=client.conn_id)  # this task's context
        refusal = self._refusal()
        if refusal is not None:
            client.close(*refusal)
            return
        try:
            ip_refusal = await self._admission.check_ip(self._client_ip(client))
            if ip_refusal is not None:
                log.info("connection_refused", reason="ip_attempts", remote=_remote(client))
                client.close(CloseCode.RATE_LIMITED, ip_refusal.value)
                return
            session = await self._authenticate(client)
            if session is None:
                return  # gone before it said who it is
            admitted = await self._admission.admit(session.user_id, client.conn_id)
        except AuthFailure as exc:
            log.info("auth_failed", reason=exc.reason, remote=_remote(client))
            self.auth_failures[exc.reason] += 1
            reason = _AUTH_REASONS.get(
                exc.reason, "unauthorized: unknown, expired or invalid session"
            )
            client.close(CloseCode.UNAUTHORIZED, reason)
            return
        except RedisError as exc:
            log.warning("auth_unavailable", error=type(exc).__name__)
            client.close(CloseCode.TRY_AGAIN_LATER, "session store unavailable; try again later")
            return
        structlog.contextvars.bind_contextvars(user=session.user_id)
        if admitted is not None:
            log.info("connection_refused", reason=admitted.name.lower())
            client.close(CloseCode.RATE_LIMITED, admitted.value)
            return
        loop = asyncio.get_running_loop()
        client.forget_request()
        client.session = ClientSession(session, self._policy, self._settings.limits, loop.time())
        self.connections += 1
        self._open.setdefault(session.digest, set()).add(client)
        log.info("connection_opened", remote=_remote(client))
        client.send(welcome_frame(session.user_id, client.conn_id, self._settings.heartbeat_s))

    def finished(self, client: ClientConnection) -> None:
        """The connection is gone (and no step of it runs): forget it everywhere."""
        assert client.started is not None
        duration_s = asyncio.get_running_loop().time() - client.started
        self.sockets -= 1
        self._on_closed(client.close_code, duration_s)
        state = client.session
        if state is None:
            return
        session = state.session
        self.connections -= 1
        peers = self._open[session.digest]
        peers.discard(client)
        if not peers:
            del self._open[session.digest]
        self._registry.leave(client, state.channels)
        self.background(self._release(session.user_id, client.conn_id))
        log.info(
            "connection_closed",
            conn=client.conn_id,
            user=session.user_id,
            code=client.close_code,
            duration_s=round(duration_s, 3),
        )

    def background(self, work: Coroutine[None, None, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settle(self, timeout_s: float) -> None:
        """Let logins, subscribes and slot releases under way finish (Redis closes next);
        cancel what is still running after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # A step that ends may start more work (a slot release): wait for that too.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    async def _release(self, user_id: str, conn_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self._admission.release(user_id, conn_id)

    def _client_ip(self, client: ClientConnection) -> str:
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
        if len(values) > 1:
            raise AuthFailure("bad_authorization_header")
        if values:
            header = values[0]
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthFailure("bad_authorization_header")
            return await self._sessions.load(token.strip())
        try:
            async with asyncio.timeout(self._settings.auth_timeout_s):
                data = await client.first_message()
        except TimeoutError:
            raise AuthFailure("auth_timeout") from None
        if data is None:
            return None
        command = parse_command(data)
        if not isinstance(command, Auth):
            raise AuthFailure("first_frame_not_auth")
        return await self._sessions.load(command.token)

    def command(self, client: ClientConnection, data: str | bytes) -> None:
        """Handle one message of a logged-in client."""
        state = client.session
        if state is None or client.closed:
            return
        action = state.receive(data, asyncio.get_running_loop().time())
        if isinstance(action, Reply):
            client.send(action.frame)
        elif isinstance(action, SubscribeChannel):
            client.run_step(self._subscribe(client, state, action))
        elif isinstance(action, UnsubscribeChannel):
            log.debug("unsubscribed", conn=client.conn_id, channel=action.channel)
            self._registry.leave(client, [action.channel])
            client.send(action.frame)
        elif isinstance(action, Close):
            log.info(
                "connection_rate_limited",
                conn=client.conn_id,
                user=client.user_id,
                reason="messages",
                remote=_remote(client),
            )
            client.close(action.code, action.reason)

    async def _subscribe(
        self, client: ClientConnection, state: ClientSession, action: SubscribeChannel
    ) -> None:
        """Join the channel, recover from ``since`` if asked, then reply and go live."""
        structlog.contextvars.bind_contextvars(conn=client.conn_id, user=client.user_id)
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
            # The reply says where the client stands: held copies of messages up to there
            # (replayed, or published before the read) must not follow it.
            cutoff = replay.position.offset
            if action.since is not None:
                fields["recovered"] = replay.recovered
                frames = replay.frames
        elif action.since is not None:
            fields["recovered"] = False
        reply = reply_frame("subscribed", ref, **fields)
        if cutoff is not None:
            client.send(b"".join([reply, *frames]))
            # Copies of messages up to the read's offset may still be on their way on the
            # pub/sub connection: go live once they are in (held, and cut off), not before.
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                    await self._registry.barrier(channel)
            client.send(self._registry.activate(client, channel, cutoff))
            return
        client.send(b"".join([reply, self._registry.activate(client, channel, cutoff)]))


def _session_of(client: ClientConnection) -> Session:
    assert client.session is not None  # only logged-in clients are in ConnectionHandler._open
    return client.session.session


def _remote(client: ClientConnection) -> str:
    address = client.remote_address
    return "unknown" if address is None else f"{address[0]}:{address[1]}"
