"""Hostile or broken clients: every limit is enforced with its documented code."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from structlog.testing import capture_logs
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from gateway.config import Limits, load_settings
from gateway.core.client import ClientState
from gateway.core.policy import ChannelPolicy
from gateway.server import Gateway
from notify_wire.env import ConfigError
from notify_wire.sessions import Session, SessionError, parse_session
from tests.conftest import MakeGateway, MakeSession, ws_url
from tests.support.process import GatewayProcess
from tests.support.redis_server import RedisServer
from tests.support.tokens import new_token
from tests.support.ws import (
    close_code,
    connect_authed,
    connect_subscribed,
    raw_upgraded,
    recv_json,
    request,
    wait_until,
)


async def test_rate_limit_error_then_4029(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(
        GATEWAY_RATE_LIMIT="1", GATEWAY_RATE_BURST="2", GATEWAY_RATE_STRIKES="2"
    )
    ws, _ = await connect_authed(ws_url(gateway), await make_session("1"))
    for _ in range(4):
        await ws.send('{"type":"ping"}')
    replies = [await recv_json(ws) for _ in range(3)]
    assert [r.get("code", r["type"]) for r in replies] == ["pong", "pong", "rate_limited"]
    assert await close_code(ws) == 4029


async def test_subscription_cap(gateway_factory: MakeGateway, make_session: MakeSession) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_SUBSCRIPTIONS="2")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("1"))
    async with ws:
        for channel in ("public:a", "public:b"):
            assert (await request(ws, {"type": "subscribe", "channel": channel}))["type"] == (
                "subscribed"
            )
        reply = await request(ws, {"type": "subscribe", "channel": "public:c", "ref": 3})
        assert (reply["code"], reply["ref"]) == ("too_many_subscriptions", 3)


async def test_global_connection_cap_answers_1013(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_CONNECTIONS="2")
    a, _ = await connect_authed(ws_url(gateway), await make_session("1"))
    b, _ = await connect_authed(ws_url(gateway), await make_session("2"))
    third = await connect(ws_url(gateway))
    assert await close_code(third) == 1013
    await a.close()
    await wait_until(lambda: _no_more_than(gateway, 1))
    c, _ = await connect_authed(ws_url(gateway), await make_session("3"))
    await b.close()
    await c.close()


async def _no_more_than(gateway: Gateway, sockets: int) -> bool:
    return gateway.stats.sockets <= sockets


async def test_connections_per_user_hold_across_two_gateway_processes(
    redis_server: RedisServer, make_session: MakeSession
) -> None:
    env = {"REDIS_URL": redis_server.url, "GATEWAY_MAX_CONNECTIONS_PER_USER": "2"}
    first, second = GatewayProcess(env), GatewayProcess(env)
    try:
        await asyncio.gather(
            asyncio.to_thread(first.wait_started), asyncio.to_thread(second.wait_started)
        )
        token = await make_session("limited-user")
        a, _ = await connect_authed(first.ws_url, token)
        b, _ = await connect_authed(second.ws_url, token)
        over = await connect(first.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
        assert await close_code(over) == 4029
        assert over.close_reason == "too many connections for this user"
        await b.close()  # a slot frees as soon as a connection closes
        await asyncio.to_thread(second.wait_event, "connection_closed")
        c, _ = await connect_authed(second.ws_url, token)
        await a.close()
        await c.close()
    finally:
        first.stop()
        second.stop()


async def test_connection_attempts_per_user_per_minute(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_ATTEMPTS_PER_USER="3")
    token = await make_session("eager")
    for _ in range(3):
        ws, _ = await connect_authed(ws_url(gateway), token)
        await ws.close()
    over = await connect(ws_url(gateway), additional_headers={"Authorization": f"Bearer {token}"})
    assert await close_code(over) == 4029
    assert over.close_reason is not None
    assert "retry in a minute" in over.close_reason


async def test_attempts_per_ip_behind_a_trusted_proxy(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(
        GATEWAY_MAX_ATTEMPTS_PER_IP="2", GATEWAY_TRUSTED_PROXY_HEADER="X-Forwarded-For"
    )
    token = await make_session("ip")

    async def attempt(address: str) -> str | int | None:
        headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": f"10.9.9.9, {address}"}
        async with connect(ws_url(gateway), additional_headers=headers) as ws:
            try:
                return str((await recv_json(ws))["type"])
            except ConnectionClosed:
                return ws.close_code

    assert [await attempt("198.51.100.7") for _ in range(3)] == ["welcome", "welcome", 4029]
    assert await attempt("198.51.100.8") == "welcome"


async def test_an_auth_frame_sent_while_login_waits_for_redis_is_not_lost(
    gateway_factory: MakeGateway, redis_factory: Callable[[Sequence[str]], RedisServer]
) -> None:
    """With GATEWAY_MAX_ATTEMPTS_PER_IP on, login first counts the attempt in Redis; an auth
    frame that arrives meanwhile must be the one login then reads (it was dropped: 4001)."""
    server = redis_factory(())
    gateway = await gateway_factory(server.url, GATEWAY_MAX_ATTEMPTS_PER_IP="100")
    redis = Redis.from_url(server.url)
    token = new_token()
    await redis.set(f"session:{token}", b'{"userId": "early"}', ex=60)
    await redis.execute_command("CLIENT", "PAUSE", "10000", "WRITE")  # the attempt counter waits
    try:
        ws = await connect(ws_url(gateway))
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())

        async def auth_frame_arrived() -> bool:
            return any(getattr(client, "_inbox", None) for client in gateway._server.connections)

        await wait_until(auth_frame_arrived)  # received while login waits: the window
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
    welcome = await recv_json(ws)
    assert (welcome["type"], welcome["user"]) == ("welcome", "early")
    await ws.close()
    await redis.aclose()


async def test_a_redis_error_counting_the_address_is_a_1013_not_a_failed_login_step(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    """The per-address count is Redis work like the session read: when Redis fails it (here a
    key of the wrong type; in the soak, a restart), the client is told to come back (1013),
    not closed 1011 with an error logged (found by the soak)."""
    gateway = await gateway_factory(GATEWAY_MAX_ATTEMPTS_PER_IP="100")
    await redis.hset("notify-gateway:ip:127.0.0.1:attempts", "x", "1")  # INCR: WRONGTYPE
    try:
        ws = await connect(
            ws_url(gateway), additional_headers={"Authorization": f"Bearer {await make_session()}"}
        )
        assert await close_code(ws) == 1013
    finally:
        await redis.delete("notify-gateway:ip:127.0.0.1:attempts")


async def test_origin_allowlist(gateway_factory: MakeGateway, make_session: MakeSession) -> None:
    gateway = await gateway_factory(GATEWAY_ALLOWED_ORIGINS="https://app.example.com")
    token = await make_session("o")
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_url(gateway), origin="https://evil.example.com")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    ws, _ = await connect_authed(ws_url(gateway), token, origin="https://app.example.com")
    await ws.close()
    service, _ = await connect_authed(ws_url(gateway), token)  # no Origin: not a browser
    await service.close()


async def test_compressed_frames_are_capped_after_decompression(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(GATEWAY_COMPRESSION="deflate", GATEWAY_MAX_FRAME_BYTES="4096")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("z"), compression="deflate")
    bomb = '{"type":"ping","pad":"' + "0" * 1_000_000 + '"}'  # a few KiB on the wire
    await ws.send(bomb)
    assert await close_code(ws) == 1009


async def test_slowloris_is_dropped_and_real_clients_get_in(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(GATEWAY_HANDSHAKE_TIMEOUT="1")
    pending = []
    for _ in range(300):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(b"GET /ws HTTP/1.1\r\nHost: localhost\r\n")  # never finished
        pending.append((reader, writer))
    ws, welcome = await connect_authed(ws_url(gateway), await make_session("real"))
    assert welcome["user"] == "real"
    await ws.close()
    try:
        async with asyncio.timeout(10):
            for reader, _ in pending:
                assert await reader.read() == b""  # EOF: the gateway hung up, unanswered
    finally:
        for _, writer in pending:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for _, w in pending), return_exceptions=True)


async def test_session_deleted_while_connected_closes_4001(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    gateway = await gateway_factory(GATEWAY_SESSION_RECHECK_SECONDS="0.2")
    token = await make_session("gone")
    kept = await make_session("kept")
    ws, _ = await connect_authed(ws_url(gateway), token)
    other, _ = await connect_authed(ws_url(gateway), kept)
    await redis.delete(f"session:{token}")
    assert await close_code(ws) == 4001
    assert ws.close_reason == "session expired or deleted"
    assert await request(other, {"type": "ping"}) == {"type": "pong"}
    await other.close()


async def test_connection_churn_leaves_nothing_behind(
    gateway_factory: MakeGateway, make_session: MakeSession, redis: Redis
) -> None:
    gateway = await gateway_factory(
        GATEWAY_MAX_ATTEMPTS_PER_USER="100000", GATEWAY_MAX_CONNECTIONS_PER_USER="100"
    )
    url = ws_url(gateway)
    token = await make_session("churn")
    channels = [f"public:churn-{i}" for i in range(20)]

    async def cycle(i: int) -> None:
        ws, _ = await connect_authed(url, token)
        await request(ws, {"type": "subscribe", "channel": channels[i % len(channels)]})
        await ws.close()

    async def churn(cycles: int) -> None:
        for start in range(0, cycles, 50):
            await asyncio.gather(*(cycle(i) for i in range(start, start + 50)))
        await wait_until(lambda: _no_more_than(gateway, 0))

    await churn(250)  # grows the Redis pool to its bound before the baseline
    fds = len(os.listdir("/proc/self/fd"))
    tasks = len(asyncio.all_tasks())
    await churn(5000)

    async def settled() -> bool:
        counts = await redis.pubsub_numsub(*channels)
        return (
            gateway.stats.sockets == 0
            and all(count == 0 for _, count in counts)
            and len(asyncio.all_tasks()) <= tasks
        )

    await wait_until(settled, timeout_s=15)
    assert gateway.hub.subscription_count == 0
    assert gateway.stats.connections == 0
    assert await redis.zcard("notify-gateway:{u:churn}:conns") == 0
    assert len(os.listdir("/proc/self/fd")) <= fds


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=512), st.text(max_size=512)))
def test_any_frame_gives_a_reply_or_a_close_never_an_exception(data: str | bytes) -> None:
    session = ClientState(Session("1"), ChannelPolicy(["public:*"]), Limits(), 0.0, set())
    action = session.receive(data, 0.0)
    assert action is not None


def test_frames_are_json_error_frames_for_garbage() -> None:
    session = ClientState(Session("1"), ChannelPolicy([]), Limits(), 0.0, set())
    action = session.receive(b"\x00\xff", 0.0)
    frame = orjson.loads(action.frame[2:])  # type: ignore[union-attr]
    assert frame["type"] == "error"


PING = Frame(Opcode.PING, b"").serialize(mask=True)  # 6 bytes: the cheapest frame to send
FRAGMENT = Frame(Opcode.CONT, b"", fin=False).serialize(mask=True)
FLOOD_FRAMES = 300_000  # 1.8 MB of pings: seconds of gateway CPU when nothing stops it


async def _flood_closed_with(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frames: bytes
) -> tuple[int, int]:
    """Send ``frames`` as fast as TCP takes them while reading what comes back; return the
    close code the gateway sent and how many pongs came before it."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/ws"), state=State.OPEN, max_size=None)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(frames)
            await writer.drain()

    sender = asyncio.create_task(send())
    pongs = 0
    try:
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65536)
                assert data, "connection closed without a close frame"
                client.receive_data(data)
                for event in client.events_received():
                    if event.opcode is Opcode.PONG:
                        pongs += 1
                    elif event.opcode is Opcode.CLOSE:
                        assert client.close_rcvd is not None
                        return client.close_rcvd.code, pongs
    finally:
        sender.cancel()
        writer.transport.abort()


