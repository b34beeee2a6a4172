"""``notify-gateway publish | session | listen`` as users run them: real processes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from gateway.server import Gateway
from notify_publisher import AsyncPublisher
from tests.conftest import MakeGateway, MakeSession, ws_url
from tests.support.process import ROOT
from tests.support.redis_server import RedisServer, free_port
from tests.support.tokens import issued
from tests.support.ws import close_code, connect_authed, connect_subscribed, recv_json, request

TIMEOUT_S = 15.0


def cli_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GATEWAY_"))}
    return {**env, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, **extra}


async def cli(env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run ``python -m gateway ARGS`` to completion without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args,
        cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT_S):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def one_line_error(err: str) -> str:
    assert err.count("\n") == 1, err
    assert err.startswith("notify-gateway: ")
    assert "Traceback" not in err
    return err


@pytest.fixture
def env(redis_server: RedisServer) -> dict[str, str]:
    return cli_env(redis_server.url)


@pytest.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[AsyncPublisher]:
    async with AsyncPublisher.from_url(redis_server.url) as publisher:
        yield publisher


async def test_publish_prints_the_receiver_count_and_delivers(
    gateway_factory: MakeGateway, make_session: MakeSession, env: dict[str, str]
) -> None:
    url = ws_url(await gateway_factory())
    async with await connect_subscribed(url, await make_session("12"), "user:12") as ws:
        assert await cli(env, "publish", "user:12", '{"type": "ping", "n": [1, 2]}') == (
            0,
            "1\n",
            "",
        )
        assert await recv_json(ws) == {
            "type": "message",
            "channel": "user:12",
            "data": {"type": "ping", "n": [1, 2]},
        }
        assert await cli(env, "publish", "user:nobody", '"x"') == (0, "0\n", "")


async def test_publish_from_stdin_stops_at_the_first_bad_line(
    gateway_factory: MakeGateway, make_session: MakeSession, env: dict[str, str]
) -> None:
    url = ws_url(await gateway_factory())
    async with await connect_subscribed(url, await make_session("13"), "user:13") as ws:
        lines = b'{"n": 1}\n\n"two"\n{"n": oops}\n{"n": 5}\n'
        code, out, err = await cli(env, "publish", "user:13", "-", stdin=lines)
        assert code == 2
        assert out == "1\n1\n"  # one count per message published; the blank line skipped
        assert "line 4 is not valid JSON" in one_line_error(err)
        assert (await recv_json(ws))["data"] == {"n": 1}
        assert (await recv_json(ws))["data"] == "two"
        await cli(env, "publish", "user:13", '"sentinel"')
        assert (await recv_json(ws))["data"] == "sentinel"  # nothing after line 4 was sent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("publish", "user:*", "1"), "CHANNEL: channel must be an exact name"),
        (("publish", "", "1"), "CHANNEL: channel must not be empty"),
        (("publish", "c", "hello"), "DATA is not valid JSON"),
        (("publish", "c", '"' + "x" * 100 + '"'), "DATA: payload for 'c' is 102 bytes"),
        (("session", "create", "1", "--ttl", "0"), "ttl must be a positive whole number"),
        (("session", "revoke", "bad token"), "token is not a session token"),
        (("session", "create", ""), "USER_ID is empty: give the id your backend knows"),
    ],
)
async def test_bad_input_is_one_line_and_status_2(
    redis_server: RedisServer, args: tuple[str, ...], message: str
) -> None:
    env = cli_env(redis_server.url, GATEWAY_MAX_MESSAGE_BYTES="100")
    code, out, err = await cli(env, *args)
    assert (code, out) == (2, "")
    assert message in one_line_error(err)


async def test_session_create_prints_a_token_the_gateway_accepts(
    gateway_factory: MakeGateway, env: dict[str, str], redis: Redis
) -> None:
    gateway = await gateway_factory()
    args = ("session", "create", "77", "--ttl", "300", "--channel", "team:*", "--channel", "ops")
    code, out, err = await cli(env, *args)
    assert (code, err) == (0, "")
    token = issued(out.splitlines()[-1])
    stored = await redis.get(f"session:{token}")
    assert stored is not None
    assert orjson.loads(stored) == {"userId": "77", "channels": ["team:*", "ops"]}
    assert 295 <= await redis.ttl(f"session:{token}") <= 300
    ws, welcome = await connect_authed(ws_url(gateway), token)
    async with ws:
        assert welcome["user"] == "77"
        assert (await request(ws, {"type": "subscribe", "channel": "team:1"}))["type"] == (
            "subscribed"
        )


async def test_session_revoke_closes_the_socket_and_says_whether_it_existed(
    gateway_factory: MakeGateway, publisher: AsyncPublisher, env: dict[str, str], redis: Redis
) -> None:
    gateway = await gateway_factory()
    token = issued(await publisher.create_session("21"))
    ws, _ = await connect_authed(ws_url(gateway), token)
    code, out, _ = await cli(env, "session", "revoke", "-", stdin=token.encode() + b"\n")
    assert code == 0
    assert out.startswith("revoked: session deleted")
    assert await close_code(ws) == 4001  # promptness (< 1 s): test_clients.py
    assert await publisher.get_session(token) is None
    code, out, _ = await cli(env, "session", "revoke", token)
    assert code == 0
    assert out.startswith("revoked: no stored session")
    # Tokens issued by other backends may start with "-": "--" ends the options.
    await redis.set("session:-from-elsewhere", b'{"userId": "21"}')
    code, out, _ = await cli(env, "session", "revoke", "--", "-from-elsewhere")
    assert (code, out) == (0, "revoked: session deleted; gateways close its sockets (4001)\n")


async def test_listen_prints_messages_then_exits_on_revocation(
    gateway_factory: MakeGateway, publisher: AsyncPublisher, env: dict[str, str]
) -> None:
    gateway = await gateway_factory()
    token = issued(await publisher.create_session("31", channels=["team:9"]))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "listen", "user:31", "team:9",
        "--token", "-", "--url", ws_url(gateway),
        cwd=ROOT, env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdin.write(token.encode() + b"\n")
    await process.stdin.drain()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            ready = await process.stderr.readline()
            assert ready == b"notify-gateway: listening to user:31, team:9 as user 31\n"
            assert await publisher.publish("team:9", {"deploy": "done"}) == 1
            # Raw newlines in a published payload must not split the output line.
            assert await publisher.publish("user:31", b'{"multi":\n "line"}') == 1
            first = orjson.loads(await process.stdout.readline())
            second = await process.stdout.readline()
            assert await publisher.revoke_session(token) is True
            assert await process.wait() == 1
            err = (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert first == {"type": "message", "channel": "team:9", "data": {"deploy": "done"}}
    assert second.count(b"\n") == 1
    assert orjson.loads(second)["data"] == {"multi": "line"}
    assert "closed with 4001" in one_line_error(err)
    assert "session unknown, expired or revoked" in err
    assert await process.stdout.read() == b""


async def test_listen_failures_are_one_line(
    gateway_factory: MakeGateway, publisher: AsyncPublisher, env: dict[str, str]
) -> None:
    gateway = await gateway_factory()
    url = ws_url(gateway)
    token = issued(await publisher.create_session("41"))
    cases = [
        (("x", "--token", "never-issued-token", "--url", url), 1, "closed with 4001"),
        (("user:42", "--token", token, "--url", url), 1, "cannot subscribe to 'user:42'"),
        (("x", "--token", token, "--url", url.replace("/ws", "/nope")), 1, "HTTP 404"),
        (("x", "--token", token, "--url", f"ws://127.0.0.1:{free_port()}/ws"), 1, "gateway runn"),
        (("x", "--token", token, "--url", "http://127.0.0.1/ws"), 2, "not a ws:// or wss://"),
    ]
    for args, status, message in cases:
        code, out, err = await cli(env, "listen", *args)
        assert (code, out) == (status, ""), err
        assert message in one_line_error(err)


async def test_redis_unreachable_names_the_address(env: dict[str, str]) -> None:
    port = free_port()
    down = {**env, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "REDIS_MAX_RETRIES": "1"}
    for args in (("publish", "c", "1"), ("session", "create", "1")):
        code, out, err = await cli(down, *args)
        assert (code, out) == (1, "")
        assert f"Redis at 127.0.0.1:{port}" in one_line_error(err)
        assert err.endswith("is Redis running?\n")
    code, _, err = await cli({**env, "REDIS_URL": "http://nowhere"}, "publish", "c", "1")
    assert code == 2
    assert "configuration error: REDIS_URL" in one_line_error(err)


async def test_publish_with_history_flag_numbers_the_message(
    env: dict[str, str], gateway: Gateway, make_session: MakeSession
) -> None:
    ws = await connect_subscribed(ws_url(gateway), await make_session("h"), "public:cli-history")
    code, out, err = await cli(env, "publish", "--history", "public:cli-history", '{"a":1}')
    assert (code, out.strip(), err) == (0, "1", "")
    frame = await recv_json(ws)
    assert (frame["data"], frame["offset"]) == ({"a": 1}, 1)
    await ws.close()


async def test_session_create_of_an_empty_user_names_the_argument_not_python_types(
    env: dict[str, str],
) -> None:
    code, out, err = await cli(env, "session", "create", "")
    assert (code, out) == (2, "")
    assert "str" not in err
    assert "int" not in err


async def test_listen_finds_the_gateway_from_gateway_port(
    gateway: Gateway, env: dict[str, str]
) -> None:
    # A wrong token, so the answer (4001) proves the gateway on GATEWAY_PORT was reached.
    listen_env = {**env, "GATEWAY_PORT": str(gateway.port)}
    code, _, err = await cli(listen_env, "listen", "x", "--token", "never-issued-token")
    assert code == 1
    assert "closed with 4001" in one_line_error(err)


@pytest.mark.parametrize("command", ["publish", "session", "listen"])
async def test_help_says_where_redis_or_the_gateway_is_found(
    env: dict[str, str], command: str
) -> None:
    code, out, _ = await cli(env, command, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "REDIS_URL" in text
    if command == "listen":
        assert "GATEWAY_PORT" in text


async def test_unknown_variables_are_warned_on_stderr(env: dict[str, str]) -> None:
    code, out, err = await cli({**env, "REDIS_UR": "x"}, "publish", "public:w", "1")
    assert (code, out.strip()) == (0, "0")
    assert err == (
        "notify-gateway: warning: REDIS_UR is not a notify-gateway setting and is ignored: "
        "did you mean REDIS_URL?\n"
    )
