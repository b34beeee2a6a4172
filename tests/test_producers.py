"""Nothing a producer publishes breaks the gateway's Redis link (issue 13, item 1).

A message the gateway cannot read is dropped, counted by reason, logged (rate-limited), and
the rest of its batch is delivered; the pub/sub connection stays up.
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from gateway.broker.subscriber import PubSubConnection
from gateway.core.hub import Hub
from gateway.server import Gateway
from tests.conftest import MakeSession, ws_url
from tests.support.ws import connect_authed, http_get, recv_json, request

HUGE_OFFSET = b"\x00ngh1 " + b"7" * 5000 + b" abc {}"


async def published_in_one_batch(redis: Redis, channel: str, *payloads: bytes) -> None:
    """PUBLISH each payload inside one MULTI: Redis writes them to the gateway back to back."""
    async with redis.pipeline(transaction=True) as pipe:
        for payload in payloads:
            pipe.publish(channel, payload)
        await pipe.execute()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (HUGE_OFFSET, "bad_envelope"),  # was: int() past Python's 4300-digit limit, link dropped
        (b"\x00ngh1 " + b"1" * 30 + b" abc {}", "bad_envelope"),  # beyond 2**53 - 1
        (b'\x00ngh1 3 ab"},"channel":"user:43 {}', "bad_envelope"),  # epoch not hex
        (b"\x00ngh1 0 abc {}", "bad_envelope"),  # offsets start at 1
        (b"\x00ngh1 3", "bad_envelope"),  # no epoch, no data
    ],
    ids=["5000-digit-offset", "30-digit-offset", "json-in-epoch", "offset-0", "truncated"],
)
async def test_an_unreadable_message_is_dropped_and_the_rest_of_its_batch_delivered(
    gateway: Gateway, make_session: MakeSession, redis: Redis, payload: bytes, reason: str
) -> None:
    ws, _ = await connect_authed(ws_url(gateway), await make_session("p1"))
    async with ws:
        await request(ws, {"type": "subscribe", "channel": "public:p"})
        await published_in_one_batch(redis, "public:p", payload, b'"after"')
        assert await recv_json(ws) == {"type": "message", "channel": "public:p", "data": "after"}
        assert await request(ws, {"type": "ping"}) == {"type": "pong"}  # no gap, nothing else
    assert gateway.subscriber.reconnects == 0
    assert gateway.hub.dropped[reason] == 1
    assert (await http_get(f"http://127.0.0.1:{gateway.port}/readyz"))[0] == 200


async def test_a_flood_of_bad_messages_is_counted_in_full_but_logged_rate_limited(
    gateway: Gateway, make_session: MakeSession, redis: Redis
) -> None:
    ws, _ = await connect_authed(ws_url(gateway), await make_session("p2"))
    async with ws:
        await request(ws, {"type": "subscribe", "channel": "public:flood"})
        with capture_logs() as logs:
            for _ in range(20):  # 20 batches of 25, as fast as Redis takes them
                await published_in_one_batch(redis, "public:flood", *[HUGE_OFFSET] * 25)
            await redis.publish("public:flood", b'"still here"')
            assert (await recv_json(ws))["data"] == "still here"
    assert gateway.hub.dropped["bad_envelope"] == 500
    assert gateway.subscriber.reconnects == 0
    drops = [e for e in logs if e["event"] == "message_dropped"]
    assert 1 <= len(drops) <= 5, drops  # one line a second per reason, not 500
    assert drops[0]["reason"] == "bad_envelope"
    assert drops[0]["channel"] == "public:flood"
    assert not [e for e in logs if e["event"] == "redis_disconnected"]


class FailingOnce(Hub):
    """A hub whose handling of one channel's messages raises: a bug, or a library's."""

    def __init__(self) -> None:
        super().__init__()
        fan_out = self.on_message  # the hub's per-message path is an attribute (no extra call)

        def on_message(channel: bytes, payload: bytes) -> None:
            if channel == b"boom":
                raise RuntimeError("a bug in the per-message path")
            fan_out(channel, payload)

        self.on_message = on_message


class Sink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.writes.append(data)

    def subscription_refused(self, channel: str, message: str) -> None:
        raise AssertionError(channel)

    def overflow(self, buffered: int) -> None:
        raise AssertionError(buffered)


def resp_message(channel: bytes, payload: bytes) -> bytes:
    parts = [b"message", channel, payload]
    return b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class Transport:
    """Stands for the socket under the protocol: records writes and aborts."""

    def __init__(self) -> None:
        self.aborted = False

    def get_extra_info(self, name: str) -> None:
        return None

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True


async def test_an_exception_while_handling_one_message_costs_that_message_only() -> None:
    registry = FailingOnce()
    sink = Sink()
    joined = registry.join(sink, "news")
    registry.on_subscribed("news")
    await joined
    registry.activate(sink, "news")
    protocol = PubSubConnection(registry)
    transport = Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    with capture_logs() as logs:
        protocol.data_received(
            resp_message(b"news", b"1") + resp_message(b"boom", b"2") + resp_message(b"news", b"3")
        )
    assert not transport.aborted
    assert not protocol.lost.done()
    (write,) = sink.writes  # one batch, one write
    assert write.count(b'"channel":"news"') == 2
    assert registry.dropped["error"] == 1
    (logged,) = [e for e in logs if e["event"] == "message_dropped"]
    assert (logged["reason"], logged["channel"]) == ("error", "boom")
    assert logged["error"] == "RuntimeError('a bug in the per-message path')"
