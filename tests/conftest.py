"""Shared fixtures: real redis-server processes and in-process gateways on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import orjson
import pytest
from redis.asyncio import Redis

from gateway.config import load_settings
from gateway.ops.log import configure_logging
from gateway.server import Gateway
from tests.support import process
from tests.support.redis_server import RedisServer
from tests.support.tokens import ISSUED, new_token

MakeSession = Callable[..., Awaitable[str]]
MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture(scope="session", autouse=True)
def token_free_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every gateway log of the run goes to one file; no issued token may appear in it."""
    path = tmp_path_factory.mktemp("logs") / "gateway.jsonl"
    with path.open("ab") as sink:
        configure_logging("debug", "json", file=sink)
        process.LOG_SINK = sink
        yield
        process.LOG_SINK = None
    text = path.read_text(errors="replace")
    assert text or not ISSUED, "tokens were issued but no gateway log was captured"
    leaked = [token for token in ISSUED if token in text]
    assert not leaked, f"{len(leaked)} session tokens appear in the gateway logs"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One shared Redis for tests that do not disturb it (unique names per test)."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_factory() -> Iterator[Callable[[Sequence[str]], RedisServer]]:
    """Private redis-servers a test may kill, pause or reconfigure."""
    servers: list[RedisServer] = []

    def make(extra: Sequence[str] = ()) -> RedisServer:
        server = RedisServer(extra).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.cleanup()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def make_session(redis: Redis) -> MakeSession:
    """Store a session the way a backend does; returns its token."""

    async def make(user_id: str = "42", *, ttl: int = 60, **fields: object) -> str:
        token = new_token()
        await redis.set(f"session:{token}", orjson.dumps({"userId": user_id, **fields}), ex=ttl)
        return token

    return make


@pytest.fixture
async def gateway_factory(redis_server: RedisServer) -> AsyncIterator[MakeGateway]:
    gateways: list[Gateway] = []

    async def make(redis_url: str | None = None, **env: str) -> Gateway:
        settings = load_settings(
            {"REDIS_URL": redis_url or redis_server.url, "GATEWAY_PORT": "0", **env}
        )
        gateway = Gateway(settings)
        gateways.append(gateway)
        await gateway.start()
        await gateway.subscriber.wait_ready()
        return gateway

    yield make
    for gateway in gateways:
        await gateway.stop()


@pytest.fixture
async def gateway(gateway_factory: MakeGateway) -> Gateway:
    return await gateway_factory()


def ws_url(gateway: Gateway) -> str:
    return f"ws://127.0.0.1:{gateway.port}/ws"
