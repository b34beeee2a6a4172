"""The scenarios: each runs against one server and returns one result dict.

Every result has ``delivered`` and ``expected`` (``zero_loss`` when equal); the
figure of merit is ``value`` in ``unit``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis

from bench.load import summarise
from bench.procs import Child, Server

BROADCAST = "public:bench"


@dataclass(frozen=True)
class Sizes:
    subscribers: int
    burst_messages: int
    sustained_s: float
    rates: tuple[int, ...]
    personal_clients: int
    personal_messages: int
    idle: tuple[int, ...]
    max_connections: int | None


QUICK = Sizes(50, 40, 0.5, (20, 200), 50, 3, (200,), None)
STANDARD = Sizes(1000, 1000, 5.0, (20, 200), 2000, 10, (5000,), None)
FULL = Sizes(1000, 1000, 5.0, (20, 200), 2000, 10, (5000, 50000), 100_000)


def _result(
    name: str, value: float, unit: str, done: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "scenario": name,
        "value": value,
        "unit": unit,
        "delivered": done["delivered"],
        "expected": done["expected"],
        "zero_loss": done["delivered"] == done["expected"] and done["complete"],
        **extra,
    }


def _wait_subscribed(redis: Redis, channels: list[str], timeout_s: float = 30.0) -> None:
    """Publish only once Redis has every channel subscribed (the baseline does not wait)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = redis.pubsub_numsub(*channels)
        if all(n >= 1 for _, n in counts):
            return
        time.sleep(0.02)
    raise TimeoutError("channels not subscribed in Redis")


def _load(server: Server, clients: int, channel: str | None, expected: int, **kw: Any) -> Child:
    spec = {"port": server.port, "clients": clients, "channel": channel, "expected": expected, **kw}
    return Child("bench.load", spec)


def _ready(load: Child, timeout_s: float) -> dict[str, Any]:
    """The load client's set-up report; clients that failed count as undelivered."""
    ready = load.event(timeout_s)
    if ready["failed"]:
        print(f"bench: {ready['failed']} clients failed: {ready['errors']}", file=sys.stderr)
    return ready


def _publish(
    redis_port: int, channels: list[str], messages: int, rate: float | None = None
) -> dict[str, Any]:
    spec = {"port": redis_port, "channels": channels, "messages": messages, "rate": rate}
    publisher = Child("bench.publish", spec)
    try:
        return publisher.event(timeout_s=120)
    finally:
        publisher.finish()


def ceiling(server: Server, sizes: Sizes) -> dict[str, Any]:
    """The load client against the blaster: its own counting ceiling."""
    load = _load(server, sizes.subscribers, BROADCAST, sizes.burst_messages, timeout_s=60)
    try:
        _ready(load, 60)
        done = load.event(90)
    finally:
        load.finish()
    seconds = max(1, done["last_ns"] - done["first_ns"]) / 1e9
    return _result("client ceiling", done["delivered"] / seconds, "deliveries/s", done)


def _throughput(
    server: Server,
    redis: Redis,
    redis_port: int,
    name: str,
    clients: int,
    channels: list[str],
    m: int,
) -> dict[str, Any]:
    """``m`` messages to each channel, as fast as Redis takes them, to ``clients``
    clients: all on the one channel, or client i on ``user:{i}``."""
    channel = channels[0] if len(channels) == 1 else None
    load = _load(server, clients, channel, m, timeout_s=120)
    try:
        _ready(load, 60)
        _wait_subscribed(redis, channels)
        start = server.cpu_split()
        published = _publish(redis_port, channels, m)
        done = load.event(150)
        end = server.cpu_split()
        user, system = end[0] - start[0], end[1] - start[1]
    finally:
        load.finish()
    seconds = max(1, done["last_ns"] - published["started_ns"]) / 1e9
    return _result(
        name,
        done["delivered"] / seconds,
        "deliveries/s",
        done,
        seconds=seconds,
        server_cpu_s=user + system,
        server_sys_s=system,
        client_cpu_s=done["cpu_s"],
    )


def burst(server: Server, redis: Redis, redis_port: int, sizes: Sizes) -> dict[str, Any]:
    n, m = sizes.subscribers, sizes.burst_messages
    name = f"broadcast burst ({n} subs x {m} msgs)"
    return _throughput(server, redis, redis_port, name, n, [BROADCAST], m)


