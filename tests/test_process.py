"""The gateway as operators run it: a process with signals, JSON logs and an embedded Redis."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
from collections.abc import Iterator

import orjson
import pytest
from redis.asyncio import Redis

from gateway.config import connections_for
from tests.conftest import MakeSession
from tests.support.process import GatewayProcess
from tests.support.redis_server import RedisServer, free_port
from tests.support.ws import close_code, connect_authed, http_get, recv_json, request


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.stop()


def spawn(processes: list[GatewayProcess], env: dict[str, str]) -> GatewayProcess:
    process = GatewayProcess(env)
    processes.append(process)
    return process


async def test_sigterm_closes_clients_1001_and_exits_0(
    processes: list[GatewayProcess], redis_server: RedisServer, make_session: MakeSession
) -> None:
    gateway = spawn(processes, {"REDIS_URL": redis_server.url})
    await asyncio.to_thread(gateway.wait_started)
    ws, _ = await connect_authed(gateway.ws_url, await make_session("3"))
    gateway.process.send_signal(signal.SIGTERM)
    assert await close_code(ws) == 1001
    assert await asyncio.to_thread(gateway.wait) == 0
    assert any(r["event"] == "gateway_stopped" for r in gateway.records())


async def test_logs_are_json_lines_without_tokens(
    processes: list[GatewayProcess],
    redis_server: RedisServer,
    make_session: MakeSession,
    redis: Redis,
) -> None:
    gateway = spawn(processes, {"REDIS_URL": redis_server.url, "GATEWAY_LOG_LEVEL": "debug"})
    await asyncio.to_thread(gateway.wait_started)
    token = await make_session("8")
    ws, _ = await connect_authed(gateway.ws_url, token, header=False)
    await request(ws, {"type": "subscribe", "channel": "user:8"})
    await redis.publish("user:8", "x")
    await recv_json(ws)
    await ws.close()
    bad = await connect_authed_failure(gateway.ws_url, "Bearer not-a-real-token-value")
    assert bad == 4001
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gateway.wait) == 0
    records = gateway.records()  # every line parses as JSON
    events = [r["event"] for r in records]
    for expected in ("connection_opened", "subscribed", "connection_closed", "auth_failed"):
        assert expected in events
    for record in records:
        assert {"event", "level", "timestamp"} <= record.keys()
    opened = next(r for r in records if r["event"] == "connection_opened")
    assert opened["user"] == "8"
    assert opened["conn"]
    closed = next(r for r in records if r["event"] == "connection_closed")
    assert closed["code"] == 1000
    assert closed["duration_s"] >= 0
    failed = next(r for r in records if r["event"] == "auth_failed")
    assert failed["reason"] == "unknown_or_expired"
    output = gateway.output() + gateway.stderr()
    assert token not in output
    assert "not-a-real-token-value" not in output


async def connect_authed_failure(url: str, header: str) -> int | None:
    from websockets.asyncio.client import connect

    ws = await connect(url, additional_headers={"Authorization": header})
    return await close_code(ws)


async def test_embedded_redis_starts_and_stops_with_the_gateway(
    processes: list[GatewayProcess],
) -> None:
    # No REDIS_URL/REDIS_HOST, and nothing answers on the local port it probes.
    wanted = free_port()
    gateway = spawn(processes, {"REDIS_PORT": str(wanted)})
    await asyncio.to_thread(gateway.wait_started)
    started = next(r for r in gateway.records() if r["event"] == "embedded_redis_started")
    pid, port = started["pid"], started["port"]
    assert port == wanted  # where the other commands (redis-cli, session create) look
    os.kill(pid, 0)  # alive
    client = Redis(host="127.0.0.1", port=port)
    assert await client.ping()
    await client.aclose()
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gateway.wait) == 0
    assert any(r["event"] == "embedded_redis_stopped" for r in gateway.records())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_without_redis_or_binary_the_message_says_how_to_get_one(
    processes: list[GatewayProcess],
) -> None:
    gateway = spawn(processes, {"REDIS_PORT": str(free_port()), "PATH": "/nonexistent"})
    assert await asyncio.to_thread(gateway.wait) == 1
    message = gateway.stderr()
    assert "redis-server" in message
    assert "REDIS_URL" in message
    assert "Traceback" not in message


async def test_configuration_errors_exit_2_with_the_variable_named(
    processes: list[GatewayProcess],
) -> None:
    gateway = spawn(processes, {"GATEWAY_PORT": "http"})
    assert await asyncio.to_thread(gateway.wait) == 2
    message = gateway.stderr()
    assert "GATEWAY_PORT" in message
    assert "Traceback" not in message
    assert orjson.dumps(message)  # a single readable line
    assert message.count("\n") == 1


async def test_second_signal_exits_at_once(
    processes: list[GatewayProcess], redis_server: RedisServer, make_session: MakeSession
) -> None:
    gateway = spawn(processes, {"REDIS_URL": redis_server.url, "GATEWAY_SHUTDOWN_TIMEOUT": "30"})
    await asyncio.to_thread(gateway.wait_started)
    ws, _ = await connect_authed(gateway.ws_url, await make_session("stuck"))
    ws.transport.pause_reading()  # never answers the close handshake: the drain would wait
    gateway.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(gateway.wait_event, "shutdown_requested")
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gateway.wait, 3) == 1
    ws.transport.abort()


@pytest.mark.parametrize(("cap", "warned"), [("100", False), ("10000000", True)])
async def test_an_explicit_connection_cap_is_checked_against_the_file_limit(
    processes: list[GatewayProcess], redis_server: RedisServer, cap: str, warned: bool
) -> None:
    gateway = spawn(processes, {"REDIS_URL": redis_server.url, "GATEWAY_MAX_CONNECTIONS": cap})
    await asyncio.to_thread(gateway.wait_started)
    events = {r["event"] for r in gateway.records()}
    assert ("fd_limit_low" in events) is warned


async def test_the_default_connection_cap_follows_the_file_limit(
    processes: list[GatewayProcess], redis_server: RedisServer
) -> None:
    gateway = spawn(processes, {"REDIS_URL": redis_server.url})
    port = await asyncio.to_thread(gateway.wait_started)
    _, body = await http_get(f"http://127.0.0.1:{port}/status")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the child raises its soft limit to it
    assert orjson.loads(body)["limits"]["max_connections"] == connections_for(hard)
    assert "fd_limit_low" not in {r["event"] for r in gateway.records()}


async def test_start_greets_with_where_it_listens(
    processes: list[GatewayProcess], redis_server: RedisServer
) -> None:
    gateway = spawn(processes, {"REDIS_URL": redis_server.url})
    port = await asyncio.to_thread(gateway.wait_started)
    assert gateway.process.stderr is not None
    # Printed once Redis has accepted the configuration (the ACL check), not before.
    greeting = await asyncio.wait_for(asyncio.to_thread(gateway.process.stderr.readline), 15)
    gateway.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gateway.wait) == 0
    assert greeting.decode() == (
        f"notify-gateway: listening on ws://127.0.0.1:{port}/ws; demo page "
        f"http://127.0.0.1:{port}/ (Ctrl-C stops)\n"
    )
    assert gateway.stderr() == ""  # nothing else


async def test_a_port_in_use_is_reported_before_redis_is_touched(
    processes: list[GatewayProcess],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No Redis configured: a gateway that looked for one first would start an embedded one.
        gateway = spawn(processes, {"GATEWAY_PORT": str(port), "REDIS_PORT": str(free_port())})
        assert await asyncio.to_thread(gateway.wait) == 1
    message = gateway.stderr()
    assert f"cannot listen on 127.0.0.1:{port}" in message
    assert "stop it, or pass --port (GATEWAY_PORT)" in message
    assert message.count("\n") == 1
    assert "embedded_redis_started" not in gateway.output()


async def test_unknown_variables_and_public_private_channels_are_warned(
    processes: list[GatewayProcess], redis_server: RedisServer
) -> None:
    gateway = spawn(
        processes,
        {
            "REDIS_URL": redis_server.url,
            "GATEWAY_MAX_CONNECTION": "10",
            "GATEWAY_PUBLIC_CHANNELS": "notifications,user:*",
        },
    )
    await asyncio.to_thread(gateway.wait_started)
    warnings = {r["variable"]: r for r in gateway.records() if r["event"] == "config_warning"}
    assert warnings.keys() == {"GATEWAY_MAX_CONNECTION", "GATEWAY_PUBLIC_CHANNELS"}
    assert "did you mean GATEWAY_MAX_CONNECTIONS?" in warnings["GATEWAY_MAX_CONNECTION"]["hint"]
    assert warnings["GATEWAY_PUBLIC_CHANNELS"]["problem"] == "private_channels_public"
    assert all(r["level"] == "warning" for r in warnings.values())


async def test_embedded_redis_elsewhere_says_what_to_export(
    processes: list[GatewayProcess],
) -> None:
    with socket.socket() as taken:  # something that is not Redis holds REDIS_PORT
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        wanted = taken.getsockname()[1]
        gateway = spawn(processes, {"REDIS_PORT": str(wanted)})
        await asyncio.to_thread(gateway.wait_started)
        started = next(r for r in gateway.records() if r["event"] == "embedded_redis_started")
        assert started["port"] != wanted
        client = Redis.from_url(started["url"])
        assert await client.ping()
        await client.aclose()
        gateway.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(gateway.wait) == 0
    assert f"in other terminals, export REDIS_URL=redis://127.0.0.1:{started['port']}/0" in (
        gateway.stderr()
    )
