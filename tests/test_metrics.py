"""/metrics and /status over real HTTP, moving as clients, Redis and failures come and go."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

import orjson
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from gateway.ops.metrics import LoopHistogram
from gateway.server import Gateway
from tests.conftest import MakeGateway, MakeSession, ws_url
from tests.support.process import ROOT
from tests.support.redis_server import RedisServer
from tests.support.ws import close_code, connect_authed, http_fetch, recv_json, request, wait_until

ADMIN_TOKEN = "admin-9c1f0e7b2a4d8e6f5a3b"


class Samples:
    """One scrape, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self._values = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in self.families.values()
            for s in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        """A sample's value; 0 when the series does not exist (yet)."""
        return self._values.get((name, frozenset(labels.items())), 0.0)


async def scrape(gateway: Gateway, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    status, response_headers, body = await http_fetch(
        f"http://127.0.0.1:{gateway.port}/metrics", headers
    )
    assert status == 200, body
    assert response_headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Samples(body)


async def until_scraped(gateway: Gateway, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``check`` holds (for effects the server applies after the client sees them)."""
    latest: list[Samples] = []

    async def holds() -> bool:
        latest[:] = [await scrape(gateway)]
        return check(latest[0])

    await wait_until(holds)
    return latest[0]


async def test_every_documented_metric_is_exposed_with_its_type(gateway: Gateway) -> None:
    families = (await scrape(gateway)).families
    expected = {
        "notify_gateway_connections": "gauge",
        "notify_gateway_sockets": "gauge",
        "notify_gateway_channels": "gauge",
        "notify_gateway_subscriptions": "gauge",
        "notify_gateway_redis_connected": "gauge",
        "notify_gateway_build_info": "gauge",
        "notify_gateway_messages_received": "counter",
        "notify_gateway_deliveries": "counter",
        "notify_gateway_dropped_messages": "counter",
        "notify_gateway_slow_consumer_disconnects": "counter",
        "notify_gateway_auth_failures": "counter",
        "notify_gateway_connections_closed": "counter",
        "notify_gateway_redis_reconnects": "counter",
        "notify_gateway_fanout_seconds": "histogram",
        "notify_gateway_connection_duration_seconds": "histogram",
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_open_fds": "gauge",
    }
    assert {name: families[name].type for name in expected if name in families} == expected
    exposed = _metric_names(" ".join(families))
    documented = _metric_names((ROOT / "docs" / "metrics.md").read_text())
    assert exposed <= documented, f"undocumented metrics: {exposed - documented}"
    # Shown only once a heartbeat PING has come back: absent on a fresh gateway.
    ping = {"notify_gateway_redis_ping_seconds"}
    assert documented <= exposed | ping, f"documented, not exposed: {documented - exposed}"
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    alerted = _metric_names(" ".join(expressions))
    assert alerted
    assert alerted <= exposed | ping, f"unknown in deploy/alerts.yml: {alerted - exposed}"


def _metric_names(text: str) -> set[str]:
    """Metric family names mentioned in ``text`` (series suffixes such as _total removed)."""
    series = re.findall(r"\bnotify_gateway_[a-z_]+", text)
    return {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in series}


async def test_metrics_move_with_connections_subscriptions_and_deliveries(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_MESSAGE_BYTES="1000")
    before = await scrape(gateway)
    assert before("notify_gateway_connections") == 0
    assert before("notify_gateway_sockets") == 0
    assert before("notify_gateway_subscriptions") == 0
    assert before("notify_gateway_channels") == 1  # the control channel
    assert before("notify_gateway_redis_connected") == 1

    url = ws_url(gateway)
    a, _ = await connect_authed(url, await make_session("1"))
    b, _ = await connect_authed(url, await make_session("2"))
    for ws in (a, b):
        await request(ws, {"type": "subscribe", "channel": "public:metrics"})
    await request(a, {"type": "subscribe", "channel": "notifications"})
    during = await scrape(gateway)
    assert during("notify_gateway_connections") == 2
    assert during("notify_gateway_sockets") == 2
    assert during("notify_gateway_subscriptions") == 3
    assert during("notify_gateway_channels") == 3

    for n in range(3):
        await redis.publish("public:metrics", str(n))
    await redis.publish("public:metrics", "x" * 1001)  # over GATEWAY_MAX_MESSAGE_BYTES
    await redis.publish("notifications", "last")
    for ws, count in ((a, 4), (b, 3)):
        for _ in range(count):
            await recv_json(ws)
    after = await scrape(gateway)
    assert after("notify_gateway_messages_received_total") == 5
    assert after("notify_gateway_deliveries_total") == 3 * 2 + 1
    assert after("notify_gateway_dropped_messages_total", reason="oversized") == 1
    batches = after("notify_gateway_fanout_seconds_count")
    assert 1 <= batches <= 5  # once per Redis read batch, never once per delivery
    assert after("notify_gateway_fanout_seconds_bucket", le="+Inf") == batches
    assert 0 < after("notify_gateway_fanout_seconds_sum") < 5

    await a.close()
    closed = await until_scraped(gateway, lambda s: s("notify_gateway_connections") == 1)
    assert closed("notify_gateway_subscriptions") == 1
    assert closed("notify_gateway_channels") == 2  # notifications released in Redis
    assert closed("notify_gateway_connections_closed_total", code="1000") == 1
    assert closed("notify_gateway_connection_duration_seconds_count") == 1
    await b.close()


@pytest.mark.parametrize(
    ("header", "first", "reason"),
    [
        ("Bearer never-issued-token", None, "unknown_or_expired"),
        ("Basic dXNlcjpwdw==", None, "bad_authorization_header"),
        (None, '{"type":"ping"}', "first_frame_not_auth"),
    ],
)
async def test_auth_failures_are_counted_by_reason_and_close_code(
    gateway: Gateway, header: str | None, first: str | None, reason: str
) -> None:
    ws = await connect(
        ws_url(gateway), additional_headers={"Authorization": header} if header else None
    )
    if first is not None:
        await ws.send(first)
    assert await close_code(ws) == 4001
    samples = await until_scraped(
        gateway, lambda s: s("notify_gateway_connections_closed_total", code="4001") == 1
    )
    assert samples("notify_gateway_auth_failures_total", reason=reason) == 1
    assert (
        sum(
            s.value
            for s in samples.families["notify_gateway_auth_failures"].samples
            if s.name.endswith("_total")
        )
        == 1
    )
    assert samples("notify_gateway_connections") == 0


async def test_slow_consumer_disconnect_is_counted(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_BUFFER_BYTES="65536")
    with capture_logs() as logs:
        slow, welcome = await connect_authed(ws_url(gateway), await make_session("1"), max_queue=1)
        await request(slow, {"type": "subscribe", "channel": "public:slow"})
        payload = orjson.dumps({"pad": "x" * 32_000})
        for _ in range(300):  # ~10 MB: more than loopback socket buffers hold
            await redis.publish("public:slow", payload)
            if gateway.stats.slow_consumers:
                break
        assert await close_code(slow, timeout_s=20) == 4008
    # Logged from the fan-out, outside the connection's task: still names the client.
    (event,) = [e for e in logs if e["event"] == "slow_consumer"]
    assert (event["conn"], event["user"]) == (welcome["conn"], "1")
    samples = await until_scraped(
        gateway, lambda s: s("notify_gateway_connections_closed_total", code="4008") == 1
    )
    assert samples("notify_gateway_slow_consumer_disconnects_total") == 1


async def test_redis_reconnects_and_connection_state_are_exposed(
    gateway_factory: MakeGateway, redis_factory: Callable[[Sequence[str]], RedisServer]
) -> None:
    server = redis_factory(())
    gateway = await gateway_factory(server.url)
    assert (await scrape(gateway))("notify_gateway_redis_reconnects_total") == 0
    server.kill()
    down = await until_scraped(gateway, lambda s: s("notify_gateway_redis_connected") == 0)
    assert down("notify_gateway_redis_reconnects_total") == 1
    server.restart()
    up = await until_scraped(gateway, lambda s: s("notify_gateway_redis_connected") == 1)
    assert up("notify_gateway_redis_reconnects_total") == 1
    assert up("notify_gateway_channels") == 1


async def _admin_get(
    gateway: Gateway, path: str, token: str | None
) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    return await http_fetch(f"http://127.0.0.1:{gateway.port}{path}", headers)


@pytest.mark.parametrize("path", ["/metrics", "/status"])
async def test_admin_endpoints_need_the_admin_token_when_one_is_set(
    gateway_factory: MakeGateway, path: str
) -> None:
    gateway = await gateway_factory(GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN)
    status, headers, body = await _admin_get(gateway, path, None)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer realm="notify-gateway"'
    assert "GATEWAY_ADMIN_TOKEN" in body
    status, headers, _ = await _admin_get(gateway, path, ADMIN_TOKEN[:-1] + "x")
    assert status == 401
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    status, headers, body = await _admin_get(gateway, path, ADMIN_TOKEN)
    assert status == 200
    assert ADMIN_TOKEN not in body
    # The health probes stay open: orchestrators do not hold the admin token.
    assert (await _admin_get(gateway, "/healthz", None))[0] == 200


async def test_admin_endpoints_are_open_without_an_admin_token(gateway: Gateway) -> None:
    for path in ("/metrics", "/status"):
        assert (await _admin_get(gateway, path, None))[0] == 200


async def test_status_reports_redis_clients_top_channels_and_limits(
    gateway_factory: MakeGateway,
    redis_factory: Callable[[Sequence[str]], RedisServer],
    make_session: MakeSession,
) -> None:
    password = "status-test-password"
    server = redis_factory(("--requirepass", password))
    session_store = Redis.from_url(server.url, password=password)
    url = f"redis://:{password}@127.0.0.1:{server.port}/0"
    gateway = await gateway_factory(
        url,
        GATEWAY_ADMIN_TOKEN=ADMIN_TOKEN,
        GATEWAY_MAX_SUBSCRIPTIONS="7",
        GATEWAY_REDIS_PING_SECONDS="0.05",
    )
    clients = []
    # public:c{n} gets n subscribers: the top list is ordered by subscribers.
    for user in range(3):
        token = f"status-session-{user}-abcdef"
        await session_store.set(f"session:{token}", orjson.dumps({"userId": str(user)}), ex=60)
        ws, _ = await connect_authed(ws_url(gateway), token)
        clients.append(ws)
        for n in range(user + 1, 4):
            await request(ws, {"type": "subscribe", "channel": f"public:c{n}"})

    async def pinged() -> bool:
        return gateway.subscriber.ping_latency_s is not None

    await wait_until(pinged)
    status, headers, body = await _admin_get(gateway, "/status", ADMIN_TOKEN)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    report = orjson.loads(body)
    assert password not in body
    assert report["version"] == "0.1.0"
    assert report["uptime_s"] >= 0
    assert report["redis"]["connected"] is True
    assert report["redis"]["url"] == f"redis://:***@127.0.0.1:{server.port}/0"
    assert 0 < report["redis"]["ping_ms"] < 5000
    assert report["connections"] == 3
    assert report["channels"] == 4  # three public channels and the control channel
    assert report["subscriptions"] == 1 + 2 + 3
    assert report["top_channels"] == [
        {"channel": "public:c3", "subscribers": 3},
        {"channel": "public:c2", "subscribers": 2},
        {"channel": "public:c1", "subscribers": 1},
    ]
    assert report["limits"]["max_subscriptions"] == 7
    assert report["limits"]["max_buffer_bytes"] == gateway.settings.limits.max_buffer_bytes
    for ws in clients:
        await ws.close()
    await session_store.aclose()


async def test_status_lists_at_most_ten_channels(
    gateway: Gateway, make_session: MakeSession
) -> None:
    ws, _ = await connect_authed(ws_url(gateway), await make_session("1"))
    async with ws:
        for n in range(12):
            await request(ws, {"type": "subscribe", "channel": f"public:many{n}"})
        report = orjson.loads((await _admin_get(gateway, "/status", None))[2])
        assert report["subscriptions"] == 12
        assert len(report["top_channels"]) == 10


def test_loop_histogram_buckets_are_cumulative_with_le_inclusive() -> None:
    histogram = LoopHistogram("t_seconds", "test", (0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 99.0):
        histogram.observe(value)
    registry = CollectorRegistry()
    registry.register(_Fixed(histogram))
    samples = Samples(generate_latest(registry).decode())
    buckets = {le: samples("t_seconds_bucket", le=le) for le in ("0.1", "1.0", "10.0", "+Inf")}
    assert buckets == {"0.1": 2, "1.0": 4, "10.0": 4, "+Inf": 5}
    assert samples("t_seconds_count") == 5
    assert samples("t_seconds_sum") == pytest.approx(100.65)


class _Fixed:
    def __init__(self, histogram: LoopHistogram) -> None:
        self._histogram = histogram

    def collect(self) -> Iterator[Metric]:
        yield self._histogram.family()


def _shape(value: object) -> object:
    """The keys of a JSON value, nested; lists by their first item."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return None


async def test_the_status_example_in_operations_md_has_every_field(
    gateway: Gateway, make_session: MakeSession
) -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    example = text.split("`GET /status` answers", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    ws, _ = await connect_authed(ws_url(gateway), await make_session("1"))
    async with ws:
        await request(ws, {"type": "subscribe", "channel": "notifications"})
        report = orjson.loads((await _admin_get(gateway, "/status", None))[2])
    assert _shape(orjson.loads(example)) == _shape(report)