def _merge(dones: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``done`` from several load processes' (each ran with ``raw``)."""
    if len(dones) == 1:
        return dones[0]
    spans: dict[int, list[int]] = {}
    for done in dones:
        for stamp, (low, high) in done["spans"]:
            span = spans.setdefault(stamp, [low, high])
            span[0], span[1] = min(span[0], low), max(span[1], high)
    return {
        "delivered": sum(d["delivered"] for d in dones),
        "expected": sum(d["expected"] for d in dones),
        "complete": all(d["complete"] for d in dones),
        "lost_connections": sum(d["lost_connections"] for d in dones),
        "cpu_s": sum(d["cpu_s"] for d in dones),
        "user_s": sum(d["user_s"] for d in dones),
        "sys_s": sum(d["sys_s"] for d in dones),
        "latency": summarise([ns for d in dones for ns in d["latencies"]], spans),
    }


class _Fanout:
    """The server's own time per fan-out over a scenario (gateway metric, blaster stats)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.before = server.fanout_totals()
        if server.kind == "blaster":
            server.get("/fanout")  # resets its record

    def result(self) -> dict[str, Any]:
        if self.server.kind == "blaster":
            stats: dict[str, Any] = orjson.loads(self.server.get("/fanout"))
            return stats
        after = self.server.fanout_totals()
        if self.before is None or after is None or after[1] == self.before[1]:
            return {}
        batches = after[1] - self.before[1]
        return {"count": batches, "mean_ms": (after[0] - self.before[0]) / batches * 1e3}


def sustained(
    server: Server,
    redis: Redis,
    redis_port: int,
    sizes: Sizes,
    rate: int,
    processes: int = 1,
) -> dict[str, Any]:
    """``rate`` msg/s to every subscriber; the latency of every delivery.

    ``processes`` > 1 splits the clients over that many load processes (all on the
    client core), in case one process's serial reads are what the figures measure.
    """
    n = sizes.subscribers
    m = max(1, round(rate * sizes.sustained_s))
    shares = [n // processes + (k < n % processes) for k in range(processes)]
    loads = [
        _load(server, share, BROADCAST, m, latency=True, raw=processes > 1,
              timeout_s=sizes.sustained_s + 60)
        for share in shares
    ]  # fmt: skip
    try:
        for load in loads:
            _ready(load, 60)
        _wait_subscribed(redis, [BROADCAST])
        fanout = _Fanout(server)
        user, system = server.cpu_split()
        _publish(redis_port, [BROADCAST], m, rate=rate)
        for load in loads:
            load.send("published")  # the load client counts only now (its reads just record)
        done = _merge([load.event(sizes.sustained_s + 90) for load in loads])
        user_after, system_after = server.cpu_split()
        user, system = user_after - user, system_after - system
        server_fanout = fanout.result()
    finally:
        for load in loads:
            load.finish()
    lat = done["latency"] or {"p50_ms": math.nan, "p99_ms": math.nan, "max_ms": math.nan}
    name = "load client latency floor" if server.kind == "blaster" else "sustained"
    return _result(
        f"{name} {rate} msg/s to {n} subs",
        lat["p99_ms"],
        "ms p99",
        done,
        p50_ms=lat["p50_ms"],
        p99_ms=lat["p99_ms"],
        max_ms=lat["max_ms"],
        latency=lat,
        rate=rate,
        load_processes=processes,
        # Not server_cpu_s: the table's per-CPU column is for throughput. User and
        # system apart: Python's share of a fan-out against the kernel's.
        server_busy_s=user + system,
        server_user_s=user,
        server_sys_s=system,
        client_busy_s=done["cpu_s"],
        client_user_s=done["user_s"],
        client_sys_s=done["sys_s"],
        server_fanout=server_fanout,
    )


def personal(server: Server, redis: Redis, redis_port: int, sizes: Sizes) -> dict[str, Any]:
    n, m = sizes.personal_clients, sizes.personal_messages
    name = f"personal channels ({n} clients x {m} msgs)"
    channels = [f"user:{i}" for i in range(n)]
    return _throughput(server, redis, redis_port, name, n, channels, m)


def connections(server: Server, redis: Redis, redis_port: int, n: int) -> list[dict[str, Any]]:
    """Idle memory per connection and set-up rate at ``n`` connections, then one broadcast."""
    warm = _load(server, 10, BROADCAST, 0)
    _ready(warm, 60)
    warm.finish()
    time.sleep(0.5)
    before = server.rss_kib()
    # At most ~10k connections per source address: the ephemeral range is ~28k ports,
    # and earlier scenarios' sockets may still hold some.
    sources = [f"127.0.0.{k}" for k in range(1, 2 + n // 10000)]
    load = _load(server, n, BROADCAST, 1, sources=sources, timeout_s=600)
    try:
        cpu = server.cpu_s()
        ready = _ready(load, 900)
        cpu = server.cpu_s() - cpu
        time.sleep(1.0)
        after = server.rss_kib()
        _wait_subscribed(redis, [BROADCAST])
        _publish(redis_port, [BROADCAST], 1)
        done = load.event(600)
    finally:
        load.finish()
    per_conn = (after - before) / max(1, ready["connected"])
    return [
        _result(
            f"idle memory at {n} connections",
            per_conn,
            "KiB/conn",
            done,
            rss_before_kib=before,
            rss_after_kib=after,
            connections=ready["connected"],
            failed=ready["failed"],
            errors=ready["errors"],
        ),
        _result(
            f"connection set-up ({n} connections)",
            ready["connected"] / ready["connect_s"],
            "conn/s",
            done,
            connect_s=ready["connect_s"],
            connections=ready["connected"],
            server_cpu_s=cpu,
            client_cpu_s=ready["cpu_s"],
        ),
    ]
