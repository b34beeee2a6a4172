"""Connecting to every kind of Redis: passwords, ACL users, TLS, databases, failures.

Each test starts redis-server with the configuration it needs; failures are checked
through both connection paths (the gateway's own pub/sub connection and redis-py,
used for sessions) and must give the same one-line diagnosis.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import orjson
import pytest
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError

from gateway.broker.diagnose import Diagnosis, RedisReplyError, diagnose
from gateway.broker.subscriber import Subscriber
from gateway.config import load_settings
from gateway.core.hub import Hub
from gateway.server import Gateway
from notify_publisher.connect import async_redis, redis_kwargs
from notify_wire.channels import CONTROL_CHANNEL
from notify_wire.env import ConfigError
from notify_wire.redis_config import RedisConfig, load_redis_config
from tests.support.acl import documented_acl_users
from tests.support.history import publish_with_history
from tests.support.process import GatewayProcess
from tests.support.redis_server import RedisServer, free_port
from tests.support.tls import Certs, TlsRedisServer, make_certs
from tests.support.tokens import new_token
from tests.support.ws import close_code, connect_authed, http_get, recv_json, request

RedisFactory = Callable[[Sequence[str]], RedisServer]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tls_factory(certs: Certs) -> Iterator[Callable[..., TlsRedisServer]]:
    servers: list[TlsRedisServer] = []

    def make(*, client_certs: bool = False) -> TlsRedisServer:
        server = TlsRedisServer(certs, client_certs=client_certs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.cleanup()


@contextlib.asynccontextmanager
async def running(env: Mapping[str, str]) -> AsyncIterator[Gateway]:
    """An in-process gateway configured by ``env`` alone, ready (Redis connected)."""
    gateway = Gateway(load_settings({"GATEWAY_PORT": "0", **env}))
    await gateway.start()
    try:
        async with asyncio.timeout(10):
            await gateway.subscriber.wait_ready()
        yield gateway
    finally:
        await gateway.stop()


async def delivers(gateway: Gateway, backend: Redis) -> None:
    """A backend stores a session and publishes; the user's WebSocket receives it."""
    user = secrets.token_hex(4)
    token = new_token()
    await backend.set(f"session:{token}", orjson.dumps({"userId": user}), ex=60)
    ws, _ = await connect_authed(f"ws://127.0.0.1:{gateway.port}/ws", token)
    async with ws:
        reply = await request(ws, {"type": "subscribe", "channel": f"user:{user}", "ref": 1})
        assert reply["type"] == "subscribed", reply
        assert await backend.publish(f"user:{user}", b'{"n":1}') == 1
        assert (await recv_json(ws))["data"] == {"n": 1}


async def replays_history(gateway: Gateway, backend: Redis) -> None:
    """A backend publishes with history; a client resuming from offset 1 gets message 2."""
    user, token = secrets.token_hex(4), new_token()
    await backend.set(f"session:{token}", orjson.dumps({"userId": user}), ex=60)
    _, _, epoch = await publish_with_history(backend, f"user:{user}", b"1")
    await publish_with_history(backend, f"user:{user}", b"2")
    ws, _ = await connect_authed(f"ws://127.0.0.1:{gateway.port}/ws", token)
    async with ws:
        since = {"offset": 1, "epoch": epoch}
        reply = await request(ws, {"type": "subscribe", "channel": f"user:{user}", "since": since})
        assert (reply["type"], reply["recovered"], reply["offset"]) == ("subscribed", True, 2)
        assert (await recv_json(ws))["data"] == 2


async def connect_once(config: RedisConfig) -> None:
    protocol = await Subscriber(config, Hub()).connect()
    protocol.close()


async def failure(env: Mapping[str, str], *, redis_py: bool = True) -> Diagnosis:
    """Connect both ways with ``env``; both must fail with the same diagnosis."""
    config = load_redis_config({"REDIS_MAX_RETRIES": "0", **env})
    with pytest.raises((OSError, TimeoutError, RedisReplyError)) as sub:
        await connect_once(config)
    found = diagnose(sub.value, config)
    if not redis_py:
        return found
    client = async_redis(config)
    try:
        with pytest.raises(RedisError) as py:
            await client.get("session:x")
    finally:
        await client.aclose()
    assert diagnose(py.value, config).cause == found.cause, (py.value, sub.value)
    return found


