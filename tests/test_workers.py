"""``serve --workers 2``: one port, two worker processes, a supervisor that restarts and drains."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from gateway.cli.main import main
from gateway.config import load_settings
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.control import revoke_message
from notify_wire.env import ConfigError
from notify_wire.sessions import session_digest
from tests.conftest import MakeSession
from tests.support.process import GatewayProcess
from tests.support.redis_server import RedisServer, free_port
from tests.support.ws import close_code, connect_authed, http_get, recv_json, request, wait_until

Record = dict[str, Any]


async def logged(
    process: GatewayProcess, match: Callable[[Record], bool], count: int = 1
) -> list[Record]:
    """Wait until ``count`` log records of ``process`` (supervisor and workers) match."""

    def found() -> list[Record]:
        return [r for r in process.records() if match(r)]

    async def enough() -> bool:
        return len(found()) >= count

    await wait_until(enough, timeout_s=20)
    return found()


def event(name: str, **fields: object) -> Callable[[Record], bool]:
    return lambda r: r.get("event") == name and all(r.get(k) == v for k, v in fields.items())


async def start_workers(process: GatewayProcess, workers: int = 2) -> str:
    """Wait for every worker to listen and subscribe; return the shared WebSocket URL."""
    await logged(process, event("gateway_started"), workers)
    await logged(process, event("redis_connected"), workers)
    (started,) = await logged(process, event("supervisor_started"))
    process.port = started["port"]
    return process.ws_url


async def on_each_worker(
    process: GatewayProcess, token: str, workers: int = 2
) -> dict[int, ClientConnection]:
    """Connect with ``token`` until a socket sits on every worker; extra sockets are closed.

    Which worker accepts a connection is the kernel's choice (SO_REUSEPORT hashes the
    address pair), so a few attempts land on both.
    """
    placed: dict[int, ClientConnection] = {}
    for _ in range(40):
        ws, welcome = await connect_authed(process.ws_url, token)
        conn = welcome["conn"]
        (opened,) = await logged(process, event("connection_opened", conn=conn))
        if opened["worker"] in placed:
            await ws.close()  # frees this user's connection slot before the next try
            await logged(process, event("connection_closed", conn=conn))
        else:
            placed[opened["worker"]] = ws
        if len(placed) == workers:
            return placed
    raise AssertionError(f"40 connections never reached {workers} workers")


@pytest.fixture
def supervisor(redis_server: RedisServer) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def spawn(workers: str = "2", **env: str) -> GatewayProcess:
        process = GatewayProcess(
            {"REDIS_URL": redis_server.url, **env}, args=("serve", "--workers", workers)
        )
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.stop()


async def numsub(redis: Redis, channel: str) -> int:
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_two_workers_share_the_port_deliver_and_drain_on_sigterm(
    supervisor: Callable[..., GatewayProcess], make_session: MakeSession, redis: Redis
) -> None:
    process = supervisor()
    await start_workers(process)
    # Whichever worker the kernel picks answers the probes for itself.
    base = f"http://127.0.0.1:{process.port}"
    for _ in range(4):
        assert await http_get(f"{base}/readyz") == (200, "ready\n")
    clients = await on_each_worker(process, await make_session("w1"))
    for ws in clients.values():
        assert (await request(ws, {"type": "subscribe", "channel": "public:workers"}))[
            "type"
        ] == "subscribed"
    # One Redis subscriber per worker; one publish reaches the clients on both.
    assert await redis.publish("public:workers", '"hello"') == 2
    for ws in clients.values():
        assert await recv_json(ws) == {
            "type": "message",
            "channel": "public:workers",
            "data": "hello",
        }
    process.process.send_signal(signal.SIGTERM)
    for ws in clients.values():
        assert await close_code(ws) == 1001
    assert await asyncio.to_thread(process.wait) == 0
    assert len([r for r in process.records() if r["event"] == "gateway_stopped"]) == 2
    assert any(r["event"] == "supervisor_stopped" for r in process.records())


async def test_a_killed_worker_is_restarted_and_the_other_keeps_serving(
    supervisor: Callable[..., GatewayProcess], make_session: MakeSession, redis: Redis
) -> None:
    process = supervisor()
    await start_workers(process)
    clients = await on_each_worker(process, await make_session("w2"))
    for ws in clients.values():
        await request(ws, {"type": "subscribe", "channel": "public:restart"})
    (victim,) = await logged(process, event("worker_started", worker=0))
    os.kill(victim["pid"], signal.SIGKILL)
    assert await close_code(clients[0]) == 1006  # abrupt: no close frame from a killed process
    (exited,) = await logged(process, event("worker_exited", pid=victim["pid"]))
    assert exited["signal"] == "SIGKILL"
    (restarted,) = await logged(process, event("worker_restarted", previous=victim["pid"]))
    assert restarted["pid"] != victim["pid"]
    await logged(process, event("gateway_started", worker=0), 2)
    # The survivor never stopped delivering.
    await redis.publish("public:restart", '"during"')
    assert (await recv_json(clients[1]))["data"] == "during"
    again = await on_each_worker(process, await make_session("w2b"))
    await request(again[0], {"type": "subscribe", "channel": "public:restart"})
    await wait_until(lambda: _equals(numsub(redis, "public:restart"), 2))
    await redis.publish("public:restart", '"after"')
    assert (await recv_json(again[0]))["data"] == "after"
    assert (await recv_json(clients[1]))["data"] == "after"
    for ws in (clients[1], *again.values()):
        await ws.close()


async def _equals(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def test_a_worker_dying_at_every_start_makes_the_supervisor_give_up(
    supervisor: Callable[..., GatewayProcess],
) -> None:
    process = supervisor(GATEWAY_SHUTDOWN_TIMEOUT="2")
    pid = (await logged(process, event("worker_started", worker=0)))[0]["pid"]
    for attempt in range(1, 6):
        os.kill(pid, signal.SIGKILL)
        if attempt < 5:  # the fifth death within seconds of starting ends the restarts
            restarted = await logged(process, event("worker_restarted", previous=pid))
            pid = restarted[0]["pid"]
    assert await asyncio.to_thread(process.wait, 20) == 1
    assert "worker 0 died 5 times" in process.stderr()
    assert "giving up" in process.stderr()


async def test_user_limits_and_revocation_hold_across_workers(
    supervisor: Callable[..., GatewayProcess], make_session: MakeSession, redis: Redis
) -> None:
    process = supervisor(GATEWAY_MAX_CONNECTIONS_PER_USER="2")
    await start_workers(process)
    token = await make_session("w3")
    clients = await on_each_worker(process, token)
    # Two connections, one on each worker: the third is refused whichever worker takes it.
    over = await connect(process.ws_url, additional_headers={"Authorization": f"Bearer {token}"})
    assert await close_code(over) == 4029
    assert await redis.publish(CONTROL_CHANNEL, revoke_message(session_digest(token))) == 2
    for ws in clients.values():
        assert await close_code(ws) == 4001


def test_worker_count_from_environment_and_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_settings({}).workers == 1
    assert load_settings({"GATEWAY_WORKERS": "3"}).workers == 3
    assert load_settings({"GATEWAY_WORKERS": "auto"}).workers == len(os.sched_getaffinity(0))
    for bad in ("0", "many", "100000"):
        with pytest.raises(ConfigError, match=r"GATEWAY_WORKERS.*auto"):
            load_settings({"GATEWAY_WORKERS": bad})
    assert main(["serve", "--workers", "zero"], env={}) == 2
    assert "--workers='zero' is not valid: use auto" in capsys.readouterr().err


async def test_a_port_in_use_is_one_line_and_status_1(
    supervisor: Callable[..., GatewayProcess],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = supervisor(GATEWAY_PORT=str(taken.getsockname()[1]))
        assert await asyncio.to_thread(process.wait) == 1
    assert process.stderr().startswith("notify-gateway: cannot listen on 127.0.0.1:")
    assert "Traceback" not in process.stderr()


async def test_one_embedded_redis_serves_every_worker(
    supervisor: Callable[..., GatewayProcess],
) -> None:
    # No REDIS_URL and nothing on REDIS_PORT: the supervisor starts one redis-server.
    process = supervisor(REDIS_URL="", REDIS_PORT=str(free_port()))
    await start_workers(process)
    (embedded,) = await logged(process, event("embedded_redis_started"))
    connected = await logged(process, event("redis_connected"), 2)
    assert {r["redis"] for r in connected} == {f"127.0.0.1:{embedded['port']}"}
    process.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait) == 0
    assert [r["event"] for r in process.records()].count("embedded_redis_started") == 1
    assert any(r["event"] == "embedded_redis_stopped" for r in process.records())


async def test_a_second_signal_kills_workers_that_do_not_drain(
    supervisor: Callable[..., GatewayProcess],
) -> None:
    process = supervisor()
    await start_workers(process)
    (stuck,) = await logged(process, event("worker_started", worker=1))
    os.kill(stuck["pid"], signal.SIGSTOP)  # cannot drain: the supervisor must not wait forever
    process.process.send_signal(signal.SIGTERM)
    await logged(process, event("gateway_stopped", worker=0))
    process.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait) == 1
    assert any(r["event"] == "second_signal_exit" for r in process.records())
