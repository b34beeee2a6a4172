"""Redis faults: the gateway notices, says so (readyz, gap frames, logs) and recovers by itself."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from websockets.asyncio.client import ClientConnection, connect

from gateway.config import load_settings
from gateway.server import Gateway
from tests.conftest import MakeGateway, ws_url
from tests.support.process import GatewayProcess
from tests.support.proxy import FaultProxy
from tests.support.redis_server import RedisServer, free_port
from tests.support.tokens import new_token
from tests.support.ws import close_code, connect_authed, http_get, recv_json, request, wait_until

MakeRedis = Callable[[Sequence[str]], RedisServer]


async def ready(gateway: Gateway | GatewayProcess) -> bool:
    return (await http_get(f"http://127.0.0.1:{gateway.port}/readyz"))[0] == 200


async def unready(gateway: Gateway | GatewayProcess) -> bool:
    return not await ready(gateway)


async def subscribed_client(
    gateway_url: str, redis: Redis, channel: str = "public:faults"
) -> ClientConnection:
    token = new_token()
    await redis.set(f"session:{token}", '{"userId":"f"}', ex=60)
    ws, _ = await connect_authed(gateway_url, token)
    assert (await request(ws, {"type": "subscribe", "channel": channel}))["type"] == "subscribed"
    return ws


async def expect_gap_then_delivery(ws: ClientConnection, redis: Redis, channel: str) -> None:
    assert await recv_json(ws, timeout_s=10) == {"type": "gap", "channel": channel}
    await redis.publish(channel, '"after"')
    assert await recv_json(ws) == {"type": "message", "channel": channel, "data": "after"}


@pytest.fixture
async def private(redis_factory: MakeRedis) -> AsyncIterator[tuple[RedisServer, Redis]]:
    server = redis_factory([])
    # The test's own client must survive the faults it injects.
    client = Redis.from_url(
        server.url, retry=Retry(NoBackoff(), 3), retry_on_error=[RedisConnectionError]
    )
    yield server, client
    await client.aclose()


async def test_kill_9_and_restart(
    private: tuple[RedisServer, Redis], gateway_factory: MakeGateway
) -> None:
    server, redis = private
    gateway = await gateway_factory(server.url)
    ws = await subscribed_client(ws_url(gateway), redis)
    server.kill()
    await wait_until(lambda: unready(gateway))
    server.start()  # same port, empty: the sessions and subscriptions are gone
    await wait_until(lambda: ready(gateway), timeout_s=15)
    await expect_gap_then_delivery(ws, redis, "public:faults")
    assert gateway.subscriber.reconnects == 1
    await ws.close()


async def test_stopped_redis_is_noticed_within_5_seconds(
    private: tuple[RedisServer, Redis],
    gateway_factory: MakeGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, redis = private
    gateway = await gateway_factory(server.url)  # default heartbeat: PING every 1 s, 2 s timeout
    ws = await subscribed_client(ws_url(gateway), redis)
    server.signal(signal.SIGSTOP)
    try:
        await wait_until(lambda: unready(gateway), timeout_s=5)
    finally:
        server.signal(signal.SIGCONT)
    await wait_until(lambda: ready(gateway), timeout_s=15)
    await expect_gap_then_delivery(ws, redis, "public:faults")
    await ws.close()
    # The PING left unanswered is settled, not left to fail when the link closes: asyncio
    # would log "Future exception was never retrieved" at error level (found by the soak).
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_client_kill_type_pubsub(
    private: tuple[RedisServer, Redis], gateway_factory: MakeGateway
) -> None:
    server, redis = private
    gateway = await gateway_factory(server.url)
    ws = await subscribed_client(ws_url(gateway), redis)
    # The start-up ACL check subscribes on connections of its own, one after another.
    await asyncio.wait_for(gateway.access_checked.wait(), timeout=10)

    async def only_the_subscriber() -> bool:
        return len(await redis.client_list(_type="pubsub")) == 1

    await wait_until(only_the_subscriber)
    assert await redis.client_kill_filter(_type="pubsub") == 1
    await expect_gap_then_delivery(ws, redis, "public:faults")
    ((_, count),) = await redis.pubsub_numsub("public:faults")
    assert count == 1  # re-subscribed exactly once
    await ws.close()


@pytest.fixture
async def proxied(
    private: tuple[RedisServer, Redis], gateway_factory: MakeGateway
) -> AsyncIterator[tuple[FaultProxy, Gateway, Redis]]:
    server, redis = private
    proxy = await FaultProxy(server.port).start()
    gateway = await gateway_factory(proxy.url, REDIS_CONNECT_TIMEOUT="1000")
    yield proxy, gateway, redis
    await gateway.stop()
    await proxy.close()


async def test_latency_delays_but_loses_nothing(
    proxied: tuple[FaultProxy, Gateway, Redis],
) -> None:
    proxy, gateway, redis = proxied
    ws = await subscribed_client(ws_url(gateway), redis)
    proxy.delay_s = 0.3  # below the 2 s heartbeat timeout: slow, not dead
    for i in range(5):
        await redis.publish("public:faults", str(i))
    assert [(await recv_json(ws))["data"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert gateway.subscriber.reconnects == 0
    await ws.close()


async def test_a_pong_late_behind_a_backlog_keeps_the_link(
    private: tuple[RedisServer, Redis], gateway_factory: MakeGateway
) -> None:
    """A slow link delivers a backlog for longer than the PONG timeout: the PING's reply
    waits behind the messages, but bytes keep arriving, so Redis is alive: no reconnect,
    no gap, nothing lost."""
    server, redis = private
    proxy = await FaultProxy(server.port).start()
    try:
        gateway = await gateway_factory(
            proxy.url,
            GATEWAY_REDIS_PING_SECONDS="0.2",
            GATEWAY_REDIS_PING_TIMEOUT_SECONDS="0.5",
        )
        ws = await subscribed_client(ws_url(gateway), redis)
        proxy.delay_s, proxy.trickle_bytes = 0.05, 2000  # 40 KB/s
        payload = "x" * 900
        for i in range(100):  # about 100 KB: 2.5 s on the slow link, five PONG timeouts
            await redis.publish("public:faults", f'{{"i":{i},"pad":"{payload}"}}')
        received = [await recv_json(ws, timeout_s=15) for _ in range(100)]
        assert [frame.get("type") for frame in received] == ["message"] * 100
        assert [frame["data"]["i"] for frame in received] == list(range(100))
        assert gateway.subscriber.reconnects == 0
        await ws.close()
    finally:
        await proxy.close()


async def test_black_hole_is_detected_and_recovered(
    proxied: tuple[FaultProxy, Gateway, Redis],
) -> None:
    proxy, gateway, redis = proxied
    ws = await subscribed_client(ws_url(gateway), redis)
    proxy.blackhole = True
    await wait_until(lambda: unready(gateway), timeout_s=5)
    proxy.blackhole = False
    await wait_until(lambda: ready(gateway), timeout_s=15)
    await expect_gap_then_delivery(ws, redis, "public:faults")
    await ws.close()


async def test_connection_reset(proxied: tuple[FaultProxy, Gateway, Redis]) -> None:
    proxy, gateway, redis = proxied
    ws = await subscribed_client(ws_url(gateway), redis)
    proxy.reset()
    await expect_gap_then_delivery(ws, redis, "public:faults")
    await ws.close()


async def test_redis_down_at_start() -> None:
    port = free_port()
    gateway = Gateway(
        load_settings({"REDIS_URL": f"redis://127.0.0.1:{port}/0", "GATEWAY_PORT": "0"})
    )
    await gateway.start()
    server = RedisServer(port=port)
    try:
        assert await http_get(f"http://127.0.0.1:{gateway.port}/healthz") == (200, "ok\n")
        assert await unready(gateway)
        refused = await connect(ws_url(gateway))
        assert await close_code(refused) == 1013
        server.start()
        await wait_until(lambda: ready(gateway), timeout_s=15)
        redis = Redis.from_url(server.url)
        ws = await subscribed_client(ws_url(gateway), redis)
        await redis.publish("public:faults", "1")
        assert (await recv_json(ws))["data"] == 1
        await ws.close()
        await redis.aclose()
    finally:
        await gateway.stop()
        server.cleanup()


async def test_output_buffer_limit_disconnect_is_handled_like_any_drop(
    redis_factory: MakeRedis,
) -> None:
    server = redis_factory(["--client-output-buffer-limit", "pubsub 64kb 32kb 1"])
    redis = Redis.from_url(server.url)
    gateway = GatewayProcess({"REDIS_URL": server.url})
    try:
        await asyncio.to_thread(gateway.wait_started)
        ws = await subscribed_client(gateway.ws_url, redis)
        gateway.process.send_signal(signal.SIGSTOP)  # the gateway stops reading Redis
        try:
            # Publish until Redis drops the stopped subscriber (kernel buffers absorb the first
            # megabytes); bounded at 64 MiB.
            for _ in range(1024):
                async with redis.pipeline(transaction=False) as pipe:
                    for _ in range(8):
                        pipe.publish("public:faults", "x" * 8192)
                    await pipe.execute()
                if await redis.pubsub_numsub("public:faults") != [(b"public:faults", 1)]:
                    break
            else:
                pytest.fail("Redis never applied its pubsub output buffer limit")
        finally:
            gateway.process.send_signal(signal.SIGCONT)
        record = await asyncio.to_thread(gateway.wait_event, "redis_disconnected")
        assert "client-output-buffer-limit" in record["reason"]
        # Whatever arrived before the drop is delivered, then the gap is announced.
        while (frame := await recv_json(ws, timeout_s=10))["type"] == "message":
            pass
        assert frame == {"type": "gap", "channel": "public:faults"}
        await redis.publish("public:faults", '"after"')
        assert (await recv_json(ws))["data"] == "after"
        await ws.close()
    finally:
        gateway.stop()
        await redis.aclose()