# -- passwords ------------------------------------------------------------------


async def test_requirepass_via_url(redis_factory: RedisFactory) -> None:
    server = redis_factory(["--requirepass", "s3cret:@/pw"])
    url = f"redis://:s3cret%3A%40%2Fpw@127.0.0.1:{server.port}/0"
    backend = Redis.from_url(url)
    async with running({"REDIS_URL": url}) as gateway:
        await delivers(gateway, backend)
    await backend.aclose()


async def test_requirepass_via_split_variables(redis_factory: RedisFactory) -> None:
    server = redis_factory(["--requirepass", "s3cret:@/pw"])
    backend = Redis(host="127.0.0.1", port=server.port, password="s3cret:@/pw")
    env = {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(server.port),
        "REDIS_PASSWORD": "s3cret:@/pw",
    }
    async with running(env) as gateway:
        await delivers(gateway, backend)
    await backend.aclose()


async def test_missing_and_wrong_passwords_are_told_apart(redis_factory: RedisFactory) -> None:
    server = redis_factory(["--requirepass", "right-one"])
    missing = await failure({"REDIS_URL": f"redis://127.0.0.1:{server.port}"})
    assert missing.cause == "password_required"
    wrong = await failure({"REDIS_URL": f"redis://:wrong-one@127.0.0.1:{server.port}"})
    assert wrong.cause == "wrong_password"
    assert "WRONGPASS" in wrong.message
    assert "wrong-one" not in wrong.message


