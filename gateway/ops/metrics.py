"""Prometheus metrics of one gateway, served at ``GET /metrics``.

Counting stays off the fan-out path: the hub, the connection layer and the subscriber keep
plain integers (read through :mod:`gateway.core.stats`), and :class:`_StateCollector` turns
them into
metric families only when Prometheus scrapes. The two histograms are observed
once per Redis read batch and once per connection, never per delivery, and are
:class:`LoopHistogram`: a bisect and two additions, no lock (prometheus-client's
``Histogram.observe`` costs about 1 us, a visible share of a small fan-out).

Each gateway has its own :class:`~prometheus_client.CollectorRegistry`, so several
gateways in one process (the tests) never share or clash over series.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway import __version__
from gateway.core.stats import ConnectionCounts, HubCounts
from gateway.services.admission import AdmissionControl

__all__ = ["CONTENT_TYPE", "GatewayMetrics", "LoopHistogram", "RedisLink"]

# The classic text format every Prometheus version reads (generate_latest writes it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A batch usually reaches every socket in well under a millisecond; the tail matters.
FANOUT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# From a failed handshake (milliseconds) to a tab left open all day.
DURATION_BUCKETS = (0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


class RedisLink(Protocol):
    """The pub/sub side as metrics and /status read it (one connection, or one per node)."""

    @property
    def ready(self) -> bool: ...

    @property
    def reconnects(self) -> int: ...

    @property
    def ping_latency_s(self) -> float | None: ...


class LoopHistogram:
    """A histogram observed from the event loop thread only (hence no lock)."""

    __slots__ = ("_bounds", "_counts", "_sum", "documentation", "name")

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = sorted(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative, total = [], 0
        labels = [repr(float(bound)) for bound in self._bounds] + ["+Inf"]
        for le, count in zip(labels, self._counts, strict=True):
            total += count
            cumulative.append((le, float(total)))
        return HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self._sum
        )


class GatewayMetrics:
    """Every metric of one gateway, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.fanout_seconds = LoopHistogram(
            "notify_gateway_fanout_seconds",
            "Time from the first message of a Redis read batch to its last frame written.",
            FANOUT_BUCKETS,
        )
        self.connection_seconds = LoopHistogram(
            "notify_gateway_connection_duration_seconds",
            "Lifetime of WebSocket connections, observed when they close.",
            DURATION_BUCKETS,
        )
        #: close codes of finished connections ("none": the handler failed before closing)
        self.close_codes: collections.Counter[str] = collections.Counter()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if GC_COLLECTOR is not None:  # None where the interpreter has no gc.get_stats
            GCCollector(registry=self.registry)

    def connection_closed(self, code: int | None, duration_s: float) -> None:
        """Count one finished WebSocket connection (once per connection)."""
        self.close_codes["none" if code is None else str(code)] += 1
        self.connection_seconds.observe(duration_s)

    def track(
        self,
        hub: HubCounts,
        connections: ConnectionCounts,
        subscriber: RedisLink,
        admission: AdmissionControl,
    ) -> None:
        """Expose the counters these objects keep, read at each scrape."""
        self.registry.register(_StateCollector(self, hub, connections, subscriber, admission))

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _StateCollector:
    """Builds metric families from the plain counters, at scrape time only."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        hub: HubCounts,
        connections: ConnectionCounts,
        subscriber: RedisLink,
        admission: AdmissionControl,
    ) -> None:
        self._metrics = metrics
        self._hub = hub
        self._connections = connections
        self._subscriber = subscriber
        self._admission = admission

    def collect(self) -> Iterator[Metric]:
        yield _info()
        yield from self._connection_families()
        yield from self._redis_families()
        yield from self._message_families()
        yield self._metrics.fanout_seconds.family()
        yield self._metrics.connection_seconds.family()

    def _connection_families(self) -> Iterator[Metric]:
        connections = self._connections
        yield GaugeMetricFamily(
            "notify_gateway_sockets",
            "Open WebSocket connections, authenticated or not (what GATEWAY_MAX_CONNECTIONS caps).",
            value=connections.sockets,
        )
        yield GaugeMetricFamily(
            "notify_gateway_connections",
            "Open, authenticated WebSocket connections.",
            value=connections.connections,
        )
        yield GaugeMetricFamily(
            "notify_gateway_subscriptions",
            "Client subscriptions: one per (connection, channel) pair.",
            value=self._hub.subscription_count,
        )
        yield GaugeMetricFamily(
            "notify_gateway_admission_degraded",
            "1 while Redis answers OOM to the admission counters (logins admitted uncounted).",
            value=1 if self._admission.degraded is not None else 0,
        )
        yield CounterMetricFamily(
            "notify_gateway_uncounted_admissions",
            "Logins admitted without per-user counting because Redis answered OOM.",
            value=self._admission.uncounted_admissions,
        )
        yield CounterMetricFamily(
            "notify_gateway_slow_consumer_disconnects",
            "Clients closed with 4008 because their unsent bytes passed the buffer limit.",
            value=connections.slow_consumers,
        )
        yield _labelled(
            "notify_gateway_auth_failures",
            "Connections refused at authentication (close 4001), by reason.",
            "reason",
            connections.auth_failures,
        )
        yield _labelled(
            "notify_gateway_connections_closed",
            "Finished WebSocket connections by close code.",
            "code",
            self._metrics.close_codes,
        )

    def _redis_families(self) -> Iterator[Metric]:
        subscriber = self._subscriber
        yield GaugeMetricFamily(
            "notify_gateway_channels",
            "Redis channels subscribed on the pub/sub connection (control channel included).",
            value=self._hub.redis_channel_count,
        )
        yield GaugeMetricFamily(
            "notify_gateway_redis_connected",
            "1 while the Redis pub/sub connection is up, else 0.",
            value=1 if subscriber.ready else 0,
        )
        yield GaugeMetricFamily(
            "notify_gateway_control_channel_refused",
            "1 while Redis refuses to subscribe the control channel (retried; /readyz is 503).",
            value=1 if self._hub.refused_internal else 0,
        )
        if subscriber.ready and subscriber.ping_latency_s is not None:
            yield GaugeMetricFamily(
                "notify_gateway_redis_ping_seconds",
                "Round trip of the last heartbeat PING on the pub/sub connection.",
                value=subscriber.ping_latency_s,
            )
        yield CounterMetricFamily(
            "notify_gateway_redis_reconnects",
            "Times the Redis pub/sub connection was lost (each is followed by a reconnect).",
            value=subscriber.reconnects,
        )

    def _message_families(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "notify_gateway_messages_received",
            "Messages received from Redis on client channels.",
            value=self._hub.messages_received,
        )
        yield CounterMetricFamily(
            "notify_gateway_deliveries",
            "Message frames written to clients (one per message per subscriber).",
            value=self._hub.deliveries,
        )
        yield _labelled(
            "notify_gateway_dropped_messages",
            "Messages from Redis dropped instead of delivered, by reason.",
            "reason",
            self._hub.dropped,
        )


def _info() -> GaugeMetricFamily:
    info = GaugeMetricFamily(
        "notify_gateway_build_info", "Always 1; the version label.", labels=("version",)
    )
    info.add_metric((__version__,), 1)
    return info


def _labelled(
    name: str, documentation: str, label: str, counts: Mapping[str, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=(label,))
    for value, count in sorted(counts.items()):
        family.add_metric((value,), count)
    return family
