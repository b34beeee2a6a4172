"""One WebSocket client: its connection, its inbox of frames, its steps.

:class:`ClientConnection` is the connection itself (a :class:`gateway.edge.websocket.WebSocket`):
an idle client owns no task. Steps that wait for Redis (logging in, subscribing) run as a
task while the frames received meanwhile wait their turn in a small inbox, so replies keep
the order of the frames and none is lost, whatever a step awaits. What a connection does
with a frame is its :class:`Host`'s business (``gateway.conn.handler``).
"""

from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import Coroutine
from typing import Protocol

import structlog

from gateway.core.client import ClientState
from gateway.core.frames import error_frame
from gateway.core.stats import ConnectionStats
from gateway.edge.http import Answer
from gateway.edge.http11 import HttpRequest
from gateway.edge.options import Owner
from gateway.edge.websocket import WebSocket
from notify_wire.codes import CloseReason, ErrorCode

__all__ = ["INBOX_PAUSE", "ClientConnection", "Host"]

log = structlog.get_logger("gateway.conn")

#: Frames waiting behind a step before the connection stops reading (TCP pushes back).
INBOX_PAUSE = 16


class Host(Protocol):
    """What serves the connections of a process (``gateway.conn.handler.ConnectionHandler``)."""

    @property
    def stats(self) -> ConnectionStats: ...

    def respond(self, request: HttpRequest) -> Answer: ...

    def opened(self, client: ClientConnection) -> Coroutine[None, None, None]:
        """The login step of a new connection."""
        ...

    def handle(self, client: ClientConnection, data: str | bytes) -> None:
        """One frame of a logged-in client."""
        ...

    def finished(self, client: ClientConnection) -> None: ...

    def background(self, work: Coroutine[None, None, None]) -> asyncio.Task[None]: ...


class ClientConnection(WebSocket):
    """One client; the hub sees it as a non-blocking, bounded writer (``send``)."""

    __slots__ = ("_first", "_gone", "_host", "_inbox", "conn_id", "started", "state")

    def __init__(self, server: Owner, host: Host) -> None:
        super().__init__(server)
        self._host = host
        self.conn_id = secrets.token_hex(6)
        #: set once logged in
        self.state: ClientState | None = None
        #: loop time of the upgrade; None for requests that never upgraded
        self.started: float | None = None
        self._gone = False  # the TCP connection is lost (finished() ran)
        # While a step runs: the frames that arrived meanwhile.
        self._inbox: collections.deque[str | bytes] | None = None
        # While logging in without a header: the first message, awaited.
        self._first: asyncio.Future[str | bytes | None] | None = None

    @property
    def user_id(self) -> str | None:
        return None if self.state is None else self.state.session.user_id

    @property
    def remote(self) -> str:
        """``host:port`` of the peer, for logs."""
        address = self.remote_address
        return "unknown" if address is None else f"{address[0]}:{address[1]}"

    def close_for(self, reason: CloseReason, **fields: object) -> None:
        """Close with the code and the reason text of ``reason`` (:mod:`notify_wire.codes`)."""
        self.close(reason.code, reason.text_with(**fields))

    # -- WebSocket -------------------------------------------------------------------

    def respond(self, request: HttpRequest) -> Answer:
        return self._host.respond(request)

    def opened(self) -> None:
        self.started = asyncio.get_running_loop().time()
        self._host.stats.sockets += 1
        self.run_step(self._host.opened(self))

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
        self._host.handle(self, data)

    def finished(self) -> None:
        if self.started is None:
            return  # plain HTTP, or a refused upgrade
        self._gone = True
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        if self._inbox is None:  # else when the running step is over
            self._host.finished(self)

    def flooded(self) -> None:
        log.info(
            "connection_rate_limited",
            conn=self.conn_id,
            user=self.user_id,
            reason="frames",
            remote=self.remote,
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
        self._host.stats.slow_consumers += 1
        super().overflow(buffered)

    # -- the hub's Sink ---------------------------------------------------------------

    def subscription_refused(self, channel: str, message: str) -> None:
        self.send(error_frame(ErrorCode.UNAVAILABLE, f"Redis refused {channel!r}: {message}"))

    # -- steps ------------------------------------------------------------------------

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
        """Run ``step``; frames received meanwhile are handled after it, in order."""
        self._inbox = collections.deque()
        self._host.background(step).add_done_callback(self._step_done)

    def _step_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("connection_step_failed", conn=self.conn_id, error=repr(exc))
            self.close_for(CloseReason.INTERNAL_ERROR)
        inbox, self._inbox = self._inbox, None
        assert inbox is not None  # set by run_step
        if self._gone:
            self._host.finished(self)  # deferred until the step was over
            return
        while inbox and self._inbox is None:
            self._host.handle(self, inbox.popleft())
        if self._inbox is not None:  # another step started: the rest waits for it
            self._inbox.extend(inbox)
        if self._inbox is None or len(self._inbox) < INBOX_PAUSE:
            self.resume_reading()