async def test_wrong_password_stops_serve_at_once_without_revealing_it(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory(["--requirepass", "right-one"])
    process = GatewayProcess({"REDIS_URL": f"redis://:wrong-one@127.0.0.1:{server.port}/0"})
    try:
        assert await asyncio.to_thread(process.wait) == 2
        stderr = process.stderr()
        output = process.output()
    finally:
        process.stop()
    assert stderr.count("\n") == 1
    assert "WRONGPASS" in stderr
    assert "REDIS_PASSWORD" in stderr
    assert "Traceback" not in stderr
    assert "wrong-one" not in stderr + output
    failed = [r for r in process.records() if r["event"] == "redis_setup_failed"]
    assert failed[0]["cause"] == "wrong_password"


# -- ACL users --------------------------------------------------------------------


async def test_documented_acl_users_work_and_the_gateway_user_cannot_write(
    redis_factory: RedisFactory,
) -> None:
    users = documented_acl_users()
    server = redis_factory([*users["notify-gateway"], *users["app-publisher"]])
    base = f"127.0.0.1:{server.port}"
    gateway_url = f"redis://notify-gateway:change-me-gateway@{base}/0"
    publisher = Redis.from_url(f"redis://app-publisher:change-me-publisher@{base}/0")
    gateway_user = Redis.from_url(gateway_url)
    try:
        async with running({"REDIS_URL": gateway_url}) as gateway:
            await delivers(gateway, publisher)
            await replays_history(gateway, publisher)
        assert await publisher.expire("session:gone", 10) is False
        async with publisher.pipeline(transaction=True) as pipe:  # delete and revoke at once
            pipe.delete("session:gone")
            pipe.publish(CONTROL_CHANNEL, b"{}")
            assert await pipe.execute() == [0, 0]
        with pytest.raises(NoPermissionError, match="'publish' command"):
            await gateway_user.publish("notifications", "forged")
        with pytest.raises(NoPermissionError, match="'set' command"):
            await gateway_user.set("session:forged", '{"userId":"1"}')
    finally:
        await publisher.aclose()
        await gateway_user.aclose()


@pytest.mark.parametrize(
    ("drop", "doing", "refusal"),
    [
        ("+ping", "PING", "'ping' command"),
        ("+get", "GET session:notify-gateway-check", "'get' command"),
        ("+zadd", "admission scripts", "can't run this command"),
        ("&__notify_gateway__:control", "SUBSCRIBE __notify_gateway__:control", "channels"),
        ("+client|setname", "", "'client|setname' command"),
    ],
    ids=[
        "no-ping",
        "no-session-read",
        "no-zadd-in-script",
        "no-control-channel",
        "no-client-setname",
    ],
)
async def test_an_acl_missing_a_permission_fails_at_start_naming_it(
    redis_factory: RedisFactory, drop: str, doing: str, refusal: str
) -> None:
    args = documented_acl_users()["notify-gateway"]
    server = redis_factory([a for a in args if a != drop])
    url = f"redis://notify-gateway:change-me-gateway@127.0.0.1:{server.port}/0"
    gateway = Gateway(load_settings({"REDIS_URL": url, "GATEWAY_PORT": "0"}))
    await gateway.start()
    try:
        async with asyncio.timeout(10):
            error = await gateway.setup_failed
    finally:
        await gateway.stop()
    found = error.diagnosis
    assert (found.cause, found.fatal) == ("acl_denied", True)
    assert doing in found.message
    assert refusal in found.message
    assert "docs/redis.md" in found.message


# -- TLS ------------------------------------------------------------------------


def tls_env(server: TlsRedisServer, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": f"rediss://127.0.0.1:{server.port}/0", **extra}


def tls_client(server: TlsRedisServer, certs: Certs) -> Redis:
    config = load_redis_config(
        tls_env(server, REDIS_TLS_CA_PATH=str(certs.ca), REDIS_TLS_CERT_PATH=str(certs.client))
    )
    return Redis(**redis_kwargs(config))


async def test_tls_with_a_private_ca(
    tls_factory: Callable[..., TlsRedisServer], certs: Certs
) -> None:
    server = tls_factory()
    backend = tls_client(server, certs)
    async with running(tls_env(server, REDIS_TLS_CA_PATH=str(certs.ca))) as gateway:
        await delivers(gateway, backend)
    await backend.aclose()


async def test_tls_with_a_wrong_ca_is_refused_naming_the_verification_failure(
    tls_factory: Callable[..., TlsRedisServer], certs: Certs
) -> None:
    server = tls_factory()
    found = await failure(tls_env(server, REDIS_TLS_CA_PATH=str(certs.other_ca)))
    assert (found.cause, found.fatal) == ("tls_untrusted", True)
    assert "self-signed certificate in certificate chain" in found.message
    assert str(certs.other_ca) in found.message


async def test_tls_verification_off_works_with_a_loud_warning(
    tls_factory: Callable[..., TlsRedisServer], certs: Certs
) -> None:
    server = tls_factory()
    backend = tls_client(server, certs)
    env = tls_env(server, REDIS_TLS_REJECT_UNAUTHORIZED="false")
    with structlog.testing.capture_logs() as logs:
        async with running(env) as gateway:
            await delivers(gateway, backend)
    await backend.aclose()
    warning = next(e for e in logs if e["event"] == "redis_tls_unverified")
    assert warning["log_level"] == "warning"
    assert "REDIS_TLS_REJECT_UNAUTHORIZED=false" in warning["risk"]


async def test_client_certificates_required(
    tls_factory: Callable[..., TlsRedisServer], certs: Certs
) -> None:
    server = tls_factory(client_certs=True)
    ca = str(certs.ca)
    found = await failure(tls_env(server, REDIS_TLS_CA_PATH=ca))
    assert (found.cause, found.fatal) == ("tls_client_cert_required", True)
    assert "REDIS_TLS_CERT_PATH" in found.message
    backend = tls_client(server, certs)
    env = tls_env(server, REDIS_TLS_CA_PATH=ca, REDIS_TLS_CERT_PATH=str(certs.client))
    async with running(env) as gateway:
        await delivers(gateway, backend)
    await backend.aclose()


async def test_tls_and_plaintext_port_mix_ups(
    tls_factory: Callable[..., TlsRedisServer], redis_server: RedisServer, certs: Certs
) -> None:
    server = tls_factory()
    plain_to_tls = await failure({"REDIS_URL": f"redis://127.0.0.1:{server.port}"})
    assert plain_to_tls.cause == "connection_closed"
    assert "rediss://" in plain_to_tls.message
    tls_to_plain = await failure(
        {
            "REDIS_URL": f"rediss://127.0.0.1:{redis_server.port}",
            "REDIS_TLS_CA_PATH": str(certs.ca),
            "REDIS_CONNECT_TIMEOUT": "300",
        }
    )
    assert tls_to_plain.cause == "timeout"
    assert "is it the TLS port?" in tls_to_plain.message


# -- databases ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["url", "split"])
async def test_sessions_in_another_database(redis_server: RedisServer, how: str) -> None:
    env = (
        {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/3"}
        if how == "url"
        else {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port), "REDIS_DB": "3"}
    )
    db3 = Redis(host="127.0.0.1", port=redis_server.port, db=3)
    db0 = Redis(host="127.0.0.1", port=redis_server.port, db=0)
    try:
        async with running(env) as gateway:
            # A session in db 3, notifications published from db 0: pub/sub is global.
            user, token = secrets.token_hex(4), new_token()
            await db3.set(f"session:{token}", orjson.dumps({"userId": user}), ex=60)
            ws, _ = await connect_authed(f"ws://127.0.0.1:{gateway.port}/ws", token)
            async with ws:
                await request(ws, {"type": "subscribe", "channel": f"user:{user}"})
                assert await db0.publish(f"user:{user}", b"1") == 1
                assert (await recv_json(ws))["data"] == 1
            only_in_db0 = new_token()
            await db0.set(f"session:{only_in_db0}", orjson.dumps({"userId": user}), ex=60)
            from websockets.asyncio.client import connect

            ws = await connect(
                f"ws://127.0.0.1:{gateway.port}/ws",
                additional_headers={"Authorization": f"Bearer {only_in_db0}"},
            )
            assert await close_code(ws) == 4001
    finally:
        await db3.aclose()
        await db0.aclose()


# -- unreachable ----------------------------------------------------------------


async def test_connection_refused() -> None:
    port = free_port()
    found = await failure({"REDIS_URL": f"redis://127.0.0.1:{port}"})
    assert (found.cause, found.fatal) == ("connection_refused", False)
    assert f"127.0.0.1:{port}" in found.message
    assert "is Redis running" in found.message


async def test_timeout_when_the_server_never_answers() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # keep it open, say nothing

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        # redis-py waits longer for replies than to connect (socket_timeout >= 5 s).
        found = await failure(
            {"REDIS_URL": f"redis://127.0.0.1:{port}", "REDIS_CONNECT_TIMEOUT": "200"},
            redis_py=False,
        )
    finally:
        for writer in accepted:
            writer.close()
        listener.close()
        await listener.wait_closed()
    assert accepted  # the TCP connection was made: it is Redis that did not answer
    assert (found.cause, found.fatal) == ("timeout", False)
    assert f"no answer from 127.0.0.1:{port} within 0.2 s" in found.message


async def test_unreachable_at_start_is_retried_until_redis_comes(tmp_path: Path) -> None:
    port = free_port()
    with structlog.testing.capture_logs() as logs:
        gateway = Gateway(
            load_settings({"REDIS_URL": f"redis://127.0.0.1:{port}", "GATEWAY_PORT": "0"})
        )
        await gateway.start()
        late: RedisServer | None = None
        try:
            status, _ = await http_get(f"http://127.0.0.1:{gateway.port}/readyz")
            assert status == 503
            late = RedisServer(port=port).start()
            async with asyncio.timeout(15):
                await gateway.subscriber.wait_ready()
            assert not gateway.setup_failed.done()
        finally:
            await gateway.stop()
            if late is not None:
                late.cleanup()
    failed = [e for e in logs if e["event"] == "redis_connect_failed"]
    assert failed
    assert failed[0]["cause"] == "connection_refused"
    assert "is Redis running" in failed[0]["error"]


# -- what writers meet ----------------------------------------------------------


async def test_out_of_memory_and_read_only_replica(redis_factory: RedisFactory) -> None:
    full = redis_factory(["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"])
    replica = redis_factory(["--replicaof", "127.0.0.1", str(full.port)])
    clients = [Redis(host="127.0.0.1", port=s.port) for s in (full, replica)]
    found: list[Diagnosis] = []
    try:
        for client, server in zip(clients, (full, replica), strict=True):
            with pytest.raises(RedisError) as info:
                await client.set("session:x", b"x" * 2_000_000)
            found.append(diagnose(info.value, load_redis_config({"REDIS_URL": server.url})))
    finally:
        for client in clients:
            await client.aclose()
    oom, readonly = found
    assert oom.cause == "out_of_memory"
    assert "maxmemory" in oom.message
    assert readonly.cause == "read_only_replica"
    assert "primary" in readonly.message


# -- configuration --------------------------------------------------------------


def test_verification_off_without_tls_is_refused_not_plaintext() -> None:
    with pytest.raises(ConfigError, match=r"REDIS_TLS_REJECT_UNAUTHORIZED=false .* TLS is off"):
        load_redis_config({"REDIS_URL": "redis://h:6379", "REDIS_TLS_REJECT_UNAUTHORIZED": "false"})


def test_unreadable_certificate_files_stop_serve_naming_the_variable(
    tmp_path: Path, certs: Certs
) -> None:
    missing = tmp_path / "nope.pem"
    for env, variable in [
        ({"REDIS_TLS_CA_PATH": str(missing)}, "REDIS_TLS_CA_PATH"),
        ({"REDIS_TLS_CERT_PATH": str(certs.ca)}, "REDIS_TLS_CERT_PATH"),  # a cert without key
    ]:
        process = GatewayProcess({"REDIS_URL": "rediss://127.0.0.1:1", **env})
        try:
            assert process.wait() == 2
            stderr = process.stderr()
        finally:
            process.stop()
        assert variable in stderr
        assert stderr.count("\n") == 1
        assert "Traceback" not in stderr


async def test_pubsub_connection_has_tcp_keepalive_on(redis_server: RedisServer) -> None:
    config = load_redis_config({"REDIS_URL": redis_server.url})
    protocol = await Subscriber(config, Hub()).connect()
    try:
        sock = protocol._transport.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        protocol.close()


async def test_tls_to_a_plaintext_port_stops_serve_with_status_2(
    redis_server: RedisServer, certs: Certs
) -> None:
    # A plaintext Redis waits for a line end the TLS hello never sends: the handshake times
    # out, and a PING in plaintext tells that apart from a slow network.
    process = GatewayProcess(
        {
            "REDIS_URL": f"rediss://127.0.0.1:{redis_server.port}",
            "REDIS_TLS_CA_PATH": str(certs.ca),
            "REDIS_CONNECT_TIMEOUT": "300",
        }
    )
    try:
        assert await asyncio.to_thread(process.wait) == 2
        stderr = process.stderr()
        failed = [r for r in process.records() if r["event"] == "redis_setup_failed"]
    finally:
        process.stop()
    assert [r["cause"] for r in failed] == ["tls_to_plaintext_port"]
    assert "does not speak TLS" in stderr
    assert "use redis://" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("how", ["url", "split"])
async def test_a_database_redis_does_not_have_stops_serve_with_status_2(
    redis_server: RedisServer, how: str
) -> None:
    env = (
        {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/99"}
        if how == "url"
        else {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port), "REDIS_DB": "99"}
    )
    process = GatewayProcess(env)
    try:
        assert await asyncio.to_thread(process.wait) == 2
        stderr = process.stderr()
        events = [r["event"] for r in process.records()]
    finally:
        process.stop()
    assert "redis_access_unchecked" not in events  # no retry loop
    assert "has no database 99" in stderr
    assert "REDIS_DB" in stderr
    assert "`databases`" in stderr
    assert stderr.count("\n") == 1  # no greeting before the exit


async def test_doctor_names_the_database_setting(redis_server: RedisServer) -> None:
    process = GatewayProcess({"REDIS_URL": f"{redis_server.url[:-2]}/99"}, args=("doctor",))
    try:
        assert await asyncio.to_thread(process.wait) == 1
        output = process.output()
    finally:
        process.stop()
    assert "FAIL" in output
    assert "REDIS_DB" in output
