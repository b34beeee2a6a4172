"""The publisher library against real Redis and real gateways, sync and async alike."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
import pytest
from redis.asyncio import Redis

from gateway.server import Gateway
from notify_publisher import (
    AsyncPublisher,
    Publisher,
    PublisherSettings,
    RedisRefusedError,
    RedisUnavailableError,
)
from notify_publisher.sessions import new_token
from notify_wire.env import ConfigError
from tests.conftest import MakeGateway, MakeSession, ws_url
from tests.support.redis_server import RedisServer
from tests.support.tokens import issued
from tests.support.ws import close_code, connect_authed, connect_subscribed, recv_json, request

T = TypeVar("T")
AnyPublisher = Publisher | AsyncPublisher


async def done(result: T | Awaitable[T]) -> T:
    """The result of a sync call, or of an async one once awaited: one test body for both."""
    if inspect.isawaitable(result):
        return await result
    return result


async def closing(publisher: AnyPublisher) -> None:
    await done(publisher.close())


@pytest.fixture(params=["sync", "async"])
async def make_publisher(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Callable[..., AnyPublisher]]:
    kind: type[AnyPublisher] = Publisher if request.param == "sync" else AsyncPublisher
    made: list[AnyPublisher] = []

    def make(url: str | None = None, **options: Any) -> AnyPublisher:
        publisher = kind.from_url(url or redis_server.url, **options)
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        await closing(publisher)


@pytest.fixture
def publisher(make_publisher: Callable[..., AnyPublisher]) -> AnyPublisher:
    return make_publisher()


@dataclasses.dataclass
class Order:
    id: int
    placed: datetime.datetime


PLACED = datetime.datetime(2026, 11, 26, 12, 30, tzinfo=datetime.UTC)


async def test_values_arrive_as_the_json_orjson_makes_of_them(
    gateway_factory: MakeGateway, publisher: AnyPublisher
) -> None:
    token = issued(await done(publisher.create_session("42")))
    async with await connect_subscribed(ws_url(await gateway_factory()), token, "user:42") as ws:
        sent: list[tuple[Any, Any]] = [
            ({"type": "new_message", "n": 1}, {"type": "new_message", "n": 1}),
            ([1, "two", None], [1, "two", None]),
            (Order(7, PLACED), {"id": 7, "placed": "2026-11-26T12:30:00+00:00"}),
            (PLACED, "2026-11-26T12:30:00+00:00"),
            ("plain text", "plain text"),
            ('{"looks": "like json"}', '{"looks": "like json"}'),  # a str stays a string
            (b'{"pre": "encoded"}', {"pre": "encoded"}),  # bytes are sent verbatim
        ]
        for data, _ in sent:
            assert await done(publisher.publish("user:42", data)) == 1
        for _, expected in sent:
            assert await recv_json(ws) == {
                "type": "message",
                "channel": "user:42",
                "data": expected,
            }


async def test_receiver_count_is_the_number_of_gateways_subscribed(
    gateway_factory: MakeGateway, publisher: AnyPublisher
) -> None:
    first, second = await gateway_factory(), await gateway_factory()
    token = issued(await done(publisher.create_session("5")))
    gateways = (first, second, second)
    sockets = [await connect_subscribed(ws_url(g), token, "notifications") for g in gateways]
    # Three sockets, two gateways: Redis counts the gateways.
    assert await done(publisher.publish("notifications", {"hello": 1})) == 2
    assert await done(publisher.publish("nobody-listens", 1)) == 0
    for ws in sockets:
        assert (await recv_json(ws))["data"] == {"hello": 1}
        await ws.close()


async def test_publish_many_delivers_in_order_and_returns_each_count(
    gateway_factory: MakeGateway, publisher: AnyPublisher
) -> None:
    token = issued(await done(publisher.create_session("9")))
    async with await connect_subscribed(ws_url(await gateway_factory()), token, "user:9") as ws:
        batch = [("user:9", 1), ("public:empty", 2), ("user:9", {"three": 3})]
        assert await done(publisher.publish_many(batch)) == [1, 0, 1]
        assert await done(publisher.publish_many([])) == []
        assert (await recv_json(ws))["data"] == 1
        assert (await recv_json(ws))["data"] == {"three": 3}


async def test_a_bad_item_stops_the_whole_batch_before_anything_is_sent(
    gateway_factory: MakeGateway, publisher: AnyPublisher
) -> None:
    token = issued(await done(publisher.create_session("9")))
    async with await connect_subscribed(ws_url(await gateway_factory()), token, "user:9") as ws:
        with pytest.raises(ValueError, match=r"^item 1: channel must be an exact name"):
            await done(publisher.publish_many([("user:9", "first"), ("user:*", "second")]))
        with pytest.raises(TypeError, match=r"^item 0: data for 'user:9' cannot be serialised"):
            await done(publisher.publish_many([("user:9", {1, 2})]))
        with pytest.raises(ValueError, match=r"^item 0: not enough values to unpack"):
            await done(publisher.publish_many([("user:9",)]))  # type: ignore[list-item]
        await done(publisher.publish("user:9", "after"))
        assert (await recv_json(ws))["data"] == "after"  # "first" was never sent


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ("", "channel must not be empty"),
        ("x" * 201, "channel is 201 characters long; the maximum is 200"),
        ("user:*", "glob patterns"),
        ("user:[12]", "glob patterns"),
        ("__notify_gateway__:control", "reserved"),
        ("with space", "may only contain"),
        (42, "channel must be a string"),
    ],
)
async def test_channels_no_client_could_subscribe_to_are_refused(
    publisher: AnyPublisher, channel: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await done(publisher.publish(channel, {"a": 1}))


async def test_payload_limit_and_data_problems_are_refused(
    make_publisher: Callable[..., AnyPublisher],
) -> None:
    publisher = make_publisher(max_payload_bytes=100)
    assert await done(publisher.publish("c", "x" * 98)) == 0  # 100 bytes with the quotes
    with pytest.raises(ValueError, match=r"101 bytes; the maximum is 100 \(GATEWAY_MAX_MESS"):
        await done(publisher.publish("c", "x" * 99))
    with pytest.raises(TypeError, match="cannot be serialised to JSON"):
        await done(publisher.publish("c", object()))
    with pytest.raises(ValueError, match="must be encoded JSON"):
        await done(publisher.publish("c", b"not json"))


async def test_from_env_uses_the_gateway_variables(redis_server: RedisServer, redis: Redis) -> None:
    env = {
        "REDIS_URL": redis_server.url,
        "GATEWAY_MAX_MESSAGE_BYTES": "64",
        "GATEWAY_MAX_CHANNEL_LENGTH": "5",
        "GATEWAY_SESSION_PREFIX": "sess/",
    }
    with Publisher.from_env(env) as publisher:
        with pytest.raises(ValueError, match="the maximum is 64"):
            publisher.publish("c", "x" * 63)
        with pytest.raises(ValueError, match="the maximum is 5"):
            publisher.publish("sixsix", 1)
        token = issued(publisher.create_session("1"))
    assert await redis.exists(f"sess/{token}") == 1
    async with AsyncPublisher.from_env(env) as async_publisher:
        assert (await async_publisher.get_session(token)) == {"userId": "1", "channels": []}
    with pytest.raises(ConfigError, match="GATEWAY_MAX_MESSAGE_BYTES"):
        Publisher.from_env({**env, "GATEWAY_MAX_MESSAGE_BYTES": "lots"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_payload_bytes": 0}, "max_payload_bytes must be a positive"),
        ({"max_retries": -1}, "max_retries must be"),
        ({"session_prefix": ""}, "session_prefix must be"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PublisherSettings.from_url("redis://127.0.0.1:6379/0", **options)


async def test_a_session_opens_the_gateway_with_its_channels_and_ttl(
    gateway_factory: MakeGateway, publisher: AnyPublisher, redis: Redis
) -> None:
    gateway = await gateway_factory()
    token = issued(
        await done(
            publisher.create_session(7, ttl=120, channels=["team:3:*"], name="Ada", roles=["admin"])
        )
    )
    assert len(token) >= 22  # at least 128 bits in URL-safe base64
    assert 115 <= await redis.ttl(f"session:{token}") <= 120
    assert await done(publisher.get_session(token)) == {
        "userId": 7,
        "channels": ["team:3:*"],
        "name": "Ada",
        "roles": ["admin"],
    }
    ws, welcome = await connect_authed(ws_url(gateway), token)
    async with ws:
        assert welcome["user"] == "7"
        reply = await request(ws, {"type": "subscribe", "channel": "team:3:news"})
        assert reply["type"] == "subscribed"
    assert await done(publisher.refresh_session(token, 9000)) is True
    assert 8995 <= await redis.ttl(f"session:{token}") <= 9000
    missing = "never-issued-token"
    assert await done(publisher.refresh_session(missing, 60)) is False
    assert await done(publisher.get_session(missing)) is None


def test_tokens_are_long_url_safe_and_never_look_like_an_option() -> None:
    # One in 64 would start with "-" if nothing prevented it: 2000 draws would show it.
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{42}", token) for token in tokens)


async def test_revoking_closes_live_sockets_4001_within_a_second(
    gateway_factory: MakeGateway, publisher: AnyPublisher, redis: Redis
) -> None:
    first, second = await gateway_factory(), await gateway_factory()
    token = issued(await done(publisher.create_session("3")))
    other = issued(await done(publisher.create_session("3")))
    on_first, _ = await connect_authed(ws_url(first), token)
    on_second, _ = await connect_authed(ws_url(second), token)
    bystander, _ = await connect_authed(ws_url(first), other)
    assert await done(publisher.revoke_session(token)) is True
    assert await close_code(on_first, timeout_s=1) == 4001
    assert await close_code(on_second, timeout_s=1) == 4001
    assert await redis.exists(f"session:{token}") == 0
    assert await request(bystander, {"type": "ping"}) == {"type": "pong"}
    # Key already gone (expired, deleted elsewhere): the sockets still get closed.
    late, _ = await connect_authed(ws_url(first), other)
    await redis.delete(f"session:{other}")
    assert await done(publisher.revoke_session(other)) is False
    assert await close_code(late, timeout_s=1) == 4001
    assert await close_code(bystander, timeout_s=1) == 4001


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda p: p.create_session("1", ttl=0), ValueError, "ttl must be a positive whole"),
        (lambda p: p.create_session("1", ttl=1.5), ValueError, "ttl must be"),
        (lambda p: p.create_session("1", ttl=True), ValueError, "ttl must be"),
        (lambda p: p.create_session(""), ValueError, "user id must be a non-empty"),
        (lambda p: p.create_session(None), ValueError, "user id must be"),
        (lambda p: p.create_session(False), ValueError, "user id must be"),
        (lambda p: p.create_session("u" * 129), ValueError, "GATEWAY_MAX_USER_ID_LENGTH"),
        (lambda p: p.create_session("1", bio="x" * 20_000), ValueError, "MAX_SESSION_BYTES"),
        (lambda p: p.create_session("1", channels="team:*"), ValueError, "not a single string"),
        (lambda p: p.create_session("1", channels=[3]), ValueError, "non-empty glob strings"),
        (lambda p: p.create_session("1", userId="2"), ValueError, "'userId' is set from"),
        (lambda p: p.create_session("1", when={1}), TypeError, "cannot be serialised"),
        (lambda p: p.get_session("short"), ValueError, "not a session token"),
        (lambda p: p.get_session(b"bytes-token"), TypeError, "token must be a str"),
        (lambda p: p.refresh_session("never-issued-token", -5), ValueError, "ttl must be"),
        (lambda p: p.revoke_session("has space in it"), ValueError, "not a session token"),
    ],
)
async def test_bad_session_input_is_refused_before_redis(
    make_publisher: Callable[..., AnyPublisher],
    call: Callable[[AnyPublisher], Any],
    error: type[Exception],
    message: str,
) -> None:
    # Nothing answers on port 1: reaching Redis would raise RedisUnavailableError instead.
    publisher = make_publisher("redis://127.0.0.1:1/0", max_retries=0)
    with pytest.raises(error, match=message):
        await done(call(publisher))


async def test_a_stored_session_the_gateway_cannot_read_is_reported(
    publisher: AnyPublisher, redis: Redis
) -> None:
    await redis.set("session:corrupt-session", b"{not json")
    with pytest.raises(ValueError, match=r"unusable by the gateway \(session_not_json\)"):
        await done(publisher.get_session("corrupt-session"))


async def test_a_dropped_connection_is_retried_transparently(
    publisher: AnyPublisher, redis: Redis
) -> None:
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe("retried")
        assert await done(publisher.publish("retried", 1)) == 1
        # Kill every ordinary connection, the publisher's pooled one included.
        assert await redis.client_kill_filter(_type="normal", skipme=True) >= 1
        assert await done(publisher.publish("retried", 2)) == 1


async def test_redis_down_raises_a_clear_error_after_bounded_retries(
    make_publisher: Callable[..., AnyPublisher],
    redis_factory: Callable[[Sequence[str]], RedisServer],
) -> None:
    server = redis_factory(())
    publisher = make_publisher(server.url, max_retries=2)
    assert await done(publisher.publish("c", 1)) == 0
    server.kill()
    with pytest.raises(RedisUnavailableError) as caught:
        await done(publisher.publish("c", 2))
    message = str(caught.value)
    assert f"cannot reach Redis at 127.0.0.1:{server.port} for PUBLISH after 3 attempts" in message
    assert message.endswith("is Redis running?")
    assert caught.value.address == f"127.0.0.1:{server.port}"
    with pytest.raises(RedisUnavailableError):
        await done(publisher.revoke_session("some-token-value"))


async def test_wrong_credentials_are_refused_not_retried_forever(
    make_publisher: Callable[..., AnyPublisher],
    redis_factory: Callable[[Sequence[str]], RedisServer],
) -> None:
    server = redis_factory(("--requirepass", "right-password"))
    publisher = make_publisher(f"redis://:wrong-password@127.0.0.1:{server.port}/0")
    with pytest.raises(RedisRefusedError, match="refused the credentials") as caught:
        await done(publisher.publish("c", 1))
    assert "wrong-password" not in str(caught.value)


async def test_one_sync_publisher_is_shared_by_threads(redis_server: RedisServer) -> None:
    def publish_all(publisher: Publisher, worker: int) -> list[int]:
        return [publisher.publish("threads", {"worker": worker, "n": n}) for n in range(25)]

    client = Redis.from_url(redis_server.url)
    async with client.pubsub() as pubsub:
        await pubsub.subscribe("threads")
        with Publisher.from_url(redis_server.url) as publisher, ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(publish_all, publisher, worker) for worker in range(8)]
            counts = [count for future in futures for count in future.result()]
        assert counts == [1] * 200
        received: set[tuple[int, int]] = set()
        while len(received) < 200:
            message = await pubsub.get_message(timeout=5)
            assert message is not None, f"only {len(received)} of 200 messages arrived"
            if message["type"] == "message":
                data = orjson.loads(message["data"])
                received.add((data["worker"], data["n"]))
    await client.aclose()


async def test_one_async_publisher_is_shared_by_many_tasks(redis_server: RedisServer) -> None:
    async with AsyncPublisher.from_url(redis_server.url) as publisher:
        # More concurrent tasks than the pool has connections: they wait, none fails.
        counts = await asyncio.gather(*(publisher.publish("tasks", n) for n in range(100)))
    assert counts == [0] * 100


async def test_publish_with_history_numbers_messages_and_lets_clients_resume(
    publisher: AnyPublisher, gateway: Gateway, make_session: MakeSession
) -> None:
    token = await make_session("hist")
    channel = f"public:lib-history-{token[:8]}"  # fresh history for each publisher kind
    ws = await connect_subscribed(ws_url(gateway), token, channel)
    assert await done(publisher.publish(channel, {"n": 1}, history=True)) == 1
    first = await recv_json(ws)
    assert (first["data"], first["offset"]) == ({"n": 1}, 1)
    await ws.close()
    counts = await done(publisher.publish_many([(channel, {"n": n}) for n in (2, 3)], history=True))
    assert len(counts) == 2  # while the client is away: only the history keeps them for it
    ws, _ = await connect_authed(ws_url(gateway), token)
    async with ws:
        since = {"offset": 1, "epoch": first["epoch"]}
        reply = await request(ws, {"type": "subscribe", "channel": channel, "since": since})
        assert (reply["recovered"], reply["offset"]) == (True, 3)
        assert [(await recv_json(ws))["data"]["n"] for _ in range(2)] == [2, 3]
