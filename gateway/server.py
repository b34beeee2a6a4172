"""The gateway process: wires Redis, the hub, the connection layer and the server together."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from websockets.typing import Origin

from gateway.broker.cancel import raise_if_cancelled
from gateway.broker.cluster import ClusterSubscriber
from gateway.broker.diagnose import RedisSetupError, diagnose
from gateway.broker.subscriber import Subscriber
from gateway.config import GatewaySettings
from gateway.conn.connection import ClientConnection
from gateway.conn.handler import ConnectionHandler
from gateway.core.hub import Hub
from gateway.core.stats import ConnectionStats
from gateway.edge.assets import browser_routes
from gateway.edge.http import Route, Router
from gateway.edge.options import WebSocketOptions
from gateway.edge.server import WebSocketServer
from gateway.ops.metrics import GatewayMetrics
from gateway.ops.routes import Operated, ops_routes
from gateway.services.access import verify_gateway_access
from gateway.services.admission import AdmissionControl
from gateway.services.auth import SessionStore
from gateway.services.history import HistoryReader, Recoverer
from notify_publisher.connect import AnyRedis, async_cluster, async_redis
from notify_wire.backoff import REDIS_RECONNECT, Backoff
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.codes import CloseReason
from notify_wire.history import Position

__all__ = ["Gateway", "websocket_options"]

log = structlog.get_logger("gateway.server")

#: seconds a close handshake may take before the TCP connection is dropped
CLOSE_TIMEOUT_S = 5.0
#: seconds stop() gives logins, subscribes and slot releases under way before Redis closes
SETTLE_TIMEOUT_S = 2.0


def websocket_options(settings: GatewaySettings) -> WebSocketOptions:
    """The connection layer's limits as the settings give them (the Autobahn echo endpoint
    runs with these too)."""
    origins: list[Origin | None] | None = None
    if settings.admission.allowed_origins:
        # Browsers always send Origin; services without one are not a CSWSH vector.
        origins = [*(Origin(o) for o in settings.admission.allowed_origins), None]
    return WebSocketOptions(
        max_size=settings.limits.max_frame_bytes,
        max_buffer=settings.limits.max_buffer_bytes,
        origins=origins,
        compression=settings.compression,
        handshake_timeout_s=settings.handshake_timeout_s,
        close_timeout_s=CLOSE_TIMEOUT_S,
        frame_rate=settings.limits.frame_rate_per_second,
        frame_burst=settings.limits.frame_burst,
        max_body=settings.limits.max_body_bytes,
    )


class Gateway:
    """One gateway: ``await start()``, serve, ``await stop()``.

    ``reuse_port`` lets several worker processes listen on the same port (SO_REUSEPORT).
    """

    def __init__(self, settings: GatewaySettings, *, reuse_port: bool = False) -> None:
        self.settings = settings
        self._reuse_port = reuse_port
        self.metrics = GatewayMetrics()
        self.hub = Hub(
            {CONTROL_CHANNEL: self._on_control},
            max_message_bytes=settings.limits.max_message_bytes,
            max_held_bytes=settings.limits.max_buffer_bytes,
            on_resubscribed=self._on_resubscribed,
            observe_fanout=self.metrics.fanout_seconds.observe,
        )
        self.redis, self.subscriber = _redis_side(settings, self.hub)
        self.history = HistoryReader(
            self.redis, settings.history_prefix, settings.max_replay, settings.max_replay_bytes
        )
        self.recoverer = Recoverer(self.history, self.hub.finish_recovery, self.hub.barrier)
        self.admission = AdmissionControl(
            self.redis, settings.admission, lease_s=max(10.0, 3 * settings.session_recheck_s)
        )
        self.stats = ConnectionStats()
        self.handler = ConnectionHandler(
            settings,
            self.hub,
            self.subscriber,
            SessionStore(self.redis, settings.session_prefix, settings.limits),
            self.admission,
            self.history,
            stats=self.stats,
            respond=Router(self._routes()),
            on_closed=self.metrics.connection_closed,
        )
        self.metrics.track(self.hub, self.stats, self.subscriber, self.admission)
        self._server: WebSocketServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        #: set when Redis refuses the configuration at start (see :meth:`start`)
        self.setup_failed: asyncio.Future[RedisSetupError] = (
            asyncio.get_running_loop().create_future()
        )
        #: set once the start-up ACL check has passed (or is not done: cluster)
        self.access_checked = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "start() first"
        return self._server.port

    def _on_control(self, payload: bytes) -> None:
        self.handler.liveness.on_control(payload)

    def _on_resubscribed(self, channel: str, since: Position, ticket: object) -> None:
        self.recoverer.start(channel, since, ticket)

    def _routes(self) -> dict[str, Route]:
        operated = Operated(
            self.settings, self.hub, self.stats, self.subscriber, self.admission, self.metrics
        )
        return {**ops_routes(operated), **browser_routes()}

    def _watch_setup(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.setup_failed.done():
            return
        exc = task.exception()
        if isinstance(exc, RedisSetupError):
            found = exc.diagnosis
            log.error("redis_setup_failed", cause=found.cause, error=found.message)
            self.setup_failed.set_result(exc)

    async def _check_access(self) -> None:
        """Once Redis answers, check that its ACL allows everything the gateway does."""
        if isinstance(self.redis, RedisCluster):
            # The probes use classic SUBSCRIBE; on a cluster each node reports refusals itself.
            self.access_checked.set()
            return
        backoff = Backoff(REDIS_RECONNECT)
        while True:
            await self.subscriber.wait_ready()
            try:
                await verify_gateway_access(self.redis, self.settings)
                self.access_checked.set()
                return
            except RedisError as exc:  # LOADING, or Redis went away again: check later
                raise_if_cancelled()
                delay = backoff.next_delay()
                log.warning(
                    "redis_access_unchecked",
                    error=diagnose(exc, self.settings.redis).message,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)

    async def start(self) -> None:
        """Listen, and connect to Redis in the background.

        Clients are refused with 1013 until Redis is connected. A configuration
        error Redis reveals at start (wrong password, ACL refusing a command the
        gateway needs, untrusted certificate) resolves :attr:`setup_failed`.
        """
        settings = self.settings
        if settings.redis.tls and not settings.redis.tls_verify:
            log.warning(
                "redis_tls_unverified",
                redis=settings.redis.address,
                risk="REDIS_TLS_REJECT_UNAUTHORIZED=false: the Redis certificate is not checked, "
                "anyone on the network path can impersonate Redis",
            )
        self._tasks = [
            asyncio.create_task(self.subscriber.run(), name="redis-subscriber"),
            asyncio.create_task(self._check_access(), name="redis-access-check"),
            asyncio.create_task(self.handler.liveness.upkeep(), name="session-upkeep"),
            asyncio.create_task(self.handler.liveness.heartbeat(), name="heartbeat"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._watch_setup)
        options = websocket_options(settings)
        handler = self.handler
        self._server = WebSocketServer(lambda server: ClientConnection(server, handler), options)
        await self._server.listen(settings.host, settings.port, reuse_port=self._reuse_port)
        log.info("gateway_started", host=settings.host, port=self.port, redis=settings.redis.url())

    async def stop(self) -> None:
        """Stop accepting, close every client with 1001, release Redis. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        timeout_s = self.settings.shutdown_timeout_s
        shutdown = CloseReason.SHUTDOWN
        if self._server is not None and not await self._server.close(
            shutdown.code, shutdown.text, timeout_s
        ):
            log.warning("shutdown_deadline_passed", timeout_s=timeout_s)
        await self.handler.tasks.settle(SETTLE_TIMEOUT_S)
        await self.recoverer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisSetupError):
                await task
        await self.redis.aclose()
        log.info("gateway_stopped")


def _redis_side(
    settings: GatewaySettings, hub: Hub
) -> tuple[AnyRedis, Subscriber | ClusterSubscriber]:
    """The command client and the pub/sub subscriber: one node, or a cluster's."""
    if settings.redis.cluster:
        cluster = async_cluster(settings.redis)
        return cluster, ClusterSubscriber(
            settings.redis,
            hub,
            cluster,
            ping_interval_s=settings.redis_ping_s,
            ping_timeout_s=settings.redis_ping_timeout_s,
        )
    return async_redis(settings.redis), Subscriber(
        settings.redis,
        hub,
        ping_interval_s=settings.redis_ping_s,
        ping_timeout_s=settings.redis_ping_timeout_s,
    )
