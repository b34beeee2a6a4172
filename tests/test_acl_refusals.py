"""Tightening the gateway's ACL costs only the channels it no longer allows (issue 13, item 3).

Redis disconnects a subscriber whose channel permissions shrink (``ACL SETUSER``), and refuses
a whole SUBSCRIBE when one of its channels is denied; the gateway re-subscribes after the
reconnect, so every test here starts from that refusal, on a private redis-server with the
ACL users of docs/redis.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import orjson
import pytest
from redis.asyncio import Redis

from gateway.server import Gateway
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.control import revoke_message
from notify_wire.sessions import session_digest
from tests.conftest import MakeGateway, ws_url
from tests.support.acl import documented_acl_users
from tests.support.redis_server import RedisServer
from tests.support.tokens import new_token
from tests.support.ws import close_code, connect_authed, http_get, recv_json, request, wait_until

RedisFactory = Callable[[Sequence[str]], RedisServer]
#: the channel rules of the documented gateway user
CHANNELS = ["&notifications", "&public:*", "&user:*", f"&{CONTROL_CHANNEL}"]


@pytest.fixture
async def acl_redis(redis_factory: RedisFactory) -> AsyncIterator[tuple[RedisServer, Redis]]:
    users = documented_acl_users()
    server = redis_factory([*users["notify-gateway"], *users["app-publisher"]])
    admin = Redis.from_url(server.url)  # the default user: everything allowed
    yield server, admin
    await admin.aclose()


async def gateway_user(gateways: MakeGateway, server: RedisServer) -> Gateway:
    url = f"redis://notify-gateway:change-me-gateway@127.0.0.1:{server.port}/0"
    gateway = await gateways(url)
    await gateway.access_checked.wait()  # its probes subscribe too: let them finish first
    return gateway


async def allow_channels(admin: Redis, *rules: str) -> None:
    """Redis disconnects the gateway's subscriber, which then subscribes everything again."""
    await admin.execute_command("ACL", "SETUSER", "notify-gateway", "resetchannels", *rules)


async def session(admin: Redis, user: str) -> str:
    token = new_token()
    await admin.set(f"session:{token}", orjson.dumps({"userId": user}), ex=60)
    return token


async def readyz(gateway: Gateway) -> tuple[int, str]:
    status, body = await http_get(f"http://127.0.0.1:{gateway.port}/readyz")
    return status, body


async def test_a_denied_channel_costs_only_that_channel(
    acl_redis: tuple[RedisServer, Redis], gateway_factory: MakeGateway
) -> None:
    server, admin = acl_redis
    gateway = await gateway_user(gateway_factory, server)
    token_a, token_b = await session(admin, "1"), await session(admin, "2")
    a, _ = await connect_authed(ws_url(gateway), token_a)
    b, _ = await connect_authed(ws_url(gateway), token_b)
    for ws, channel in ((a, "user:1"), (a, "public:a"), (b, "public:a")):
        reply = await request(ws, {"type": "subscribe", "channel": channel})
        assert reply["type"] == "subscribed"

    await allow_channels(admin, *(c for c in CHANNELS if c != "&user:*"))

    gap = {"type": "gap", "channel": "public:a"}
    assert await recv_json(b, timeout_s=10) == gap
    frames = [await recv_json(a, timeout_s=10) for _ in range(2)]
    assert gap in frames
    (refused,) = [f for f in frames if f != gap]
    assert (refused["type"], refused["code"]) == ("error", "unavailable")
    assert "'user:1'" in refused["message"]

    async def resubscribed() -> bool:
        return set(await admin.pubsub_channels()) == {b"public:a", CONTROL_CHANNEL.encode()}

    await wait_until(resubscribed)
    assert await admin.publish("public:a", b'"still allowed"') == 1
    for ws in (a, b):
        assert (await recv_json(ws))["data"] == "still allowed"
    assert await readyz(gateway) == (200, "ready\n")
    await admin.publish(CONTROL_CHANNEL, revoke_message(session_digest(token_b)))
    assert await close_code(b) == 4001  # revocation still reaches the gateway
    await a.close()


async def test_a_refused_control_channel_shows_in_readyz_and_is_retried(
    acl_redis: tuple[RedisServer, Redis], gateway_factory: MakeGateway
) -> None:
    server, admin = acl_redis
    gateway = await gateway_user(gateway_factory, server)
    token = await session(admin, "3")
    ws, _ = await connect_authed(ws_url(gateway), token)
    reply = await request(ws, {"type": "subscribe", "channel": "public:c"})
    assert reply["type"] == "subscribed"

    await allow_channels(admin, *(c for c in CHANNELS if c != f"&{CONTROL_CHANNEL}"))

    async def control_refused() -> bool:
        status, body = await readyz(gateway)
        return status == 503 and CONTROL_CHANNEL in body  # not while it reconnects

    await wait_until(control_refused, timeout_s=10)
    assert "revocations do not reach this gateway" in (await readyz(gateway))[1]
    assert await recv_json(ws, timeout_s=10) == {"type": "gap", "channel": "public:c"}
    assert await admin.publish("public:c", b'"delivered"') == 1  # other channels still work
    assert (await recv_json(ws))["data"] == "delivered"

    # Put it back: no disconnect (permissions grew); the next retry subscribes it.
    await admin.execute_command("ACL", "SETUSER", "notify-gateway", f"&{CONTROL_CHANNEL}")

    async def control_back() -> bool:
        return await readyz(gateway) == (200, "ready\n")

    await wait_until(control_back, timeout_s=15)
    await admin.publish(CONTROL_CHANNEL, revoke_message(session_digest(token)))
    assert await close_code(ws) == 4001