@pytest.mark.parametrize(
    ("kind", "authenticated"),
    [("pings", True), ("pings", False), ("fragments", True)],
    ids=["ping-flood", "unauthenticated-ping-flood", "continuation-flood"],
)
async def test_a_frame_flooder_is_closed_4029_and_others_keep_getting_messages(
    gateway_factory: MakeGateway,
    make_session: MakeSession,
    redis: Redis,
    kind: str,
    authenticated: bool,
) -> None:
    """Every frame counts against GATEWAY_FRAME_RATE_LIMIT, control frames and fragments
    too, before login as after; the flooder is failed within about a burst."""
    gateway = await gateway_factory(GATEWAY_FRAME_RATE_BURST="500")
    victim = await connect_subscribed(ws_url(gateway), await make_session("victim"), "public:f")
    headers = f"Authorization: Bearer {await make_session('flooder')}\r\n" if authenticated else ""
    reader, writer = await raw_upgraded(gateway.port, headers)
    if kind == "pings":
        frames = PING * FLOOD_FRAMES
    else:  # a text message that never ends: empty continuation frames
        frames = Frame(Opcode.TEXT, b"{", fin=False).serialize(mask=True)
        frames += FRAGMENT * FLOOD_FRAMES
    flood = asyncio.create_task(_flood_closed_with(reader, writer, frames))
    await redis.publish("public:f", '{"during":"flood"}')
    assert (await recv_json(victim))["data"] == {"during": "flood"}
    code, pongs = await flood
    assert code == 4029
    assert pongs <= 500 + 4096 // 6  # the burst, and at most one read slice beyond it
    await redis.publish("public:f", '{"after":"flood"}')
    assert (await recv_json(victim))["data"] == {"after": "flood"}
    await victim.close()


