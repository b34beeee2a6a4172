"""Registry bookkeeping: one Redis subscription per channel, batching, gaps, refusals.

The sinks here are recording test doubles of the registry's own client interface; the
end-to-end behaviour against real Redis and sockets is in test_gateway.py.
"""

from __future__ import annotations

import orjson

from gateway.registry import Registry


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.refused: list[str] = []

    def send(self, data: bytes) -> None:
        self.writes.append(data)

    def subscription_refused(self, channel: str) -> None:
        self.refused.append(channel)

    def frames(self) -> list[dict[str, object]]:
        out = []
        for data in self.writes:
            while data:
                size = data[1]
                head = 2 if size < 126 else 4
                if size == 126:
                    size = int.from_bytes(data[2:4])
                out.append(orjson.loads(data[head : head + size]))
                data = data[head + size :]
        return out


class RecordingRedis:
    def __init__(self) -> None:
        self.commands: list[tuple[str, list[str]]] = []

    def subscribe(self, channels: list[str]) -> None:
        self.commands.append(("SUBSCRIBE", channels))

    def unsubscribe(self, channels: list[str]) -> None:
        self.commands.append(("UNSUBSCRIBE", channels))


def setup() -> tuple[Registry, RecordingRedis]:
    registry = Registry()
    redis = RecordingRedis()
    registry.on_connected(redis)
    return registry, redis


def test_one_subscribe_per_channel_and_reply_after_confirmation() -> None:
    registry, redis = setup()
    a, b = RecordingSink(), RecordingSink()
    registry.subscribe(a, "news", b"A", 1)
    registry.subscribe(b, "news", b"B", 2)
    assert redis.commands == [("SUBSCRIBE", ["news"])]
    assert a.writes == []
    assert b.writes == []
    registry.on_subscribed("news")
    assert a.writes == [b"A"]
    assert b.writes == [b"B"]
    c = RecordingSink()
    registry.subscribe(c, "news", b"C", 3)
    assert c.writes == [b"C"]
    assert redis.commands == [("SUBSCRIBE", ["news"])]


def test_last_reader_unsubscribes_once() -> None:
    registry, redis = setup()
    a, b = RecordingSink(), RecordingSink()
    registry.subscribe(a, "news", b"", None)
    registry.subscribe(b, "news", b"", None)
    registry.on_subscribed("news")
    registry.unsubscribe(a, ["news"])
    assert redis.commands[-1] == ("SUBSCRIBE", ["news"])
    registry.unsubscribe(b, ["news"])
    assert redis.commands[-1] == ("UNSUBSCRIBE", ["news"])
    registry.on_unsubscribed("news")
    assert registry.channel_count == 0


def test_leaving_before_confirmation_unsubscribes_when_confirmed() -> None:
    registry, redis = setup()
    a = RecordingSink()
    registry.subscribe(a, "news", b"A", None)
    registry.unsubscribe(a, ["news"])
    registry.on_subscribed("news")
    assert redis.commands == [("SUBSCRIBE", ["news"]), ("UNSUBSCRIBE", ["news"])]
    assert a.writes == []


def test_resubscribing_while_unsubscribe_is_in_flight() -> None:
    registry, redis = setup()
    a, b = RecordingSink(), RecordingSink()
    registry.subscribe(a, "news", b"A", None)
    registry.on_subscribed("news")
    registry.unsubscribe(a, ["news"])
    registry.subscribe(b, "news", b"B", None)
    registry.on_message(b"news", b"1")  # still arriving before the UNSUBSCRIBE took effect
    registry.flush()
    assert b.writes == []
    registry.on_unsubscribed("news")
    assert redis.commands[-1] == ("SUBSCRIBE", ["news"])
    registry.on_subscribed("news")
    assert b.writes == [b"B"]


def test_batch_is_one_write_per_sink() -> None:
    registry, _ = setup()
    a, b = RecordingSink(), RecordingSink()
    registry.subscribe(a, "x", b"", None)
    registry.subscribe(a, "y", b"", None)
    registry.subscribe(b, "x", b"", None)
    registry.on_subscribed("x")
    registry.on_subscribed("y")
    a.writes.clear()
    b.writes.clear()
    for payload in (b"1", b"2"):
        registry.on_message(b"x", payload)
    registry.on_message(b"y", b"3")
    registry.flush()
    assert len(a.writes) == 1
    assert len(b.writes) == 1
    assert [f["data"] for f in a.frames()] == [1, 2, 3]
    assert [f["data"] for f in b.frames()] == [1, 2]
    assert registry.messages_received == 3
    assert registry.deliveries == 5


def test_reconnect_resubscribes_in_one_command_and_sends_gaps() -> None:
    registry, _redis = setup()
    a = RecordingSink()
    registry.subscribe(a, "x", b"", None)
    registry.subscribe(a, "y", b"", None)
    registry.on_subscribed("x")
    registry.on_subscribed("y")
    registry.on_disconnected()
    fresh = RecordingRedis()
    registry.on_connected(fresh)
    assert fresh.commands == [("SUBSCRIBE", ["x", "y"])]
    a.writes.clear()
    registry.on_subscribed("x")
    registry.on_subscribed("y")
    assert a.frames() == [{"type": "gap", "channel": "x"}, {"type": "gap", "channel": "y"}]


def test_refused_subscription_reports_error_and_forgets() -> None:
    registry, _ = setup()
    a = RecordingSink()
    registry.subscribe(a, "secret", b"", 5)
    registry.on_subscribe_refused(["secret"], "NOPERM no permissions")
    (frame,) = a.frames()
    assert frame["type"] == "error"
    assert frame["code"] == "unavailable"
    assert frame["ref"] == 5
    assert a.refused == ["secret"]
    assert registry.channel_count == 0


def test_fanout_is_timed_once_per_batch_not_per_delivery() -> None:
    timings: list[float] = []
    registry = Registry(observe_fanout=timings.append)
    registry.on_connected(RecordingRedis())
    sinks = [RecordingSink() for _ in range(50)]
    for sink in sinks:
        registry.subscribe(sink, "x", b"", None)
    registry.on_subscribed("x")
    registry.flush()  # nothing from Redis: no observation
    assert timings == []
    for payload in (b"1", b"2", b"3"):
        registry.on_message(b"x", payload)
    registry.flush()
    assert len(timings) == 1
    assert timings[0] >= 0
    assert registry.deliveries == 150


def test_scrape_time_counts_and_top_channels() -> None:
    registry = Registry({"internal": lambda _payload: None})
    registry.on_connected(RecordingRedis())
    registry.on_subscribed("internal")
    a, b, c = RecordingSink(), RecordingSink(), RecordingSink()
    for sink in (a, b, c):
        registry.subscribe(sink, "busy", b"", None)
    registry.subscribe(a, "quiet", b"", None)
    registry.on_subscribed("busy")
    registry.subscribe(b, "pending", b"", None)  # waiting for Redis to confirm
    assert registry.subscription_count == 5
    assert registry.redis_channel_count == 2  # "internal" and "busy"
    assert registry.top_channels(2) == [("busy", 3), ("pending", 1)]
    # The internal channel has no subscribers: it is not listed.
    assert registry.top_channels(10) == [("busy", 3), ("pending", 1), ("quiet", 1)]
