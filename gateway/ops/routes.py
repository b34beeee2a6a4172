"""The operator endpoints: ``/healthz``, ``/readyz``, ``/metrics`` and ``/status``."""

from __future__ import annotations

import dataclasses
import datetime
import time
from http import HTTPStatus

from websockets.http11 import Response

from gateway.config import GatewaySettings
from gateway.core.stats import ConnectionCounts, HubCounts
from gateway.edge.http import Route, bearer_protected, bytes_response, json_response, text_response
from gateway.edge.http11 import HttpRequest
from gateway.ops.metrics import CONTENT_TYPE, GatewayMetrics, RedisLink
from gateway.ops.status import readiness, status_report
from gateway.services.admission import AdmissionControl

__all__ = ["Operated", "ops_routes"]


@dataclasses.dataclass(frozen=True, slots=True)
class Operated:
    """What the endpoints report on."""

    settings: GatewaySettings
    hub: HubCounts
    connections: ConnectionCounts
    subscriber: RedisLink
    admission: AdmissionControl
    metrics: GatewayMetrics
    started_at: datetime.datetime = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC)
    )
    started: float = dataclasses.field(default_factory=time.monotonic)


def ops_routes(gateway: Operated) -> dict[str, Route]:
    """The routes; ``/metrics`` and ``/status`` behind ``GATEWAY_ADMIN_TOKEN`` when set."""

    def healthz(_request: HttpRequest) -> Response:
        return text_response(HTTPStatus.OK, "ok\n")

    def readyz(_request: HttpRequest) -> Response:
        ready, why = readiness(
            gateway.subscriber.ready,
            gateway.hub.refused_internal,
            gateway.admission.degraded is not None,
        )
        return text_response(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, why)

    def metrics(_request: HttpRequest) -> Response:
        return bytes_response(HTTPStatus.OK, gateway.metrics.exposition(), CONTENT_TYPE)

    def status(_request: HttpRequest) -> Response:
        report = status_report(
            gateway.settings,
            gateway.hub,
            gateway.connections,
            gateway.subscriber,
            gateway.admission,
            started_at=gateway.started_at.isoformat(timespec="seconds"),
            uptime_s=time.monotonic() - gateway.started,
        )
        return json_response(HTTPStatus.OK, report)

    admin = gateway.settings.admin_token
    return {
        "/healthz": Route(healthz),
        "/readyz": Route(readyz),
        "/metrics": Route(bearer_protected(admin, metrics)),
        "/status": Route(bearer_protected(admin, status)),
    }