async def test_frames_within_the_frame_budget_are_served(
    gateway_factory: MakeGateway, make_session: MakeSession
) -> None:
    gateway = await gateway_factory(GATEWAY_FRAME_RATE_BURST="50")
    ws, _ = await connect_authed(ws_url(gateway), await make_session("calm"))
    for _ in range(20):  # a ping and its pong, twice the frames of a message each
        await (await ws.ping())
    assert await request(ws, {"type": "ping", "ref": 1}) == {"type": "pong", "ref": 1}
    await ws.close()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"userId": "u" * 129}, "user_id_too_long"),
        ({"userId": "7", "profile": "x" * 2000}, "session_too_large"),
    ],
)
async def test_oversized_sessions_are_refused_4001_unprocessed(
    gateway_factory: MakeGateway, redis: Redis, fields: dict[str, str], reason: str
) -> None:
    gateway = await gateway_factory(GATEWAY_MAX_SESSION_BYTES="1024")
    token = new_token()
    await redis.set(f"session:{token}", orjson.dumps(fields), ex=60)
    with capture_logs() as logs:
        ws = await connect(ws_url(gateway), additional_headers={"Authorization": f"Bearer {token}"})
        assert await close_code(ws) == 4001
    failed = [e for e in logs if e["event"] == "auth_failed"]
    assert [e["reason"] for e in failed] == [reason]
    assert gateway.stats.auth_failures[reason] == 1  # notify_gateway_auth_failures_total
    assert not any(e["event"] == "connection_opened" for e in logs)


def test_session_limits_are_settings() -> None:
    limits = load_settings(
        {"GATEWAY_MAX_SESSION_BYTES": "2048", "GATEWAY_MAX_USER_ID_LENGTH": "64"}
    ).limits
    assert (limits.max_session_bytes, limits.max_user_id_length) == (2048, 64)
    with pytest.raises(ConfigError, match="GATEWAY_MAX_SESSION_BYTES"):
        load_settings({"GATEWAY_MAX_SESSION_BYTES": "10"})


def test_parse_session_refuses_before_parsing() -> None:
    with pytest.raises(SessionError, match="session_too_large"):
        parse_session(b"[" * 100, max_bytes=99)  # not even JSON: never parsed
    with pytest.raises(SessionError, match="user_id_too_long"):
        parse_session(b'{"userId": 123456}', max_user_id_length=5)
    assert parse_session(b'{"userId": 12345}', max_user_id_length=5).user_id == "12345"
