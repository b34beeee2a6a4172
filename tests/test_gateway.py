"""The gateway end to end: real Redis, real WebSocket clients, in-process server."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode

from gateway.server import Gateway
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.control import revoke_message
from notify_wire.sessions import session_digest
from tests.conftest import MakeGateway, MakeSession, ws_url
from tests.support.tokens import new_token
from tests.support.ws import (
    close_code,
    connect_authed,
    http_get,
    recv_json,
    request,
    upgrade_request,
    wait_until,
)


async def numsub(redis: Redis, channel: str) -> int:
    ((_, count),) = await redis.pubsub_numsub(channel)
    return int(count)


@pytest.mark.parametrize("header", [True, False], ids=["bearer-header", "auth-frame"])
async def test_both_auth_paths_welcome_the_user(
    gateway: Gateway, make_session: MakeSession, header: bool
) -> None:
    token = await make_session("42")
    ws, welcome = await connect_authed(ws_url(gateway), token, header=header)
    async with ws:
        assert welcome["user"] == "42"
        assert welcome["heartbeat"] == gateway.settings.heartbeat_s
        assert isinstance(welcome["conn"], str)
        assert welcome["conn"]
        assert await request(ws, {"type": "ping", "ref": 7}) == {"type": "pong", "ref": 7}


async def test_numeric_user_id_and_delivery(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    token = await make_session(77)  # type: ignore[arg-type]
    ws, welcome = await connect_authed(ws_url(gateway), token)
    async with ws:
        assert welcome["user"] == "77"
        reply = await request(ws, {"type": "subscribe", "channel": "user:77", "ref": 1})
        assert reply == {"type": "subscribed", "channel": "user:77", "ref": 1}
        await redis.publish("user:77", '{"type":"new_message","message":"Hello!"}')
        assert await recv_json(ws) == {
            "type": "message",
            "channel": "user:77",
            "data": {"type": "new_message", "message": "Hello!"},
        }


async def _closed_with(
    url: str, *, header: str | None = None, first: str | None = None
) -> int | None:
    ws = await connect(url, additional_headers={"Authorization": header} if header else None)
    if first is not None:
        await ws.send(first)
    return await close_code(ws)


async def test_unknown_token_closes_4001(gateway: Gateway) -> None:
    url = ws_url(gateway)
    assert await _closed_with(url, header="Bearer never-issued-token") == 4001
    assert await _closed_with(url, first='{"type":"auth","token":"never-issued-token"}') == 4001


async def test_expired_token_closes_4001(gateway: Gateway, redis: Redis) -> None:
    await redis.set("session:expired-token-123", '{"userId":"1"}')
    await redis.pexpireat("session:expired-token-123", 1)  # a deadline in the past: expired
    assert await _closed_with(ws_url(gateway), header="Bearer expired-token-123") == 4001


@pytest.mark.parametrize(
    ("header", "first"),
    [
        ("Basic dXNlcjpwdw==", None),
        ("Bearer has spaces in it", None),
        (None, '{"type":"subscribe","channel":"notifications"}'),
        (None, "not json"),
        (None, '{"type":"auth","token":12345678}'),
    ],
)
async def test_malformed_auth_closes_4001(gateway: Gateway, header: str | None, first: str) -> None:
    assert await _closed_with(ws_url(gateway), header=header, first=first) == 4001


async def test_session_value_that_is_not_json_closes_4001(gateway: Gateway, redis: Redis) -> None:
    await redis.set("session:broken-session-1", "user=1", ex=60)
    assert await _closed_with(ws_url(gateway), header="Bearer broken-session-1") == 4001


@pytest.mark.parametrize("kind", ["hash", "list"])
async def test_a_session_key_of_the_wrong_type_closes_4001(
    gateway: Gateway, redis: Redis, kind: str
) -> None:
    token = new_token()
    if kind == "hash":
        await redis.hset(f"session:{token}", "userId", "42")
    else:
        await redis.rpush(f"session:{token}", "42")
    ws = await connect(ws_url(gateway), additional_headers={"Authorization": f"Bearer {token}"})
    assert await close_code(ws) == 4001  # a bad session: retrying the token cannot help
    await redis.delete(f"session:{token}")


async def test_auth_timeout_closes_4001(gateway_factory: MakeGateway) -> None:
    gateway = await gateway_factory(GATEWAY_AUTH_TIMEOUT="0.2")
    ws = await connect(ws_url(gateway))
    assert await close_code(ws) == 4001
    assert ws.close_reason is not None
    assert "auth timeout" in ws.close_reason


async def test_channel_authorisation(gateway: Gateway, make_session: MakeSession) -> None:
    token = await make_session("42", channels=["team:7:*"])
    ws, _ = await connect_authed(ws_url(gateway), token)
    async with ws:
        for channel in ("user:42", "notifications", "public:weather", "team:7:alerts"):
            reply = await request(ws, {"type": "subscribe", "channel": channel, "ref": channel})
            assert reply == {"type": "subscribed", "channel": channel, "ref": channel}
        for channel, code in (
            ("user:43", "forbidden"),
            ("team:8:x", "forbidden"),
            ("user:*", "bad_request"),
            ("__keyspace@0__:session:x", "bad_request"),
            ("__keyevent@0__:expired", "bad_request"),
        ):
            reply = await request(ws, {"type": "subscribe", "channel": channel, "ref": 1})
            assert (reply["type"], reply["code"]) == ("error", code), reply


async def test_payloads_json_and_not_json(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    ws, _ = await connect_authed(ws_url(gateway), await make_session("5"))
    async with ws:
        await request(ws, {"type": "subscribe", "channel": "notifications"})
        payloads = [b'{"a": 1}', b"[1, 2]", b"3.5", b'"quoted"', b"plain text", b"", b"\xffraw"]
        for payload in payloads:
            await redis.publish("notifications", payload)
        received = [(await recv_json(ws))["data"] for _ in payloads]
        assert received == [{"a": 1}, [1, 2], 3.5, "quoted", "plain text", "", "\ufffdraw"]


async def test_one_redis_subscription_per_channel(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    channel = "public:refcount"
    a, _ = await connect_authed(ws_url(gateway), await make_session("1"))
    b, _ = await connect_authed(ws_url(gateway), await make_session("2"))
    await request(a, {"type": "subscribe", "channel": channel})
    await request(b, {"type": "subscribe", "channel": channel})
    assert await numsub(redis, channel) == 1
    assert await redis.publish(channel, "hi") == 1  # one Redis receiver: the gateway
    assert (await recv_json(a))["data"] == (await recv_json(b))["data"] == "hi"
    await request(a, {"type": "unsubscribe", "channel": channel})
    assert await numsub(redis, channel) == 1
    await b.close()  # a disconnect releases its channels too

    async def released() -> bool:
        return await numsub(redis, channel) == 0

    await wait_until(released)
    await a.close()


async def test_malformed_frames_get_errors_and_connection_lives(
    gateway: Gateway, make_session: MakeSession
) -> None:
    ws, _ = await connect_authed(ws_url(gateway), await make_session("9"))
    async with ws:
        for frame in ("nonsense", "[]", "{}", '{"type":"jump","ref":4}', '{"type":"subscribe"}'):
            await ws.send(frame)
            reply = await recv_json(ws)
            assert (reply["type"], reply["code"]) == ("error", "bad_request"), reply
        await ws.send(b"\x01\x02")
        assert (await recv_json(ws))["message"].startswith("binary frames")
        assert await request(ws, {"type": "ping", "ref": "alive"}) == {
            "type": "pong",
            "ref": "alive",
        }


async def test_frame_over_limit_closes_1009(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_FRAME_BYTES="1024")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("9"))
    await ws.send('{"type":"ping","pad":"' + "x" * 2000 + '"}')
    assert await close_code(ws) == 1009


async def test_slow_consumer_is_closed_4008_and_others_get_everything(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_BUFFER_BYTES="65536")
    url = ws_url(gateway)
    # A client that stops reading: its library queues one frame, then TCP pushes back.
    slow, _ = await connect_authed(url, await make_session("1"), max_queue=1)
    fast, _ = await connect_authed(url, await make_session("2"), max_queue=None)
    await request(slow, {"type": "subscribe", "channel": "public:flood"})
    await request(fast, {"type": "subscribe", "channel": "public:flood"})
    payload = orjson.dumps({"pad": "x" * 16_000})
    count = 300
    received = 0

    async def read_fast() -> None:
        nonlocal received
        while received < count:
            frame = await recv_json(fast)
            assert frame["type"] == "message"
            received += 1

    reader = asyncio.create_task(read_fast())
    for _ in range(count):
        await redis.publish("public:flood", payload)
    await asyncio.wait_for(reader, 20)
    assert received == count
    assert await close_code(slow, timeout_s=20) == 4008
    await fast.close()


async def test_http_health_endpoints(gateway: Gateway) -> None:
    base = f"http://127.0.0.1:{gateway.port}"
    assert await http_get(f"{base}/healthz") == (200, "ok\n")
    assert await http_get(f"{base}/readyz") == (200, "ready\n")
    status, body = await http_get(f"{base}/nope")
    assert status == 404
    assert "/ws" in body


async def test_revocation_on_the_control_channel_closes_that_session_4001(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    first, second = await gateway_factory(), await gateway_factory()
    token = await make_session("6")
    other = await make_session("6")
    on_first, _ = await connect_authed(ws_url(first), token)
    on_second, _ = await connect_authed(ws_url(second), token)
    bystander, _ = await connect_authed(ws_url(first), other)
    # Two gateways, one publish: the control message names the digest, never the token.
    assert await redis.publish(CONTROL_CHANNEL, revoke_message(session_digest(token))) == 2
    assert await close_code(on_first, timeout_s=1) == 4001
    assert await close_code(on_second, timeout_s=1) == 4001
    assert on_first.close_reason == "session revoked"
    assert await request(bystander, {"type": "ping"}) == {"type": "pong"}
    await bystander.close()


async def test_pipelined_messages_of_all_sizes_arrive_whole_and_in_order(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    # One pipeline: Redis writes the messages back to back, so reads hold many of them and
    # split some (the subscriber parses each read in slices of a few KiB).
    ws, _ = await connect_authed(ws_url(gateway), await make_session("5"))
    async with ws:
        subscribed = await request(ws, {"type": "subscribe", "channel": "user:5"})
        assert subscribed["type"] == "subscribed"
        sizes = [1, 8190, 20_000, 3, 70_000, 5000, 9000, 100] * 4
        payloads = [orjson.dumps({"n": n, "pad": "x" * size}) for n, size in enumerate(sizes)]
        async with redis.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.publish("user:5", payload)
            await pipe.execute()
        received = [(await recv_json(ws))["data"] for _ in payloads]
        assert received == [orjson.loads(payload) for payload in payloads]


async def test_oversized_backend_message_is_dropped_and_others_flow(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_MESSAGE_BYTES="1000")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("4"))
    async with ws:
        await request(ws, {"type": "subscribe", "channel": "notifications"})
        await redis.publish("notifications", "x" * 1001)
        await redis.publish("notifications", "small")
        assert (await recv_json(ws))["data"] == "small"
        assert sum(gateway.hub.dropped.values()) == 1


async def test_commands_sent_back_to_back_are_answered_in_order(
    gateway: Gateway, make_session: MakeSession
) -> None:
    """Subscribing waits for Redis; the commands behind it wait their turn, from the very
    first frame after the auth frame (before the welcome) on."""
    token = await make_session("order")
    ws = await connect(ws_url(gateway))
    commands = [
        {"type": "auth", "token": token},
        {"type": "subscribe", "channel": "public:order-a", "ref": 1},
        {"type": "ping", "ref": 2},
        {"type": "subscribe", "channel": "public:order-b", "ref": 3},
        {"type": "unsubscribe", "channel": "public:order-a", "ref": 4},
        {"type": "ping", "ref": 5},
    ]
    for command in commands:
        await ws.send(orjson.dumps(command).decode())
    replies = [await recv_json(ws) for _ in commands]
    assert [(r["type"], r.get("ref")) for r in replies] == [
        ("welcome", None),
        ("subscribed", 1),
        ("pong", 2),
        ("subscribed", 3),
        ("unsubscribed", 4),
        ("pong", 5),
    ]
    await ws.close()


async def test_a_client_that_half_closes_with_unread_bytes_mid_subscribe_is_forgotten_once(
    gateway_factory: MakeGateway,
    make_session: MakeSession,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The peer stops reading, then sends a subscribe and FIN. The gateway's buffer keeps
    the TCP connection open after the FIN while the subscribe finishes: the connection
    must be counted down once, when it is really gone, and nothing may raise."""
    gateway = await gateway_factory(GATEWAY_MAX_BUFFER_BYTES=str(64 << 20))
    token = await make_session("half")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(upgrade_request(f"Authorization: Bearer {token}\r\n"))
    subscribe = {"type": "subscribe", "channel": "public:half-a"}
    writer.write(Frame(Opcode.TEXT, orjson.dumps(subscribe)).serialize(mask=True))
    async with asyncio.timeout(5):
        await reader.readuntil(b'"type":"subscribed"')
    (client,) = gateway.handler.index.clients()
    payload = orjson.dumps({"pad": "x" * 60_000}).decode()

    async def backlog() -> bool:  # more than the kernel buffers hold: the gateway keeps some
        await redis.publish("public:half-a", payload)
        return client._transport.get_write_buffer_size() > 0

    await wait_until(backlog, timeout_s=30, step_s=0)
    subscribe = {"type": "subscribe", "channel": "public:half-b"}
    writer.write(Frame(Opcode.TEXT, orjson.dumps(subscribe)).serialize(mask=True))
    writer.write_eof()

    async def subscribed() -> bool:
        return dict(await redis.pubsub_numsub("public:half-b"))[b"public:half-b"] == 1

    await wait_until(subscribed)
    writer.transport.abort()  # the peer goes away for good

    async def gone() -> bool:
        return gateway.stats.sockets <= 0 and not gateway.handler.tasks

    await wait_until(gone)
    assert gateway.stats.sockets == 0  # counted down once, not twice
    assert gateway.stats.connections == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
