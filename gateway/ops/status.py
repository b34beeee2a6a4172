"""The ``GET /status`` report and the ``GET /readyz`` verdict of one gateway."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from gateway import __version__
from gateway.config import GatewaySettings
from gateway.core.stats import ConnectionCounts, HubCounts
from gateway.ops.metrics import RedisLink
from gateway.services.admission import OOM_FIX, AdmissionControl

__all__ = ["TOP_CHANNELS", "readiness", "status_report"]

#: how many channels the report lists (the busiest); bounds its size and cost
TOP_CHANNELS = 10


def status_report(
    settings: GatewaySettings,
    hub: HubCounts,
    connections: ConnectionCounts,
    subscriber: RedisLink,
    counters: AdmissionControl,
    *,
    started_at: str,
    uptime_s: float,
) -> dict[str, Any]:
    """A snapshot; linear in the number of channels, built only on request."""
    latency = subscriber.ping_latency_s if subscriber.ready else None
    return {
        "version": __version__,
        "started_at": started_at,
        "uptime_s": round(uptime_s, 3),
        "redis": {
            "connected": subscriber.ready,
            "url": settings.redis.url(),  # password masked
            "ping_ms": None if latency is None else round(latency * 1000, 3),
            "reconnects": subscriber.reconnects,
            "refused_internal_channels": dict(hub.refused_internal),
        },
        "admission": {
            "degraded": counters.degraded is not None,
            "error": counters.degraded,
            "uncounted_admissions": counters.uncounted_admissions,
        },
        "sockets": connections.sockets,
        "connections": connections.connections,
        "channels": hub.redis_channel_count,
        "subscriptions": hub.subscription_count,
        "messages": {
            "received": hub.messages_received,
            "delivered": hub.deliveries,
            "dropped": sum(hub.dropped.values()),
            "dropped_by_reason": dict(sorted(hub.dropped.items())),
        },
        "top_channels": [
            {"channel": channel, "subscribers": count}
            for channel, count in hub.top_channels(TOP_CHANNELS)
        ],
        "limits": _limits(settings),
    }


def _limits(settings: GatewaySettings) -> dict[str, Any]:
    admission = settings.admission
    return {
        **dataclasses.asdict(settings.limits),
        "max_connections": admission.max_connections,
        "max_connections_per_user": admission.max_connections_per_user,
        "max_attempts_per_user": admission.max_attempts_per_user,
        "max_attempts_per_ip": admission.max_attempts_per_ip,
        "max_replay": settings.max_replay,
        "max_replay_bytes": settings.max_replay_bytes,
        "auth_timeout_s": settings.auth_timeout_s,
        "handshake_timeout_s": settings.handshake_timeout_s,
        "heartbeat_s": settings.heartbeat_s,
    }


def readiness(
    link_up: bool, refused_internal: Mapping[str, str], admission_degraded: bool
) -> tuple[bool, str]:
    """Whether the gateway should take traffic (``/readyz``), and the body saying why.

    Degraded admission stays ready: every instance shares the Redis that is full, so
    taking them out of the load balancer would refuse every client, where degraded
    admission still serves them (docs/redis.md).
    """
    if not link_up:
        return False, "Redis subscriber connection is down\n"
    if refused_internal:
        names = ", ".join(sorted(refused_internal))
        return False, (
            f"Redis refuses to subscribe {names} (retried): revocations do not reach this "
            "gateway; allow the channel to the gateway's ACL user (docs/redis.md)\n"
        )
    if admission_degraded:
        return True, (
            "ready, degraded: Redis answers OOM to the admission counters, logins are admitted "
            f"without per-user and per-address limits. {OOM_FIX}\n"
        )
    return True, "ready\n"
