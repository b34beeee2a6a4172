"""Redis Sentinel: the gateway finds the master through the sentinels and follows a failover."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from gateway.broker.sentinel import SentinelError, master_address
from gateway.config import load_settings
from gateway.server import Gateway
from notify_publisher import AsyncPublisher, Publisher
from notify_publisher.errors import PublisherError
from notify_wire.env import ConfigError
from notify_wire.redis_config import load_redis_config
from tests.conftest import ws_url
from tests.support.redis_server import free_port
from tests.support.sentinel import MASTER, SentinelGroup
from tests.support.tokens import new_token
from tests.support.ws import connect_authed, http_get, recv_json, request

SENTINEL_ENV = {"REDIS_SENTINEL_MASTER": MASTER, "REDIS_CONNECT_TIMEOUT": "1000"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "s1:26379"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINEL_MASTER": "m"}, "without REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m"}, "'s1' is not host:port"),
        ({"REDIS_SENTINELS": "s1:0", "REDIS_SENTINEL_MASTER": "m"}, "'s1:0' is not host:port"),
        (
            {"REDIS_SENTINELS": "s1:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis://h"},
            "REDIS_SENTINELS and REDIS_URL are both set",
        ),
        (
            {"REDIS_SENTINELS": "s1:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_TLS": "true"},
            "REDIS_TLS is not supported with REDIS_SENTINELS",
        ),
    ],
)
def test_sentinel_settings_are_validated(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_sentinel_settings() -> None:
    config = load_redis_config(
        {
            "REDIS_SENTINELS": "10.0.0.1:26379, [::1]:26380",
            "REDIS_SENTINEL_MASTER": "main",
            "REDIS_SENTINEL_PASSWORD": "sentinel-secret",
            "REDIS_PASSWORD": "master-secret",
            "REDIS_DB": "2",
        }
    )
    assert config.sentinels == (("10.0.0.1", 26379), ("::1", 26380))
    assert (config.sentinel_master, config.password, config.db) == ("main", "master-secret", 2)
    assert config.explicit  # never an embedded Redis instead
    assert config.url() == "redis+sentinel://:***@10.0.0.1:26379,[::1]:26380/main/2"
    assert "secret" not in repr(config)


async def test_unreachable_sentinels_are_one_clear_error() -> None:
    ports = [free_port(), free_port()]
    config = load_redis_config(
        {"REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in ports), **SENTINEL_ENV}
    )
    with pytest.raises(SentinelError, match=f"127.0.0.1:{ports[1]}: connection refused\\)"):
        await master_address(config)


@pytest.fixture(scope="module")
def group() -> Iterator[SentinelGroup]:
    group = SentinelGroup()
    try:
        group.wait_settled()
        yield group
    finally:
        group.cleanup()


@pytest.fixture
async def master(group: SentinelGroup) -> AsyncIterator[Redis]:
    """The test's own client for whichever server is master now."""
    sentinel = Sentinel([("127.0.0.1", s.port) for s in group.sentinels], socket_timeout=3.0)
    client: Redis = sentinel.master_for(MASTER, socket_timeout=3.0)
    yield client
    await client.aclose()
    for connection in sentinel.sentinels:
        await connection.aclose()


async def store_session(master: Redis, user: str, *, replicas: int) -> str:
    token = new_token()
    await master.set(f"session:{token}", orjson.dumps({"userId": user}), ex=120)
    # On the replica too, so that it survives a failover.
    assert await master.execute_command("WAIT", replicas, 2000) == replicas
    return token


async def test_a_sentinel_that_does_not_know_the_name_is_skipped(group: SentinelGroup) -> None:
    config = load_redis_config(
        {"REDIS_SENTINELS": group.addresses, **SENTINEL_ENV, "REDIS_SENTINEL_MASTER": "other"}
    )
    with pytest.raises(SentinelError, match="does not monitor 'other'"):
        await master_address(config)
    config = load_redis_config(
        {"REDIS_SENTINELS": f"127.0.0.1:{free_port()},{group.addresses}", **SENTINEL_ENV}
    )
    assert await master_address(config) == ("127.0.0.1", group.master.port)


async def test_failover_during_delivery_sends_gap_then_messages_from_the_new_master(
    group: SentinelGroup, master: Redis
) -> None:
    settings = load_settings(
        {"REDIS_SENTINELS": group.addresses, "GATEWAY_PORT": "0", **SENTINEL_ENV}
    )
    gateway = Gateway(settings)
    await gateway.start()
    sent = 0

    # The publisher library follows the failover too, configured like the gateway.
    library = AsyncPublisher.from_env({"REDIS_SENTINELS": group.addresses, **SENTINEL_ENV})

    async def publish_forever() -> None:
        nonlocal sent
        while True:
            with contextlib.suppress(PublisherError):
                await library.publish("public:failover", sent)
                sent += 1
            await asyncio.sleep(0.02)

    publisher = asyncio.create_task(publish_forever())
    try:
        await asyncio.wait_for(gateway.subscriber.wait_ready(), 10)
        before = await store_session(master, "s1", replicas=1)
        ws, _ = await connect_authed(ws_url(gateway), before)
        assert (await request(ws, {"type": "subscribe", "channel": "public:failover"}))[
            "type"
        ] == "subscribed"
        assert (await recv_json(ws))["type"] == "message"  # delivery is flowing
        old_port = group.master.port
        group.master.signal(signal.SIGKILL)
        # Messages until the link drops, then the gap, then messages via the new master.
        async with asyncio.timeout(30):
            while (frame := await recv_json(ws, timeout_s=30))["type"] == "message":
                pass
            assert frame == {"type": "gap", "channel": "public:failover"}
            assert (await recv_json(ws, timeout_s=30))["type"] == "message"
        assert group.master_port() == group.replica.port != old_port
        # Sessions resolve on the new master: one stored before the failover, one after.
        after = await store_session(master, "s2", replicas=0)  # the old master is dead
        for token in (before, after):
            other, _ = await connect_authed(ws_url(gateway), token)
            await other.close()
        base = f"http://127.0.0.1:{gateway.port}"
        assert await http_get(f"{base}/readyz") == (200, "ready\n")
        publisher.cancel()
        with Publisher.from_env({"REDIS_SENTINELS": group.addresses, **SENTINEL_ENV}) as sync:
            assert await asyncio.to_thread(sync.publish, "public:failover", "sync") == 1
        while (frame := await recv_json(ws))["data"] != "sync":
            pass
        await ws.close()
    finally:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await library.close()
        await gateway.stop()
