"""Every WebSocket connection of a process: the login, liveness and subscribe units, the
index of logged-in connections, and what each client frame leads to."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import assert_never

import structlog
from redis.exceptions import RedisError

from gateway.broker.subscriber import Readiness
from gateway.config import GatewaySettings
from gateway.conn.connection import ClientConnection
from gateway.conn.index import ConnectionIndex
from gateway.conn.liveness import Liveness
from gateway.conn.login import Login
from gateway.conn.subscribe import Subscribing
from gateway.conn.tasks import Tasks
from gateway.core.client import Close, Reply, SubscribeChannel, UnsubscribeChannel
from gateway.core.hub import Hub
from gateway.core.stats import ConnectionStats
from gateway.edge.http import Answer
from gateway.edge.http11 import HttpRequest
from gateway.services.admission import AdmissionControl
from gateway.services.auth import SessionStore
from gateway.services.history import HistoryReader

__all__ = ["CloseObserver", "ConnectionHandler", "Responder"]

log = structlog.get_logger("gateway.conn")

#: what answers a connection's HTTP requests (``/healthz``, ``/metrics``...; None: upgrade)
Responder = Callable[[HttpRequest], Answer]
#: told each finished connection's close code and lifetime (seconds)
CloseObserver = Callable[[int | None, float], None]


class ConnectionHandler:
    """Serves every WebSocket connection of the process (the connections' ``Host``)."""

    def __init__(
        self,
        settings: GatewaySettings,
        hub: Hub,
        readiness: Readiness,
        sessions: SessionStore,
        admission: AdmissionControl,
        history: HistoryReader,
        *,
        stats: ConnectionStats,
        respond: Responder,
        on_closed: CloseObserver,
    ) -> None:
        self._hub = hub
        self._admission = admission
        self._respond = respond
        self._on_closed = on_closed
        self.stats = stats
        self.index = ConnectionIndex()
        self.tasks = Tasks()
        self.login = Login(settings, hub, readiness, sessions, admission, self.index, self.stats)
        self.liveness = Liveness(settings, self.index, sessions, admission)
        self._subscribing = Subscribing(hub, history)

    # -- Host: what each connection calls ----------------------------------------------

    def respond(self, request: HttpRequest) -> Answer:
        return self._respond(request)

    def opened(self, client: ClientConnection) -> Coroutine[None, None, None]:
        return self.login.login(client)

    def background(self, work: Coroutine[None, None, None]) -> asyncio.Task[None]:
        return self.tasks.start(work)

    def handle(self, client: ClientConnection, data: str | bytes) -> None:
        """Handle one frame of a logged-in client."""
        state = client.state
        if state is None or client.closed:
            return
        action = state.receive(data, asyncio.get_running_loop().time())
        match action:
            case Reply(frame=frame):
                client.send(frame)
            case SubscribeChannel():
                client.run_step(self._subscribing.subscribe(client, action))
            case UnsubscribeChannel(channel=channel, frame=frame):
                log.debug("unsubscribed", conn=client.conn_id, channel=channel)
                self._hub.leave(client, [channel])
                client.send(frame)
            case Close(reason=reason):
                log.info(
                    "connection_rate_limited",
                    conn=client.conn_id,
                    user=client.user_id,
                    reason="messages",
                    remote=client.remote,
                )
                client.close_for(reason)
            case _:
                assert_never(action)

    def finished(self, client: ClientConnection) -> None:
        """The connection is gone (and no step of it runs): forget it everywhere."""
        assert client.started is not None
        duration_s = asyncio.get_running_loop().time() - client.started
        self.stats.sockets -= 1
        self._on_closed(client.close_code, duration_s)
        state = client.state
        if state is None:
            return
        session = state.session
        self.stats.connections -= 1
        self.index.remove(client, session)
        self._hub.leave_all(client)
        self.tasks.start(self._release(session.user_id, client.conn_id))
        log.info(
            "connection_closed",
            conn=client.conn_id,
            user=session.user_id,
            code=client.close_code,
            duration_s=round(duration_s, 3),
        )

    async def _release(self, user_id: str, conn_id: str) -> None:
        with contextlib.suppress(RedisError):
            await self._admission.release(user_id, conn_id)
