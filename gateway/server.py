"""The gateway process: wires Redis, the registry and the WebSocket server together."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from http import HTTPStatus

import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from websockets.http11 import Response
from websockets.typing import Origin

from gateway.access import verify_gateway_access
from gateway.admission import AdmissionControl
from gateway.auth import SessionStore
from gateway.browser import browser_routes
from gateway.channels import CONTROL_CHANNEL
from gateway.cluster import ClusterSubscriber
from gateway.config import GatewaySettings
from gateway.connection import ClientConnection, ConnectionHandler
from gateway.diagnose import RedisSetupError, diagnose
from gateway.history import Position
from gateway.http import (
    Route,
    Router,
    bearer_protected,
    bytes_response,
    json_response,
    text_response,
)
from gateway.http11 import HttpRequest
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.protocol import CloseCode
from gateway.recovery import HistoryReader, Recoverer
from gateway.redis_client import AnyRedis, async_cluster, async_redis, raise_if_cancelled
from gateway.registry import Registry
from gateway.status import readiness, status_report
from gateway.subscriber import Backoff, Subscriber
from gateway.websocket import WebSocketOptions, WebSocketServer

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
        self.registry = Registry(
            {CONTROL_CHANNEL: self._on_control},
            max_message_bytes=settings.limits.max_message_bytes,
            max_held_bytes=settings.limits.max_buffer_bytes,
            on_resubscribed=self._on_resubscribed,
            observe_fanout=self.metrics.fanout_seconds.observe,
        )
        self.redis: AnyRedis
        self.subscriber: Subscriber | ClusterSubscriber
        if settings.redis.cluster:
            self.redis = async_cluster(settings.redis)
            self.subscriber = ClusterSubscriber(
                settings.redis,
                self.registry,
                self.redis,
                ping_interval_s=settings.redis_ping_s,
                ping_timeout_s=settings.redis_ping_timeout_s,
            )
        else:
            self.redis = async_redis(settings.redis)
            self.subscriber = Subscriber(
                settings.redis,
                self.registry,
                ping_interval_s=settings.redis_ping_s,
                ping_timeout_s=settings.redis_ping_timeout_s,
            )
        self.history = HistoryReader(
            self.redis, settings.history_prefix, settings.max_replay, settings.max_replay_bytes
        )
        self.recoverer = Recoverer(
            self.history, self.registry.finish_recovery, self.registry.barrier
        )
        self.admission = AdmissionControl(
            self.redis, settings.admission, lease_s=max(10.0, 3 * settings.session_recheck_s)
        )
        self.handler = ConnectionHandler(
            settings,
            self.registry,
            self.subscriber,
            SessionStore(self.redis, settings.session_prefix, settings.limits),
            self.admission,
            self.history,
            respond=Router(self._routes()),
            on_closed=self.metrics.connection_closed,
        )
        self.metrics.track(self.registry, self.handler, self.subscriber, self.admission)
        self._server: WebSocketServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        #: set when Redis refuses the configuration at start (see :meth:`start`)
        self.setup_failed: asyncio.Future[RedisSetupError] = (
            asyncio.get_running_loop().create_future()
        )
        #: set once the start-up ACL check has passed (or is not done: cluster)
        self.access_checked = asyncio.Event()
        self._started_at = datetime.datetime.now(datetime.UTC)
        self._started = time.monotonic()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._server is not None, "start() first"
        return self._server.port

    def _on_control(self, payload: bytes) -> None:
        self.handler.on_control(payload)

    def _on_resubscribed(self, channel: str, since: Position, ticket: object) -> None:
        self.recoverer.start(channel, since, ticket)

    def _routes(self) -> dict[str, Route]:
        def healthz(_request: HttpRequest) -> Response:
            return text_response(HTTPStatus.OK, "ok\n")

        def readyz(_request: HttpRequest) -> Response:
            ready, why = readiness(
                self.subscriber.ready,
                self.registry.refused_internal,
                self.admission.degraded is not None,
            )
            return text_response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, why)

        def metrics(_request: HttpRequest) -> Response:
            return bytes_response(HTTPStatus.OK, self.metrics.exposition(), CONTENT_TYPE)

        def status(_request: HttpRequest) -> Response:
            report = status_report(
                self.settings,
                self.registry,
                self.handler,
                self.subscriber,
                self.admission,
                started_at=self._started_at.isoformat(timespec="seconds"),
                uptime_s=time.monotonic() - self._started,
            )
            return json_response(HTTPStatus.OK, report)

        admin = self.settings.admin_token
        return {
            "/healthz": Route(healthz),
            "/readyz": Route(readyz),
            "/metrics": Route(bearer_protected(admin, metrics)),
            "/status": Route(bearer_protected(admin, status)),
            **browser_routes(),
        }

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
        backoff = Backoff()
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
            asyncio.create_task(self.handler.upkeep(), name="session-upkeep"),
            asyncio.create_task(self.handler.heartbeat(), name="heartbeat"),
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
        if self._server is not None and not await self._server.close(
            CloseCode.SHUTDOWN, "", timeout_s
        ):
            log.warning("shutdown_deadline_passed", timeout_s=timeout_s)
        await self.handler.settle(SETTLE_TIMEOUT_S)
        await self.recoverer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisSetupError):
                await task
        await self.redis.aclose()
        log.info("gateway_stopped")
