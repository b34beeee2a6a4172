"""A full Redis (maxmemory + noeviction) degrades admission instead of refusing every login.

Issue 13, item 5: the admission scripts write (INCR, ZADD), so a Redis answering OOM turned
every login into 1013 while /readyz said 200. Sessions are still read under OOM, so the
gateway admits logins without the counters it cannot write, still refuses what it can
count, and says so in /readyz, /status, /metrics and the log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import orjson
import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs
from websockets.asyncio.client import connect

from gateway.config import Admission
from gateway.server import Gateway
from gateway.services.admission import AdmissionControl
from notify_wire.codes import CloseReason
from tests.conftest import MakeGateway, ws_url
from tests.support.acl import documented_acl_users
from tests.support.redis_server import RedisServer
from tests.support.tokens import new_token
from tests.support.ws import close_code, connect_authed, http_fetch, http_get, recv_json, request

RedisFactory = Callable[[Sequence[str]], RedisServer]


@pytest.fixture
async def private(redis_factory: RedisFactory) -> AsyncIterator[Redis]:
    acl = documented_acl_users()["notify-gateway"]  # the fallback needs no other permission
    server = redis_factory(["--maxmemory-policy", "noeviction", *acl])
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def session(redis: Redis, user: str) -> str:
    token = new_token()
    await redis.set(f"session:{token}", orjson.dumps({"userId": user}), ex=60)
    return token


async def full(redis: Redis, yes: bool) -> None:
    """maxmemory 1 byte: every write that needs memory is refused with OOM; 0: no limit."""
    await redis.config_set("maxmemory", 1 if yes else 0)


async def status(gateway: Gateway) -> dict[str, object]:
    code, _, body = await http_fetch(f"http://127.0.0.1:{gateway.port}/status")
    assert code == 200
    report = orjson.loads(body)
    assert isinstance(report, dict)
    return report


async def test_logins_are_admitted_uncounted_while_redis_is_out_of_memory(
    private: Redis, gateway_factory: MakeGateway
) -> None:
    port = private.connection_pool.connection_kwargs["port"]
    gateway = await gateway_factory(
        f"redis://notify-gateway:change-me-gateway@127.0.0.1:{port}/0",
        GATEWAY_MAX_CONNECTIONS_PER_USER="2",
        GATEWAY_MAX_ATTEMPTS_PER_IP="100",
        GATEWAY_SESSION_RECHECK_SECONDS="0.2",  # lease renewals run under OOM too
    )
    await gateway.access_checked.wait()  # its start-up probes take an admission slot too
    busy = await session(private, "busy")
    held = [(await connect_authed(ws_url(gateway), busy))[0] for _ in range(2)]  # its limit
    fresh = [await session(private, "fresh") for _ in range(3)]
    await full(private, True)
    with capture_logs() as logs:
        clients = [(await connect_authed(ws_url(gateway), token))[0] for token in fresh]
        reply = await request(clients[0], {"type": "subscribe", "channel": "public:oom"})
        assert reply["type"] == "subscribed"
        assert await private.publish("public:oom", b'"delivered"') == 1
        assert (await recv_json(clients[0]))["data"] == "delivered"
        # What can still be counted is: the user already at its connection limit.
        over = await connect(ws_url(gateway), additional_headers=bearer(busy))
        assert await close_code(over) == 4029
    degraded = [e for e in logs if e["event"] == "admission_degraded"]
    assert len(degraded) == 1  # once, not once per login
    assert "OOM" in degraded[0]["error"]
    assert "maxmemory" in degraded[0]["fix"]
    assert not [e for e in logs if e["event"] in ("auth_unavailable", "connection_step_failed")]
    code, body = await http_get(f"http://127.0.0.1:{gateway.port}/readyz")
    assert code == 200
    assert "degraded" in body
    assert "docs/redis.md" in body
    report = await status(gateway)
    assert report["admission"] == {
        "degraded": True,
        "error": degraded[0]["error"],
        "uncounted_admissions": 3,
    }

    await full(private, False)
    with capture_logs() as logs:
        again, _ = await connect_authed(ws_url(gateway), await session(private, "later"))
    assert [e["event"] for e in logs if e["event"].startswith("admission_")] == [
        "admission_restored"
    ]
    assert await http_get(f"http://127.0.0.1:{gateway.port}/readyz") == (200, "ready\n")
    assert (await status(gateway))["admission"]["degraded"] is False  # type: ignore[index]
    for ws in [*held, *clients, again]:
        await ws.close()


async def test_lease_renewals_and_address_counts_degrade_the_same_way(private: Redis) -> None:
    limits = Admission(max_attempts_per_ip=2)
    admission = AdmissionControl(private, limits, lease_s=10.0)
    assert await admission.admit("u", "c1") is None  # a lease, counted
    assert await admission.check_ip("10.0.0.1") is None
    assert await admission.check_ip("10.0.0.1") is None  # two attempts: the limit
    await full(private, True)
    await admission.renew({"u": ["c1"]})  # cannot be extended: no error, just degraded
    assert admission.degraded is not None
    assert await admission.check_ip("10.0.0.1") is CloseReason.IP_ATTEMPTS  # counted before
    assert await admission.check_ip("10.0.0.2") is None  # uncounted
    assert await private.exists("notify-gateway:ip:10.0.0.2:attempts") == 0
    await full(private, False)
    await admission.renew({"u": ["c1"]})  # a write went through: counting again
    assert admission.degraded is None
    assert await admission.check_ip("10.0.0.2") is None
    assert await private.get("notify-gateway:ip:10.0.0.2:attempts") == b"1"
